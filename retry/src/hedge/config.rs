//! The hedge layer's configuration and its builder.

use std::fmt;
use std::time::Duration;

use palisade_core::config::{ensure, ensure_name};
use palisade_core::{ConfigError, Listeners, Name, RejectionAware};

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
/// idempotent requests, or pass a predicate with [`HedgeConfigBuilder::hedgeable`].
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

/// A validated hedge config, for [`HedgeLayer::new`](super::HedgeLayer::new).
///
/// Type parameters: the predicate `P` ([`Hedgeable`]), the classifier `C` of answers (only a
/// `Success` wins while another copy is in flight; a token-bucket budget counts the outcomes)
/// and the copier `K`. The default classifier is palisade-core's [`RejectionAware`], which
/// needs an error type that is [`AsRejection`](palisade_core::AsRejection) (`BoxError`,
/// `palisade_core::Error<E>`); for another error type pass
/// `palisade_core::DefaultClassifier` to [`HedgeConfigBuilder::classify`].
#[derive(Clone)]
pub struct HedgeConfig<P = AllRequests, C = RejectionAware, K = Cloned> {
    pub(crate) name: Name,
    pub(crate) delay: HedgeDelay,
    pub(crate) max_hedges: u32,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) hedgeable: P,
    pub(crate) classify: C,
    pub(crate) clone_request: K,
    pub(crate) listeners: Listeners<HedgeEvent>,
}

impl HedgeConfig {
    /// A builder with the documented defaults.
    pub fn builder() -> HedgeConfigBuilder {
        HedgeConfigBuilder::default()
    }
}

impl<P, C, K> HedgeConfig<P, C, K> {
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

    /// The hedge budget, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }
}

impl<P, C, K> fmt::Debug for HedgeConfig<P, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeConfig")
            .field("name", &self.name)
            .field("delay", &self.delay)
            .field("max_hedges", &self.max_hedges)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum BudgetChoice {
    Config(BudgetConfig),
    Shared(RetryBudget),
}

/// Builds a [`HedgeConfig`].
#[derive(Clone)]
pub struct HedgeConfigBuilder<P = AllRequests, C = RejectionAware, K = Cloned> {
    name: Name,
    delay: HedgeDelay,
    max_hedges: u32,
    budget: BudgetChoice,
    hedgeable: P,
    classify: C,
    clone_request: K,
    listeners: Listeners<HedgeEvent>,
}

impl Default for HedgeConfigBuilder {
    fn default() -> Self {
        Self {
            name: Name::default(),
            delay: HedgeDelay::default(),
            max_hedges: DEFAULT_MAX_HEDGES,
            budget: BudgetChoice::Config(default_budget()),
            hedgeable: AllRequests,
            classify: RejectionAware,
            clone_request: Cloned,
            listeners: Listeners::new(),
        }
    }
}

impl<P, C, K> HedgeConfigBuilder<P, C, K> {
    /// The layer's name (default `"default"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.name = name.into();
        self
    }

    /// Hedge after a fixed delay (more than 0). A delay of `Duration::MAX` (anything from
    /// about 30 years up) never hedges.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = HedgeDelay::Fixed { delay };
        self
    }

    /// Hedge after a latency percentile ([`HedgeDelay::Percentile`]; default: p95 of the
    /// last 1000, after 100 samples).
    #[must_use]
    pub fn hedge_delay(mut self, delay: HedgeDelay) -> Self {
        self.delay = delay;
        self
    }

    /// The most extra copies per request: 1 to 10, default [`DEFAULT_MAX_HEDGES`] (1).
    #[must_use]
    pub fn max_hedges(mut self, max_hedges: u32) -> Self {
        self.max_hedges = max_hedges;
        self
    }

    /// Share a budget handle (e.g. with a retry layer, so retries and hedges together stay
    /// within one ratio).
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = BudgetChoice::Shared(budget);
        self
    }

    /// A budget of this layer's own (default: 10% over 10 s, floor 5 per second).
    #[must_use]
    pub fn budget_config(mut self, budget: BudgetConfig) -> Self {
        self.budget = BudgetChoice::Config(budget);
        self
    }

    /// Register a listener for the layer's events.
    #[must_use]
    pub fn on_event(mut self, listener: impl Fn(&HedgeEvent) + Send + Sync + 'static) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Which requests may be hedged: a [`Hedgeable`], e.g. `|req: &Request| req.is_get()`.
    #[must_use]
    pub fn hedgeable<P2>(self, hedgeable: P2) -> HedgeConfigBuilder<P2, C, K> {
        HedgeConfigBuilder {
            name: self.name,
            delay: self.delay,
            max_hedges: self.max_hedges,
            budget: self.budget,
            hedgeable,
            classify: self.classify,
            clone_request: self.clone_request,
            listeners: self.listeners,
        }
    }

    /// Each answer's outcome: only a `Success` wins while another copy is in flight, and a
    /// token-bucket budget counts the outcomes. Default palisade-core's [`RejectionAware`]
    /// (`Ok` is a success, a backend error a failure, a local rejection neither).
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> HedgeConfigBuilder<P, C2, K> {
        HedgeConfigBuilder {
            name: self.name,
            delay: self.delay,
            max_hedges: self.max_hedges,
            budget: self.budget,
            hedgeable: self.hedgeable,
            classify,
            clone_request: self.clone_request,
            listeners: self.listeners,
        }
    }

    /// How copies are made (default [`Cloned`]).
    #[must_use]
    pub fn clone_request<K2>(self, clone_request: K2) -> HedgeConfigBuilder<P, C, K2> {
        HedgeConfigBuilder {
            name: self.name,
            delay: self.delay,
            max_hedges: self.max_hedges,
            budget: self.budget,
            hedgeable: self.hedgeable,
            classify: self.classify,
            clone_request,
            listeners: self.listeners,
        }
    }

    /// Validate and build.
    pub fn build(self) -> Result<HedgeConfig<P, C, K>, ConfigError> {
        ensure_name("hedge", &self.name)?;
        self.delay.validate()?;
        let hedges_ok = (1..=10).contains(&self.max_hedges);
        ensure(hedges_ok, "hedge", "max_hedges", self.max_hedges, "1 to 10")?;
        let budget = match self.budget {
            BudgetChoice::Config(config) => config.build()?,
            BudgetChoice::Shared(budget) => Some(budget),
        };
        Ok(HedgeConfig {
            name: self.name,
            delay: self.delay,
            max_hedges: self.max_hedges,
            budget,
            hedgeable: self.hedgeable,
            classify: self.classify,
            clone_request: self.clone_request,
            listeners: self.listeners,
        })
    }
}

impl<P, C, K> fmt::Debug for HedgeConfigBuilder<P, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeConfigBuilder")
            .field("name", &self.name)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
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
impl<P, C, K> serde::Serialize for HedgeConfig<P, C, K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("HedgeConfig", 4)?;
        out.serialize_field("name", &self.name)?;
        out.serialize_field("delay", &self.delay)?;
        out.serialize_field("max_hedges", &self.max_hedges)?;
        let budget = self
            .budget
            .as_ref()
            .map_or(BudgetConfig::None, |b| b.config().clone());
        out.serialize_field("budget", &budget)?;
        out.end()
    }
}
