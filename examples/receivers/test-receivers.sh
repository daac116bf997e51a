#!/usr/bin/env bash
# Tests the Node, Python and Rust receivers without the operator: starts each one (per scheme), sends
# deliveries signed here with openssl (pitchey) and python3 (standard-webhooks), and checks the
# answers and RECEIVED_LOG: valid → 200 and one line; same event id again → 200, no new line;
# bad signature, stale timestamp, missing headers → 401; rotation (only the previous-key
# signature matches) → 200.
#   examples/receivers/test-receivers.sh            # all three receivers
#   examples/receivers/test-receivers.sh python     # one: node, python or rust
# The Rust receiver is the crate's `receiver` example: built here with `cargo build --example receiver`.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT
PASS=0; FAIL=0
check() { # NAME EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then PASS=$((PASS + 1)); echo "  ok   $1"; else FAIL=$((FAIL + 1)); echo "  FAIL $1: expected $2, got $3"; fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PITCHEY_SECRET="whsec_$(head -c 32 /dev/urandom | base64)"
OTHER_SECRET="whsec_$(head -c 32 /dev/urandom | base64)"
body() { printf '{"event_id":"%s","timestamp":"2024-01-15T10:30:00Z","webhook":{"id":"pitchey/crm","name":"My CRM Integration"},"data":{"event_type":"%s","user":{"id":123,"email":"user@example.com"}}}' "$1" "$2"; }
pitchey_sig() { printf '%s.%s' "$2" "$3" | openssl dgst -sha256 -hmac "$1" -r | cut -d' ' -f1; } # SECRET TS BODY
standard_sig() { python3 - "$@" <<'PY'
import base64, hashlib, hmac, sys
secret, msg_id, ts, body = sys.argv[1:5]
key = base64.b64decode(secret.removeprefix("whsec_"))
print(base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.{body}".encode(), hashlib.sha256).digest()).decode())
PY
}
post() { # URL BODY HEADER... → HTTP status code
  local url=$1 data=$2; shift 2
  local args=(); for h in "$@"; do args+=(-H "$h"); done
  curl -s -o /dev/null -w '%{http_code}' -X POST "$url" -H 'Content-Type: application/json' "${args[@]}" --data-binary "$data"
}
lines() { [ -f "$1" ] && wc -l <"$1" | tr -d ' ' || echo 0; }

start() { # NAME SCHEME [SECRET [TOLERANCE_SECONDS]] → sets URL, LOG
  local name=$1 scheme=$2 secret=${3:-$PITCHEY_SECRET} tolerance=${4:-300} port; port=$(free_port)
  LOG=$WORK/$name-$scheme-$port.jsonl; URL=http://127.0.0.1:$port/webhooks/pitchey
  local out=$WORK/$name-$scheme-$port.out
  export PORT=$port WEBHOOK_SECRET=$secret WEBHOOK_SCHEME=$scheme RECEIVED_LOG=$LOG TOLERANCE_SECONDS=$tolerance
  case $name in
    node) (cd "$HERE/node" && exec node server.js) >"$out" 2>&1 & ;;
    python) python3 "$HERE/python/receiver.py" >"$out" 2>&1 & ;;
    rust) "$RUST_RECEIVER" >"$out" 2>&1 & ;;
  esac
  unset PORT WEBHOOK_SECRET WEBHOOK_SCHEME RECEIVED_LOG TOLERANCE_SECONDS
  PIDS+=($!)
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "  $name ($scheme) did not start:"; cat "$out"; return 1
}

test_pitchey() { # NAME
  echo "$1, scheme pitchey"
  start "$1" pitchey || { FAIL=$((FAIL + 1)); return; }
  local now; now=$(date +%s)
  local b1; b1=$(body evt_p1 user.created)
  local s1; s1=$(pitchey_sig "$PITCHEY_SECRET" "$now" "$b1")
  check "valid signature → 200" 200 "$(post "$URL" "$b1" "X-Webhook-Timestamp: $now" "X-Webhook-Signature: sha256=$s1" "X-Webhook-Event-Id: evt_p1" "X-Webhook-Attempt: 1")"
  check "one line in RECEIVED_LOG" 1 "$(lines "$LOG")"
  check "logged fields" '{"event_id":"evt_p1","event_type":"user.created","attempt":1}' \
    "$(python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline()); print(json.dumps({k:d[k] for k in ("event_id","event_type","attempt")},separators=(",",":")))' "$LOG")"
  check "duplicate event id → 200" 200 "$(post "$URL" "$b1" "X-Webhook-Timestamp: $now" "X-Webhook-Signature: sha256=$s1" "X-Webhook-Attempt: 2")"
  check "duplicate not logged" 1 "$(lines "$LOG")"
  local b2; b2=$(body evt_p2 pitch.created)
  check "bad signature → 401" 401 "$(post "$URL" "$b2" "X-Webhook-Timestamp: $now" "X-Webhook-Signature: sha256=$(pitchey_sig "$OTHER_SECRET" "$now" "$b2")")"
  check "signature of another body → 401" 401 "$(post "$URL" "$b2" "X-Webhook-Timestamp: $now" "X-Webhook-Signature: sha256=$s1")"
  local old=$((now - 600))
  check "stale timestamp (10 min) → 401" 401 "$(post "$URL" "$b2" "X-Webhook-Timestamp: $old" "X-Webhook-Signature: sha256=$(pitchey_sig "$PITCHEY_SECRET" "$old" "$b2")")"
  check "missing signature → 401" 401 "$(post "$URL" "$b2" "X-Webhook-Timestamp: $now")"
  check "nothing logged for rejected requests" 1 "$(lines "$LOG")"
  # Rotation: the operator signs with its new key in X-Webhook-Signature and with the previous key
  # (the one this receiver still has) in X-Webhook-Signature-Previous.
  check "rotation: previous-key signature → 200" 200 "$(post "$URL" "$b2" "X-Webhook-Timestamp: $now" \
    "X-Webhook-Signature: sha256=$(pitchey_sig "$OTHER_SECRET" "$now" "$b2")" \
    "X-Webhook-Signature-Previous: sha256=$(pitchey_sig "$PITCHEY_SECRET" "$now" "$b2")" "X-Webhook-Attempt: 3")"
  check "two lines in RECEIVED_LOG" 2 "$(lines "$LOG")"
}

test_standard() { # NAME
  echo "$1, scheme standard-webhooks"
  start "$1" standard-webhooks || { FAIL=$((FAIL + 1)); return; }
  local now; now=$(date +%s)
  local b1; b1=$(body evt_s1 user.verified)
  local s1; s1=$(standard_sig "$PITCHEY_SECRET" evt_s1 "$now" "$b1")
  check "valid signature → 200" 200 "$(post "$URL" "$b1" "webhook-id: evt_s1" "webhook-timestamp: $now" "webhook-signature: v1,$s1" "X-Webhook-Attempt: 1")"
  check "one line in RECEIVED_LOG" 1 "$(lines "$LOG")"
  check "duplicate event id → 200" 200 "$(post "$URL" "$b1" "webhook-id: evt_s1" "webhook-timestamp: $now" "webhook-signature: v1,$s1")"
  check "duplicate not logged" 1 "$(lines "$LOG")"
  local b2; b2=$(body evt_s2 nda.signed)
  check "bad signature → 401" 401 "$(post "$URL" "$b2" "webhook-id: evt_s2" "webhook-timestamp: $now" "webhook-signature: v1,$(standard_sig "$OTHER_SECRET" evt_s2 "$now" "$b2")")"
  check "signature over another id → 401" 401 "$(post "$URL" "$b2" "webhook-id: evt_s2" "webhook-timestamp: $now" "webhook-signature: v1,$(standard_sig "$PITCHEY_SECRET" evt_zz "$now" "$b2")")"
  local old=$((now - 600))
  check "stale timestamp → 401" 401 "$(post "$URL" "$b2" "webhook-id: evt_s2" "webhook-timestamp: $old" "webhook-signature: v1,$(standard_sig "$PITCHEY_SECRET" evt_s2 "$old" "$b2")")"
  check "rotation: second of two signatures matches → 200" 200 "$(post "$URL" "$b2" "webhook-id: evt_s2" "webhook-timestamp: $now" \
    "webhook-signature: v1,$(standard_sig "$OTHER_SECRET" evt_s2 "$now" "$b2") v1,$(standard_sig "$PITCHEY_SECRET" evt_s2 "$now" "$b2")")"
  check "two lines in RECEIVED_LOG" 2 "$(lines "$LOG")"
}

# The crate's own signature vectors (tests/delivery/vectors.rs): what webhook-operator sends for a
# fixed secret, timestamp and body is accepted. The vector's timestamp is old: tolerance widened.
VECTOR_BODY='{"event_id":"evt_01HMA7ZQ5V3KX9P2D4E6F8G0JB","timestamp":"2024-01-15T10:30:00Z","webhook":{"id":"42","name":"My Webhook Endpoint"},"data":{"event_type":"user.created","user":{"email":"user@example.com","id":123,"username":"newuser"}}}'
test_vectors() { # NAME
  echo "$1, webhook-operator's signature vectors"
  start "$1" pitchey my-webhook-secret 2000000000 || { FAIL=$((FAIL + 1)); return; }
  check "pitchey vector → 200" 200 "$(post "$URL" "$VECTOR_BODY" "X-Webhook-Timestamp: 1705314600" \
    "X-Webhook-Signature: sha256=4ce1340ba2aea1900b5596c649cbe927058ed80c4a0d57765cd8e156329af6f9")"
  check "pitchey vector logged" 1 "$(lines "$LOG")"
  start "$1" pitchey old-webhook-secret 2000000000 || { FAIL=$((FAIL + 1)); return; }
  check "pitchey rotation vector (old secret) → 200" 200 "$(post "$URL" "$VECTOR_BODY" "X-Webhook-Timestamp: 1705314600" \
    "X-Webhook-Signature: sha256=4ce1340ba2aea1900b5596c649cbe927058ed80c4a0d57765cd8e156329af6f9" \
    "X-Webhook-Signature-Previous: sha256=5d19de505046da17ac3f42730aa4e774c6d636526307323578ab85ce4262226e")"
  # The standardwebhooks npm library has a fixed 5-minute tolerance: the old vector is not for Node.
  if [ "$1" != node ]; then
    start "$1" standard-webhooks whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw 2000000000 || { FAIL=$((FAIL + 1)); return; }
    check "standard-webhooks vector → 200" 200 "$(post "$URL" "$VECTOR_BODY" "webhook-id: evt_01HMA7ZQ5V3KX9P2D4E6F8G0JB" \
      "webhook-timestamp: 1705314600" "webhook-signature: v1,By4sLwMZjQi7lecp+9f67DdTfaPhiZ/yA7teZw5tKfs=")"
  fi
}

WHICH=${1:-all}
if [ "$WHICH" = all ] || [ "$WHICH" = node ]; then
  if [ ! -d "$HERE/node/node_modules" ]; then (cd "$HERE/node" && npm ci --no-audit --no-fund --silent) || { echo "npm ci failed"; exit 1; }; fi
  test_pitchey node; test_standard node; test_vectors node
fi
if [ "$WHICH" = all ] || [ "$WHICH" = python ]; then
  test_pitchey python; test_standard python; test_vectors python
fi
if [ "$WHICH" = all ] || [ "$WHICH" = rust ]; then
  ROOT=$(cd "$HERE/../.." && pwd)
  (cd "$ROOT" && cargo build --quiet --example receiver) || { echo "cargo build --example receiver failed"; exit 1; }
  RUST_RECEIVER=${CARGO_TARGET_DIR:-$ROOT/target}/debug/examples/receiver
  test_pitchey rust; test_standard rust; test_vectors rust
fi
echo "receivers: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
