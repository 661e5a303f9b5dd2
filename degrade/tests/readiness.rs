//! Honest readiness: an inner `poll_ready` error (a closed connection, a `Buffer` whose
//! worker is gone) is answered by the fallback or the stale cache, not passed to the caller.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use palisade_core::{BoxError, Error, Name, RateLimited};
use palisade_degrade::fallback::{FromError, Value};
use palisade_degrade::{
    FallbackConfig, FallbackLayer, Marked, StaleCacheLayer, StaleConfig, Trigger, Triggers,
};
use tower::buffer::Buffer;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A connection that answers `"live <req>"` until it is closed; closed, its `poll_ready`
/// fails (as a pooled client's does), and calling it anyway is a contract violation.
#[derive(Clone)]
struct Connection {
    closed: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Connection {
    fn new() -> Self {
        Self {
            closed: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Service<u32> for Connection {
    type Response = Marked<String>;
    type Error = BoxError;
    type Future = Ready<Result<Marked<String>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.closed.load(Ordering::Relaxed) {
            Poll::Ready(Err("connection closed".into()))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, req: u32) -> Self::Future {
        assert!(
            !self.closed.load(Ordering::Relaxed),
            "called after a readiness error"
        );
        self.calls.fetch_add(1, Ordering::Relaxed);
        ready(Ok(Marked::new(format!("live {req}"))))
    }
}

fn fallback_config() -> FallbackConfig {
    FallbackConfig::builder()
        .name("fb")
        .build()
        .expect("valid config")
}

#[tokio::test]
async fn a_buffer_whose_worker_is_gone_is_answered_by_the_fallback() {
    let backend = service_fn(|req: u32| async move { Ok::<_, BoxError>(Marked::new(req)) });
    let (buffer, worker) = Buffer::pair(backend, 4);
    drop(worker);
    let layer = FallbackLayer::new(fallback_config(), Value::new(Marked::new(0)));
    let mut svc = layer.layer(buffer);
    // Ready: the fallback can answer, so the caller is not told to give up.
    let ready = svc.ready().await.expect("a fallback layer is ready");
    let answer = ready.call(7).await.expect("the fallback answered");
    assert_eq!(*answer, 0);
    let mark = answer.degraded().expect("marked");
    assert_eq!(mark.trigger(), Trigger::Failure);
}

#[tokio::test]
async fn a_readiness_error_reaches_the_fallback_source_and_is_returned_if_not_triggered() {
    let conn = Connection::new();
    conn.closed.store(true, Ordering::Relaxed);
    let source = FromError::new(|e: Option<&BoxError>| {
        Marked::new(format!(
            "fallback after: {}",
            e.map_or("-".into(), ToString::to_string)
        ))
    });
    let mut svc = FallbackLayer::new(fallback_config(), source).layer(conn.clone());
    let answer = svc.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(*answer, "fallback after: connection closed");

    // Only rejections trigger: the readiness failure is returned, from `call`.
    let rejections_only = FallbackConfig::builder()
        .triggers(Triggers::rejections_only())
        .build()
        .unwrap();
    let mut svc = FallbackLayer::new(rejections_only, Value::new(Marked::new("x".to_string())))
        .layer(conn.clone());
    let ready = svc.ready().await.expect("the error comes from call");
    let err = ready.call(1).await.unwrap_err();
    assert_eq!(err.to_string(), "connection closed");

    // Reopened, the live path is used again.
    conn.closed.store(false, Ordering::Relaxed);
    let answer = svc.ready().await.unwrap().call(2).await.unwrap();
    assert!(answer.is_live());
    assert_eq!(*answer, "live 2");
    assert_eq!(conn.calls.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_stale_cache_answers_for_a_closed_connection() {
    let conn = Connection::new();
    let layer = StaleCacheLayer::new(
        StaleConfig::builder().name("cache").build().unwrap(),
        |k: &u32| *k,
    );
    let mut svc = layer.layer(conn.clone());
    assert_eq!(*svc.ready().await.unwrap().call(1).await.unwrap(), "live 1");
    conn.closed.store(true, Ordering::Relaxed);
    let answer = svc.ready().await.expect("ready").call(1).await.unwrap();
    assert_eq!(*answer, "live 1");
    assert_eq!(answer.degraded().unwrap().trigger(), Trigger::Failure);
    // No entry for this key: the readiness error is the answer, from `call`.
    let err = svc.ready().await.expect("ready").call(2).await.unwrap_err();
    assert_eq!(err.to_string(), "connection closed");
    // Stale-while-revalidate too.
    let mut swr = layer.stale_while_revalidate().layer(conn.clone());
    let answer = swr.ready().await.expect("ready").call(1).await.unwrap();
    assert_eq!(*answer, "live 1");
    assert!(answer.is_degraded());
    assert_eq!(conn.calls.load(Ordering::Relaxed), 1);
}

/// A plain response type, no `Marked<T>`: `unmarked()` makes the fallback compile and
/// answer; its rejection triggers keep working (an open circuit below is answered).
#[tokio::test]
async fn a_plain_response_type_falls_back_unmarked() {
    let layer =
        FallbackLayer::new(fallback_config(), Value::new(String::from("default"))).unmarked();
    let svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<String, Error<std::io::Error>>(
                RateLimited::new(Name::new("limit"), std::time::Duration::from_secs(1)).into(),
            )
        } else {
            Ok("live".to_string())
        }
    }));
    assert_eq!(svc.clone().oneshot(false).await.unwrap(), "live");
    assert_eq!(svc.clone().oneshot(true).await.unwrap(), "default");
}

/// An error that no call consumed is forgotten when the service is ready again: the next
/// call goes live.
#[tokio::test]
async fn a_recovered_connection_is_used_even_if_no_call_consumed_the_error() {
    let conn = Connection::new();
    conn.closed.store(true, Ordering::Relaxed);
    let mut fb = FallbackLayer::new(fallback_config(), Value::new(Marked::new("x".to_string())))
        .layer(conn.clone());
    let layer = StaleCacheLayer::new(
        StaleConfig::builder().name("cache").build().unwrap(),
        |k: &u32| *k,
    );
    let mut stale = layer.layer(conn.clone());
    std::future::poll_fn(|cx| fb.poll_ready(cx)).await.unwrap();
    std::future::poll_fn(|cx| stale.poll_ready(cx))
        .await
        .unwrap();
    conn.closed.store(false, Ordering::Relaxed);
    let answer = fb.ready().await.unwrap().call(3).await.unwrap();
    assert!(answer.is_live());
    let answer = stale.ready().await.unwrap().call(4).await.unwrap();
    assert_eq!(*answer, "live 4");
}
