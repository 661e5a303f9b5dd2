//! Event plumbing every layer reuses: typed events to listeners and to `tracing`.
//!
//! Each layer defines its own event enum (`TimeoutEvent`, `RetryEvent`, …) and implements
//! [`Event`] for it, naming its `tracing` target (`palisade::timeout`, …). The layer keeps
//! an [`Emitter`] and calls [`Emitter::emit`] with a closure that builds the event: when no
//! listener is registered and no `tracing` subscriber is interested in the target, the
//! closure is never run, so nobody listening costs one branch.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::Name;

/// A layer's typed event.
pub trait Event: fmt::Debug + Send + Sync + 'static {
    /// The `tracing` target the layer's events go to (`"palisade::timeout"`).
    const TARGET: &'static str;

    /// Whether a `tracing` subscriber wants this layer's events. Implement with
    /// `tracing::enabled!(target: "palisade::<layer>", Level::DEBUG)` (the target must be a
    /// literal for `tracing`'s static callsites, so each crate writes this one line).
    fn tracing_enabled() -> bool;

    /// Emit the event as a `tracing` event on the layer's target, with stable field names
    /// (`name` = the layer name, then the event's own fields).
    fn trace(&self, name: &Name);
}

/// A registered listener.
pub type Listener<Ev> = Arc<dyn Fn(&Ev) + Send + Sync>;

/// The listeners of one layer: cheap to clone, shared by all clones of the layer.
pub struct Listeners<Ev> {
    list: Vec<Listener<Ev>>,
}

impl<Ev> Listeners<Ev> {
    /// No listeners.
    pub const fn new() -> Self {
        Self { list: Vec::new() }
    }

    /// Register a listener. Listeners run synchronously on the thread that emits, so they
    /// must be quick (push to a channel, bump a counter); a panic in one is caught and logged.
    pub fn push(&mut self, listener: impl Fn(&Ev) + Send + Sync + 'static) {
        self.list.push(Arc::new(listener));
    }

    /// `true` when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many listeners are registered.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Call every listener with `event`.
    pub fn notify(&self, event: &Ev) {
        for listener in &self.list {
            if catch_unwind(AssertUnwindSafe(|| listener(event))).is_err() {
                tracing::warn!(target: "palisade", "an event listener panicked; the event was dropped for it");
            }
        }
    }
}

impl<Ev> Default for Listeners<Ev> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Ev> Clone for Listeners<Ev> {
    fn clone(&self) -> Self {
        Self {
            list: self.list.clone(),
        }
    }
}

impl<Ev> fmt::Debug for Listeners<Ev> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listeners")
            .field("len", &self.list.len())
            .finish()
    }
}

/// A layer's event sink: its name and listeners, plus `tracing`.
///
/// ```
/// use palisade_core::event::{Emitter, Event, Listeners};
/// use palisade_core::Name;
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
///
/// #[derive(Debug)]
/// enum PingEvent { Ping }
///
/// impl Event for PingEvent {
///     const TARGET: &'static str = "my_layer";
///     fn tracing_enabled() -> bool {
///         tracing::enabled!(target: "my_layer", tracing::Level::DEBUG)
///     }
///     fn trace(&self, name: &Name) {
///         tracing::debug!(target: "my_layer", name = %name, "ping");
///     }
/// }
///
/// let seen = Arc::new(AtomicUsize::new(0));
/// let mut listeners = Listeners::new();
/// let counter = seen.clone();
/// listeners.push(move |_: &PingEvent| { counter.fetch_add(1, Ordering::Relaxed); });
/// let emitter = Emitter::new(Name::new("demo"), listeners);
/// emitter.emit(|| PingEvent::Ping);
/// assert_eq!(seen.load(Ordering::Relaxed), 1);
///
/// // Nobody listening: the event is never built.
/// let quiet = Emitter::<PingEvent>::new(Name::new("quiet"), Listeners::new());
/// quiet.emit(|| unreachable!("no listener, no subscriber"));
/// ```
pub struct Emitter<Ev> {
    name: Name,
    shared: Arc<EmitterListeners<Ev>>,
}

/// The listeners of an emitter, shared by its clones; listeners can join after the layer
/// was built (`layer.on_event(..)`), and every service and handle made before sees them.
struct EmitterListeners<Ev> {
    /// `true` once a listener joined: the one load the no-listener path pays.
    active: AtomicBool,
    list: RwLock<Listeners<Ev>>,
}

impl<Ev> EmitterListeners<Ev> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Listeners<Ev>> {
        // A listener cannot panic while the lock is held (notify catches panics), so a
        // poisoned lock still holds a whole list.
        self.list.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl<Ev: Event> Emitter<Ev> {
    /// An emitter for the layer `name`.
    pub fn new(name: Name, listeners: Listeners<Ev>) -> Self {
        Self {
            name,
            shared: Arc::new(EmitterListeners {
                active: AtomicBool::new(!listeners.is_empty()),
                list: RwLock::new(listeners),
            }),
        }
    }

    /// The layer's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Add a listener: every clone of this emitter (every service and handle of the layer)
    /// delivers to it from now on.
    pub fn add_listener(&self, listener: impl Fn(&Ev) + Send + Sync + 'static) {
        let mut list = self.shared.list.write().unwrap_or_else(|e| e.into_inner());
        list.push(listener);
        self.shared.active.store(true, Ordering::Release);
    }

    /// How many listeners are registered.
    pub fn listener_count(&self) -> usize {
        self.shared.read().len()
    }

    #[inline]
    fn has_listeners(&self) -> bool {
        self.shared.active.load(Ordering::Acquire)
    }

    /// `true` when an emitted event would reach someone (a listener or a `tracing`
    /// subscriber). Layers check this before reading a clock for an event's fields.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.has_listeners() || Ev::tracing_enabled()
    }

    /// Build the event with `make` and deliver it, only if someone is listening.
    #[inline]
    pub fn emit(&self, make: impl FnOnce() -> Ev) {
        let to_listeners = self.has_listeners();
        let to_tracing = Ev::tracing_enabled();
        if !to_listeners && !to_tracing {
            return;
        }
        let event = make();
        if to_tracing {
            event.trace(&self.name);
        }
        if to_listeners {
            self.shared.read().notify(&event);
        }
    }
}

impl<Ev> Clone for Emitter<Ev> {
    /// A clone shares the listeners: one added through either reaches both.
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Ev> fmt::Debug for Emitter<Ev> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter")
            .field("name", &self.name)
            .field("listeners", &self.shared.read().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Tick;
    impl Event for Tick {
        const TARGET: &'static str = "palisade::test";
        fn tracing_enabled() -> bool {
            tracing::enabled!(target: "palisade::test", tracing::Level::DEBUG)
        }
        fn trace(&self, name: &Name) {
            tracing::debug!(target: "palisade::test", name = %name, "tick");
        }
    }

    #[test]
    fn a_panicking_listener_does_not_stop_the_others() {
        let seen = Arc::new(AtomicUsize::new(0));
        let mut ls = Listeners::new();
        ls.push(|_: &Tick| panic!("listener bug"));
        let s = Arc::clone(&seen);
        ls.push(move |_: &Tick| {
            s.fetch_add(1, Ordering::Relaxed);
        });
        let em = Emitter::new(Name::new("t"), ls);
        assert!(em.is_active());
        em.emit(|| Tick);
        assert_eq!(seen.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_listener_added_later_reaches_every_clone() {
        let seen = Arc::new(AtomicUsize::new(0));
        let em = Emitter::<Tick>::new(Name::new("t"), Listeners::new());
        let clone = em.clone();
        assert!(!em.has_listeners());
        let s = Arc::clone(&seen);
        em.add_listener(move |_: &Tick| {
            s.fetch_add(1, Ordering::Relaxed);
        });
        assert!(clone.is_active());
        clone.emit(|| Tick);
        em.emit(|| Tick);
        assert_eq!(seen.load(Ordering::Relaxed), 2);
        assert_eq!(clone.listener_count(), 1);
    }
}
