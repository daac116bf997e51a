#!/usr/bin/env bash
# End-to-end benchmark in one command: builds the release binary and the bench driver, installs
# wrk (Debian) if missing, starts or reuses the local control plane, then runs
# examples/bench_e2e.rs, which prints one line per measured window and a summary table
# (median, min, max). Options go to the driver, e.g.
#   scripts/bench-e2e.sh                         # 1 and 100 endpoints, 3 runs, isolation, ceiling
#   scripts/bench-e2e.sh --endpoints 1,100,10000 --runs 3
#   scripts/bench-e2e.sh --replicas 1,2,3        # dispatchers sharing one PostgreSQL store
#   scripts/bench-e2e.sh --compare /path/to/base/webhook-operator
#                        # this build and another, run by run in turn; ends with new ÷ base
#   scripts/bench-e2e.sh --endpoints 100 --fanout 10   # each event to 10 endpoints
#   scripts/bench-e2e.sh --endpoints 1 --batch 50      # publishers use events:batch, 50 a request
#   scripts/bench-e2e.sh --help
# Everything runs on 127.0.0.1. See docs/benchmarks.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if ! command -v wrk >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y wrk >/dev/null || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null; }
fi

cargo build --release --bin webhook-operator --example bench_e2e >&2
scripts/control-plane.sh start >&2
# The scale-out scenarios (--replicas 1,2,3) need PostgreSQL: the throwaway cluster from Debian's
# packages unless WO_POSTGRES_URL names one (the driver turns fsync on for the run).
case " $* " in
  *" --replicas"*) export WO_POSTGRES_URL="${WO_POSTGRES_URL:-$(scripts/postgres.sh start)}" ;;
esac
CP_DIR=${WO_CONTROL_PLANE_DIR:-/tmp/webhook-operator-cp}

TARGET_DIR=${CARGO_TARGET_DIR:-target}
exec "$TARGET_DIR"/release/examples/bench_e2e --kubeconfig "$CP_DIR/kubeconfig" \
  --binary "$TARGET_DIR"/release/webhook-operator "$@"
