//! The hedge layer's configuration and its builder.

use std::fmt;
use std::time::Duration;

use palisade_core::config::{ensure, ensure_name};
use palisade_core::{ConfigError, Listeners, Name, RejectionAware};

use super::service::HedgeLayer;
use crate::budget::{BudgetConfig, RetryBudget};
use crate::event::HedgeEvent;
use crate::policy::Cloned;

/// When to send a hedged copy. Deserializing validates.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "kind",
        rename_all = "snake_case",
        deny_unknown_fields,
        try_from = "data::HedgeDelayData"
    )
)]
pub enum HedgeDelay {
    /// After a fixed delay (each further copy after the same delay again).
    Fixed {
        /// The delay.
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
        delay: Duration,
    },
    /// After the `percentile` of the latencies of the last `window` answered requests:
    /// requests slower than, say, 95% of recent ones get a copy. No hedging until
    /// `min_samples` latencies were seen.
    Percentile {
        /// 0.0 (exclusive) to 1.0, e.g. 0.95.
        percentile: f64,
        /// How many recent latencies to keep.
        window: usize,
        /// How many latencies to see before hedging at all.
        min_samples: usize,
    },
}

impl Default for HedgeDelay {
    /// p95 over the last 1000 requests, after 100: hedging the slowest 5% costs about 5%
    /// extra load and cuts the tail the most (Dean and Barroso, "The Tail at Scale").
    fn default() -> Self {
        HedgeDelay::Percentile {
            percentile: 0.95,
            window: 1000,
            min_samples: 100,
        }
    }
}

impl HedgeDelay {
    fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            HedgeDelay::Fixed { delay } => {
                ensure(!delay.is_zero(), "hedge", "delay", delay, "more than 0")
            }
            HedgeDelay::Percentile {
                percentile,
                window,
                min_samples,
            } => {
                let p_ok = percentile > 0.0 && percentile <= 1.0;
                ensure(
                    p_ok,
                    "hedge",
                    "percentile",
                    percentile,
                    "above 0.0, at most 1.0",
                )?;
                let w_ok = (10..=100_000).contains(&window);
                ensure(w_ok, "hedge", "window", window, "10 to 100000")?;
                let m_ok = (1..=window).contains(&min_samples);
                ensure(m_ok, "hedge", "min_samples", min_samples, "1 to window")
            }
        }
    }
}

/// One hedged copy at most: it already cuts most of the tail; each further copy adds load
/// for less gain.
pub const DEFAULT_MAX_HEDGES: u32 = 1;

/// The default hedge budget: 10% extra load over 10 s, floor 5 per second. Hedging p95
/// needs about 5%; the rest absorbs bursts.
fn default_budget() -> BudgetConfig {
    BudgetConfig::Tps {
        ttl: Duration::from_secs(10),
        min_per_sec: 5,
        ratio: 0.1,
    }
}

/// Every request may be hedged: the default predicate. Put a hedge layer only over
/// idempotent requests, or pass a predicate with [`HedgeLayer::hedgeable`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllRequests;

/// Decides whether a request may be hedged (sent twice): only idempotent ones.
pub trait Hedgeable<Req> {
    /// `true` if `req` may be sent more than once.
    fn is_hedgeable(&self, req: &Req) -> bool;
}

impl<Req> Hedgeable<Req> for AllRequests {
    #[inline]
    fn is_hedgeable(&self, _: &Req) -> bool {
        true
    }
}

impl<Req, F: Fn(&Req) -> bool> Hedgeable<Req> for F {
    fn is_hedgeable(&self, req: &Req) -> bool {
        self(req)
    }
}

/// A validated hedge config, plain data: build one with [`HedgeConfig::builder`] (or load
/// one with `serde`), hand it to [`HedgeLayer::new`](crate::hedge::HedgeLayer::new), and
/// attach the code-only hooks there (`.hedgeable(..)`, `.classifier(..)`,
/// `.clone_request(..)`, `.share_budget(..)`, `.on_event(..)`).
#[derive(Debug, Clone, PartialEq)]
pub struct HedgeConfig {
    pub(crate) name: Name,
    pub(crate) delay: HedgeDelay,
    pub(crate) max_hedges: u32,
    pub(crate) budget: BudgetConfig,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            name: Name::default(),
            delay: HedgeDelay::default(),
            max_hedges: DEFAULT_MAX_HEDGES,
            budget: default_budget(),
        }
    }
}

impl HedgeConfig {
    /// A builder with the documented defaults; [`build`](HedgeConfigBuilder::build) gives the
    /// validated config (see [`HedgeLayer::builder`] for the shortcut to a layer).
    pub fn builder() -> HedgeConfigBuilder {
        HedgeConfigBuilder {
            config: HedgeConfig::default(),
        }
    }

    /// A builder starting from this config, to change a field and build again.
    pub fn to_builder(&self) -> HedgeConfigBuilder {
        HedgeConfigBuilder {
            config: self.clone(),
        }
    }

    /// The layer's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// When copies are sent.
    pub fn delay(&self) -> HedgeDelay {
        self.delay
    }

    /// The most extra copies per request.
    pub fn max_hedges(&self) -> u32 {
        self.max_hedges
    }

    /// The budget of the layer's own.
    pub fn budget(&self) -> &BudgetConfig {
        &self.budget
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        ensure_name("hedge", &self.name)?;
        self.delay.validate()?;
        let hedges_ok = (1..=10).contains(&self.max_hedges);
        ensure(hedges_ok, "hedge", "max_hedges", self.max_hedges, "1 to 10")?;
        self.budget.build().map(drop)
    }
}

/// Builds a [`HedgeConfig`]; [`HedgeLayer::builder`] gives a [`HedgeLayerBuilder`] with the
/// same setters plus the layer's hooks.
#[derive(Debug, Clone)]
#[must_use]
pub struct HedgeConfigBuilder {
    config: HedgeConfig,
}

macro_rules! hedge_setters {
    ($($field:ident).+) => {
        /// The layer's name (default `"default"`).
        pub fn name(mut self, name: impl Into<Name>) -> Self {
            self.$($field).+.name = name.into();
            self
        }

        /// Hedge after a fixed delay (more than 0). A delay of `Duration::MAX` (anything
        /// from about 30 years up) never hedges.
        pub fn delay(mut self, delay: Duration) -> Self {
            self.$($field).+.delay = HedgeDelay::Fixed { delay };
            self
        }

        /// Hedge after a latency percentile ([`HedgeDelay::Percentile`]; default: p95 of
        /// the last 1000, after 100 samples).
        pub fn hedge_delay(mut self, delay: HedgeDelay) -> Self {
            self.$($field).+.delay = delay;
            self
        }

        /// The most extra copies per request: 1 to 10, default [`DEFAULT_MAX_HEDGES`] (1).
        pub fn max_hedges(mut self, max_hedges: u32) -> Self {
            self.$($field).+.max_hedges = max_hedges;
            self
        }

        /// A budget of this layer's own (default: 10% over 10 s, floor 5 per second).
        pub fn budget_config(mut self, budget: BudgetConfig) -> Self {
            self.$($field).+.budget = budget;
            self
        }

        /// Hedge without a budget (every slow hedgeable request gets its copies).
        pub fn no_budget(self) -> Self {
            self.budget_config(BudgetConfig::None)
        }
    };
}

impl HedgeConfigBuilder {
    hedge_setters!(config);

    /// Validate and give the config.
    pub fn build(self) -> Result<HedgeConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

/// The code-only parts of a hedge layer.
#[derive(Clone)]
pub(crate) struct HedgeHooks<P, C, K> {
    pub(crate) hedgeable: P,
    pub(crate) classify: C,
    pub(crate) clone_request: K,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) listeners: Listeners<HedgeEvent>,
}

impl HedgeHooks<AllRequests, RejectionAware, Cloned> {
    pub(crate) fn new() -> Self {
        Self {
            hedgeable: AllRequests,
            classify: RejectionAware,
            clone_request: Cloned,
            budget: None,
            listeners: Listeners::new(),
        }
    }
}

/// Builds a [`HedgeLayer`] in one chain (from [`HedgeLayer::builder`]): the data setters of
/// [`HedgeConfigBuilder`] and the layer's hooks (the same methods as on the layer).
#[must_use]
pub struct HedgeLayerBuilder<P = AllRequests, C = RejectionAware, K = Cloned> {
    config: HedgeConfig,
    hooks: HedgeHooks<P, C, K>,
}

impl HedgeLayerBuilder {
    pub(crate) fn new() -> Self {
        Self {
            config: HedgeConfig::default(),
            hooks: HedgeHooks::new(),
        }
    }
}

impl<P, C, K> HedgeLayerBuilder<P, C, K> {
    hedge_setters!(config);

    /// Which requests may be hedged (see [`HedgeLayer::hedgeable`]).
    pub fn hedgeable<P2>(self, hedgeable: P2) -> HedgeLayerBuilder<P2, C, K> {
        let h = self.hooks;
        HedgeLayerBuilder {
            config: self.config,
            hooks: HedgeHooks {
                hedgeable,
                classify: h.classify,
                clone_request: h.clone_request,
                budget: h.budget,
                listeners: h.listeners,
            },
        }
    }

    /// How answers count for the budget (see [`HedgeLayer::classifier`]).
    pub fn classifier<C2>(self, classifier: C2) -> HedgeLayerBuilder<P, C2, K> {
        let h = self.hooks;
        HedgeLayerBuilder {
            config: self.config,
            hooks: HedgeHooks {
                hedgeable: h.hedgeable,
                classify: classifier,
                clone_request: h.clone_request,
                budget: h.budget,
                listeners: h.listeners,
            },
        }
    }

    /// How copies are made (see [`HedgeLayer::clone_request`]).
    pub fn clone_request<K2>(self, clone_request: K2) -> HedgeLayerBuilder<P, C, K2> {
        let h = self.hooks;
        HedgeLayerBuilder {
            config: self.config,
            hooks: HedgeHooks {
                hedgeable: h.hedgeable,
                classify: h.classify,
                clone_request,
                budget: h.budget,
                listeners: h.listeners,
            },
        }
    }

    /// Share a budget handle (see [`HedgeLayer::share_budget`]).
    pub fn share_budget(mut self, budget: RetryBudget) -> Self {
        self.hooks.budget = Some(budget);
        self
    }

    /// Register a listener (see [`HedgeLayer::on_event`]).
    pub fn on_event(mut self, listener: impl Fn(&HedgeEvent) + Send + Sync + 'static) -> Self {
        self.hooks.listeners.push(listener);
        self
    }

    /// Validate and build the layer.
    pub fn build(self) -> Result<HedgeLayer<P, C, K>, ConfigError> {
        self.config.validate()?;
        Ok(HedgeLayer::from_parts(self.config, self.hooks))
    }
}

impl<P, C, K> fmt::Debug for HedgeLayerBuilder<P, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What one service runs with: the config's numbers and the hooks.
pub(crate) struct HedgeSettings<P, C, K> {
    pub(crate) name: Name,
    pub(crate) delay: HedgeDelay,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) hedgeable: P,
    pub(crate) classify: C,
    pub(crate) clone_request: K,
}

// ===== serde =====

#[cfg(feature = "serde")]
mod data {
    use super::*;

    /// [`HedgeDelay`] as read, before validation.
    #[derive(serde::Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
    pub(crate) enum HedgeDelayData {
        Fixed {
            #[serde(with = "palisade_core::config::duration")]
            delay: Duration,
        },
        Percentile {
            percentile: f64,
            window: usize,
            min_samples: usize,
        },
    }

    impl TryFrom<HedgeDelayData> for HedgeDelay {
        type Error = ConfigError;

        fn try_from(data: HedgeDelayData) -> Result<Self, ConfigError> {
            let delay = match data {
                HedgeDelayData::Fixed { delay } => HedgeDelay::Fixed { delay },
                HedgeDelayData::Percentile {
                    percentile,
                    window,
                    min_samples,
                } => HedgeDelay::Percentile {
                    percentile,
                    window,
                    min_samples,
                },
            };
            delay.validate()?;
            Ok(delay)
        }
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct HedgeConfigData {
        #[serde(default)]
        name: Name,
        #[serde(default)]
        delay: HedgeDelay,
        #[serde(default = "max_hedges")]
        max_hedges: u32,
        #[serde(default = "default_budget")]
        budget: BudgetConfig,
    }

    fn max_hedges() -> u32 {
        DEFAULT_MAX_HEDGES
    }

    impl HedgeConfigData {
        pub(super) fn build(self) -> Result<HedgeConfig, ConfigError> {
            HedgeConfig::builder()
                .name(self.name)
                .hedge_delay(self.delay)
                .max_hedges(self.max_hedges)
                .budget_config(self.budget)
                .build()
        }
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for HedgeConfig {
    /// Loads and validates a config; absent fields take the builder's defaults. The
    /// predicate, classifier and copier are code: set them on the builder.
    ///
    /// ```
    /// use palisade_retry::hedge::{HedgeConfig, HedgeDelay};
    /// use std::time::Duration;
    ///
    /// let config: HedgeConfig = serde_json::from_str(r#"{
    ///     "name": "search",
    ///     "delay": { "kind": "fixed", "delay": "40ms" },
    ///     "max_hedges": 2
    /// }"#).unwrap();
    /// assert_eq!(config.delay(), HedgeDelay::Fixed { delay: Duration::from_millis(40) });
    /// assert!(serde_json::from_str::<HedgeConfig>(r#"{ "max_hedges": 0 }"#).is_err());
    /// assert!(serde_json::from_str::<HedgeConfig>(r#"{ "name": "" }"#).is_err());
    /// ```
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let data = data::HedgeConfigData::deserialize(d)?;
        data.build().map_err(serde::de::Error::custom)
    }
}

/// Writes the config's data (the code-only hooks are not data); reading it back gives the
/// same config.
///
/// ```
/// use palisade_retry::hedge::HedgeConfig;
/// use std::time::Duration;
///
/// let config = HedgeConfig::builder().name("search").delay(Duration::from_micros(500)).build().unwrap();
/// let json = serde_json::to_string(&config).unwrap();
/// assert!(json.contains(r#""delay":"500us""#));
/// let back: HedgeConfig = serde_json::from_str(&json).unwrap();
/// assert_eq!(back.delay(), config.delay());
/// ```
#[cfg(feature = "serde")]
impl serde::Serialize for HedgeConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("HedgeConfig", 4)?;
        out.serialize_field("name", &self.name)?;
        out.serialize_field("delay", &self.delay)?;
        out.serialize_field("max_hedges", &self.max_hedges)?;
        out.serialize_field("budget", &self.budget)?;
        out.end()
    }
}
