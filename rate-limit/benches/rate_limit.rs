//! Per-call overhead of the limits, against governor's own `check` (the floor), a bare
//! `service_fn` and tower's `ConcurrencyLimit`, in one run.
//!
//! `cargo bench -p palisade-rate-limit --bench rate_limit`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use governor::{Quota, RateLimiter};
use palisade_core::BoxError;
use palisade_rate_limit::clock::TokioClock;
use palisade_rate_limit::{AdaptiveLimitLayer, ConcurrencyLimitLayer, RateLimitLayer};
use tower::{Layer, Service, service_fn};

/// A quota no benchmark can exhaust.
const HUGE: u32 = 1_000_000_000;

fn call<S: Service<u64, Response = u64>>(svc: &mut S, cx: &mut Context<'_>, req: u64)
where
    S::Error: std::fmt::Debug,
{
    assert!(matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))));
    let out = svc.call(req).now_or_never().expect("ready");
    black_box(out.expect("admitted"));
}

fn echo() -> impl Service<
    u64,
    Response = u64,
    Error = BoxError,
    Future = std::future::Ready<Result<u64, BoxError>>,
> + Clone {
    service_fn(|req: u64| std::future::ready(Ok::<_, BoxError>(req)))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let quota = Quota::per_second(NonZeroU32::new(HUGE).expect("non-zero"));
    let config = || RateLimitLayer::builder(HUGE, Duration::from_secs(1));

    let mut group = c.benchmark_group("rate_limit");

    let mut floor = echo();
    group.bench_function("service_fn (floor)", |b| {
        b.iter(|| call(&mut floor, &mut cx, 1));
    });

    let governor = RateLimiter::direct_with_clock(quota, TokioClock::new());
    group.bench_function("governor check (tokio clock)", |b| {
        b.iter(|| black_box(governor.check()).expect("admitted"));
    });

    let governor_std = RateLimiter::direct(quota);
    group.bench_function("governor check (std clock)", |b| {
        b.iter(|| black_box(governor_std.check()).expect("admitted"));
    });

    let mut direct = config().build().expect("config").layer(echo());
    group.bench_function("RateLimit direct", |b| {
        b.iter(|| call(&mut direct, &mut cx, 1));
    });

    let keyed_governor = RateLimiter::hashmap_with_clock(quota, TokioClock::new());
    let mut key = 0u64;
    group.bench_function("governor check_key (1000 keys)", |b| {
        b.iter(|| {
            key = (key + 1) % 1000;
            black_box(keyed_governor.check_key(&key)).expect("admitted");
        });
    });

    let mut keyed = config()
        .build()
        .expect("config")
        .key_by(|req: &u64| *req)
        .layer(echo());
    group.bench_function("RateLimit keyed (1000 keys)", |b| {
        b.iter(|| {
            key = (key + 1) % 1000;
            call(&mut keyed, &mut cx, key);
        });
    });

    let mut tower_limit = tower::limit::ConcurrencyLimitLayer::new(1024).layer(echo());
    group.bench_function("tower ConcurrencyLimit", |b| {
        b.iter(|| call(&mut tower_limit, &mut cx, 1));
    });

    let concurrency = ConcurrencyLimitLayer::builder(1024)
        .build()
        .expect("config");
    let mut ours = concurrency.layer(echo());
    group.bench_function("ConcurrencyLimit", |b| {
        b.iter(|| call(&mut ours, &mut cx, 1));
    });

    let adaptive = AdaptiveLimitLayer::builder().build().expect("config");
    let mut adaptive = adaptive.layer(echo());
    group.bench_function("AdaptiveLimit", |b| {
        b.iter(|| call(&mut adaptive, &mut cx, 1));
    });

    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
