//! The timeout service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{Deadline, Elapsed, deadline};
use tokio::time::Instant;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::layer::{Fixed, RequestTimeout, Shared, TimeoutHandle};

/// Fails a call with [`Elapsed`] when it takes longer than its timeout, or runs past the
/// deadline an outer layer set, whichever comes first; the inner future is dropped then.
///
/// While the inner service's `call` runs and while its future is polled, the effective
/// deadline is in effect ([`Deadline::current`]), so inner layers (a per-attempt timeout, a
/// retry) never outlive it.
pub struct Timeout<S, T = Fixed> {
    inner: S,
    policy: T,
    shared: Arc<Shared>,
}

impl<S, T> Timeout<S, T> {
    pub(crate) fn from_parts(inner: S, policy: T, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            policy,
            shared,
        }
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

    /// A handle to the layer's shared state.
    pub fn handle(&self) -> TimeoutHandle {
        TimeoutHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, T, Req> Service<Req> for Timeout<S, T>
where
    S: Service<Req>,
    S::Error: From<Elapsed>,
    T: RequestTimeout<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let own = self.policy.timeout_for(&req, self.shared.timeout());
        let outer = Deadline::current();
        let observed = cfg!(feature = "metrics") || self.shared.observing();
        // The clock is read only when a deadline must be computed or someone observes.
        let start = (own.is_some() || outer.is_some() || observed).then(Instant::now);
        let own_deadline = own.zip(start).map(|(timeout, start)| {
            Deadline::at(start.checked_add(timeout).unwrap_or(start + FAR))
        });
        let effective = Deadline::earliest(own_deadline, outer);
        let inner = deadline::scope(effective, || self.inner.call(req));
        ResponseFuture::new(inner, effective, start, &self.shared, observed)
    }
}

/// "Never" for a timeout so large that it overflows the clock: about 30 years.
const FAR: std::time::Duration = std::time::Duration::from_secs(86_400 * 365 * 30);

impl<S: Clone, T: Clone> Clone for Timeout<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for Timeout<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("inner", &self.inner)
            .field("name", self.shared.name())
            .field("timeout", &self.shared.timeout())
            .finish()
    }
}
