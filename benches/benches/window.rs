//! The breaker's window cost per call with 10k vs 80k calls in the window: palisade's count
//! and time windows (O(1) per call: a ring cursor, or a bucket counter), against
//! tower-resilience's count and time-based windows, in one run. Each measured call finds the
//! window holding the given number of calls (a fresh breaker is filled before every 1,000
//! timed calls, untimed).
//!
//! `cargo bench -p palisade-benches --bench window`

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use tokio::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::prelude::*;
use palisade_benches::harness::{backend, call_once};
use tower::{Layer, Service};

/// Timed calls per filled breaker: the window holds between `n` and `n + CHUNK` calls.
const CHUNK: u64 = 1_000;

/// Time `iters` calls on breakers made by `make` and filled with `n` calls first.
fn filled<S, F>(iters: u64, n: u64, make: F) -> Duration
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
    F: Fn() -> S,
{
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let mut svc = make();
        for i in 0..n {
            black_box(call_once(&mut svc, i));
        }
        let chunk = left.min(CHUNK);
        let start = Instant::now();
        for i in 0..chunk {
            black_box(call_once(&mut svc, i));
        }
        total += start.elapsed();
        left -= chunk;
    }
    total
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut g = c.benchmark_group("breaker window");
    g.sample_size(20);

    for n in [10_000u64, 80_000] {
        let size = u32::try_from(n).expect("fits");
        g.bench_function(format!("palisade count window of {n}, full"), |b| {
            b.iter_custom(|iters| {
                filled(iters, n, || {
                    CircuitBreakerLayer::builder()
                        .count_window(size)
                        .build()
                        .expect("config")
                        .layer(backend())
                })
            });
        });
        g.bench_function(
            format!("palisade time window (60 s), {n} calls in it"),
            |b| {
                b.iter_custom(|iters| {
                    filled(iters, n, || {
                        CircuitBreakerLayer::builder()
                            .time_window(Duration::from_secs(60), 10)
                            .build()
                            .expect("config")
                            .layer(backend())
                    })
                });
            },
        );
        g.bench_function(format!("tower-resilience count window of {n}, full"), |b| {
            b.iter_custom(|iters| {
                filled(iters, n, || {
                    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                        .sliding_window_size(n as usize)
                        .build()
                        .expect("config")
                        .layer(backend())
                })
            });
        });
        g.bench_function(
            format!("tower-resilience time window (60 s), {n} calls in it"),
            |b| {
                b.iter_custom(|iters| {
                    filled(iters, n, || {
                        use tower_resilience::circuitbreaker::SlidingWindowType;
                        tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                            .sliding_window_type(SlidingWindowType::TimeBased)
                            .sliding_window_duration(Duration::from_secs(60))
                            .build()
                            .expect("config")
                            .layer(backend())
                    })
                });
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
