#!/usr/bin/env bash
# Runs every test: unit and property tests, the CRD drift check, the store contract suite (against
# SQLite, and against a throwaway PostgreSQL cluster from Debian's packages: scripts/postgres.sh),
# the delivery engine against loopback servers, and the end-to-end tests against a real local
# control plane (started on demand by the tests, reused if running); then the dashboard in headless
# Chromium over the demo's data (scripts/browser-test.sh; needs Debian's chromium, which CI installs:
# without it, outside CI, that step is skipped with a note).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-control-plane.sh >/dev/null
started_here=0
if ! scripts/control-plane.sh start | grep -q "already running"; then started_here=1; fi
pg_started_here=0
if ! scripts/postgres.sh status >/dev/null 2>&1; then pg_started_here=1; fi
WO_POSTGRES_URL="$(scripts/postgres.sh start)"
export WO_POSTGRES_URL
# The receiver example the end-to-end tests run (nextest builds test targets only).
cargo build --quiet --example receiver
status=0
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --no-fail-fast || status=$?
else
  cargo test --no-fail-fast || status=$?
fi
if [ -x /usr/bin/chromium ] || [ -n "${CI:-}" ]; then
  scripts/browser-test.sh || status=$?
else
  echo "NOTE: the browser test (scripts/browser-test.sh) did not run: /usr/bin/chromium is missing (apt-get install chromium)" >&2
fi
if [ "$started_here" = 1 ]; then scripts/control-plane.sh stop >/dev/null 2>&1 || true; fi
if [ "$pg_started_here" = 1 ]; then scripts/postgres.sh stop >/dev/null 2>&1 || true; fi
exit $status
