//! The service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{CircuitOpen, Classify, RejectionAware};
use tokio::time::Instant;
use tower_service::Service;

use crate::future::{OwnCount, Recorder, ResponseFuture};
use crate::state::Breaker;
use crate::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitBreakerLayer};

/// A service guarded by a circuit breaker: calls are admitted while the breaker is closed,
/// rejected with [`CircuitOpen`] (converted into `S::Error`) while it is open, and sampled
/// as probes while it is half-open. Clones share the breaker.
///
/// `poll_ready` only asks the inner service, and not even that while the breaker is open:
/// an open breaker rejects from `call`, so a caller gets the rejection (with its
/// `retry_after`) at once, instead of a service that never becomes ready or a wait for the
/// layers below (a concurrency limit's slot) only to be refused, and nothing below stays
/// reserved for a call that will not be made. If the open period ends between `poll_ready`
/// and `call`, that call is still refused (with a `retry_after` of zero): its inner service
/// was not driven ready. `retry_after` is the time left in the open period; while half-open with
/// every probe out, the time until the probes' verdict is due, at most a tenth of the open
/// duration just served and never zero; `None` when forced open.
///
/// Clones share the breaker. Each call's future holds a reference count on it until the
/// call's outcome is recorded; once a service has been called a few times, that count is
/// one of its own (allocated once), so threads calling their own clones write no shared
/// memory while the breaker is healthy, and a clone used for a single call allocates
/// nothing.
pub struct CircuitBreaker<S, C = RejectionAware> {
    inner: S,
    /// The breaker, behind the layer's reference count for calls' futures, shared by its
    /// services (see `own`). A clone takes one count on it, nothing more.
    shared: Arc<OwnCount>,
    classifier: C,
    /// `poll_ready` found the breaker open and left the inner service alone: `call` refuses.
    refusing: bool,
    /// This service's own reference count on the breaker, for its calls' futures: made
    /// once it has been called [`OWN_AFTER`] times, so that a service used for one call
    /// (cloned per request, as axum does) allocates nothing, and one used for many (a
    /// worker's clone) writes no line that other threads' calls write.
    own: Option<Arc<OwnCount>>,
    /// Calls made before `own` exists (saturating at [`OWN_AFTER`]).
    calls: u8,
}

/// How many calls a service makes through the shared count before making its own.
const OWN_AFTER: u8 = 8;

// ===== impl CircuitBreaker =====

impl<S> CircuitBreaker<S> {
    /// Wrap `inner` in a new breaker (with the default classifier, [`RejectionAware`]).
    pub fn new(inner: S, config: CircuitBreakerConfig) -> Self {
        tower_layer::Layer::layer(&CircuitBreakerLayer::new(config), inner)
    }
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn from_parts(inner: S, shared: Arc<OwnCount>, classifier: C) -> Self {
        Self {
            inner,
            shared,
            classifier,
            refusing: false,
            own: None,
            calls: 0,
        }
    }

    /// The breaker for a call's future: this service's own count once it has one.
    #[inline]
    fn held(&mut self) -> Arc<OwnCount> {
        match &self.own {
            Some(own) => Arc::clone(own),
            None => self.held_shared(),
        }
    }

    /// [`held`](Self::held) before the service has its own count (out of line: a
    /// service called more than a few times makes one).
    #[cold]
    #[inline(never)]
    fn held_shared(&mut self) -> Arc<OwnCount> {
        self.calls += 1;
        if self.calls < OWN_AFTER {
            return Arc::clone(&self.shared);
        }
        let own = Arc::new(OwnCount(Arc::clone(&self.shared.0)));
        self.own = Some(Arc::clone(&own));
        own
    }

    /// The handle of this service's breaker.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(Arc::clone(&self.shared.0))
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: From<CircuitOpen>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.shared.refuses(Instant::now) {
            // `call` will refuse: reserve nothing below and wait for nothing.
            self.refusing = true;
            return Poll::Ready(Ok(()));
        }
        self.refusing = false;
        self.inner.poll_ready(cx)
    }

    // Always inline: in a stack, the layer above then builds this future in place; left
    // to the inliner, the inner future was built aside and copied in (a `memcpy` per call,
    // 3% of the recommended stack's time in a profile).
    #[inline(always)]
    fn call(&mut self, req: Req) -> Self::Future {
        if self.refusing {
            self.refusing = false;
            return refused_at_readiness(&self.shared);
        }
        match self.shared.acquire(Instant::now) {
            Ok(permit) => {
                let start = self.shared.needs_start().then(Instant::now);
                let recorder = Recorder::new(self.held(), permit, start);
                ResponseFuture::admitted(self.inner.call(req), recorder, self.classifier.clone())
            }
            Err(retry_after) => rejected(&self.shared, retry_after),
        }
    }
}

/// The rejection of a call, out of line (the open path is the cold one).
#[cold]
#[inline(never)]
fn rejected<F, C>(
    breaker: &Breaker,
    retry_after: Option<std::time::Duration>,
) -> ResponseFuture<F, C> {
    let name = breaker.emitter().name().clone();
    ResponseFuture::rejected(CircuitOpen::new(name, retry_after))
}

/// `call` after a `poll_ready` that found the breaker open: refused as an open breaker
/// refuses (its hint, event and metric), or, if the breaker has admitted calls since, with
/// a hint of zero (the inner service was not driven ready, so this call cannot go).
#[cold]
#[inline(never)]
fn refused_at_readiness<F, C>(breaker: &Breaker) -> ResponseFuture<F, C> {
    match breaker.acquire(Instant::now) {
        Err(retry_after) => rejected(breaker, retry_after),
        Ok(permit) => {
            breaker.cancel(permit);
            rejected(breaker, Some(std::time::Duration::ZERO))
        }
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    /// A clone shares the breaker but not readiness: it must be polled ready itself.
    fn clone(&self) -> Self {
        Self::from_parts(
            self.inner.clone(),
            Arc::clone(&self.shared),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.shared.emitter().name())
            .field("state", &self.shared.state())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CircuitBreakerLayer;
    use palisade_core::BoxError;
    use tower::{Layer, ServiceExt, service_fn};

    #[tokio::test(start_paused = true)]
    async fn a_service_called_often_holds_its_own_count_and_a_clone_starts_without() {
        let layer = CircuitBreakerLayer::builder().build().unwrap();
        let mut svc = layer.layer(service_fn(|x: u64| async move { Ok::<_, BoxError>(x) }));
        for x in 0..u64::from(OWN_AFTER) - 1 {
            assert_eq!(svc.ready().await.unwrap().call(x).await.unwrap(), x);
        }
        assert!(svc.own.is_none(), "not after fewer than OWN_AFTER calls");
        svc.ready().await.unwrap().call(7).await.unwrap();
        let own = svc.own.clone().expect("made at the OWN_AFTER-th call");
        // Its calls' futures hold it, not the breaker's shared count.
        let fut = svc.ready().await.unwrap().call(8);
        assert_eq!(
            Arc::strong_count(&own),
            3,
            "the service, this test, the future"
        );
        assert_eq!(fut.await.unwrap(), 8);
        assert_eq!(Arc::strong_count(&own), 2);
        let clone = svc.clone();
        assert!(
            clone.own.is_none(),
            "a clone makes its own when it is called often"
        );
        assert_eq!(clone.calls, 0);
    }
}
