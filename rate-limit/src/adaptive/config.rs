//! The adaptive limit's config and builder.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use palisade_core::config::{ensure, ensure_name};
use palisade_core::{ConfigError, Listeners, Name};

use super::{AdaptiveLimitLayer, Aimd, Gradient};
use crate::event::LimitEvent;

const LAYER: &str = "adaptive_limit";

/// Which algorithm moves the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Algorithm {
    /// Additive increase, multiplicative decrease on failures and slow calls.
    Aimd(Aimd),
    /// The ratio of no-load to measured round trip time.
    Gradient(Gradient),
}

impl Default for Algorithm {
    /// [`Gradient`]: it needs no latency threshold to be tuned.
    fn default() -> Self {
        Algorithm::Gradient(Gradient::new())
    }
}

impl From<Aimd> for Algorithm {
    fn from(a: Aimd) -> Self {
        Algorithm::Aimd(a)
    }
}

impl From<Gradient> for Algorithm {
    fn from(g: Gradient) -> Self {
        Algorithm::Gradient(g)
    }
}

/// The data of an adaptive limit's configuration.
///
/// With the `serde` feature it loads from data; loading validates exactly as the builder
/// does (every field, the algorithm's parameters included):
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use palisade_rate_limit::{AdaptiveLimitConfig, AdaptiveLimitLayer};
///
/// let config: AdaptiveLimitConfig = serde_json::from_str(
///     r#"{ "algorithm": { "aimd": { "latency_threshold": "250ms" } }, "max_limit": 200 }"#,
/// ).unwrap();
/// let layer = AdaptiveLimitLayer::new(config);
/// assert_eq!(layer.handle().limit(), 20);
///
/// let err = serde_json::from_str::<AdaptiveLimitConfig>(
///     r#"{ "algorithm": { "aimd": { "backoff_ratio": 5.0 } } }"#,
/// ).unwrap_err();
/// assert!(err.to_string().contains("aimd.backoff_ratio = 5.0"), "{err}");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "AdaptiveLimitData"))]
pub struct AdaptiveLimitConfig {
    /// The layer's name, on errors, events and metrics. Default: `"adaptive_limit"`. Must
    /// not be empty.
    pub(crate) name: Name,
    /// The algorithm ([`Aimd`] or [`Gradient`]). Default [`Gradient`]: it needs no latency
    /// threshold to be tuned.
    pub(crate) algorithm: Algorithm,
    /// The limit before the first sample. Default 20 (Netflix's default): enough to
    /// measure a backend without flooding it.
    pub(crate) initial_limit: usize,
    /// The lowest limit. Default 1: a failing backend still gets a probe through.
    pub(crate) min_limit: usize,
    /// The highest limit. Default 1000 (Netflix's default): a bug cannot open the
    /// floodgates.
    pub(crate) max_limit: usize,
    /// Wait mode: how long a call finding every slot taken may wait for one (woken in
    /// arrival order), then it is refused with [`Overloaded`](palisade_core::Overloaded).
    /// Default zero: reject mode. The wait happens in the response future, so it never
    /// outlasts the caller's deadline; any duration is valid, `Duration::MAX` waiting as
    /// long as the deadline allows. The recommended stack waits: under overload, callers
    /// queue on their side, within their deadline, while the backend's own queue stays
    /// short (see the scorecard's 2× overload).
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
    pub(crate) max_wait: Duration,
    /// The most calls waiting at once in wait mode; more are refused at once. Default
    /// (`None`): as many as the current limit, one waiting call per slot.
    pub(crate) max_queue: Option<usize>,
}

/// What a file holds: validated into an [`AdaptiveLimitConfig`] on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AdaptiveLimitData {
    name: Name,
    algorithm: Algorithm,
    initial_limit: usize,
    min_limit: usize,
    max_limit: usize,
    #[serde(with = "palisade_core::config::duration")]
    max_wait: Duration,
    max_queue: Option<usize>,
}

#[cfg(feature = "serde")]
impl Default for AdaptiveLimitData {
    fn default() -> Self {
        let d = AdaptiveLimitConfig::default();
        Self {
            name: d.name,
            algorithm: d.algorithm,
            initial_limit: d.initial_limit,
            min_limit: d.min_limit,
            max_limit: d.max_limit,
            max_wait: d.max_wait,
            max_queue: d.max_queue,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<AdaptiveLimitData> for AdaptiveLimitConfig {
    type Error = ConfigError;

    fn try_from(d: AdaptiveLimitData) -> Result<Self, ConfigError> {
        let config = AdaptiveLimitConfig {
            name: d.name,
            algorithm: d.algorithm,
            initial_limit: d.initial_limit,
            min_limit: d.min_limit,
            max_limit: d.max_limit,
            max_wait: d.max_wait,
            max_queue: d.max_queue,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Default for AdaptiveLimitConfig {
    fn default() -> Self {
        Self {
            name: Name::from_static("adaptive_limit"),
            algorithm: Algorithm::default(),
            initial_limit: 20,
            min_limit: 1,
            max_limit: 1000,
            max_wait: Duration::ZERO,
            max_queue: None,
        }
    }
}

impl AdaptiveLimitConfig {
    /// A builder with the defaults.
    pub fn builder() -> AdaptiveLimitConfigBuilder {
        AdaptiveLimitConfigBuilder::new()
    }

    /// A builder starting from this config, to change a field and build again.
    pub fn to_builder(&self) -> AdaptiveLimitConfigBuilder {
        AdaptiveLimitConfigBuilder {
            config: self.clone(),
            listeners: Listeners::new(),
            target: PhantomData,
        }
    }

    /// The layer's name, on errors, events and metrics.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// How the limit moves.
    pub fn algorithm(&self) -> &Algorithm {
        &self.algorithm
    }

    /// The limit at start.
    pub fn initial_limit(&self) -> usize {
        self.initial_limit
    }

    /// The lowest the limit goes.
    pub fn min_limit(&self) -> usize {
        self.min_limit
    }

    /// The highest the limit goes.
    pub fn max_limit(&self) -> usize {
        self.max_limit
    }

    /// How long a call may wait for a slot (zero: refuse at once when every slot is taken).
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The most calls that may wait (`None`: as many as the current limit).
    pub fn max_queue(&self) -> Option<usize> {
        self.max_queue
    }

    /// Check every field.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        ensure_name(LAYER, &self.name)?;
        ensure(
            self.min_limit >= 1,
            LAYER,
            "min_limit",
            self.min_limit,
            "1 or more",
        )?;
        ensure(
            self.max_limit >= self.min_limit,
            LAYER,
            "max_limit",
            self.max_limit,
            format!("at least min_limit ({})", self.min_limit),
        )?;
        ensure(
            (self.min_limit..=self.max_limit).contains(&self.initial_limit),
            LAYER,
            "initial_limit",
            self.initial_limit,
            format!("{} to {}", self.min_limit, self.max_limit),
        )?;
        if let Some(q) = self.max_queue {
            ensure(
                q >= 1,
                LAYER,
                "max_queue",
                q,
                "1 or more (zero waiting calls: set max_wait to zero)",
            )?;
        }
        validate_algorithm(&self.algorithm)
    }
}

/// Builds an [`AdaptiveLimitConfig`] (from `AdaptiveLimitConfig::builder`) or, as a shortcut, an [`AdaptiveLimitLayer`] (from
/// `AdaptiveLimitLayer::builder`); every setter has a documented default (see the fields
/// of [`AdaptiveLimitConfig`]).
///
/// ```
/// use palisade_rate_limit::{AdaptiveLimitConfig, AdaptiveLimitLayer, Aimd};
/// use std::time::Duration;
///
/// let layer = AdaptiveLimitLayer::builder()
///     .name("search")
///     .algorithm(Aimd::new().latency_threshold(Duration::from_millis(250)))
///     .initial_limit(10)
///     .limits(2, 200)
///     .build()
///     .expect("valid config");
/// assert_eq!(layer.handle().limit(), 10);
///
/// let err = AdaptiveLimitConfig::builder().limits(10, 5).build().unwrap_err();
/// assert_eq!(err.field(), "max_limit");
/// ```
pub struct AdaptiveLimitConfigBuilder<T = AdaptiveLimitConfig> {
    config: AdaptiveLimitConfig,
    listeners: Listeners<LimitEvent>,
    target: PhantomData<fn() -> T>,
}

impl<T> AdaptiveLimitConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            config: AdaptiveLimitConfig::default(),
            listeners: Listeners::new(),
            target: PhantomData,
        }
    }

    /// The layer's name (default `"adaptive_limit"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The algorithm (default [`Gradient`]).
    #[must_use]
    pub fn algorithm(mut self, algorithm: impl Into<Algorithm>) -> Self {
        self.config.algorithm = algorithm.into();
        self
    }

    /// The limit before the first sample (default 20).
    #[must_use]
    pub fn initial_limit(mut self, limit: usize) -> Self {
        self.config.initial_limit = limit;
        self
    }

    /// The range the limit moves in (default 1 to 1000). Under a circuit breaker, as in the
    /// README's stack, a floor of 4 leaves room for the breaker's probe beside calls that
    /// hang for the attempt timeout (the incident scorecard's latency spike: 0.17 req/s
    /// below no resilience at a floor of 1, 0.09 above at 4, averaged over 16 seeds).
    #[must_use]
    pub fn limits(mut self, min: usize, max: usize) -> Self {
        self.config.min_limit = min;
        self.config.max_limit = max;
        self
    }

    /// Wait mode: a call finding every slot taken waits up to `max_wait` for one, within
    /// the caller's deadline (default zero: reject mode; `Duration::MAX`: as long as the
    /// deadline allows). The README's stack waits up to 1 s with a queue of 1000: in the
    /// incident scorecard's 2× overload and gradual recovery it then serves more than no
    /// resilience (whose backend queues calls for up to 1 s), where refusing served 2.0 and
    /// 1.7 req/s less than it, at the price of latency (p99 at the caller's deadline).
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.config.max_wait = max_wait;
        self
    }

    /// The most calls waiting at once in wait mode (default: as many as the current
    /// limit; 1 or more). Size it to the arrivals of `max_wait` (a queue as long as the
    /// limit served the scorecard's 2× overload 1.4 req/s less than one of 1000).
    #[must_use]
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.config.max_queue = Some(max_queue);
        self
    }
}

impl AdaptiveLimitConfigBuilder<AdaptiveLimitConfig> {
    /// Validate and give the config.
    pub fn build(self) -> Result<AdaptiveLimitConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

impl AdaptiveLimitConfigBuilder<AdaptiveLimitLayer> {
    /// Register a listener for the layer's events (the same as
    /// [`AdaptiveLimitLayer::on_event`]).
    #[must_use]
    pub fn on_event(mut self, listener: impl Fn(&LimitEvent) + Send + Sync + 'static) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Validate and build the layer; results are judged by
    /// [`LatencyOnly`](super::LatencyOnly): answers are latency samples, errors feed no
    /// sample (change it with [`AdaptiveLimitLayer::classifier`]).
    pub fn build(self) -> Result<AdaptiveLimitLayer, ConfigError> {
        self.config.validate()?;
        Ok(AdaptiveLimitLayer::from_parts(self.config, self.listeners))
    }
}

impl<T> fmt::Debug for AdaptiveLimitConfigBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitConfigBuilder")
            .field("config", &self.config)
            .field("listeners", &self.listeners)
            .finish()
    }
}

/// The largest gradient tolerance: a backend may answer this many times slower than at no
/// load before the limit shrinks. Beyond it the gradient is always 1 and the limit only
/// grows, which is no adaptive limit at all.
const MAX_TOLERANCE: f64 = 100.0;

fn validate_algorithm(algorithm: &Algorithm) -> Result<(), ConfigError> {
    match algorithm {
        Algorithm::Aimd(a) => {
            ensure(
                (0.5..1.0).contains(&a.backoff_ratio),
                LAYER,
                "aimd.backoff_ratio",
                a.backoff_ratio,
                "0.5 to 1.0 (exclusive)",
            )?;
            ensure(
                !a.latency_threshold.is_zero(),
                LAYER,
                "aimd.latency_threshold",
                a.latency_threshold,
                "more than zero",
            )
        }
        Algorithm::Gradient(g) => {
            ensure(
                (1.0..=MAX_TOLERANCE).contains(&g.tolerance),
                LAYER,
                "gradient.tolerance",
                g.tolerance,
                format!("1.0 to {MAX_TOLERANCE:.1}"),
            )?;
            ensure(
                g.smoothing > 0.0 && g.smoothing <= 1.0,
                LAYER,
                "gradient.smoothing",
                g.smoothing,
                "above 0.0, up to 1.0",
            )?;
            ensure(
                g.min_rtt_window >= 1,
                LAYER,
                "gradient.min_rtt_window",
                g.min_rtt_window,
                "1 or more",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_algorithm_parameters() {
        let b = AdaptiveLimitConfig::builder;
        let field = |r: Result<AdaptiveLimitConfig, ConfigError>| r.unwrap_err().field();
        assert_eq!(field(b().limits(0, 5).build()), "min_limit");
        assert_eq!(field(b().initial_limit(2000).build()), "initial_limit");
        assert_eq!(
            field(b().algorithm(Aimd::new().backoff_ratio(1.0)).build()),
            "aimd.backoff_ratio"
        );
        assert_eq!(
            field(b().algorithm(Gradient::new().tolerance(0.5)).build()),
            "gradient.tolerance"
        );
        assert_eq!(
            field(b().algorithm(Gradient::new().smoothing(0.0)).build()),
            "gradient.smoothing"
        );
        assert_eq!(field(b().name("").build()), "name");
        // NaN, infinities and out-of-range factors are refused, naming the field.
        for bad in [f64::NAN, f64::INFINITY, -0.5, 0.49, 1.0, 5.0] {
            assert_eq!(
                field(b().algorithm(Aimd::new().backoff_ratio(bad)).build()),
                "aimd.backoff_ratio",
                "{bad}"
            );
        }
        for bad in [f64::NAN, f64::INFINITY, 0.99, 100.5] {
            assert_eq!(
                field(b().algorithm(Gradient::new().tolerance(bad)).build()),
                "gradient.tolerance",
                "{bad}"
            );
        }
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1.01] {
            assert_eq!(
                field(b().algorithm(Gradient::new().smoothing(bad)).build()),
                "gradient.smoothing",
                "{bad}"
            );
        }
        assert_eq!(
            field(b().algorithm(Gradient::new().min_rtt_window(0)).build()),
            "gradient.min_rtt_window"
        );
        assert_eq!(
            field(
                b().algorithm(Aimd::new().latency_threshold(Duration::ZERO))
                    .build()
            ),
            "aimd.latency_threshold"
        );
        // The edges of every range are accepted; "never slow" is a valid threshold.
        for ok in [0.5, 0.999] {
            assert!(b().algorithm(Aimd::new().backoff_ratio(ok)).build().is_ok());
        }
        assert!(
            b().algorithm(Aimd::new().latency_threshold(Duration::MAX))
                .build()
                .is_ok()
        );
        assert!(
            b().algorithm(Gradient::new().tolerance(1.0).smoothing(1.0))
                .build()
                .is_ok()
        );
        assert!(
            b().algorithm(Gradient::new().tolerance(100.0))
                .build()
                .is_ok()
        );
    }
}
