//! Closed-state overhead of the breaker per call, against a bare `service_fn` (the floor)
//! and tower's `ConcurrencyLimit` (the nearest tower alternative on the hot path), plus two
//! threads hammering one breaker. Services are benchmarked as concrete types (no boxing), so
//! the difference to the floor is the layer's own cost.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use palisade_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use palisade_core::BoxError;
use tokio::time::Instant;
use tower::limit::ConcurrencyLimitLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

fn floor() -> impl Service<u64, Response = u64, Error = BoxError> + Clone + Send + Sync + 'static {
    service_fn(|x: u64| std::future::ready(Ok::<_, BoxError>(x + 1)))
}

/// One call, driven to completion without a runtime (everything here is ready at once).
#[inline]
fn call<S: Service<u64, Response = u64>>(svc: &mut S, x: u64) -> u64 {
    let svc = svc.ready().now_or_never().expect("ready");
    let Ok(svc) = svc else { panic!("not ready") };
    let Some(Ok(y)) = svc.call(x).now_or_never() else {
        panic!("not done")
    };
    y
}

fn one<S: Service<u64, Response = u64>>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    mut svc: S,
) {
    g.bench_function(name, |b| b.iter(|| call(&mut svc, black_box(1))));
}

fn two<S>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, svc: &S)
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
{
    // Time per call with two threads each making `iters` calls on clones of one service
    // (sharing one breaker): a throughput collapse would show as a large increase.
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let mut svc = svc.clone();
                    s.spawn(move || {
                        for i in 0..iters {
                            black_box(call(&mut svc, i));
                        }
                    });
                }
            });
            start.elapsed() / 2
        });
    });
}

fn breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(CircuitBreakerConfig::default())
}

fn bench_closed(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed_call");
    one(&mut g, "service_fn", floor());
    one(
        &mut g,
        "concurrency_limit",
        ConcurrencyLimitLayer::new(1_000).layer(floor()),
    );
    one(&mut g, "breaker_count_window", breaker().layer(floor()));
    let time = CircuitBreakerConfig::builder()
        .time_window(Duration::from_secs(10), 10)
        .build()
        .expect("valid");
    one(
        &mut g,
        "breaker_time_window",
        CircuitBreakerLayer::new(time).layer(floor()),
    );
    let slow = CircuitBreakerConfig::builder()
        .slow_call_duration(Duration::from_secs(1))
        .build()
        .expect("valid");
    one(
        &mut g,
        "breaker_count_slow_tracking",
        CircuitBreakerLayer::new(slow).layer(floor()),
    );
    g.finish();
}

fn bench_contention(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_threads");
    two(&mut g, "service_fn", &floor());
    two(
        &mut g,
        "concurrency_limit",
        &ConcurrencyLimitLayer::new(1_000).layer(floor()),
    );
    two(&mut g, "breaker_count_window", &breaker().layer(floor()));
    g.finish();
}

criterion_group!(benches, bench_closed, bench_contention);
criterion_main!(benches);
