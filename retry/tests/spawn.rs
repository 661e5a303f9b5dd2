//! A retried service runs in a spawned task, with either flat error type.
//!
//! These are compile-pass tests: each spawns exactly what a user writes. One pattern cannot
//! compile on today's rustc: an `async` block that holds an unboxed stack whose type names
//! `BoxError` in a generic argument (a `service_fn` closure's future, `Scripted<_, BoxError>`,
//! `BoxCloneService<_, _, BoxError>` under the layer). rustc erases the lifetimes inside an
//! async block's captured types, `BoxError`'s `'static` included, and then cannot prove any
//! `'static`-only bound on the error (`BoxError: AsRejection` here, `Into<BoxError>` in
//! tower's own `Timeout`). The crate docs say how to spawn instead; each way is below.

mod common;

use common::Scripted;
use palisade_core::{BoxError, Error, Name, RateLimited};
use palisade_retry::RetryLayer;
use palisade_retry::hedge::HedgeLayer;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

fn layer() -> RetryLayer {
    RetryLayer::builder()
        .name("spawned")
        .build()
        .expect("valid")
}

#[tokio::test(start_paused = true)]
async fn an_async_block_awaiting_a_boxed_stack_spawns_with_box_error() {
    let limited = RateLimited::new(Name::new("api"), std::time::Duration::from_millis(5));
    let backend = Scripted::new([Err::<u32, BoxError>(limited.into())], |_| Ok(2));
    // Box the whole stack (as most services do to name its type): the bounds are proven
    // here, where the types are whole.
    let svc = BoxCloneService::new(layer().layer(backend.clone()));
    let handle = tokio::spawn(async move { svc.oneshot(1).await });
    assert_eq!(handle.await.unwrap().unwrap(), 2);
    assert_eq!(backend.count(), 2);
}

/// A client with a named type and `type Error = BoxError`, as most client wrappers are.
#[derive(Clone)]
struct Client;

impl tower::Service<u32> for Client {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, x: u32) -> Self::Future {
        std::future::ready(Ok(x + 1))
    }
}

#[tokio::test(start_paused = true)]
async fn an_async_block_awaiting_a_oneshot_over_a_named_client_spawns() {
    let svc = layer().layer(Client);
    let handle = tokio::spawn(async move { svc.oneshot(1).await });
    assert_eq!(handle.await.unwrap().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_oneshot_over_a_closure_backend_spawns_with_box_error() {
    let backend = tower::service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) });
    let svc = layer().layer(backend);
    // The oneshot future itself is the task: no async block around it.
    let handle = tokio::spawn(svc.oneshot(1));
    assert_eq!(handle.await.unwrap().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_async_block_over_a_closure_backend_spawns_with_palisade_error() {
    let backend = tower::service_fn(|x: u32| async move { Ok::<_, Error<std::io::Error>>(x + 1) });
    let svc = layer().layer(backend);
    let handle = tokio::spawn(async move { svc.oneshot(1).await });
    assert_eq!(handle.await.unwrap().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_spawns_too() {
    let svc = HedgeLayer::builder()
        .name("h")
        .build()
        .unwrap()
        .layer(Client);
    let handle = tokio::spawn(async move { svc.oneshot(1).await });
    assert_eq!(handle.await.unwrap().unwrap(), 2);
}
