//! Run-time control of a chaos layer: on/off, rates, counters, the schedule clock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use palisade_core::config::ensure;
use palisade_core::time::{AtomicInstant, mix64};
use palisade_core::{ConfigError, Emitter, Name};
use tokio::time::Instant;

use crate::event::{ChaosEvent, Metrics};
use crate::fault::FaultKind;

/// The mutable state shared by a layer, its services and its handles. Everything a call
/// reads is an atomic, so toggling and re-rating never take a lock.
pub(crate) struct Control {
    enabled: AtomicBool,
    /// Probabilities as `f64` bits, indexed by [`FaultKind::index`].
    rates: [AtomicU64; 6],
    injected: [AtomicU64; 6],
    /// Calls that drew randomness so far: call `n` gets the stream seeded by `(seed, n)`,
    /// so a run is reproducible for a seed without a lock around one shared RNG.
    sequence: AtomicU64,
    seed: u64,
    /// When the schedule (re)started.
    schedule_start: AtomicInstant,
    pub(crate) emitter: Emitter<ChaosEvent>,
    metrics: Metrics,
}

impl Control {
    pub(crate) fn new(
        enabled: bool,
        rates: [f64; 6],
        seed: u64,
        emitter: Emitter<ChaosEvent>,
    ) -> Self {
        let metrics = Metrics::register(emitter.name());
        metrics.set_enabled(enabled);
        Self {
            enabled: AtomicBool::new(enabled),
            rates: rates.map(|r| AtomicU64::new(r.to_bits())),
            injected: [0; 6].map(AtomicU64::new),
            sequence: AtomicU64::new(0),
            seed,
            schedule_start: AtomicInstant::new(Instant::now()),
            emitter,
            metrics,
        }
    }

    /// The whole cost of a call while injection is off.
    #[inline]
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    pub(crate) fn rate(&self, kind: FaultKind) -> f64 {
        f64::from_bits(self.rates[kind.index()].load(Relaxed))
    }

    /// A fresh random stream for one decision (a call or a readiness check).
    pub(crate) fn rng(&self) -> fastrand::Rng {
        let n = self.sequence.fetch_add(1, Relaxed);
        fastrand::Rng::with_seed(mix64(self.seed ^ mix64(n)))
    }

    /// Time since the schedule started.
    pub(crate) fn schedule_elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.schedule_start.load())
    }

    /// Count, measure and announce one injected fault.
    pub(crate) fn record(&self, fault: FaultKind, delay: Option<Duration>) {
        self.injected[fault.index()].fetch_add(1, Relaxed);
        self.metrics.injected(fault, delay);
        self.emitter.emit(|| ChaosEvent::Injected { fault, delay });
    }
}

// ===== ChaosHandle =====

/// Switch a [`ChaosLayer`](crate::ChaosLayer) on and off, change its fault rates and read
/// what it injected, at run time, from any thread. Cheap to clone; every clone controls the
/// same layer (and every service it built).
///
/// ```
/// use palisade_chaos::{ChaosConfig, ChaosLayer, FaultKind};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), palisade_core::ConfigError> {
/// let config = ChaosConfig::<(), (), std::io::Error>::builder()
///     .error(0.1, |_| std::io::Error::other("injected"))
///     .build()?;
/// let layer = ChaosLayer::new(config);
/// let handle = layer.handle();
///
/// handle.disable(); // a game day is over
/// assert!(!handle.is_enabled());
/// handle.set_rate(FaultKind::Error, 0.5)?; // the next one will be harsher
/// assert_eq!(handle.rate(FaultKind::Error), 0.5);
/// assert!(handle.set_rate(FaultKind::Error, 2.0).is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ChaosHandle {
    control: Arc<Control>,
}

impl ChaosHandle {
    pub(crate) fn new(control: Arc<Control>) -> Self {
        Self { control }
    }

    /// The layer's name.
    pub fn name(&self) -> &Name {
        self.control.emitter.name()
    }

    /// Whether faults are being injected.
    pub fn is_enabled(&self) -> bool {
        self.control.is_enabled()
    }

    /// Start injecting faults (rates and schedule as configured).
    pub fn enable(&self) {
        self.set_enabled(true);
    }

    /// Stop injecting faults: every call goes straight to the inner service.
    pub fn disable(&self) {
        self.set_enabled(false);
    }

    /// Switch injection on or off.
    pub fn set_enabled(&self, enabled: bool) {
        let was = self.control.enabled.swap(enabled, Relaxed);
        if was != enabled {
            self.control.metrics.set_enabled(enabled);
            self.control
                .emitter
                .emit(|| ChaosEvent::Toggled { enabled });
        }
    }

    /// The probability (0.0 to 1.0) with which each call suffers `fault`, outside any
    /// scheduled window.
    pub fn rate(&self, fault: FaultKind) -> f64 {
        self.control.rate(fault)
    }

    /// Change the probability of `fault`. Faults that need a function (error, replace,
    /// readiness, behaviour) are only injected if the function was configured; a rate
    /// outside 0.0 to 1.0 is refused.
    pub fn set_rate(&self, fault: FaultKind, rate: f64) -> Result<(), ConfigError> {
        ensure(
            (0.0..=1.0).contains(&rate),
            "chaos",
            "rate",
            rate,
            "0.0 to 1.0",
        )?;
        self.control.rates[fault.index()].store(rate.to_bits(), Relaxed);
        self.control
            .emitter
            .emit(|| ChaosEvent::RateChanged { fault, rate });
        Ok(())
    }

    /// How many times `fault` has been injected.
    pub fn injected(&self, fault: FaultKind) -> u64 {
        self.control.injected[fault.index()].load(Relaxed)
    }

    /// How many faults of any kind have been injected.
    pub fn injected_total(&self) -> u64 {
        FaultKind::ALL.iter().map(|k| self.injected(*k)).sum()
    }

    /// Start the schedule's clock again now: windows are measured from this instant.
    pub fn restart_schedule(&self) {
        self.control.schedule_start.store(Instant::now());
    }

    /// Time since the schedule started.
    pub fn schedule_elapsed(&self) -> Duration {
        self.control.schedule_elapsed()
    }
}

impl fmt::Debug for ChaosHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosHandle")
            .field("name", self.name())
            .field("enabled", &self.is_enabled())
            .field("injected", &self.injected_total())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::Listeners;

    #[test]
    fn streams_differ_per_call_and_repeat_per_seed() {
        let make = || {
            Control::new(
                true,
                [0.0; 6],
                42,
                Emitter::new(Name::default(), Listeners::new()),
            )
        };
        let (a, b) = (make(), make());
        let xs: Vec<u64> = (0..4).map(|_| a.rng().u64(..)).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.rng().u64(..)).collect();
        assert_eq!(xs, ys, "same seed, same run");
        assert_ne!(xs[0], xs[1], "consecutive calls get different streams");
    }
}
