#!/usr/bin/env bash
# The local demo: a real control plane, the controller and the dispatcher as local processes, a
# receiver, events published as WebhookEvents and through the ingest API, and what kubectl shows.
#   scripts/demo.sh            # runs, prints the results, keeps running until Ctrl-C
#   scripts/demo.sh --no-wait  # runs, prints the results, stops
# Everything it started is stopped when it exits or is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WAIT=1; [ "${1:-}" = "--no-wait" ] && WAIT=0
WORK=$(mktemp -d /tmp/webhook-operator-demo.XXXXXX)
PIDS=()
cleanup() {
  echo; echo "== stopping what the demo started"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${STARTED_CP:-0}" = 1 ] && scripts/control-plane.sh stop >/dev/null 2>&1 || true
  echo "logs kept in $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== control plane (built once from Debian's sources, cached)"
scripts/build-control-plane.sh >/dev/null
if scripts/control-plane.sh start | tee "$WORK/cp.txt" | grep -q "already running"; then STARTED_CP=0; else STARTED_CP=1; fi
export KUBECONFIG=${WO_CONTROL_PLANE_DIR:-/tmp/webhook-operator-cp}/kubeconfig

echo "== building webhook-operator"
cargo build --quiet --bin webhook-operator --example receiver
BIN=$ROOT/target/debug/webhook-operator

echo "== installing the CRDs"
# Client-side apply without client validation: a 1.20 API server does not know the CEL rules
# (x-kubernetes-validations) and drops them; newer servers enforce them.
kubectl apply --validate=false -f crds/ >/dev/null
kubectl wait --for condition=established --timeout=30s crd -l '!nonexistent' >/dev/null 2>&1 || true

echo "== starting the controller and the dispatcher"
RUST_LOG=info,kube=warn "$BIN" controller --metrics-addr 127.0.0.1:18080 --allow-plain-http \
  --lease-namespace default > "$WORK/controller.log" 2>&1 & PIDS+=($!)
RUST_LOG=info,kube=warn "$BIN" dispatcher --listen-addr 127.0.0.1:18000 --metrics-addr 127.0.0.1:18081 \
  --store-path "$WORK/dispatcher.db" --allow-plain-http --egress-allow-cidr 127.0.0.0/8 \
  --status-interval-seconds 1 > "$WORK/dispatcher.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 60); do curl -sf 127.0.0.1:18081/readyz >/dev/null 2>&1 && break; sleep 0.5; done

echo "== applying examples/ (the catalog, integrations) and the demo endpoint"
kubectl apply --validate=false -f examples/demo/demo.yaml
# The catalog's endpoints point at *.example.com: without internet their deliveries fail, retry
# and dead-letter, which `kubectl describe` then shows.
kubectl apply --validate=false -f examples/ 2>&1 | sed 's/^/   /' || true
SECRET=""
for _ in $(seq 1 60); do
  SECRET=$(kubectl -n pitchey-demo get secret local-receiver-signing -o jsonpath='{.data.secret}' 2>/dev/null | base64 -d || true)
  [ -n "$SECRET" ] && break; sleep 0.5
done
[ -n "$SECRET" ] || { echo "the controller did not provision the signing Secret; see $WORK/controller.log"; exit 1; }

echo "== starting the receiver (examples/receivers/rust, verifies every signature)"
WEBHOOK_SECRET=$SECRET PORT=9000 RECEIVED_LOG=$WORK/received.jsonl \
  "$ROOT/target/debug/examples/receiver" > "$WORK/receiver.log" 2>&1 & PIDS+=($!)
sleep 1

echo "== publishing: WebhookEvents ..."
kubectl apply --validate=false -f examples/demo/events.yaml
echo "== ... and the ingest API (Bearer token checked by TokenReview, RBAC by SubjectAccessReview)"
for type in investment.created nda.signed payment.succeeded message.sent; do
  curl -s -X POST "http://127.0.0.1:18000/v1/namespaces/pitchey-demo/events" \
    -H "Authorization: Bearer test-admin-token" -H "Content-Type: application/json" \
    -d "{\"type\":\"$type\",\"data\":{\"id\":42,\"source\":\"ingest API\"}}"; echo
done
echo "== a test delivery (annotation webhooks.pitchey.io/test)"
kubectl -n pitchey-demo annotate --overwrite whep local-receiver webhooks.pitchey.io/test="demo-$(date +%s)" >/dev/null

sleep 4
echo; echo "== kubectl get webhooks -A"
kubectl get webhooks -A
echo; echo "== kubectl describe webhookendpoint local-receiver"
kubectl -n pitchey-demo describe webhookendpoint local-receiver
echo; echo "== what the receiver got"
cat "$WORK/receiver.log"
if [ "$WAIT" = 1 ]; then
  echo; echo "Running. Try: KUBECONFIG=$KUBECONFIG kubectl get webhooks -A   (Ctrl-C stops everything)"
  while true; do sleep 3600; done
fi
