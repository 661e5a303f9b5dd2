//! The stale cache's config.

use std::time::Duration;

use palisade_core::config::{ensure, ensure_name};
use palisade_core::{ConfigError, Listeners, Name, RejectionKind};

use crate::{DegradeEvent, Switch, Triggers};

/// Config of a [`StaleCacheLayer`](super::StaleCacheLayer): name, capacity, maximum
/// staleness, triggers, listeners and the degrade switch.
///
/// With the `serde` feature it loads from data
/// (`{"name": "prices", "capacity": 10000, "max_staleness": "10m"}`); code-only parts
/// (listeners, switch) are added with [`StaleConfig::to_builder`].
///
/// ```
/// use palisade_degrade::StaleConfig;
/// use std::time::Duration;
///
/// let config = StaleConfig::builder()
///     .name("prices")
///     .capacity(10_000)
///     .max_staleness(Duration::from_secs(600))
///     .build()
///     .expect("valid");
/// assert_eq!(config.capacity(), 10_000);
/// assert!(StaleConfig::builder().capacity(0).build().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct StaleConfig {
    pub(crate) name: Name,
    pub(crate) capacity: usize,
    pub(crate) max_staleness: Duration,
    pub(crate) triggers: Triggers,
    pub(crate) listeners: Listeners<DegradeEvent>,
    pub(crate) switch: Switch,
}

/// Default capacity: 1024 keys. Enough for the hot keys of a typical API stage, while
/// bounding memory to 1024 answers; raise it for wide key spaces.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Default maximum staleness: 5 minutes. Long enough to ride out a dependency restart or a
/// failover, short enough that the data is not misleading for most read paths.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(300);

impl StaleConfig {
    /// A builder with the defaults.
    pub fn builder() -> StaleConfigBuilder {
        StaleConfigBuilder {
            config: Self::default(),
        }
    }

    /// A builder starting from this config (e.g. one loaded from data), to change a field or
    /// add the code-only parts (listeners, switch) and build again. Listeners are not
    /// carried over; the switch is.
    pub fn to_builder(&self) -> StaleConfigBuilder {
        let mut config = self.clone();
        config.listeners = Listeners::new();
        StaleConfigBuilder { config }
    }

    /// The layer name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// How many keys are remembered at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The oldest answer that may be served.
    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// Which outcomes make the cache answer.
    pub fn triggers(&self) -> Triggers {
        self.triggers
    }

    /// The degrade switch.
    pub fn switch(&self) -> &Switch {
        &self.switch
    }
}

impl Default for StaleConfig {
    /// Name `"stale"`, [`DEFAULT_CAPACITY`], [`DEFAULT_MAX_STALENESS`], every failure and
    /// rejection triggers, a fresh switch in live mode, no listeners.
    fn default() -> Self {
        Self {
            name: Name::from_static("stale"),
            capacity: DEFAULT_CAPACITY,
            max_staleness: DEFAULT_MAX_STALENESS,
            triggers: Triggers::all(),
            listeners: Listeners::new(),
            switch: Switch::new(),
        }
    }
}

/// Builds a [`StaleConfig`].
#[derive(Debug, Clone)]
pub struct StaleConfigBuilder {
    config: StaleConfig,
}

impl StaleConfigBuilder {
    /// The layer name. Default `"stale"`.
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.config.name = name.into();
        self
    }

    /// How many keys to remember (1 or more); the least recently stored is evicted first.
    /// Default [`DEFAULT_CAPACITY`].
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.config.capacity = capacity;
        self
    }

    /// The oldest answer that may be served (more than zero). Default
    /// [`DEFAULT_MAX_STALENESS`].
    #[must_use]
    pub fn max_staleness(mut self, max_staleness: Duration) -> Self {
        self.config.max_staleness = max_staleness;
        self
    }

    /// Replace all triggers. Default [`Triggers::all`].
    #[must_use]
    pub fn triggers(mut self, triggers: Triggers) -> Self {
        self.config.triggers = triggers;
        self
    }

    /// Whether the service's own failures trigger. Default `true`.
    #[must_use]
    pub fn on_failure(mut self, on: bool) -> Self {
        self.config.triggers.failure = on;
        self
    }

    /// Whether rejections of `kind` trigger. Default `true` for every kind.
    #[must_use]
    pub fn on_rejection(mut self, kind: RejectionKind, on: bool) -> Self {
        self.config.triggers = self.config.triggers.with(kind, on);
        self
    }

    /// Register an event listener.
    #[must_use]
    pub fn on_event(mut self, listener: impl Fn(&DegradeEvent) + Send + Sync + 'static) -> Self {
        self.config.listeners.push(listener);
        self
    }

    /// Share a degrade switch. In degraded mode the cache answers from a fresh-enough entry
    /// without calling the service (and calls it when it has none). Default: a switch of
    /// its own.
    #[must_use]
    pub fn switch(mut self, switch: Switch) -> Self {
        self.config.switch = switch;
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<StaleConfig, ConfigError> {
        let c = &self.config;
        ensure_name("stale", &c.name)?;
        ensure(
            c.capacity >= 1,
            "stale",
            "capacity",
            c.capacity,
            "1 or more",
        )?;
        ensure(
            !c.max_staleness.is_zero(),
            "stale",
            "max_staleness",
            c.max_staleness,
            "more than zero",
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
        capacity: Option<usize>,
        #[serde(default, with = "palisade_core::config::duration::option")]
        max_staleness: Option<Duration>,
        #[serde(default)]
        triggers: Triggers,
    }

    impl<'de> serde::Deserialize<'de> for StaleConfig {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let data = Data::deserialize(d)?;
            let mut b = StaleConfig::builder().triggers(data.triggers);
            if let Some(name) = data.name {
                b = b.name(name);
            }
            if let Some(capacity) = data.capacity {
                b = b.capacity(capacity);
            }
            if let Some(max) = data.max_staleness {
                b = b.max_staleness(max);
            }
            b.build().map_err(serde::de::Error::custom)
        }
    }

    impl serde::Serialize for StaleConfig {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            Data {
                name: Some(self.name.clone()),
                capacity: Some(self.capacity),
                max_staleness: Some(self.max_staleness),
                triggers: self.triggers,
            }
            .serialize(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_zero_capacity_and_staleness() {
        assert_eq!(
            StaleConfig::builder()
                .capacity(0)
                .build()
                .unwrap_err()
                .field(),
            "capacity"
        );
        let err = StaleConfig::builder()
            .max_staleness(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_staleness");
    }

    /// Extreme values build, round-trip and run without a panic (a `usize::MAX` capacity
    /// overflowed the store's bookkeeping).
    #[tokio::test(start_paused = true)]
    async fn extreme_values_never_panic() {
        use crate::{Marked, StaleCacheLayer};
        use palisade_core::BoxError;
        use tower::{Layer, ServiceExt, service_fn};
        for (capacity, staleness) in [(1, Duration::from_nanos(1)), (usize::MAX, Duration::MAX)] {
            let config = StaleConfig::builder()
                .capacity(capacity)
                .max_staleness(staleness)
                .build()
                .unwrap();
            #[cfg(feature = "serde")]
            {
                let text = serde_json::to_string(&config).unwrap();
                let back: StaleConfig = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    (back.capacity(), back.max_staleness()),
                    (capacity, staleness)
                );
            }
            let svc =
                StaleCacheLayer::new(config, |k: &u32| *k).layer(service_fn(|k: u32| async move {
                    if k >= 100 {
                        Err::<Marked<u32>, BoxError>("down".into())
                    } else {
                        Ok(Marked::new(k))
                    }
                }));
            for k in 0..200 {
                let _ = svc.clone().oneshot(k % 50 + (k / 100) * 100).await;
                tokio::time::advance(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(
            StaleConfig::builder().name("").build().unwrap_err().field(),
            "name"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn loads_from_data() {
        let c: StaleConfig =
            serde_json::from_str(r#"{"name":"p","capacity":5,"max_staleness":"2m"}"#).unwrap();
        assert_eq!(
            (c.capacity(), c.max_staleness()),
            (5, Duration::from_secs(120))
        );
        let again: StaleConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again.max_staleness(), c.max_staleness());
        assert!(serde_json::from_str::<StaleConfig>(r#"{"capacity":0}"#).is_err());
        assert!(serde_json::from_str::<StaleConfig>(r#"{"max_staleness":300}"#).is_err());
        assert!(serde_json::from_str::<StaleConfig>(r#"{"name":""}"#).is_err());
        let c = StaleConfig::builder()
            .max_staleness(Duration::from_micros(500))
            .build()
            .unwrap();
        let back: StaleConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back.max_staleness(), Duration::from_micros(500));
    }
}
