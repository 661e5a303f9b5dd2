//! Criterion benches for palisade, run with `cargo bench -p palisade-benches`, and the
//! incident scorecard, run with `cargo run --release -p palisade-benches --bin scorecard`.
//!
//! Each bench compares a palisade layer against the floor (a bare `tower::service_fn`) and
//! the nearest alternative (tower's own middleware) in the same run, on the same machine.
//! The [`scorecard`] replays named incidents against palisade and its alternatives:
//!
//! ```
//! use palisade_benches::scorecard::{self, StackKind};
//!
//! // 10% of calls fail for 15 s: retries within the budget hide them.
//! let row = scorecard::run("random-errors", StackKind::PalisadeTuned).expect("known");
//! assert!(row.success_ratio > 0.99 && row.amplification < 1.2);
//! ```
#![forbid(unsafe_code)]

#[path = "src/scorecard/mod.rs"]
pub mod scorecard;
