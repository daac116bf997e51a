#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the store tests, from Debian's packages.
#
#   scripts/postgres.sh start    installs `postgresql` if missing, creates the cluster on first use,
#                                starts it (if not running) and prints its connection URL
#   scripts/postgres.sh status   exits 0 when the cluster runs (and prints the URL)
#   scripts/postgres.sh url      prints the URL
#   scripts/postgres.sh stop     stops the cluster and deletes it
#   scripts/postgres.sh down     a crash: stops the server at once (immediate mode), keeps the data
#   scripts/postgres.sh up       starts it again on that data (crash recovery), prints the URL
#   scripts/postgres.sh ca       prints the path of the throwaway CA certificate (PEM) that signed
#                                the server's TLS certificate (after `start`)
#
# The cluster listens on 127.0.0.1 only, on a non-default port (WO_POSTGRES_PORT, default 15432),
# with its files and Unix socket in WO_POSTGRES_DIR (default /tmp/wo-postgres), trust
# authentication for the superuser `postgres`. It is for tests only: fsync is off (a crash of the
# machine may corrupt it; the tests never need that), which keeps the suite fast on a small disk.
# It also serves TLS (plain connections keep working): `start` generates a throwaway CA and a
# server certificate it signs for 127.0.0.1 and localhost in $WO_POSTGRES_DIR/tls (openssl), so
# tests can connect with `sslmode=require&sslrootcert=$(scripts/postgres.sh ca)`. A cluster
# created before that gets them on the next `start` (a reload, no restart).
# PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user (created by
# the Debian package) and every server command runs through `runuser`.
set -euo pipefail

# Below Linux's ephemeral range (32768–60999): a port in it can be held by any outgoing
# connection (the API server's connection to etcd once held 55432 and the server could not bind).
PORT="${WO_POSTGRES_PORT:-15432}"
BASE="${WO_POSTGRES_DIR:-/tmp/wo-postgres}"
DATA="$BASE/data"
LOG="$BASE/server.log"
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
TLS="$BASE/tls"
CA="$TLS/ca.crt"

bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; fi
}

install_server() {
  [ -n "$(bindir)" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "postgres.sh: PostgreSQL is not installed; run as root, or: apt-get install -y postgresql" >&2
    exit 1
  fi
  echo "postgres.sh: installing Debian's postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  [ -n "$(bindir)" ] || { echo "postgres.sh: no initdb/pg_ctl after installing postgresql" >&2; exit 1; }
}

# Runs a server command as the cluster's owner, without the lock's descriptor (a server that
# inherited it would hold the lock for as long as it runs).
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- "$@" 9>&-)
  else
    "$@" 9>&-
  fi
}

running() {
  local bin
  bin="$(bindir)"
  [ -n "$bin" ] && [ -f "$DATA/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

# Creates the throwaway CA and the server certificate it signs (EC P-256, 10 years) and turns TLS
# on in postgresql.conf, unless done already: returns 0 when it changed the configuration. Nothing
# on stdout (the last line `start` prints must stay the URL).
setup_tls() {
  if [ -f "$TLS/server.crt" ] && grep -q "^ssl = on" "$DATA/postgresql.conf"; then return 1; fi
  command -v openssl >/dev/null || {
    echo "postgres.sh: openssl is needed for the TLS certificates" >&2
    exit 1
  }
  rm -rf "$TLS"
  mkdir -p "$TLS"
  cat >"$TLS/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = webhook-operator throwaway test CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -config "$TLS/openssl.cnf")
  if ! {
    openssl req -x509 -new "${ec[@]}" -extensions ca -days 3650 \
      -keyout "$TLS/ca.key" -out "$CA" &&
      openssl req -new "${ec[@]}" -subj "/CN=127.0.0.1" \
        -keyout "$TLS/server.key" -out "$TLS/server.csr" &&
      openssl x509 -req -in "$TLS/server.csr" -CA "$CA" -CAkey "$TLS/ca.key" \
        -set_serial "0x$(openssl rand -hex 8)" -days 3650 \
        -extfile "$TLS/openssl.cnf" -extensions server -out "$TLS/server.crt"
  } >"$TLS/openssl.log" 2>&1; then
    echo "postgres.sh: generating the TLS certificates failed:" >&2
    cat "$TLS/openssl.log" >&2
    exit 1
  fi
  chmod 755 "$TLS"
  chmod 644 "$CA" "$TLS/server.crt"
  chmod 600 "$TLS/server.key" "$TLS/ca.key"
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$TLS"; fi
  cat >>"$DATA/postgresql.conf" <<EOF
# scripts/postgres.sh: TLS with a throwaway CA ($CA); plain connections stay allowed.
ssl = on
ssl_cert_file = '$TLS/server.crt'
ssl_key_file = '$TLS/server.key'
EOF
  return 0
}

start() {
  install_server
  local bin
  bin="$(bindir)"
  if running; then
    # A cluster created before TLS was added: turn it on without a restart.
    if setup_tls; then as_owner "$bin/pg_ctl" -D "$DATA" reload >/dev/null; fi
    echo "$URL"
    return 0
  fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    rm -rf "$BASE"
    mkdir -p "$BASE"
    if [ "$(id -u)" = 0 ]; then
      id postgres >/dev/null 2>&1 || useradd --system --no-create-home --home-dir "$BASE" postgres
      chown postgres: "$BASE"
    fi
    as_owner "$bin/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
    cat >>"$DATA/postgresql.conf" <<EOF
# scripts/postgres.sh: a throwaway test cluster on loopback.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$BASE'
max_connections = 200
fsync = off
full_page_writes = off
EOF
  fi
  setup_tls || true
  if ! as_owner "$bin/pg_ctl" -D "$DATA" -l "$LOG" -o "-p $PORT" -w -t 60 start >/dev/null; then
    echo "postgres.sh: the server did not start; its log:" >&2
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  echo "$URL"
}

stop() {
  local bin
  bin="$(bindir)"
  if [ -n "$bin" ] && [ -f "$DATA/PG_VERSION" ]; then
    as_owner "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$BASE"
}

# The fault tests' outage (scripts/faults.py, its postgres phase): no clean shutdown, so clients
# see their connections cut, and a restart that replays the WAL.
down() {
  as_owner "$(bindir)/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null
}

up() {
  if ! as_owner "$(bindir)/pg_ctl" -D "$DATA" -l "$LOG" -o "-p $PORT" -w -t 60 start >/dev/null; then
    echo "postgres.sh: the server did not start; its log:" >&2
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  echo "$URL"
}

case "${1:-}" in
  start)
    # Tests started in parallel may all ask for the cluster at once: one creates it.
    mkdir -p "$(dirname "$BASE")"
    exec 9>"$BASE.lock"
    flock 9
    start
    ;;
  status)
    running && echo "$URL"
    ;;
  url) echo "$URL" ;;
  ca)
    if [ ! -f "$CA" ]; then
      echo "postgres.sh: no CA at $CA: run \`$0 start\` first" >&2
      exit 1
    fi
    echo "$CA"
    ;;
  stop)
    exec 9>"$BASE.lock"
    flock 9
    stop
    ;;
  down) down ;;
  up) up ;;
  *)
    echo "usage: $0 start|status|url|ca|stop|down|up" >&2
    exit 2
    ;;
esac
