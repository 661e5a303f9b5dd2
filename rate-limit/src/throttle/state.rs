//! The gate shared by every clone of a throttle layer, its events, metrics and handle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::Duration;

use palisade_core::metrics::{Counter, Gauge, MetricDef, MetricKind};
use palisade_core::throttle::Throttle;
use palisade_core::{Emitter, Event, Listeners, Name};
use tokio::time::Instant;

use super::config::ThrottleConfig;
use super::handle::ThrottleSnapshot;

/// Times the gate closed on an upstream's hint (or a handle), label `name`.
pub const CLOSED: &str = "palisade_rate_limit_throttle_closed_total";
/// Calls the gate refused while closed or ramping, label `name`.
pub const REFUSED: &str = "palisade_rate_limit_throttle_refused_total";
/// 1 while the gate restricts calls (closed or ramping), 0 when fully open, label `name`.
pub const RESTRICTED: &str = "palisade_rate_limit_throttle_restricted";

/// The metrics of the throttle gate (feature `metrics`).
pub const METRICS: &[MetricDef] = &[
    MetricDef::new(
        CLOSED,
        MetricKind::Counter,
        "times the throttle gate closed on an upstream's hint",
    ),
    MetricDef::new(
        REFUSED,
        MetricKind::Counter,
        "calls the throttle gate refused while closed or ramping",
    ),
    MetricDef::new(
        RESTRICTED,
        MetricKind::Gauge,
        "1 while the throttle gate restricts calls, 0 when fully open",
    ),
];

/// What the throttle gate did, on the `tracing` target `palisade::rate_limit` at `DEBUG`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThrottleEvent {
    /// The upstream (or an operator) asked to slow down: the gate is closed for `for_`.
    Closed {
        /// How long the gate stays closed.
        for_: Duration,
        /// Calls per interval allowed once it reopens.
        allowance: u32,
    },
    /// A call was refused locally; it may be admitted after `retry_after`.
    Refused {
        /// How long until the gate admits a call again.
        retry_after: Duration,
    },
    /// The ramp reached its limit (or an operator reopened it): the gate is fully open.
    Opened,
}

impl Event for ThrottleEvent {
    const TARGET: &'static str = "palisade::rate_limit";

    fn tracing_enabled() -> bool {
        tracing::enabled!(target: "palisade::rate_limit", tracing::Level::DEBUG)
    }

    fn trace(&self, name: &Name) {
        match self {
            ThrottleEvent::Closed { for_, allowance } => tracing::debug!(
                target: "palisade::rate_limit",
                name = %name, kind = "throttle", closed_for = ?for_, allowance,
                "upstream throttled; every caller waits"
            ),
            ThrottleEvent::Refused { retry_after } => tracing::debug!(
                target: "palisade::rate_limit",
                name = %name, kind = "throttle", retry_after = ?retry_after,
                "call refused by the throttle gate"
            ),
            ThrottleEvent::Opened => tracing::debug!(
                target: "palisade::rate_limit",
                name = %name, kind = "throttle",
                "throttle gate fully open"
            ),
        }
    }
}

/// The decision for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Open,
    Refuse(Duration),
}

/// The restricted state: taken under a lock, only while the gate is not fully open.
#[derive(Debug)]
struct Restricted {
    closed_until: Instant,
    interval: Duration,
    window_start: Instant,
    admitted: u32,
    allowance: u32,
}

#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) config: Mutex<ThrottleConfig>,
    name: Name,
    /// `false` on the hot path: the gate is fully open and takes no lock.
    restricted: AtomicBool,
    state: Mutex<Restricted>,
    /// Listeners added through the layer after it was built join here; events are emitted
    /// only off the hot path (a closed or ramping gate), so the read lock costs nothing there.
    emitter: RwLock<Emitter<ThrottleEvent>>,
    listeners: Mutex<Listeners<ThrottleEvent>>,
    closed_total: Counter,
    refused_total: Counter,
    restricted_gauge: Gauge,
}

const MIN_INTERVAL: Duration = Duration::from_millis(1);

impl Gate {
    pub(crate) fn new(config: ThrottleConfig, listeners: Listeners<ThrottleEvent>) -> Self {
        let name = config.name().clone();
        let now = Instant::now();
        Self {
            closed_total: Counter::register(CLOSED, &name, &[]),
            refused_total: Counter::register(REFUSED, &name, &[]),
            restricted_gauge: Gauge::register(RESTRICTED, &name, &[]),
            emitter: RwLock::new(Emitter::new(name.clone(), listeners.clone())),
            listeners: Mutex::new(listeners),
            name,
            config: Mutex::new(config),
            restricted: AtomicBool::new(false),
            state: Mutex::new(Restricted {
                closed_until: now,
                interval: MIN_INTERVAL,
                window_start: now,
                admitted: 0,
                allowance: 1,
            }),
        }
    }

    pub(crate) fn name(&self) -> &Name {
        &self.name
    }

    fn emit(&self, make: impl FnOnce() -> ThrottleEvent) {
        self.emitter
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .emit(make);
    }

    /// Add a listener to this gate, shared by every clone, service and handle of it.
    pub(crate) fn add_listener(&self, listener: impl Fn(&ThrottleEvent) + Send + Sync + 'static) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners.push(listener);
        *self.emitter.write().unwrap_or_else(|e| e.into_inner()) =
            Emitter::new(self.name.clone(), listeners.clone());
    }

    fn lock(&self) -> MutexGuard<'_, Restricted> {
        // A panic while holding the lock cannot leave the numbers inconsistent enough to
        // matter: keep going with what is there.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn config(&self) -> ThrottleConfig {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// May a call go now? One atomic load when the gate is fully open.
    #[inline]
    pub(crate) fn admit(&self) -> Admit {
        if !self.restricted.load(Ordering::Acquire) {
            return Admit::Open;
        }
        self.admit_restricted(Instant::now())
    }

    #[cold]
    fn admit_restricted(&self, now: Instant) -> Admit {
        let ramp_limit = self.config().ramp_limit();
        let mut s = self.lock();
        if !self.restricted.load(Ordering::Acquire) {
            return Admit::Open;
        }
        if now < s.closed_until {
            let retry_after = s.closed_until - now;
            drop(s);
            self.refused(retry_after);
            return Admit::Refuse(retry_after);
        }
        let window_end = palisade_core::time::add(s.window_start, s.interval);
        if now >= window_end {
            // a whole interval without a hint: let twice as many through
            s.allowance = s.allowance.saturating_mul(2);
            s.window_start = now;
            s.admitted = 0;
            if s.allowance >= ramp_limit {
                self.restricted.store(false, Ordering::Release);
                self.restricted_gauge.set(0.0);
                drop(s);
                self.emit(|| ThrottleEvent::Opened);
                return Admit::Open;
            }
        }
        if s.admitted < s.allowance {
            s.admitted += 1;
            return Admit::Open;
        }
        let retry_after = palisade_core::time::add(s.window_start, s.interval) - now;
        drop(s);
        self.refused(retry_after);
        Admit::Refuse(retry_after)
    }

    fn refused(&self, retry_after: Duration) {
        self.refused_total.increment(1);
        self.emit(|| ThrottleEvent::Refused { retry_after });
    }

    /// The upstream asked to slow down: close for every caller until the hinted instant
    /// (capped at `max_throttle`), then ramp back up from half the allowance.
    pub(crate) fn throttle(&self, now: Instant, hint: Throttle) {
        let max = self.config().max_throttle();
        let until = hint.until(now).min(palisade_core::time::add(now, max));
        let length = until.saturating_duration_since(now).max(MIN_INTERVAL);
        let until = palisade_core::time::add(now, length);
        let mut s = self.lock();
        let was_restricted = self.restricted.load(Ordering::Acquire);
        let already_closed = was_restricted && now < s.closed_until;
        if already_closed && until <= s.closed_until {
            // a second answer of the same throttle (calls in flight when it began)
            return;
        }
        s.allowance = if was_restricted {
            // a hint during the ramp (or a longer one while closed): halve, at least one
            if already_closed {
                s.allowance
            } else {
                (s.allowance / 2).max(1)
            }
        } else {
            1
        };
        s.closed_until = until;
        s.interval = length;
        s.window_start = until;
        s.admitted = 0;
        let allowance = s.allowance;
        self.restricted.store(true, Ordering::Release);
        drop(s);
        self.closed_total.increment(1);
        self.restricted_gauge.set(1.0);
        self.emit(|| ThrottleEvent::Closed {
            for_: length,
            allowance,
        });
    }

    pub(crate) fn reopen(&self) {
        let _s = self.lock();
        if self.restricted.swap(false, Ordering::AcqRel) {
            self.restricted_gauge.set(0.0);
            drop(_s);
            self.emit(|| ThrottleEvent::Opened);
        }
    }

    pub(crate) fn snapshot(&self, now: Instant) -> ThrottleSnapshot {
        let s = self.lock();
        if !self.restricted.load(Ordering::Acquire) {
            return ThrottleSnapshot {
                closed_for: None,
                allowance: None,
            };
        }
        ThrottleSnapshot {
            closed_for: (now < s.closed_until).then(|| s.closed_until - now),
            allowance: Some(s.allowance),
        }
    }
}
