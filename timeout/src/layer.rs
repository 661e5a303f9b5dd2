//! The timeout layer.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::metrics::{Counter, Histogram};
use palisade_core::{Emitter, Listeners, Name, time};
use tower_layer::Layer;

use crate::config::{TimeoutConfig, TimeoutConfigBuilder};
use crate::event::TimeoutEvent;
use crate::handle::TimeoutHandle;
use crate::service::Timeout;

/// Applies a timeout to every call of the wrapped service.
///
/// All clones of a layer, and all services it builds, share one state: the name, the
/// listeners, the metric handles and the timeout the [`TimeoutHandle`] can change at run
/// time.
///
/// ```
/// use palisade_timeout::TimeoutLayer;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, service_fn};
///
/// let svc = ServiceBuilder::new()
///     .layer(TimeoutLayer::builder().timeout(Duration::from_secs(2)).build().expect("a valid timeout"))
///     .service(service_fn(|x: u32| async move { Ok::<_, palisade_core::BoxError>(x) }));
/// # let _ = svc;
/// ```
pub struct TimeoutLayer<T = Fixed> {
    policy: T,
    shared: Arc<Shared>,
}

/// The timeout policy of a layer built with a fixed duration: every request gets the
/// configured timeout (which [`TimeoutHandle::set_timeout`] can change at run time).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fixed;

/// The timeout policy of a layer built with
/// [`TimeoutLayer::per_request`](crate::TimeoutLayer::per_request): a closure picks each
/// request's timeout.
pub struct PerRequest<F>(pub(crate) Arc<F>);

impl<F> Clone for PerRequest<F> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<F> fmt::Debug for PerRequest<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PerRequest(..)")
    }
}

/// Chooses the timeout of one request. Implemented by [`Fixed`] and [`PerRequest`];
/// implement it to derive timeouts from your own request type.
pub trait RequestTimeout<Req> {
    /// The timeout for `req`, given the layer's configured timeout; `None` for no timeout
    /// of this layer's own (an outer deadline still holds).
    fn timeout_for(&self, req: &Req, configured: Duration) -> Option<Duration>;
}

impl<Req> RequestTimeout<Req> for Fixed {
    #[inline]
    fn timeout_for(&self, _req: &Req, configured: Duration) -> Option<Duration> {
        Some(configured)
    }
}

impl<Req, F> RequestTimeout<Req> for PerRequest<F>
where
    F: Fn(&Req) -> Option<Duration>,
{
    #[inline]
    fn timeout_for(&self, req: &Req, _configured: Duration) -> Option<Duration> {
        (self.0)(req)
    }
}

/// The state shared by every clone of one layer.
pub(crate) struct Shared {
    pub(crate) emitter: Emitter<TimeoutEvent>,
    pub(crate) timeout_nanos: AtomicU64,
    pub(crate) completed: Counter,
    pub(crate) elapsed: Counter,
    pub(crate) duration: Histogram,
}

impl Shared {
    #[inline]
    pub(crate) fn timeout(&self) -> Duration {
        time::from_nanos(self.timeout_nanos.load(Ordering::Relaxed))
    }

    pub(crate) fn name(&self) -> &Name {
        self.emitter.name()
    }

    /// Whether anyone wants a call's duration (listeners, tracing or a histogram).
    #[inline]
    pub(crate) fn observing(&self) -> bool {
        self.duration.is_enabled() || self.emitter.is_active()
    }

    /// Whether anyone wants to hear of a call at all: its duration, or the completed and
    /// elapsed counts (a metrics recorder). With the `metrics` feature compiled in and no
    /// recorder installed, this is as cheap as without the feature.
    #[inline]
    pub(crate) fn observed(&self) -> bool {
        self.completed.is_enabled() || self.elapsed.is_enabled() || self.observing()
    }
}

// ===== impl TimeoutLayer =====

impl TimeoutLayer {
    /// The layer of a validated `config`, with a fixed timeout and no listeners yet.
    pub fn new(config: TimeoutConfig) -> Self {
        Self::from_parts(config, Listeners::new(), Fixed)
    }

    /// A builder whose [`build`](crate::TimeoutConfigBuilder::build) gives the layer: the
    /// shortcut for `TimeoutLayer::new(TimeoutConfig::builder()…build()?)`.
    pub fn builder() -> TimeoutConfigBuilder<TimeoutLayer> {
        TimeoutConfigBuilder::new()
    }

    /// Choose the timeout per request with `timeout_for` (`None`: no timeout of this
    /// layer's own for that request; an outer deadline still holds). The configured timeout
    /// stays the one the handle reports and updates, for closures that want a default to
    /// fall back on. Services and handles share the layer's state as before.
    pub fn per_request<Req, F>(self, timeout_for: F) -> TimeoutLayer<PerRequest<F>>
    where
        F: Fn(&Req) -> Option<Duration>,
    {
        TimeoutLayer {
            policy: PerRequest(Arc::new(timeout_for)),
            shared: self.shared,
        }
    }
}

impl<T> TimeoutLayer<T> {
    pub(crate) fn from_parts(
        config: TimeoutConfig,
        listeners: Listeners<TimeoutEvent>,
        policy: T,
    ) -> Self {
        let TimeoutConfig { name, timeout } = config;
        let shared = Shared {
            completed: Counter::register(
                "palisade_timeout_calls_total",
                &name,
                &[("outcome", "completed")],
            ),
            elapsed: Counter::register(
                "palisade_timeout_calls_total",
                &name,
                &[("outcome", "elapsed")],
            ),
            duration: Histogram::register("palisade_timeout_call_duration_seconds", &name, &[]),
            timeout_nanos: AtomicU64::new(time::nanos(timeout)),
            emitter: Emitter::new(name, listeners),
        };
        Self {
            policy,
            shared: Arc::new(shared),
        }
    }

    /// Call `listener` with every event of this layer (the state is shared: services and
    /// handles made before this call see the listener too).
    #[must_use]
    pub fn on_event(self, listener: impl Fn(&TimeoutEvent) + Send + Sync + 'static) -> Self {
        self.shared.emitter.add_listener(listener);
        self
    }

    /// A handle to read and change this layer's timeout at run time.
    pub fn handle(&self) -> TimeoutHandle {
        TimeoutHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, T: Clone> Layer<S> for TimeoutLayer<T> {
    type Service = Timeout<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::from_parts(inner, self.policy.clone(), Arc::clone(&self.shared))
    }
}

impl<T: Clone> Clone for TimeoutLayer<T> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for TimeoutLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutLayer")
            .field("name", self.shared.name())
            .field("timeout", &self.shared.timeout())
            .finish()
    }
}
