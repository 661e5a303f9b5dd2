//! The load shedding service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{Overloaded, Priority};
use tokio::time::Instant;
use tower_service::Service;

use super::{ResponseFuture, Shared};
use crate::Switch;

/// Tells a request's [`Priority`]: implemented for closures `Fn(&Req) -> Priority` and for
/// [`AllDefault`].
pub trait Prioritize<Req> {
    /// The priority of `req`.
    fn priority(&self, req: &Req) -> Priority;
}

impl<Req, F: Fn(&Req) -> Priority> Prioritize<Req> for F {
    fn priority(&self, req: &Req) -> Priority {
        self(req)
    }
}

/// Every request is [`Priority::Default`] (the shedder then protects the backend without
/// preferring anyone).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllDefault;

impl<Req> Prioritize<Req> for AllDefault {
    fn priority(&self, _: &Req) -> Priority {
        Priority::Default
    }
}

/// A service that sheds low-priority requests under overload, with an
/// [`Overloaded`](palisade_core::Overloaded) rejection carrying the priority. Built by
/// [`ShedLayer`](super::ShedLayer).
pub struct Shed<S, P = AllDefault> {
    inner: S,
    priority: P,
    shared: Arc<Shared>,
    // When this service's current readiness wait began (only timed with a delay target).
    waiting_since: Option<Instant>,
}

impl<S, P> Shed<S, P> {
    pub(crate) fn from_shared(inner: S, priority: P, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            priority,
            shared,
            waiting_since: None,
        }
    }

    /// Requests in flight through this shedder (all clones).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// The queueing delay estimate.
    pub fn queue_delay(&self) -> Duration {
        self.shared.queue_delay()
    }

    /// The degrade switch: in degraded mode everything below critical is shed.
    pub fn switch(&self) -> &Switch {
        &self.shared.switch
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, P, Req> Service<Req> for Shed<S, P>
where
    S: Service<Req>,
    S::Error: From<Overloaded>,
    P: Prioritize<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let ready = self.inner.poll_ready(cx);
        if self.shared.measures_delay() {
            // The clock is read only when the inner service makes us wait.
            match &ready {
                Poll::Pending if self.waiting_since.is_none() => {
                    self.waiting_since = Some(Instant::now());
                }
                Poll::Pending => {}
                Poll::Ready(_) => {
                    let waited = self
                        .waiting_since
                        .take()
                        .map_or(Duration::ZERO, |t| t.elapsed());
                    self.shared.record_wait(waited);
                }
            }
        }
        ready
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let priority = self.priority.priority(&req);
        match self.shared.admit(priority) {
            Ok(guard) => ResponseFuture::admitted(self.inner.call(req), guard),
            Err(rejection) => ResponseFuture::shed(rejection),
        }
    }
}

impl<S: Clone, P: Clone> Clone for Shed<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            priority: self.priority.clone(),
            shared: Arc::clone(&self.shared),
            waiting_since: None,
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Shed<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shed")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .field("in_flight", &self.shared.in_flight())
            .finish_non_exhaustive()
    }
}
