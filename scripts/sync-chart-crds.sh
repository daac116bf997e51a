#!/usr/bin/env bash
# Copies the generated CRDs (crds/*.yaml, from `webhook-operator crdgen`) into the Helm chart
# (files/crds/, rendered by templates/crds.yaml behind crds.enabled).
#   scripts/sync-chart-crds.sh           # copy
#   scripts/sync-chart-crds.sh --check   # exit 1 if the chart's copies differ from crds/
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=crds
DST=charts/webhook-operator/files/crds
if [ "${1:-}" = "--check" ]; then
  if diff -r "$SRC" "$DST" >/dev/null 2>&1; then echo "chart CRDs match crds/"; exit 0; fi
  echo "chart CRDs differ from crds/ (run scripts/sync-chart-crds.sh and commit):" >&2
  diff -r "$SRC" "$DST" >&2 || true
  exit 1
fi
mkdir -p "$DST"
rm -f "$DST"/*.yaml
cp "$SRC"/*.yaml "$DST"/
echo "copied $(ls "$SRC"/*.yaml | wc -l) CRDs into $DST"
