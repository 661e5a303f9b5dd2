//! Deadlines: an absolute point in (tokio) time by which a request must be answered.
//!
//! A deadline travels with the request in two ways:
//!
//! - **In process, ambiently.** A timeout layer makes its deadline current while the
//!   layers and the service inside it run (while their `call` runs and while their futures
//!   are polled), so any inner layer reads it with [`Deadline::current`], whatever the
//!   request type. A per-attempt timeout inside a retry takes the smaller of its own
//!   duration and the time left; a retry never sleeps past it.
//! - **On the request, explicitly.** Request types that cross a boundary (an HTTP request
//!   to another service, a job handed to another task) implement [`RequestDeadline`];
//!   `palisade-timeout`'s `DeadlineLayer` copies between the two. Behind the `http` feature,
//!   `http::Request` implements it through its extensions.
//!
//! The ambient deadline is set for the duration of each synchronous `call` and `poll`, not
//! for the task, so it is correct when futures move between threads and nests cleanly: an
//! inner scope can only shorten it.
//!
//! The same per-poll discipline lets timers be shared: a future that arms a timer reports
//! it while it is polled ([`TimerReport`]), and an enclosing timeout that sees one firing
//! by its own deadline arms none of its own ([`watch_timers`]).

use std::cell::Cell;
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

/// An absolute deadline on tokio's clock.
///
/// ```
/// use palisade_core::Deadline;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let deadline = Deadline::after(Duration::from_secs(2));
/// assert_eq!(Deadline::current(), None);
/// deadline.scope(|| {
///     let now = Deadline::current().expect("inside the scope");
///     assert_eq!(now, deadline);
/// });
/// tokio::time::advance(Duration::from_secs(3)).await;
/// assert!(deadline.is_expired());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

thread_local! {
    static CURRENT: Cell<Option<Deadline>> = const { Cell::new(None) };
    /// The instant the innermost enclosing timeout's `call` read the clock at, while that
    /// `call` runs (see [`now`]).
    static CALL_NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

impl Deadline {
    /// The deadline at `instant`.
    pub const fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// The deadline `duration` from now (saturating far in the future).
    pub fn after(duration: Duration) -> Self {
        Self(crate::time::add(Instant::now(), duration))
    }

    /// The instant of the deadline.
    pub const fn instant(self) -> Instant {
        self.0
    }

    /// Time left until the deadline, zero once it has passed.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Time left until the deadline as seen from `now`.
    pub fn remaining_at(self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }

    /// `true` once the deadline has passed.
    pub fn is_expired(self) -> bool {
        Instant::now() >= self.0
    }

    /// The earlier of two optional deadlines.
    #[inline]
    pub fn earliest(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, None) => a,
            (None, b) => b,
        }
    }

    /// The deadline in effect for the code running now, if any layer set one.
    #[inline]
    pub fn current() -> Option<Deadline> {
        CURRENT.with(Cell::get)
    }

    /// Run `f` with this deadline in effect (or the current one, if that is earlier).
    #[inline]
    pub fn scope<R>(self, f: impl FnOnce() -> R) -> R {
        scope(Some(self), f)
    }
}

/// Run `f` with `deadline` in effect, keeping the current deadline if it is earlier.
/// `None` leaves the current deadline unchanged. The previous deadline is restored when
/// `f` returns or unwinds.
#[inline]
pub fn scope<R>(deadline: Option<Deadline>, f: impl FnOnce() -> R) -> R {
    let Some(deadline) = deadline else {
        return f();
    };
    let previous = CURRENT.with(Cell::get);
    let effective = Deadline::earliest(previous, Some(deadline));
    let _restore = Restore(previous);
    CURRENT.with(|c| c.set(effective));
    f()
}

struct Restore(Option<Deadline>);

impl Drop for Restore {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// The current instant for a layer's `call`: the instant an enclosing layer's `call` read
/// the clock at, if the code runs synchronously inside one ([`call_scope`]), else a fresh
/// read of tokio's clock.
///
/// A call passes through the layers of a stack in well under a microsecond, so the
/// enclosing layer's reading stands for "now" in every `call` inside it, and a stack of
/// timeouts reads the clock once per call instead of once per layer. Only `call`s share
/// it: a future polled later (a retry's next attempt, a call behind a `Buffer`) reads the
/// clock afresh.
///
/// ```
/// use palisade_core::deadline::{self, Deadline};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let start = Instant::now();
/// tokio::time::advance(Duration::from_secs(1)).await;
/// // Inside an enclosing call that read the clock at `start`: that reading.
/// deadline::call_scope(None, Some(start), || assert_eq!(deadline::now(), start));
/// // Outside: the clock.
/// assert_eq!(deadline::now(), start + Duration::from_secs(1));
/// # }
/// ```
#[inline]
pub fn now() -> Instant {
    CALL_NOW.with(Cell::get).unwrap_or_else(Instant::now)
}

/// [`scope`] for a layer's `call`: runs `f` with `deadline` in effect and, when the layer
/// read the clock (`now`), with that reading as [`now`] for the `call`s inside.
#[inline]
pub fn call_scope<R>(deadline: Option<Deadline>, now: Option<Instant>, f: impl FnOnce() -> R) -> R {
    let Some(now) = now else {
        return scope(deadline, f);
    };
    let previous = CALL_NOW.with(|c| c.replace(Some(now)));
    let _restore = RestoreNow(previous);
    scope(deadline, f)
}

struct RestoreNow(Option<Instant>);

impl Drop for RestoreNow {
    #[inline]
    fn drop(&mut self) {
        CALL_NOW.with(|c| c.set(self.0));
    }
}

// ===== timers armed inside a poll =====

thread_local! {
    /// The timer last reported armed by a future polled inside the current poll (see
    /// [`watch_timers`]): when it fires and which waker it wakes.
    static ARMED: Cell<Option<Armed>> = const { Cell::new(None) };
}

/// A timer reported armed: when it fires, and the identity of the waker it wakes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Armed {
    at: Instant,
    data: usize,
    vtable: usize,
}

impl Armed {
    #[inline]
    fn wakes(&self, waker: &Waker) -> bool {
        self.data == waker.data() as usize
            && self.vtable == std::ptr::from_ref(waker.vtable()) as usize
    }
}

/// Start watching for timers armed by the futures about to be polled: call it right
/// before polling the inner future, and [`armed_timer`] after that poll returned
/// `Pending`.
///
/// This lets a timeout skip a timer of its own when one armed inside it already wakes the
/// task by its deadline: in a stack of timeouts (an overall deadline over a per-attempt
/// timeout) a pending call then registers one timer, not one per layer. The contract, for
/// a future that reports its timer:
///
/// - report it with [`timer_armed`] after polling it returned `Pending`, with the waker of
///   that poll's context and the instant it fires at;
/// - call [`timer_dropped`] when the future is dropped, if it ever reported one.
///
/// A [`TimerReport`] held in the future does both. A future that relies on a timer armed
/// inside it (as [`armed_timer`] gave it) reports nothing more: the record already holds
/// that timer for the watchers further out.
///
/// A watcher can rely on what it reads: the timer belongs to a future inside the one it
/// polled (the record is cleared here, before that poll), so that timer stays armed until
/// the watcher polls again or drops its inner future, and it wakes the same task (the same
/// waker, by identity: a combinator that gives its children wakers of their own, such as
/// `FuturesUnordered`, hides their timers). Reading nothing only costs the watcher a
/// timer of its own.
///
/// ```
/// use palisade_core::deadline::{armed_timer, timer_armed, timer_dropped, watch_timers};
/// use std::task::Waker;
/// use tokio::time::{Duration, Instant};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let waker = Waker::noop();
/// let at = Instant::now() + Duration::from_millis(300);
/// watch_timers();
/// // ... an inner future is polled; it arms a timer at `at`, returns `Pending`, and says so:
/// timer_armed(waker, at);
/// // The watcher, whose own deadline is 2 s away, needs no timer of its own.
/// assert_eq!(armed_timer(waker), Some(at));
/// // Dropped, the inner future takes its report back.
/// timer_dropped();
/// assert_eq!(armed_timer(waker), None);
/// # }
/// ```
#[inline]
pub fn watch_timers() {
    ARMED.with(|a| a.set(None));
}

/// Report a timer armed by the future just polled: it fires at `at` and wakes `waker`
/// (see [`watch_timers`]).
#[inline]
pub fn timer_armed(waker: &Waker, at: Instant) {
    let armed = Armed {
        at,
        data: waker.data() as usize,
        vtable: std::ptr::from_ref(waker.vtable()) as usize,
    };
    ARMED.with(|a| a.set(Some(armed)));
}

/// The timer reported armed since [`watch_timers`], if it wakes `waker`: when it fires.
#[inline]
pub fn armed_timer(waker: &Waker) -> Option<Instant> {
    ARMED
        .with(Cell::get)
        .filter(|armed| armed.wakes(waker))
        .map(|armed| armed.at)
}

/// What a future that reports its timer holds: [`armed`](Self::armed) reports the timer
/// ([`timer_armed`]), and dropping it takes any report back ([`timer_dropped`]), as the
/// contract in [`watch_timers`] asks. Keep it next to the timer, in the future.
///
/// ```
/// use palisade_core::deadline::{TimerReport, armed_timer, watch_timers};
/// use std::task::Waker;
/// use tokio::time::{Duration, Instant};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let at = Instant::now() + Duration::from_millis(300);
/// let mut report = TimerReport::default();
/// watch_timers();
/// report.armed(Waker::noop(), at);
/// assert_eq!(armed_timer(Waker::noop()), Some(at));
/// drop(report);
/// assert_eq!(armed_timer(Waker::noop()), None);
/// # }
/// ```
#[derive(Debug, Default)]
pub struct TimerReport(bool);

impl TimerReport {
    /// Report the timer: it fires at `at` and wakes `waker` (the waker of the poll that
    /// just found it pending).
    #[inline]
    pub fn armed(&mut self, waker: &Waker, at: Instant) {
        timer_armed(waker, at);
        self.0 = true;
    }
}

impl Drop for TimerReport {
    #[inline]
    fn drop(&mut self) {
        if self.0 {
            timer_dropped();
        }
    }
}

/// A future that reported a timer with [`timer_armed`] is dropped, its timer with it:
/// forget the report (whichever timer it was: forgetting another only costs its watcher a
/// timer of its own).
#[inline]
pub fn timer_dropped() {
    ARMED.with(|a| a.set(None));
}

/// Request types that carry their deadline with them (across a task or process boundary).
///
/// ```
/// use palisade_core::{Deadline, RequestDeadline};
///
/// struct Job { payload: Vec<u8>, deadline: Option<Deadline> }
///
/// impl RequestDeadline for Job {
///     fn deadline(&self) -> Option<Deadline> { self.deadline }
///     fn set_deadline(&mut self, deadline: Deadline) { self.deadline = Some(deadline); }
/// }
/// ```
pub trait RequestDeadline {
    /// The deadline the request carries, if any.
    fn deadline(&self) -> Option<Deadline>;
    /// Store `deadline` on the request.
    fn set_deadline(&mut self, deadline: Deadline);
}

#[cfg(feature = "http")]
impl<B> RequestDeadline for http::Request<B> {
    fn deadline(&self) -> Option<Deadline> {
        self.extensions().get::<Deadline>().copied()
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.extensions_mut().insert(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn nested_scopes_only_shorten_and_restore() {
        let long = Deadline::after(Duration::from_secs(10));
        let short = Deadline::after(Duration::from_secs(1));
        long.scope(|| {
            assert_eq!(Deadline::current(), Some(long));
            short.scope(|| assert_eq!(Deadline::current(), Some(short)));
            assert_eq!(Deadline::current(), Some(long));
            // an inner, later deadline cannot extend the outer one
            Deadline::after(Duration::from_secs(60))
                .scope(|| assert_eq!(Deadline::current(), Some(long)));
        });
        assert_eq!(Deadline::current(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn call_scopes_share_the_reading_and_restore_it() {
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        let t1 = Instant::now();
        assert_eq!(now(), t1, "outside any call: the clock");
        call_scope(None, Some(t0), || {
            assert_eq!(now(), t0);
            // An inner layer that read nothing keeps the outer reading.
            call_scope(None, None, || assert_eq!(now(), t0));
            // One that did (a poll path reading afresh) shares its own inside.
            call_scope(None, Some(t1), || assert_eq!(now(), t1));
            assert_eq!(now(), t0, "restored");
        });
        assert_eq!(now(), t1, "restored after the call");
        let r = std::panic::catch_unwind(|| call_scope(None, Some(t0), || panic!("inside")));
        assert!(r.is_err());
        assert_eq!(now(), t1, "restored on unwind");
    }

    #[tokio::test(start_paused = true)]
    async fn scope_restores_on_unwind() {
        let d = Deadline::after(Duration::from_secs(1));
        let r = std::panic::catch_unwind(|| d.scope(|| panic!("inside")));
        assert!(r.is_err());
        assert_eq!(Deadline::current(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down_exactly() {
        let start = Instant::now();
        let d = Deadline::after(Duration::from_millis(500));
        assert!(!d.is_expired());
        assert_eq!(d.remaining(), Duration::from_millis(500));
        assert_eq!(
            d.remaining_at(start + Duration::from_millis(200)),
            Duration::from_millis(300)
        );
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(!d.is_expired());
        assert_eq!(d.remaining(), Duration::from_millis(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(d.is_expired(), "expired at the instant itself");
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_saturates() {
        let d = Deadline::after(Duration::from_millis(5));
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(d.remaining(), Duration::ZERO);
        assert!(d.is_expired());
    }

    #[cfg(feature = "http")]
    #[tokio::test(start_paused = true)]
    async fn http_requests_carry_a_deadline() {
        let mut req = http::Request::new(());
        assert_eq!(req.deadline(), None);
        let d = Deadline::after(Duration::from_secs(1));
        req.set_deadline(d);
        assert_eq!(RequestDeadline::deadline(&req), Some(d));
    }
}
