#!/usr/bin/env bash
# Mutation testing of the cores where a wrong line costs most (not run in CI: slow on 2 cores).
# Needs `cargo install cargo-mutants`. Each group tests one crate against mutants of the files
# named; the summary lines say caught / missed / unviable, and the lists are in
# target/mutants-<group>/mutants.out/{caught,missed,unviable,timeout}.txt. Pass a group name
# to run just one; extra arguments go to cargo-mutants (e.g. `--iterate` to retest only what
# a previous run did not catch, or `--re 'window'` to pick mutants by name).
#
# Light on a shared machine: one job at a time, at low priority, and a timeout so a mutant
# that turns a loop infinite ends (a timeout counts as caught: the tests noticed). The lint
# cap is off and the target directory is copied, so the dependencies built by an ordinary
# `cargo test` are reused. Unit and integration tests only: doctests are compiled again for
# every mutant, the slowest part of a run (a mutant only a doctest catches counts as missed).
# Mutants of test modules inside a source file (the breaker's `tests`, `stress`, `size` and
# loom model) change the tests, not the library: they are left out.
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
    local name=$1 pkg=$2
    shift 2
    local files=()
    for f in "$@"; do files+=(--file "$f"); done
    echo "==> $name"
    nice -n 15 cargo mutants --all-features --package "$pkg" "${files[@]}" \
        --output "target/mutants-$name" --jobs 1 --timeout "${MUTANTS_TIMEOUT:-30}" \
        --build-timeout 300 --cap-lints false --copy-target true \
        --exclude-re '(tests|stress|loom_model|size)::' "${extra[@]}" \
        -- --lib --tests || true
}

group=${1:-all}
extra=("${@:2}")
[[ $group == all || $group == deadline ]] &&
    run deadline palisade-core core/src/time.rs core/src/deadline.rs
[[ $group == all || $group == breaker ]] &&
    run breaker palisade-circuit-breaker circuit-breaker/src/state.rs circuit-breaker/src/window.rs
[[ $group == all || $group == budget ]] &&
    run budget palisade-retry retry/src/budget.rs retry/src/backoff.rs
[[ $group == all || $group == gcra ]] &&
    run gcra palisade-rate-limit rate-limit/src/rate/limiter.rs
exit 0
