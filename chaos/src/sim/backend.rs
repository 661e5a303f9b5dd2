//! A simulated backend: a capacity, a latency that grows near it, and a fault script.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::config::ensure;
use palisade_core::{BoxError, ConfigError, Deadline};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::fault::Latency;

// ===== Incident & FaultScript =====

/// What goes wrong during an [`Incident`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum IncidentKind {
    /// A fraction of calls fail fast (a bad deploy, a flaky dependency).
    Errors {
        /// The fraction of calls that fail, 0.0 to 1.0.
        rate: f64,
    },
    /// Every call fails fast (connection refused). During the recovery ramp, capacity
    /// comes back linearly from zero, like a cold cache warming up.
    Outage,
    /// Every served call takes a sample of `extra` longer.
    LatencySpike {
        /// The added latency.
        extra: Latency,
    },
    /// Capacity drops to this fraction of normal (a lost replica, a noisy neighbour).
    Brownout {
        /// The remaining fraction of capacity, 0.0 to 1.0.
        capacity: f64,
    },
    /// A fraction of served calls is slowed by a sample of `extra` (one bad replica
    /// behind a load balancer, a lock held too long): a partial failure, a tail problem.
    SlowCalls {
        /// The fraction of calls slowed, 0.0 to 1.0.
        rate: f64,
        /// The added latency of a slowed call.
        extra: Latency,
    },
    /// The backend comes and goes: down (every call fails fast, as in an outage) for
    /// `down`, then up for `up`, repeating from the span's start to its end.
    Flapping {
        /// How long each up phase lasts (> 0).
        up: Duration,
        /// How long each down phase lasts (> 0).
        down: Duration,
    },
    /// An upstream quota: at most `limit` calls per second (counted in whole seconds from
    /// the backend's start) are served; the rest are refused fast with
    /// [`SimErrorKind::RateLimited`] and a Retry-After hint of the time left until the
    /// next second (an HTTP `429 Too Many Requests` with `Retry-After`).
    RateLimited {
        /// Calls admitted per second (≥ 1).
        limit: u32,
    },
    /// A fraction of calls is accepted and never answered (a lost connection, a stuck
    /// worker): only a timeout gets the caller back.
    Hang {
        /// The fraction of calls that hang, 0.0 to 1.0.
        rate: f64,
    },
}

/// One scripted fault: a kind, a time span (offsets from the backend's start) and an
/// optional slow recovery during which the fault fades out linearly.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    kind: IncidentKind,
    span: Range<Duration>,
    recovery: Duration,
}

impl Incident {
    /// A fault of `kind` from `span.start` to `span.end`.
    pub fn new(kind: IncidentKind, span: Range<Duration>) -> Self {
        Self {
            kind,
            span,
            recovery: Duration::ZERO,
        }
    }

    /// A fraction `rate` of calls fail during `span`.
    pub fn errors(span: Range<Duration>, rate: f64) -> Self {
        Self::new(IncidentKind::Errors { rate }, span)
    }

    /// Every call fails during `span`.
    pub fn outage(span: Range<Duration>) -> Self {
        Self::new(IncidentKind::Outage, span)
    }

    /// Served calls are slower by a sample of `extra` during `span`.
    pub fn latency_spike(span: Range<Duration>, extra: Latency) -> Self {
        Self::new(IncidentKind::LatencySpike { extra }, span)
    }

    /// Capacity drops to the fraction `capacity` during `span`.
    pub fn brownout(span: Range<Duration>, capacity: f64) -> Self {
        Self::new(IncidentKind::Brownout { capacity }, span)
    }

    /// A fraction `rate` of served calls is slower by a sample of `extra` during `span`.
    pub fn slow_calls(span: Range<Duration>, rate: f64, extra: Latency) -> Self {
        Self::new(IncidentKind::SlowCalls { rate, extra }, span)
    }

    /// During `span` the backend is down for `down`, up for `up`, down again, and so on.
    pub fn flapping(span: Range<Duration>, up: Duration, down: Duration) -> Self {
        Self::new(IncidentKind::Flapping { up, down }, span)
    }

    /// During `span` at most `limit` calls per second are served; the rest get a fast
    /// [`SimErrorKind::RateLimited`] with a Retry-After hint.
    pub fn rate_limited(span: Range<Duration>, limit: u32) -> Self {
        Self::new(IncidentKind::RateLimited { limit }, span)
    }

    /// A fraction `rate` of calls never answers during `span`.
    pub fn hang(span: Range<Duration>, rate: f64) -> Self {
        Self::new(IncidentKind::Hang { rate }, span)
    }

    /// After the span ends, the fault fades out linearly over `ramp` instead of stopping.
    #[must_use]
    pub fn recovering_over(mut self, ramp: Duration) -> Self {
        self.recovery = ramp;
        self
    }

    /// What goes wrong.
    pub fn kind(&self) -> IncidentKind {
        self.kind
    }

    /// When (offsets from the backend's start).
    pub fn span(&self) -> Range<Duration> {
        self.span.clone()
    }

    /// How long the fault takes to fade out after the span.
    pub fn recovery(&self) -> Duration {
        self.recovery
    }

    /// 1 during the span, falling linearly to 0 over the recovery, 0 otherwise.
    fn intensity(&self, t: Duration) -> f64 {
        if self.span.contains(&t) {
            return 1.0;
        }
        let Some(after) = t.checked_sub(self.span.end) else {
            return 0.0;
        };
        if after < self.recovery {
            1.0 - after.as_secs_f64() / self.recovery.as_secs_f64()
        } else {
            0.0
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let span = (self.span.start, self.span.end);
        ensure(span.0 < span.1, "sim", "incident.span", span, "start < end")?;
        let fraction = |rate: f64, field: &'static str| {
            ensure(
                (0.0..=1.0).contains(&rate),
                "sim",
                field,
                rate,
                "0.0 to 1.0",
            )
        };
        match self.kind {
            IncidentKind::SlowCalls { rate, extra } => {
                fraction(rate, "incident.rate")?;
                extra.validate("sim", "incident.extra")
            }
            IncidentKind::Hang { rate } => fraction(rate, "incident.rate"),
            IncidentKind::Flapping { up, down } => {
                ensure(!up.is_zero(), "sim", "incident.up", up, "> 0")?;
                ensure(!down.is_zero(), "sim", "incident.down", down, "> 0")
            }
            IncidentKind::RateLimited { limit } => {
                ensure(limit >= 1, "sim", "incident.limit", limit, "1 or more")
            }
            IncidentKind::Errors { rate } => ensure(
                (0.0..=1.0).contains(&rate),
                "sim",
                "incident.rate",
                rate,
                "0.0 to 1.0",
            ),
            IncidentKind::Brownout { capacity } => ensure(
                (0.0..=1.0).contains(&capacity),
                "sim",
                "incident.capacity",
                capacity,
                "0.0 to 1.0",
            ),
            IncidentKind::LatencySpike { extra } => extra.validate("sim", "incident.extra"),
            IncidentKind::Outage => Ok(()),
        }
    }
}

/// A backend's script of incidents. Overlapping incidents combine: the worst error rate, the
/// product of capacity factors, the largest extra latency.
///
/// ```
/// use palisade_chaos::sim::{FaultScript, Incident};
/// use std::time::Duration;
///
/// let secs = Duration::from_secs;
/// let script = FaultScript::new()
///     .with(Incident::errors(secs(10)..secs(20), 0.5))
///     .with(Incident::outage(secs(30)..secs(60)).recovering_over(secs(10)));
/// assert_eq!(script.fault_end(), Some(secs(60)));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultScript {
    incidents: Vec<Incident>,
}

/// The script's combined effect at one instant.
#[derive(Debug, Clone, Copy)]
struct Effects {
    outage: bool,
    error_rate: f64,
    capacity_factor: f64,
    extra: Option<(Latency, f64)>,
    /// The largest slowed fraction and its latency.
    slow: Option<(f64, Latency)>,
    /// The tightest quota in force: calls per second.
    quota: Option<u32>,
    hang_rate: f64,
}

impl FaultScript {
    /// No incidents: a healthy backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an incident.
    #[must_use]
    pub fn with(mut self, incident: Incident) -> Self {
        self.incidents.push(incident);
        self
    }

    /// The incidents.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    /// When the last incident's span ends (its recovery ramp may run longer): the moment
    /// "time to recover" is measured from.
    pub fn fault_end(&self) -> Option<Duration> {
        self.incidents.iter().map(|i| i.span.end).max()
    }

    /// When the last incident's recovery ramp ends: from then on the backend is healthy.
    pub fn fault_cleared(&self) -> Option<Duration> {
        self.incidents
            .iter()
            .map(|i| i.span.end.saturating_add(i.recovery))
            .max()
    }

    fn effects_at(&self, t: Duration) -> Effects {
        let mut fx = Effects {
            outage: false,
            error_rate: 0.0,
            capacity_factor: 1.0,
            extra: None,
            slow: None,
            quota: None,
            hang_rate: 0.0,
        };
        for incident in &self.incidents {
            let i = incident.intensity(t);
            if i <= 0.0 {
                continue;
            }
            match incident.kind {
                IncidentKind::Outage if i >= 1.0 => fx.outage = true,
                IncidentKind::Outage => fx.capacity_factor *= 1.0 - i,
                IncidentKind::Errors { rate } => fx.error_rate = fx.error_rate.max(rate * i),
                IncidentKind::Brownout { capacity } => {
                    fx.capacity_factor *= 1.0 - i * (1.0 - capacity);
                }
                IncidentKind::LatencySpike { extra } => {
                    if fx.extra.is_none_or(|(_, j)| i > j) {
                        fx.extra = Some((extra, i));
                    }
                }
                IncidentKind::SlowCalls { rate, extra } => {
                    if fx.slow.is_none_or(|(r, _)| rate * i > r) {
                        fx.slow = Some((rate * i, extra));
                    }
                }
                IncidentKind::Hang { rate } => fx.hang_rate = fx.hang_rate.max(rate * i),
                IncidentKind::RateLimited { limit } => {
                    fx.quota = Some(fx.quota.map_or(limit, |q| q.min(limit)));
                }
                IncidentKind::Flapping { up, down } => {
                    // Only inside the span (a recovery ramp would have no meaning here).
                    if incident.span.contains(&t) {
                        let period = (up + down).as_secs_f64();
                        let phase = (t - incident.span.start).as_secs_f64() % period;
                        if phase < down.as_secs_f64() {
                            fx.outage = true;
                        }
                    }
                }
            }
        }
        fx
    }
}

// ===== SimError =====

/// Why a simulated call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SimErrorKind {
    /// An [`IncidentKind::Errors`] burst failed the call.
    Failed,
    /// An [`IncidentKind::Outage`]: the backend is down.
    Outage,
    /// The backend's queue was full: it shed the call (a `503`).
    Overloaded,
    /// An [`IncidentKind::RateLimited`] quota was used up: a `429` with a Retry-After hint
    /// ([`SimError::retry_after`]).
    RateLimited,
}

/// The error of a [`SimBackend`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    kind: SimErrorKind,
    retry_after: Option<Duration>,
}

impl SimError {
    fn new(kind: SimErrorKind) -> Self {
        Self {
            kind,
            retry_after: None,
        }
    }

    /// Why the call failed.
    pub fn kind(&self) -> SimErrorKind {
        self.kind
    }

    /// The server's hint of when to try again (a `Retry-After` header), for
    /// [`SimErrorKind::RateLimited`].
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            SimErrorKind::Failed => "simulated backend failed the call",
            SimErrorKind::Outage => "simulated backend is down",
            SimErrorKind::Overloaded => "simulated backend is overloaded and shed the call",
            SimErrorKind::RateLimited => "simulated backend's quota is used up (429)",
        })
    }
}

impl StdError for SimError {}

impl From<SimError> for palisade_core::Error<SimError> {
    fn from(e: SimError) -> Self {
        palisade_core::Error::Inner(e)
    }
}

// ===== call log =====

/// What the backend did with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallOutcome {
    /// Served successfully.
    Served,
    /// Failed by an error burst.
    Failed,
    /// Refused by an outage.
    Outage,
    /// Shed because the queue was full.
    Shed,
    /// Refused by a quota (a `429`).
    Throttled,
    /// Accepted and never answered.
    Hung,
}

impl CallOutcome {
    /// The backend took the call on (served it, or accepted it and hung): the calls that
    /// load it. Fast refusals (outage, error burst, shed, quota) cost it next to nothing.
    pub fn is_admitted(self) -> bool {
        matches!(self, CallOutcome::Served | CallOutcome::Hung)
    }
}

/// One call the backend received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendCall {
    /// When it arrived.
    pub at: Instant,
    /// What the backend did with it.
    pub outcome: CallOutcome,
    /// The ambient [`Deadline`] the call arrived with (set by a timeout layer or the load
    /// generator), if any.
    pub deadline: Option<Deadline>,
}

impl BackendCall {
    /// The call arrived at or after its deadline: an attempt no caller could still use.
    pub fn is_late(&self) -> bool {
        self.deadline.is_some_and(|d| d.instant() <= self.at)
    }
}

/// A successful simulated answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimResponse {
    /// The index of the backend call that produced it.
    pub call: u64,
    /// How long the call spent queued behind others.
    pub queued: Duration,
}

// ===== SimBackend =====

/// A simulated backend service with a capacity and a fault script, on tokio's clock.
///
/// The model is a single virtual queue: the backend serves `capacity` calls per second;
/// each served call waits behind the ones before it (so latency grows as arrivals near
/// capacity, as in any queue) and then takes a sample of the base latency. When the wait
/// would exceed `max_queue`, the call is shed at once with [`SimErrorKind::Overloaded`].
/// Work is reserved when a call arrives, so a caller that gives up (times out) still costs
/// the backend its slot: the mechanism behind retry storms and metastable overload.
///
/// Every call is logged (time, outcome, whether its deadline had passed), and all clones
/// share one backend. `E` is the error type (`BoxError` by default; also
/// `palisade_core::Error<SimError>`).
///
/// ```
/// use palisade_chaos::sim::{FaultScript, Incident, SimBackend};
/// use std::time::Duration;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), palisade_core::BoxError> {
/// let secs = Duration::from_secs;
/// let backend = SimBackend::builder()
///     .capacity(100.0)
///     .script(FaultScript::new().with(Incident::outage(secs(1)..secs(2))))
///     .build()?;
/// assert!(backend.clone().oneshot(()).await.is_ok());
/// tokio::time::advance(secs(1)).await;
/// assert!(backend.clone().oneshot(()).await.is_err());
/// assert_eq!(backend.calls(), 2);
/// # Ok(()) }
/// ```
pub struct SimBackend<E = BoxError> {
    shared: Arc<Shared>,
    _error: PhantomData<fn() -> E>,
}

struct Shared {
    config: BackendConfig,
    origin: Instant,
    state: Mutex<State>,
}

#[derive(Debug, Clone)]
struct BackendConfig {
    capacity: f64,
    latency: Latency,
    max_queue: Duration,
    fail_latency: Duration,
    script: FaultScript,
}

struct State {
    rng: fastrand::Rng,
    next_free: Instant,
    /// The quota's current second (from the origin) and the calls admitted in it.
    quota_window: (u64, u32),
    log: Vec<BackendCall>,
    in_flight: u64,
    peak_in_flight: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only counters behind; keep simulating.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SimBackend<BoxError> {
    /// A builder with the defaults: 100 calls/s, 10 ms log-normal latency, 1 s max queue.
    pub fn builder() -> SimBackendBuilder {
        SimBackendBuilder::default()
    }
}

impl<E> SimBackend<E> {
    /// The same backend (shared state) with a different error type.
    pub fn with_error<E2>(self) -> SimBackend<E2> {
        SimBackend {
            shared: self.shared,
            _error: PhantomData,
        }
    }

    /// When the backend's clock started (script offsets are measured from here).
    pub fn origin(&self) -> Instant {
        self.shared.origin
    }

    /// The fault script.
    pub fn script(&self) -> &FaultScript {
        &self.shared.config.script
    }

    /// The configured capacity, in calls per second.
    pub fn capacity(&self) -> f64 {
        self.shared.config.capacity
    }

    /// How many calls the backend has received (every attempt, whatever its fate).
    pub fn calls(&self) -> u64 {
        self.shared.lock().log.len() as u64
    }

    /// Calls received during `span` (offsets from [`origin`](Self::origin)).
    pub fn calls_between(&self, span: Range<Duration>) -> u64 {
        let (from, to) = (
            self.shared.origin + span.start,
            self.shared.origin + span.end,
        );
        let state = self.shared.lock();
        state
            .log
            .iter()
            .filter(|c| c.at >= from && c.at < to)
            .count() as u64
    }

    /// Calls that arrived after their ambient deadline had passed.
    pub fn late_calls(&self) -> u64 {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|c| c.is_late())
            .count() as u64
    }

    /// The most calls in progress at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.lock().peak_in_flight
    }

    /// Every call so far, in arrival order.
    pub fn log(&self) -> Vec<BackendCall> {
        self.shared.lock().log.clone()
    }

    /// Decide one call's fate now, log it and reserve its slot in the queue.
    fn admit(&self) -> (Duration, Result<SimResponse, SimError>) {
        let now = Instant::now();
        let deadline = Deadline::current();
        let config = &self.shared.config;
        let fx = config
            .script
            .effects_at(now.saturating_duration_since(self.shared.origin));
        let mut state = self.shared.lock();
        let call = state.log.len() as u64;
        let fail = |kind| (config.fail_latency, Err(SimError::new(kind)));
        let offset = now.saturating_duration_since(self.shared.origin);
        let (outcome, (delay, result)) = if fx.outage {
            (CallOutcome::Outage, fail(SimErrorKind::Outage))
        } else if fx.error_rate > 0.0 && state.rng.f64() < fx.error_rate {
            (CallOutcome::Failed, fail(SimErrorKind::Failed))
        } else if let Some(retry_after) = fx.quota.and_then(|q| state.over_quota(offset, q)) {
            let err = SimError {
                kind: SimErrorKind::RateLimited,
                retry_after: Some(retry_after),
            };
            (CallOutcome::Throttled, (config.fail_latency, Err(err)))
        } else if fx.hang_rate > 0.0 && state.rng.f64() < fx.hang_rate {
            // Never answered: the caller waits until its own timeout (or forever).
            let err = SimError::new(SimErrorKind::Failed);
            (CallOutcome::Hung, (HANG, Err(err)))
        } else {
            match state.reserve(now, config.capacity * fx.capacity_factor, config.max_queue) {
                None => (CallOutcome::Shed, fail(SimErrorKind::Overloaded)),
                Some(queued) => {
                    let mut delay = queued + config.latency.sample(&mut state.rng);
                    if let Some((extra, intensity)) = fx.extra {
                        delay += extra.sample(&mut state.rng).mul_f64(intensity);
                    }
                    if let Some((rate, extra)) = fx.slow
                        && state.rng.f64() < rate
                    {
                        delay += extra.sample(&mut state.rng);
                    }
                    (
                        CallOutcome::Served,
                        (delay, Ok(SimResponse { call, queued })),
                    )
                }
            }
        };
        state.log.push(BackendCall {
            at: now,
            outcome,
            deadline,
        });
        state.in_flight += 1;
        state.peak_in_flight = state.peak_in_flight.max(state.in_flight);
        (delay, result)
    }
}

/// How long a hung call takes to "answer": far past any run, so only a timeout ends it.
const HANG: Duration = Duration::from_secs(24 * 3600);

impl State {
    /// Count one call against a quota of `limit` per whole second; `Some(retry_after)`
    /// (the time left in this second) when the quota is used up.
    fn over_quota(&mut self, offset: Duration, limit: u32) -> Option<Duration> {
        let second = offset.as_secs();
        if self.quota_window.0 != second {
            self.quota_window = (second, 0);
        }
        if self.quota_window.1 >= limit {
            let next = Duration::from_secs(second.saturating_add(1));
            return Some(next.saturating_sub(offset));
        }
        self.quota_window.1 += 1;
        None
    }

    /// Reserve a slot on the virtual server; `None` when the wait would exceed `max_queue`,
    /// or when one call's slot (`1 / capacity`) would: a backend at a sliver of its
    /// capacity (the first instants of a recovery ramp) sheds calls rather than take one
    /// on for longer than its queue timeout and block every call behind it.
    fn reserve(&mut self, now: Instant, capacity: f64, max_queue: Duration) -> Option<Duration> {
        if capacity <= 0.0 || 1.0 / capacity > max_queue.as_secs_f64() {
            return None;
        }
        let start = self.next_free.max(now);
        let queued = start - now;
        if queued > max_queue {
            return None;
        }
        self.next_free = start + Duration::from_secs_f64(1.0 / capacity);
        Some(queued)
    }
}

impl<E> Clone for SimBackend<E> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            _error: PhantomData,
        }
    }
}

impl<E> fmt::Debug for SimBackend<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimBackend")
            .field("config", &self.shared.config)
            .field("calls", &self.calls())
            .finish()
    }
}

impl<R, E: From<SimError>> Service<R> for SimBackend<E> {
    type Response = SimResponse;
    type Error = E;
    type Future = SimFuture<E>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        // Always ready: an overloaded backend answers 503s, it does not push back.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: R) -> Self::Future {
        let (delay, result) = self.admit();
        SimFuture {
            sleep: tokio::time::sleep(delay),
            result: Some(result),
            _in_flight: InFlight(Arc::clone(&self.shared)),
            _error: PhantomData,
        }
    }
}

/// Counts a call as in flight until its future completes or is dropped.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

pin_project! {
    /// The response future of [`SimBackend`]: the decided answer, after its latency.
    pub struct SimFuture<E> {
        #[pin]
        sleep: Sleep,
        result: Option<Result<SimResponse, SimError>>,
        _in_flight: InFlight,
        _error: PhantomData<fn() -> E>,
    }
}

impl<E> fmt::Debug for SimFuture<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFuture")
            .field("result", &self.result)
            .finish()
    }
}

impl<E: From<SimError>> Future for SimFuture<E> {
    type Output = Result<SimResponse, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        std::task::ready!(this.sleep.poll(cx));
        let result = this
            .result
            .take()
            .expect("SimFuture polled after completion");
        Poll::Ready(result.map_err(E::from))
    }
}

// ===== SimBackendBuilder =====

/// Builds a [`SimBackend`].
#[derive(Debug, Clone)]
pub struct SimBackendBuilder {
    config: BackendConfig,
    seed: u64,
}

impl Default for SimBackendBuilder {
    fn default() -> Self {
        Self {
            config: BackendConfig {
                capacity: 100.0,
                latency: Latency::lognormal(Duration::from_millis(10), 0.5),
                max_queue: Duration::from_secs(1),
                fail_latency: Duration::from_millis(1),
                script: FaultScript::new(),
            },
            seed: 0x5EED,
        }
    }
}

impl SimBackendBuilder {
    /// Calls per second the backend can serve. Default 100: round numbers make the
    /// arithmetic in test comments easy to check.
    #[must_use]
    pub fn capacity(mut self, calls_per_second: f64) -> Self {
        self.config.capacity = calls_per_second;
        self
    }

    /// The base latency of a served call, before queueing. Default log-normal, median
    /// 10 ms, sigma 0.5 (p99 ≈ 32 ms): a healthy in-datacentre dependency.
    #[must_use]
    pub fn latency(mut self, latency: Latency) -> Self {
        self.config.latency = latency;
        self
    }

    /// The longest a call may queue before the backend sheds it. Default 1 s: a typical
    /// server-side queue timeout.
    #[must_use]
    pub fn max_queue(mut self, max_queue: Duration) -> Self {
        self.config.max_queue = max_queue;
        self
    }

    /// How long a failed call (error burst, outage, shed) takes to answer. Default 1 ms: a
    /// refused connection answers in about a round trip.
    #[must_use]
    pub fn fail_latency(mut self, fail_latency: Duration) -> Self {
        self.config.fail_latency = fail_latency;
        self
    }

    /// The fault script. Default: no incidents.
    #[must_use]
    pub fn script(mut self, script: FaultScript) -> Self {
        self.config.script = script;
        self
    }

    /// The RNG seed (latency samples, error bursts). Default `0x5EED`.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validate and build; the backend's clock (script offset zero) starts now.
    pub fn build(self) -> Result<SimBackend, ConfigError> {
        let c = &self.config;
        ensure(
            c.capacity.is_finite() && c.capacity > 0.0,
            "sim",
            "capacity",
            c.capacity,
            "calls per second > 0",
        )?;
        c.latency.validate("sim", "latency")?;
        for incident in &c.script.incidents {
            incident.validate()?;
        }
        let now = Instant::now();
        Ok(SimBackend {
            shared: Arc::new(Shared {
                config: self.config,
                origin: now,
                state: Mutex::new(State {
                    rng: fastrand::Rng::with_seed(self.seed),
                    next_free: now,
                    quota_window: (0, 0),
                    log: Vec::new(),
                    in_flight: 0,
                    peak_in_flight: 0,
                }),
            }),
            _error: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intensity_fades_over_recovery() {
        let s = Duration::from_secs;
        let i = Incident::outage(s(10)..s(20)).recovering_over(s(10));
        assert_eq!(i.intensity(s(9)), 0.0);
        assert_eq!(i.intensity(s(15)), 1.0);
        assert!((i.intensity(s(25)) - 0.5).abs() < 1e-9);
        assert_eq!(i.intensity(s(30)), 0.0);
    }

    #[test]
    fn overlapping_incidents_combine() {
        let s = Duration::from_secs;
        let script = FaultScript::new()
            .with(Incident::brownout(s(0)..s(10), 0.5))
            .with(Incident::brownout(s(5)..s(10), 0.5))
            .with(Incident::errors(s(0)..s(10), 0.2))
            .with(Incident::errors(s(0)..s(10), 0.4));
        let fx = script.effects_at(s(6));
        assert!((fx.capacity_factor - 0.25).abs() < 1e-9);
        assert!((fx.error_rate - 0.4).abs() < 1e-9);
        assert!(!fx.outage);
    }

    #[test]
    fn flapping_alternates_down_and_up_inside_its_span() {
        let ms = Duration::from_millis;
        let script =
            FaultScript::new().with(Incident::flapping(ms(1000)..ms(5000), ms(1500), ms(500)));
        let down = |t| script.effects_at(ms(t)).outage;
        // Period 2 s from 1 s: down 1.0-1.5, up 1.5-3.0, down 3.0-3.5, up 3.5-5.0.
        assert!(!down(999));
        assert!(down(1000) && down(1499));
        assert!(!down(1500) && !down(2999));
        assert!(down(3000) && down(3499));
        assert!(!down(3500) && !down(5000));
    }

    #[test]
    fn a_quota_refuses_the_rest_of_each_second_with_its_remainder_as_retry_after() {
        let mut state = State {
            rng: fastrand::Rng::with_seed(1),
            next_free: Instant::now(),
            quota_window: (0, 0),
            log: Vec::new(),
            in_flight: 0,
            peak_in_flight: 0,
        };
        let ms = Duration::from_millis;
        assert_eq!(state.over_quota(ms(100), 2), None);
        assert_eq!(state.over_quota(ms(200), 2), None);
        assert_eq!(state.over_quota(ms(300), 2), Some(ms(700)));
        // A new second, a new quota.
        assert_eq!(state.over_quota(ms(1100), 2), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sliver_of_capacity_sheds_instead_of_blocking_the_queue() {
        let mut state = State {
            rng: fastrand::Rng::with_seed(1),
            next_free: Instant::now(),
            quota_window: (0, 0),
            log: Vec::new(),
            in_flight: 0,
            peak_in_flight: 0,
        };
        let now = Instant::now();
        let queue = Duration::from_secs(1);
        // At 0.5 calls/s one call would hold the server for 2 s > the 1 s queue: shed,
        // and the server stays free for the next call once capacity is back.
        assert_eq!(state.reserve(now, 0.5, queue), None);
        assert_eq!(state.reserve(now, 100.0, queue), Some(Duration::ZERO));
        assert_eq!(
            state.reserve(now, 100.0, queue),
            Some(Duration::from_millis(10))
        );
    }

    #[test]
    fn admitted_calls_are_the_ones_the_backend_works_on() {
        assert!(CallOutcome::Served.is_admitted());
        assert!(CallOutcome::Hung.is_admitted());
        for refused in [
            CallOutcome::Failed,
            CallOutcome::Outage,
            CallOutcome::Shed,
            CallOutcome::Throttled,
        ] {
            assert!(!refused.is_admitted(), "{refused:?}");
        }
    }

    #[test]
    fn invalid_configs_are_refused() {
        let ms = Duration::from_millis;
        for bad in [
            Incident::slow_calls(ms(0)..ms(1), 1.5, Latency::fixed(ms(1))),
            Incident::hang(ms(0)..ms(1), -0.1),
            Incident::flapping(ms(0)..ms(1), Duration::ZERO, ms(1)),
            Incident::rate_limited(ms(0)..ms(1), 0),
        ] {
            let err = SimBackend::builder()
                .script(FaultScript::new().with(bad.clone()))
                .build()
                .expect_err("refused");
            assert!(err.to_string().contains("incident."), "{bad:?}: {err}");
        }
        let s = Duration::from_secs;
        assert!(SimBackend::builder().capacity(0.0).build().is_err());
        let bad = FaultScript::new().with(Incident::errors(s(0)..s(1), 2.0));
        assert!(SimBackend::builder().script(bad).build().is_err());
        let bad = FaultScript::new().with(Incident::outage(s(2)..s(1)));
        assert!(SimBackend::builder().script(bad).build().is_err());
    }
}
