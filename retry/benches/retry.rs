//! The no-retry happy path: a bare `service_fn` (the floor), palisade's `Retry` (default
//! config, and without a budget) and `tower::retry::Retry` with a trivial policy and with
//! tower's own `TpsBudget`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use palisade_core::BoxError;
use palisade_retry::{RetryConfig, RetryLayer};
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service, ServiceExt};

/// tower's retry with the least work a policy can do: clone the request, never retry.
#[derive(Clone)]
struct NeverRetry;

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for NeverRetry {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _: &mut Req, _: &mut Result<Res, E>) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// tower's retry with its own `TpsBudget` (deposit on success, withdraw to retry): the
/// like-for-like comparison with palisade's default, which also keeps a budget.
#[derive(Clone)]
struct Budgeted(Arc<TpsBudget>);

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for Budgeted {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.0.deposit();
                None
            }
            Err(_) => self.0.withdraw().then(|| std::future::ready(())),
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn backend() -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone {
    tower::service_fn(|x: u64| std::future::ready(Ok::<_, BoxError>(x + 1)))
}

/// One call, driven to completion without a runtime's scheduler in the way.
fn call<S: Service<u64, Response = u64, Error = BoxError>>(svc: &mut S, x: u64) -> u64 {
    let ready = ServiceExt::<u64>::ready(svc).now_or_never();
    ready.expect("always ready").expect("no error");
    svc.call(x).now_or_never().expect("ready").expect("ok")
}

fn happy_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut group = c.benchmark_group("retry_happy_path");

    let mut bare = backend();
    group.bench_function("service_fn (floor)", |b| {
        b.iter(|| call(&mut bare, black_box(1)));
    });

    let mut palisade = RetryLayer::new(RetryConfig::default()).layer(backend());
    group.bench_function("palisade Retry (default: budget on)", |b| {
        b.iter(|| call(&mut palisade, black_box(1)));
    });

    let no_budget = RetryConfig::builder().no_budget().build().expect("valid");
    let mut palisade_nb = RetryLayer::new(no_budget).layer(backend());
    group.bench_function("palisade Retry (no budget)", |b| {
        b.iter(|| call(&mut palisade_nb, black_box(1)));
    });

    let mut tower_retry = tower::retry::RetryLayer::new(NeverRetry).layer(backend());
    group.bench_function("tower::retry::Retry (trivial policy)", |b| {
        b.iter(|| call(&mut tower_retry, black_box(1)));
    });

    let budget = Arc::new(TpsBudget::default());
    let mut tower_budgeted = tower::retry::RetryLayer::new(Budgeted(budget)).layer(backend());
    group.bench_function("tower::retry::Retry (TpsBudget policy)", |b| {
        b.iter(|| call(&mut tower_budgeted, black_box(1)));
    });

    group.finish();
}

criterion_group!(benches, happy_path);
criterion_main!(benches);
