//! tower's readiness and clone contracts, and both flat error types.

use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use palisade_circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, State};
use palisade_core::{BoxError, CircuitOpen, Error};
use tower::{Layer, Service, ServiceExt};
use tower_test::{assert_request_eq, mock};

/// Fails the test if `call` comes before a successful `poll_ready`.
#[derive(Clone, Default)]
struct Strict {
    ready: bool,
}

impl Service<bool> for Strict {
    type Response = &'static str;
    type Error = BoxError;
    type Future = Ready<Result<&'static str, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, fail: bool) -> Self::Future {
        assert!(self.ready, "call before poll_ready");
        self.ready = false;
        ready(if fail { Err("boom".into()) } else { Ok("ok") })
    }
}

fn tripping() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .count_window(2)
        .minimum_calls(2)
        .open_duration(Duration::from_secs(10))
        .half_open_probes(1)
        .build()
        .expect("valid config")
}

#[tokio::test(start_paused = true)]
async fn calls_only_after_readiness() {
    let mut svc = CircuitBreaker::new(Strict::default(), tripping());
    for fail in [false, true, true, false] {
        let _ = svc.ready().await.unwrap().call(fail).await;
    }
    // A rejected call still leaves the inner service ready for the next one.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn readiness_is_the_inner_services() {
    let layer = CircuitBreakerLayer::new(tripping());
    let handle = layer.handle();
    let (mut svc, mut mock) = mock::spawn_layer::<bool, &str, _>(layer);

    mock.allow(0);
    assert!(svc.poll_ready().is_pending(), "waits for the inner service");

    handle.force_open();
    mock.allow(1);
    // Open: poll_ready is still honest (ready), the rejection comes from call.
    assert!(svc.poll_ready().is_ready());
    let err = svc.call(true).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());

    handle.reset();
    assert!(
        svc.poll_ready().is_ready(),
        "the reserved readiness was not consumed"
    );
    let fut = svc.call(true);
    assert_request_eq!(mock, true).send_response("ok");
    assert_eq!(fut.await.unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_breaker() {
    let layer = CircuitBreakerLayer::new(tripping());
    let mut a = layer.layer(Strict::default());
    let mut b = a.clone();
    let mut c = layer.clone().layer(Strict::default());
    for _ in 0..2 {
        let _ = a.ready().await.unwrap().call(true).await;
    }
    assert_eq!(b.handle().state(), State::Open);
    let err = b.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    let err = c.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
}

#[derive(Debug, PartialEq)]
struct Backend;

#[tokio::test(start_paused = true)]
async fn works_with_the_typed_error() {
    let inner = tower::service_fn(|fail: bool| async move {
        if fail {
            Err(Error::Inner(Backend))
        } else {
            Ok(())
        }
    });
    let mut svc = CircuitBreakerLayer::new(tripping()).layer(inner);
    for _ in 0..2 {
        let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
        assert!(matches!(err, Error::Inner(Backend)));
    }
    match svc.ready().await.unwrap().call(false).await {
        Err(Error::CircuitOpen(open)) => {
            assert_eq!(open.retry_after(), Some(Duration::from_secs(10)));
            assert_eq!(open.name().as_str(), "circuit_breaker");
        }
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
}

#[test]
fn rejection_needs_no_runtime_to_be_polled() {
    let layer = CircuitBreakerLayer::new(tripping());
    layer.handle().force_open();
    let mut svc = layer.layer(Strict::default());
    let fut = svc.ready().now_or_never().unwrap().unwrap().call(false);
    let err = fut.now_or_never().expect("ready at once").unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("CircuitOpen");
    assert_eq!(open.retry_after(), None, "forced open: no probe is coming");
}
