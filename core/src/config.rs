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

/// Refuse a run-time config update that renames the layer: a layer's name is fixed when it
/// is built (it labels its metrics and events), so `handle.update(config)` must carry the
/// same name.
///
/// ```
/// use palisade_core::{Name, config::ensure_same_name};
///
/// assert!(ensure_same_name("retry", &Name::new("db"), &Name::new("db")).is_ok());
/// let err = ensure_same_name("retry", &Name::new("db"), &Name::new("api")).unwrap_err();
/// assert_eq!(err.field(), "name");
/// assert!(err.to_string().contains("\"db\""), "{err}");
/// ```
pub fn ensure_same_name(
    layer: &'static str,
    current: &crate::Name,
    new: &crate::Name,
) -> Result<(), ConfigError> {
    ensure(
        current == new,
        layer,
        "name",
        new.as_str(),
        format!(
            "the layer's own name {:?} (a name is fixed when the layer is built)",
            current.as_str()
        ),
    )
}

/// Durations in config data, always with a unit: `"500us"`, `"250ms"`, `"2s"`, `"1.5s"`,
/// `"5m"`, `"1h"`. Use with `#[serde(with = "palisade_core::config::duration")]`.
///
/// A bare number (`250` or `"250"`) is refused with an error that says so: a number without a
/// unit is the classic seconds-or-milliseconds mix-up. Serializing writes the largest unit
/// that represents the value exactly (`"1500ms"`, `"500us"`, `"7ns"`), so every duration
/// round-trips exactly, `Duration::MAX` included.
///
/// ```
/// use palisade_core::config::duration::{format, parse};
/// use std::time::Duration;
///
/// assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
/// assert!(parse("soon").is_err());
/// assert!(parse("250").unwrap_err().contains("unit"));
/// assert_eq!(format(Duration::from_micros(500)), "500us");
/// assert_eq!(parse(&format(Duration::MAX)), Ok(Duration::MAX));
/// ```
pub mod duration {
    use std::time::Duration;

    const UNITS: [(&str, u128); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("min", 60_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];

    /// Parse a duration written as a number and a unit (`ns`, `us`, `ms`, `s`, `m`, `h`),
    /// exactly (no floating point): `"1.5s"` is 1,500,000,000 ns.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit = unit.trim();
        if number.is_empty() {
            return Err(format!(
                "`{text}` is not a duration; write a number and a unit, like \"250ms\" or \"2s\""
            ));
        }
        if unit.is_empty() {
            return Err(format!(
                "`{text}` has no unit; write \"{text}ms\" or \"{text}s\" (a bare number is ambiguous)"
            ));
        }
        let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(format!(
                "unknown duration unit `{unit}` in `{text}`; use ns, us, ms, s, m or h"
            ));
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(format!("`{text}` is not a number and a unit"));
        }
        let too_long = || format!("`{text}` is longer than the longest duration");
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| too_long())?
        };
        let mut nanos = int.checked_mul(scale).ok_or_else(too_long)?;
        // the fraction, exactly, to nanosecond precision (finer digits must be zero)
        let mut place = scale;
        for (i, digit) in frac.bytes().enumerate() {
            let d = u128::from(digit - b'0');
            if place % 10 != 0 {
                if d != 0 {
                    return Err(format!(
                        "`{text}` is finer than a nanosecond (digit {} of the fraction)",
                        i + 1
                    ));
                }
                continue;
            }
            place /= 10;
            nanos = nanos.checked_add(d * place).ok_or_else(too_long)?;
        }
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long())?;
        let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| too_long())?;
        Ok(Duration::new(secs, sub))
    }

    /// Write a duration in the largest unit that represents it exactly: `"2s"`,
    /// `"1500ms"`, `"500us"`, `"7ns"` (and `"90s"`, not `"1.5m"`).
    pub fn format(d: Duration) -> String {
        let nanos = d.as_nanos();
        if nanos == 0 {
            return "0s".to_owned();
        }
        for (unit, scale) in [
            ("h", 3_600_000_000_000u128),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
        ] {
            if nanos.is_multiple_of(scale) {
                return format!("{}{unit}", nanos / scale);
            }
        }
        format!("{nanos}ns")
    }

    /// Serialize as a string with a unit (see [`format()`]).
    #[cfg(feature = "serde")]
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// Deserialize from a string with a unit (`"2s"`); a bare number is refused with an
    /// error that says to add a unit.
    #[cfg(feature = "serde")]
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration with a unit, like \"250ms\" or \"2s\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{v} is a bare number; durations need a unit, like \"{v}ms\" or \"{v}s\""
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{v} is a bare number; durations need a unit, like \"250ms\" or \"2s\""
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{v} is a bare number; durations need a unit, like \"250ms\" or \"2s\""
                )))
            }
        }
        d.deserialize_any(Visitor)
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

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        #[test]
        fn edges() {
            assert_eq!(parse("0s"), Ok(Duration::ZERO));
            assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
            assert_eq!(parse("1.000000001s"), Ok(Duration::new(1, 1)));
            assert!(parse("1.0000000001s").is_err());
            assert!(parse("1.5ns").is_err());
            assert_eq!(parse("1.0ns"), Ok(Duration::from_nanos(1)));
            assert!(parse("99999999999999999999999999999999999999999h").is_err());
            assert!(parse("1..2s").is_err());
            assert!(parse(".s").is_err());
            assert!(parse("").is_err());
            assert!(parse("-1s").is_err());
            assert_eq!(parse("1 min"), Ok(Duration::from_secs(60)));
            assert_eq!(format(Duration::from_secs(5400)), "90m");
            assert_eq!(format(Duration::from_millis(500)), "500ms");
            assert_eq!(format(Duration::ZERO), "0s");
        }

        proptest! {
            #[test]
            fn round_trips_exactly(secs in any::<u64>(), sub in 0u32..1_000_000_000) {
                let d = Duration::new(secs, sub);
                prop_assert_eq!(parse(&format(d)), Ok(d));
            }
        }

        #[cfg(feature = "serde")]
        #[test]
        fn serde_refuses_bare_numbers_and_round_trips() {
            #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
            struct C {
                #[serde(with = "super")]
                d: Duration,
            }
            let err = serde_json::from_str::<C>(r#"{"d": 250}"#)
                .unwrap_err()
                .to_string();
            assert!(err.contains("bare number"), "{err}");
            let c = C {
                d: Duration::from_micros(500),
            };
            let text = serde_json::to_string(&c).expect("serialize");
            assert_eq!(text, r#"{"d":"500us"}"#);
            assert_eq!(serde_json::from_str::<C>(&text).expect("parse"), c);
        }
    }
}
