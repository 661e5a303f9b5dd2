//! The load shedder's config.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::config::{ensure, ensure_name};
use palisade_core::{ConfigError, Listeners, Name, Priority};

use crate::{DegradeEvent, Switch};

/// An external overload signal: `true` while the system is overloaded (e.g. driven by an
/// adaptive concurrency limiter). Called once per request, so keep it to an atomic load.
pub type Signal = Arc<dyn Fn() -> bool + Send + Sync>;

/// Per-priority thresholds, as fractions of the configured limits: a request of a priority
/// is shed once the in-flight count it would make exceeds `fraction × max_in_flight`, or
/// the queueing delay exceeds `fraction × target_delay`.
///
/// Lower priorities get lower fractions, so they are shed first and leave the remaining
/// capacity to critical traffic. Each must be above 0 and at most 1 (a fraction above 1
/// would let a priority past the limit the backend can take), and they must be ordered
/// `sheddable <= default <= critical`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Thresholds {
    /// Default 0.5: background work stops at half load, keeping half the capacity for
    /// interactive traffic.
    pub sheddable: f64,
    /// Default 0.8: ordinary traffic stops at 80%, reserving 20% headroom so critical
    /// requests still get in when everything else is refused.
    pub default: f64,
    /// Default 1.0: critical traffic may use the whole limit (and nothing more: the limit is
    /// what the backend can take).
    pub critical: f64,
}

impl Thresholds {
    /// The fraction for `priority`.
    pub const fn get(&self, priority: Priority) -> f64 {
        match priority {
            Priority::Sheddable => self.sheddable,
            Priority::Default => self.default,
            Priority::Critical => self.critical,
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            sheddable: 0.5,
            default: 0.8,
            critical: 1.0,
        }
    }
}

/// Config of a [`ShedLayer`](super::ShedLayer): the overload signals, per-priority
/// thresholds, listeners and the degrade switch.
///
/// Overload signals (any combination):
/// - `max_in_flight`: requests in flight through the layer;
/// - `target_delay`: queueing delay, measured as how long `poll_ready` waits for the inner
///   service (the queue below, e.g. a concurrency limit or a buffer);
/// - an external [`Signal`] (`overloaded_when`) and the degrade [`Switch`]: while either is
///   on, everything below [`Priority::Critical`] is shed.
///
/// With the `serde` feature the data parts load from data
/// (`{"max_in_flight": 100, "target_delay": "50ms", "thresholds": {"sheddable": 0.3}}`).
///
/// ```
/// use palisade_degrade::ShedConfig;
/// use std::time::Duration;
///
/// let config = ShedConfig::builder()
///     .name("api")
///     .max_in_flight(100)
///     .target_delay(Duration::from_millis(50))
///     .build()
///     .expect("valid");
/// assert_eq!(config.max_in_flight(), Some(100));
/// ```
#[derive(Clone)]
pub struct ShedConfig {
    pub(crate) name: Name,
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) target_delay: Option<Duration>,
    pub(crate) thresholds: Thresholds,
    pub(crate) signal: Option<Signal>,
    pub(crate) listeners: Listeners<DegradeEvent>,
    pub(crate) switch: Switch,
}

impl ShedConfig {
    /// A builder with the defaults.
    pub fn builder() -> ShedConfigBuilder {
        ShedConfigBuilder {
            config: Self::default(),
        }
    }

    /// A builder starting from this config (e.g. one loaded from data), to change a field or
    /// add the code-only parts (listeners, switch) and build again. Listeners are not
    /// carried over; the switch is.
    pub fn to_builder(&self) -> ShedConfigBuilder {
        let mut config = self.clone();
        config.listeners = Listeners::new();
        ShedConfigBuilder { config }
    }

    /// The layer name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The in-flight limit.
    pub fn max_in_flight(&self) -> Option<usize> {
        self.max_in_flight
    }

    /// The queueing delay target.
    pub fn target_delay(&self) -> Option<Duration> {
        self.target_delay
    }

    /// The per-priority thresholds.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// The degrade switch.
    pub fn switch(&self) -> &Switch {
        &self.switch
    }
}

impl Default for ShedConfig {
    /// Name `"shed"`, no in-flight limit and no delay target (there is no universal number:
    /// set the ones that match your backend's capacity), [`Thresholds::default`], no
    /// external signal, a fresh switch in live mode, no listeners.
    fn default() -> Self {
        Self {
            name: Name::from_static("shed"),
            max_in_flight: None,
            target_delay: None,
            thresholds: Thresholds::default(),
            signal: None,
            listeners: Listeners::new(),
            switch: Switch::new(),
        }
    }
}

impl fmt::Debug for ShedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShedConfig")
            .field("name", &self.name)
            .field("max_in_flight", &self.max_in_flight)
            .field("target_delay", &self.target_delay)
            .field("thresholds", &self.thresholds)
            .field("signal", &self.signal.is_some())
            .field("listeners", &self.listeners)
            .field("switch", &self.switch)
            .finish()
    }
}

/// Builds a [`ShedConfig`].
#[derive(Debug, Clone)]
pub struct ShedConfigBuilder {
    config: ShedConfig,
}

impl ShedConfigBuilder {
    /// The layer name. Default `"shed"`.
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Shed by in-flight requests (1 or more): the most the backend should have at once.
    #[must_use]
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.config.max_in_flight = Some(max);
        self
    }

    /// Shed by queueing delay (more than zero): the readiness wait that means overload.
    /// `Duration::MAX` is accepted and never sheds by delay.
    #[must_use]
    pub fn target_delay(mut self, target: Duration) -> Self {
        self.config.target_delay = Some(target);
        self
    }

    /// Per-priority thresholds. Default [`Thresholds::default`].
    #[must_use]
    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        self.config.thresholds = thresholds;
        self
    }

    /// An external overload signal (e.g. from an adaptive limiter): while it returns
    /// `true`, everything below critical is shed. Called once per request.
    #[must_use]
    pub fn overloaded_when(mut self, signal: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.config.signal = Some(Arc::new(signal));
        self
    }

    /// Register an event listener.
    #[must_use]
    pub fn on_event(mut self, listener: impl Fn(&DegradeEvent) + Send + Sync + 'static) -> Self {
        self.config.listeners.push(listener);
        self
    }

    /// Share a degrade switch: in degraded mode everything below critical is shed.
    /// Default: a switch of its own.
    #[must_use]
    pub fn switch(mut self, switch: Switch) -> Self {
        self.config.switch = switch;
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<ShedConfig, ConfigError> {
        let c = &self.config;
        ensure_name("shed", &c.name)?;
        if let Some(max) = c.max_in_flight {
            ensure(max >= 1, "shed", "max_in_flight", max, "1 or more")?;
        }
        if let Some(target) = c.target_delay {
            ensure(
                !target.is_zero(),
                "shed",
                "target_delay",
                target,
                "more than zero",
            )?;
        }
        let t = c.thresholds;
        for (field, v) in [
            ("thresholds.sheddable", t.sheddable),
            ("thresholds.default", t.default),
            ("thresholds.critical", t.critical),
        ] {
            ensure(
                v > 0.0 && v <= 1.0,
                "shed",
                field,
                v,
                "a fraction above 0 and at most 1 (of max_in_flight / target_delay)",
            )?;
        }
        ensure(
            t.sheddable <= t.default && t.default <= t.critical,
            "shed",
            "thresholds",
            t,
            "sheddable <= default <= critical, so critical traffic is shed last",
        )?;
        Ok(self.config)
    }
}

#[cfg(feature = "serde")]
mod data {
    use super::*;

    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    struct Data {
        #[serde(default)]
        name: Option<Name>,
        #[serde(default)]
        max_in_flight: Option<usize>,
        #[serde(default, with = "palisade_core::config::duration::option")]
        target_delay: Option<Duration>,
        #[serde(default)]
        thresholds: Thresholds,
    }

    impl<'de> serde::Deserialize<'de> for ShedConfig {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let data = Data::deserialize(d)?;
            let mut b = ShedConfig::builder().thresholds(data.thresholds);
            if let Some(name) = data.name {
                b = b.name(name);
            }
            if let Some(max) = data.max_in_flight {
                b = b.max_in_flight(max);
            }
            if let Some(target) = data.target_delay {
                b = b.target_delay(target);
            }
            b.build().map_err(serde::de::Error::custom)
        }
    }

    impl serde::Serialize for ShedConfig {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            Data {
                name: Some(self.name.clone()),
                max_in_flight: self.max_in_flight,
                target_delay: self.target_delay,
                thresholds: self.thresholds,
            }
            .serialize(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_limits_and_unordered_thresholds() {
        assert_eq!(
            ShedConfig::builder()
                .max_in_flight(0)
                .build()
                .unwrap_err()
                .field(),
            "max_in_flight"
        );
        let err = ShedConfig::builder()
            .target_delay(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "target_delay");
        let inverted = Thresholds {
            sheddable: 0.9,
            default: 0.5,
            critical: 1.0,
        };
        assert_eq!(
            ShedConfig::builder()
                .thresholds(inverted)
                .build()
                .unwrap_err()
                .field(),
            "thresholds"
        );
        for (critical, field) in [
            (5.0, "thresholds.critical"),
            (1.0001, "thresholds.critical"),
            (f64::INFINITY, "thresholds.critical"),
        ] {
            let over = Thresholds {
                critical,
                ..Thresholds::default()
            };
            let err = ShedConfig::builder().thresholds(over).build().unwrap_err();
            assert_eq!(err.field(), field, "{critical}");
        }
        let zero = Thresholds {
            sheddable: 0.0,
            ..Thresholds::default()
        };
        assert_eq!(
            ShedConfig::builder()
                .thresholds(zero)
                .build()
                .unwrap_err()
                .field(),
            "thresholds.sheddable"
        );
        assert_eq!(
            ShedConfig::builder().name("").build().unwrap_err().field(),
            "name"
        );
        let nan = Thresholds {
            critical: f64::NAN,
            ..Thresholds::default()
        };
        assert_eq!(
            ShedConfig::builder()
                .thresholds(nan)
                .build()
                .unwrap_err()
                .field(),
            "thresholds.critical"
        );
    }

    /// `target_delay(Duration::MAX)` panicked while building the layer (`mul_f64`).
    #[test]
    fn extreme_delays_build_and_run() {
        for d in [Duration::from_nanos(1), Duration::MAX] {
            let config = ShedConfig::builder()
                .target_delay(d)
                .max_in_flight(usize::MAX)
                .build()
                .unwrap();
            let shared = Arc::new(super::super::state::Shared::new(config));
            shared.record_wait(Duration::MAX);
            shared.record_wait(Duration::ZERO);
            let _ = shared.admit(Priority::Critical);
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn loads_from_data() {
        let c: ShedConfig = serde_json::from_str(
            r#"{"max_in_flight":10,"target_delay":"50ms","thresholds":{"sheddable":0.3}}"#,
        )
        .unwrap();
        assert_eq!(c.max_in_flight(), Some(10));
        assert_eq!(c.target_delay(), Some(Duration::from_millis(50)));
        assert_eq!(c.thresholds().sheddable, 0.3);
        assert_eq!(c.thresholds().default, 0.8);
        let again: ShedConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again.thresholds(), c.thresholds());
        assert!(serde_json::from_str::<ShedConfig>(r#"{"max_in_flight":0}"#).is_err());
        assert!(serde_json::from_str::<ShedConfig>(r#"{"thresholds":{"critical":5.0}}"#).is_err());
        assert!(serde_json::from_str::<ShedConfig>(r#"{"target_delay":50}"#).is_err());
        assert!(serde_json::from_str::<ShedConfig>(r#"{"name":""}"#).is_err());
        for d in [
            Duration::from_micros(500),
            Duration::new(3, 7),
            Duration::MAX,
        ] {
            let c = ShedConfig::builder().target_delay(d).build().unwrap();
            let back: ShedConfig =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back.target_delay(), Some(d));
        }
    }
}
