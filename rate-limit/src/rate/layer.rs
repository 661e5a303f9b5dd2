//! The rate limit layer.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use palisade_core::metrics::Gauge;
use palisade_core::{Listeners, Name};
use tower_layer::{Layer, Stack};

use super::config::RateLimitConfig;
use super::handle::RateLimitHandle;
use super::limiter::{Common, Direct, Keyed, UnitCost};
use super::quota::FollowQuotaLayer;
use super::service::RateLimit;
use crate::event::LimitEvent;
use crate::metrics;

/// Applies a GCRA rate limit to every call of the wrapped service; all clones (and all the
/// services they wrap) share one limiter.
///
/// Build a direct limit with [`RateLimitLayer::new`] (from a [`RateLimitConfig`]) or
/// [`RateLimitLayer::builder`], make it per key with [`key_by`](RateLimitLayer::key_by),
/// and charge more than one cell per request with [`cost`](RateLimitLayer::cost).
pub struct RateLimitLayer<L = Direct, C = UnitCost> {
    common: Arc<Common>,
    limiter: L,
    cost: C,
}

impl RateLimitLayer {
    /// A direct limit (one quota shared by every call) with a validated `config`.
    pub fn new(config: RateLimitConfig) -> Self {
        Self::direct(config, Listeners::new())
    }

    /// A builder whose [`build`](super::RateLimitConfigBuilder::build) gives the layer: the
    /// shortcut for `RateLimitLayer::new(RateLimitConfig::builder(cells, period)…build()?)`.
    pub fn builder(cells: u32, period: std::time::Duration) -> super::RateLimitConfigBuilder<Self> {
        super::RateLimitConfigBuilder::new(cells, period)
    }

    /// One quota per key instead of one for all: `key_fn` extracts the key (tenant, user,
    /// API key, host) from each request, so a noisy key never uses another key's quota.
    /// The keys share this layer's name, listeners and run-time rate; see [`Keyed`] for
    /// memory use. Call it before taking a handle.
    pub fn key_by<Req, K, F>(self, key_fn: F) -> RateLimitLayer<Keyed<K, F>>
    where
        F: Fn(&Req) -> K,
        K: Hash + Eq + Clone,
    {
        let config = &self.common.config;
        let keys = Gauge::register(metrics::KEYS, &config.name, &[("kind", "rate")]);
        let limiter = Keyed::new(config, keys, key_fn);
        RateLimitLayer {
            common: self.common,
            limiter,
            cost: UnitCost,
        }
    }

    pub(crate) fn direct(config: RateLimitConfig, listeners: Listeners<LimitEvent>) -> Self {
        let limiter = Direct::new(&config);
        Self {
            common: Arc::new(Common::new(config, listeners)),
            limiter,
            cost: UnitCost,
        }
    }
}

impl<L, C> RateLimitLayer<L, C> {
    /// Call `listener` with every event of this layer (services and handles made before
    /// this call see the listener too).
    #[must_use]
    pub fn on_event(self, listener: impl Fn(&LimitEvent) + Send + Sync + 'static) -> Self {
        self.common.emitter.add_listener(listener);
        self
    }

    /// Charge each request `cost(&req)` cells instead of one (e.g. the rows of a batch).
    pub fn cost<C2>(self, cost: C2) -> RateLimitLayer<L, C2> {
        RateLimitLayer {
            common: self.common,
            limiter: self.limiter,
            cost,
        }
    }

    /// The limiter's state: for a keyed limit, [`Keyed::len`] and
    /// [`Keyed::retain_recent`].
    pub fn limiter(&self) -> &L {
        &self.limiter
    }

    /// The layer's name.
    pub fn name(&self) -> &Name {
        self.common.emitter.name()
    }

    /// The handle of this limit: read its rate, set it at run time, follow an upstream's
    /// quota, drain it (see [`RateLimitHandle`]).
    pub fn handle(&self) -> RateLimitHandle<L>
    where
        L: Clone,
    {
        RateLimitHandle::new(Arc::clone(&self.common), self.limiter.clone())
    }

    /// This limit with a [`FollowQuotaLayer`] inside it: each result's advertised quota,
    /// read by `hint` (a [`QuotaHint`](palisade_core::throttle::QuotaHint), e.g.
    /// `palisade_http::quota_hint`), sets the limit's rate (see
    /// [`RateLimitHandle::follow`]). Take the [`handle`](Self::handle) first if you need
    /// one.
    pub fn quota_hint<H>(self, hint: H) -> Stack<FollowQuotaLayer<H>, Self> {
        let follow = FollowQuotaLayer::new(Arc::clone(&self.common), hint);
        Stack::new(follow, self)
    }
}

impl<L: Clone, C: Clone> Clone for RateLimitLayer<L, C> {
    fn clone(&self) -> Self {
        Self {
            common: Arc::clone(&self.common),
            limiter: self.limiter.clone(),
            cost: self.cost.clone(),
        }
    }
}

impl<L: fmt::Debug, C> fmt::Debug for RateLimitLayer<L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("common", &self.common)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, L: Clone, C: Clone> Layer<S> for RateLimitLayer<L, C> {
    type Service = RateLimit<S, L, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::from_parts(
            inner,
            Arc::clone(&self.common),
            self.limiter.clone(),
            self.cost.clone(),
        )
    }
}
