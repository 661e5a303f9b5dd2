//! Timeout overhead per call: bare service vs tower's `Timeout` vs palisade's `TimeoutLayer`.
//!
//! The backend answers at once, so what is measured is the layer's own work on the happy
//! path: `poll_ready`, `call` (clock read, deadline, future construction) and one poll.

#![allow(missing_docs)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::BoxError;
use palisade::timeout::TimeoutLayer;
use palisade_benches::harness::call_once;
use tower::{Layer, service_fn};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let backend = service_fn(|x: u64| std::future::ready(Ok::<_, BoxError>(x)));
    let mut group = c.benchmark_group("timeout");

    let mut bare = backend;
    group.bench_function("bare service_fn", |b| {
        b.iter(|| call_once(&mut bare, std::hint::black_box(7)));
    });

    let mut tower_timeout =
        tower::timeout::TimeoutLayer::new(Duration::from_secs(1)).layer(backend);
    group.bench_function("tower Timeout", |b| {
        b.iter(|| call_once(&mut tower_timeout, std::hint::black_box(7)));
    });

    let mut palisade_timeout = TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("valid config")
        .layer(backend);
    group.bench_function("palisade Timeout", |b| {
        b.iter(|| call_once(&mut palisade_timeout, std::hint::black_box(7)));
    });

    // Two nested palisade timeouts: the inner one reads the outer deadline.
    let mut nested = TimeoutLayer::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("valid config")
        .layer(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .expect("valid config")
                .layer(backend),
        );
    group.bench_function("palisade Timeout, nested", |b| {
        b.iter(|| call_once(&mut nested, std::hint::black_box(7)));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
