//! Criterion benches for palisade, run with `cargo bench -p palisade-benches`, and the
//! incident scorecard, run with `cargo run --release -p palisade-benches --bin scorecard`.
//!
//! Each bench compares a palisade layer against the floor (a bare `tower::service_fn`) and
//! the nearest alternative (tower's own middleware) in the same run, on the same machine.
//! The [`scorecard`] replays named incidents against palisade and its alternatives.
#![forbid(unsafe_code)]

#[path = "src/scorecard/mod.rs"]
pub mod scorecard;
