//! The throttle layer and its service.

use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::throttle::{NoThrottleHint, ThrottleHint};
use palisade_core::{Listeners, RateLimited};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::config::{ThrottleConfig, ThrottleMode};
use super::future::ResponseFuture;
use super::handle::ThrottleHandle;
use super::state::{Admit, Gate, ThrottleEvent};

/// Closes for every caller when an upstream says "slow down"; see the
/// [module docs](crate::throttle). All clones share one gate.
///
/// Made with [`ThrottleLayer::new`]; the code-only hooks are methods: [`hint`](Self::hint)
/// (where to read the upstream's hint) and [`on_event`](Self::on_event).
#[derive(Clone)]
pub struct ThrottleLayer<H = NoThrottleHint> {
    gate: Arc<Gate>,
    hint: H,
}

impl<H> std::fmt::Debug for ThrottleLayer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThrottleLayer")
            .field("name", self.gate.name())
            .finish_non_exhaustive()
    }
}

impl ThrottleLayer {
    /// A throttle gate with `config` and no hint reader yet (it closes only through its
    /// handle until [`hint`](Self::hint) is set).
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            gate: Arc::new(Gate::new(config, Listeners::new())),
            hint: NoThrottleHint,
        }
    }
}

impl<H> ThrottleLayer<H> {
    /// Read the upstream's throttle hint from each result with `hint` (a closure
    /// `Fn(&Result<Res, E>) -> Option<Throttle>` or any [`ThrottleHint`]).
    pub fn hint<H2>(self, hint: H2) -> ThrottleLayer<H2> {
        ThrottleLayer {
            gate: self.gate,
            hint,
        }
    }

    /// The same as [`hint`](Self::hint), under the name every layer's throttle hook has
    /// (`CircuitBreakerLayer::throttle_hint` too).
    pub fn throttle_hint<H2>(self, hint: H2) -> ThrottleLayer<H2> {
        self.hint(hint)
    }

    /// Call `listener` with every event of this gate (the gate is shared: services and
    /// handles made before this call see the listener too).
    pub fn on_event(self, listener: impl Fn(&ThrottleEvent) + Send + Sync + 'static) -> Self {
        self.gate.add_listener(listener);
        self
    }

    /// The handle reading and controlling this gate.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle {
            gate: Arc::clone(&self.gate),
        }
    }
}

impl<S, H: Clone> Layer<S> for ThrottleLayer<H> {
    type Service = Throttled<S, H>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttled {
            inner,
            gate: Arc::clone(&self.gate),
            hint: self.hint.clone(),
        }
    }
}

/// The service of a [`ThrottleLayer`].
#[derive(Clone)]
pub struct Throttled<S, H = NoThrottleHint> {
    inner: S,
    gate: Arc<Gate>,
    hint: H,
}

impl<S: std::fmt::Debug, H> std::fmt::Debug for Throttled<S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttled")
            .field("name", self.gate.name())
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, H> Throttled<S, H> {
    /// The handle of this service's gate.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle {
            gate: Arc::clone(&self.gate),
        }
    }
}

impl<S, Req, H> Service<Req> for Throttled<S, H>
where
    S: Service<Req> + Clone,
    S::Error: From<RateLimited>,
    H: ThrottleHint<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, H>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.gate.admit() {
            Admit::Open => ResponseFuture::called(
                self.inner.call(req),
                Arc::clone(&self.gate),
                self.hint.clone(),
            ),
            Admit::Refuse(retry_after) => {
                let mode = self.gate.config().mode();
                let refused = || RateLimited::new(self.gate.name().clone(), retry_after);
                match mode {
                    ThrottleMode::Reject => ResponseFuture::rejected(
                        refused(),
                        Arc::clone(&self.gate),
                        self.hint.clone(),
                    ),
                    ThrottleMode::Wait { max_wait } => {
                        let now = Instant::now();
                        // the caller's deadline bounds the wait; `Duration::MAX` is "forever"
                        let (give_up, _) = crate::give_up_at(now, max_wait);
                        if palisade_core::time::add(now, retry_after) > give_up {
                            // it cannot be admitted in time: say so now, not after waiting
                            return ResponseFuture::rejected(
                                refused(),
                                Arc::clone(&self.gate),
                                self.hint.clone(),
                            );
                        }
                        // the readied service goes with the request (tower's contract)
                        let fresh = self.inner.clone();
                        let readied = std::mem::replace(&mut self.inner, fresh);
                        ResponseFuture::waiting(
                            readied,
                            req,
                            palisade_core::time::add(now, retry_after),
                            give_up,
                            Arc::clone(&self.gate),
                            self.hint.clone(),
                        )
                    }
                }
            }
        }
    }
}
