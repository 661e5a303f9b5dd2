//! Pass-through cost of the degrade layers on the live, healthy path, against a bare
//! `service_fn` (the floor) and tower's `LoadShed` over `ConcurrencyLimit` (the nearest
//! tower alternative to `ShedLayer`).

use std::future::{Ready, ready};
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use palisade_core::{BoxError, Priority};
use palisade_degrade::fallback::Value;
use palisade_degrade::{
    FallbackConfig, FallbackLayer, Marked, ShedConfig, ShedLayer, StaleCacheLayer, StaleConfig,
};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn backend() -> impl Service<
    u64,
    Response = Marked<u64>,
    Error = BoxError,
    Future = Ready<Result<Marked<u64>, BoxError>>,
> + Clone {
    service_fn(|n: u64| ready(Ok::<_, BoxError>(Marked::new(n))))
}

/// One ready + call, driven without a scheduler: the services answer at once.
fn once<S>(svc: &mut S, n: u64) -> S::Response
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let ready = svc
        .ready()
        .now_or_never()
        .expect("ready at once")
        .expect("ready");
    ready
        .call(n)
        .now_or_never()
        .expect("answers at once")
        .expect("answers")
}

fn live_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut g = c.benchmark_group("live_path");

    let mut floor = backend();
    g.bench_function("service_fn (floor)", |b| {
        b.iter(|| once(&mut floor, black_box(1)));
    });

    let mut fallback = ServiceBuilder::new()
        .layer(FallbackLayer::new(
            FallbackConfig::default(),
            Value::new(Marked::new(0)),
        ))
        .service(backend());
    g.bench_function("fallback", |b| {
        b.iter(|| once(&mut fallback, black_box(1)));
    });

    let mut stale = ServiceBuilder::new()
        .layer(StaleCacheLayer::new(StaleConfig::default(), |k: &u64| {
            *k % 64
        }))
        .service(backend());
    g.bench_function("stale_cache", |b| {
        b.iter(|| once(&mut stale, black_box(1)));
    });

    let mut shed = ServiceBuilder::new()
        .layer(
            ShedLayer::new(
                ShedConfig::builder()
                    .max_in_flight(64)
                    .build()
                    .expect("valid"),
            )
            .prioritize(|_: &u64| Priority::Default),
        )
        .service(backend());
    g.bench_function("shed", |b| {
        b.iter(|| once(&mut shed, black_box(1)));
    });

    let mut tower_shed = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(64)
        .service(backend());
    g.bench_function("tower load_shed+concurrency_limit", |b| {
        b.iter(|| once(&mut tower_shed, black_box(1)));
    });

    let mut stack = ServiceBuilder::new()
        .layer(FallbackLayer::new(
            FallbackConfig::default(),
            Value::new(Marked::new(0)),
        ))
        .layer(StaleCacheLayer::new(StaleConfig::default(), |k: &u64| {
            *k % 64
        }))
        .layer(ShedLayer::new(
            ShedConfig::builder()
                .max_in_flight(64)
                .build()
                .expect("valid"),
        ))
        .service(backend());
    g.bench_function("fallback+stale+shed", |b| {
        b.iter(|| once(&mut stack, black_box(1)));
    });
    g.finish();
}

criterion_group!(benches, live_path);
criterion_main!(benches);
