//! tower's service contract: readiness before every attempt, clones share state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, CircuitOpen, Error, Name};
use palisade_retry::hedge::{HedgeConfig, HedgeLayer};
use palisade_retry::{Backoff, Jitter, RetryConfig, RetryLayer};
use tokio_test_shim::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_test::{assert_request_eq, mock};

/// Minimal stand-ins for tokio-test's assertion macros.
mod tokio_test_shim {
    macro_rules! assert_pending {
        ($e:expr) => {
            assert!($e.is_pending(), "expected Pending")
        };
    }
    macro_rules! assert_ready_ok {
        ($e:expr) => {
            match $e {
                std::task::Poll::Ready(Ok(v)) => v,
                other => panic!("expected Ready(Ok), got {:?}", other.map(|r| r.is_ok())),
            }
        };
    }
    pub(crate) use {assert_pending, assert_ready_ok};
}

/// A service that panics if `call` comes before a successful `poll_ready`, and whose
/// clones start unready (as tower allows). Every other `poll_ready` is `Pending` first,
/// so a layer that skips readiness would be caught. All calls fail.
struct Strict {
    ready: bool,
    flip: bool,
    calls: Arc<AtomicU32>,
}

impl Strict {
    fn new() -> (Self, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        (
            Self {
                ready: false,
                flip: false,
                calls: Arc::clone(&calls),
            },
            calls,
        )
    }
}

impl Clone for Strict {
    fn clone(&self) -> Self {
        Self {
            ready: false,
            flip: false,
            calls: Arc::clone(&self.calls),
        }
    }
}

impl Service<u32> for Strict {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.flip = !self.flip;
        if self.flip {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        assert!(self.ready, "called before poll_ready returned Ready");
        self.ready = false;
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err(format!("request {req} failed").into()))
    }
}

#[tokio::test(start_paused = true)]
async fn every_retry_waits_for_readiness() {
    let (backend, calls) = Strict::new();
    let config = RetryConfig::builder()
        .max_attempts(4)
        .no_budget()
        .backoff(Backoff::constant(Duration::from_millis(1)).jitter(Jitter::None))
        .build()
        .unwrap();
    let svc = RetryLayer::new(config).layer(backend);
    assert!(svc.oneshot(1).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn every_hedge_waits_for_readiness() {
    let (backend, calls) = Strict::new();
    // Strict's answers are immediate failures; a slow wrapper gives the hedge time to go.
    let slow = tower::service_fn(move |req: u32| {
        let mut backend = backend.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            backend.ready().await?;
            backend.call(req).await
        }
    });
    let config = HedgeConfig::builder()
        .delay(Duration::from_millis(10))
        .max_hedges(2)
        .build()
        .unwrap();
    let svc = HedgeLayer::new(config).layer(StrictGate::new(slow));
    assert!(svc.oneshot(1).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// Wraps any service with Strict's readiness checks.
#[derive(Clone)]
struct StrictGate<S> {
    inner: S,
    ready: bool,
    flip: bool,
}

impl<S> StrictGate<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            ready: false,
            flip: false,
        }
    }
}

impl<S: Service<u32>> Service<u32> for StrictGate<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.flip = !self.flip;
        if self.flip {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let ready = self.inner.poll_ready(cx);
        self.ready = matches!(ready, Poll::Ready(Ok(())));
        ready
    }

    fn call(&mut self, req: u32) -> S::Future {
        assert!(self.ready, "called before poll_ready returned Ready");
        self.ready = false;
        self.inner.call(req)
    }
}

#[tokio::test(start_paused = true)]
async fn readiness_comes_from_the_inner_service() {
    let config = RetryConfig::builder().build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(RetryLayer::new(config));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(7);
    assert_request_eq!(handle, 7).send_response(8);
    assert_eq!(fut.await.unwrap(), 8);
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_the_inner_service_to_be_ready_again() {
    let config = RetryConfig::builder()
        .no_budget()
        .backoff(Backoff::constant(Duration::from_millis(10)).jitter(Jitter::None))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(RetryLayer::new(config));
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = tokio::spawn(svc.call(7));
    assert_request_eq!(handle, 7).send_error(std::io::Error::other("reset"));
    // The retry's delay passes, but the inner service has no capacity: nothing is sent.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(handle.poll_request().is_pending());
    handle.allow(1);
    assert_request_eq!(handle, 7).send_response(9);
    assert_eq!(fut.await.unwrap().unwrap(), 9);
}

#[tokio::test(start_paused = true)]
async fn clones_and_services_of_one_layer_share_the_budget() {
    let layer = RetryLayer::builder().build().unwrap();
    let a = layer.layer(tower::service_fn(
        |x: u32| async move { Ok::<_, BoxError>(x) },
    ));
    let b = a.clone();
    let c = layer.clone().layer(tower::service_fn(
        |x: u32| async move { Ok::<_, BoxError>(x) },
    ));
    let budget = a.budget().unwrap();
    assert!(budget.same_as(b.budget().unwrap()));
    assert!(budget.same_as(c.budget().unwrap()));
    assert!(format!("{layer:?}").contains("RetryLayer"));
    assert!(format!("{a:?}").contains("Retry"));
}

#[tokio::test(start_paused = true)]
async fn stacks_keep_one_flat_error_type() {
    // Error<E> through retry and hedge, with a rejection from below passing unchanged.
    let backend = tower::service_fn(|_: u32| async {
        Err::<u32, Error<std::io::Error>>(CircuitOpen::new(Name::new("db"), None).into())
    });
    let svc = ServiceBuilder::new()
        .layer(HedgeLayer::builder().build().unwrap())
        .layer(RetryLayer::builder().build().unwrap())
        .service(backend);
    let err = svc.oneshot(1).await.unwrap_err();
    assert!(matches!(err, Error::CircuitOpen(_)));
}

#[test]
fn services_and_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let backend = tower::service_fn(|x: u32| async move { Ok::<_, BoxError>(x) });
    let mut retry = RetryLayer::new(RetryConfig::default()).layer(backend);
    assert_send_sync(&retry);
    assert_send(&retry.call(1));
    let mut hedge = HedgeLayer::builder().build().unwrap().layer(backend);
    assert_send_sync(&hedge);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    assert_send(&hedge.call(1));
}

/// A failure while `fail_next` is above zero (taking one from it), else `value`.
fn answer(fail_next: &AtomicU32, value: u32) -> Result<u32, BoxError> {
    let failing = fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        Err("failed".into())
    } else {
        Ok(value)
    }
}

/// Counts its clones; fails as many calls as `fail_next` says ([`answer`]), then answers
/// with the request.
struct Counted {
    clones: Arc<AtomicU32>,
    fail_next: Arc<AtomicU32>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            clones: Arc::clone(&self.clones),
            fail_next: Arc::clone(&self.fail_next),
        }
    }
}

impl Service<u32> for Counted {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        std::future::ready(answer(&self.fail_next, req))
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_answered_at_once_clones_no_service_and_a_retried_one_clones_once() {
    let clones = Arc::new(AtomicU32::new(0));
    let fail_next = Arc::new(AtomicU32::new(0));
    let backend = Counted {
        clones: Arc::clone(&clones),
        fail_next: Arc::clone(&fail_next),
    };
    let config = RetryConfig::builder()
        .max_attempts(4)
        .no_budget()
        .backoff(Backoff::constant(Duration::from_millis(1)).jitter(Jitter::None))
        .build()
        .unwrap();
    let mut svc = RetryLayer::new(config).layer(backend);
    let made = clones.load(Ordering::SeqCst);
    for i in 0..100 {
        assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i);
    }
    assert_eq!(clones.load(Ordering::SeqCst), made, "no clone per call");
    // Two failures, then the answer: one clone serves both later attempts.
    fail_next.store(2, Ordering::SeqCst);
    assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
    assert_eq!(clones.load(Ordering::SeqCst), made + 1);
    assert_eq!(fail_next.load(Ordering::SeqCst), 0);
}

#[test]
fn a_retry_over_a_send_but_not_sync_service_is_send_and_so_is_its_future() {
    // tower's `BoxCloneService` is `Send` but not `Sync`: the spare service a retry clones
    // is shared behind a mutex, not a read-write lock, so this still holds.
    fn assert_send<T: Send>(_: &T) {}
    let backend = tower::util::BoxCloneService::new(tower::service_fn(|x: u32| async move {
        Ok::<_, BoxError>(x)
    }));
    let mut retry = RetryLayer::new(RetryConfig::default()).layer(backend);
    assert_send(&retry);
    assert_send(&retry.call(1));
}

#[tokio::test(start_paused = true)]
async fn after_a_config_update_retries_clone_the_service_as_it_was_then() {
    /// Answers with its tag, after failing as many calls as `fail_next` says.
    #[derive(Clone)]
    struct Tagged {
        tag: u32,
        fail_next: Arc<AtomicU32>,
    }
    impl Service<u32> for Tagged {
        type Response = u32;
        type Error = BoxError;
        type Future = std::future::Ready<Result<u32, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: u32) -> Self::Future {
            std::future::ready(answer(&self.fail_next, self.tag))
        }
    }
    let fail_next = Arc::new(AtomicU32::new(0));
    let config = RetryConfig::builder()
        .max_attempts(3)
        .no_budget()
        .backoff(Backoff::constant(Duration::from_millis(1)).jitter(Jitter::None))
        .build()
        .unwrap();
    let layer = RetryLayer::new(config.clone());
    let mut svc = layer.layer(Tagged {
        tag: 1,
        fail_next: Arc::clone(&fail_next),
    });
    // Changed after wrapping: first attempts see it, retries clone the service as wrapped.
    svc.get_mut().tag = 2;
    assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), 2);
    fail_next.store(1, Ordering::SeqCst);
    assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), 1);
    // After an update, the service as it was then.
    layer.handle().update(config).unwrap();
    assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), 2);
    fail_next.store(1, Ordering::SeqCst);
    assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), 2);
}
