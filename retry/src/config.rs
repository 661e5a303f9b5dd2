//! The retry layer's configuration and its builder.

use std::fmt;
use std::time::Duration;

use palisade_core::config::{ensure, ensure_name};
use palisade_core::{ConfigError, Listeners, Name, RejectionAware};

use crate::Backoff;
use crate::budget::{BudgetConfig, RetryBudget};
use crate::event::RetryEvent;
use crate::policy::Cloned;

/// Three attempts (the first try and two retries): the default of gRPC and the AWS SDKs.
/// Enough to ride out a blip; more mostly adds load to a backend that is down.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The largest `max_attempts` a config accepts. Past a handful of attempts retries do not
/// help; 100 catches a typo (or a missing unit) without limiting real use.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// A validated retry config: build one with [`RetryConfig::builder`], hand it to
/// [`RetryLayer::new`](crate::RetryLayer::new).
///
/// The type parameters are the classifier `C` (each attempt's outcome: `Failure` is
/// retried, and it is what a token-bucket budget counts), the hint extractor `A` (server
/// `Retry-After`, a rate limiter's `retry_after`: an `Ignore`d result with a hint is retried
/// after it) and the request copier `K`; the defaults are palisade-core's
/// [`RejectionAware`] twice (see [`RetryAfter`](crate::RetryAfter) for the rule) and
/// [`Cloned`].
///
/// Retrying is bounded by attempts (`max_attempts`, default 3) or, with
/// [`until_deadline`](RetryConfigBuilder::until_deadline), by time alone: the caller's
/// deadline and `max_elapsed`.
///
/// ```
/// use palisade_retry::{Backoff, RetryConfig};
/// use std::time::Duration;
///
/// let config = RetryConfig::builder()
///     .name("inventory")
///     .max_attempts(4)
///     .backoff(Backoff::exponential(Duration::from_millis(50)))
///     .build()
///     .expect("valid config");
/// assert_eq!(config.max_attempts(), 4);
///
/// let err = RetryConfig::builder().max_attempts(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_attempts");
/// ```
#[derive(Clone)]
pub struct RetryConfig<C = RejectionAware, A = RejectionAware, K = Cloned> {
    pub(crate) name: Name,
    /// `u32::MAX` when bounded by time alone.
    pub(crate) max_attempts: u32,
    pub(crate) until_deadline: bool,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) backoff: Backoff,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) seed: Option<u64>,
    pub(crate) classify: C,
    pub(crate) retry_after: A,
    pub(crate) clone_request: K,
    pub(crate) listeners: Listeners<RetryEvent>,
}

impl RetryConfig {
    /// A builder with the documented defaults.
    pub fn builder() -> RetryConfigBuilder {
        RetryConfigBuilder::default()
    }
}

impl<C, A, K> RetryConfig<C, A, K> {
    /// The layer's name, on events and metrics.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The most attempts per request, the first try included (`u32::MAX` when retrying is
    /// bounded by time alone: see [`until_deadline`](Self::until_deadline)).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// `true` when retrying is bounded by time (the caller's deadline, `max_elapsed`) and the
    /// budget, not by a number of attempts.
    pub fn until_deadline(&self) -> bool {
        self.until_deadline
    }

    /// The overall time limit for retrying one request, if any.
    pub fn max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// The backoff policy.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The retry budget, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig::builder()
            .build()
            .expect("the default retry config is valid")
    }
}

impl<C, A, K> fmt::Debug for RetryConfig<C, A, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryConfig")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("until_deadline", &self.until_deadline)
            .field("max_elapsed", &self.max_elapsed)
            .field("backoff", &self.backoff)
            .field("budget", &self.budget)
            .field("seed", &self.seed)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

// ===== RetryConfigBuilder =====

#[derive(Clone)]
enum BudgetChoice {
    Config(BudgetConfig),
    Shared(RetryBudget),
}

/// Builds a [`RetryConfig`]; every setting has a documented default.
#[derive(Clone)]
pub struct RetryConfigBuilder<C = RejectionAware, A = RejectionAware, K = Cloned> {
    name: Name,
    max_attempts: u32,
    until_deadline: bool,
    max_elapsed: Option<Duration>,
    backoff: Backoff,
    budget: BudgetChoice,
    seed: Option<u64>,
    classify: C,
    retry_after: A,
    clone_request: K,
    listeners: Listeners<RetryEvent>,
}

impl Default for RetryConfigBuilder {
    fn default() -> Self {
        Self {
            name: Name::default(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            until_deadline: false,
            max_elapsed: None,
            backoff: Backoff::default(),
            budget: BudgetChoice::Config(BudgetConfig::default()),
            seed: None,
            classify: RejectionAware,
            retry_after: RejectionAware,
            clone_request: Cloned,
            listeners: Listeners::new(),
        }
    }
}

impl<C, A, K> RetryConfigBuilder<C, A, K> {
    /// The layer's name on events and metric labels (default `"default"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.name = name.into();
        self
    }

    /// The most attempts per request, the first try included: 1 to 100, default
    /// [`DEFAULT_MAX_ATTEMPTS`] (3). 1 turns retrying off. Ends the
    /// [`until_deadline`](Self::until_deadline) mode.
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self.until_deadline = false;
        self
    }

    /// Retry until the time is up rather than for a number of attempts: until the next
    /// attempt would start at or past the caller's [`Deadline`](palisade_core::Deadline) (set
    /// by an outer timeout) or past [`max_elapsed`](Self::max_elapsed), honouring every
    /// `retry_after` that ends within those limits, even one longer than the backoff's
    /// `max_delay` (which still caps the backoff itself). The budget still bounds the extra
    /// load, and the classifier still decides what is retried. For a batch or stream consumer that must get its call through:
    ///
    /// ```
    /// use palisade_retry::RetryConfig;
    /// use std::time::Duration;
    ///
    /// let config = RetryConfig::builder()
    ///     .name("sink")
    ///     .until_deadline()
    ///     .max_elapsed(Duration::from_secs(50))
    ///     .build()
    ///     .unwrap();
    /// assert!(config.until_deadline());
    /// ```
    ///
    /// With neither a deadline nor `max_elapsed`, retrying goes on as long as the budget
    /// allows (forever with [`no_budget`](Self::no_budget)).
    #[must_use]
    pub fn until_deadline(mut self) -> Self {
        self.until_deadline = true;
        self
    }

    /// Stop retrying once the next attempt would start more than `limit` after the first
    /// (default: no limit of its own; an outer timeout's deadline is always honoured).
    /// `Duration::MAX` (or anything from about 30 years up) means no limit.
    #[must_use]
    pub fn max_elapsed(mut self, limit: Duration) -> Self {
        self.max_elapsed = Some(limit);
        self
    }

    /// The backoff policy (default [`Backoff::default`]: exponential from 100 ms, factor
    /// 2, capped at 10 s, full jitter).
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Share an existing budget (the same handle may go to several layers).
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = BudgetChoice::Shared(budget);
        self
    }

    /// A budget of this layer's own (default [`BudgetConfig::default`]: 20% over 1 s,
    /// floor 3 retries per second).
    #[must_use]
    pub fn budget_config(mut self, budget: BudgetConfig) -> Self {
        self.budget = BudgetChoice::Config(budget);
        self
    }

    /// Retry without a budget, up to `max_attempts` whatever the failure rate. Under an
    /// outage this multiplies the load on the backend; prefer a budget.
    #[must_use]
    pub fn no_budget(self) -> Self {
        self.budget_config(BudgetConfig::None)
    }

    /// Seed the jitter so a test or simulation replays the same delays (default: random).
    /// Each request still draws its own sequence (the n-th retried request of the layer
    /// gets the n-th seed derived from this one), so requests do not retry in lockstep.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Register a listener for the layer's events.
    #[must_use]
    pub fn on_event(mut self, listener: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Each attempt's outcome: a [`Classify`](palisade_core::Classify). `Failure` is
    /// retried; `Ignore` is retried only with a hint (see [`RetryAfter`](crate::RetryAfter));
    /// `Success` is returned. A token-bucket budget counts these outcomes. Default
    /// palisade-core's [`RejectionAware`].
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> RetryConfigBuilder<C2, A, K> {
        RetryConfigBuilder {
            name: self.name,
            max_attempts: self.max_attempts,
            until_deadline: self.until_deadline,
            max_elapsed: self.max_elapsed,
            backoff: self.backoff,
            budget: self.budget,
            seed: self.seed,
            classify,
            retry_after: self.retry_after,
            clone_request: self.clone_request,
            listeners: self.listeners,
        }
    }

    /// Where server hints come from: a [`RetryAfter`](crate::RetryAfter). Default
    /// [`RejectionAware`] (a rate limiter's `retry_after`); [`NoRetryAfter`](crate::NoRetryAfter)
    /// for none.
    #[must_use]
    pub fn retry_after<A2>(self, retry_after: A2) -> RetryConfigBuilder<C, A2, K> {
        RetryConfigBuilder {
            name: self.name,
            max_attempts: self.max_attempts,
            until_deadline: self.until_deadline,
            max_elapsed: self.max_elapsed,
            backoff: self.backoff,
            budget: self.budget,
            seed: self.seed,
            classify: self.classify,
            retry_after,
            clone_request: self.clone_request,
            listeners: self.listeners,
        }
    }

    /// How a request is copied for the next attempt: a [`CloneRequest`](crate::CloneRequest),
    /// e.g. a closure `Fn(&Req) -> Option<Req>` for requests that are not `Clone`. Default
    /// [`Cloned`].
    #[must_use]
    pub fn clone_request<K2>(self, clone_request: K2) -> RetryConfigBuilder<C, A, K2> {
        RetryConfigBuilder {
            name: self.name,
            max_attempts: self.max_attempts,
            until_deadline: self.until_deadline,
            max_elapsed: self.max_elapsed,
            backoff: self.backoff,
            budget: self.budget,
            seed: self.seed,
            classify: self.classify,
            retry_after: self.retry_after,
            clone_request,
            listeners: self.listeners,
        }
    }

    /// Validate and build.
    pub fn build(self) -> Result<RetryConfig<C, A, K>, ConfigError> {
        ensure_name("retry", &self.name)?;
        let attempts_ok = (1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts);
        ensure(
            self.until_deadline || attempts_ok,
            "retry",
            "max_attempts",
            self.max_attempts,
            "1 to 100 (or until_deadline, to bound retrying by time)",
        )?;
        let max_attempts = if self.until_deadline {
            u32::MAX
        } else {
            self.max_attempts
        };
        if let Some(limit) = self.max_elapsed {
            ensure(
                !limit.is_zero(),
                "retry",
                "max_elapsed",
                limit,
                "more than 0 (Duration::MAX: no limit)",
            )?;
        }
        self.backoff.validate()?;
        let budget = match self.budget {
            BudgetChoice::Config(config) => config.build()?,
            BudgetChoice::Shared(budget) => Some(budget),
        };
        Ok(RetryConfig {
            name: self.name,
            max_attempts,
            until_deadline: self.until_deadline,
            max_elapsed: self.max_elapsed,
            backoff: self.backoff,
            budget,
            seed: self.seed,
            classify: self.classify,
            retry_after: self.retry_after,
            clone_request: self.clone_request,
            listeners: self.listeners,
        })
    }
}

impl<C, A, K> fmt::Debug for RetryConfigBuilder<C, A, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryConfigBuilder")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("until_deadline", &self.until_deadline)
            .finish_non_exhaustive()
    }
}

// ===== serde =====

#[cfg(feature = "serde")]
mod data {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct RetryConfigData {
        #[serde(default)]
        name: Name,
        #[serde(default)]
        max_attempts: Option<u32>,
        #[serde(default)]
        until_deadline: bool,
        #[serde(default, with = "palisade_core::config::duration::option")]
        max_elapsed: Option<Duration>,
        #[serde(default)]
        backoff: Option<Backoff>,
        #[serde(default)]
        budget: BudgetConfig,
        #[serde(default)]
        seed: Option<u64>,
    }

    impl RetryConfigData {
        pub(super) fn build(self) -> Result<RetryConfig, ConfigError> {
            let mut builder = RetryConfig::builder()
                .name(self.name)
                .budget_config(self.budget);
            match (self.until_deadline, self.max_attempts) {
                (true, Some(n)) => {
                    return Err(ConfigError::new(
                        "retry",
                        "max_attempts",
                        n,
                        "absent when until_deadline is true (retrying is bounded by time)",
                    ));
                }
                (true, None) => builder = builder.until_deadline(),
                (false, Some(n)) => builder = builder.max_attempts(n),
                (false, None) => {}
            }
            if let Some(limit) = self.max_elapsed {
                builder = builder.max_elapsed(limit);
            }
            if let Some(backoff) = self.backoff {
                builder = builder.backoff(backoff);
            }
            if let Some(seed) = self.seed {
                builder = builder.seed(seed);
            }
            builder.build()
        }
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for RetryConfig {
    /// Loads and validates a config; absent fields take the builder's defaults.
    ///
    /// ```
    /// use palisade_retry::RetryConfig;
    ///
    /// let config: RetryConfig = serde_json::from_str(r#"{
    ///     "name": "orders",
    ///     "max_attempts": 5,
    ///     "max_elapsed": "3s",
    ///     "backoff": { "kind": "exponential", "base": "50ms", "max_delay": "1s" },
    ///     "budget": { "kind": "tps", "ttl": "10s", "min_per_sec": 5, "ratio": 0.1 }
    /// }"#).unwrap();
    /// assert_eq!(config.max_attempts(), 5);
    ///
    /// // Validated like the builder: each refusal names the field, the value and the range.
    /// let err = serde_json::from_str::<RetryConfig>(r#"{ "name": "" }"#).unwrap_err();
    /// assert!(err.to_string().contains("name"));
    /// ```
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let data = data::RetryConfigData::deserialize(d)?;
        data.build().map_err(serde::de::Error::custom)
    }
}

/// Writes the config's data (the code-only hooks are not data); reading it back gives the
/// same config. A custom [`Backoff::from_fn`] schedule cannot be written and fails.
///
/// ```
/// use palisade_retry::RetryConfig;
/// use std::time::Duration;
///
/// let config = RetryConfig::builder()
///     .name("orders")
///     .max_elapsed(Duration::from_micros(1500))
///     .build()
///     .unwrap();
/// let json = serde_json::to_string(&config).unwrap();
/// assert!(json.contains(r#""max_elapsed":"1500us""#));
/// let back: RetryConfig = serde_json::from_str(&json).unwrap();
/// assert_eq!(back.max_elapsed(), config.max_elapsed());
/// ```
#[cfg(feature = "serde")]
impl<C, A, K> serde::Serialize for RetryConfig<C, A, K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;

        struct Elapsed(Option<Duration>);
        impl serde::Serialize for Elapsed {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                palisade_core::config::duration::option::serialize(&self.0, s)
            }
        }

        let mut out = s.serialize_struct("RetryConfig", 7)?;
        out.serialize_field("name", &self.name)?;
        if self.until_deadline {
            out.serialize_field("until_deadline", &true)?;
        } else {
            out.serialize_field("max_attempts", &self.max_attempts)?;
        }
        out.serialize_field("max_elapsed", &Elapsed(self.max_elapsed))?;
        out.serialize_field("backoff", &self.backoff)?;
        let budget = self
            .budget
            .as_ref()
            .map_or(BudgetConfig::None, |b| b.config().clone());
        out.serialize_field("budget", &budget)?;
        out.serialize_field("seed", &self.seed)?;
        out.end()
    }
}
