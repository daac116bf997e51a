#!/usr/bin/env bash
# Starts (or reuses) a local Kubernetes control plane on loopback: etcd + kube-apiserver +
# kube-controller-manager (garbage collector and namespace controller, so ownerReferences cascade;
# client QPS raised so deleting a 10,000-endpoint benchmark namespace does not delay other tests' GC;
# ClusterRole aggregation, so the built-in view/edit/admin roles take in the chart's aggregated ones).
# The release is scripts/kube-versions.sh's KUBE_CURRENT unless KUBE_VERSION says otherwise; its
# binaries (kubectl of the same release included) are built once by scripts/build-control-plane.sh.
#   scripts/control-plane.sh start   # builds the binaries once (cached), starts, prints the kubeconfig path
#   scripts/control-plane.sh stop
#   scripts/control-plane.sh down    # an outage: stops the servers, keeps etcd's data
#   scripts/control-plane.sh up      # ends it: starts them again on that data
#   scripts/control-plane.sh env     # prints `export KUBECONFIG=… PATH=<that release's kubectl>:$PATH`
#   scripts/control-plane.sh bin     # prints the directory holding kubectl and the servers
#   scripts/control-plane.sh user-kubeconfig NAME [GROUP...]
#                                    # a client-certificate user: prints its kubeconfig's path
# The API server authenticates static tokens (tokens.csv) and client certificates (a client CA in
# $D/pki), and runs with the front-proxy (requestheader) flags, so aggregated APIs (the query
# API, docs/query-api.md) are reached through the real aggregation layer.
# State lives in $WO_CONTROL_PLANE_DIR (default /tmp/webhook-operator-cp).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/kube-versions.sh
. "$HERE/kube-versions.sh"
VERSION=${KUBE_VERSION:-$KUBE_CURRENT}
D=${WO_CONTROL_PLANE_DIR:-/tmp/webhook-operator-cp}
BIN=${KUBE_CP_CACHE_ROOT:-$HOME/.cache/webhook-operator}/kube-v$VERSION/bin
ETCD_PORT=${WO_ETCD_PORT:-23790}
API_PORT=${WO_APISERVER_PORT:-16443}
KC=$D/kubeconfig
PKI=$D/pki

# The servers' flags. Their fingerprint (with the release) is kept in $D/flags: a running control
# plane started with other flags (e.g. by an older version of this script) is restarted, not reused.
APISERVER_ARGS=(--etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=127.0.0.1
  --advertise-address=127.0.0.1 --secure-port="$API_PORT" --cert-dir="$D/certs" --token-auth-file="$D/tokens.csv"
  --authorization-mode=RBAC --service-account-issuer=https://kubernetes.default.svc
  --service-account-key-file="$D/sa.pub" --service-account-signing-key-file="$D/sa.key"
  --service-cluster-ip-range=10.96.0.0/24 --disable-admission-plugins=ServiceAccount
  # A current API server refuses to advertise a loopback address for the `kubernetes` Service.
  --endpoint-reconciler-type=none
  # Users with client certificates (user-kubeconfig).
  --client-ca-file="$PKI/client-ca.crt"
  # The front proxy: the aggregation layer calls aggregated API servers with this client
  # certificate and names the user in these headers. --enable-aggregator-routing stays off (the
  # default): the aggregator dials a Service's clusterIP, or an ExternalName Service's name
  # (scripts/query-api-register.sh).
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group
  --requestheader-extra-headers-prefix=X-Remote-Extra- --proxy-client-cert-file="$PKI/front-proxy-client.crt"
  --proxy-client-key-file="$PKI/front-proxy-client.key")
KCM_ARGS=(--kubeconfig="$KC" --authentication-kubeconfig="$KC" --authorization-kubeconfig="$KC"
  --controllers=garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller
  --leader-elect=false
  --kube-api-qps=200 --kube-api-burst=400 --bind-address=127.0.0.1 --secure-port="${WO_KCM_PORT:-10257}")
FINGERPRINT=$(printf '%s\n' "$VERSION" "${APISERVER_ARGS[@]}" "${KCM_ARGS[@]}" | sha256sum | cut -c1-16)

ready() { curl -skf -m 2 -H "Authorization: Bearer test-admin-token" "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1; }

start() {
  mkdir -p "$D/certs"
  # Parallel test processes may all call start: one starts, the others wait and reuse it.
  # The lock is released when this script exits: the servers below must not inherit it (9>&-).
  exec 9>"$D/.lock"; flock 9
  if [ -f "$KC" ] && ready; then
    running=$(curl -skf -m 2 -H "Authorization: Bearer test-admin-token" "https://127.0.0.1:$API_PORT/version" \
      | sed -n 's/.*"gitVersion": "v\([^"]*\)".*/\1/p')
    if [ "$running" = "$VERSION" ] && [ "$(cat "$D/flags" 2>/dev/null)" = "$FINGERPRINT" ]; then
      echo "control plane already running; KUBECONFIG=$KC"; return 0
    fi
    if [ "$running" = "$VERSION" ]; then
      echo "restarting the control plane: it runs with other flags than this script's" >&2
      stop >/dev/null 2>&1 || true
    else
      echo "a control plane v$running is running on port $API_PORT, not v$VERSION: stop it ($0 stop)," \
        "or give this one its own WO_CONTROL_PLANE_DIR, WO_APISERVER_PORT and WO_ETCD_PORT" >&2
      exit 1
    fi
  fi
  KUBE_VERSION=$VERSION "$HERE/build-control-plane.sh" >/dev/null
  stop >/dev/null 2>&1 || true
  [ -f "$D/sa.key" ] || openssl genrsa -out "$D/sa.key" 2048 2>/dev/null
  openssl rsa -in "$D/sa.key" -pubout -out "$D/sa.pub" 2>/dev/null
  # Static tokens: an admin, and two unprivileged users the tests use for authn/authz checks.
  cat > "$D/tokens.csv" <<TOKENS
test-admin-token,admin,admin,"system:masters"
test-publisher-token,publisher,publisher,"publishers"
test-nobody-token,nobody,nobody,"nobodies"
TOKENS
  certificates
  rm -rf "$D/etcd"
  launch
}

# Starts etcd (on the data in $D/etcd), the API server and the controller manager; waits until the
# API server is ready.
launch() {
  nohup "$BIN/etcd" --data-dir "$D/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 10))" --unsafe-no-fsync > "$D/etcd.log" 2>&1 9>&- &
  echo $! > "$D/etcd.pid"
  nohup "$BIN/kube-apiserver" "${APISERVER_ARGS[@]}" > "$D/apiserver.log" 2>&1 9>&- &
  echo $! > "$D/apiserver.pid"
  cat > "$KC" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$API_PORT", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: test-admin-token}}]
contexts: [{name: local, context: {cluster: local, user: admin, namespace: default}}]
current-context: local
KUBECONFIG
  for _ in $(seq 1 60); do ready && break; kill -0 "$(cat "$D/apiserver.pid")" 2>/dev/null || break; sleep 1; done
  ready || { echo "kube-apiserver did not become ready; last log lines:" >&2; tail -20 "$D/apiserver.log" >&2; exit 1; }
  nohup "$BIN/kube-controller-manager" "${KCM_ARGS[@]}" > "$D/kcm.log" 2>&1 9>&- &
  echo $! > "$D/kcm.pid"
  echo "$FINGERPRINT" > "$D/flags"
  echo "control plane v$VERSION ready; KUBECONFIG=$KC"
}

# An outage (scripts/faults.py): `down` stops the servers and keeps etcd's data, `up`
# starts them again on it, so every object is still there.
up() {
  [ -f "$D/flags" ] && [ -d "$D/etcd" ] || { echo "no stopped control plane in $D: $0 start" >&2; exit 1; }
  exec 9>"$D/.lock"; flock 9
  ready && { echo "control plane already running; KUBECONFIG=$KC"; return 0; }
  launch
}

# A CA (kept across restarts, as sa.key is): `ca NAME` makes $PKI/NAME.{crt,key} once.
ca() {
  [ -f "$PKI/$1.crt" ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -out "$PKI/$1.crt.tmp" -days 3650 \
    -subj "/CN=$1" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
  mv "$PKI/$1.crt.tmp" "$PKI/$1.crt"
}

# A client certificate: `client_cert CA FILE SUBJECT` makes $PKI/FILE.{crt,key} signed by CA
# (a random serial: no serial file shared between concurrent calls).
client_cert() {
  openssl req -newkey rsa:2048 -nodes -keyout "$PKI/$2.key" -out "$PKI/$2.csr" -subj "$3" 2>/dev/null
  openssl x509 -req -in "$PKI/$2.csr" -CA "$PKI/$1.crt" -CAkey "$PKI/$1.key" \
    -set_serial "0x$(openssl rand -hex 16)" -out "$PKI/$2.crt" -days 3650 \
    -extfile <(printf 'extendedKeyUsage=clientAuth\n') 2>/dev/null
  rm -f "$PKI/$2.csr"
}

# The client CA users' certificates chain to, and the front proxy's CA and client certificate
# (CN front-proxy-client: the name aggregated API servers accept, requestheader-allowed-names).
# Under $PKI/.lock: tests may ask for users while the control plane starts.
certificates() {
  mkdir -p "$PKI"
  (
    flock 8
    ca client-ca
    ca front-proxy-ca
    [ -f "$PKI/front-proxy-client.crt" ] || client_cert front-proxy-ca front-proxy-client "/CN=front-proxy-client"
  ) 8>"$PKI/.lock"
}

# A kubeconfig for user NAME in groups GROUP..., authenticated by a client certificate issued anew
# on each call. The certificate and key are embedded and the file replaced at once (mv): a
# process reading it while another call writes it never sees one's key with the other's certificate.
user_kubeconfig() {
  local name=${1:?usage: $0 user-kubeconfig NAME [GROUP...]} subject tmp=user-$1.$$
  shift
  certificates
  subject="/CN=$name"
  for group in "$@"; do subject="$subject/O=$group"; done
  client_cert client-ca "$tmp" "$subject"
  cat > "$PKI/$tmp.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$API_PORT", insecure-skip-tls-verify: true}}]
users: [{name: "$name", user: {client-certificate-data: $(base64 -w0 "$PKI/$tmp.crt"), client-key-data: $(base64 -w0 "$PKI/$tmp.key")}}]
contexts: [{name: local, context: {cluster: local, user: "$name", namespace: default}}]
current-context: local
KUBECONFIG
  mv "$PKI/$tmp.kubeconfig" "$D/kubeconfig-$name"
  rm -f "$PKI/$tmp.crt" "$PKI/$tmp.key"
  echo "$D/kubeconfig-$name"
}

# Stops each process and waits until it is gone (up to 20 s, then SIGKILL): a start right after
# must not find the old API server still holding its port.
stop() {
  local p pid
  for p in kcm apiserver etcd; do
    [ -f "$D/$p.pid" ] || continue
    pid=$(cat "$D/$p.pid"); rm -f "$D/$p.pid"
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  down) stop ;;
  up) up ;;
  env) echo "export KUBECONFIG=$KC PATH=$BIN:\$PATH" ;;
  bin) echo "$BIN" ;;
  user-kubeconfig) shift; user_kubeconfig "$@" ;;
  *) echo "usage: $0 start|stop|env|bin|user-kubeconfig NAME [GROUP...]" >&2; exit 2 ;;
esac
