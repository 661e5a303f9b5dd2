//! The cost of a chaos layer that is switched off, against a bare `service_fn` (the floor)
//! and tower's `MapResponse` (the cheapest tower layer: the nearest alternative is "no
//! fault injection in the stack at all"), plus the cost of deciding faults when on.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use palisade_chaos::{ChaosConfig, ChaosLayer, Latency};
use tower::{Layer, Service, ServiceExt, service_fn};

type Err = std::io::Error;

fn bare() -> impl Service<u64, Response = u64, Error = Err, Future: Send> + Clone {
    service_fn(|n: u64| std::future::ready(Ok::<_, Err>(n + 1)))
}

fn call_now<S: Service<u64, Response = u64>>(svc: &mut S, n: u64) -> u64 {
    let ready = svc.ready().now_or_never().expect("always ready");
    let fut = ready.ok().expect("no readiness error").call(n);
    fut.now_or_never()
        .expect("answers at once")
        .ok()
        .expect("no error")
}

fn off_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut group = c.benchmark_group("chaos_off");

    let mut floor = bare();
    group.bench_function("service_fn (floor)", |b| {
        b.iter(|| call_now(&mut floor, black_box(1)));
    });

    let mut mapped = tower::util::MapResponseLayer::new(|n: u64| n).layer(bare());
    group.bench_function("tower MapResponse", |b| {
        b.iter(|| call_now(&mut mapped, black_box(1)));
    });

    let config = ChaosConfig::builder()
        .error(0.5, |_: &u64| Err::other("injected"))
        .latency(0.5, Latency::default())
        .enabled(false)
        .build()
        .expect("valid");
    let mut off = ChaosLayer::new(config).layer(bare());
    group.bench_function("chaos off", |b| b.iter(|| call_now(&mut off, black_box(1))));

    // On, with rates of zero: the price of deciding (RNG draw, rate loads) per call.
    let config = ChaosConfig::builder()
        .error_fn(|_: &u64| Err::other("injected"))
        .build()
        .expect("valid");
    let mut on_no_faults = ChaosLayer::new(config).layer(bare());
    group.bench_function("chaos on, no fault drawn", |b| {
        b.iter(|| call_now(&mut on_no_faults, black_box(1)));
    });
    group.finish();
}

criterion_group!(benches, off_path);
criterion_main!(benches);
