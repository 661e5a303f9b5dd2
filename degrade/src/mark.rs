//! The degraded mark: how a caller tells a live answer from a degraded one.
//!
//! Every answer a degrade layer produces without the live path (a fallback, a stale cache
//! entry) carries a [`Degraded`] value; live answers carry none. Layers keep the response
//! type unchanged (like errors, responses stay flat in any layer order) and mark it through
//! the [`Mark`] trait, implemented for the [`Marked`] wrapper and, behind the `http`
//! feature, for `http::Response` (an extensions entry).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use palisade_core::{Name, Priority, RejectionKind};

/// Why the live answer was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Trigger {
    /// The service answered with a failure (an error, or a response the classifier called a
    /// failure).
    Failure,
    /// A palisade layer rejected the call (timeout, open circuit, rate limit, …).
    Rejected(RejectionKind),
    /// A load shedder refused the call to protect the system; the request's priority.
    Shed(Priority),
    /// An operator switched the stage into degraded mode; the live path was not called.
    Manual,
    /// Stale-while-revalidate: a cached answer was served at once while a background call
    /// refreshes it.
    Revalidate,
}

impl Trigger {
    /// A short lower-case label, used in metrics (`trigger`) and `tracing` fields.
    pub const fn as_str(self) -> &'static str {
        match self {
            Trigger::Failure => "failure",
            Trigger::Rejected(RejectionKind::Elapsed) => "elapsed",
            Trigger::Rejected(RejectionKind::CircuitOpen) => "circuit_open",
            Trigger::Rejected(RejectionKind::RateLimited) => "rate_limited",
            Trigger::Rejected(RejectionKind::Overloaded) => "overloaded",
            Trigger::Rejected(RejectionKind::RetriesExhausted) => "retries_exhausted",
            Trigger::Shed(_) => "shed",
            Trigger::Manual => "manual",
            Trigger::Revalidate => "revalidate",
        }
    }

    /// Index into per-trigger metric handles (see `ALL_LABELS`).
    pub(crate) const fn index(self) -> usize {
        match self {
            Trigger::Failure => 0,
            Trigger::Rejected(RejectionKind::Elapsed) => 1,
            Trigger::Rejected(RejectionKind::CircuitOpen) => 2,
            Trigger::Rejected(RejectionKind::RateLimited) => 3,
            Trigger::Rejected(RejectionKind::Overloaded) => 4,
            Trigger::Rejected(RejectionKind::RetriesExhausted) => 5,
            Trigger::Shed(_) => 6,
            Trigger::Manual => 7,
            Trigger::Revalidate => 8,
        }
    }

    /// Every label [`Trigger::as_str`] can return, in [`Trigger::index`] order.
    pub(crate) const ALL_LABELS: [&'static str; 9] = [
        "failure",
        "elapsed",
        "circuit_open",
        "rate_limited",
        "overloaded",
        "retries_exhausted",
        "shed",
        "manual",
        "revalidate",
    ];
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Shed(p) => write!(f, "shed ({p})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Where a degraded answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// A fallback (a value, a function or a secondary service) answered.
    Fallback,
    /// A stale cache entry answered; `age` is how old it was when served.
    Stale {
        /// Time since the entry was stored from a live answer.
        age: Duration,
    },
}

/// The mark on an answer that did not come from the live path: which layer, what answered
/// and why.
///
/// ```
/// use palisade_degrade::{Degraded, Marked, Trigger};
/// use palisade_core::{Name, Priority};
///
/// let answer = Marked::with_mark("cached", Degraded::fallback(Name::new("search"), Trigger::Shed(Priority::Sheddable)));
/// let mark = answer.degraded().expect("not live");
/// assert!(mark.is_shed());
/// assert_eq!(mark.age(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Degraded {
    name: Name,
    origin: Origin,
    trigger: Trigger,
}

impl Degraded {
    /// A fallback answered for the layer `name` because of `trigger`.
    pub fn fallback(name: Name, trigger: Trigger) -> Self {
        Self {
            name,
            origin: Origin::Fallback,
            trigger,
        }
    }

    /// A cache entry `age` old answered for the layer `name` because of `trigger`.
    pub fn stale(name: Name, age: Duration, trigger: Trigger) -> Self {
        Self {
            name,
            origin: Origin::Stale { age },
            trigger,
        }
    }

    /// The name of the layer that degraded the answer.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// What answered instead of the live path.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Why the live answer was replaced.
    pub fn trigger(&self) -> Trigger {
        self.trigger
    }

    /// The age of a stale answer; `None` for a fallback.
    pub fn age(&self) -> Option<Duration> {
        match self.origin {
            Origin::Stale { age } => Some(age),
            Origin::Fallback => None,
        }
    }

    /// `true` when a stale cache entry answered.
    pub fn is_stale(&self) -> bool {
        matches!(self.origin, Origin::Stale { .. })
    }

    /// `true` when the request was shed under overload.
    pub fn is_shed(&self) -> bool {
        matches!(self.trigger, Trigger::Shed(_))
    }

    /// `true` when an operator's degrade switch caused it.
    pub fn is_manual(&self) -> bool {
        matches!(self.trigger, Trigger::Manual)
    }
}

impl fmt::Display for Degraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Origin::Fallback => write!(f, "fallback answer from '{}'", self.name)?,
            Origin::Stale { age } => write!(
                f,
                "stale answer from '{}' ({:.1}s old)",
                self.name,
                age.as_secs_f64()
            )?,
        }
        write!(f, " after {}", self.trigger)
    }
}

// ===== Mark =====

/// A response type that can carry a [`Degraded`] mark.
///
/// Degrade layers keep the service's response type and mark it in place, so they stack in
/// any order. Implemented for [`Marked<T>`] and (feature `http`) for `http::Response<B>`;
/// implement it for your own response type to carry the mark your way. Marking is
/// optional for a fallback: [`FallbackLayer::unmarked`](crate::FallbackLayer::unmarked)
/// answers any response type, unmarked.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot carry a degraded mark",
    label = "a fallback marks its answers through the `Mark` trait",
    note = "call `.unmarked()` on the `FallbackLayer` to fall back without marking, wrap the response in `palisade_degrade::Marked<T>`, or implement `Mark` for it"
)]
pub trait Mark {
    /// Record that this answer did not come from the live path.
    fn mark(&mut self, degraded: Degraded);

    /// The mark, if the answer was degraded.
    fn degraded(&self) -> Option<&Degraded>;
}

// ===== Marker =====

/// How a fallback marks the answers it makes: [`ByMark`] (the default) through the
/// response's [`Mark`] impl, [`NoMark`] not at all (any response type).
pub trait Marker<Res> {
    /// Mark a degraded answer.
    fn mark(&self, answer: &mut Res, degraded: Degraded);
}

/// Mark degraded answers through the response's [`Mark`] impl (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByMark;

impl<Res: Mark> Marker<Res> for ByMark {
    #[inline]
    fn mark(&self, answer: &mut Res, degraded: Degraded) {
        answer.mark(degraded);
    }
}

/// Leave degraded answers unmarked, for response types that cannot carry a mark (a
/// `String`, a `Vec`, your own struct). Degraded answers are still counted, reported as
/// events and in metrics; the caller just cannot tell them from live ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoMark;

impl<Res> Marker<Res> for NoMark {
    #[inline]
    fn mark(&self, _: &mut Res, _: Degraded) {}
}

/// A response with an optional [`Degraded`] mark: the mark is present exactly when the
/// answer did not come from the live path.
///
/// Wrap a plain service's answers with `Marked::new` (or `tower::ServiceExt::map_response(Marked::new)`)
/// to put degrade layers around it; read the value through `Deref` or [`Marked::into_inner`].
///
/// ```
/// use palisade_degrade::{Degraded, Mark, Marked, Trigger};
/// use palisade_core::Name;
///
/// let live = Marked::new(42);
/// assert!(live.is_live());
/// assert_eq!(*live + 1, 43);
///
/// let mut answer = Marked::from(7);
/// answer.mark(Degraded::fallback(Name::new("db"), Trigger::Failure));
/// assert!(answer.is_degraded());
/// assert_eq!(answer.into_inner(), 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Marked<T> {
    value: T,
    degraded: Option<Degraded>,
}

impl<T> Marked<T> {
    /// A live (unmarked) answer.
    pub const fn new(value: T) -> Self {
        Self {
            value,
            degraded: None,
        }
    }

    /// A degraded answer.
    pub const fn with_mark(value: T, degraded: Degraded) -> Self {
        Self {
            value,
            degraded: Some(degraded),
        }
    }

    /// The mark, if the answer was degraded.
    pub fn degraded(&self) -> Option<&Degraded> {
        self.degraded.as_ref()
    }

    /// `true` when the answer came from the live path.
    pub fn is_live(&self) -> bool {
        self.degraded.is_none()
    }

    /// `true` when the answer did not come from the live path.
    pub fn is_degraded(&self) -> bool {
        self.degraded.is_some()
    }

    /// The answer.
    pub fn get_ref(&self) -> &T {
        &self.value
    }

    /// The answer, discarding the mark.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// The answer and its mark.
    pub fn into_parts(self) -> (T, Option<Degraded>) {
        (self.value, self.degraded)
    }

    /// Transform the answer, keeping the mark.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Marked<U> {
        Marked {
            value: f(self.value),
            degraded: self.degraded,
        }
    }
}

impl<T> Mark for Marked<T> {
    fn mark(&mut self, degraded: Degraded) {
        self.degraded = Some(degraded);
    }

    fn degraded(&self) -> Option<&Degraded> {
        self.degraded.as_ref()
    }
}

impl<T> From<T> for Marked<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T> Deref for Marked<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Marked<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

/// Behind the `http` feature the mark is an `http::Extensions` entry: read it with
/// `response.extensions().get::<Degraded>()`.
#[cfg(feature = "http")]
impl<B> Mark for http::Response<B> {
    fn mark(&mut self, degraded: Degraded) {
        self.extensions_mut().insert(degraded);
    }

    fn degraded(&self) -> Option<&Degraded> {
        self.extensions().get::<Degraded>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_labels_match_indices() {
        let all = [
            Trigger::Failure,
            Trigger::Rejected(RejectionKind::Elapsed),
            Trigger::Rejected(RejectionKind::CircuitOpen),
            Trigger::Rejected(RejectionKind::RateLimited),
            Trigger::Rejected(RejectionKind::Overloaded),
            Trigger::Rejected(RejectionKind::RetriesExhausted),
            Trigger::Shed(Priority::Default),
            Trigger::Manual,
            Trigger::Revalidate,
        ];
        for t in all {
            assert_eq!(Trigger::ALL_LABELS[t.index()], t.as_str());
        }
    }

    #[test]
    fn stale_marks_carry_their_age() {
        let d = Degraded::stale(Name::new("c"), Duration::from_secs(3), Trigger::Failure);
        assert!(d.is_stale());
        assert_eq!(d.age(), Some(Duration::from_secs(3)));
        assert!(!d.is_shed() && !d.is_manual());
    }

    #[cfg(feature = "http")]
    #[test]
    fn http_responses_carry_the_mark_in_extensions() {
        let mut res = http::Response::new(());
        assert!(Mark::degraded(&res).is_none());
        res.mark(Degraded::fallback(Name::new("h"), Trigger::Manual));
        let got = res.extensions().get::<Degraded>().expect("marked");
        assert!(got.is_manual());
    }
}
