//! Config validation errors shared by every layer's builder.

use std::borrow::Cow;
use std::fmt;

/// A config value was refused: names the layer, the field, the value and what is allowed.
///
/// Builders return this from `build()` instead of panicking, so a bad value loaded from a
/// file is reported, not crashed on.
///
/// ```
/// use palisade_core::ConfigError;
///
/// let err = ConfigError::new("retry", "max_attempts", 0, "1 or more");
/// assert_eq!(
///     err.to_string(),
///     "invalid retry config: max_attempts = 0; expected 1 or more"
/// );
/// assert_eq!(err.field(), "max_attempts");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    layer: &'static str,
    field: &'static str,
    value: String,
    expected: Cow<'static, str>,
}

impl ConfigError {
    /// `field` of the `layer` config has `value`, but `expected` is allowed.
    pub fn new(
        layer: &'static str,
        field: &'static str,
        value: impl fmt::Debug,
        expected: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            layer,
            field,
            value: format!("{value:?}"),
            expected: expected.into(),
        }
    }

    /// The layer whose config was refused (`"retry"`).
    pub fn layer(&self) -> &'static str {
        self.layer
    }

    /// The refused field.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The refused value, as written by `Debug`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What the field allows.
    pub fn expected(&self) -> &str {
        &self.expected
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} config: {} = {}; expected {}",
            self.layer, self.field, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// Return `Err(ConfigError)` unless `ok`.
///
/// ```
/// use palisade_core::config::ensure;
///
/// let ratio = 1.5;
/// let err = ensure((0.0..=1.0).contains(&ratio), "retry", "budget.ratio", ratio, "0.0 to 1.0")
///     .unwrap_err();
/// assert_eq!(err.value(), "1.5");
/// ```
pub fn ensure(
    ok: bool,
    layer: &'static str,
    field: &'static str,
    value: impl fmt::Debug,
    expected: impl Into<Cow<'static, str>>,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(layer, field, value, expected))
    }
}

/// Refuse an empty layer name: errors, events and metric labels need one to say which
/// layer spoke.
///
/// ```
/// use palisade_core::{Name, config::ensure_name};
///
/// assert!(ensure_name("shed", &Name::new("api")).is_ok());
/// assert_eq!(ensure_name("shed", &Name::new(String::new())).unwrap_err().field(), "name");
/// ```
pub fn ensure_name(layer: &'static str, name: &crate::Name) -> Result<(), ConfigError> {
    ensure(
        !name.as_str().is_empty(),
        layer,
        "name",
        name.as_str(),
        "a non-empty name",
    )
}

/// Durations in config data: `"250ms"`, `"2s"`, `"1.5s"`, `"5m"`, `"1h"`, or a number of
/// milliseconds. Use with `#[serde(with = "palisade_core::config::duration")]`.
///
/// ```
/// use palisade_core::config::duration::parse;
/// use std::time::Duration;
///
/// assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
/// assert!(parse("soon").is_err());
/// ```
pub mod duration {
    use std::time::Duration;

    /// Parse a duration written as a number and a unit (`ns`, `us`, `ms`, `s`, `m`, `h`).
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration like \"250ms\" or \"2s\""))?;
        let scale = match unit.trim() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" | "" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown duration unit `{other}` in `{text}`")),
        };
        Duration::try_from_secs_f64(value * scale).map_err(|e| format!("`{text}`: {e}"))
    }

    /// Serialize as a string of milliseconds or seconds (`"250ms"`).
    #[cfg(feature = "serde")]
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    /// Deserialize from a string (`"2s"`) or an integer of milliseconds.
    #[cfg(feature = "serde")]
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        use serde::Deserialize;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }

    /// The same for `Option<Duration>` fields (`null` or absent = `None`).
    #[cfg(feature = "serde")]
    pub mod option {
        use std::time::Duration;

        /// Serialize `Some` like [`super::serialize`], `None` as null.
        pub fn serialize<S: serde::Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        /// Deserialize like [`super::deserialize`], with null as `None`.
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            use serde::Deserialize;
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] Duration);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}
