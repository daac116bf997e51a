#!/usr/bin/env bash
# Exercises the chart's RBAC for real on the local control plane:
#   1. renders the chart and applies ONLY its ServiceAccounts, (Cluster)Roles and bindings (release
#      namespace of its own); `kubectl auth can-i --as=system:serviceaccount:…` for every verb the
#      code uses (yes) and for verbs it must not have (no), with the default values (ClusterRoles)
#      and then, those removed, with watchNamespace set (the same rules as Roles);
#   2. under the latter (the processes watch one namespace: the control plane is shared with other
#      tests) runs `target/debug/webhook-operator controller` and `dispatcher` as local processes
#      with kubeconfigs that impersonate the chart's ServiceAccounts, a loopback receiver, an
#      endpoint and a subscription; publishes a WebhookEvent and an event through the ingest API;
#      rotates the signing Secret, sends a test delivery, runs a WebhookReplay, lets an event's TTL
#      delete it, makes a delivery fail (dead letter, open circuit); asserts the endpoint is Ready,
#      the event Delivered, the receiver got both events, both processes published Events, and
#      neither logged "forbidden"/403;
#   3. scrapes both processes' /metrics (behind --metrics-auth: 401 without a token, 403 for a user
#      without the chart's metrics-reader role, 200 for one bound to it by metrics.auth.readers):
#      every metric in the PrometheusRule's expressions and in
#      the Grafana dashboard's queries exists (the dashboard's JSON must load);
#   4. with a PostgreSQL running (WO_POSTGRES_URL or scripts/postgres.sh status), a dispatcher on
#      it under the postgres variant's extra Role: partition Leases taken, released, deleted.
# Builds nothing but `cargo build --bin webhook-operator` when the binary is missing. Starts the
# control plane (scripts/control-plane.sh start) when none runs, and stops only what it started.
#   scripts/check-rbac.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CHART=charts/webhook-operator
RELEASE=webhook-operator
NS=webhook-operator-rbac-check     # the release namespace (ServiceAccounts, Leases)
TENANT=webhook-operator-rbac-tenant  # where the webhooks live, the watched namespace
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/debug/webhook-operator
WORK=$(mktemp -d /tmp/webhook-operator-rbac.XXXXXX)
PIDS=()
STARTED_CP=0
APPLIED=0
FAILED=()
fail() { FAILED+=("$1"); echo "FAIL: $1" >&2; }
ok() { echo "ok: $1"; }
summary() {
  echo
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo "check-rbac: ${#FAILED[@]} check(s) failed:" >&2
    printf '  - %s\n' "${FAILED[@]}" >&2
    return 1
  fi
  echo "check-rbac: all checks passed"
}

cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${QUERY_REGISTERED:-0}" = 1 ]; then
    kubectl delete apiservice v1alpha1.query.webhooks.pitchey.io --ignore-not-found >/dev/null 2>&1 || true
  fi
  if [ "$APPLIED" = 1 ]; then
    kubectl delete namespace "$TENANT" --wait=false --ignore-not-found >/dev/null 2>&1 || true
    for f in "$WORK"/rbac-cluster.yaml "$WORK"/rbac.yaml "$WORK"/rbac-postgres.yaml; do
      [ -f "$f" ] && kubectl delete -f "$f" --ignore-not-found >/dev/null 2>&1 || true
    done
    kubectl delete namespace "$NS" --wait=false --ignore-not-found >/dev/null 2>&1 || true
  fi
  [ "$STARTED_CP" = 1 ] && scripts/control-plane.sh stop >/dev/null 2>&1 || true
  if [ $rc -ne 0 ]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for DESCRIPTION SECONDS CMD...: polls CMD every 0.5 s until it succeeds; stops the check
# (with the logs kept) when it does not: what follows depends on it.
wait_for() {
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 2))); do
    if "$@" >/dev/null 2>&1; then ok "$what"; return 0; fi
    sleep 0.5
  done
  fail "$what (not within ${secs}s)"; summary || true; exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== prerequisites"
HELM=$(scripts/install-helm.sh)
[ -x "$BIN" ] || cargo build --bin webhook-operator
if scripts/control-plane.sh start | tee "$WORK/cp.txt" | grep -q "already running"; then :; else STARTED_CP=1; fi
eval "$(scripts/control-plane.sh env)"  # KUBECONFIG, and kubectl of the same release first on PATH
kubectl apply --server-side --force-conflicts -f crds/ >"$WORK/crds.log" 2>&1 || { cat "$WORK/crds.log" >&2; exit 1; }
kubectl wait --for=condition=Established --timeout=60s -f crds/ >/dev/null

# render FILE HELM-ARGS...: the chart's RBAC objects (ServiceAccounts, (Cluster)Roles, bindings)
# into FILE; the ServiceAccount names by component and the metric names of the PrometheusRule's
# alert expressions into FILE.env, as shell variables.
render_rbac() {
  local out=$1; shift
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NS" --set metrics.prometheusRule.enabled=true \
    --set metrics.grafanaDashboard.enabled=true --set metrics.auth.enabled=true \
    --set 'metrics.auth.readers[0].kind=ServiceAccount' --set 'metrics.auth.readers[0].name=metrics-scraper' \
    "$@" >"$out.chart.yaml"
  python3 - "$out.chart.yaml" "$out" >"$out.env" <<'PY'
import re, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
rbac = [d for d in docs if d["kind"] in kinds]
yaml.safe_dump_all(rbac, open(sys.argv[2], "w"), sort_keys=False)
for d in rbac:
    if d["kind"] == "ServiceAccount":
        component = d["metadata"]["labels"]["app.kubernetes.io/component"]
        print(f'SA_{component.upper()}={d["metadata"]["name"]}')
exprs = [r["expr"] for d in docs if d["kind"] == "PrometheusRule"
         for g in d["spec"]["groups"] for r in g["rules"]]
names = sorted({n for e in exprs for n in re.findall(r"\bwebhook_operator_[a-z0-9_]+", e)})
print("ALERT_METRICS='" + " ".join(names) + "'")
# The Grafana dashboard: its JSON must load, and every metric its queries use must exist.
import json
boards = [json.loads(v) for d in docs if d["kind"] == "ConfigMap"
          and d["metadata"]["name"].endswith("-grafana-dashboard") for v in d["data"].values()]
if not boards or not all(b.get("panels") for b in boards):
    sys.exit("the chart rendered no Grafana dashboard with panels")
queries = [t["expr"] for b in boards for p in b["panels"] for t in p.get("targets", [])]
queries += [v["query"]["query"] for b in boards for v in b["templating"]["list"]
            if isinstance(v.get("query"), dict)]
board_names = sorted({n for e in queries for n in re.findall(r"\bwebhook_operator_[a-z0-9_]+", e)})
print("DASHBOARD_METRICS='" + " ".join(board_names) + "'")
PY
}

# can SA EXPECTED VERB RESOURCE [FLAGS...]: EXPECTED is yes or no; FLAGS default to -n $TENANT.
can() {
  local sa=$1 want=$2 verb=$3 res=$4; shift 4
  local flags=("$@"); [ ${#flags[@]} -gt 0 ] || flags=(-n "$TENANT")
  local got
  got=$(kubectl auth can-i "$verb" "$res" "${flags[@]}" --as="system:serviceaccount:$NS:$sa" 2>/dev/null || true)
  if [ "$got" = "$want" ]; then
    echo "   $want  $sa $verb $res ${flags[*]}"
  else
    fail "can-i $sa $verb $res ${flags[*]}: expected $want, got ${got:-error}"
  fi
}

# can_i_all SCOPE...: every verb the code uses (yes) and some it must not have (no). SCOPE is where
# the processes list and watch: -A (ClusterRoles) or -n $TENANT (watchNamespace: Roles).
can_i_all() {
  local scope=("$@") WH=webhooks.pitchey.io C=$SA_CONTROLLER D=$SA_DISPATCHER v r
  # The controller: src/controller (Controller, watchers, get_opt, create/replace, server-side
  # apply, patch_status, the Recorder) and src/runtime/lease.rs.
  can "$C" yes get "webhookendpoints.$WH"
  for v in list watch; do
    for r in "webhookendpoints.$WH" "webhooksubscriptions.$WH" secrets configmaps; do can "$C" yes "$v" "$r" "${scope[@]}"; done
  done
  for r in webhookendpoints webhooksubscriptions; do can "$C" yes patch "$r.$WH" -n "$TENANT" --subresource=status; done
  for v in get create update; do can "$C" yes "$v" secrets; done
  # Server-side apply that creates an object is authorized as `create` as well as `patch`.
  for v in get create patch; do can "$C" yes "$v" configmaps; done
  for v in create patch; do can "$C" yes "$v" events.events.k8s.io; done
  for v in get create update; do can "$C" yes "$v" leases.coordination.k8s.io -n "$NS"; done
  can "$C" no get "webhooksubscriptions.$WH"
  can "$C" no update "webhookendpoints.$WH" -n "$TENANT" --subresource=status
  can "$C" no get "webhookendpoints.$WH" -n "$TENANT" --subresource=status
  can "$C" no patch "webhookendpoints.$WH"
  can "$C" no update configmaps
  can "$C" no delete configmaps
  can "$C" no delete secrets
  can "$C" no patch secrets
  can "$C" no create "webhookevents.$WH"
  can "$C" no delete leases.coordination.k8s.io -n "$NS"
  # metrics.auth.enabled: the controller checks scrapers' tokens of /metrics.
  can "$C" yes create tokenreviews.authentication.k8s.io --all-namespaces
  can "$C" yes create subjectaccessreviews.authorization.k8s.io --all-namespaces
  # The dispatcher: src/dispatcher (watchers, patch_status, the phase label, TTL deletion, the
  # Recorder, TokenReview/SubjectAccessReview). SQLite store: no Leases.
  for r in "webhookendpoints.$WH" "webhooksubscriptions.$WH" "webhookevents.$WH" "webhookreplays.$WH" secrets configmaps; do
    for v in list watch; do can "$D" yes "$v" "$r" "${scope[@]}"; done
  done
  for r in webhookendpoints webhookevents webhookreplays; do can "$D" yes patch "$r.$WH" -n "$TENANT" --subresource=status; done
  for v in patch delete; do can "$D" yes "$v" "webhookevents.$WH"; done
  for v in create patch; do can "$D" yes "$v" events.events.k8s.io; done
  can "$D" yes create tokenreviews.authentication.k8s.io --all-namespaces
  can "$D" yes create subjectaccessreviews.authorization.k8s.io --all-namespaces
  # The query API: the front proxy's CA and header names (kube-system), and nothing else there.
  can "$D" yes get configmaps/extension-apiserver-authentication -n kube-system
  can "$D" no get secrets -n kube-system
  can "$D" no get secrets
  can "$D" no delete secrets
  can "$D" no create secrets
  can "$D" no get configmaps
  can "$D" no get "webhookendpoints.$WH"
  can "$D" no update "webhookendpoints.$WH"
  can "$D" no create "webhookevents.$WH"
  can "$D" no patch "webhooksubscriptions.$WH" -n "$TENANT" --subresource=status
  can "$D" no get "webhookevents.$WH" -n "$TENANT" --subresource=status
  can "$D" no create leases.coordination.k8s.io -n "$NS"
}

# Namespaces of a previous run may still be terminating.
for ns in "$NS" "$TENANT"; do kubectl wait --for=delete "namespace/$ns" --timeout=120s >/dev/null 2>&1 || true; done
kubectl create namespace "$NS" >/dev/null
kubectl create namespace "$TENANT" >/dev/null
APPLIED=1

echo "== the chart's RBAC, default values (ClusterRoles), release namespace $NS: kubectl auth can-i"
render_rbac "$WORK/rbac-cluster.yaml"
kubectl apply -f "$WORK/rbac-cluster.yaml" | sed 's/^/   /'
# shellcheck disable=SC1091
. "$WORK/rbac-cluster.yaml.env"
: "${SA_CONTROLLER:?no controller ServiceAccount rendered}" "${SA_DISPATCHER:?no dispatcher ServiceAccount rendered}"
can_i_all -A
kubectl delete -f "$WORK/rbac-cluster.yaml" >/dev/null

# The processes watch only $TENANT: they share the control plane with other tests, whose objects
# a cluster-wide controller or dispatcher would act on. So they run under the namespace-scoped
# variant (watchNamespace: the same rules as Roles in $TENANT), applied alone.
echo "== the chart's RBAC, watchNamespace=$TENANT (Roles): kubectl auth can-i"
render_rbac "$WORK/rbac.yaml" --set "watchNamespace=$TENANT"
kubectl apply -f "$WORK/rbac.yaml" | sed 's/^/   /'
# shellcheck disable=SC1091
. "$WORK/rbac.yaml.env"
# The authorizer's cache forgets the ClusterRoles within a moment.
wait_for "the ClusterRoles are gone (no cluster-wide list)" 30 sh -c \
  "[ \"\$(kubectl auth can-i list secrets -A --as=system:serviceaccount:$NS:$SA_DISPATCHER)\" = no ]"
can_i_all -n "$TENANT"

echo "== controller and dispatcher as the chart's ServiceAccounts"
# A kubeconfig per process: the admin token, impersonating the ServiceAccount (kube-rs sends the
# `as`/`as-groups` of the kubeconfig as Impersonate-* headers).
impersonating() {
  local sa=$1 server
  server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  cat >"$WORK/$sa.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", insecure-skip-tls-verify: true}}]
users:
  - name: $sa
    user:
      token: test-admin-token
      as: system:serviceaccount:$NS:$sa
      as-groups: [system:serviceaccounts, "system:serviceaccounts:$NS", system:authenticated]
contexts: [{name: $sa, context: {cluster: local, user: $sa, namespace: $NS}}]
current-context: $sa
EOF
  echo "$WORK/$sa.kubeconfig"
}
# /metrics is behind TokenReview + SubjectAccessReview (metrics.auth.enabled, the chart's default):
# a scraper ServiceAccount, bound to the chart's metrics-reader ClusterRole by metrics.auth.readers.
kubectl -n "$NS" create serviceaccount metrics-scraper >/dev/null
SCRAPE_TOKEN=$(kubectl -n "$NS" create token metrics-scraper)
RECEIVER_PORT=$(free_port); INGEST_PORT=$(free_port); DMETRICS_PORT=$(free_port); CMETRICS_PORT=$(free_port)
QUERY_PORT=$(free_port)
# The query API's serving certificate, for the ExternalName Service registered below.
mkdir -p "$WORK/query"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/query/ca.key" -out "$WORK/query/ca.crt" -days 2 \
  -subj "/CN=query-ca" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$WORK/query/tls.key" -out "$WORK/query/tls.csr" \
  -subj "/CN=webhook-operator-query.$TENANT.svc" 2>/dev/null
openssl x509 -req -in "$WORK/query/tls.csr" -CA "$WORK/query/ca.crt" -CAkey "$WORK/query/ca.key" -CAcreateserial \
  -out "$WORK/query/tls.crt" -days 2 -extfile <(printf 'subjectAltName=DNS:webhook-operator-query.%s.svc\n' "$TENANT") 2>/dev/null
# Debug for the crate and kube-runtime: a watch or reconcile error is logged there, not above.
LOG="info,webhook_operator=debug,kube_runtime=debug"
KUBECONFIG=$(impersonating "$SA_CONTROLLER") RUST_LOG=$LOG "$BIN" controller \
  --metrics-addr "127.0.0.1:$CMETRICS_PORT" --metrics-auth=true --allow-plain-http --lease-namespace "$NS" \
  --identity rbac-check --watch-namespace "$TENANT" >"$WORK/controller.log" 2>&1 & PIDS+=($!)
KUBECONFIG=$(impersonating "$SA_DISPATCHER") RUST_LOG=$LOG "$BIN" dispatcher \
  --listen-addr "127.0.0.1:$INGEST_PORT" --metrics-addr "127.0.0.1:$DMETRICS_PORT" --metrics-auth=true \
  --store-path "$WORK/dispatcher.db" --allow-plain-http --egress-allow-cidr 127.0.0.0/8 \
  --status-interval-seconds 1 --identity rbac-check --watch-namespace "$TENANT" \
  --query-api-addr "127.0.0.1:$QUERY_PORT" --query-api-tls-cert-file "$WORK/query/tls.crt" \
  --query-api-tls-key-file "$WORK/query/tls.key" \
  >"$WORK/dispatcher.log" 2>&1 & DISPATCHER_PID=$!; PIDS+=($!)
# The receiver: answers 200 and appends every body to received.jsonl; 500 on /fail, 429 on
# /throttle.
python3 - "$RECEIVER_PORT" "$WORK/received.jsonl" >"$WORK/receiver.log" 2>&1 <<'PY' & PIDS+=($!)
import http.server, sys
port, log = int(sys.argv[1]), sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        failing = self.path in ("/fail", "/throttle")
        if not failing:
            with open(log, "ab") as f:
                f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response({"/fail": 500, "/throttle": 429}.get(self.path, 200))
        self.send_header("Content-Length", "0")
        self.end_headers()
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
PY
wait_for "controller ready" 60 curl -sf "127.0.0.1:$CMETRICS_PORT/readyz"
wait_for "dispatcher ready (caches synced)" 60 curl -sf "127.0.0.1:$DMETRICS_PORT/readyz"
wait_for "controller holds the Lease $NS/webhook-operator-controller" 30 \
  sh -c "kubectl -n $NS get lease webhook-operator-controller -o jsonpath='{.spec.holderIdentity}' | grep -qx rbac-check"

echo "== endpoint, subscription, events"
kubectl apply -f - <<EOF | sed 's/^/   /'
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookEndpoint
metadata: {name: receiver, namespace: $TENANT, labels: {team: rbac}}
spec:
  url: http://127.0.0.1:$RECEIVER_PORT/hook
  retryPolicy: {baseDelay: 200ms}
---
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookSubscription
metadata: {name: everything, namespace: $TENANT}
spec:
  endpointSelector: {matchLabels: {team: rbac}}
  eventTypes: ["*"]
EOF
wait_for "endpoint Ready=True" 30 \
  kubectl -n "$TENANT" wait --for=condition=Ready --timeout=1s whep/receiver
wait_for "subscription Ready=True, resolved to the endpoint" 30 sh -c \
  "kubectl -n $TENANT get whsub everything -o jsonpath='{.status.endpoints}' | grep -q receiver"
wait_for "delivery-policy ConfigMap applied (server-side apply: verbs create, patch)" 20 sh -c \
  "kubectl -n $TENANT get configmap -l webhooks.pitchey.io/endpoint -o name | grep -q ."
kubectl apply -f - <<EOF | sed 's/^/   /'
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookEvent
metadata: {name: as-resource, namespace: $TENANT}
spec:
  type: user.created
  data: {marker: rbac-check-resource}
EOF
code=$(curl -s -o "$WORK/ingest.json" -w '%{http_code}' -X POST \
  "http://127.0.0.1:$INGEST_PORT/v1/namespaces/$TENANT/events" \
  -H "Authorization: Bearer test-admin-token" -H "Content-Type: application/json" \
  -d '{"type":"user.updated","data":{"marker":"rbac-check-ingest"}}')
# 202: TokenReview and SubjectAccessReview were created as the dispatcher's ServiceAccount.
[ "$code" = 202 ] && ok "ingest API accepted the event (202)" \
  || fail "ingest API answered $code: $(cat "$WORK/ingest.json")"
wait_for "WebhookEvent phase Delivered" 30 sh -c \
  "kubectl -n $TENANT get whev as-resource -o jsonpath='{.status.phase}' | grep -qx Delivered"
wait_for "receiver got the WebhookEvent" 20 grep -q rbac-check-resource "$WORK/received.jsonl"
wait_for "receiver got the ingested event" 20 grep -q rbac-check-ingest "$WORK/received.jsonl"

echo "== other paths: rotation, test delivery, replay, TTL deletion"
before=$(kubectl -n "$TENANT" get secret receiver-signing -o jsonpath='{.metadata.resourceVersion}' 2>/dev/null || true)
[ -n "$before" ] && ok "signing Secret created" || fail "signing Secret receiver-signing created"
kubectl -n "$TENANT" annotate --overwrite whep receiver webhooks.pitchey.io/rotate-secret=rbac-check \
  webhooks.pitchey.io/test=rbac-check >/dev/null
wait_for "signing Secret rotated (replace: verb update)" 20 sh -c \
  "[ \"\$(kubectl -n $TENANT get secret receiver-signing -o jsonpath='{.metadata.resourceVersion}')\" != '$before' ]"
wait_for "test delivery recorded in the endpoint's status" 20 sh -c \
  "kubectl -n $TENANT get whep receiver -o jsonpath='{.status.lastTest.nonce}' | grep -qx rbac-check"
kubectl apply -f - <<EOF | sed 's/^/   /'
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookReplay
metadata: {name: replay, namespace: $TENANT}
spec:
  endpointRef: {name: receiver}
  from: "2000-01-01T00:00:00Z"
  outcomes: [Delivered]
---
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookEvent
metadata: {name: short-lived, namespace: $TENANT}
spec:
  type: user.deleted
  ttlSecondsAfterFinished: 1
  data: {marker: rbac-check-ttl}
EOF
wait_for "WebhookReplay phase Complete" 30 sh -c \
  "kubectl -n $TENANT get whrp replay -o jsonpath='{.status.phase}' | grep -qx Complete"
wait_for "finished WebhookEvent deleted after its TTL" 30 sh -c \
  "! kubectl -n $TENANT get whev short-lived -o name"

echo "== failures the alerts are about: a dead letter, an open circuit, a reconcile error"
# prometheus-client leaves a metric family out of /metrics until it has a series, so the alert
# metrics are made to appear: a receiver path answering 500 (dead letter, circuit opens: the
# dispatcher's Recorder publishes both as Events), and an endpoint whose signing Secret exists with
# a type the controller cannot replace (422, immutable: a reconcile error that is not a 403).
kubectl -n "$TENANT" create secret generic broken-signing --type=kubernetes.io/basic-auth \
  --from-literal=username=x >/dev/null
kubectl apply -f - <<EOF | sed 's/^/   /'
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookEndpoint
metadata: {name: failing, namespace: $TENANT}
spec:
  url: http://127.0.0.1:$RECEIVER_PORT/fail
  retryPolicy: {maxAttempts: 0}   # no retries: the first failure is a dead letter
  circuitBreaker: {failureThreshold: 1}
---
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookSubscription
metadata: {name: failures, namespace: $TENANT}
spec:
  endpointRef: {name: failing}   # the controller reads the endpoint (verb get)
  eventTypes: ["rbac.failure"]
---
# A receiver answering 429: the adaptive limiter cuts its rate (rate_cuts_total, for the dashboard).
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookEndpoint
metadata: {name: throttled, namespace: $TENANT}
spec:
  url: http://127.0.0.1:$RECEIVER_PORT/throttle
  retryPolicy: {maxAttempts: 0}
---
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookSubscription
metadata: {name: throttling, namespace: $TENANT}
spec:
  endpointRef: {name: throttled}
  eventTypes: ["rbac.failure"]
---
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookEndpoint
metadata: {name: broken, namespace: $TENANT}
spec:
  url: http://127.0.0.1:$RECEIVER_PORT/broken
EOF
wait_for "subscription failures resolved to the endpoint" 30 sh -c \
  "kubectl -n $TENANT get whsub failures -o jsonpath='{.status.endpoints}' | grep -q failing"
wait_for "subscription throttling resolved to the endpoint" 30 sh -c \
  "kubectl -n $TENANT get whsub throttling -o jsonpath='{.status.endpoints}' | grep -q throttled"
kubectl apply -f - <<EOF | sed 's/^/   /'
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookEvent
metadata: {name: to-fail, namespace: $TENANT}
spec:
  type: rbac.failure
  data: {marker: rbac-check-failure}
EOF
wait_for "open circuit on the dispatcher's /metrics" 30 sh -c \
  "curl -sf -H 'Authorization: Bearer $SCRAPE_TOKEN' 127.0.0.1:$DMETRICS_PORT/metrics | grep -q '^webhook_operator_dispatcher_circuit_state{.*endpoint=\"failing\".*state=\"open\"} 1'"
wait_for "dead letter on the dispatcher's /metrics" 30 sh -c \
  "curl -sf -H 'Authorization: Bearer $SCRAPE_TOKEN' 127.0.0.1:$DMETRICS_PORT/metrics | grep -q '^webhook_operator_dispatcher_dead_letters_total{.*endpoint=\"failing\"'"
wait_for "a rate cut on the dispatcher's /metrics" 30 sh -c \
  "curl -sf -H 'Authorization: Bearer $SCRAPE_TOKEN' 127.0.0.1:$DMETRICS_PORT/metrics | grep -q '^webhook_operator_dispatcher_rate_cuts_total{.*endpoint=\"throttled\"'"
wait_for "reconcile error on the controller's /metrics" 30 sh -c \
  "curl -sf -H 'Authorization: Bearer $SCRAPE_TOKEN' 127.0.0.1:$CMETRICS_PORT/metrics | grep -q '^webhook_operator_controller_reconcile_errors_total{'"
for who in controller dispatcher; do
  wait_for "events.k8s.io Events published by the $who (kube-runtime Recorder)" 20 sh -c \
    "kubectl -n $TENANT get events.events.k8s.io -o jsonpath='{.items[*].reportingController}' | grep -qw webhook-operator-$who"
done

echo "== logs: no authorization failure"
for p in controller dispatcher; do
  if grep -iE 'forbidden|(status|code)[": =]+403' "$WORK/$p.log" >"$WORK/$p.forbidden"; then
    fail "$p logged an authorization failure:"; head -5 "$WORK/$p.forbidden" >&2
  else
    ok "$p: no forbidden/403 in $(wc -l <"$WORK/$p.log") log lines"
  fi
done

# After the log check: these requests are refused on purpose.
echo "== docs/troubleshooting.md's token path: kubectl create token, then the dispatcher's read API"
kubectl -n "$TENANT" create serviceaccount webhook-debug >/dev/null
kubectl -n "$TENANT" create serviceaccount webhook-stranger >/dev/null
kubectl -n "$TENANT" create rolebinding webhook-debug --clusterrole="$RELEASE-view" \
  --serviceaccount="$TENANT:webhook-debug" >/dev/null
TOKEN=$(kubectl -n "$TENANT" create token webhook-debug)
STRANGER=$(kubectl -n "$TENANT" create token webhook-stranger)
history() { # TOKEN: prints the HTTP code of the endpoint's delivery history
  curl -s -o "$WORK/history.json" -w '%{http_code}' -H "Authorization: Bearer $1" \
    "http://127.0.0.1:$INGEST_PORT/v1/namespaces/$TENANT/endpoints/receiver/deliveries?limit=50"
}
code=$(history "$TOKEN")
if [ "$code" = 200 ] && grep -q '"status_code":200' "$WORK/history.json"; then
  ok "a token from kubectl create token, bound to $RELEASE-view, reads the delivery history"
else
  fail "kubectl create token + $RELEASE-view: expected 200 with deliveries, got $code: $(head -c 300 "$WORK/history.json")"
fi
code=$(history "$STRANGER")
[ "$code" = 403 ] && ok "a ServiceAccount token without the binding gets 403" \
  || fail "a token without the binding: expected 403, got $code"
code=$(history "$(kubectl -n "$TENANT" create token webhook-debug --audience not-this-api)")
[ "$code" = 401 ] && ok "a token minted for another audience gets 401" \
  || fail "a token for another audience: expected 401, got $code"

echo "== the query API through the aggregation layer, served as the dispatcher's ServiceAccount"
# Reading the front-proxy ConfigMap and asking SubjectAccessReviews are the chart's RBAC at work.
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: webhook-operator-query, namespace: $TENANT}
spec: {type: ExternalName, externalName: 127.0.0.1, ports: [{name: https, port: $QUERY_PORT}]}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1alpha1.query.webhooks.pitchey.io}
spec:
  group: query.webhooks.pitchey.io
  version: v1alpha1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {namespace: $TENANT, name: webhook-operator-query, port: $QUERY_PORT}
  caBundle: $(base64 -w0 "$WORK/query/ca.crt")
EOF
QUERY_REGISTERED=1
wait_for "kubectl get webhookdeliveries through the APIService" 60 \
  sh -c "kubectl get webhookdeliveries -n $TENANT -o name | grep -q ."
if grep -q "query API: cannot load" "$WORK/dispatcher.log"; then
  fail "the query API could not read its settings: $(grep "query API: cannot load" "$WORK/dispatcher.log" | head -1)"
else
  ok "the dispatcher's ServiceAccount read the front-proxy settings and authorized the request"
fi
denied=$(kubectl get webhookdeliveries -n "$TENANT" --token test-nobody-token 2>&1 || true)
if grep -q Forbidden <<<"$denied"; then
  ok "a user without the history-reader role gets Forbidden"
else
  fail "a user without rights: expected Forbidden"
fi

echo "== /metrics with and without credentials"
for target in "controller $CMETRICS_PORT" "dispatcher $DMETRICS_PORT"; do
  set -- $target
  for case in "none:401" "test-nobody-token:403" "$SCRAPE_TOKEN:200"; do
    token=${case%:*} want=${case##*:}
    if [ "$token" = none ]; then
      code=$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$2/metrics")
    else
      code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "127.0.0.1:$2/metrics")
    fi
    label=${token:0:17}; [ "$want" = 200 ] && label="the scraper's token"
    [ "$code" = "$want" ] && ok "$1 /metrics with $label: $code" || fail "$1 /metrics with $label: expected $want, got $code"
  done
  code=$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$2/healthz")
  [ "$code" = 200 ] && ok "$1 /healthz needs no token" || fail "$1 /healthz: $code"
done

echo "== the PrometheusRule's and the Grafana dashboard's metrics exist"
curl -sf -H "Authorization: Bearer $SCRAPE_TOKEN" "127.0.0.1:$DMETRICS_PORT/metrics" >"$WORK/metrics.txt" || fail "scrape the dispatcher"
curl -sf -H "Authorization: Bearer $SCRAPE_TOKEN" "127.0.0.1:$CMETRICS_PORT/metrics" >>"$WORK/metrics.txt" || fail "scrape the controller"
python3 - "$WORK/metrics.txt" $ALERT_METRICS $DASHBOARD_METRICS <<'PY' && ok "all alert and dashboard metrics exposed: $ALERT_METRICS $DASHBOARD_METRICS" || fail "alert or dashboard metrics missing"
import re, sys
text = open(sys.argv[1]).read()
samples = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", text, re.M))
# prometheus-client declares families without their sample suffix (counter `x` → `x_total`).
families = dict(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
def exposed(name):
    if name in samples:
        return True
    return any(name == fam + s for fam, kind in families.items() for s in SUFFIXES.get(kind, [""]))
missing = [n for n in sys.argv[2:] if not exposed(n)]
if not sys.argv[2:]:
    sys.exit("no metric names found in the PrometheusRule")
for n in missing:
    print(f"not exposed: {n}", file=sys.stderr)
sys.exit(1 if missing else 0)
PY

# Partition Leases (store.type=postgres): only with a running PostgreSQL (WO_POSTGRES_URL, or
# scripts/postgres.sh already started); this script neither starts nor stops one.
PG_URL=${WO_POSTGRES_URL:-$(scripts/postgres.sh status 2>/dev/null || true)}
if [ -z "$PG_URL" ]; then
  echo "== skipped: partition Leases (store.type=postgres): no PostgreSQL running;"
  echo "   run with WO_POSTGRES_URL=\$(scripts/postgres.sh start) to include them"
else
  echo "== store.type=postgres: the dispatcher's partition Leases"
  render_rbac "$WORK/rbac-postgres.yaml" --set "watchNamespace=$TENANT" --set store.type=postgres \
    --set store.postgres.existingSecret=unused
  kubectl apply -f "$WORK/rbac-postgres.yaml" | grep -i lease | sed 's/^/   /'
  for v in list create update delete; do can "$SA_DISPATCHER" yes "$v" leases.coordination.k8s.io -n "$NS"; done
  for v in get watch patch; do can "$SA_DISPATCHER" no "$v" leases.coordination.k8s.io -n "$NS"; done
  # One dispatcher per store in a namespace: the SQLite one stops first.
  kill "$DISPATCHER_PID" 2>/dev/null || true
  wait "$DISPATCHER_PID" 2>/dev/null || true
  SCHEMA=rbac_check_$$
  PG_METRICS_PORT=$(free_port)
  KUBECONFIG=$WORK/$SA_DISPATCHER.kubeconfig DATABASE_URL=$PG_URL RUST_LOG=$LOG "$BIN" dispatcher \
    --store postgres --database-schema "$SCHEMA" --partitions 4 --lease-prefix rbac-check \
    --lease-namespace "$NS" --identity rbac-check-pg --watch-namespace "$TENANT" \
    --listen-addr "127.0.0.1:$(free_port)" --metrics-addr "127.0.0.1:$PG_METRICS_PORT" \
    --allow-plain-http --egress-allow-cidr 127.0.0.0/8 >"$WORK/dispatcher-postgres.log" 2>&1 &
  PG_PID=$!; PIDS+=("$PG_PID")
  wait_for "postgres dispatcher owns all 4 partitions (Leases listed, created, renewed)" 60 sh -c \
    "curl -sf 127.0.0.1:$PG_METRICS_PORT/metrics | grep -qx 'webhook_operator_dispatcher_partitions_owned 4'"
  kubectl -n "$NS" get lease -l webhooks.pitchey.io/dispatcher-group=rbac-check -o name | sed 's/^/   /'
  # SIGTERM: partitions handed back (replace), the member Lease deleted.
  kill -TERM "$PG_PID"
  # Exited: gone, or a zombie until reaped (a child of this shell).
  wait_for "postgres dispatcher stopped" 30 sh -c \
    "! kill -0 $PG_PID 2>/dev/null || ps -o stat= -p $PG_PID | grep -q '^Z'"
  wait "$PG_PID" 2>/dev/null || true
  wait_for "member Lease deleted at shutdown" 10 sh -c \
    "! kubectl -n $NS get lease rbac-check-m-rbac-check-pg -o name"
  if grep -iE 'forbidden|(status|code)[": =]+403' "$WORK/dispatcher-postgres.log" >"$WORK/pg.forbidden"; then
    fail "the postgres dispatcher logged an authorization failure:"; head -5 "$WORK/pg.forbidden" >&2
  else
    ok "postgres dispatcher: no forbidden/403 in $(wc -l <"$WORK/dispatcher-postgres.log") log lines"
  fi
  command -v psql >/dev/null && psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
fi

summary
