//! The rejections: what a layer returns instead of calling the service.
//!
//! Each rejection is an opaque struct carrying the data a caller needs next (the layer's
//! name, how long to wait) with a lower-case message that says what happened and what to
//! do. Layers never wrap the inner error in an enum of their own; they return
//! `S::Error::from(rejection)`, so the same rejection can be found in a
//! [`BoxError`](crate::BoxError) (by downcasting, or with [`find_rejection`]) and in
//! [`Error<E>`](crate::Error) (by matching its variant).

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::{Name, Priority};

// ===== Elapsed =====

/// A timeout layer gave up waiting: the call took longer than its timeout (or than the time
/// left before the request's deadline) and was cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elapsed {
    name: Name,
    timeout: Duration,
}

impl Elapsed {
    /// A timeout of `timeout` elapsed in the layer called `name`.
    pub fn new(name: Name, timeout: Duration) -> Self {
        Self { name, timeout }
    }

    /// The name of the layer that timed out.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The timeout that elapsed: the configured duration, or the shorter time that was left
    /// before the request's deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timeout '{}' elapsed after {:?}; the call was cancelled",
            self.name, self.timeout
        )
    }
}

impl StdError for Elapsed {}

// ===== CircuitOpen =====

/// A circuit breaker rejected the call without sending it: the backend is failing and the
/// breaker is giving it room to recover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOpen {
    name: Name,
    retry_after: Option<Duration>,
}

impl CircuitOpen {
    /// The breaker `name` is open and will admit a probe after `retry_after`
    /// (`None`: it was forced open and stays open until an operator closes it).
    pub fn new(name: Name, retry_after: Option<Duration>) -> Self {
        Self { name, retry_after }
    }

    /// The name of the breaker.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// How long until the breaker admits a probe call; `None` when forced open.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_after {
            Some(d) if d < Duration::from_secs(1) => write!(
                f,
                "circuit '{}' is open; next probe in {}ms",
                self.name,
                // rounded up: a caller that waits what it is told never comes back early
                d.as_nanos().div_ceil(1_000_000)
            ),
            Some(d) => write!(
                f,
                "circuit '{}' is open; next probe in {:.1}s",
                self.name,
                d.as_secs_f64()
            ),
            None => write!(
                f,
                "circuit '{}' is forced open; it stays open until an operator closes it",
                self.name
            ),
        }
    }
}

impl StdError for CircuitOpen {}

// ===== RateLimited =====

/// A rate limiter rejected the call: the quota is used up for now, or (see
/// [`RateLimited::is_permanent`]) the request costs more than the limiter can ever admit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    name: Name,
    retry_after: Duration,
    capacity: Option<(u64, u64)>,
}

impl RateLimited {
    /// The limiter `name` is out of quota; a call may succeed after `retry_after`.
    pub fn new(name: Name, retry_after: Duration) -> Self {
        Self {
            name,
            retry_after,
            capacity: None,
        }
    }

    /// The limiter `name` can never admit this request: it costs `cost` cells and the burst
    /// holds only `burst` (as governor's `InsufficientCapacity`). Waiting does not help, so
    /// [`retry_after`](Self::retry_after) is `Duration::MAX` and retry layers do not retry it.
    pub fn insufficient_capacity(name: Name, cost: u64, burst: u64) -> Self {
        Self {
            name,
            retry_after: Duration::MAX,
            capacity: Some((cost, burst)),
        }
    }

    /// The name of the limiter.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// How long until the quota admits this call again (the exact wait the limiter computed);
    /// `Duration::MAX` when it never will ([`is_permanent`](Self::is_permanent)).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `true` when the request costs more than the limiter's burst: it can never be admitted
    /// and must not be retried.
    pub fn is_permanent(&self) -> bool {
        self.capacity.is_some()
    }

    /// For a permanent refusal, the request's cost and the limiter's burst.
    pub fn insufficient(&self) -> Option<(u64, u64)> {
        self.capacity
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.capacity {
            Some((cost, burst)) => write!(
                f,
                "rate limit '{}' can never admit a request costing {cost} cells (its burst is \
                 {burst}); split the request or raise the burst",
                self.name
            ),
            None => write!(
                f,
                "rate limit '{}' exceeded; retry after {:?}",
                self.name, self.retry_after
            ),
        }
    }
}

impl StdError for RateLimited {}

// ===== Overloaded =====

/// A concurrency limit, a queue or a load shedder refused the call to protect the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overloaded {
    name: Name,
    limit: &'static str,
    priority: Option<Priority>,
}

impl Overloaded {
    /// The layer `name` refused the call because of `limit`, a short description of which
    /// limit was hit (`"max in-flight"`, `"queue full"`, `"max wait"`, `"queueing delay"`).
    pub fn new(name: Name, limit: &'static str) -> Self {
        Self {
            name,
            limit,
            priority: None,
        }
    }

    /// The same rejection, recording the priority of the request that was shed.
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// The name of the layer that refused the call.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Which limit was hit.
    pub fn limit(&self) -> &'static str {
        self.limit
    }

    /// The priority of the refused request, when a load shedder refused it.
    pub fn priority(&self) -> Option<Priority> {
        self.priority
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is overloaded ({})", self.name, self.limit)?;
        if let Some(p) = self.priority {
            write!(f, "; {p} request shed")?;
        }
        f.write_str("; back off and retry later")
    }
}

impl StdError for Overloaded {}

// ===== RetriesExhausted =====

/// A retry or hedging layer gave up without a result of its own to return. palisade-retry
/// itself always returns the last attempt's result unchanged; this rejection is for layers
/// that have no result to return (a hedge whose copies were all refused, a user's own
/// retry loop) and is what retry's default classifier refuses to retry again (retrying a
/// nested retry multiplies load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetriesExhausted {
    name: Name,
    attempts: u32,
}

impl RetriesExhausted {
    /// The retry layer `name` gave up after `attempts` attempts.
    pub fn new(name: Name, attempts: u32) -> Self {
        Self { name, attempts }
    }

    /// The name of the retry layer.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl fmt::Display for RetriesExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retry '{}' gave up after {} attempt(s)",
            self.name, self.attempts
        )
    }
}

impl StdError for RetriesExhausted {}

// ===== finding rejections =====

/// Which kind of rejection, without its data: for configs that say which rejections should
/// trigger a fallback, a retry or a breaker failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum RejectionKind {
    /// [`Elapsed`]
    Elapsed,
    /// [`CircuitOpen`]
    CircuitOpen,
    /// [`RateLimited`]
    RateLimited,
    /// [`Overloaded`]
    Overloaded,
    /// [`RetriesExhausted`]
    RetriesExhausted,
}

/// A borrowed rejection found in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection<'a> {
    /// A timeout elapsed.
    Elapsed(&'a Elapsed),
    /// A circuit breaker is open.
    CircuitOpen(&'a CircuitOpen),
    /// A rate limit was exceeded.
    RateLimited(&'a RateLimited),
    /// A limit or shedder refused the call.
    Overloaded(&'a Overloaded),
    /// A retry layer gave up.
    RetriesExhausted(&'a RetriesExhausted),
}

impl Rejection<'_> {
    /// The kind of this rejection.
    pub fn kind(&self) -> RejectionKind {
        match self {
            Rejection::Elapsed(_) => RejectionKind::Elapsed,
            Rejection::CircuitOpen(_) => RejectionKind::CircuitOpen,
            Rejection::RateLimited(_) => RejectionKind::RateLimited,
            Rejection::Overloaded(_) => RejectionKind::Overloaded,
            Rejection::RetriesExhausted(_) => RejectionKind::RetriesExhausted,
        }
    }

    /// The name of the layer that rejected.
    pub fn name(&self) -> &Name {
        match self {
            Rejection::Elapsed(r) => r.name(),
            Rejection::CircuitOpen(r) => r.name(),
            Rejection::RateLimited(r) => r.name(),
            Rejection::Overloaded(r) => r.name(),
            Rejection::RetriesExhausted(r) => r.name(),
        }
    }

    /// The server-side hint of when to try again, where the rejection has one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::CircuitOpen(r) => r.retry_after(),
            Rejection::RateLimited(r) if !r.is_permanent() => Some(r.retry_after()),
            _ => None,
        }
    }

    /// `true` for a refusal made before the call was sent, by a layer that never sends
    /// refused calls (an open circuit, a full concurrency limit): retrying it adds no load
    /// to the backend. A rate limit is not one: it may be the upstream's own `429`, mapped.
    pub fn never_sent(&self) -> bool {
        matches!(self, Rejection::CircuitOpen(_) | Rejection::Overloaded(_))
    }

    /// `true` when waiting cannot help (a request costing more than a limiter's burst): retry
    /// layers do not retry it.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Rejection::RateLimited(r) if r.is_permanent())
    }
}

/// Errors that may hold a palisade rejection: implemented for [`BoxError`](crate::BoxError)
/// (searching its `source()` chain) and for [`Error<E>`](crate::Error).
///
/// Layers that react to rejections of inner layers (retry does not retry an open circuit;
/// fallback answers for a rate-limited call) use this to look, whatever the error type.
pub trait AsRejection {
    /// The rejection this error is or wraps, if any.
    fn as_rejection(&self) -> Option<Rejection<'_>>;
}

impl AsRejection for crate::BoxError {
    fn as_rejection(&self) -> Option<Rejection<'_>> {
        find_rejection(&**self)
    }
}

impl AsRejection for dyn StdError + Send + Sync + 'static {
    fn as_rejection(&self) -> Option<Rejection<'_>> {
        find_rejection(self)
    }
}

/// Find a palisade rejection in an error or anywhere in its `source()` chain.
///
/// ```
/// use palisade_core::{find_rejection, BoxError, Name, RateLimited, Rejection};
/// use std::time::Duration;
///
/// let err: BoxError = RateLimited::new(Name::new("api"), Duration::from_secs(2)).into();
/// match find_rejection(&*err) {
///     Some(Rejection::RateLimited(r)) => assert_eq!(r.retry_after(), Duration::from_secs(2)),
///     other => panic!("expected a rate limit, got {other:?}"),
/// }
/// ```
pub fn find_rejection<'a>(err: &'a (dyn StdError + 'static)) -> Option<Rejection<'a>> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = as_rejection_here(e) {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

fn as_rejection_here<'a>(e: &'a (dyn StdError + 'static)) -> Option<Rejection<'a>> {
    if let Some(r) = e.downcast_ref::<Elapsed>() {
        return Some(Rejection::Elapsed(r));
    }
    if let Some(r) = e.downcast_ref::<CircuitOpen>() {
        return Some(Rejection::CircuitOpen(r));
    }
    if let Some(r) = e.downcast_ref::<RateLimited>() {
        return Some(Rejection::RateLimited(r));
    }
    if let Some(r) = e.downcast_ref::<Overloaded>() {
        return Some(Rejection::Overloaded(r));
    }
    e.downcast_ref::<RetriesExhausted>()
        .map(Rejection::RetriesExhausted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn finds_rejection_deep_in_a_chain() {
        let open: BoxError = CircuitOpen::new(Name::new("db"), None).into();
        let err: BoxError = Box::new(Wrapper(Box::new(Wrapper(open))));
        let r = err.as_rejection().expect("rejection in chain");
        assert_eq!(r.kind(), RejectionKind::CircuitOpen);
        assert_eq!(r.name().as_str(), "db");
        assert_eq!(r.retry_after(), None);
    }

    #[test]
    fn plain_errors_hold_no_rejection() {
        let err: BoxError = "boom".into();
        assert!(err.as_rejection().is_none());
    }

    #[test]
    fn messages_name_the_layer() {
        let cases: Vec<(BoxError, &str)> = vec![
            (
                Elapsed::new("t".into(), Duration::from_secs(1)).into(),
                "'t'",
            ),
            (
                CircuitOpen::new("c".into(), Some(Duration::from_millis(4200))).into(),
                "4.2s",
            ),
            (
                RateLimited::new("r".into(), Duration::from_secs(1)).into(),
                "'r'",
            ),
            (
                Overloaded::new("o".into(), "max in-flight")
                    .with_priority(Priority::Sheddable)
                    .into(),
                "sheddable",
            ),
            (RetriesExhausted::new("x".into(), 3).into(), "3 attempt"),
            (
                CircuitOpen::new("c".into(), Some(Duration::from_micros(40_100))).into(),
                "next probe in 41ms",
            ),
            (
                RateLimited::insufficient_capacity("big".into(), 1_000_000, 1_000).into(),
                "never admit a request costing 1000000",
            ),
        ];
        for (err, needle) in cases {
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }
}
