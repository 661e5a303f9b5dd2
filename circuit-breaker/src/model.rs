//! Model test: a deliberately simple reference breaker (a `VecDeque` window, plain
//! integers, no atomics) and the real one are fed the same random sequences of calls,
//! outcomes, durations, held and cancelled calls, clock advances and operator actions. They
//! must agree on every admit/reject decision (and its `retry_after`), every state and every
//! window total.

use std::collections::VecDeque;
use std::time::Duration;

use palisade_core::Outcome;
use proptest::prelude::*;
use tokio::time::Instant;

use crate::event::Metrics;
use crate::state::{Breaker, Permit, PermitKind};
use crate::{CircuitBreakerConfig, SlidingWindow, State};

// ===== the reference model =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Window,
    Probe,
    Unrecorded,
}

#[derive(Debug)]
struct Model {
    c: CircuitBreakerConfig,
    state: State,
    metrics_only: bool,
    epoch: u64,
    /// `(tick, failed, slow)`; the tick only matters for the time window.
    window: VecDeque<(u64, bool, bool)>,
    consecutive: u32,
    open_until: u64,
    /// Length of the last open period (bounds half-open `retry_after`).
    open_for: u64,
    /// When the probes out are due: the last probe's admission + `max_probe_duration`.
    probe_deadline: u64,
    /// When the newest probe was admitted (or half-open began): paces extra probes.
    last_probe: u64,
    reopens: u32,
    issued: u32,
    done: u32,
    probe_failures: u32,
    probe_slow: u32,
}

/// `part / whole` reaches `threshold` percent, at the documented 0.001-point precision.
fn reached(part: usize, whole: usize, threshold: f64) -> bool {
    let threshold = (threshold * 1000.0).round() as u64;
    whole > 0 && part as u64 * 100_000 >= threshold * whole as u64
}

impl Model {
    fn new(c: CircuitBreakerConfig) -> Self {
        Self {
            c,
            state: State::Closed,
            metrics_only: false,
            epoch: 0,
            window: VecDeque::new(),
            consecutive: 0,
            open_until: 0,
            open_for: 0,
            probe_deadline: 0,
            last_probe: 0,
            reopens: 0,
            issued: 0,
            done: 0,
            probe_failures: 0,
            probe_slow: 0,
        }
    }

    fn slow_nanos(&self) -> Option<u64> {
        self.c
            .slow_call_duration
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1))
    }

    /// The window's entries as of `t` (drops what the time window no longer covers).
    fn counts(&self, t: u64) -> (usize, usize, usize) {
        let live: Vec<_> = match self.c.window {
            SlidingWindow::Count { .. } => self.window.iter().collect(),
            SlidingWindow::Time { duration, buckets } => {
                let width = duration.as_nanos() as u64 / u64::from(buckets);
                let tick = t / width;
                let first = (tick + 1).saturating_sub(u64::from(buckets));
                self.window
                    .iter()
                    .filter(|e| e.0 >= first && e.0 <= tick)
                    .collect()
            }
        };
        let failures = live.iter().filter(|e| e.1).count();
        let slow = live.iter().filter(|e| e.2).count();
        (live.len(), failures, slow)
    }

    fn transition(&mut self, to: State, operator: bool, t: u64) {
        self.transition_until(to, operator, t, None);
    }

    fn transition_until(&mut self, to: State, operator: bool, t: u64, until: Option<u64>) {
        let from = self.state;
        self.epoch += 1;
        self.state = to;
        if operator {
            self.metrics_only = false;
        }
        match to {
            State::Open if until.is_some() => {
                let until = until.unwrap_or_default();
                self.open_for = until.saturating_sub(t);
                self.open_until = until;
            }
            State::Open => {
                self.reopens = if from == State::HalfOpen {
                    self.reopens + 1
                } else {
                    0
                };
                self.open_for = u64::try_from(self.c.open_duration_for(self.reopens).as_nanos())
                    .unwrap_or(u64::MAX);
                self.open_until = t.saturating_add(self.open_for);
            }
            State::HalfOpen => {
                self.probe_deadline = t;
                self.last_probe = t;
                (self.issued, self.done, self.probe_failures, self.probe_slow) = (0, 0, 0, 0);
            }
            State::Closed => {
                self.window.clear();
                self.consecutive = 0;
                self.reopens = 0;
            }
            _ => {}
        }
    }

    fn reject(&self, retry_after: Option<u64>) -> Result<(u64, Kind), Option<u64>> {
        if self.metrics_only && self.state != State::ForcedOpen {
            Ok((self.epoch, Kind::Unrecorded))
        } else {
            Err(retry_after)
        }
    }

    fn acquire(&mut self, t: u64) -> Result<(u64, Kind), Option<u64>> {
        loop {
            match self.state {
                State::Closed | State::Disabled => return Ok((self.epoch, Kind::Window)),
                State::ForcedOpen => return self.reject(None),
                State::Open if t < self.open_until => {
                    return self.reject(Some(self.open_until - t));
                }
                State::Open => self.transition(State::HalfOpen, false, t),
                // A probe of the configured count, or (every probe out) one more each open
                // interval, at most 64 beyond the count.
                State::HalfOpen
                    if self.issued < self.c.half_open_probes
                        || (self.issued < self.c.half_open_probes + 64
                            && t < self.probe_deadline
                            && t.saturating_sub(self.last_probe) >= self.open_for) =>
                {
                    let probe =
                        u64::try_from(self.c.max_probe_duration().as_nanos()).unwrap_or(u64::MAX);
                    self.probe_deadline = self.probe_deadline.max(t.saturating_add(probe));
                    self.last_probe = self.last_probe.max(t);
                    self.issued += 1;
                    return Ok((self.epoch, Kind::Probe));
                }
                // Every probe is out and due: those still out count as failures.
                State::HalfOpen if t >= self.probe_deadline => {
                    let out = self.issued - self.done;
                    assert!(out > 0, "a full half-open period with no probe out");
                    self.done += out;
                    self.probe_failures += out;
                    self.verdict(t);
                }
                State::HalfOpen => {
                    let wait = (self.probe_deadline - t).clamp(1, (self.open_for / 10).max(1));
                    return self.reject(Some(wait));
                }
            }
        }
    }

    /// Open the breaker until `until` (an operator or a hint), never shortening an open
    /// period.
    fn open_until(&mut self, until: u64, t: u64) {
        if self.state == State::Open {
            if until > self.open_until {
                self.open_until = until;
                self.open_for = until.saturating_sub(t);
            }
            return;
        }
        self.transition_until(State::Open, true, t, Some(until));
    }

    fn record(&mut self, epoch: u64, kind: Kind, outcome: Outcome, elapsed: u64, t: u64) {
        if kind == Kind::Unrecorded || epoch != self.epoch {
            return;
        }
        let slow = self.slow_nanos().is_some_and(|s| elapsed >= s);
        if kind == Kind::Probe {
            return self.record_probe(outcome, slow, t);
        }
        if outcome == Outcome::Ignore {
            return;
        }
        let failed = outcome == Outcome::Failure;
        let tick = match self.c.window {
            SlidingWindow::Count { size } => {
                if self.window.len() == size as usize {
                    self.window.pop_front();
                }
                0
            }
            SlidingWindow::Time { duration, buckets } => {
                t / (duration.as_nanos() as u64 / u64::from(buckets))
            }
        };
        self.window.push_back((tick, failed, slow));
        if self.c.consecutive_failures.is_some() {
            self.consecutive = if failed { self.consecutive + 1 } else { 0 };
        }
        if self.state == State::Closed && self.trips(t) {
            self.transition(State::Open, false, t);
        }
    }

    fn trips(&self, t: u64) -> bool {
        if self
            .c
            .consecutive_failures
            .is_some_and(|n| self.consecutive >= n)
        {
            return true;
        }
        let (calls, failures, slow) = self.counts(t);
        if calls < self.c.minimum_calls() as usize {
            return false;
        }
        reached(failures, calls, self.c.failure_rate_threshold)
            || (self.slow_nanos().is_some()
                && reached(slow, calls, self.c.slow_call_rate_threshold))
    }

    fn record_probe(&mut self, outcome: Outcome, slow: bool, t: u64) {
        if outcome == Outcome::Ignore {
            self.issued -= 1;
            return;
        }
        self.done += 1;
        self.probe_failures += u32::from(outcome == Outcome::Failure);
        self.probe_slow += u32::from(slow);
        self.verdict(t);
    }

    fn verdict(&mut self, t: u64) {
        if self.done < self.c.half_open_probes {
            return;
        }
        let done = self.done as usize;
        let failed = reached(
            self.probe_failures as usize,
            done,
            self.c.failure_rate_threshold,
        ) || (self.slow_nanos().is_some()
            && reached(
                self.probe_slow as usize,
                done,
                self.c.slow_call_rate_threshold,
            ));
        let to = if failed { State::Open } else { State::Closed };
        self.transition(to, false, t);
    }

    fn cancel(&mut self, epoch: u64, kind: Kind) {
        if kind == Kind::Probe && epoch == self.epoch {
            self.issued -= 1;
        }
    }
}

// ===== generators =====

fn config() -> impl Strategy<Value = CircuitBreakerConfig> {
    let window = prop_oneof![
        (1u32..20).prop_map(|size| SlidingWindow::Count { size }),
        (1u64..50, 1u32..8).prop_map(|(width, buckets)| SlidingWindow::Time {
            duration: Duration::from_millis(width * u64::from(buckets)),
            buckets,
        }),
    ];
    (
        window,
        1u32..20,
        prop::sample::select(vec![20.0, 50.0, 80.0, 100.0]),
        prop::option::of(1u64..50),
        prop::sample::select(vec![50.0, 100.0]),
        prop::option::of(1u32..5),
        (
            1u64..100,
            prop::sample::select(vec![1.0, 1.5, 2.0]),
            1u64..10,
        ),
        (1u32..5, prop::option::of(1u64..200)),
    )
        .prop_map(
            |(window, min, fr, slow, sr, consecutive, (open, mult, cap), (probes, probe_ms))| {
                let min = match window {
                    SlidingWindow::Count { size } => min.min(size),
                    SlidingWindow::Time { .. } => min,
                };
                let mut b = CircuitBreakerConfig::builder()
                    .window(window)
                    .minimum_calls(min)
                    .failure_rate_threshold(fr)
                    .slow_call_rate_threshold(sr)
                    .open_duration(Duration::from_millis(open))
                    .open_duration_backoff(mult, Duration::from_millis(open * cap))
                    .half_open_probes(probes)
                    .max_probe_duration(probe_ms.map_or(Duration::MAX, Duration::from_millis));
                if let Some(ms) = slow {
                    b = b.slow_call_duration(Duration::from_millis(ms));
                }
                if let Some(n) = consecutive {
                    b = b.consecutive_failures(n);
                }
                b.build().expect("generated configs are valid")
            },
        )
}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// A call that completes after `took` ms.
    Call(Outcome, u64),
    /// Start a call and hold it.
    Start,
    /// Complete the held call `i` (modulo the number held) now.
    Finish(usize, Outcome),
    /// Drop the held call `i` without an outcome.
    Cancel(usize),
    Advance(u64),
    ForceOpen,
    /// Open for `ms` from now (the handle's `open_for`).
    OpenFor(u64),
    Disable,
    Reset,
    MetricsOnly,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Success),
        4 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignore),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        40 => (outcome(), 0u64..60).prop_map(|(o, ms)| Op::Call(o, ms)),
        6 => Just(Op::Start),
        6 => (any::<usize>(), outcome()).prop_map(|(i, o)| Op::Finish(i, o)),
        3 => any::<usize>().prop_map(Op::Cancel),
        15 => (0u64..150).prop_map(Op::Advance),
        1 => Just(Op::ForceOpen),
        2 => (0u64..300).prop_map(Op::OpenFor),
        1 => Just(Op::Disable),
        2 => Just(Op::Reset),
        1 => Just(Op::MetricsOnly),
    ]
}

// ===== the comparison =====

struct Held {
    real: Permit,
    model: (u64, Kind),
    start: u64,
}

fn kind_of(k: PermitKind) -> Kind {
    match k {
        PermitKind::Window => Kind::Window,
        PermitKind::Probe => Kind::Probe,
        PermitKind::Unrecorded => Kind::Unrecorded,
    }
}

struct Harness {
    real: Breaker,
    model: Model,
    t0: Instant,
    t: u64,
    held: Vec<Held>,
}

impl Harness {
    fn at(&self, t: u64) -> Instant {
        self.t0 + Duration::from_nanos(t)
    }

    /// Acquire from both; they must agree.
    fn acquire(&mut self) -> Option<Held> {
        let now = self.at(self.t);
        let real = self.real.acquire(|| now);
        let model = self.model.acquire(self.t);
        match (real, model) {
            (Ok(p), Ok(m)) => {
                assert_eq!(
                    kind_of(p.kind),
                    m.1,
                    "admitted as the same kind at {}",
                    self.t
                );
                Some(Held {
                    real: p,
                    model: m,
                    start: self.t,
                })
            }
            (Err(r), Err(m)) => {
                assert_eq!(
                    r,
                    m.map(Duration::from_nanos),
                    "same retry_after at {}",
                    self.t
                );
                None
            }
            (r, m) => panic!("admission differs at {}: real {r:?}, model {m:?}", self.t),
        }
    }

    fn finish(&mut self, h: Held, outcome: Outcome) {
        let now = self.at(self.t);
        let start = self.at(h.start);
        self.real.record(h.real, outcome, Some(start), || now);
        self.model
            .record(h.model.0, h.model.1, outcome, self.t - h.start, self.t);
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Call(outcome, ms) => {
                if let Some(h) = self.acquire() {
                    self.t += ms * 1_000_000;
                    self.finish(h, outcome);
                }
            }
            Op::Start => {
                if let Some(h) = self.acquire() {
                    self.held.push(h);
                }
            }
            Op::Finish(i, outcome) if !self.held.is_empty() => {
                let h = self.held.remove(i % self.held.len());
                self.finish(h, outcome);
            }
            Op::Cancel(i) if !self.held.is_empty() => {
                let h = self.held.remove(i % self.held.len());
                self.real.cancel(h.real);
                self.model.cancel(h.model.0, h.model.1);
            }
            Op::Finish(..) | Op::Cancel(_) => {}
            Op::Advance(ms) => self.t += ms * 1_000_000,
            Op::ForceOpen => {
                self.real.force_open();
                self.model.transition(State::ForcedOpen, true, self.t);
            }
            Op::OpenFor(ms) => {
                let until = self.t + ms * 1_000_000;
                self.real.open_until(self.at(until), self.at(self.t));
                self.model.open_until(until, self.t);
            }
            Op::Disable => {
                self.real.disable();
                self.model.transition(State::Disabled, true, self.t);
            }
            Op::Reset => {
                self.real.reset();
                self.model.transition(State::Closed, true, self.t);
            }
            Op::MetricsOnly => {
                self.real.set_metrics_only();
                if matches!(self.model.state, State::ForcedOpen | State::Disabled) {
                    self.model.transition(State::Closed, true, self.t);
                }
                self.model.metrics_only = true;
            }
        }
    }

    fn check(&self, step: usize) {
        let snap = self.real.snapshot(self.at(self.t));
        assert_eq!(snap.state, self.model.state, "state after step {step}");
        assert_eq!(
            snap.metrics_only, self.model.metrics_only,
            "mode after step {step}"
        );
        let (calls, failures, slow) = self.model.counts(self.t);
        assert_eq!(
            (snap.calls, snap.failures, snap.slow_calls),
            (calls as u64, failures as u64, slow as u64),
            "window after step {step}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn real_breaker_agrees_with_the_model(config in config(), ops in prop::collection::vec(op(), 1..200)) {
        let t0 = Instant::now();
        let metrics = Metrics::register(config.name(), true);
        let mut h = Harness {
            real: Breaker::new(config.clone(), t0, metrics),
            model: Model::new(config),
            t0,
            t: 0,
            held: Vec::new(),
        };
        for (step, op) in ops.into_iter().enumerate() {
            h.apply(op);
            h.check(step);
        }
    }
}
