#!/usr/bin/env bash
# The dashboard's browser test: the demo (scripts/demo.sh) with its data, then
# tests/browser/dashboard.js in Debian's headless Chromium, driven by playwright-core from npm.
# Screenshots: target/browser-artifacts/ (the README's screenshot is 01-endpoints.png from here).
#   scripts/browser-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  echo "browser test: /usr/bin/chromium is missing; install Debian's chromium (apt-get install chromium)" >&2
  exit 1
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
ARTIFACTS=$(pwd)/target/browser-artifacts
rm -rf "$ARTIFACTS"; mkdir -p "$ARTIFACTS"
export ARTIFACTS NOBODY_TOKEN=test-nobody-token
DEMO_THEN="node tests/browser/dashboard.js" scripts/demo.sh --no-wait
