//! The manual degrade switch.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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
    // Layers built with this switch; told about flips (rare, so a lock is fine).
    watchers: Mutex<Vec<Watcher>>,
}

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
        self.shared.degraded.load(Ordering::Relaxed)
    }

    /// Enter degraded mode.
    pub fn degrade(&self) {
        self.set(true);
    }

    /// Return to live mode.
    pub fn restore(&self) {
        self.set(false);
    }

    /// Set the mode (`true` = degraded). Listeners hear only actual changes.
    pub fn set(&self, degraded: bool) {
        let was = self.shared.degraded.swap(degraded, Ordering::Relaxed);
        if was == degraded {
            return;
        }
        tracing::info!(target: "palisade::degrade", degraded, "degrade switch flipped");
        let watchers = self
            .shared
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for w in watchers.iter() {
            w.gauge.set(mode_value(degraded));
            w.emitter.emit(|| DegradeEvent::ModeSwitched { degraded });
        }
    }

    /// Register a layer so it reports flips under its own name.
    pub(crate) fn watch(&self, emitter: Emitter<DegradeEvent>, gauge: Gauge) {
        gauge.set(mode_value(self.is_degraded()));
        self.shared
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Watcher { emitter, gauge });
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
}
