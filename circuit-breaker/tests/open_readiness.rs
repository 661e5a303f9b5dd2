//! An open breaker answers `poll_ready` at once without driving the service below ready:
//! its `call` refuses, so nothing below (a concurrency limit's slot, a queue place) is
//! reserved for a call that will not be made, and a caller is not kept waiting for a
//! lower layer only to be refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_circuit_breaker::{CircuitBreaker, CircuitBreakerHandle, CircuitBreakerLayer};
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

/// A default breaker over a [`Counted`] backend: the breaker's handle, the backend's
/// counters and the guarded service.
struct Guarded {
    handle: CircuitBreakerHandle,
    polls: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    svc: CircuitBreaker<Counted>,
}

impl Guarded {
    fn new(ready: bool) -> Self {
        let layer = CircuitBreakerLayer::builder()
            .name("api")
            .build()
            .expect("valid config");
        let backend = Counted::new(ready);
        Self {
            handle: layer.handle(),
            polls: Arc::clone(&backend.polls),
            calls: Arc::clone(&backend.calls),
            svc: layer.layer(backend),
        }
    }

    /// The backend's `poll_ready`s and calls so far.
    fn counts(&self) -> (usize, usize) {
        (
            self.polls.load(Ordering::SeqCst),
            self.calls.load(Ordering::SeqCst),
        )
    }

    /// One request, driven ready and called.
    async fn call(&mut self, req: u32) -> Result<u32, BoxError> {
        self.svc.ready().await?.call(req).await
    }

    /// One request that must be ready within a millisecond (an open breaker does not wait
    /// for the service below, even one that is never ready) and refused: the refusal.
    async fn refused_at_once(&mut self, req: u32) -> CircuitOpen {
        let ready = tokio::time::timeout(ms(1), self.svc.ready()).await;
        let err = ready
            .expect("ready at once")
            .expect("ready")
            .call(req)
            .await
            .expect_err("refused");
        *err.downcast::<CircuitOpen>().expect("a CircuitOpen")
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_ready_at_once_over_a_service_that_never_is_and_refuses() {
    let mut g = Guarded::new(false);
    g.handle.open_for(ms(300));
    assert_eq!(g.refused_at_once(1).await.retry_after(), Some(ms(300)));
    assert_eq!(g.counts().0, 0, "the service below was not asked");
}

#[tokio::test(start_paused = true)]
async fn while_open_nothing_below_is_readied_and_once_closed_calls_go_through() {
    let mut g = Guarded::new(true);
    g.handle.open_for(ms(100));
    for i in 0..5 {
        assert!(g.call(i).await.is_err(), "refused while open");
    }
    assert_eq!(g.counts(), (0, 0));
    tokio::time::sleep(ms(100)).await;
    // The open period is over: the next call is a probe, on a service driven ready.
    assert_eq!(g.call(7).await.expect("probe"), 7);
    assert_eq!(g.counts(), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_call_readied_while_open_is_refused_with_no_wait_if_the_breaker_admits_by_then() {
    let mut g = Guarded::new(true);
    g.handle.open_for(ms(100));
    let ready = g.svc.ready().await.expect("ready");
    tokio::time::sleep(ms(150)).await;
    // Half-open now, but this call's service below was never driven ready: refused, with
    // nothing to wait for, and the probe permit it would have taken goes back.
    let err = ready.call(1).await.expect_err("refused");
    let open = err.downcast_ref::<CircuitOpen>().expect("a CircuitOpen");
    assert_eq!(open.retry_after(), Some(Duration::ZERO));
    assert_eq!(g.counts().1, 0);
    assert_eq!(g.call(2).await.expect("probe"), 2);
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
    let mut g = Guarded::new(false);
    g.handle.force_open();
    assert_eq!(g.refused_at_once(1).await.retry_after(), None);
    assert_eq!(g.counts().0, 0);
}
