//! An open breaker answers `poll_ready` at once without driving the service below ready:
//! its `call` refuses, so nothing below (a concurrency limit's slot, a queue place) is
//! reserved for a call that will not be made, and a caller is not kept waiting for a
//! lower layer only to be refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_circuit_breaker::CircuitBreakerLayer;
use palisade_core::{BoxError, CircuitOpen};
use tower::{Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A backend that counts its `poll_ready`s and calls, is ready only when `ready` says so,
/// and panics if called without being driven ready first.
#[derive(Clone)]
struct Counted {
    polls: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    ready: bool,
    readied: bool,
}

impl Counted {
    fn new(ready: bool) -> Self {
        Self {
            polls: Arc::default(),
            calls: Arc::default(),
            ready,
            readied: false,
        }
    }
}

impl Service<u32> for Counted {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.ready {
            self.readied = true;
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: u32) -> Self::Future {
        assert!(self.readied, "called before poll_ready returned Ready");
        self.readied = false;
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(req))
    }
}

fn layer() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("api")
        .build()
        .expect("valid config")
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_ready_at_once_over_a_service_that_never_is_and_refuses() {
    let layer = layer();
    let handle = layer.handle();
    let backend = Counted::new(false);
    let polls = Arc::clone(&backend.polls);
    let mut svc = layer.layer(backend);
    handle.open_for(ms(300));
    let ready = tokio::time::timeout(ms(1), svc.ready()).await;
    let err = ready
        .expect("ready at once")
        .expect("ready")
        .call(1)
        .await
        .expect_err("refused");
    let open = err.downcast_ref::<CircuitOpen>().expect("a CircuitOpen");
    assert_eq!(open.retry_after(), Some(ms(300)));
    assert_eq!(
        polls.load(Ordering::SeqCst),
        0,
        "the service below was not asked"
    );
}

#[tokio::test(start_paused = true)]
async fn while_open_nothing_below_is_readied_and_once_closed_calls_go_through() {
    let layer = layer();
    let handle = layer.handle();
    let backend = Counted::new(true);
    let (polls, calls) = (Arc::clone(&backend.polls), Arc::clone(&backend.calls));
    let mut svc = layer.layer(backend);
    handle.open_for(ms(100));
    for i in 0..5 {
        let result = svc.ready().await.expect("ready").call(i).await;
        assert!(result.is_err(), "refused while open");
    }
    assert_eq!(
        (polls.load(Ordering::SeqCst), calls.load(Ordering::SeqCst)),
        (0, 0)
    );
    tokio::time::sleep(ms(100)).await;
    // The open period is over: the next call is a probe, on a service driven ready.
    assert_eq!(
        svc.ready()
            .await
            .expect("ready")
            .call(7)
            .await
            .expect("probe"),
        7
    );
    assert_eq!(
        (polls.load(Ordering::SeqCst), calls.load(Ordering::SeqCst)),
        (1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_readied_while_open_is_refused_with_no_wait_if_the_breaker_admits_by_then() {
    let layer = layer();
    let handle = layer.handle();
    let backend = Counted::new(true);
    let calls = Arc::clone(&backend.calls);
    let mut svc = layer.layer(backend);
    handle.open_for(ms(100));
    let ready = svc.ready().await.expect("ready");
    tokio::time::sleep(ms(150)).await;
    // Half-open now, but this call's service below was never driven ready: refused, with
    // nothing to wait for, and the probe permit it would have taken goes back.
    let err = ready.call(1).await.expect_err("refused");
    let open = err.downcast_ref::<CircuitOpen>().expect("a CircuitOpen");
    assert_eq!(open.retry_after(), Some(Duration::ZERO));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        svc.ready()
            .await
            .expect("ready")
            .call(2)
            .await
            .expect("probe"),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn in_metrics_only_mode_an_open_breaker_still_drives_the_service_below_and_admits() {
    let layer = CircuitBreakerLayer::builder()
        .name("api")
        .count_window(10)
        .minimum_calls(5)
        .build()
        .expect("valid config");
    let handle = layer.handle();
    handle.set_metrics_only();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let mut svc = layer.layer(tower::service_fn(move |_: u32| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<u32, BoxError>("down".into()) }
    }));
    for i in 0..10 {
        let _ = svc.ready().await.expect("ready").call(i).await;
    }
    assert_eq!(handle.state(), palisade_circuit_breaker::State::Open);
    assert!(
        handle.is_metrics_only(),
        "opened by the failures, still metrics-only"
    );
    let err = svc
        .ready()
        .await
        .expect("ready")
        .call(10)
        .await
        .expect_err("the backend's error");
    assert!(
        err.downcast_ref::<CircuitOpen>().is_none(),
        "not refused: {err}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        11,
        "every call reached the backend"
    );
}

#[tokio::test(start_paused = true)]
async fn forced_open_refuses_without_readying_below() {
    let layer = layer();
    let handle = layer.handle();
    let backend = Counted::new(false);
    let polls = Arc::clone(&backend.polls);
    let mut svc = layer.layer(backend);
    handle.force_open();
    let ready = tokio::time::timeout(ms(1), svc.ready()).await;
    let err = ready
        .expect("ready at once")
        .expect("ready")
        .call(1)
        .await
        .expect_err("refused");
    assert_eq!(
        err.downcast_ref::<CircuitOpen>()
            .expect("open")
            .retry_after(),
        None
    );
    assert_eq!(polls.load(Ordering::SeqCst), 0);
}
