#!/usr/bin/env bash
# The local demo: a real control plane, the controller and the dispatcher as local processes, a
# receiver, events published as WebhookEvents and through the ingest API, and what kubectl shows.
#   scripts/demo.sh            # runs, checks, prints the results, keeps running until Ctrl-C
#   scripts/demo.sh --no-wait  # runs, checks, prints the results, stops (CI runs this)
# It exits non-zero with a message saying what is wrong unless the receiver verified and got every
# published event and the test delivery, and every WebhookEndpoint and WebhookSubscription applied
# from examples/ is Ready=True. Everything it started is stopped when it exits or on Ctrl-C/SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WAIT=1; [ "${1:-}" = "--no-wait" ] && WAIT=0
# Fixed ports: the receiver's is in examples/demo/demo.yaml; the others appear in the printed hints.
RECEIVER_PORT=9000 INGEST_PORT=18000 CONTROLLER_METRICS_PORT=18080 DISPATCHER_METRICS_PORT=18081
NS=pitchey-demo
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in $RECEIVER_PORT $INGEST_PORT $CONTROLLER_METRICS_PORT $DISPATCHER_METRICS_PORT; do
  if listening "$port"; then
    owner=$(ss -Htlnp "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*))' | head -1 || true)
    echo "port 127.0.0.1:$port is already in use${owner:+ by $owner}: the demo needs ports" \
      "$RECEIVER_PORT, $INGEST_PORT, $CONTROLLER_METRICS_PORT and $DISPATCHER_METRICS_PORT." \
      "Stop that process (another demo?) and run again." >&2
    exit 1
  fi
done
WORK=$(mktemp -d /tmp/webhook-operator-demo.XXXXXX)
PIDS=()
fail() { echo; echo "demo FAILED: $*" >&2; exit 1; }

stop_pids() { # SIGTERM, up to 10 s for a graceful stop, then SIGKILL
  local pid alive
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    alive=0; for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  for pid in "$@"; do kill -9 "$pid" 2>/dev/null || true; done
}
cleanup() {
  trap - INT TERM
  echo; echo "== stopping what the demo started"
  # A long step running in its own process group (see `step`): stop the whole group.
  if [ -n "${STEP_PID:-}" ]; then kill -- "-$STEP_PID" 2>/dev/null || kill "$STEP_PID" 2>/dev/null || true; fi
  [ "${#PIDS[@]}" -gt 0 ] && stop_pids "${PIDS[@]}"
  [ "${STARTED_CP:-0}" = 1 ] && scripts/control-plane.sh stop >/dev/null 2>&1 || true
  echo "logs kept in $WORK"
}
trap cleanup EXIT
# Traps run only between foreground commands: long waits below are `… & wait $!` so a signal
# interrupts them at once.
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a long command (builds) in its own process group and waits for it, so Ctrl-C or SIGTERM
# to this script stops it and everything it spawned at once.
step() {
  setsid --wait "$@" & STEP_PID=$!
  local rc=0; wait "$STEP_PID" || rc=$?
  STEP_PID=""
  return "$rc"
}

# Polls CMD until it succeeds, at most SECONDS; the short sleeps keep signals prompt.
wait_until() { # SECONDS CMD...
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do [ "$SECONDS" -lt "$deadline" ] || return 1; sleep 0.5; done
}

echo "== control plane (built once from the published Go modules, cached)"
step scripts/build-control-plane.sh >/dev/null
STARTED_CP=1  # until it says it reused a running one: a start that fails half-way is stopped too
step scripts/control-plane.sh start > "$WORK/cp.txt" || { cat "$WORK/cp.txt"; fail "the control plane did not start"; }
cat "$WORK/cp.txt"
grep -q "already running" "$WORK/cp.txt" && STARTED_CP=0
eval "$(scripts/control-plane.sh env)"  # KUBECONFIG, and kubectl of the same release first on PATH

echo "== building webhook-operator"
step cargo build --quiet --bin webhook-operator --example receiver
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/debug/webhook-operator

echo "== installing the CRDs"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for condition=established --timeout=30s -f crds/ >/dev/null

# A reused control plane keeps the WebhookEvents of an earlier run (re-applying them would change
# nothing, so they are deleted and published afresh) and its test annotation (a new dispatcher
# could answer it again if that run stopped before recording status.lastTest).
kubectl -n "$NS" delete whev --all --ignore-not-found >/dev/null
kubectl -n "$NS" annotate whep local-receiver webhooks.pitchey.io/test- >/dev/null 2>&1 || true

echo "== starting the controller and the dispatcher"
RUST_LOG=info,kube=warn "$BIN" controller --metrics-addr "127.0.0.1:$CONTROLLER_METRICS_PORT" --allow-plain-http \
  --lease-namespace default > "$WORK/controller.log" 2>&1 & PIDS+=($!)
RUST_LOG=info,kube=warn "$BIN" dispatcher --listen-addr "127.0.0.1:$INGEST_PORT" \
  --metrics-addr "127.0.0.1:$DISPATCHER_METRICS_PORT" --store-path "$WORK/dispatcher.db" \
  --allow-plain-http --egress-allow-cidr 127.0.0.0/8 --egress-deny-cidr 127.0.0.66/32 \
  --status-interval-seconds 1 > "$WORK/dispatcher.log" 2>&1 & PIDS+=($!)
wait_until 60 curl -sf "127.0.0.1:$CONTROLLER_METRICS_PORT/healthz" -o /dev/null \
  || { tail -20 "$WORK/controller.log" >&2; fail "the controller did not start (log: $WORK/controller.log)"; }
wait_until 60 curl -sf "127.0.0.1:$DISPATCHER_METRICS_PORT/readyz" -o /dev/null \
  || { tail -20 "$WORK/dispatcher.log" >&2; fail "the dispatcher did not become ready (log: $WORK/dispatcher.log)"; }

echo "== applying examples/ (the catalog, integrations) and the demo endpoint"
kubectl apply -f examples/demo/demo.yaml || fail "kubectl apply -f examples/demo/demo.yaml failed"
# The catalog's endpoints point at *.example.com: without internet their deliveries fail, retry
# and dead-letter, which `kubectl describe` then shows.
kubectl apply -f examples/ > "$WORK/apply.txt" 2>&1 || { cat "$WORK/apply.txt" >&2; fail "kubectl apply -f examples/ failed"; }
sed 's/^/   /' "$WORK/apply.txt"
signing_secret() {
  SECRET=$(kubectl -n "$NS" get secret local-receiver-signing -o jsonpath='{.data.secret}' 2>/dev/null | base64 -d 2>/dev/null || true)
  [ -n "$SECRET" ]
}
wait_until 30 signing_secret || fail "the controller did not provision the signing Secret; see $WORK/controller.log"

echo "== starting the receiver (examples/receivers/rust, verifies every signature)"
WEBHOOK_SECRET=$SECRET PORT=$RECEIVER_PORT RECEIVED_LOG=$WORK/received.jsonl \
  "$TARGET_DIR/debug/examples/receiver" > "$WORK/receiver.log" 2>&1 & PIDS+=($!)
wait_until 30 curl -sf "127.0.0.1:$RECEIVER_PORT/healthz" -o /dev/null \
  || { cat "$WORK/receiver.log" >&2; fail "the receiver did not start"; }

echo "== publishing: WebhookEvents ..."
kubectl apply -f examples/demo/events.yaml
EXPECTED_TYPES=$(kubectl -n "$NS" get whev -o jsonpath='{range .items[*]}{.spec.type}{"\n"}{end}')
echo "== ... and the ingest API (Bearer token checked by TokenReview, RBAC by SubjectAccessReview)"
for type in investment.created nda.signed payment.succeeded message.sent; do
  code=$(curl -s -o "$WORK/ingest-$type.json" -w '%{http_code}' -X POST \
    "http://127.0.0.1:$INGEST_PORT/v1/namespaces/$NS/events" \
    -H "Authorization: Bearer test-admin-token" -H "Content-Type: application/json" \
    -d "{\"type\":\"$type\",\"data\":{\"id\":42,\"source\":\"ingest API\"}}") || code=000
  echo "   $code $(cat "$WORK/ingest-$type.json" 2>/dev/null)"
  [ "$code" = 202 ] || fail "publishing $type through the ingest API answered $code, not 202"
  EXPECTED_TYPES+=$'\n'$type
done
echo "== a test delivery (annotation webhooks.pitchey.io/test)"
NONCE="demo-$(date +%s)-$$"
kubectl -n "$NS" annotate --overwrite whep local-receiver webhooks.pitchey.io/test="$NONCE" >/dev/null
EXPECTED_TYPES+=$'\n'webhook.test
EXPECTED=$(grep -c . <<<"$EXPECTED_TYPES")

echo "== checking: the receiver verified and got $EXPECTED deliveries; examples/ are Ready"
received() { local n; n=$(grep -c . "$WORK/received.jsonl" 2>/dev/null) || true; echo "${n:-0}"; }
all_received() { [ "$(received)" -ge "$EXPECTED" ]; }
# One line per WebhookEndpoint/WebhookSubscription applied from examples/ whose Ready is not True.
not_ready() {
  kubectl get -f examples/ -f examples/demo/demo.yaml --no-headers -o \
    'custom-columns=KIND:.kind,NS:.metadata.namespace,NAME:.metadata.name,READY:.status.conditions[?(@.type=="Ready")].status,REASON:.status.conditions[?(@.type=="Ready")].reason,MESSAGE:.status.conditions[?(@.type=="Ready")].message' \
    | awk '($1 == "WebhookEndpoint" || $1 == "WebhookSubscription") && $4 != "True"'
}
all_ready() { local out; out=$(not_ready) && [ -z "$out" ]; }
PROBLEMS=()
wait_until 60 all_received || true
got=$(received)
[ "$got" = "$EXPECTED" ] || PROBLEMS+=("the receiver logged $got deliveries, expected $EXPECTED (receiver log: $WORK/receiver.log, dispatcher log: $WORK/dispatcher.log)")
for type in $EXPECTED_TYPES; do
  grep -q "\"event_type\":\"$type\"" "$WORK/received.jsonl" 2>/dev/null || PROBLEMS+=("no verified $type delivery reached the receiver")
done
grep -q '^401' "$WORK/receiver.log" && PROBLEMS+=("the receiver rejected deliveries: $(grep -m1 '^401' "$WORK/receiver.log")")
wait_until 60 all_ready || PROBLEMS+=("not Ready=True: $(not_ready | tr -s ' ' | paste -sd ';' -)")
last_test() { kubectl -n "$NS" get whep local-receiver -o jsonpath='{.status.lastTest.nonce} {.status.lastTest.statusCode}'; }
test_recorded() { [ "$(last_test)" = "$NONCE 200" ]; }
wait_until 30 test_recorded || PROBLEMS+=("status.lastTest of local-receiver is \"$(last_test)\", expected \"$NONCE 200\"")

echo; echo "== kubectl get webhooks -A"
kubectl get webhooks -A
echo; echo "== kubectl describe webhookendpoint local-receiver"
kubectl -n "$NS" describe webhookendpoint local-receiver
echo; echo "== what the receiver got"
cat "$WORK/receiver.log"

if [ "${#PROBLEMS[@]}" -gt 0 ]; then
  printf '%s\n' "${PROBLEMS[@]}" | sed 's/^/ - /' >&2
  fail "${#PROBLEMS[@]} check(s) failed"
fi
echo; echo "demo check passed: $EXPECTED deliveries verified by the receiver; every example endpoint and subscription is Ready"

DASHBOARD_URL="http://127.0.0.1:$INGEST_PORT/ui/"
DEVELOPER_TOKEN=$(kubectl -n "$NS" create token demo-developer --duration 8h)
echo; echo "== the dashboard"
echo "   open $DASHBOARD_URL and paste this token of ServiceAccount $NS/demo-developer (8 h):"
echo "   $DEVELOPER_TOKEN"
echo "   (a new one: kubectl -n $NS create token demo-developer; everything, as cluster admin: test-admin-token)"
# DEMO_THEN: a command run while everything is up (scripts/browser-test.sh runs the browser test).
if [ -n "${DEMO_THEN:-}" ]; then
  echo; echo "== $DEMO_THEN"
  DASHBOARD_URL=$DASHBOARD_URL DEVELOPER_TOKEN=$DEVELOPER_TOKEN DEMO_NAMESPACE=$NS DEMO_WORK=$WORK \
    INGEST_URL="http://127.0.0.1:$INGEST_PORT" bash -c "$DEMO_THEN" || fail "$DEMO_THEN failed"
fi
if [ "$WAIT" = 1 ]; then
  echo; echo "Running. In another shell: eval \"\$(scripts/control-plane.sh env)\"; kubectl get webhooks -A   (Ctrl-C stops everything)"
  sleep infinity & PIDS+=($!)
  wait $!
fi
