//! The layer.

use std::fmt;
use std::sync::Arc;

use palisade_core::RejectionAware;
use tokio::time::Instant;
use tower_layer::Layer;

use crate::event::Metrics;
use crate::future::OwnCount;
use crate::hint::HintedClassifier;
use crate::state::Breaker;
use crate::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerConfigBuilder, CircuitBreakerEvent,
    CircuitBreakerHandle, KeyedCircuitBreakerLayer,
};

/// Applies a circuit breaker to a service. The layer owns one breaker: every service it
/// wraps, and every clone of it, shares that breaker (wrap two backends with two layers).
///
/// The classifier decides which results count as failures; by default
/// [`RejectionAware`]: the backend's errors and a timeout's `Elapsed` are failures, the
/// local rejections of inner layers (`RateLimited`, `Overloaded`, `CircuitOpen`) are
/// ignored, so a caller's own limit never opens its breaker.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = RejectionAware> {
    /// The breaker, behind the reference count its services' calls share (see
    /// [`CircuitBreaker`]).
    breaker: Arc<OwnCount>,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A layer with a new, closed breaker running the validated `config`.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        let metrics = Metrics::register(config.name(), true);
        Self {
            breaker: Arc::new(OwnCount(Arc::new(Breaker::new(
                config,
                Instant::now(),
                metrics,
            )))),
            classifier: RejectionAware,
        }
    }

    /// A builder whose [`build`](crate::CircuitBreakerConfigBuilder::build) gives the layer:
    /// the shortcut for `CircuitBreakerLayer::new(CircuitBreakerConfig::builder()…build()?)`.
    pub fn builder() -> CircuitBreakerConfigBuilder<CircuitBreakerLayer> {
        CircuitBreakerConfigBuilder::new()
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Judge results with `classifier` (a `palisade_core::Classify`, e.g. a closure
    /// `|res: &Result<Res, E>| -> Outcome`). It is cloned per call: keep it cheap (a
    /// closure without captures, or an `Arc` inside).
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// Call `listener` with every event of this breaker (state transitions, rejected calls,
    /// recorded calls). The breaker is shared: services and handles made before this call
    /// see the listener too. Listeners run on the calling thread, outside any lock.
    #[must_use]
    pub fn on_event(self, listener: impl Fn(&CircuitBreakerEvent) + Send + Sync + 'static) -> Self {
        self.breaker.add_listener(listener);
        self
    }

    /// One breaker per key instead of one for all: `key_fn` picks the key of each request
    /// (a tenant, a host, a shard), every key gets its own breaker with this layer's config,
    /// listeners and classifier, under the default [`KeyedLimits`](crate::KeyedLimits)
    /// (see [`KeyedCircuitBreakerLayer::with_limits`] for others). Call it before taking a
    /// handle: the keyed layer has its own ([`KeyedCircuitBreakerHandle`](crate::KeyedCircuitBreakerHandle)).
    pub fn key_by<Req, K, F>(self, key_fn: F) -> KeyedCircuitBreakerLayer<F, K, C>
    where
        F: Fn(&Req) -> K,
        K: std::hash::Hash + Eq + Clone + fmt::Debug,
    {
        KeyedCircuitBreakerLayer::new(self.breaker.config(), key_fn).classifier(self.classifier)
    }

    /// Open the breaker when an upstream says "slow down": a result in which `hint` (a
    /// [`ThrottleHint`](palisade_core::throttle::ThrottleHint), e.g.
    /// `palisade_http::throttle_hint` or a closure returning `Option<Throttle>`) finds a
    /// hint opens the breaker until the hinted instant (as
    /// [`CircuitBreakerHandle::open_until`]) **without** recording a failure in the window:
    /// the result counts as [`Outcome::Ignore`](palisade_core::Outcome). The transition's
    /// event says why ([`TransitionReason::UpstreamThrottle`](crate::TransitionReason)).
    /// A hint never shortens an open period, and in metrics-only mode the breaker stays in
    /// shadow. Results without a hint go to the classifier set before (call
    /// [`classifier`](Self::classifier) first: it replaces this wrapper).
    ///
    /// ```
    /// use palisade_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, State};
    /// use palisade_core::throttle::Throttle;
    /// use palisade_core::BoxError;
    /// use std::time::Duration;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default())
    ///     .throttle_hint(|res: &Result<u16, BoxError>| match res {
    ///         Ok(429) => Some(Throttle::For(Duration::from_secs(30))),
    ///         _ => None,
    ///     });
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(429u16) }));
    /// assert_eq!(svc.oneshot(()).await.unwrap(), 429);
    /// assert_eq!(handle.state(), State::Open);
    /// assert_eq!(handle.retry_after(), Some(Duration::from_secs(30)));
    /// assert_eq!(handle.snapshot().failures, 0, "a hint is not a failure");
    /// # }
    /// ```
    pub fn throttle_hint<H>(self, hint: H) -> CircuitBreakerLayer<HintedClassifier<C, H>> {
        let classifier = HintedClassifier::new(self.classifier, hint, Arc::clone(&self.breaker.0));
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// The handle of this layer's breaker.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(Arc::clone(&self.breaker.0))
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::from_parts(inner, Arc::clone(&self.breaker), self.classifier.clone())
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker.emitter().name())
            .field("state", &self.breaker.state())
            .finish_non_exhaustive()
    }
}
