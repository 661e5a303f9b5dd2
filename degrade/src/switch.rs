//! The manual degrade switch.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use palisade_core::Emitter;
use palisade_core::metrics::Gauge;

use crate::DegradeEvent;

/// An operator's switch that puts degrade layers into degraded mode and back at run time
/// (e.g. during an incident), shared by every clone.
///
/// In degraded mode a [`Fallback`](crate::Fallback) answers from its fallback without
/// calling the service, a [`StaleCache`](crate::StaleCache) answers from its cache when it
/// has a fresh-enough entry, and a [`Shed`](crate::Shed) sheds everything but critical
/// traffic. Give one switch to several layers (`.switch(switch.clone())` on their config
/// builders) to degrade a whole stage at once; each layer reports the flip as a
/// [`DegradeEvent::ModeSwitched`] and in its `palisade_degrade_mode` gauge.
///
/// Reading the switch is one relaxed atomic load per call. A switch keeps the event sinks
/// of the layers built with it for as long as it lives (layers are built once, at start-up,
/// so this is bounded).
///
/// ```
/// use palisade_degrade::Switch;
///
/// let switch = Switch::new();
/// let handle = switch.clone();
/// assert!(!switch.is_degraded());
/// handle.degrade();
/// assert!(switch.is_degraded());
/// handle.restore();
/// assert!(!switch.is_degraded());
/// ```
#[derive(Clone, Default)]
pub struct Switch {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    degraded: AtomicBool,
    // Flips waiting to be reported, in the order the flag took them. Never held while a
    // listener runs.
    reports: Mutex<Reports>,
    // Layers built with this switch; told about flips (rare, so a lock is fine).
    watchers: Mutex<Vec<Watcher>>,
}

#[derive(Default)]
struct Reports {
    pending: VecDeque<bool>,
    // A thread is reporting the pending flips: later flips queue for it.
    reporting: bool,
}

#[derive(Clone)]
struct Watcher {
    emitter: Emitter<DegradeEvent>,
    gauge: Gauge,
}

impl Switch {
    /// A switch in live mode.
    pub fn new() -> Self {
        Self::default()
    }

    /// `true` in degraded mode.
    #[inline]
    pub fn is_degraded(&self) -> bool {
        self.shared.degraded.load(Ordering::Acquire)
    }

    /// Enter degraded mode.
    pub fn degrade(&self) {
        self.set(true);
    }

    /// Return to live mode.
    pub fn restore(&self) {
        self.set(false);
    }

    /// Set the mode (`true` = degraded). Listeners hear only actual changes, in the order
    /// the flag took them, so the last one heard is the mode the switch is in, and the
    /// gauges show that mode, even when several threads flip it at once. Listeners run
    /// with no lock of the switch held: a listener may flip the switch (its flip is
    /// reported after the current one).
    pub fn set(&self, degraded: bool) {
        {
            let mut reports = self.reports();
            if self.shared.degraded.swap(degraded, Ordering::AcqRel) == degraded {
                return;
            }
            for w in self.watchers().iter() {
                w.gauge.set(mode_value(degraded));
            }
            reports.pending.push_back(degraded);
            if reports.reporting {
                // The thread reporting now will report this flip too, in order.
                return;
            }
            reports.reporting = true;
        }
        loop {
            let next = {
                let mut reports = self.reports();
                let Some(next) = reports.pending.pop_front() else {
                    reports.reporting = false;
                    return;
                };
                next
            };
            tracing::info!(target: "palisade::degrade", degraded = next, "degrade switch flipped");
            let watchers = self.watchers().clone();
            for w in &watchers {
                w.emitter
                    .emit(|| DegradeEvent::ModeSwitched { degraded: next });
            }
        }
    }

    fn reports(&self) -> MutexGuard<'_, Reports> {
        self.shared
            .reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn watchers(&self) -> MutexGuard<'_, Vec<Watcher>> {
        self.shared
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Register a layer so it reports flips under its own name.
    pub(crate) fn watch(&self, emitter: Emitter<DegradeEvent>, gauge: Gauge) {
        // Under the flip lock: no flip can slip in between setting the gauge to the mode
        // and being registered for the next flip.
        let _reports = self.reports();
        gauge.set(mode_value(self.is_degraded()));
        self.watchers().push(Watcher { emitter, gauge });
    }
}

fn mode_value(degraded: bool) -> f64 {
    if degraded { 1.0 } else { 0.0 }
}

impl fmt::Debug for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Switch")
            .field("degraded", &self.is_degraded())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::{Listeners, Name};
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn watchers_hear_only_real_flips() {
        let seen = Arc::new(AtomicUsize::new(0));
        let mut listeners = Listeners::new();
        let s = Arc::clone(&seen);
        listeners.push(move |e: &DegradeEvent| {
            assert!(matches!(e, DegradeEvent::ModeSwitched { .. }));
            s.fetch_add(1, Ordering::Relaxed);
        });
        let switch = Switch::new();
        switch.watch(Emitter::new(Name::new("a"), listeners), Gauge::default());
        switch.restore();
        assert_eq!(seen.load(Ordering::Relaxed), 0);
        switch.degrade();
        switch.degrade();
        switch.restore();
        assert_eq!(seen.load(Ordering::Relaxed), 2);
    }

    /// A listener that flips the switch used to deadlock (listeners ran under the lock).
    #[test]
    fn a_listener_may_flip_the_switch() {
        let switch = Switch::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut listeners = Listeners::new();
        let (s, flipper) = (Arc::clone(&seen), switch.clone());
        listeners.push(move |e: &DegradeEvent| {
            if let DegradeEvent::ModeSwitched { degraded } = e {
                s.lock().unwrap().push(*degraded);
                if *degraded {
                    // An automatic recovery: back to live at once.
                    flipper.restore();
                }
            }
        });
        switch.watch(Emitter::new(Name::new("a"), listeners), Gauge::default());
        switch.degrade();
        assert!(!switch.is_degraded());
        assert_eq!(*seen.lock().unwrap(), [true, false]);
    }

    /// Concurrent flips: every listener hears the flips in the order the flag took them,
    /// alternating, and the last one it hears is the mode the switch is in.
    #[test]
    fn concurrent_flips_are_reported_in_order() {
        for _ in 0..20 {
            let switch = Switch::new();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let mut listeners = Listeners::new();
            let s = Arc::clone(&seen);
            listeners.push(move |e: &DegradeEvent| {
                if let DegradeEvent::ModeSwitched { degraded } = e {
                    s.lock().unwrap().push(*degraded);
                }
            });
            switch.watch(Emitter::new(Name::new("a"), listeners), Gauge::default());
            std::thread::scope(|scope| {
                for t in 0..4 {
                    let switch = switch.clone();
                    scope.spawn(move || {
                        for i in 0..500 {
                            switch.set((i + t) % 2 == 0);
                        }
                    });
                }
            });
            let seen = seen.lock().unwrap();
            assert!(
                seen.windows(2).all(|w| w[0] != w[1]),
                "flips heard out of order"
            );
            assert_eq!(seen.last().copied().unwrap_or(false), switch.is_degraded());
        }
    }
}
