//! The breaker's configuration and its builder.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use palisade_core::config::{ensure, ensure_name};
use palisade_core::{ConfigError, Listeners, Name, time};

use crate::{CircuitBreakerEvent, CircuitBreakerLayer};

const LAYER: &str = "circuit_breaker";

/// Largest count window (two bits per call slot: 500,000 slots is 125 KB per breaker).
pub const MAX_COUNT_WINDOW: u32 = 500_000;
/// Most buckets in a time window.
pub const MAX_BUCKETS: u32 = 1_000;
const DEFAULT_MINIMUM_CALLS: u32 = 20;
const DEFAULT_MAX_PROBE_DURATION: Duration = Duration::from_secs(60);

/// Most probe calls in half-open.
pub const MAX_PROBES: u32 = 1_000;

/// Which calls the breaker's rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
pub enum SlidingWindow {
    /// The last `size` calls. Each call pushes the oldest out, so the rates always describe
    /// the last `size` calls, not everything since the breaker last closed.
    Count {
        /// How many calls the window holds (1 to [`MAX_COUNT_WINDOW`]).
        size: u32,
    },
    /// The calls of the last `duration`, in `buckets` buckets of `duration / buckets` each;
    /// the window slides one bucket at a time. Up to about a million calls per bucket are
    /// counted; beyond that a bucket's rates stand for the rest of its calls.
    Time {
        /// How far back the window reaches.
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
        duration: Duration,
        /// How many buckets the window is split in (1 to [`MAX_BUCKETS`]; each at least 1ms).
        buckets: u32,
    },
}

/// A circuit breaker's configuration: build one with [`CircuitBreakerConfig::builder`] (or
/// load it from data with the `serde` feature), then make a layer with
/// [`CircuitBreakerLayer::new`] (or go straight to the layer with
/// [`CircuitBreakerLayer::builder`]).
///
/// ```
/// use palisade_circuit_breaker::{CircuitBreakerConfig, SlidingWindow};
/// use std::time::Duration;
///
/// let config = CircuitBreakerConfig::builder()
///     .name("payments")
///     .time_window(Duration::from_secs(30), 10)
///     .failure_rate_threshold(25.0)
///     .minimum_calls(10)
///     .slow_call_duration(Duration::from_secs(2))
///     .slow_call_rate_threshold(50.0)
///     .consecutive_failures(5)
///     .open_duration(Duration::from_secs(10))
///     .open_duration_backoff(2.0, Duration::from_secs(120))
///     .half_open_probes(3)
///     .build()
///     .expect("valid config");
/// assert_eq!(config.window(), SlidingWindow::Time { duration: Duration::from_secs(30), buckets: 10 });
///
/// // Bad values are refused, naming the field:
/// let err = CircuitBreakerConfig::builder().failure_rate_threshold(0.0).build().unwrap_err();
/// assert_eq!(err.field(), "failure_rate_threshold");
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerConfig {
    pub(crate) name: Name,
    pub(crate) window: SlidingWindow,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) slow_call_duration: Option<Duration>,
    /// `None`: the default, 20 or the count window's size if smaller.
    pub(crate) minimum_calls: Option<u32>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) open_duration: Duration,
    pub(crate) open_duration_multiplier: f64,
    /// `None`: the open duration itself (no growth beyond it).
    pub(crate) max_open_duration: Option<Duration>,
    pub(crate) half_open_probes: u32,
    pub(crate) max_probe_duration: Duration,
    pub(crate) listeners: Listeners<CircuitBreakerEvent>,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            name: Name::from_static("circuit_breaker"),
            window: SlidingWindow::Count { size: 100 },
            failure_rate_threshold: 80.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: None,
            minimum_calls: None,
            consecutive_failures: None,
            open_duration: Duration::from_millis(100),
            open_duration_multiplier: 1.0,
            max_open_duration: None,
            half_open_probes: 1,
            max_probe_duration: DEFAULT_MAX_PROBE_DURATION,
            listeners: Listeners::new(),
        }
    }
}

// ===== impl CircuitBreakerConfig =====

impl CircuitBreakerConfig {
    /// A builder starting from the defaults documented on its methods.
    pub fn builder() -> CircuitBreakerConfigBuilder {
        CircuitBreakerConfigBuilder::new()
    }

    /// A builder starting from this config, to change a field and build again.
    pub fn to_builder(&self) -> CircuitBreakerConfigBuilder {
        let mut config = self.clone();
        config.listeners = Listeners::new();
        CircuitBreakerConfigBuilder {
            config,
            target: PhantomData,
        }
    }

    /// The breaker's name (errors, events, the `name` metric label).
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The sliding window.
    pub fn window(&self) -> SlidingWindow {
        self.window
    }

    /// Failure rate (percent) at or above which the breaker opens.
    pub fn failure_rate_threshold(&self) -> f64 {
        self.failure_rate_threshold
    }

    /// Slow-call rate (percent) at or above which the breaker opens.
    pub fn slow_call_rate_threshold(&self) -> f64 {
        self.slow_call_rate_threshold
    }

    /// Calls taking at least this long are slow; `None`: slowness is not tracked.
    pub fn slow_call_duration(&self) -> Option<Duration> {
        self.slow_call_duration
    }

    /// Calls the window must hold before a rate may open the breaker.
    pub fn minimum_calls(&self) -> u32 {
        match (self.minimum_calls, self.window) {
            (Some(m), _) => m,
            (None, SlidingWindow::Count { size }) => DEFAULT_MINIMUM_CALLS.min(size),
            (None, SlidingWindow::Time { .. }) => DEFAULT_MINIMUM_CALLS,
        }
    }

    /// Consecutive failures that open the breaker whatever the rates; `None`: off.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.consecutive_failures
    }

    /// How long the breaker stays open the first time.
    pub fn open_duration(&self) -> Duration {
        self.open_duration
    }

    /// Factor the open duration grows by on each re-open without a close in between.
    pub fn open_duration_multiplier(&self) -> f64 {
        self.open_duration_multiplier
    }

    /// The cap on the grown open duration (the open duration itself unless set).
    pub fn max_open_duration(&self) -> Duration {
        self.max_open_duration.unwrap_or(self.open_duration)
    }

    /// Probe calls admitted in half-open.
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }

    /// How long a half-open probe may hold its permit before it is counted as a failure.
    pub fn max_probe_duration(&self) -> Duration {
        self.max_probe_duration
    }

    /// The open duration for the `reopens`-th re-open in a row (0 for the first opening).
    /// Saturates: any product beyond `max_open_duration` is `max_open_duration`.
    pub fn open_duration_for(&self, reopens: u32) -> Duration {
        let factor = self
            .open_duration_multiplier
            .powi(i32::try_from(reopens).unwrap_or(i32::MAX));
        time::mul_f64(self.open_duration, factor).min(self.max_open_duration())
    }

    /// Check every field; the builder and the `serde` loader call this.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        ensure_name(LAYER, &self.name)?;
        self.validate_window()?;
        let rate = |v: f64| v.is_finite() && v > 0.0 && v <= 100.0;
        let f = self.failure_rate_threshold;
        ensure(
            rate(f),
            LAYER,
            "failure_rate_threshold",
            f,
            "above 0 and at most 100 (percent)",
        )?;
        let s = self.slow_call_rate_threshold;
        ensure(
            rate(s),
            LAYER,
            "slow_call_rate_threshold",
            s,
            "above 0 and at most 100 (percent)",
        )?;
        if let Some(d) = self.slow_call_duration {
            ensure(!d.is_zero(), LAYER, "slow_call_duration", d, "above 0")?;
        }
        let m = self.minimum_calls();
        ensure(m >= 1, LAYER, "minimum_calls", m, "1 or more")?;
        if let SlidingWindow::Count { size } = self.window {
            ensure(
                m <= size,
                LAYER,
                "minimum_calls",
                m,
                format!("at most the window size ({size})"),
            )?;
        }
        if let Some(n) = self.consecutive_failures {
            ensure(n >= 1, LAYER, "consecutive_failures", n, "1 or more")?;
        }
        self.validate_open()?;
        let p = self.half_open_probes;
        ensure(
            (1..=MAX_PROBES).contains(&p),
            LAYER,
            "half_open_probes",
            p,
            format!("1 to {MAX_PROBES}"),
        )?;
        let d = self.max_probe_duration;
        ensure(
            !d.is_zero(),
            LAYER,
            "max_probe_duration",
            d,
            "above 0 (`Duration::MAX`: probes never expire)",
        )
    }

    fn validate_window(&self) -> Result<(), ConfigError> {
        match self.window {
            SlidingWindow::Count { size } => ensure(
                (1..=MAX_COUNT_WINDOW).contains(&size),
                LAYER,
                "window.size",
                size,
                format!("1 to {MAX_COUNT_WINDOW}"),
            ),
            SlidingWindow::Time { duration, buckets } => {
                ensure(
                    (1..=MAX_BUCKETS).contains(&buckets),
                    LAYER,
                    "window.buckets",
                    buckets,
                    format!("1 to {MAX_BUCKETS}"),
                )?;
                ensure(
                    duration / buckets >= Duration::from_millis(1),
                    LAYER,
                    "window.duration",
                    duration,
                    "at least 1ms per bucket",
                )
            }
        }
    }

    fn validate_open(&self) -> Result<(), ConfigError> {
        let d = self.open_duration;
        ensure(!d.is_zero(), LAYER, "open_duration", d, "above 0")?;
        let m = self.open_duration_multiplier;
        ensure(
            m.is_finite() && m >= 1.0,
            LAYER,
            "open_duration_multiplier",
            m,
            "1.0 or more",
        )?;
        let max = self.max_open_duration();
        ensure(
            max >= d,
            LAYER,
            "max_open_duration",
            max,
            "at least open_duration",
        )
    }
}

// ===== CircuitBreakerConfigBuilder =====

/// Builds a [`CircuitBreakerConfig`] (from [`CircuitBreakerConfig::builder`]) or, as a
/// shortcut, a [`CircuitBreakerLayer`] (from [`CircuitBreakerLayer::builder`]); `build`
/// validates either way.
#[must_use]
pub struct CircuitBreakerConfigBuilder<T = CircuitBreakerConfig> {
    config: CircuitBreakerConfig,
    target: PhantomData<fn() -> T>,
}

impl<T> Clone for CircuitBreakerConfigBuilder<T> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            target: PhantomData,
        }
    }
}

impl<T> fmt::Debug for CircuitBreakerConfigBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerConfigBuilder")
            .field("config", &self.config)
            .finish()
    }
}

impl<T> CircuitBreakerConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            config: CircuitBreakerConfig::default(),
            target: PhantomData,
        }
    }

    /// The breaker's name, used in errors, events and the `name` metric label.
    /// Default `"circuit_breaker"`: name every breaker you run more than one of.
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The sliding window. Default: the last 100 calls (resilience4j's default: enough calls
    /// for a rate to mean something, few enough to react within seconds at modest traffic).
    pub fn window(mut self, window: SlidingWindow) -> Self {
        self.config.window = window;
        self
    }

    /// Compute rates over the last `size` calls.
    pub fn count_window(self, size: u32) -> Self {
        self.window(SlidingWindow::Count { size })
    }

    /// Compute rates over the last `duration`, in `buckets` buckets.
    pub fn time_window(self, duration: Duration, buckets: u32) -> Self {
        self.window(SlidingWindow::Time { duration, buckets })
    }

    /// Open when at least this percent of the window's calls failed. Default 80%, chosen by
    /// the incident scorecard (`cargo run --release -p palisade-benches --bin scorecard`):
    /// at resilience4j's 50% the recommended stack opened on a backend that still answered
    /// 40% of calls and served 72 req/s where no resilience served 80 (the `heavy-errors`
    /// incident, 60% of calls failing); at 80% it serves 82.5 (its retries, within the
    /// budget, win back part of the 60%), and a backend that is down (every call failing
    /// or timing out) still opens it within the window. Overload is the adaptive limit's
    /// job, not the breaker's. Far lower thresholds flap on ordinary error noise.
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.config.failure_rate_threshold = percent;
        self
    }

    /// Open when at least this percent of the window's calls were slow. Default 100%: only a
    /// window of nothing but slow calls opens it (resilience4j's default).
    pub fn slow_call_rate_threshold(mut self, percent: f64) -> Self {
        self.config.slow_call_rate_threshold = percent;
        self
    }

    /// Calls taking at least `duration` count as slow, whether they succeeded or not.
    /// Default: off (no clock is read per call for it).
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.config.slow_call_duration = Some(duration);
        self
    }

    /// The window must hold at least this many calls before a rate may open the breaker.
    /// Default 20 (or the count window's size, if smaller): a couple of unlucky failures on
    /// a quiet service must not trip it.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.config.minimum_calls = Some(calls);
        self
    }

    /// Also open after `n` failures in a row, whatever the rates: a quick reaction to a
    /// backend that went fully down. Default: off.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }

    /// How long the breaker stays open before it admits a probe. Default 100 ms, chosen by
    /// the incident scorecard (`cargo run --release -p palisade-benches --bin scorecard`):
    /// with the old 30 s (doubling to 5 min) the recommended stack stayed open long after
    /// the backend was back and served about a third of what no resilience serves in the
    /// outage, flapping and latency-spike incidents. Each return of the backend costs up to
    /// one open interval (plus a probe): over 16 seeds 100 ms with one probe trails no
    /// resilience by 0.36 req/s in flapping where 250 ms with five probes trailed by 1.06,
    /// and by 0.10 in the outage (0.28), while a dead backend sees at most one probe per
    /// interval, 10 a second per client (five per 250 ms was 20). Probes are real calls, so
    /// a client never probes faster than it sends requests.
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.config.open_duration = duration;
        self
    }

    /// Each re-open (probes failed) multiplies the open duration by `multiplier`, up to
    /// `max`; a close resets it. Default: no growth (the open duration is fixed, whatever it
    /// is set to), because growth kept the
    /// breaker open through the up-phases of the flapping incident (a backend down 2 s, up
    /// 3 s). Set e.g. `(2.0, 30 s)` for a large fleet whose probes add up.
    pub fn open_duration_backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.config.open_duration_multiplier = multiplier;
        self.config.max_open_duration = Some(max);
        self
    }

    /// How many probe calls half-open admits; when all have completed, the breaker closes
    /// if their rates are under the thresholds and re-opens otherwise. Default 1 (as Polly
    /// and Hystrix): with the 100 ms open interval, one probe keeps a dead backend's probe
    /// load at 10 calls a second per client, and a lucky success on a still-failing backend
    /// costs little: the window re-opens the breaker once the failures come back. Set more
    /// (resilience4j uses 10) to judge a recovering backend on more than one call.
    ///
    /// While every probe is out, one more is admitted each open interval (at most 64 beyond
    /// this count, and not past the probes' deadline): a probe sent while the backend was
    /// still slow (it hangs until an attempt timeout) does not hide that the backend is back,
    /// and the first probes to complete decide. The pace is the open state's, so a dead
    /// backend sees no more probes than while the breaker is open. Over 16 seeds this took
    /// the retry storm (a 3 s blackhole) from 0.58 to 0.07 req/s below no resilience and
    /// the latency spike from 0.33 to 0.14, at 0.19 in the gradual recovery (the extra
    /// probes queue in a backend that is coming back slowly).
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.config.half_open_probes = probes;
        self
    }

    /// How long a half-open probe may take before it is counted as a failure and its permit
    /// is freed, so a probe that hangs (no timeout below the breaker) cannot keep the
    /// breaker half-open forever. Default 60s: longer than any single call should take; set
    /// it just above your per-attempt timeout. `Duration::MAX`: probes never expire.
    ///
    /// It also bounds what half-open rejections say: while every probe is out, a rejected
    /// call's `retry_after` is the time until the probes' verdict is due (they complete or
    /// expire by then), at most a tenth of the open duration just served, and never zero.
    pub fn max_probe_duration(mut self, duration: Duration) -> Self {
        self.config.max_probe_duration = duration;
        self
    }
}

impl CircuitBreakerConfigBuilder<CircuitBreakerConfig> {
    /// Validate and give the config (for [`CircuitBreakerLayer::new`], a keyed layer,
    /// [`CircuitBreakerHandle::update`](crate::CircuitBreakerHandle::update), or to build
    /// several independent breakers alike).
    pub fn build(self) -> Result<CircuitBreakerConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

impl CircuitBreakerConfigBuilder<CircuitBreakerLayer> {
    /// Register a listener for the breaker's events (the same as
    /// [`CircuitBreakerLayer::on_event`]).
    pub fn on_event(
        mut self,
        listener: impl Fn(&CircuitBreakerEvent) + Send + Sync + 'static,
    ) -> Self {
        self.config.listeners.push(listener);
        self
    }

    /// Validate and build a layer with a new, closed breaker.
    pub fn build(self) -> Result<CircuitBreakerLayer, ConfigError> {
        self.config.validate()?;
        Ok(CircuitBreakerLayer::new(self.config))
    }
}

// ===== serde =====

#[cfg(feature = "serde")]
mod data {
    use super::*;

    /// The config as data; every field optional, defaulting as the builder does.
    #[derive(Default, serde::Deserialize, serde::Serialize)]
    #[serde(default, deny_unknown_fields)]
    pub(super) struct ConfigData {
        name: Option<String>,
        window: Option<SlidingWindow>,
        failure_rate_threshold: Option<f64>,
        slow_call_rate_threshold: Option<f64>,
        #[serde(
            with = "palisade_core::config::duration::option",
            skip_serializing_if = "Option::is_none"
        )]
        slow_call_duration: Option<Duration>,
        #[serde(skip_serializing_if = "Option::is_none")]
        minimum_calls: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        consecutive_failures: Option<u32>,
        #[serde(with = "palisade_core::config::duration::option")]
        open_duration: Option<Duration>,
        open_duration_multiplier: Option<f64>,
        #[serde(with = "palisade_core::config::duration::option")]
        max_open_duration: Option<Duration>,
        half_open_probes: Option<u32>,
        #[serde(with = "palisade_core::config::duration::option")]
        max_probe_duration: Option<Duration>,
    }

    impl From<&CircuitBreakerConfig> for ConfigData {
        fn from(c: &CircuitBreakerConfig) -> Self {
            Self {
                name: Some(c.name.as_str().to_owned()),
                window: Some(c.window),
                failure_rate_threshold: Some(c.failure_rate_threshold),
                slow_call_rate_threshold: Some(c.slow_call_rate_threshold),
                slow_call_duration: c.slow_call_duration,
                minimum_calls: c.minimum_calls,
                consecutive_failures: c.consecutive_failures,
                open_duration: Some(c.open_duration),
                open_duration_multiplier: Some(c.open_duration_multiplier),
                max_open_duration: c.max_open_duration,
                half_open_probes: Some(c.half_open_probes),
                max_probe_duration: Some(c.max_probe_duration),
            }
        }
    }

    impl TryFrom<ConfigData> for CircuitBreakerConfig {
        type Error = ConfigError;

        fn try_from(d: ConfigData) -> Result<Self, ConfigError> {
            let mut c = CircuitBreakerConfig::default();
            if let Some(n) = d.name {
                c.name = Name::from(n);
            }
            c.window = d.window.unwrap_or(c.window);
            c.failure_rate_threshold = d.failure_rate_threshold.unwrap_or(c.failure_rate_threshold);
            c.slow_call_rate_threshold = d
                .slow_call_rate_threshold
                .unwrap_or(c.slow_call_rate_threshold);
            c.slow_call_duration = d.slow_call_duration.or(c.slow_call_duration);
            c.minimum_calls = d.minimum_calls.or(c.minimum_calls);
            c.consecutive_failures = d.consecutive_failures.or(c.consecutive_failures);
            c.open_duration = d.open_duration.unwrap_or(c.open_duration);
            c.open_duration_multiplier = d
                .open_duration_multiplier
                .unwrap_or(c.open_duration_multiplier);
            c.max_open_duration = d.max_open_duration.or(c.max_open_duration);
            c.half_open_probes = d.half_open_probes.unwrap_or(c.half_open_probes);
            c.max_probe_duration = d.max_probe_duration.unwrap_or(c.max_probe_duration);
            c.validate()?;
            Ok(c)
        }
    }
}

/// Loads from data (TOML, JSON, …): every field is optional and defaults as the builder
/// does; durations are strings with a unit, like `"30s"` or `"250ms"` (a bare number is
/// refused). The result is validated as the builder validates.
///
/// ```
/// use palisade_circuit_breaker::{CircuitBreakerConfig, SlidingWindow};
/// use std::time::Duration;
///
/// let config: CircuitBreakerConfig = serde_json::from_str(r#"{
///     "name": "orders-db",
///     "window": { "kind": "time", "duration": "60s", "buckets": 12 },
///     "failure_rate_threshold": 40,
///     "open_duration": "15s"
/// }"#).unwrap();
/// assert_eq!(config.open_duration(), Duration::from_secs(15));
/// assert!(serde_json::from_str::<CircuitBreakerConfig>(r#"{ "half_open_probes": 0 }"#).is_err());
/// assert!(serde_json::from_str::<CircuitBreakerConfig>(r#"{ "open_duration": 15 }"#).is_err());
/// ```
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for CircuitBreakerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let data = <data::ConfigData as serde::Deserialize>::deserialize(d)?;
        CircuitBreakerConfig::try_from(data).map_err(serde::de::Error::custom)
    }
}

/// Writes the data fields (not the listeners), durations with their exact unit, so a
/// written config loads back equal.
#[cfg(feature = "serde")]
impl serde::Serialize for CircuitBreakerConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&data::ConfigData::from(self), s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        CircuitBreakerConfig::default().validate().unwrap();
    }

    #[test]
    fn refuses_bad_values() {
        let b = CircuitBreakerConfig::builder;
        let cases = [
            (b().count_window(0).build(), "window.size"),
            (
                b().count_window(10).minimum_calls(11).build(),
                "minimum_calls",
            ),
            (
                b().time_window(Duration::from_millis(5), 10).build(),
                "window.duration",
            ),
            (
                b().time_window(Duration::from_secs(5), 0).build(),
                "window.buckets",
            ),
            (
                b().failure_rate_threshold(f64::NAN).build(),
                "failure_rate_threshold",
            ),
            (
                b().slow_call_rate_threshold(101.0).build(),
                "slow_call_rate_threshold",
            ),
            (
                b().slow_call_duration(Duration::ZERO).build(),
                "slow_call_duration",
            ),
            (b().minimum_calls(0).build(), "minimum_calls"),
            (b().consecutive_failures(0).build(), "consecutive_failures"),
            (b().open_duration(Duration::ZERO).build(), "open_duration"),
            (
                b().open_duration_backoff(0.5, Duration::from_secs(60))
                    .build(),
                "open_duration_multiplier",
            ),
            (
                b().open_duration(Duration::from_secs(5))
                    .open_duration_backoff(2.0, Duration::from_secs(1))
                    .build(),
                "max_open_duration",
            ),
            (b().half_open_probes(0).build(), "half_open_probes"),
            (b().name("").build(), "name"),
            (
                b().max_probe_duration(Duration::ZERO).build(),
                "max_probe_duration",
            ),
            (
                b().failure_rate_threshold(-1.0).build(),
                "failure_rate_threshold",
            ),
            (
                b().failure_rate_threshold(100.5).build(),
                "failure_rate_threshold",
            ),
            (
                b().open_duration_backoff(f64::NAN, Duration::from_secs(60))
                    .build(),
                "open_duration_multiplier",
            ),
            (
                b().open_duration_backoff(f64::INFINITY, Duration::from_secs(60))
                    .build(),
                "open_duration_multiplier",
            ),
        ];
        for (res, field) in cases {
            assert_eq!(res.unwrap_err().field(), field);
        }
    }

    /// Every duration field at 1ns and `Duration::MAX` builds, and a breaker built from it
    /// runs its whole cycle without a panic (time arithmetic saturates).
    #[tokio::test(start_paused = true)]
    async fn extreme_durations_never_panic() {
        use tower::{Service, ServiceExt, service_fn};
        for d in [
            Duration::from_nanos(1),
            Duration::from_secs(1),
            Duration::MAX,
        ] {
            let window = if d == Duration::from_nanos(1) {
                SlidingWindow::Count { size: 2 }
            } else {
                SlidingWindow::Time {
                    duration: d,
                    buckets: 1,
                }
            };
            let layer = CircuitBreakerLayer::builder()
                .window(window)
                .minimum_calls(2)
                .slow_call_duration(d)
                .open_duration(d)
                .open_duration_backoff(1000.0, Duration::MAX)
                .max_probe_duration(d)
                .half_open_probes(1)
                .build()
                .unwrap();
            let handle = layer.handle();
            let mut svc = tower::Layer::layer(
                &layer,
                service_fn(|fail: bool| async move {
                    if fail {
                        Err::<(), palisade_core::BoxError>("down".into())
                    } else {
                        Ok(())
                    }
                }),
            );
            for step in 0..8 {
                let _ = svc.ready().await.unwrap().call(step % 3 != 0).await;
                tokio::time::advance(Duration::from_secs(1)).await;
            }
            let _ = handle.snapshot();
            let _ = handle.retry_after();
            handle.open_for(d);
            handle.open_for(Duration::MAX);
            let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
            assert!(err.is::<palisade_core::CircuitOpen>());
        }
    }

    #[test]
    fn open_duration_grows_to_the_cap() {
        let c = CircuitBreakerConfig::builder()
            .open_duration(Duration::from_secs(10))
            .open_duration_backoff(3.0, Duration::from_secs(100))
            .build()
            .unwrap();
        let got: Vec<_> = (0..5).map(|n| c.open_duration_for(n).as_secs()).collect();
        assert_eq!(got, [10, 30, 90, 100, 100]);
        assert_eq!(c.open_duration_for(u32::MAX), Duration::from_secs(100));
        let forever = CircuitBreakerConfig::builder()
            .open_duration(Duration::MAX)
            .open_duration_backoff(2.0, Duration::MAX)
            .build()
            .unwrap();
        assert_eq!(forever.open_duration_for(3), Duration::MAX);
    }
}
