//! Configuration shared by the degrade layers: which outcomes trigger a degraded answer.

use palisade_core::{AsRejection, Classify, Rejection, RejectionKind};

use crate::Trigger;

/// Which outcomes of the live path a [`Fallback`](crate::Fallback) or a
/// [`StaleCache`](crate::StaleCache) answers for.
///
/// `failure` covers what the classifier calls a failure that is not a palisade rejection
/// (the service's own errors, or e.g. a `503` response with a custom classifier); each
/// rejection kind has its own switch. The default is all on: a degraded answer is wanted
/// whenever the live path did not produce a good one. Turn a kind off when its rejection
/// should reach the caller (e.g. `rate_limited`, so a client backs off).
///
/// ```
/// use palisade_degrade::Triggers;
/// use palisade_core::RejectionKind;
///
/// let t = Triggers::all().with(RejectionKind::RateLimited, false);
/// assert!(t.fires_on(RejectionKind::CircuitOpen));
/// assert!(!t.fires_on(RejectionKind::RateLimited));
/// assert!(t.failure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Triggers {
    /// The service failed (classified failure that is not a rejection).
    pub failure: bool,
    /// A timeout elapsed ([`palisade_core::Elapsed`]).
    pub elapsed: bool,
    /// A circuit breaker was open ([`palisade_core::CircuitOpen`]).
    pub circuit_open: bool,
    /// A rate limit was exceeded ([`palisade_core::RateLimited`]).
    pub rate_limited: bool,
    /// A limit or load shedder refused the call ([`palisade_core::Overloaded`]).
    pub overloaded: bool,
    /// A retry layer gave up ([`palisade_core::RetriesExhausted`]).
    pub retries_exhausted: bool,
}

impl Triggers {
    /// Every outcome triggers (the default).
    pub const fn all() -> Self {
        Self {
            failure: true,
            elapsed: true,
            circuit_open: true,
            rate_limited: true,
            overloaded: true,
            retries_exhausted: true,
        }
    }

    /// Nothing triggers (only the manual switch does); turn kinds on with [`Triggers::with`].
    pub const fn none() -> Self {
        Self {
            failure: false,
            elapsed: false,
            circuit_open: false,
            rate_limited: false,
            overloaded: false,
            retries_exhausted: false,
        }
    }

    /// Only rejections trigger; the service's own failures pass through.
    pub const fn rejections_only() -> Self {
        let mut t = Self::all();
        t.failure = false;
        t
    }

    /// The same triggers with `kind` on or off.
    #[must_use]
    pub const fn with(mut self, kind: RejectionKind, on: bool) -> Self {
        match kind {
            RejectionKind::Elapsed => self.elapsed = on,
            RejectionKind::CircuitOpen => self.circuit_open = on,
            RejectionKind::RateLimited => self.rate_limited = on,
            RejectionKind::Overloaded => self.overloaded = on,
            RejectionKind::RetriesExhausted => self.retries_exhausted = on,
        }
        self
    }

    /// Whether a rejection of `kind` triggers.
    pub const fn fires_on(&self, kind: RejectionKind) -> bool {
        match kind {
            RejectionKind::Elapsed => self.elapsed,
            RejectionKind::CircuitOpen => self.circuit_open,
            RejectionKind::RateLimited => self.rate_limited,
            RejectionKind::Overloaded => self.overloaded,
            RejectionKind::RetriesExhausted => self.retries_exhausted,
        }
    }

    /// What in `result` triggers a degraded answer, if anything.
    ///
    /// Rejections are judged by kind, whatever the classifier says (they are not the
    /// service's answer); everything else by the classifier. An `Overloaded` rejection that
    /// carries a priority came from a load shedder and is reported as [`Trigger::Shed`].
    pub(crate) fn check<Res, E, C>(
        &self,
        classifier: &C,
        result: &Result<Res, E>,
    ) -> Option<Trigger>
    where
        E: AsRejection,
        C: Classify<Res, E>,
    {
        if let Err(e) = result
            && let Some(rejection) = e.as_rejection()
        {
            let kind = rejection.kind();
            if !self.fires_on(kind) {
                return None;
            }
            return Some(match rejection {
                Rejection::Overloaded(o) => {
                    o.priority().map_or(Trigger::Rejected(kind), Trigger::Shed)
                }
                _ => Trigger::Rejected(kind),
            });
        }
        (self.failure && classifier.classify(result).is_failure()).then_some(Trigger::Failure)
    }
}

impl Default for Triggers {
    fn default() -> Self {
        Self::all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::{BoxError, CircuitOpen, DefaultClassifier, Name, Overloaded, Priority};

    #[test]
    fn rejections_are_judged_by_kind_and_shedding_by_priority() {
        let t = Triggers::all().with(RejectionKind::CircuitOpen, false);
        let open: Result<(), BoxError> = Err(CircuitOpen::new(Name::new("c"), None).into());
        assert_eq!(t.check(&DefaultClassifier, &open), None);
        let shed: Result<(), BoxError> = Err(Overloaded::new(Name::new("s"), "max in-flight")
            .with_priority(Priority::Sheddable)
            .into());
        assert_eq!(
            t.check(&DefaultClassifier, &shed),
            Some(Trigger::Shed(Priority::Sheddable))
        );
        let full: Result<(), BoxError> = Err(Overloaded::new(Name::new("s"), "queue full").into());
        assert_eq!(
            t.check(&DefaultClassifier, &full),
            Some(Trigger::Rejected(RejectionKind::Overloaded))
        );
        let failed: Result<(), BoxError> = Err("boom".into());
        assert_eq!(t.check(&DefaultClassifier, &failed), Some(Trigger::Failure));
        assert_eq!(
            Triggers::rejections_only().check(&DefaultClassifier, &failed),
            None
        );
        assert_eq!(t.check(&DefaultClassifier, &Ok::<(), BoxError>(())), None);
    }
}

/// [`Triggers`] in one atomic, so a handle can change them while calls read them (one
/// relaxed load, on the failure path only).
#[derive(Debug)]
pub(crate) struct AtomicTriggers(std::sync::atomic::AtomicU8);

impl AtomicTriggers {
    pub(crate) fn new(triggers: Triggers) -> Self {
        Self(std::sync::atomic::AtomicU8::new(Self::bits(triggers)))
    }

    fn bits(t: Triggers) -> u8 {
        [
            t.failure,
            t.elapsed,
            t.circuit_open,
            t.rate_limited,
            t.overloaded,
            t.retries_exhausted,
        ]
        .iter()
        .enumerate()
        .fold(0, |acc, (i, on)| acc | (u8::from(*on) << i))
    }

    pub(crate) fn load(&self) -> Triggers {
        let b = self.0.load(std::sync::atomic::Ordering::Relaxed);
        let on = |i: u8| b & (1 << i) != 0;
        Triggers {
            failure: on(0),
            elapsed: on(1),
            circuit_open: on(2),
            rate_limited: on(3),
            overloaded: on(4),
            retries_exhausted: on(5),
        }
    }

    pub(crate) fn store(&self, triggers: Triggers) {
        self.0
            .store(Self::bits(triggers), std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod atomic_tests {
    use super::*;

    #[test]
    fn every_combination_round_trips() {
        let kinds = [
            RejectionKind::Elapsed,
            RejectionKind::CircuitOpen,
            RejectionKind::RateLimited,
            RejectionKind::Overloaded,
            RejectionKind::RetriesExhausted,
        ];
        for bits in 0u8..64 {
            let mut t = Triggers::none();
            t.failure = bits & 1 != 0;
            for (i, k) in kinds.iter().enumerate() {
                t = t.with(*k, bits & (2 << i) != 0);
            }
            let a = AtomicTriggers::new(Triggers::all());
            a.store(t);
            assert_eq!(a.load(), t);
        }
    }
}
