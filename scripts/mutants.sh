#!/usr/bin/env bash
# Mutation testing of the cores where a wrong line costs most (not run in CI: slow on 2 cores).
# Needs `cargo install cargo-mutants`. Each group tests one crate against mutants of the files
# named; the summary lines say caught / missed / unviable. Pass a group name to run just one.
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
    local name=$1 pkg=$2
    shift 2
    local files=()
    for f in "$@"; do files+=(--file "$f"); done
    echo "==> $name"
    cargo mutants --all-features --package "$pkg" "${files[@]}" --output "target/mutants-$name" || true
}

group=${1:-all}
[[ $group == all || $group == deadline ]] &&
    run deadline palisade-core core/src/time.rs core/src/deadline.rs
[[ $group == all || $group == breaker ]] &&
    run breaker palisade-circuit-breaker circuit-breaker/src/state.rs circuit-breaker/src/window.rs
[[ $group == all || $group == budget ]] &&
    run budget palisade-retry retry/src/budget.rs retry/src/backoff.rs
[[ $group == all || $group == gcra ]] &&
    run gcra palisade-rate-limit rate-limit/src/rate/limiter.rs
exit 0
