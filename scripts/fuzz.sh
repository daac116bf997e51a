#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo fuzz on nightly, libFuzzer) for SECONDS each (default 60,
# the CI smoke run; the local campaigns ran 600). Each starts from fuzz/seeds/<target> and keeps
# what it finds in fuzz/corpus/<target> (ignored by git). A crash stops the run with the input in
# fuzz/artifacts/<target>/: fix it, then copy the input to fuzz/regressions/<target>/, which
# tests/fuzz_regressions.rs replays on stable.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(ingest signing verify parsers transform bound)
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is missing (libFuzzer's instrumentation needs it):" \
    "rustup toolchain install nightly" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
cd fuzz
cargo +nightly fuzz build -O
for target in "${TARGETS[@]}"; do
  mkdir -p "corpus/$target"
  echo "== $target: ${SECONDS_EACH}s"
  cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE|==[0-9]+==|SUMMARY|Test unit written)" || true
  if compgen -G "artifacts/$target/*" >/dev/null; then
    echo "fuzz.sh: $target crashed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
