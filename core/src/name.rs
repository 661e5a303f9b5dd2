//! The layer name used in errors, events and metric labels.

use std::fmt;
use std::sync::Arc;

/// A cheap, cloneable name for one layer instance (`"payments"`, `"orders-db"`).
///
/// The name appears in every rejection message, on every event and as the `name` label of
/// every metric, so an operator can tell which breaker opened or which limiter rejected.
/// Cloning is a reference-count increment; names built from `&'static str` do not allocate.
///
/// ```
/// use palisade_core::Name;
///
/// let name = Name::new("payments");
/// assert_eq!(name.as_str(), "payments");
/// assert_eq!(name.to_string(), "payments");
/// assert_eq!(Name::default().as_str(), "default");
/// ```
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    /// A name from a static string, without allocating.
    pub const fn from_static(name: &'static str) -> Self {
        Self(Repr::Static(name))
    }

    /// A name from anything string-like.
    pub fn new(name: impl Into<Name>) -> Self {
        name.into()
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// The name as a `metrics` label value, without copying the string.
    #[cfg(feature = "metrics")]
    pub fn to_shared_string(&self) -> metrics::SharedString {
        match &self.0 {
            Repr::Static(s) => metrics::SharedString::const_str(s),
            Repr::Shared(s) => metrics::SharedString::from(Arc::clone(s)),
        }
    }
}

// Names compare by their text, however they were built.
impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Default for Name {
    /// `"default"`: layers built without a name still label their metrics.
    fn default() -> Self {
        Self::from_static("default")
    }
}

impl From<&'static str> for Name {
    fn from(s: &'static str) -> Self {
        Self::from_static(s)
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Self(Repr::Shared(s.into()))
    }
}

impl From<Arc<str>> for Name {
    fn from(s: Arc<str>) -> Self {
        Self(Repr::Shared(s))
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Name::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_shared_names_compare_by_text() {
        assert_eq!(Name::from("a"), Name::from(String::from("a")));
        assert_ne!(Name::from("a"), Name::from("b"));
        assert_eq!(format!("{:?}", Name::from("x")), "\"x\"");
    }
}
