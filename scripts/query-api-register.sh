#!/usr/bin/env bash
# Registers a query API served on loopback (a dispatcher started with --query-api-addr
# 127.0.0.1:PORT) with the local control plane's aggregation layer, and waits until the APIService
# is Available (prints its condition when it does not become so):
#   scripts/query-api-register.sh NAMESPACE SERVICE PORT CA_FILE
#   scripts/query-api-register.sh --delete NAMESPACE SERVICE   # the APIService and the Service
# CA_FILE is the PEM CA that signed the serving certificate, which must be valid for
# SERVICE.NAMESPACE.svc. Uses $KUBECONFIG, or the local control plane's (scripts/control-plane.sh).
# QUERY_API_WAIT_SECONDS (default 60) bounds the wait.
#
# The recipe (kube-apiserver with the front-proxy flags, --enable-aggregator-routing=false, the
# default; read in k8s.io/apiserver/pkg/util/proxy.ResolveCluster and kube-aggregator's
# remote_available_controller.go, and tried on the local control plane):
# - The Service is `type: ExternalName` with `externalName: 127.0.0.1`. There are no Pods and no
#   kube-proxy here, so a ClusterIP Service cannot be dialed; for an ExternalName Service the
#   aggregator dials https://<externalName>:<the APIService's spec.service.port> itself. The
#   Service's own ports are not consulted (one is listed for readability), and the availability
#   check skips the endpoints check for non-ClusterIP Services and only GETs /apis/GROUP/VERSION.
# - TLS: the aggregator verifies the serving certificate against spec.caBundle for the name
#   SERVICE.NAMESPACE.svc (not the dialed 127.0.0.1), and presents the front-proxy client
#   certificate (--proxy-client-cert-file, CN front-proxy-client) with X-Remote-User,
#   X-Remote-Group and X-Remote-Extra-* naming the user.
# - An APIService is cluster-wide: one registration of the group at a time. One pointing
#   elsewhere is deleted and created anew, so its Available condition is never a stale one.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=v1alpha1.query.webhooks.pitchey.io
WAIT=${QUERY_API_WAIT_SECONDS:-60}
usage() { echo "usage: $0 NAMESPACE SERVICE PORT CA_FILE | $0 --delete NAMESPACE SERVICE" >&2; exit 2; }

[ -n "${KUBECONFIG:-}" ] || eval "$("$HERE/control-plane.sh" env)"
BIN=$("$HERE/control-plane.sh" bin)
[ -x "$BIN/kubectl" ] && PATH=$BIN:$PATH  # kubectl of the control plane's release

if [ "${1:-}" = --delete ]; then
  [ $# -eq 3 ] || usage
  kubectl delete apiservice "$NAME" --ignore-not-found
  kubectl -n "$2" delete service "$3" --ignore-not-found
  exit 0
fi
[ $# -eq 4 ] || usage
NS=$1 SVC=$2 PORT=$3 CA=$4
CA_B64=$(base64 -w0 "$CA")

kubectl apply -f - <<EOF
apiVersion: v1
kind: Service
metadata: {name: $SVC, namespace: $NS}
spec:
  type: ExternalName
  externalName: 127.0.0.1
  ports: [{name: query, port: $PORT, protocol: TCP}]
EOF

current=$(kubectl get apiservice "$NAME" --ignore-not-found \
  -o jsonpath='{.spec.service.namespace}/{.spec.service.name}:{.spec.service.port} {.spec.caBundle}')
if [ -n "$current" ] && [ "$current" != "$NS/$SVC:$PORT $CA_B64" ]; then
  kubectl delete apiservice "$NAME" --wait=true
fi
kubectl apply -f - <<EOF
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: $NAME}
spec:
  group: query.webhooks.pitchey.io
  version: v1alpha1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {namespace: $NS, name: $SVC, port: $PORT}
  caBundle: $CA_B64
EOF

condition() {
  kubectl get apiservice "$NAME" \
    -o jsonpath='{range .status.conditions[?(@.type=="Available")]}{.status} ({.reason}): {.message}{end}'
}
for _ in $(seq 1 $((WAIT * 2))); do
  case "$(condition)" in True*) echo "apiservice/$NAME Available"; exit 0 ;; esac
  sleep 0.5
done
echo "apiservice/$NAME not Available within ${WAIT}s: $(condition)" >&2
exit 1
