//! The fallback service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::metrics::Counter;
use palisade_core::{AsRejection, Classify, DefaultClassifier, Emitter, Name};
use tower_service::Service;

use super::{FallbackConfig, FallbackSource, ResponseFuture};
use crate::metrics::{ByTrigger, mode_gauge};
use crate::{DegradeEvent, Mark, Switch, Triggers};

/// State shared by a layer and all its services.
pub(crate) struct Shared<F, C> {
    pub(crate) name: Name,
    pub(crate) triggers: Triggers,
    pub(crate) source: F,
    pub(crate) classifier: C,
    pub(crate) emitter: Emitter<DegradeEvent>,
    pub(crate) served: ByTrigger,
    pub(crate) failed: Counter,
    pub(crate) switch: Switch,
}

impl<F, C> Shared<F, C> {
    pub(crate) fn new(config: FallbackConfig, source: F, classifier: C) -> Self {
        let FallbackConfig {
            name,
            triggers,
            listeners,
            switch,
        } = config;
        let emitter = Emitter::new(name.clone(), listeners);
        switch.watch(emitter.clone(), mode_gauge(&name));
        Self {
            served: ByTrigger::register("palisade_degrade_fallback_total", &name),
            failed: Counter::register("palisade_degrade_fallback_failed_total", &name, &[]),
            name,
            triggers,
            source,
            classifier,
            emitter,
            switch,
        }
    }
}

/// A service that answers from a fallback when the live call fails or is rejected, or
/// always while its switch is in degraded mode. Built by
/// [`FallbackLayer`](super::FallbackLayer).
pub struct Fallback<S, F, C = DefaultClassifier> {
    inner: S,
    shared: Arc<Shared<F, C>>,
    // Whether `inner` is ready for a `call`: in degraded mode `poll_ready` does not wait for
    // the (possibly broken) inner service, so `call` must know whether it may use it.
    inner_ready: bool,
}

impl<S, F, C> Fallback<S, F, C> {
    /// Wrap `inner`, answering from `source` on what `config` triggers on.
    pub fn new(inner: S, config: FallbackConfig, source: F, classifier: C) -> Self {
        Self::from_shared(inner, Arc::new(Shared::new(config, source, classifier)))
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<F, C>>) -> Self {
        Self {
            inner,
            shared,
            inner_ready: false,
        }
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

impl<S, F, C, Req> Service<Req> for Fallback<S, F, C>
where
    S: Service<Req>,
    S::Response: Mark,
    S::Error: AsRejection,
    F: FallbackSource<Req, S::Response, S::Error>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, F, C, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.shared.switch.is_degraded() {
            // The fallback answers without the inner service: do not wait for it.
            return Poll::Ready(Ok(()));
        }
        let ready = self.inner.poll_ready(cx);
        self.inner_ready = matches!(ready, Poll::Ready(Ok(())));
        ready
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        if self.shared.switch.is_degraded() || !self.inner_ready {
            let saved = shared.source.save(&req);
            return ResponseFuture::manual(shared, saved);
        }
        self.inner_ready = false;
        let saved = shared.source.save(&req);
        let fut = self.inner.call(req);
        ResponseFuture::live(shared, fut, saved)
    }
}

impl<S: Clone, F, C> Clone for Fallback<S, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            // A clone of a ready service is not ready.
            inner_ready: false,
        }
    }
}

impl<S: fmt::Debug, F, C> fmt::Debug for Fallback<S, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .field("degraded", &self.shared.switch.is_degraded())
            .finish_non_exhaustive()
    }
}
