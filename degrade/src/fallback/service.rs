//! The fallback service.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use palisade_core::{AsRejection, Classify, RejectionAware};
use tower_service::Service;

use super::{FallbackConfig, FallbackSource, ResponseFuture, Shared};
use crate::{ByMark, Marker, Switch};

/// A service that answers from a fallback when the live call fails or is rejected, or
/// always while its switch is in degraded mode. Built by
/// [`FallbackLayer`](super::FallbackLayer).
///
/// Readiness is honest: an error from the inner service's `poll_ready` (a closed
/// connection, a `Buffer` whose worker is gone) is not passed to the caller, who could
/// only give up. `poll_ready` records it and reports ready; the next `call` treats it as
/// the live path's error: the fallback answers if it triggers, the error is returned if
/// not. The inner service is not called after a readiness error.
pub struct Fallback<S, F, C = RejectionAware, M = ByMark> {
    inner: S,
    shared: Arc<Shared<F>>,
    classifier: C,
    marker: M,
    // Whether `inner` is ready for a `call`: in degraded mode `poll_ready` does not wait for
    // the (possibly broken) inner service, so `call` must know whether it may use it.
    inner_ready: bool,
    // The inner service's readiness error (an `S::Error`), for the next `call`. Reached
    // only through `&mut self` (`get_mut`, never locked); the mutex only makes the service
    // `Sync` whatever the error type.
    ready_error: Mutex<Option<Box<dyn Any + Send>>>,
}

impl<S, F, C> Fallback<S, F, C> {
    /// Wrap `inner`, answering from `source` on what `config` triggers on.
    pub fn new(inner: S, config: FallbackConfig, source: F, classifier: C) -> Self {
        Self::from_shared(
            inner,
            Arc::new(Shared::new(config, source)),
            classifier,
            ByMark,
        )
    }
}

impl<S, F, C, M> Fallback<S, F, C, M> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<F>>, classifier: C, marker: M) -> Self {
        Self {
            inner,
            shared,
            classifier,
            marker,
            inner_ready: false,
            ready_error: Mutex::new(None),
        }
    }

    fn ready_slot(&mut self) -> &mut Option<Box<dyn Any + Send>> {
        self.ready_error
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The degrade switch.
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

impl<S, F, C, M, Req> Service<Req> for Fallback<S, F, C, M>
where
    S: Service<Req>,
    S::Error: AsRejection + Send + 'static,
    F: FallbackSource<Req, S::Response, S::Error>,
    C: Classify<S::Response, S::Error> + Clone,
    M: Marker<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, F, C, Req, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.shared.switch.is_degraded() {
            // The fallback answers without the inner service: do not wait for it.
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => {
                self.inner_ready = false;
                Poll::Pending
            }
            Poll::Ready(Ok(())) => {
                self.inner_ready = true;
                // Ready again after an error that no call consumed: the live path is back.
                self.ready_slot().take();
                Poll::Ready(Ok(()))
            }
            // Not the caller's to handle: the next call answers it (from the fallback).
            Poll::Ready(Err(e)) => {
                self.inner_ready = false;
                *self.ready_slot() = Some(Box::new(e));
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let marker = (self.classifier.clone(), self.marker.clone());
        if let Some(error) = self.ready_slot().take() {
            let error = *error
                .downcast::<S::Error>()
                .expect("only the inner service's readiness error is stored");
            let saved = shared.source.save(&req);
            return ResponseFuture::not_ready(shared, marker, error, saved);
        }
        if self.shared.switch.is_degraded() || !self.inner_ready {
            let saved = shared.source.save(&req);
            return ResponseFuture::manual(shared, marker, saved);
        }
        self.inner_ready = false;
        let saved = shared.source.save(&req);
        let fut = self.inner.call(req);
        ResponseFuture::live(shared, marker, fut, saved)
    }
}

impl<S: Clone, F, C: Clone, M: Clone> Clone for Fallback<S, F, C, M> {
    fn clone(&self) -> Self {
        // A clone of a ready service is not ready (nor failed).
        Self::from_shared(
            self.inner.clone(),
            Arc::clone(&self.shared),
            self.classifier.clone(),
            self.marker.clone(),
        )
    }
}

impl<S: fmt::Debug, F, C, M> fmt::Debug for Fallback<S, F, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .field("degraded", &self.shared.switch.is_degraded())
            .finish_non_exhaustive()
    }
}
