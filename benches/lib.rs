//! Criterion benches for palisade, run with `cargo bench -p palisade-benches`.
//!
//! Each bench compares a palisade layer against the floor (a bare `tower::service_fn`) and
//! the nearest alternative (tower's own middleware) in the same run, on the same machine.
