//! Policies as data: one named policy holds the config of each layer of the recommended
//! stack, a policies file holds many, and [`Policy::layer`] builds the whole stack.
//!
//! A policies file is one `policies` table with a table per policy and, in it, a table per
//! layer, by its slot name (any subset, in any order; the stack applies the recommended
//! order):
//!
//! | slot | config | |
//! |---|---|---|
//! | `timeout` | [`TimeoutConfig`] | the caller's deadline over all attempts |
//! | `retry` | [`RetryConfig`] | retry with backoff and budget |
//! | `circuit_breaker` | [`CircuitBreakerConfig`] | one breaker per policy |
//! | `rate_limit` | [`RateLimitConfig`] | GCRA rate limit (outermost of the limits) |
//! | `concurrency_limit` | [`ConcurrencyLimitConfig`] | calls in flight |
//! | `adaptive_limit` | [`AdaptiveLimitConfig`] | adaptive calls in flight (innermost of the limits) |
//! | `attempt_timeout` | [`TimeoutConfig`] | one attempt's timeout |
//!
//! Each table is the layer's config as its crate documents it. A layer's `name` (its label
//! on errors, events and metrics) defaults to the policy's name (`"<policy>-attempt"` for
//! the attempt timeout). Durations need a unit (`"250ms"`, `"2s"`); a bare number is
//! refused with an error that says so.
//!
//! ```
//! use palisade::policy::Policies;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let policies = Policies::from_toml(r#"
//!     [policies.payments.timeout]
//!     timeout = "2s"
//!
//!     [policies.payments.retry]
//!     max_attempts = 3
//!     backoff = { kind = "constant", delay = "10ms", jitter = "none" }
//!
//!     [policies.payments.circuit_breaker]
//!     failure_rate_threshold = 50.0
//!     open_duration = "30s"
//! "#).expect("a valid file");
//!
//! let layer = policies["payments"].layer();
//! let svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, palisade::BoxError>(x + 1) }));
//! assert_eq!(svc.oneshot(1).await.unwrap(), 2);
//! # }
//! ```
//!
//! # Errors: all of them, with their paths
//!
//! Loading reports every error of a file at once (a [`PolicyErrors`]), each with its full
//! path, the value and what is allowed:
//! `policies.payments.retry.max_attempts: 0 is not allowed (1 to 100)`.
//!
//! # Environment overrides
//!
//! [`Policies::load`] takes `(key, value)` pairs (pass `std::env::vars()`); every key of
//! the form `PALISADE__<POLICY>__<LAYER>__<FIELD>` sets that field of a policy the file
//! defines, before validation, so a bad override is reported like a bad file value, naming
//! the variable. Nested fields take more segments
//! (`PALISADE__PAYMENTS__RETRY__BACKOFF__DELAY=20ms`). Segments are matched without regard
//! to case, and `_` in a variable matches `-` in a policy name. A value is read as JSON
//! when it parses as JSON (`5`, `true`, `0.5`, `"007"`), else as a string (`250ms`). An
//! override for a policy the file does not define is an error (a typo would otherwise
//! pass unnoticed). Other keys are ignored.

mod error;
mod layer;
mod load;

use std::collections::BTreeMap;
use std::fmt;

use palisade_circuit_breaker::CircuitBreakerConfig;
use palisade_rate_limit::{AdaptiveLimitConfig, ConcurrencyLimitConfig, RateLimitConfig};
use palisade_retry::RetryConfig;
use palisade_timeout::TimeoutConfig;

pub use error::{PolicyError, PolicyErrors};
pub use layer::{PolicyHandles, PolicyLayer};
pub use load::{ENV_PREFIX, Format};

/// The layer slots of a policy, outermost first: the keys of a policy's table.
pub const LAYERS: [&str; 7] = [
    "timeout",
    "retry",
    "circuit_breaker",
    "rate_limit",
    "concurrency_limit",
    "adaptive_limit",
    "attempt_timeout",
];

/// One named policy: the config of each layer of the recommended stack, any subset.
///
/// Load many from a file with [`Policies`], or build one in code; [`layer`](Self::layer)
/// builds the stack, and a [`Registry`](crate::registry::Registry) shares one built stack
/// per name and reloads it.
///
/// ```
/// use palisade::policy::Policy;
/// use palisade::prelude::*;
/// use std::time::Duration;
///
/// let policy = Policy::new("inventory")
///     .with_timeout(TimeoutConfig::builder().name("inventory").timeout(Duration::from_secs(1)).build()?)
///     .with_retry(RetryConfig::builder().name("inventory").max_attempts(2).build()?);
/// assert_eq!(policy.name(), "inventory");
/// assert_eq!(policy.layers(), ["timeout", "retry"]);
/// # Ok::<(), palisade::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub(crate) name: String,
    pub(crate) timeout: Option<TimeoutConfig>,
    pub(crate) retry: Option<RetryConfig>,
    pub(crate) circuit_breaker: Option<CircuitBreakerConfig>,
    pub(crate) rate_limit: Option<RateLimitConfig>,
    pub(crate) concurrency_limit: Option<ConcurrencyLimitConfig>,
    pub(crate) adaptive_limit: Option<AdaptiveLimitConfig>,
    pub(crate) attempt_timeout: Option<TimeoutConfig>,
}

macro_rules! slots {
    ($($slot:ident, $with:ident: $config:ty, $doc:literal;)*) => {
        impl Policy {
            $(
                #[doc = concat!("The ", $doc, " config, if the policy has one.")]
                pub fn $slot(&self) -> Option<&$config> {
                    self.$slot.as_ref()
                }

                #[doc = concat!("The policy with this ", $doc, " config.")]
                #[must_use]
                pub fn $with(mut self, config: $config) -> Self {
                    self.$slot = Some(config);
                    self
                }
            )*
        }
    };
}

slots! {
    timeout, with_timeout: TimeoutConfig, "overall timeout";
    retry, with_retry: RetryConfig, "retry";
    circuit_breaker, with_circuit_breaker: CircuitBreakerConfig, "circuit breaker";
    rate_limit, with_rate_limit: RateLimitConfig, "rate limit";
    concurrency_limit, with_concurrency_limit: ConcurrencyLimitConfig, "concurrency limit";
    adaptive_limit, with_adaptive_limit: AdaptiveLimitConfig, "adaptive limit";
    attempt_timeout, with_attempt_timeout: TimeoutConfig, "per-attempt timeout";
}

impl Policy {
    /// A policy with no layer yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// The policy's name (its key in the file and in a registry).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The slots the policy fills, outermost first (names from [`LAYERS`]).
    pub fn layers(&self) -> Vec<&'static str> {
        LAYERS
            .iter()
            .copied()
            .filter(|slot| self.has(slot))
            .collect()
    }

    /// One layer's config as data (`None` when the slot is empty or the config cannot be
    /// written, e.g. a retry with a backoff made of code).
    pub(crate) fn layer_value(&self, slot: &str) -> Option<serde_json::Value> {
        fn value<T: serde::Serialize>(config: Option<&T>) -> Option<serde_json::Value> {
            config.and_then(|c| serde_json::to_value(c).ok())
        }
        match slot {
            "timeout" => value(self.timeout.as_ref()),
            "retry" => value(self.retry.as_ref()),
            "circuit_breaker" => value(self.circuit_breaker.as_ref()),
            "rate_limit" => value(self.rate_limit.as_ref()),
            "concurrency_limit" => value(self.concurrency_limit.as_ref()),
            "adaptive_limit" => value(self.adaptive_limit.as_ref()),
            "attempt_timeout" => value(self.attempt_timeout.as_ref()),
            _ => None,
        }
    }

    pub(crate) fn has(&self, slot: &str) -> bool {
        match slot {
            "timeout" => self.timeout.is_some(),
            "retry" => self.retry.is_some(),
            "circuit_breaker" => self.circuit_breaker.is_some(),
            "rate_limit" => self.rate_limit.is_some(),
            "concurrency_limit" => self.concurrency_limit.is_some(),
            "adaptive_limit" => self.adaptive_limit.is_some(),
            "attempt_timeout" => self.attempt_timeout.is_some(),
            _ => false,
        }
    }

    /// The policy as data: a map of slot to config.
    pub(crate) fn to_value(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for slot in LAYERS {
            if let Some(v) = self.layer_value(slot) {
                map.insert(slot.to_owned(), v);
            }
        }
        serde_json::Value::Object(map)
    }
}

/// Two policies are equal when they have the same name and write the same data (a config
/// that cannot be written, such as a retry with a backoff made of code, is equal to no
/// other).
impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && LAYERS.iter().all(|slot| {
                match (self.has(slot), other.has(slot)) {
                    (false, false) => true,
                    // A config that cannot be written (a backoff made of code) equals none.
                    (true, true) => matches!(
                        (self.layer_value(slot), other.layer_value(slot)),
                        (Some(a), Some(b)) if a == b
                    ),
                    _ => false,
                }
            })
    }
}

/// Writes the layers' configs, one entry per filled slot (the name is the key of the
/// policy in [`Policies`]).
impl serde::Serialize for Policy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        macro_rules! entry {
            ($($slot:ident),*) => {$(
                if let Some(config) = &self.$slot {
                    map.serialize_entry(stringify!($slot), config)?;
                }
            )*};
        }
        entry!(
            timeout,
            retry,
            circuit_breaker,
            rate_limit,
            concurrency_limit,
            adaptive_limit,
            attempt_timeout
        );
        map.end()
    }
}

/// Named policies, as a policies file holds them: load with [`from_toml`](Self::from_toml),
/// [`from_json`](Self::from_json), `from_yaml` (feature `yaml`) or [`load`](Self::load)
/// (with environment overrides); index by name.
///
/// Writing it (`toml::to_string`, `serde_json::to_string`) gives a file that loads back
/// into equal policies, durations exactly (`"1500us"`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policies {
    policies: BTreeMap<String, Policy>,
}

impl Policies {
    /// No policies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `policy` under its name, replacing (and returning) one of the same name.
    pub fn insert(&mut self, policy: Policy) -> Option<Policy> {
        self.policies.insert(policy.name.clone(), policy)
    }

    /// The policy named `name`.
    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.policies.get(name)
    }

    /// Remove and return the policy named `name`.
    pub fn remove(&mut self, name: &str) -> Option<Policy> {
        self.policies.remove(name)
    }

    /// The policies, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    /// The policies' names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.policies.keys().map(String::as_str).collect()
    }

    /// How many policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// `true` when there is none.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Parse and validate a TOML policies file (no environment overrides).
    pub fn from_toml(text: &str) -> Result<Self, PolicyErrors> {
        Self::load(Format::Toml, text, std::iter::empty::<(String, String)>())
    }

    /// Parse and validate a JSON policies file (no environment overrides).
    pub fn from_json(text: &str) -> Result<Self, PolicyErrors> {
        Self::load(Format::Json, text, std::iter::empty::<(String, String)>())
    }

    /// Parse and validate a YAML policies file (no environment overrides).
    #[cfg(feature = "yaml")]
    pub fn from_yaml(text: &str) -> Result<Self, PolicyErrors> {
        Self::load(Format::Yaml, text, std::iter::empty::<(String, String)>())
    }

    /// Parse a policies file in `format`, apply the `PALISADE__…` overrides among `env`
    /// (see the [module docs](self#environment-overrides); pass `std::env::vars()`, or
    /// pairs of your own in tests) and validate the result, reporting every error.
    ///
    /// ```
    /// use palisade::policy::{Format, Policies};
    ///
    /// let file = "[policies.payments.retry]\nmax_attempts = 3\n";
    /// let env = [("PALISADE__PAYMENTS__RETRY__MAX_ATTEMPTS", "5"), ("HOME", "/root")];
    /// let policies = Policies::load(Format::Toml, file, env).unwrap();
    /// assert_eq!(policies["payments"].retry().unwrap().max_attempts(), 5);
    ///
    /// let env = [("PALISADE__PAYMENTS__RETRY__MAX_ATTEMPTS", "0")];
    /// let err = Policies::load(Format::Toml, file, env).unwrap_err();
    /// let error = err.iter().next().unwrap();
    /// assert_eq!(error.path(), "policies.payments.retry.max_attempts");
    /// assert_eq!(error.env_var(), Some("PALISADE__PAYMENTS__RETRY__MAX_ATTEMPTS"));
    /// assert!(error.to_string().starts_with(
    ///     "policies.payments.retry.max_attempts: 0 is not allowed (1 to 100"
    /// ));
    /// ```
    pub fn load<K, V>(
        format: Format,
        text: &str,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, PolicyErrors>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let document = load::parse(format, text)?;
        load::policies(document, env)
    }

    /// Read a policies file, its format from its extension (`.toml`, `.json`, `.yaml` or
    /// `.yml`), with the overrides among `env` (see [`load`](Self::load)).
    pub fn from_path<K, V>(
        path: impl AsRef<std::path::Path>,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, PolicyErrors>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let path = path.as_ref();
        let format = Format::from_path(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            PolicyErrors::one(PolicyError::new(
                "",
                format!("cannot read {}: {e}", path.display()),
            ))
        })?;
        Self::load(format, &text, env)
    }
}

impl std::ops::Index<&str> for Policies {
    type Output = Policy;

    /// The policy named `name`; panics if there is none (use [`get`](Policies::get) to
    /// ask).
    fn index(&self, name: &str) -> &Policy {
        match self.policies.get(name) {
            Some(policy) => policy,
            None => panic!("no policy named {name:?}"),
        }
    }
}

impl FromIterator<Policy> for Policies {
    fn from_iter<I: IntoIterator<Item = Policy>>(iter: I) -> Self {
        let mut policies = Self::new();
        for policy in iter {
            policies.insert(policy);
        }
        policies
    }
}

impl IntoIterator for Policies {
    type Item = Policy;
    type IntoIter = std::collections::btree_map::IntoValues<String, Policy>;

    fn into_iter(self) -> Self::IntoIter {
        self.policies.into_values()
    }
}

/// Writes `{ "policies": { "<name>": { "<slot>": <config>, … }, … } }`.
impl serde::Serialize for Policies {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("Policies", 1)?;
        out.serialize_field("policies", &self.policies)?;
        out.end()
    }
}

/// Reads and validates a policies file from any serde format; the error lists every
/// invalid value with its path (as [`PolicyErrors`] does).
impl<'de> serde::Deserialize<'de> for Policies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let document = serde_json::Value::deserialize(d)?;
        load::policies(document, std::iter::empty::<(String, String)>())
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.name, self.layers().join(", "))
    }
}
