//! tower's readiness and clone contracts, for every layer of the crate, with both error
//! types.
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do

use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Error, Overloaded, RateLimited};
use palisade_rate_limit::{AdaptiveLimitLayer, ConcurrencyLimitLayer, RateLimitLayer};
use tower::{Layer, Service, ServiceExt};

/// Fails if `call` comes before `poll_ready`; a clone is not ready.
#[derive(Debug)]
struct Strict<E> {
    ready: bool,
    _e: std::marker::PhantomData<fn() -> E>,
}

impl<E> Strict<E> {
    fn new() -> Self {
        Self {
            ready: false,
            _e: std::marker::PhantomData,
        }
    }
}

impl<E> Clone for Strict<E> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct NotReady;
impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("called before poll_ready")
    }
}
impl std::error::Error for NotReady {}

impl<E: From<NotReady> + Send + 'static> Service<u32> for Strict<E> {
    type Response = u32;
    type Error = E;
    type Future = std::future::Ready<Result<u32, E>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        let was_ready = std::mem::replace(&mut self.ready, false);
        std::future::ready(if was_ready {
            Ok(req)
        } else {
            Err(NotReady.into())
        })
    }
}

impl From<NotReady> for Error<NotReady> {
    fn from(e: NotReady) -> Self {
        Error::Inner(e)
    }
}

fn rate(max_wait: Duration) -> RateLimitLayer {
    RateLimitLayer::builder(1, Duration::from_secs(1))
        .max_wait(max_wait)
        .build()
        .unwrap()
}

async fn call<S>(svc: &mut S, req: u32) -> Result<u32, S::Error>
where
    S: Service<u32, Response = u32>,
{
    svc.ready().await?.call(req).await
}

#[tokio::test(start_paused = true)]
async fn rate_limit_calls_the_readied_service_in_both_modes() {
    for max_wait in [Duration::ZERO, Duration::from_secs(5)] {
        let mut svc = rate(max_wait).layer(Strict::<BoxError>::new());
        assert_eq!(call(&mut svc, 1).await.unwrap(), 1);
        // In wait mode this call waits one second with the readied service, then calls it.
        let second = call(&mut svc, 2).await;
        if max_wait.is_zero() {
            assert!(second.unwrap_err().is::<RateLimited>());
        } else {
            assert_eq!(second.unwrap(), 2);
        }
        // A clone (not readied) is readied through the layer before it is called.
        let third = call(&mut svc.clone(), 3).await;
        assert_eq!(third.is_ok(), !max_wait.is_zero());
    }
}

#[tokio::test(start_paused = true)]
async fn rate_limit_clones_share_one_limiter_and_typed_errors_work() {
    let layer = rate(Duration::ZERO);
    let mut a = layer.layer(Strict::<Error<NotReady>>::new());
    let mut b = a.clone();
    let mut c = layer.layer(Strict::<Error<NotReady>>::new());
    assert_eq!(call(&mut a, 1).await.unwrap(), 1);
    assert!(matches!(call(&mut b, 2).await, Err(Error::RateLimited(_))));
    assert!(matches!(call(&mut c, 3).await, Err(Error::RateLimited(_))));
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_contract() {
    let layer = ConcurrencyLimitLayer::builder(1).build().unwrap();
    let mut a = layer.layer(Strict::<Error<NotReady>>::new());
    let mut b = a.clone();
    assert_eq!(call(&mut a, 1).await.unwrap(), 1);
    // a holds the only permit after poll_ready; b (a clone) is refused.
    a.ready().await.unwrap();
    assert_eq!(layer.handle().in_flight(), 1);
    assert!(matches!(call(&mut b, 2).await, Err(Error::Overloaded(_))));
    // Dropping a readied service frees its permit.
    drop(a);
    assert_eq!(layer.handle().in_flight(), 0);
    assert_eq!(call(&mut b, 3).await.unwrap(), 3);

    let mut boxed = layer.layer(Strict::<BoxError>::new());
    let held = boxed.clone().ready_oneshot().await.unwrap();
    assert!(call(&mut boxed, 4).await.unwrap_err().is::<Overloaded>());
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_wait_mode_calls_the_readied_service() {
    let layer = ConcurrencyLimitLayer::builder(1)
        .max_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut holder = layer.layer(Strict::<BoxError>::new());
    let held = holder.ready().await.unwrap();
    assert_eq!(layer.handle().in_flight(), 1);
    // Every permit is taken: readiness takes a place in the queue and readies the inner
    // service; the call waits in its future with that readied service, then calls it.
    let mut waiter = layer.layer(Strict::<BoxError>::new());
    let fut = waiter.ready().await.unwrap().call(7);
    assert_eq!(layer.handle().waiting(), 1);
    let done = tokio::spawn(fut);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(held.call(1).await.unwrap(), 1);
    assert_eq!(done.await.unwrap().unwrap(), 7);
    // The clone left behind is not ready: it is readied before its own call.
    assert_eq!(call(&mut waiter, 8).await.unwrap(), 8);
    assert_eq!(layer.handle().in_flight(), 0);
    assert_eq!(layer.handle().waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn adaptive_limit_contract() {
    let layer = AdaptiveLimitLayer::builder()
        .initial_limit(1)
        .limits(1, 10)
        .build()
        .unwrap();
    let mut a = layer.layer(Strict::<Error<NotReady>>::new());
    let mut b = a.clone();
    assert_eq!(call(&mut a, 1).await.unwrap(), 1);
    a.ready().await.unwrap();
    assert!(matches!(call(&mut b, 2).await, Err(Error::Overloaded(_))));
    drop(a);
    assert_eq!(layer.handle().in_flight(), 0);
    let mut boxed = layer.layer(Strict::<BoxError>::new());
    assert_eq!(call(&mut boxed, 3).await.unwrap(), 3);
}

#[test]
fn layers_and_services_are_send_sync_and_clone() {
    fn assert_traits<T: Send + Sync + Clone>() {}
    assert_traits::<RateLimitLayer>();
    assert_traits::<ConcurrencyLimitLayer>();
    assert_traits::<AdaptiveLimitLayer>();
    assert_traits::<palisade_rate_limit::RateLimit<Strict<BoxError>>>();
    assert_traits::<palisade_rate_limit::ConcurrencyLimit<Strict<BoxError>>>();
}
