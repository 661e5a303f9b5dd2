//! Boxing a service's error, so palisade layers can be stacked on services whose error is
//! `Infallible` (an axum `Router`) or a transport's own type (hyper's client).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Turns the inner service's error into a [`BoxError`], which every palisade layer can
/// return its rejections in.
///
/// An axum `Router`'s error is `Infallible` and hyper's client has its own error type;
/// neither is `From<RateLimited>`, so palisade layers cannot sit on them directly. This
/// layer goes at the bottom of the stack (right above the router or the client).
/// [`RejectionResponseLayer::around`](crate::RejectionResponseLayer::around) puts it there
/// for you on a server.
///
/// ```
/// use palisade_http::BoxErrorLayer;
/// use std::convert::Infallible;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let router_like = service_fn(|n: u32| async move { Ok::<_, Infallible>(n) });
/// let svc = BoxErrorLayer::new().layer(router_like); // Error = BoxError
/// assert_eq!(svc.oneshot(7).await.unwrap(), 7);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct BoxErrorLayer {
    _priv: (),
}

impl BoxErrorLayer {
    /// The layer.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for BoxErrorLayer {
    type Service = BoxErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BoxErrors { inner }
    }
}

/// The service of [`BoxErrorLayer`]: the inner service with its error boxed.
#[derive(Debug, Clone)]
pub struct BoxErrors<S> {
    inner: S,
}

impl<S> BoxErrors<S> {
    /// Wrap `inner`.
    pub const fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for BoxErrors<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxErrorFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        BoxErrorFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`BoxErrors`].
    pub struct BoxErrorFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T, E> Future for BoxErrorFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(ready!(self.project().inner.poll(cx)).map_err(Into::into))
    }
}

impl<F> fmt::Debug for BoxErrorFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxErrorFuture").finish_non_exhaustive()
    }
}
