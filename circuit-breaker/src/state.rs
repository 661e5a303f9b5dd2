//! The breaker itself: one atomic state word, the window, the half-open probe counter and
//! the transitions. Every decision takes `now` as an argument (a closure, so the clock is
//! read only when a decision needs it), so the whole state machine is tested without a
//! runtime; the service only feeds it.

use std::cell::Cell;
use std::time::Duration;

use palisade_core::{ConfigError, Emitter, Outcome, time};
use tokio::time::Instant;

use crate::config::{CircuitBreakerConfig, SlidingWindow};
use crate::event::{CircuitBreakerEvent, Metrics, State, TransitionReason, trace_transition};
use crate::sync::{AtomicU32, AtomicU64, Mutex, Ordering, Padded, lock};
use crate::window::{CountWindow, Counts, TimeWindow, Window, percent};

// ===== the state word =====

/// `state` (3 bits) | `metrics_only` (1 bit) | `epoch` (60 bits). Every transition bumps
/// the epoch, so a permit knows whether the state it was admitted under still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word(u64);

const STATE_MASK: u64 = 0b111;
const METRICS_ONLY: u64 = 0b1000;
const EPOCH_SHIFT: u32 = 4;

impl Word {
    fn new(state: State, metrics_only: bool, epoch: u64) -> Self {
        let flag = if metrics_only { METRICS_ONLY } else { 0 };
        Self(state.index() as u64 | flag | (epoch << EPOCH_SHIFT))
    }

    #[inline]
    fn state(self) -> State {
        match self.0 & STATE_MASK {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::Disabled,
        }
    }

    #[inline]
    fn metrics_only(self) -> bool {
        self.0 & METRICS_ONLY != 0
    }

    #[inline]
    fn epoch(self) -> u64 {
        self.0 >> EPOCH_SHIFT
    }
}

// ===== the probe word =====

/// Half-open bookkeeping in one word, tagged with (the low bits of) the half-open epoch so a
/// late probe of an earlier half-open period cannot touch the current one:
/// `issued` (12) | `done` (12) | `failures` (12) | `slow` (12) | `tag` (16).
const PROBE_FIELD: u32 = 12;
const PROBE_MASK: u64 = (1 << PROBE_FIELD) - 1;
const DONE_ONE: u64 = 1 << PROBE_FIELD;
const FAIL_ONE: u64 = 1 << (2 * PROBE_FIELD);
const SLOW_ONE: u64 = 1 << (3 * PROBE_FIELD);
const TAG_SHIFT: u32 = 48;

/// Probes a half-open period may add beyond `half_open_probes`, one per open interval while
/// every probe is out (`half_open_probes` ≤ 1000, so `issued` stays within its 12 bits).
pub(crate) const PACED_PROBES: u64 = 64;

fn probe_tag(epoch: u64) -> u64 {
    epoch & 0xFFFF
}

fn probe_field(p: u64, i: u32) -> u64 {
    (p >> (i * PROBE_FIELD)) & PROBE_MASK
}

// ===== permits =====

/// Admission of one call: which state admitted it, and how its outcome is recorded.
/// Hand it back with [`Breaker::record`] or [`Breaker::cancel`].
#[derive(Debug)]
#[must_use]
pub(crate) struct Permit {
    epoch: u64,
    pub(crate) kind: PermitKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PermitKind {
    /// Closed or disabled: the outcome goes into the window.
    Window,
    /// A half-open probe: the outcome decides between closing and re-opening.
    Probe,
    /// Let through by metrics-only mode while the breaker would reject: not recorded.
    Unrecorded,
}

/// Reads the clock at most once, and only if asked.
struct LazyNow<F> {
    clock: F,
    at: Cell<Option<Instant>>,
}

impl<F: Fn() -> Instant> LazyNow<F> {
    fn new(clock: F) -> Self {
        Self {
            clock,
            at: Cell::new(None),
        }
    }

    fn get(&self) -> Instant {
        if let Some(at) = self.at.get() {
            return at;
        }
        let at = (self.clock)();
        self.at.set(Some(at));
        at
    }
}

/// A snapshot of a breaker's window and state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSnapshot {
    /// The state.
    pub state: State,
    /// Whether the breaker is in metrics-only mode (never rejects).
    pub metrics_only: bool,
    /// Calls in the window (successes and failures; ignored calls are not counted).
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// Failure rate of the window, percent.
    pub failure_rate: f64,
    /// Slow-call rate of the window, percent.
    pub slow_call_rate: f64,
    /// Failures in a row (counted only when a consecutive-failure threshold is set).
    pub consecutive_failures: u32,
}

// ===== settings =====

/// The thresholds the per-call path reads, as atomics so a config update reaches every
/// thread without a lock. Rate thresholds are kept in thousandths of a percent and compared
/// with integer multiplications (no float division per call): a threshold is applied with
/// 0.001 percentage-point precision.
#[derive(Debug)]
struct Settings {
    failure_rate: AtomicU64,
    slow_rate: AtomicU64,
    slow_nanos: AtomicU64,
    min_calls: AtomicU32,
    consecutive: AtomicU32,
    probes: AtomicU32,
    /// How long a probe may hold its permit, nanoseconds (saturated: "never").
    probe_nanos: AtomicU64,
}

const OFF: u64 = u64::MAX;

impl Settings {
    fn new(c: &CircuitBreakerConfig) -> Self {
        let s = Self {
            failure_rate: AtomicU64::new(0),
            slow_rate: AtomicU64::new(0),
            slow_nanos: AtomicU64::new(OFF),
            min_calls: AtomicU32::new(0),
            consecutive: AtomicU32::new(0),
            probes: AtomicU32::new(0),
            probe_nanos: AtomicU64::new(0),
        };
        s.store(c);
        s
    }

    fn store(&self, c: &CircuitBreakerConfig) {
        let r = Ordering::Relaxed;
        self.failure_rate
            .store(milli_percent(c.failure_rate_threshold), r);
        self.slow_rate
            .store(milli_percent(c.slow_call_rate_threshold), r);
        // `OFF` means "not tracked": a duration that long means "never slow", one less.
        let slow = c
            .slow_call_duration
            .map_or(OFF, |d| time::nanos(d).min(OFF - 1));
        self.slow_nanos.store(slow, r);
        self.min_calls.store(c.minimum_calls(), r);
        self.consecutive
            .store(c.consecutive_failures.unwrap_or(0), r);
        self.probes.store(c.half_open_probes, r);
        self.probe_nanos.store(time::nanos(c.max_probe_duration), r);
    }

    /// `part` of `whole` reaches the failure-rate threshold.
    #[inline]
    fn failure_rate_reached(&self, part: u64, whole: u64) -> bool {
        rate_reached(part, whole, self.failure_rate.load(Ordering::Relaxed))
    }

    /// Slow calls are tracked and `part` of `whole` reaches the slow-call-rate threshold.
    #[inline]
    fn slow_rate_reached(&self, part: u64, whole: u64) -> bool {
        self.slow_nanos().is_some()
            && rate_reached(part, whole, self.slow_rate.load(Ordering::Relaxed))
    }

    #[inline]
    fn slow_nanos(&self) -> Option<u64> {
        let n = self.slow_nanos.load(Ordering::Relaxed);
        (n != OFF).then_some(n)
    }
}

/// A percentage in thousandths of a percent (50.0 => 50_000); a threshold above zero but
/// below the precision is the smallest one (0 would be reached by a window of successes).
fn milli_percent(percent: f64) -> u64 {
    ((percent * 1000.0).round() as u64).max(1)
}

/// `part / whole >= threshold` (in thousandths of a percent), without dividing.
#[inline]
fn rate_reached(part: u64, whole: u64, threshold: u64) -> bool {
    whole > 0 && part.saturating_mul(100_000) >= threshold.saturating_mul(whole)
}

// ===== Breaker =====

/// What only transitions touch, behind the transition lock.
#[derive(Debug)]
struct Control {
    config: CircuitBreakerConfig,
    /// Re-opens since the breaker last closed: the exponent of the open-duration backoff.
    reopens: u32,
}

/// One circuit breaker, shared by all clones of its layer and services.
#[derive(Debug)]
pub(crate) struct Breaker {
    /// Read by every call; padded away from the `Arc`'s reference counts, which every call
    /// writes.
    word: Padded<AtomicU64>,
    /// When the open period ends, in nanoseconds since `origin`.
    open_until: AtomicU64,
    /// How long the last open period was, nanoseconds: bounds half-open `retry_after`.
    open_for: AtomicU64,
    probes: AtomicU64,
    /// When the probes out in half-open are due, nanoseconds since `origin`: the last
    /// probe's admission plus the maximum probe duration. Past it, the probes still out
    /// count as failures and the verdict is taken.
    probe_deadline: AtomicU64,
    /// When the newest probe of the half-open period was admitted (or the period began),
    /// nanoseconds since `origin`: paces the probes beyond `half_open_probes`.
    last_probe: AtomicU64,
    consecutive: AtomicU32,
    window: Window,
    settings: Settings,
    origin: Instant,
    control: Mutex<Control>,
    emitter: Emitter<CircuitBreakerEvent>,
    metrics: Metrics,
}

impl Breaker {
    /// A closed breaker; `origin` is the zero of its internal clock (any instant not after
    /// the first `now` it will be given).
    pub(crate) fn new(config: CircuitBreakerConfig, origin: Instant, metrics: Metrics) -> Self {
        let window = match config.window {
            SlidingWindow::Count { size } => Window::Count(CountWindow::new(size)),
            SlidingWindow::Time { duration, buckets } => {
                let width = time::nanos(duration) / u64::from(buckets.max(1));
                Window::Time(TimeWindow::new(width, buckets))
            }
        };
        metrics.set_state(State::Closed);
        Self {
            word: Padded(AtomicU64::new(Word::new(State::Closed, false, 0).0)),
            open_until: AtomicU64::new(0),
            open_for: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            probe_deadline: AtomicU64::new(0),
            last_probe: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            window,
            settings: Settings::new(&config),
            origin,
            emitter: Emitter::new(config.name.clone(), config.listeners.clone()),
            control: Mutex::new(Control { config, reopens: 0 }),
            metrics,
        }
    }

    #[inline]
    fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    fn nanos(&self, at: Instant) -> u64 {
        time::nanos_since(self.origin, at)
    }

    pub(crate) fn add_listener(
        &self,
        listener: impl Fn(&CircuitBreakerEvent) + Send + Sync + 'static,
    ) {
        let listener = std::sync::Arc::new(listener);
        let kept = std::sync::Arc::clone(&listener);
        self.emitter.add_listener(move |e| listener(e));
        lock(&self.control)
            .config
            .listeners
            .push(move |e: &CircuitBreakerEvent| kept(e));
    }

    pub(crate) fn emitter(&self) -> &Emitter<CircuitBreakerEvent> {
        &self.emitter
    }

    /// `true` when outcomes need the call's start time (slow-call tracking is on).
    #[inline]
    pub(crate) fn needs_start(&self) -> bool {
        self.settings.slow_nanos().is_some()
    }

    pub(crate) fn state(&self) -> State {
        self.load().state()
    }

    pub(crate) fn is_metrics_only(&self) -> bool {
        self.load().metrics_only()
    }

    // ===== admission =====

    /// Whether a call now would be refused for sure: forced open, or open (not in
    /// metrics-only mode) with time left in the open period. One load while closed; the
    /// clock is read only while open.
    #[inline]
    pub(crate) fn refuses(&self, now: impl Fn() -> Instant) -> bool {
        let w = self.load();
        match w.state() {
            State::Closed | State::Disabled | State::HalfOpen => false,
            State::ForcedOpen | State::Open => self.refuses_slow(w, now),
        }
    }

    #[cold]
    #[inline(never)]
    fn refuses_slow(&self, w: Word, now: impl Fn() -> Instant) -> bool {
        match w.state() {
            State::ForcedOpen => true,
            State::Open => {
                !w.metrics_only() && self.nanos(now()) < self.open_until.load(Ordering::Acquire)
            }
            _ => false,
        }
    }

    /// Admit a call at `now`, or say how long until a probe will be admitted (`None`:
    /// forced open). The clock is read (once) only in the open and half-open states.
    #[inline]
    pub(crate) fn acquire(&self, now: impl Fn() -> Instant) -> Result<Permit, Option<Duration>> {
        // The closed path, small enough to inline into the service's `call`: one load.
        let w = self.load();
        if matches!(w.state(), State::Closed | State::Disabled) {
            return Ok(Permit {
                epoch: w.epoch(),
                kind: PermitKind::Window,
            });
        }
        self.acquire_slow(now)
    }

    /// [`acquire`](Self::acquire) outside the closed state: open, half-open, forced open.
    #[cold]
    #[inline(never)]
    fn acquire_slow(&self, now: impl Fn() -> Instant) -> Result<Permit, Option<Duration>> {
        let now = LazyNow::new(now);
        let t = || self.nanos(now.get());
        loop {
            let w = self.load();
            let permit = |kind| Permit {
                epoch: w.epoch(),
                kind,
            };
            match w.state() {
                State::Closed | State::Disabled => return Ok(permit(PermitKind::Window)),
                State::ForcedOpen => return self.reject(w, None),
                State::Open => {
                    let t = t();
                    let until = self.open_until.load(Ordering::Acquire);
                    if t < until {
                        return self.reject(w, Some(Duration::from_nanos(until - t)));
                    }
                    // Open => HalfOpen: the open duration has passed; this call may be a probe.
                    self.transition(
                        Some(w.epoch()),
                        State::HalfOpen,
                        TransitionReason::OpenDurationElapsed,
                        t,
                    );
                }
                State::HalfOpen => match self.try_probe(w, &t) {
                    Some(true) => return Ok(permit(PermitKind::Probe)),
                    // Every probe is out: the verdict is due by the probe deadline.
                    Some(false) => {
                        let t = t();
                        let deadline = self.probe_deadline.load(Ordering::Acquire);
                        if t < deadline || !self.expire_probes(w, t) {
                            return self.reject(w, Some(self.half_open_retry_after(t, deadline)));
                        }
                    }
                    None => {}
                },
            }
        }
    }

    /// What a call rejected while every probe is out is told: the time until the probes'
    /// verdict is due (they complete or expire by then), at most a tenth of the open
    /// duration just served, never zero (callers that honour it must not spin).
    fn half_open_retry_after(&self, t: u64, deadline: u64) -> Duration {
        let cap = (self.open_for.load(Ordering::Relaxed) / 10).max(1);
        Duration::from_nanos(deadline.saturating_sub(t).clamp(1, cap))
    }

    /// Refuse (or, in metrics-only mode, let through unrecorded) a call.
    fn reject(&self, w: Word, retry_after: Option<Duration>) -> Result<Permit, Option<Duration>> {
        let enforced = !w.metrics_only() || w.state() == State::ForcedOpen;
        self.emitter.emit(|| CircuitBreakerEvent::CallRejected {
            retry_after,
            enforced,
        });
        if enforced {
            self.metrics.rejected();
            Err(retry_after)
        } else {
            Ok(Permit {
                epoch: w.epoch(),
                kind: PermitKind::Unrecorded,
            })
        }
    }

    /// Take a probe permit: `Some(true)` taken, `Some(false)` none left, `None` the
    /// half-open period of `w` is over.
    /// Each admitted probe moves the probe deadline to `t()` plus the maximum probe
    /// duration (before it takes its permit, so no caller can see the permit taken and the
    /// deadline not yet moved).
    fn try_probe(&self, w: Word, t: &impl Fn() -> u64) -> Option<bool> {
        let max = u64::from(self.settings.probes.load(Ordering::Relaxed));
        let tag = probe_tag(w.epoch());
        let mut p = self.probes.load(Ordering::Acquire);
        loop {
            if p >> TAG_SHIFT != tag {
                return None;
            }
            let issued = probe_field(p, 0);
            if issued >= max && !self.may_pace_probe(issued, max, t) {
                return Some(false);
            }
            self.last_probe.fetch_max(t(), Ordering::AcqRel);
            let due = t().saturating_add(self.settings.probe_nanos.load(Ordering::Relaxed));
            self.probe_deadline.fetch_max(due, Ordering::AcqRel);
            match self
                .probes
                .compare_exchange_weak(p, p + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(true),
                Err(actual) => p = actual,
            }
        }
    }

    /// Every probe is out (`issued` of `max`): one more may go each open interval, up to
    /// [`PACED_PROBES`] beyond `max`, so a probe stuck in a backend that was still slow
    /// when it was sent does not hide that the backend is back. The pace is the open state's
    /// own: a dead backend sees no more probes than while the breaker is open.
    fn may_pace_probe(&self, issued: u64, max: u64, t: &impl Fn() -> u64) -> bool {
        if issued >= max + PACED_PROBES {
            return false;
        }
        // Past the probe deadline the probes out are failures: the verdict comes first.
        let t = t();
        if t >= self.probe_deadline.load(Ordering::Acquire) {
            return false;
        }
        let open_for = self.open_for.load(Ordering::Relaxed);
        t.saturating_sub(self.last_probe.load(Ordering::Acquire)) >= open_for
    }

    // ===== recording =====

    /// Record the outcome of an admitted call that started at `start` (needed only when
    /// slow calls are tracked) and ended at `now`.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "a permit is spent once: taking it by value makes reusing it a compile error"
    )]
    #[inline]
    pub(crate) fn record(
        &self,
        permit: Permit,
        outcome: Outcome,
        start: Option<Instant>,
        now: impl Fn() -> Instant,
    ) {
        let now = LazyNow::new(now);
        let Permit { epoch, kind } = permit;
        match kind {
            PermitKind::Unrecorded => {}
            PermitKind::Window => self.record_window(epoch, outcome, start, &now),
            PermitKind::Probe => self.record_probe(epoch, outcome, start, &now),
        }
    }

    /// A call was dropped before it completed: not evidence either way, but a probe's
    /// permit goes back so half-open cannot get stuck waiting for it.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "a permit is spent once: taking it by value makes reusing it a compile error"
    )]
    #[inline]
    pub(crate) fn cancel(&self, permit: Permit) {
        let Permit { epoch, kind } = permit;
        if kind == PermitKind::Probe {
            self.finish_probe(epoch, None);
        }
    }

    #[inline]
    fn is_slow(&self, start: Option<Instant>, now: &LazyNow<impl Fn() -> Instant>) -> bool {
        match (self.settings.slow_nanos(), start) {
            (Some(limit), Some(start)) => {
                time::nanos(now.get().saturating_duration_since(start)) >= limit
            }
            _ => false,
        }
    }

    #[inline]
    fn record_window(
        &self,
        epoch: u64,
        outcome: Outcome,
        start: Option<Instant>,
        now: &LazyNow<impl Fn() -> Instant>,
    ) {
        let w = self.load();
        // Admitted under a state that has since ended (the breaker opened and maybe closed
        // again): evidence about a period that was already acted on.
        if w.epoch() != epoch {
            return;
        }
        let slow = self.is_slow(start, now);
        self.emitter.emit(|| CircuitBreakerEvent::CallRecorded {
            outcome,
            slow,
            probe: false,
        });
        if outcome == Outcome::Ignore {
            return;
        }
        let failure = outcome.is_failure();
        let counts = self.window.record(|| self.nanos(now.get()), failure, slow);
        let consecutive = self.count_consecutive(failure);
        self.metrics.rates(counts);
        // No failure and no slow call in the window and none in a row: no threshold can be
        // reached (every rate threshold is above zero), whatever the call count.
        if w.state() != State::Closed
            || (counts.failures == 0 && counts.slow == 0 && consecutive == 0)
        {
            return;
        }
        if let Some(reason) = self.trip_reason(counts, consecutive) {
            // Closed => Open: a threshold was reached.
            let t = self.nanos(now.get());
            self.transition(Some(epoch), State::Open, reason, t);
        }
    }

    #[inline]
    fn count_consecutive(&self, failure: bool) -> u32 {
        if self.settings.consecutive.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        if failure {
            self.consecutive.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            0
        }
    }

    #[inline]
    fn trip_reason(&self, counts: Counts, consecutive: u32) -> Option<TransitionReason> {
        let s = &self.settings;
        let limit = s.consecutive.load(Ordering::Relaxed);
        if limit > 0 && consecutive >= limit {
            return Some(TransitionReason::ConsecutiveFailures(consecutive));
        }
        if counts.calls < u64::from(s.min_calls.load(Ordering::Relaxed)) {
            return None;
        }
        if s.failure_rate_reached(counts.failures, counts.calls) {
            return Some(TransitionReason::FailureRate(counts.failure_rate()));
        }
        if s.slow_rate_reached(counts.slow, counts.calls) {
            return Some(TransitionReason::SlowCallRate(counts.slow_rate()));
        }
        None
    }

    #[cold]
    #[inline(never)]
    fn record_probe(
        &self,
        epoch: u64,
        outcome: Outcome,
        start: Option<Instant>,
        now: &LazyNow<impl Fn() -> Instant>,
    ) {
        let slow = self.is_slow(start, now);
        self.emitter.emit(|| CircuitBreakerEvent::CallRecorded {
            outcome,
            slow,
            probe: true,
        });
        let result = match outcome {
            // An ignored probe says nothing: its permit goes back for another probe.
            Outcome::Ignore => None,
            o => Some((o.is_failure(), slow)),
        };
        let Some(p) = self.finish_probe(epoch, result) else {
            return;
        };
        if result.is_some() {
            self.probe_verdict(epoch, p, || self.nanos(now.get()));
        }
    }

    /// Once every probe of the half-open period `epoch` has completed (probe word `p`),
    /// close the breaker or re-open it.
    fn probe_verdict(&self, epoch: u64, p: u64, now: impl FnOnce() -> u64) {
        let done = probe_field(p, 1);
        if done < u64::from(self.settings.probes.load(Ordering::Relaxed)) {
            return;
        }
        let (failures, slow) = (probe_field(p, 2), probe_field(p, 3));
        let s = &self.settings;
        if s.failure_rate_reached(failures, done) || s.slow_rate_reached(slow, done) {
            let (failure_rate, slow_call_rate) = (percent(failures, done), percent(slow, done));
            // HalfOpen => Open: the backend is still failing.
            let reason = TransitionReason::ProbesFailed {
                failure_rate,
                slow_call_rate,
            };
            self.transition(Some(epoch), State::Open, reason, now());
        } else {
            // HalfOpen => Closed: the probes passed.
            self.transition(
                Some(epoch),
                State::Closed,
                TransitionReason::ProbesSucceeded,
                0,
            );
        }
    }

    /// The probe deadline of the half-open period of `w` passed at `t` with every permit
    /// out: the probes still out count as failures (their permits are spent; their late
    /// outcomes will find the period over) and the verdict is taken. `false` when there
    /// was nothing to expire (a verdict is being published by another thread).
    fn expire_probes(&self, w: Word, t: u64) -> bool {
        let tag = probe_tag(w.epoch());
        let mut p = self.probes.load(Ordering::Acquire);
        loop {
            if p >> TAG_SHIFT != tag {
                return true;
            }
            let out = probe_field(p, 0).saturating_sub(probe_field(p, 1));
            if out == 0 {
                return false;
            }
            let new = p + out * DONE_ONE + out * FAIL_ONE;
            match self
                .probes
                .compare_exchange_weak(p, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.probe_verdict(w.epoch(), new, || t);
                    return true;
                }
                Err(actual) => p = actual,
            }
        }
    }

    /// Account a probe of the half-open period `epoch`: `Some((failed, slow))` completed,
    /// `None` gave its permit back. Returns the probe word after the update, or `None` when
    /// that half-open period is over.
    fn finish_probe(&self, epoch: u64, result: Option<(bool, bool)>) -> Option<u64> {
        let tag = probe_tag(epoch);
        let mut p = self.probes.load(Ordering::Acquire);
        loop {
            if p >> TAG_SHIFT != tag {
                return None;
            }
            let new = match result {
                None if probe_field(p, 0) == 0 => return None,
                None => p - 1,
                Some((failed, slow)) => {
                    p + DONE_ONE + u64::from(failed) * FAIL_ONE + u64::from(slow) * SLOW_ONE
                }
            };
            match self
                .probes
                .compare_exchange_weak(p, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(new),
                Err(actual) => p = actual,
            }
        }
    }

    // ===== transitions =====

    /// Move to `to` if the state of `expect_epoch` still holds (`None`: unconditionally, for
    /// operators). `now` (nanoseconds since origin) dates the start of an open period.
    /// Takes the lock; listeners run after it is released.
    #[cold]
    #[inline(never)]
    fn transition(
        &self,
        expect_epoch: Option<u64>,
        to: State,
        reason: TransitionReason,
        now: u64,
    ) -> bool {
        self.transition_until(expect_epoch, to, reason, now, None)
    }

    /// [`transition`](Self::transition), opening until `until` (nanoseconds since origin)
    /// instead of for the backoff's open duration, when given.
    fn transition_until(
        &self,
        expect_epoch: Option<u64>,
        to: State,
        reason: TransitionReason,
        now: u64,
        until: Option<u64>,
    ) -> bool {
        let from = {
            let mut control = lock(&self.control);
            let cur = self.load();
            if expect_epoch.is_some_and(|e| e != cur.epoch()) {
                return false;
            }
            let epoch = cur.epoch() + 1;
            self.enter(&mut control, cur.state(), to, epoch, now, until);
            let metrics_only = cur.metrics_only() && reason != TransitionReason::Operator;
            self.word
                .store(Word::new(to, metrics_only, epoch).0, Ordering::Release);
            self.metrics.transition(to);
            cur.state()
        };
        trace_transition(self.emitter.name(), from, to, &reason);
        self.emitter.emit(|| CircuitBreakerEvent::StateTransition {
            name: self.emitter.name().clone(),
            from,
            to,
            reason,
        });
        true
    }

    /// Prepare the state `to` before it is published.
    fn enter(
        &self,
        control: &mut Control,
        from: State,
        to: State,
        epoch: u64,
        now: u64,
        until: Option<u64>,
    ) {
        match to {
            // Opened until a given instant (a hint or an operator): the backoff is neither
            // reset nor grown, and the window is kept.
            State::Open if let Some(until) = until => {
                self.open_for
                    .store(until.saturating_sub(now), Ordering::Relaxed);
                self.open_until.store(until, Ordering::Release);
            }
            State::Open => {
                control.reopens = if from == State::HalfOpen {
                    control.reopens.saturating_add(1)
                } else {
                    0
                };
                let open_for = time::nanos(control.config.open_duration_for(control.reopens));
                self.open_for.store(open_for, Ordering::Relaxed);
                self.open_until
                    .store(now.saturating_add(open_for), Ordering::Release);
            }
            State::HalfOpen => {
                self.probe_deadline.store(now, Ordering::Release);
                self.last_probe.store(now, Ordering::Release);
                self.probes
                    .store(probe_tag(epoch) << TAG_SHIFT, Ordering::Release);
            }
            State::Closed => {
                control.reopens = 0;
                self.window.clear();
                self.consecutive.store(0, Ordering::Release);
            }
            State::ForcedOpen | State::Disabled => {}
        }
    }

    // ===== operator control =====

    /// Operator (or an upstream's throttle hint): open until `until`, without recording a
    /// failure; then half-open as after any open period. Already open until later: stays
    /// so (a hint never shortens an open period).
    pub(crate) fn open_until(&self, until: Instant, now: Instant) {
        self.open_until_for(until, now, TransitionReason::Operator);
    }

    /// [`open_until`](Self::open_until), saying why (an operator or an upstream's hint).
    pub(crate) fn open_until_for(&self, until: Instant, now: Instant, reason: TransitionReason) {
        let (until, now) = (self.nanos(until), self.nanos(now));
        {
            let _control = lock(&self.control);
            if self.load().state() == State::Open {
                let before = self.open_until.fetch_max(until, Ordering::AcqRel);
                if until > before {
                    self.open_for
                        .store(until.saturating_sub(now), Ordering::Relaxed);
                }
                return;
            }
        }
        self.transition_until(None, State::Open, reason, now, Some(until));
    }

    /// Operator: reject every call until reset.
    pub(crate) fn force_open(&self) {
        self.transition(None, State::ForcedOpen, TransitionReason::Operator, 0);
    }

    /// Operator: admit and record every call, never open, until reset.
    pub(crate) fn disable(&self) {
        self.transition(None, State::Disabled, TransitionReason::Operator, 0);
    }

    /// Operator: closed, with an empty window and no backoff.
    pub(crate) fn reset(&self) {
        self.transition(None, State::Closed, TransitionReason::Operator, 0);
    }

    /// Operator: keep running the state machine but never reject (until reset, forced open
    /// or disabled).
    pub(crate) fn set_metrics_only(&self) {
        // The flag only means something for the automatic states: leave the operator ones.
        if matches!(self.state(), State::ForcedOpen | State::Disabled) {
            self.reset();
        }
        let _control = lock(&self.control);
        // Not a transition: the epoch stays, so permits and probes in flight stay valid.
        self.word.fetch_or(METRICS_ONLY, Ordering::AcqRel);
    }

    /// Replace the thresholds and durations. The window's shape cannot change: its
    /// slots hold the history the new thresholds apply to.
    pub(crate) fn update_config(&self, config: &CircuitBreakerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let mut control = lock(&self.control);
        let current = control.config.window;
        palisade_core::config::ensure(
            config.window == current,
            "circuit_breaker",
            "window",
            config.window,
            format!(
                "the window the breaker was built with ({current:?}); build a new breaker to change it"
            ),
        )?;
        self.settings.store(config);
        let listeners = control.config.listeners.clone();
        let name = control.config.name.clone();
        control.config = config.clone();
        control.config.listeners = listeners;
        control.config.name = name;
        Ok(())
    }

    pub(crate) fn config(&self) -> CircuitBreakerConfig {
        lock(&self.control).config.clone()
    }

    /// The window and state as of `now`.
    pub(crate) fn snapshot(&self, now: Instant) -> WindowSnapshot {
        let w = self.load();
        let counts = self.window.counts(|| self.nanos(now));
        WindowSnapshot {
            state: w.state(),
            metrics_only: w.metrics_only(),
            calls: counts.calls,
            failures: counts.failures,
            slow_calls: counts.slow,
            failure_rate: counts.failure_rate(),
            slow_call_rate: counts.slow_rate(),
            consecutive_failures: self.consecutive.load(Ordering::Relaxed),
        }
    }

    /// How long until a probe is admitted, as of `now` (`None` unless open).
    pub(crate) fn retry_after(&self, now: Instant) -> Option<Duration> {
        (self.state() == State::Open).then(|| {
            let until = self.open_until.load(Ordering::Acquire);
            Duration::from_nanos(until.saturating_sub(self.nanos(now)))
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::CircuitBreakerConfigBuilder;
    use Outcome::{Failure, Ignore, Success};

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    fn breaker(b: CircuitBreakerConfigBuilder) -> (Breaker, Instant) {
        let t0 = Instant::now();
        let config = b.build().expect("valid config");
        let metrics = Metrics::register(config.name(), true);
        (Breaker::new(config, t0, metrics), t0)
    }

    /// Acquire at `at`, and if admitted record `outcome` at `at` for a call that took `took`.
    fn call(
        b: &Breaker,
        at: Instant,
        outcome: Outcome,
        took: Duration,
    ) -> Result<PermitKind, Option<Duration>> {
        let permit = b.acquire(|| at)?;
        let kind = permit.kind;
        b.record(permit, outcome, at.checked_sub(took), || at);
        Ok(kind)
    }

    fn calls(b: &Breaker, at: Instant, outcome: Outcome, n: usize) {
        for _ in 0..n {
            call(b, at, outcome, MS).expect("admitted");
        }
    }

    #[test]
    fn failure_rate_waits_for_minimum_calls() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .count_window(10)
                .minimum_calls(5),
        );
        calls(&b, t0, Failure, 4);
        assert_eq!(b.state(), State::Closed);
        calls(&b, t0, Failure, 1);
        assert_eq!(b.state(), State::Open);
    }

    /// A success can trip the breaker: the one that brings the window to its minimum
    /// calls with the failures already over the threshold. While the window holds no
    /// failure, none does.
    #[test]
    fn a_success_reaching_the_minimum_calls_trips() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .count_window(10)
                .minimum_calls(6)
                .failure_rate_threshold(50.0),
        );
        calls(&b, t0, Failure, 3);
        calls(&b, t0, Success, 2);
        assert_eq!(b.state(), State::Closed, "5 calls: below the minimum");
        calls(&b, t0, Success, 1);
        assert_eq!(b.state(), State::Open, "6 calls, 3 failed: 50%");

        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .count_window(4)
                .minimum_calls(1),
        );
        calls(&b, t0, Success, 20);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn count_window_truly_slides() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .failure_rate_threshold(50.0)
                .count_window(10)
                .minimum_calls(10),
        );
        calls(&b, t0, Success, 1_000);
        calls(&b, t0, Failure, 4);
        assert_eq!(b.state(), State::Closed, "4 of the last 10 failed");
        calls(&b, t0, Failure, 1);
        assert_eq!(b.state(), State::Open, "5 of the last 10 failed");
    }

    #[test]
    fn time_window_forgets_old_failures() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .failure_rate_threshold(50.0)
                .time_window(10 * SEC, 10)
                .minimum_calls(4),
        );
        calls(&b, t0, Failure, 3);
        // 11s later the failures have left the window: 3 successes and one failure is 25%.
        let t1 = t0 + 11 * SEC;
        calls(&b, t1, Success, 3);
        calls(&b, t1, Failure, 1);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.snapshot(t1).calls, 4);
        calls(&b, t1 + SEC, Failure, 1);
        assert_eq!(b.state(), State::Closed, "2 of 5");
        calls(&b, t1 + SEC, Failure, 1);
        assert_eq!(b.state(), State::Open, "3 of 6");
    }

    #[test]
    fn slow_call_rate_trips_even_on_successes() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .count_window(10)
                .minimum_calls(4)
                .slow_call_duration(SEC)
                .slow_call_rate_threshold(50.0),
        );
        for _ in 0..2 {
            call(&b, t0, Success, MS).unwrap();
        }
        call(&b, t0, Success, SEC).unwrap();
        assert_eq!(b.state(), State::Closed);
        call(&b, t0, Success, 2 * SEC).unwrap();
        assert_eq!(b.state(), State::Open);
        assert_eq!(
            b.snapshot(t0).slow_calls,
            2,
            "the window is kept while open"
        );
    }

    #[test]
    fn consecutive_failures_trip_below_minimum_calls() {
        let (b, t0) = breaker(CircuitBreakerConfig::builder().consecutive_failures(3));
        calls(&b, t0, Failure, 2);
        calls(&b, t0, Success, 1);
        calls(&b, t0, Failure, 2);
        assert_eq!(b.state(), State::Closed);
        calls(&b, t0, Ignore, 1);
        calls(&b, t0, Failure, 1);
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn ignored_outcomes_are_not_counted() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .count_window(4)
                .minimum_calls(1),
        );
        calls(&b, t0, Ignore, 10);
        assert_eq!(b.snapshot(t0).calls, 0);
        calls(&b, t0, Success, 1);
        assert_eq!(b.snapshot(t0).calls, 1);
    }

    fn tripped(probes: u32) -> (Breaker, Instant) {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .failure_rate_threshold(50.0)
                .count_window(2)
                .minimum_calls(2)
                .open_duration(10 * SEC)
                .open_duration_backoff(2.0, 25 * SEC)
                .half_open_probes(probes),
        );
        calls(&b, t0, Failure, 2);
        assert_eq!(b.state(), State::Open);
        (b, t0)
    }

    #[test]
    fn open_rejects_with_time_until_probe() {
        let (b, t0) = tripped(1);
        assert_eq!(call(&b, t0 + 4 * SEC, Success, MS), Err(Some(6 * SEC)));
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn half_open_admits_exactly_the_probes() {
        let (b, t0) = tripped(2);
        let t = t0 + 10 * SEC;
        let p1 = b.acquire(|| t).unwrap();
        assert_eq!(b.state(), State::HalfOpen);
        let p2 = b.acquire(|| t).unwrap();
        assert_eq!((p1.kind, p2.kind), (PermitKind::Probe, PermitKind::Probe));
        // Never "come back in 0s": a tenth of the 10s open period (the probe deadline,
        // 60s away by default, is further).
        assert_eq!(b.acquire(|| t).unwrap_err(), Some(SEC));
        b.record(p1, Success, None, || t);
        assert_eq!(
            b.acquire(|| t).unwrap_err(),
            Some(SEC),
            "a completed probe is not given back"
        );
        b.record(p2, Success, None, || t);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.snapshot(t).calls, 0, "closing starts a fresh window");
    }

    #[test]
    fn half_open_rejections_count_down_to_the_probe_deadline() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .count_window(2)
                .minimum_calls(2)
                .open_duration(100 * SEC)
                .open_duration_backoff(1.0, 100 * SEC)
                .half_open_probes(1)
                .max_probe_duration(5 * SEC),
        );
        calls(&b, t0, Failure, 2);
        let t = t0 + 100 * SEC;
        let probe = b.acquire(|| t).unwrap();
        assert_eq!(
            b.acquire(|| t).unwrap_err(),
            Some(5 * SEC),
            "the probe is due in 5s"
        );
        assert_eq!(b.acquire(|| t + 3 * SEC).unwrap_err(), Some(2 * SEC));
        b.record(probe, Success, None, || t + 3 * SEC);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_hung_probe_expires_as_a_failure_and_frees_the_half_open_state() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .failure_rate_threshold(50.0)
                .count_window(2)
                .minimum_calls(2)
                .open_duration(10 * SEC)
                .open_duration_backoff(2.0, 100 * SEC)
                .half_open_probes(2)
                .max_probe_duration(5 * SEC),
        );
        calls(&b, t0, Failure, 2);
        let t = t0 + 10 * SEC;
        let hung = b.acquire(|| t).unwrap();
        let ok = b.acquire(|| t + SEC).unwrap();
        b.record(ok, Success, None, || t + SEC);
        // The deadline follows the last probe admitted: 1s + 5s.
        assert_eq!(b.acquire(|| t + 5 * SEC).unwrap_err(), Some(SEC));
        assert_eq!(b.state(), State::HalfOpen);
        // At the deadline the hung probe counts as a failure: 1 of 2 failed is 50%, so the
        // breaker re-opens (with the backoff: 20s), instead of staying half-open forever.
        assert_eq!(b.acquire(|| t + 6 * SEC).unwrap_err(), Some(20 * SEC));
        assert_eq!(b.state(), State::Open);
        // Its late outcome belongs to a period that is over.
        b.record(hung, Success, None, || t + 7 * SEC);
        assert_eq!(b.state(), State::Open);
        // The next period probes afresh.
        let t = t + 26 * SEC;
        assert_eq!(call(&b, t, Success, MS), Ok(PermitKind::Probe));
        assert_eq!(call(&b, t, Success, MS), Ok(PermitKind::Probe));
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn open_until_opens_without_a_failure_and_never_shortens() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .count_window(4)
                .minimum_calls(4)
                .open_duration(10 * SEC)
                .half_open_probes(1),
        );
        calls(&b, t0, Success, 3);
        b.open_until(t0 + 30 * SEC, t0);
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.snapshot(t0).failures, 0);
        assert_eq!(call(&b, t0 + 5 * SEC, Success, MS), Err(Some(25 * SEC)));
        // A shorter hint does not cut it short; a longer one extends it.
        b.open_until(t0 + 10 * SEC, t0 + 5 * SEC);
        assert_eq!(b.retry_after(t0 + 5 * SEC), Some(25 * SEC));
        b.open_until(t0 + 40 * SEC, t0 + 5 * SEC);
        assert_eq!(b.retry_after(t0 + 5 * SEC), Some(35 * SEC));
        // Then it probes as after any open period.
        assert_eq!(call(&b, t0 + 40 * SEC, Success, MS), Ok(PermitKind::Probe));
        assert_eq!(b.state(), State::Closed);
        // Duration::MAX-like instants saturate instead of panicking.
        b.open_until(time::far_future(t0), t0 + 40 * SEC);
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn cancelled_and_ignored_probes_give_their_permit_back() {
        let (b, t0) = tripped(1);
        let t = t0 + 10 * SEC;
        let p = b.acquire(|| t).unwrap();
        b.cancel(p);
        let p = b.acquire(|| t).expect("the permit came back");
        b.record(p, Ignore, None, || t);
        assert_eq!(b.state(), State::HalfOpen);
        let p = b.acquire(|| t).expect("the permit came back again");
        b.record(p, Success, None, || t);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn failed_probes_reopen_with_growing_duration() {
        let (b, t0) = tripped(1);
        let mut t = t0;
        for open_for in [10, 20, 25, 25] {
            assert_eq!(b.retry_after(t), Some(open_for * SEC));
            t += open_for * SEC;
            assert_eq!(call(&b, t, Failure, MS), Ok(PermitKind::Probe));
            assert_eq!(b.state(), State::Open);
        }
        // A close resets the backoff.
        t += 25 * SEC;
        assert_eq!(call(&b, t, Success, MS), Ok(PermitKind::Probe));
        assert_eq!(b.state(), State::Closed);
        calls(&b, t, Failure, 2);
        assert_eq!(b.retry_after(t), Some(10 * SEC));
    }

    #[test]
    fn paced_probes_go_one_per_open_interval() {
        // One probe, open 10 s: the probe hangs (a backend still slow when it was sent).
        let (b, t0) = tripped(1);
        let t = t0 + 10 * SEC;
        let hung = b.acquire(|| t).unwrap();
        // Every probe is out: refused until one open interval after the last probe...
        assert_eq!(b.acquire(|| t + 9 * SEC).unwrap_err(), Some(SEC));
        // ...then one more probe goes, and again only one per interval.
        let paced = b.acquire(|| t + 10 * SEC).unwrap();
        assert_eq!(paced.kind, PermitKind::Probe);
        assert!(b.acquire(|| t + 10 * SEC).is_err(), "one per interval");
        // The backend is back: the paced probe answers first and decides.
        b.record(paced, Success, None, || t + 10 * SEC);
        assert_eq!(b.state(), State::Closed);
        // The hung probe's late outcome belongs to a period that is over.
        b.record(hung, Failure, None, || t + 11 * SEC);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn pacing_stops_at_the_cap() {
        let (b, t0) = tripped(1);
        let mut t = t0 + 10 * SEC;
        let mut held = vec![b.acquire(|| t).unwrap()];
        for _ in 0..PACED_PROBES {
            t += 10 * SEC;
            held.push(b.acquire(|| t).expect("paced"));
        }
        t += 10 * SEC;
        assert!(b.acquire(|| t).is_err(), "no probe beyond the cap");
        assert_eq!(held.len() as u64, 1 + PACED_PROBES);
        assert_eq!(b.state(), State::HalfOpen);
    }

    #[test]
    fn probe_rates_decide() {
        let (b, t0) = tripped(4);
        let t = t0 + 10 * SEC;
        let permits: Vec<_> = (0..4).map(|_| b.acquire(|| t).unwrap()).collect();
        for (p, o) in permits
            .into_iter()
            .zip([Success, Success, Success, Failure])
        {
            b.record(p, o, None, || t);
        }
        assert_eq!(b.state(), State::Closed, "25% < 50%");

        let (b, t0) = tripped(4);
        let t = t0 + 10 * SEC;
        let permits: Vec<_> = (0..4).map(|_| b.acquire(|| t).unwrap()).collect();
        for (p, o) in permits
            .into_iter()
            .zip([Success, Failure, Success, Failure])
        {
            b.record(p, o, None, || t);
        }
        assert_eq!(b.state(), State::Open, "50% >= 50%");
    }

    #[test]
    fn late_outcomes_of_an_earlier_state_are_dropped() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .count_window(2)
                .minimum_calls(2)
                .half_open_probes(1),
        );
        let late = b.acquire(|| t0).unwrap();
        calls(&b, t0, Failure, 2);
        let t = t0 + 30 * SEC;
        call(&b, t, Success, MS).unwrap();
        assert_eq!(b.state(), State::Closed);
        b.record(late, Failure, None, || t);
        assert_eq!(b.snapshot(t).calls, 0);
    }

    #[test]
    fn operator_states() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .count_window(2)
                .minimum_calls(2),
        );
        b.force_open();
        assert_eq!(call(&b, t0, Success, MS), Err(None));
        b.disable();
        calls(&b, t0, Failure, 10);
        assert_eq!(b.state(), State::Disabled);
        assert_eq!(b.snapshot(t0).failures, 2, "disabled still records");
        b.reset();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.snapshot(t0).calls, 0);
        calls(&b, t0, Failure, 2);
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn metrics_only_runs_the_machine_but_never_rejects() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .count_window(2)
                .minimum_calls(2)
                .open_duration(10 * SEC)
                .half_open_probes(1),
        );
        b.set_metrics_only();
        calls(&b, t0, Failure, 2);
        assert_eq!(b.state(), State::Open);
        assert!(b.is_metrics_only());
        assert_eq!(call(&b, t0, Failure, MS), Ok(PermitKind::Unrecorded));
        let t = t0 + 10 * SEC;
        assert_eq!(call(&b, t, Success, MS), Ok(PermitKind::Probe));
        assert_eq!(b.state(), State::Closed);
        assert!(b.is_metrics_only(), "automatic transitions keep the mode");
        b.force_open();
        assert!(!b.is_metrics_only());
        assert_eq!(call(&b, t, Success, MS), Err(None));
    }

    #[test]
    fn config_update_applies_to_the_running_breaker() {
        let (b, t0) = breaker(
            CircuitBreakerConfig::builder()
                .count_window(10)
                .minimum_calls(10),
        );
        calls(&b, t0, Success, 7);
        calls(&b, t0, Failure, 3);
        assert_eq!(b.state(), State::Closed, "30% < 50%");
        let stricter = CircuitBreakerConfig::builder()
            .count_window(10)
            .minimum_calls(10)
            .failure_rate_threshold(30.0)
            .build()
            .unwrap();
        b.update_config(&stricter).unwrap();
        assert_eq!(b.config().failure_rate_threshold(), 30.0);
        // The next outcome is judged by the new threshold: still 30% of the last 10.
        calls(&b, t0, Success, 1);
        assert_eq!(b.state(), State::Open);
        let resized = CircuitBreakerConfig::builder()
            .count_window(20)
            .build()
            .unwrap();
        assert_eq!(b.update_config(&resized).unwrap_err().field(), "window");
    }
}

/// Bounded multi-threaded stress: no lost counts, no probe over-admission, never stuck.
#[cfg(all(test, not(loom)))]
mod stress {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Barrier};

    const THREADS: usize = 4;

    fn shared(config: CircuitBreakerConfig) -> (Arc<Breaker>, Instant) {
        let t0 = Instant::now();
        let metrics = Metrics::register(config.name(), true);
        (Arc::new(Breaker::new(config, t0, metrics)), t0)
    }

    fn hammer(b: &Arc<Breaker>, t0: Instant, per_thread: u64) {
        let barrier = Arc::new(Barrier::new(THREADS));
        std::thread::scope(|s| {
            for id in 0..THREADS as u64 {
                let (b, barrier) = (Arc::clone(b), Arc::clone(&barrier));
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..per_thread {
                        // Spread over 10 buckets of a time window; all in one count window.
                        let at = t0 + Duration::from_millis((i + id) % 10 * 1000);
                        let permit = b.acquire(|| at).expect("closed");
                        let outcome = if i % 2 == 0 {
                            Outcome::Failure
                        } else {
                            Outcome::Success
                        };
                        b.record(permit, outcome, None, || at);
                    }
                });
            }
        });
    }

    #[test]
    fn no_lost_counts() {
        let per_thread = 20_000;
        let total = per_thread * THREADS as u64;
        for window in [
            SlidingWindow::Count { size: total as u32 },
            SlidingWindow::Time {
                duration: Duration::from_secs(60),
                buckets: 60,
            },
        ] {
            let config = CircuitBreakerConfig::builder()
                .window(window)
                .minimum_calls(total as u32)
                .failure_rate_threshold(100.0)
                .build()
                .unwrap();
            let (b, t0) = shared(config);
            hammer(&b, t0, per_thread);
            let snap = b.snapshot(t0 + Duration::from_secs(10));
            assert_eq!(
                (snap.calls, snap.failures),
                (total, total / 2),
                "{window:?}"
            );
            assert_eq!(b.state(), State::Closed);
        }
    }

    #[test]
    fn probes_are_never_over_admitted() {
        let probes = 2;
        let config = CircuitBreakerConfig::builder()
            .count_window(4)
            .minimum_calls(4)
            .open_duration(Duration::from_millis(1))
            .open_duration_backoff(1.0, Duration::from_millis(1))
            .half_open_probes(probes)
            .build()
            .unwrap();
        let (b, t0) = shared(config);
        // Per half-open period: probes held right now, and the most ever held at once.
        let held: Arc<Mutex<HashMap<u64, (u32, u32)>>> = Arc::default();
        let clock = Arc::new(AtomicU64::new(0));
        let barrier = Arc::new(Barrier::new(THREADS));
        std::thread::scope(|s| {
            for id in 0..THREADS as u64 {
                let (b, held, clock, barrier) = (
                    Arc::clone(&b),
                    Arc::clone(&held),
                    Arc::clone(&clock),
                    Arc::clone(&barrier),
                );
                s.spawn(move || {
                    barrier.wait();
                    let mut rng = fastrand_like(id);
                    for _ in 0..20_000 {
                        let at = t0 + Duration::from_micros(clock.fetch_add(50, Ordering::Relaxed));
                        let Ok(permit) = b.acquire(|| at) else {
                            continue;
                        };
                        let is_probe = permit.kind == PermitKind::Probe;
                        if is_probe {
                            let mut map = held.lock().unwrap();
                            let e = map.entry(permit.epoch).or_default();
                            e.0 += 1;
                            e.1 = e.1.max(e.0);
                        }
                        // Stop counting the probe *before* the breaker frees its slot: counted
                        // after, another thread could take the freed slot in between and the
                        // test would see one probe too many that the breaker never admitted.
                        if is_probe {
                            held.lock().unwrap().get_mut(&permit.epoch).unwrap().0 -= 1;
                        }
                        match rng() % 4 {
                            0 => b.cancel(permit),
                            1 => b.record(permit, Outcome::Success, None, || at),
                            2 => b.record(permit, Outcome::Ignore, None, || at),
                            _ => b.record(permit, Outcome::Failure, None, || at),
                        }
                    }
                });
            }
        });
        let map = held.lock().unwrap();
        assert!(
            map.len() > 10,
            "the test exercised half-open ({} periods)",
            map.len()
        );
        // The configured probes, plus those paced one per open interval while every probe
        // is out (the exact pace is `paced_probes_go_one_per_open_interval`'s): never more,
        // whatever the races.
        let cap = probes + u32::try_from(PACED_PROBES).unwrap();
        for (epoch, (_, most)) in map.iter() {
            assert!(
                *most <= cap,
                "half-open period {epoch} had {most} probes at once"
            );
        }
        // Nothing is in flight: the breaker must not be stuck in half-open.
        let later = t0 + Duration::from_secs(3600);
        let permit = b
            .acquire(|| later)
            .expect("a probe or a closed call is admitted");
        b.cancel(permit);
    }

    /// A tiny xorshift so each thread picks outcomes differently without a dependency.
    fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }
}

/// Loom model of the state word and the half-open permit: concurrent probes never exceed
/// the configured count, and a cancelled probe's permit comes back. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p palisade-circuit-breaker --lib loom --release`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU32;

    fn half_open(probes: u32) -> (Arc<Breaker>, Instant) {
        let t0 = Instant::now();
        let config = CircuitBreakerConfig::builder()
            .count_window(1)
            .minimum_calls(1)
            .open_duration(Duration::from_secs(1))
            .half_open_probes(probes)
            .build()
            .unwrap();
        let metrics = Metrics::register(config.name(), true);
        let b = Arc::new(Breaker::new(config, t0, metrics));
        let p = b.acquire(|| t0).unwrap();
        b.record(p, Outcome::Failure, None, || t0);
        assert_eq!(b.state(), State::Open);
        (b, t0 + Duration::from_secs(1))
    }

    #[test]
    fn concurrent_probes_never_exceed_the_permit() {
        loom::model(|| {
            let (b, t) = half_open(1);
            let admitted = Arc::new(AtomicU32::new(0));
            let in_flight = Arc::new(AtomicU32::new(0));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (b, admitted, in_flight) = (
                        Arc::clone(&b),
                        Arc::clone(&admitted),
                        Arc::clone(&in_flight),
                    );
                    loom::thread::spawn(move || {
                        if let Ok(p) = b.acquire(|| t) {
                            assert_eq!(p.kind, PermitKind::Probe);
                            admitted.fetch_add(1, Ordering::SeqCst);
                            let before = in_flight.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(before, 0, "two probes out at once");
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            b.cancel(p);
                        }
                    })
                })
                .collect();
            for th in threads {
                th.join().unwrap();
            }
            assert!(admitted.load(Ordering::SeqCst) >= 1);
            // Every permit came back: one more probe is admitted.
            let p = b.acquire(|| t).expect("not stuck");
            assert_eq!(p.kind, PermitKind::Probe);
            b.record(p, Outcome::Success, None, || t);
            assert_eq!(b.state(), State::Closed);
        });
    }

    #[test]
    fn probe_outcome_races_a_new_call() {
        loom::model(|| {
            let (b, t) = half_open(1);
            let p = b.acquire(|| t).unwrap();
            let b2 = Arc::clone(&b);
            let th = loom::thread::spawn(move || b2.acquire(|| t).map(|p| p.kind));
            b.record(p, Outcome::Success, None, || t);
            let other = th.join().unwrap();
            // The racing call was either rejected (probe still out) or admitted closed.
            assert!(
                matches!(other, Err(Some(_)) | Ok(PermitKind::Window)),
                "{other:?}"
            );
            assert_eq!(b.state(), State::Closed);
        });
    }

    #[test]
    fn racing_failures_open_the_breaker_once() {
        loom::model(|| {
            let t0 = Instant::now();
            let config = CircuitBreakerConfig::builder()
                .count_window(2)
                .minimum_calls(2)
                .build()
                .unwrap();
            let metrics = Metrics::register(config.name(), true);
            let b = Arc::new(Breaker::new(config, t0, metrics));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let b = Arc::clone(&b);
                    loom::thread::spawn(move || {
                        let p = b.acquire(|| t0).unwrap();
                        b.record(p, Outcome::Failure, None, || t0);
                    })
                })
                .collect();
            for th in threads {
                th.join().unwrap();
            }
            assert_eq!(b.state(), State::Open);
            // One transition: the epoch moved exactly once.
            assert_eq!(b.load().epoch(), 1);
            assert_eq!(b.snapshot(t0).failures, 2, "no lost count");
        });
    }
}

#[cfg(all(test, not(loom)))]
mod size {
    use super::*;

    /// Keeps the per-key memory documented on `KeyedLimits` honest.
    #[test]
    fn breaker_stays_small() {
        let size = size_of::<Breaker>();
        assert!(
            size <= 1280,
            "Breaker is {size} bytes; update the KeyedLimits docs"
        );
    }
}
