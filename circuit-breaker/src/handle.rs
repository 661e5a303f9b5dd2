//! Reading a breaker's state and controlling it at run time.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::{ConfigError, Name, time};
use tokio::time::Instant;

use crate::state::{Breaker, WindowSnapshot};
use crate::{CircuitBreakerConfig, State};

/// Reads and controls one breaker: its state, its window, operator states and its config.
///
/// Every clone of a layer, of its services and of this handle acts on the same breaker.
///
/// ```
/// use palisade_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, State};
///
/// let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
/// let handle = layer.handle();
/// handle.force_open();
/// assert_eq!(handle.state(), State::ForcedOpen);
/// handle.reset();
/// assert_eq!(handle.state(), State::Closed);
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerHandle {
    breaker: Arc<Breaker>,
}

impl CircuitBreakerHandle {
    pub(crate) fn new(breaker: Arc<Breaker>) -> Self {
        Self { breaker }
    }

    /// The breaker's name.
    pub fn name(&self) -> &Name {
        self.breaker.emitter().name()
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.breaker.state()
    }

    /// `true` in metrics-only mode: the state machine runs, but no call is rejected.
    pub fn is_metrics_only(&self) -> bool {
        self.breaker.is_metrics_only()
    }

    /// The window (calls, failure and slow-call rates) and state, as of now.
    pub fn snapshot(&self) -> WindowSnapshot {
        self.breaker.snapshot(Instant::now())
    }

    /// While open: how long until a probe is admitted.
    pub fn retry_after(&self) -> Option<Duration> {
        self.breaker.retry_after(Instant::now())
    }

    /// Open the breaker for `duration` from now, without recording a failure in the window
    /// (as resilience4j's `transitionToOpenStateFor`): for an upstream that said "slow
    /// down for 30s" (a `Retry-After`), or an operator's short pause. Calls are rejected
    /// with a `retry_after` counting down to the end of the period; then the breaker
    /// half-opens and probes as after any open period. If it is already open until later,
    /// it stays open until then (a hint never shortens an open period). `Duration::MAX`
    /// opens it for good (until [`reset`](Self::reset) or a later call of these). Like
    /// the other operator actions, it ends metrics-only mode.
    ///
    /// ```
    /// use palisade_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, State};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let handle = CircuitBreakerLayer::new(CircuitBreakerConfig::default()).handle();
    /// handle.open_for(Duration::from_secs(30));
    /// assert_eq!(handle.state(), State::Open);
    /// assert_eq!(handle.retry_after(), Some(Duration::from_secs(30)));
    /// assert_eq!(handle.snapshot().failures, 0, "not counted as a failure");
    /// # }
    /// ```
    pub fn open_for(&self, duration: Duration) {
        let now = Instant::now();
        self.breaker.open_until(time::add(now, duration), now);
    }

    /// Open the breaker until `instant` (as resilience4j's `transitionToOpenStateUntil`);
    /// see [`open_for`](Self::open_for). An instant already past opens it for no time: the
    /// next call is a probe.
    pub fn open_until(&self, instant: Instant) {
        self.breaker.open_until(instant, Instant::now());
    }

    /// Isolate the backend: reject every call (with `retry_after: None`) until
    /// [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.breaker.force_open();
    }

    /// Force the breaker closed: admit every call and keep recording, but never open, until
    /// [`reset`](Self::reset).
    pub fn disable(&self) {
        self.breaker.disable();
    }

    /// Shadow mode: keep running the state machine (transitions, events, metrics) but let
    /// every call through, to tune thresholds on live traffic before enforcing them. Calls
    /// the breaker would have rejected are reported as `CallRejected { enforced: false }`
    /// and not recorded. Ends with [`reset`](Self::reset), [`force_open`](Self::force_open)
    /// or [`disable`](Self::disable).
    pub fn set_metrics_only(&self) {
        self.breaker.set_metrics_only();
    }

    /// Back to closed and enforcing, with an empty window and the open-duration backoff
    /// reset.
    pub fn reset(&self) {
        self.breaker.reset();
    }

    /// Apply new thresholds, durations and probe counts to the running breaker; its state
    /// and window are kept. The window's shape cannot change (its slots are the history the
    /// thresholds apply to: build a new breaker for that), nor can the name or listeners.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "one signature for every handle"
    )]
    pub fn update(&self, config: CircuitBreakerConfig) -> Result<(), ConfigError> {
        palisade_core::config::ensure_same_name("circuit_breaker", self.name(), config.name())?;
        self.breaker.update_config(&config)
    }

    /// The config in effect.
    pub fn config(&self) -> CircuitBreakerConfig {
        self.breaker.config()
    }
}
