#!/usr/bin/env bash
# cargo deny (deny.toml): licences, crates built twice, and sources. These need only the crates
# registry, so CI runs them. `--advisories` adds the RustSec advisory check, which fetches its
# database from github.com (not reachable from CI): run it where the network allows.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny
checks=(licenses bans sources)
if [ "${1:-}" = --advisories ]; then checks+=(advisories); fi
cargo deny check "${checks[@]}"
