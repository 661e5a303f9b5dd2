//! The shedder's shared state and admission decision.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use palisade_core::{Emitter, Name, Overloaded, Priority, time};

use super::{ShedConfig, Signal};
use crate::metrics::{ByPriority, mode_gauge, priority_index};
use crate::{DegradeEvent, Switch};

/// "No limit" in a cap or delay-limit slot.
const NO_CAP: usize = usize::MAX;
const NO_DELAY_LIMIT: u64 = u64::MAX;

/// State shared by a layer and all its services.
pub(crate) struct Shared {
    pub(crate) name: Name,
    // Per priority (sheddable, default, critical): the in-flight count it may make
    // (`NO_CAP`: no cap). Atomics, so a handle can change them under load.
    caps: [AtomicUsize; 3],
    // Per priority: the queueing delay (nanoseconds) above which it is shed
    // (`NO_DELAY_LIMIT`: no delay limit).
    delay_limits: [AtomicU64; 3],
    signal: Option<Signal>,
    pub(crate) switch: Switch,
    in_flight: AtomicUsize,
    // The queueing delay estimate, nanoseconds.
    delay: AtomicU64,
    pub(crate) emitter: Emitter<DegradeEvent>,
    shed: ByPriority,
    // The config in force (listeners cleared), for handles; written only by `update`.
    config: Mutex<ShedConfig>,
}

/// The per-priority caps and delay limits of `config`.
fn limits(config: &ShedConfig) -> ([usize; 3], [u64; 3]) {
    let thresholds = config.thresholds;
    let per_priority = |f: &dyn Fn(f64) -> u64| {
        [Priority::Sheddable, Priority::Default, Priority::Critical].map(|p| f(thresholds.get(p)))
    };
    // At least one request of each priority may be in flight, or a small limit would
    // shed a priority completely even when idle.
    let caps = config.max_in_flight.map_or([NO_CAP; 3], |max| {
        per_priority(&|t| ((t * max as f64).floor() as u64).max(1))
            .map(|c| usize::try_from(c).unwrap_or(usize::MAX).min(max))
    });
    let delay_limits = config.target_delay.map_or([NO_DELAY_LIMIT; 3], |target| {
        per_priority(&|t| time::nanos(time::mul_f64(target, t)).min(NO_DELAY_LIMIT - 1))
    });
    (caps, delay_limits)
}

impl Shared {
    pub(crate) fn new(config: ShedConfig) -> Self {
        let (caps, delay_limits) = limits(&config);
        let mut kept = config.clone();
        kept.listeners = palisade_core::Listeners::new();
        let ShedConfig {
            name,
            signal,
            listeners,
            switch,
            ..
        } = config;
        let emitter = Emitter::new(name.clone(), listeners);
        switch.watch(emitter.clone(), mode_gauge(&name));
        Self {
            shed: ByPriority::register("palisade_degrade_shed_total", &name),
            name,
            caps: caps.map(AtomicUsize::new),
            delay_limits: delay_limits.map(AtomicU64::new),
            signal,
            switch,
            in_flight: AtomicUsize::new(0),
            delay: AtomicU64::new(0),
            emitter,
            config: Mutex::new(kept),
        }
    }

    /// The config in force.
    pub(crate) fn config(&self) -> ShedConfig {
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Apply `config`'s limits (max in flight, target delay, thresholds) from the next
    /// admission on; the name must be this layer's. The layer keeps its own overload
    /// signal, switch and listeners (code, not data).
    pub(crate) fn update(&self, config: &ShedConfig) -> Result<(), palisade_core::ConfigError> {
        palisade_core::config::ensure_same_name("shed", &self.name, &config.name)?;
        let mut current = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        let (caps, delay_limits) = limits(config);
        for (slot, v) in self.caps.iter().zip(caps) {
            slot.store(v, Ordering::Relaxed);
        }
        for (slot, v) in self.delay_limits.iter().zip(delay_limits) {
            slot.store(v, Ordering::Relaxed);
        }
        current.max_in_flight = config.max_in_flight;
        current.target_delay = config.target_delay;
        current.thresholds = config.thresholds;
        Ok(())
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The current queueing delay estimate.
    pub(crate) fn queue_delay(&self) -> Duration {
        Duration::from_nanos(self.delay.load(Ordering::Relaxed))
    }

    /// Whether `poll_ready` waits should be timed.
    pub(crate) fn measures_delay(&self) -> bool {
        self.delay_limits[2].load(Ordering::Relaxed) != NO_DELAY_LIMIT
    }

    /// Fold one readiness wait into the estimate: it jumps up to a larger sample at once
    /// (react to overload within one request) and decays by 1/8 of the gap per smaller
    /// sample (release load gradually, so shedding does not flap).
    pub(crate) fn record_wait(&self, sample: Duration) {
        let sample = time::nanos(sample);
        let old = self.delay.load(Ordering::Relaxed);
        let new = if sample >= old {
            sample
        } else {
            old - (old - sample).div_ceil(8)
        };
        if new != old {
            self.delay.store(new, Ordering::Relaxed);
        }
    }

    /// Admit a request of `priority`, or say which limit sheds it.
    pub(crate) fn admit(self: &Arc<Self>, priority: Priority) -> Result<InFlight, Overloaded> {
        let i = priority_index(priority);
        let below_critical = priority < Priority::Critical;
        let refused = if below_critical && self.switch.is_degraded() {
            Some("degraded mode")
        } else if below_critical && self.signal.as_ref().is_some_and(|s| s()) {
            Some("overload signal")
        } else if self.delay.load(Ordering::Relaxed) > self.delay_limits[i].load(Ordering::Relaxed)
        {
            Some("queueing delay")
        } else {
            None
        };
        if let Some(limit) = refused {
            return Err(self.refuse(priority, limit));
        }
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if now > self.caps[i].load(Ordering::Relaxed) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse(priority, "max in-flight"));
        }
        Ok(InFlight(Arc::clone(self)))
    }

    fn refuse(&self, priority: Priority, limit: &'static str) -> Overloaded {
        self.shed.increment(priority);
        self.emitter.emit(|| DegradeEvent::Shed { priority, limit });
        Overloaded::new(self.name.clone(), limit).with_priority(priority)
    }
}

/// One admitted request; releases its in-flight slot when dropped.
pub(crate) struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InFlight")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shed::Thresholds;

    fn shared(config: ShedConfig) -> Arc<Shared> {
        Arc::new(Shared::new(config))
    }

    #[test]
    fn lower_priorities_hit_their_caps_first() {
        let s = shared(ShedConfig::builder().max_in_flight(10).build().unwrap());
        // Sheddable may make up to 5 in flight, default 8, critical 10.
        let mut held: Vec<InFlight> = (0..5)
            .map(|_| s.admit(Priority::Sheddable).unwrap())
            .collect();
        assert_eq!(
            s.admit(Priority::Sheddable).unwrap_err().priority(),
            Some(Priority::Sheddable)
        );
        held.extend((0..3).map(|_| s.admit(Priority::Default).unwrap()));
        assert!(s.admit(Priority::Default).is_err());
        held.extend((0..2).map(|_| s.admit(Priority::Critical).unwrap()));
        assert_eq!(
            s.admit(Priority::Critical).unwrap_err().limit(),
            "max in-flight"
        );
        assert_eq!(s.in_flight(), 10);
        drop(held);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn delay_estimate_jumps_up_and_decays() {
        let s = shared(
            ShedConfig::builder()
                .target_delay(Duration::from_millis(100))
                .thresholds(Thresholds {
                    sheddable: 0.5,
                    default: 0.8,
                    critical: 1.0,
                })
                .build()
                .unwrap(),
        );
        s.record_wait(Duration::from_millis(90));
        assert_eq!(s.queue_delay(), Duration::from_millis(90));
        assert_eq!(
            s.admit(Priority::Default).unwrap_err().limit(),
            "queueing delay"
        );
        assert!(s.admit(Priority::Critical).is_ok());
        for _ in 0..40 {
            s.record_wait(Duration::ZERO);
        }
        assert!(s.queue_delay() < Duration::from_millis(5));
        assert!(s.admit(Priority::Sheddable).is_ok());
    }

    #[test]
    fn signal_and_switch_spare_only_critical() {
        let s = shared(
            ShedConfig::builder()
                .overloaded_when(|| true)
                .build()
                .unwrap(),
        );
        assert_eq!(
            s.admit(Priority::Default).unwrap_err().limit(),
            "overload signal"
        );
        assert!(s.admit(Priority::Critical).is_ok());
        let s = shared(ShedConfig::default());
        s.switch.degrade();
        assert_eq!(
            s.admit(Priority::Sheddable).unwrap_err().limit(),
            "degraded mode"
        );
        assert!(s.admit(Priority::Critical).is_ok());
    }
}
