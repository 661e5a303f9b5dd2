//! An open-loop load generator: arrivals at a rate, whatever the service does.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::config::ensure;
use palisade_core::{
    AsRejection, Classify, ConfigError, Deadline, DefaultClassifier, RejectionKind,
};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::backend::SimBackend;
use super::report::Report;

// ===== Arrivals =====

/// When requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrivals {
    /// Exactly `rate` per second, evenly spaced.
    Fixed(f64),
    /// A Poisson process of `rate` per second: independent users, bursts included.
    Poisson(f64),
}

impl Arrivals {
    fn rate(self) -> f64 {
        match self {
            Arrivals::Fixed(r) | Arrivals::Poisson(r) => r,
        }
    }

    fn gap(self, rng: &mut fastrand::Rng) -> Duration {
        match self {
            Arrivals::Fixed(rate) => Duration::from_secs_f64(1.0 / rate),
            // Exponential inter-arrival times; 1 - U is in (0, 1], so ln is finite.
            Arrivals::Poisson(rate) => Duration::from_secs_f64(-(1.0 - rng.f64()).ln() / rate),
        }
    }
}

// ===== outcomes =====

/// What happened to one client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestOutcome {
    /// The classifier called the answer a success.
    Success,
    /// The service failed (its own error, or an answer classified as a failure).
    Failure,
    /// A palisade layer rejected it (open circuit, rate limit, timeout, …).
    Rejected(RejectionKind),
    /// The client's deadline ([`LoadGenBuilder::deadline`]) passed first.
    TimedOut,
    /// Not sent: [`LoadGenBuilder::max_in_flight`] requests were already outstanding.
    Skipped,
    /// Still unanswered when the drain period ended (a hang with no timeout), or its task
    /// panicked: the request was lost.
    Unfinished,
}

/// One client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    /// Its sequence number, from 0.
    pub id: u64,
    /// When it was sent.
    pub sent_at: Instant,
    /// How long until it was answered (zero for skipped and unfinished requests).
    pub latency: Duration,
    /// What happened.
    pub outcome: RequestOutcome,
}

// ===== LoadGen =====

/// An open-loop load generator: requests arrive at a rate for a duration, each on its own
/// tokio task, whether or not earlier ones were answered (a closed loop would slow down
/// with the service and hide an overload). Every request's outcome and latency is
/// recorded; run it on a paused clock and a seed fixes the whole run.
///
/// ```
/// use palisade_chaos::sim::{LoadGen, SimBackend};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = SimBackend::builder().capacity(200.0).build()?;
/// let run = LoadGen::builder()
///     .poisson(100.0)
///     .duration(Duration::from_secs(10))
///     .build()?
///     .run(backend.clone(), |_id| ())
///     .await;
/// let report = run.report(&backend);
/// assert!(report.success_ratio > 0.99);
/// assert_eq!(report.amplification, Some(1.0)); // no retries: one call per request
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LoadGen {
    arrivals: Arrivals,
    duration: Duration,
    seed: u64,
    deadline: Option<Duration>,
    max_in_flight: usize,
    drain: Duration,
}

impl LoadGen {
    /// A builder with the defaults: Poisson at 100 requests/s for 10 s, no deadline.
    pub fn builder() -> LoadGenBuilder {
        LoadGenBuilder {
            load: LoadGen {
                arrivals: Arrivals::Poisson(100.0),
                duration: Duration::from_secs(10),
                seed: 0x5EED,
                deadline: None,
                max_in_flight: 10_000,
                drain: Duration::from_secs(60),
            },
        }
    }

    /// The arrivals.
    pub fn arrivals(&self) -> Arrivals {
        self.arrivals
    }

    /// How long requests keep arriving.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Drive `service` with requests built by `make_request(id)`; a response is a success.
    pub async fn run<S, Req, F>(&self, service: S, make_request: F) -> LoadRun
    where
        S: Service<Req> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: AsRejection + Send,
        S::Response: Send,
        Req: Send + 'static,
        F: FnMut(u64) -> Req,
    {
        self.run_classified(service, make_request, DefaultClassifier)
            .await
    }

    /// Like [`run`](Self::run), with `classify` deciding which answers are successes (e.g.
    /// a `503` response is a failure).
    pub async fn run_classified<S, Req, F, C>(
        &self,
        service: S,
        mut make_request: F,
        classify: C,
    ) -> LoadRun
    where
        S: Service<Req> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: AsRejection + Send,
        S::Response: Send,
        Req: Send + 'static,
        F: FnMut(u64) -> Req,
        C: Classify<S::Response, S::Error> + Clone + Send + 'static,
    {
        let start = Instant::now();
        let end = start + self.duration;
        let ledger = Arc::new(Ledger::default());
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let mut tasks = Vec::new();
        let mut at = start;
        while at < end {
            tokio::time::sleep_until(at).await;
            // The timer fires on a millisecond tick, possibly after `at`: record when the
            // request is really sent, so it lands in the right second of the report.
            let id = ledger.open(Instant::now());
            if ledger.in_flight() > self.max_in_flight {
                ledger.answer(id, Duration::ZERO, RequestOutcome::Skipped);
            } else {
                let request = make_request(id);
                let task = one_request(service.clone(), request, self.deadline, classify.clone());
                let ledger = Arc::clone(&ledger);
                tasks.push(tokio::spawn(async move {
                    let (latency, outcome) = task.await;
                    ledger.answer(id, latency, outcome);
                }));
            }
            at += self.arrivals.gap(&mut rng);
        }
        drain(tasks, end.max(Instant::now()) + self.drain).await;
        ledger.finish(start, self.duration)
    }
}

/// Wait for every request task until `until`; abort what is still pending then.
async fn drain(tasks: Vec<tokio::task::JoinHandle<()>>, until: Instant) {
    for mut task in tasks {
        if tokio::time::timeout_at(until, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// One request: wait for readiness, call, classify; under the client deadline if any.
async fn one_request<S, Req, C>(
    mut service: S,
    request: Req,
    deadline: Option<Duration>,
    classify: C,
) -> (Duration, RequestOutcome)
where
    S: Service<Req>,
    S::Error: AsRejection,
    C: Classify<S::Response, S::Error>,
{
    let sent = Instant::now();
    let call = async move {
        poll_fn(|cx| service.poll_ready(cx)).await?;
        service.call(request).await
    };
    let result = match deadline {
        None => Some(call.await),
        Some(d) => {
            let deadline = Deadline::at(palisade_core::time::add(sent, d));
            let scoped = WithDeadline {
                inner: call,
                deadline,
            };
            tokio::time::timeout_at(deadline.instant(), scoped)
                .await
                .ok()
        }
    };
    let outcome = match result {
        None => RequestOutcome::TimedOut,
        Some(result) => outcome_of(&result, &classify),
    };
    (sent.elapsed(), outcome)
}

fn outcome_of<Res, E: AsRejection>(
    result: &Result<Res, E>,
    classify: &impl Classify<Res, E>,
) -> RequestOutcome {
    if classify.classify(result).is_success() {
        return RequestOutcome::Success;
    }
    match result {
        Err(e) => e.as_rejection().map_or(RequestOutcome::Failure, |r| {
            RequestOutcome::Rejected(r.kind())
        }),
        Ok(_) => RequestOutcome::Failure,
    }
}

pin_project! {
    /// Makes the client's deadline the ambient [`Deadline`] while the stack runs, so
    /// deadline-aware layers (and the simulated backend's log) see it.
    struct WithDeadline<F> {
        #[pin]
        inner: F,
        deadline: Deadline,
    }
}

impl<F: Future> Future for WithDeadline<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        this.deadline.scope(|| inner.poll(cx))
    }
}

// ===== Ledger =====

/// Where request tasks record their answers: one slot per request, answered once.
#[derive(Default)]
struct Ledger {
    inner: Mutex<LedgerState>,
}

#[derive(Default)]
struct LedgerState {
    slots: Vec<Slot>,
    in_flight: usize,
    answered_twice: u64,
}

struct Slot {
    sent_at: Instant,
    answer: Option<(Duration, RequestOutcome)>,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open(&self, sent_at: Instant) -> u64 {
        let mut state = self.lock();
        state.slots.push(Slot {
            sent_at,
            answer: None,
        });
        state.in_flight += 1;
        state.slots.len() as u64 - 1
    }

    fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    fn answer(&self, id: u64, latency: Duration, outcome: RequestOutcome) {
        let mut state = self.lock();
        let index = usize::try_from(id).unwrap_or(usize::MAX);
        let Some(slot) = state.slots.get_mut(index) else {
            return;
        };
        if slot.answer.is_some() {
            state.answered_twice += 1;
            return;
        }
        slot.answer = Some((latency, outcome));
        state.in_flight -= 1;
    }

    fn finish(&self, start: Instant, duration: Duration) -> LoadRun {
        let state = self.lock();
        let records = state
            .slots
            .iter()
            .zip(0..)
            .map(|(slot, id)| {
                let (latency, outcome) = slot
                    .answer
                    .unwrap_or((Duration::ZERO, RequestOutcome::Unfinished));
                RequestRecord {
                    id,
                    sent_at: slot.sent_at,
                    latency,
                    outcome,
                }
            })
            .collect();
        LoadRun {
            start,
            duration,
            records,
            answered_twice: state.answered_twice,
        }
    }
}

// ===== LoadRun =====

/// The recorded outcome of one load run.
#[derive(Debug, Clone)]
pub struct LoadRun {
    /// When the first request could arrive.
    pub start: Instant,
    /// How long requests kept arriving.
    pub duration: Duration,
    /// Every request, in arrival order (index = id).
    pub records: Vec<RequestRecord>,
    /// Answers recorded for a request that already had one (must be zero).
    pub answered_twice: u64,
}

impl LoadRun {
    /// The report of this run, with the backend's side (amplification, peak load, time to
    /// recover after its script's last incident).
    pub fn report<E>(&self, backend: &SimBackend<E>) -> Report {
        Report::new(self, Some(backend))
    }

    /// The report of this run from the client's side only.
    pub fn client_report(&self) -> Report {
        Report::new::<palisade_core::BoxError>(self, None)
    }

    /// How many requests ended with `outcome`.
    pub fn count(&self, outcome: RequestOutcome) -> u64 {
        self.records.iter().filter(|r| r.outcome == outcome).count() as u64
    }
}

// ===== LoadGenBuilder =====

/// Builds a [`LoadGen`].
#[derive(Debug, Clone)]
pub struct LoadGenBuilder {
    load: LoadGen,
}

impl LoadGenBuilder {
    /// Poisson arrivals at `rate` requests per second (the default, at 100/s: independent
    /// clients arrive in bursts, and bursts are what fill queues).
    #[must_use]
    pub fn poisson(mut self, rate: f64) -> Self {
        self.load.arrivals = Arrivals::Poisson(rate);
        self
    }

    /// Evenly spaced arrivals at `rate` requests per second.
    #[must_use]
    pub fn fixed(mut self, rate: f64) -> Self {
        self.load.arrivals = Arrivals::Fixed(rate);
        self
    }

    /// How long requests keep arriving. Default 10 s.
    #[must_use]
    pub fn duration(mut self, duration: Duration) -> Self {
        self.load.duration = duration;
        self
    }

    /// The seed of the arrival times. Default `0x5EED`.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.load.seed = seed;
        self
    }

    /// Each request's deadline, measured from when it is sent: the client stops waiting
    /// then ([`RequestOutcome::TimedOut`]), and the deadline is ambient
    /// ([`Deadline::current`]) while the stack runs. Default none.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.load.deadline = Some(deadline);
        self
    }

    /// The most outstanding requests; arrivals beyond it are recorded as
    /// [`RequestOutcome::Skipped`]. Default 10 000: far above any healthy test's
    /// concurrency, yet it bounds memory when a stack hangs without a timeout.
    #[must_use]
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.load.max_in_flight = max;
        self
    }

    /// How long after the last arrival to wait for answers before recording the rest as
    /// [`RequestOutcome::Unfinished`]. Default 60 s: longer than any sane timeout stack.
    #[must_use]
    pub fn drain(mut self, drain: Duration) -> Self {
        self.load.drain = drain;
        self
    }

    /// Validate and build: the rate must be positive and at most 1 000 000 requests may
    /// arrive (simulations are for thousands of requests, not billions).
    pub fn build(self) -> Result<LoadGen, ConfigError> {
        let l = &self.load;
        let rate = l.arrivals.rate();
        ensure(
            rate.is_finite() && rate > 0.0,
            "sim",
            "rate",
            rate,
            "requests per second > 0",
        )?;
        let expected = rate * l.duration.as_secs_f64();
        ensure(
            expected <= 1_000_000.0,
            "sim",
            "duration",
            l.duration,
            "at most 1 000 000 requests (rate x duration)",
        )?;
        ensure(
            l.max_in_flight > 0,
            "sim",
            "max_in_flight",
            l.max_in_flight,
            "1 or more",
        )?;
        Ok(self.load)
    }
}
