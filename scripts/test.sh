#!/usr/bin/env bash
# Runs every test: unit and property tests, the CRD drift check, the store contract suite, the
# delivery engine against loopback servers, and the end-to-end tests against a real local
# control plane (started on demand by the tests, reused if running).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-control-plane.sh >/dev/null
started_here=0
if ! scripts/control-plane.sh start | grep -q "already running"; then started_here=1; fi
status=0
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --no-fail-fast || status=$?
else
  cargo test --no-fail-fast || status=$?
fi
if [ "$started_here" = 1 ]; then scripts/control-plane.sh stop >/dev/null 2>&1 || true; fi
exit $status
