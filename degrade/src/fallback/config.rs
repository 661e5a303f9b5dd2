//! The fallback layer's config.

use palisade_core::config::ensure_name;
use palisade_core::{ConfigError, Listeners, Name, RejectionKind};

use crate::{DegradeEvent, Switch, Triggers};

/// Config of a [`FallbackLayer`](super::FallbackLayer): its name, which outcomes trigger
/// the fallback, listeners and the degrade switch.
///
/// With the `serde` feature it loads from data (`{"name": "search", "triggers": {"rate_limited": false}}`);
/// code-only parts (listeners, switch) are added with [`FallbackConfig::to_builder`].
///
/// ```
/// use palisade_degrade::{FallbackConfig, Switch};
/// use palisade_core::RejectionKind;
///
/// let config = FallbackConfig::builder()
///     .name("search")
///     .on_rejection(RejectionKind::RateLimited, false)
///     .switch(Switch::new())
///     .build()
///     .expect("valid");
/// assert_eq!(config.name().as_str(), "search");
/// assert!(!config.triggers().rate_limited);
/// ```
#[derive(Debug, Clone)]
pub struct FallbackConfig {
    pub(crate) name: Name,
    pub(crate) triggers: Triggers,
    pub(crate) listeners: Listeners<DegradeEvent>,
    pub(crate) switch: Switch,
}

impl FallbackConfig {
    /// A builder with the defaults.
    pub fn builder() -> FallbackConfigBuilder {
        FallbackConfigBuilder {
            config: Self::default(),
        }
    }

    /// A builder starting from this config (e.g. one loaded from data), to change a field or
    /// add the code-only parts (listeners, switch) and build again. Listeners are not
    /// carried over; the switch is.
    pub fn to_builder(&self) -> FallbackConfigBuilder {
        let mut config = self.clone();
        config.listeners = Listeners::new();
        FallbackConfigBuilder { config }
    }

    /// The layer name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Which outcomes trigger the fallback.
    pub fn triggers(&self) -> Triggers {
        self.triggers
    }

    /// The degrade switch.
    pub fn switch(&self) -> &Switch {
        &self.switch
    }
}

impl Default for FallbackConfig {
    /// Name `"fallback"`; every failure and rejection triggers ([`Triggers::all`]); a fresh
    /// switch in live mode; no listeners.
    fn default() -> Self {
        Self {
            name: Name::from_static("fallback"),
            triggers: Triggers::all(),
            listeners: Listeners::new(),
            switch: Switch::new(),
        }
    }
}

/// Builds a [`FallbackConfig`].
#[derive(Debug, Clone)]
pub struct FallbackConfigBuilder {
    config: FallbackConfig,
}

impl FallbackConfigBuilder {
    /// The layer name, on events, metrics and marks. Default `"fallback"`.
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.config.name = name.into();
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

    /// Share a degrade switch (e.g. one for the whole stage). Default: a switch of its own,
    /// reachable from the layer's `switch()`.
    #[must_use]
    pub fn switch(mut self, switch: Switch) -> Self {
        self.config.switch = switch;
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<FallbackConfig, ConfigError> {
        ensure_name("fallback", &self.config.name)?;
        Ok(self.config)
    }
}

#[cfg(feature = "serde")]
mod data {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Data {
        #[serde(default)]
        name: Option<Name>,
        #[serde(default)]
        triggers: Triggers,
    }

    impl<'de> serde::Deserialize<'de> for FallbackConfig {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let data = Data::deserialize(d)?;
            let mut b = FallbackConfig::builder().triggers(data.triggers);
            if let Some(name) = data.name {
                b = b.name(name);
            }
            b.build().map_err(serde::de::Error::custom)
        }
    }

    impl serde::Serialize for FallbackConfig {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut st = s.serialize_struct("FallbackConfig", 2)?;
            st.serialize_field("name", &self.name)?;
            st.serialize_field("triggers", &self.triggers)?;
            st.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_names_are_refused() {
        let err = FallbackConfig::builder().name("").build().unwrap_err();
        assert_eq!(err.field(), "name");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn loads_from_data() {
        let c: FallbackConfig =
            serde_json::from_str(r#"{"name":"s","triggers":{"rate_limited":false}}"#).unwrap();
        assert_eq!(c.name().as_str(), "s");
        assert!(!c.triggers().rate_limited && c.triggers().circuit_open);
        let back = serde_json::to_string(&c).unwrap();
        let again: FallbackConfig = serde_json::from_str(&back).unwrap();
        assert_eq!(again.triggers(), c.triggers());
        assert!(serde_json::from_str::<FallbackConfig>(r#"{"name":""}"#).is_err());
    }
}
