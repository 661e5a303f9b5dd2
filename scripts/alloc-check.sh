#!/usr/bin/env bash
# Allocation check (not a timed test): counts allocations per happy-path call of every
# palisade layer and of the full recommended stack with a counting allocator, prints them
# next to the peers' and the size of each response future, and fails if a palisade happy
# path allocates. Same flags as CI's `cargo test`, so it reuses that build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --all-features -p palisade-benches --test allocs -- "$@"
