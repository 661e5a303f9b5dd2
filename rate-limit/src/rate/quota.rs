//! Following an upstream's advertised quota: a layer that reads it from each result.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use palisade_core::throttle::QuotaHint;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::limiter::Common;

/// Reads an upstream's advertised quota from each result and makes a rate limit follow it
/// (see [`RateLimitHandle::follow`](super::RateLimitHandle::follow)); made by
/// [`RateLimitHandle::follow_quota`](super::RateLimitHandle::follow_quota) or
/// [`RateLimitLayer::quota_hint`](super::RateLimitLayer::quota_hint).
///
/// It passes every call and result through unchanged; the cost is the hint's reading of
/// each result.
///
/// ```
/// use palisade_core::BoxError;
/// use palisade_core::throttle::Quota;
/// use palisade_rate_limit::RateLimitLayer;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limit = RateLimitLayer::builder(100, Duration::from_secs(1)).build().unwrap();
/// let handle = limit.handle();
/// // An upstream that says: 9 calls left, the quota resets in 10 s.
/// let upstream = service_fn(|_: ()| async { Ok::<_, BoxError>((9u64, 10u64)) });
/// let client = ServiceBuilder::new()
///     .layer(limit)
///     .layer(handle.follow_quota(|res: &Result<(u64, u64), BoxError>| {
///         let (remaining, reset) = *res.as_ref().ok()?;
///         Some(Quota::new(remaining, Duration::from_secs(reset)))
///     }))
///     .service(upstream);
/// client.oneshot(()).await.unwrap();
/// assert_eq!(handle.interval(), Duration::from_secs(1)); // 9 calls in 10 s, the last before the reset
/// # }
/// ```
pub struct FollowQuotaLayer<H> {
    common: Arc<Common>,
    hint: H,
}

impl<H> FollowQuotaLayer<H> {
    pub(crate) fn new(common: Arc<Common>, hint: H) -> Self {
        Self { common, hint }
    }
}

impl<H: Clone> Clone for FollowQuotaLayer<H> {
    fn clone(&self) -> Self {
        Self {
            common: Arc::clone(&self.common),
            hint: self.hint.clone(),
        }
    }
}

impl<H> fmt::Debug for FollowQuotaLayer<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FollowQuotaLayer")
            .field("limit", self.common.emitter.name())
            .finish_non_exhaustive()
    }
}

impl<S, H: Clone> Layer<S> for FollowQuotaLayer<H> {
    type Service = FollowQuota<S, H>;

    fn layer(&self, inner: S) -> Self::Service {
        FollowQuota {
            inner,
            common: Arc::clone(&self.common),
            hint: self.hint.clone(),
        }
    }
}

/// The service of a [`FollowQuotaLayer`].
pub struct FollowQuota<S, H> {
    inner: S,
    common: Arc<Common>,
    hint: H,
}

impl<S, H> FollowQuota<S, H> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, H: Clone> Clone for FollowQuota<S, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            common: Arc::clone(&self.common),
            hint: self.hint.clone(),
        }
    }
}

impl<S: fmt::Debug, H> fmt::Debug for FollowQuota<S, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FollowQuota")
            .field("inner", &self.inner)
            .field("limit", self.common.emitter.name())
            .finish_non_exhaustive()
    }
}

impl<S, H, Req> Service<Req> for FollowQuota<S, H>
where
    S: Service<Req>,
    H: QuotaHint<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = FollowQuotaFuture<S::Future, H>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        FollowQuotaFuture {
            future: self.inner.call(req),
            common: Arc::clone(&self.common),
            hint: self.hint.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`FollowQuota`]: the inner future, whose result's quota the
    /// limit follows.
    pub struct FollowQuotaFuture<F, H> {
        #[pin]
        future: F,
        common: Arc<Common>,
        hint: H,
    }
}

impl<F, H, T, E> Future for FollowQuotaFuture<F, H>
where
    F: Future<Output = Result<T, E>>,
    H: QuotaHint<T, E>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        if let Some(quota) = this.hint.quota(&result) {
            this.common.follow(quota);
        }
        Poll::Ready(result)
    }
}

impl<F, H> fmt::Debug for FollowQuotaFuture<F, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FollowQuotaFuture").finish_non_exhaustive()
    }
}
