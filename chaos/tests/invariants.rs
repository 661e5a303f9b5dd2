//! Invariants that must hold under any incident: a proptest over random fault scripts,
//! driving a full stack (overall timeout → retry → hedge → breaker → per-attempt timeout →
//! chaos → simulated backend).
//!
//! - every request is answered by the stack itself, once: the stack's overall timeout
//!   (1 s) is shorter than the client's deadline (2 s), so a request the client had to
//!   give up on (`TimedOut`) or that never ended (`Unfinished`) was lost or hung inside the
//!   stack. `a_stack_that_drops_requests_breaks_the_invariant` shows the check failing on
//!   a stack that drops some requests;
//! - no attempt reaches the backend after its request's deadline;
//! - a half-open breaker never has more probes in flight than its probe limit (a probe
//!   dropped before it completes, say by a hedge that won, hands its permit back, so the
//!   limit is on probes in flight, not on calls per half-open period).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_chaos::sim::{FaultScript, Incident, LoadGen, RequestOutcome, SimBackend};
use palisade_chaos::{ChaosConfig, ChaosLayer, Latency};
use palisade_circuit_breaker::{CircuitBreakerEvent, CircuitBreakerLayer, State};
use palisade_core::BoxError;
use palisade_retry::hedge::{HedgeConfig, HedgeLayer};
use palisade_retry::{Backoff, RetryConfig, RetryLayer};
use palisade_timeout::TimeoutLayer;
use proptest::prelude::*;
use tower::ServiceBuilder;

const PROBES: u32 = 2;
const RUN: Duration = Duration::from_secs(10);

/// One random incident within the run.
fn incident() -> impl Strategy<Value = Incident> {
    let span = (0u64..9_000, 100u64..4_000)
        .prop_map(|(from, len)| Duration::from_millis(from)..Duration::from_millis(from + len));
    let recovery = (0u64..3_000).prop_map(Duration::from_millis);
    let kind = prop_oneof![
        (0.0..=1.0f64).prop_map(|rate| (0u8, rate)),
        Just((1u8, 0.0)),
        (10u64..5_000).prop_map(|ms| (2u8, ms as f64)),
        (0.0..=1.0f64).prop_map(|capacity| (3u8, capacity)),
    ];
    (span, recovery, kind).prop_map(|(span, recovery, (kind, x)): (Range<Duration>, _, _)| {
        let incident = match kind {
            0 => Incident::errors(span, x),
            1 => Incident::outage(span),
            2 => Incident::latency_spike(
                span,
                Latency::uniform(Duration::ZERO, Duration::from_millis(x as u64)),
            ),
            _ => Incident::brownout(span, x),
        };
        incident.recovering_over(recovery)
    })
}

/// What the breaker did, in order, interleaved with the calls it let through (by id) and
/// their ends (answered or dropped).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Became(State),
    Passed(u64),
    Done(u64),
}

/// Logs `Done` when a passed call ends, however it ends.
struct EndGuard {
    id: u64,
    log: Arc<Mutex<Vec<Step>>>,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.log.lock().expect("lock").push(Step::Done(self.id));
    }
}

/// The stack's own bound on every request.
const OVERALL: Duration = Duration::from_secs(1);
/// The client's deadline: longer than `OVERALL`, so it only ends requests the stack lost.
const CLIENT_DEADLINE: Duration = Duration::from_secs(2);

struct Outcome {
    requests: usize,
    answered_twice: u64,
    timed_out: u64,
    unfinished: u64,
    late_calls: u64,
    calls_without_deadline: usize,
    steps: Vec<Step>,
}

/// Passes requests through, except that every `drop_every`-th one (if set) is lost: its
/// future never completes, as if the answer went missing between two tasks.
#[derive(Clone)]
struct Dropper<S> {
    inner: S,
    drop_every: Option<u64>,
    seen: Arc<AtomicU64>,
}

type BoxFut<T, E> = std::pin::Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<()> for Dropper<S>
where
    S: tower::Service<(), Error = BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFut<S::Response, BoxError>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ()) -> Self::Future {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if self.drop_every.is_some_and(|every| n.is_multiple_of(every)) {
            return Box::pin(std::future::pending());
        }
        Box::pin(self.inner.call(req))
    }
}

/// The invariants, as a check that says which one broke.
fn check(out: &Outcome) -> Result<(), String> {
    if out.requests == 0 {
        return Err("no requests arrived".into());
    }
    // The ledger's own guard: one answer per request.
    if out.answered_twice != 0 {
        return Err(format!("{} answers recorded twice", out.answered_twice));
    }
    // The stack bounds every request by its 1 s overall timeout; only a request the stack
    // lost or left hanging can reach the client's 2 s deadline or outlive the drain.
    if out.timed_out + out.unfinished != 0 {
        return Err(format!(
            "{} requests lost or hung in the stack ({} ended by the client's deadline, {} never)",
            out.timed_out + out.unfinished,
            out.timed_out,
            out.unfinished
        ));
    }
    // No retry or hedge may start an attempt once its request's deadline has passed.
    if out.late_calls != 0 {
        return Err(format!("{} attempts after their deadline", out.late_calls));
    }
    // (Not vacuous: every call carried its request's deadline to the backend.)
    if out.calls_without_deadline != 0 {
        return Err(format!(
            "{} calls without a deadline",
            out.calls_without_deadline
        ));
    }
    let probes = max_probes(&out.steps);
    if probes > PROBES as usize {
        return Err(format!("{probes} probes in flight at once"));
    }
    Ok(())
}

async fn simulate(script: FaultScript, hang_rate: f64, seed: u64) -> Outcome {
    simulate_with(script, hang_rate, seed, None).await
}

async fn simulate_with(
    script: FaultScript,
    hang_rate: f64,
    seed: u64,
    drop_every: Option<u64>,
) -> Outcome {
    let backend = SimBackend::builder()
        .capacity(60.0)
        .max_queue(Duration::from_millis(500))
        .script(script)
        .seed(seed)
        .build()
        .expect("valid backend");
    let steps = Arc::new(Mutex::new(Vec::new()));
    let on_event = Arc::clone(&steps);
    let breaker = CircuitBreakerLayer::builder()
        .name("invariants")
        .count_window(10)
        .minimum_calls(5)
        .open_duration(Duration::from_millis(500))
        .half_open_probes(PROBES)
        .on_event(move |e: &CircuitBreakerEvent| {
            if let CircuitBreakerEvent::StateTransition { to, .. } = e {
                on_event.lock().expect("lock").push(Step::Became(*to));
            }
        })
        .build()
        .expect("valid breaker");
    let retry = RetryConfig::builder()
        .name("invariants")
        .max_attempts(4)
        .backoff(Backoff::exponential(Duration::from_millis(20)))
        .seed(seed)
        .build()
        .expect("valid retry");
    let attempt = TimeoutLayer::builder()
        .name("attempt")
        .timeout(Duration::from_millis(300))
        .build()
        .expect("valid timeout");
    let chaos = ChaosConfig::<(), _, BoxError>::builder()
        .name("invariants")
        .seed(seed)
        .hang(hang_rate)
        .build()
        .expect("valid chaos");
    let hedge = HedgeConfig::builder()
        .name("invariants")
        .delay(Duration::from_millis(100))
        .build()
        .expect("valid hedge");
    let passed = Arc::clone(&steps);
    let next_id = Arc::new(AtomicU64::new(0));
    let overall = TimeoutLayer::builder()
        .name("overall")
        .timeout(OVERALL)
        .build()
        .expect("valid timeout");
    let stack = ServiceBuilder::new()
        .layer(overall)
        .layer(RetryLayer::new(retry))
        .layer(HedgeLayer::new(hedge))
        .layer(breaker)
        .map_future(move |future| {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            passed.lock().expect("lock").push(Step::Passed(id));
            let guard = EndGuard {
                id,
                log: Arc::clone(&passed),
            };
            async move {
                let answer = future.await;
                drop(guard);
                answer
            }
        })
        .layer(attempt)
        .layer(ChaosLayer::new(chaos))
        .service(backend.clone());
    let stack = Dropper {
        inner: stack,
        drop_every,
        seen: Arc::new(AtomicU64::new(0)),
    };
    let run = LoadGen::builder()
        .poisson(40.0)
        .duration(RUN)
        .seed(seed)
        .deadline(CLIENT_DEADLINE)
        .build()
        .expect("valid load")
        .run(stack, |_| ())
        .await;
    let steps = steps.lock().expect("lock").clone();
    Outcome {
        requests: run.records.len(),
        answered_twice: run.answered_twice,
        timed_out: run.count(RequestOutcome::TimedOut),
        unfinished: run.count(RequestOutcome::Unfinished),
        late_calls: backend.late_calls(),
        calls_without_deadline: backend
            .log()
            .iter()
            .filter(|c| c.deadline.is_none())
            .count(),
        steps,
    }
}

/// The most probes in flight at once during any one half-open period.
fn max_probes(steps: &[Step]) -> usize {
    let (mut state, mut probes, mut most) = (State::Closed, HashSet::new(), 0);
    for step in steps {
        match step {
            Step::Became(to) => {
                state = *to;
                probes.clear();
            }
            Step::Passed(id) if state == State::HalfOpen => {
                probes.insert(*id);
                most = most.max(probes.len());
            }
            Step::Passed(_) => {}
            Step::Done(id) => {
                probes.remove(id);
            }
        }
    }
    most
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_request_gets_one_timely_answer_and_probes_stay_bounded(
        incidents in proptest::collection::vec(incident(), 0..4),
        hang_rate in 0.0..0.2f64,
        seed in any::<u64>(),
    ) {
        let script = incidents.into_iter().fold(FaultScript::new(), FaultScript::with);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let out = rt.block_on(simulate(script, hang_rate, seed));
        let verdict = check(&out);
        prop_assert!(verdict.is_ok(), "{:?}: {:?}", verdict, out.steps);
    }
}

#[test]
fn a_stack_that_drops_requests_breaks_the_invariant() {
    // The same stack and a healthy backend, but one request in 50 is lost above the
    // overall timeout (its future never completes): 40/s for 10 s ≈ 400 requests, ≈ 8
    // lost. The client's deadline ends them as `TimedOut`, and the check must say so.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let healthy = rt.block_on(simulate_with(FaultScript::new(), 0.0, 7, None));
    assert_eq!(check(&healthy), Ok(()));
    let dropping = rt.block_on(simulate_with(FaultScript::new(), 0.0, 7, Some(50)));
    let err = check(&dropping).expect_err("lost requests are detected");
    assert!(err.contains("lost or hung"), "{err}");
    assert_eq!(dropping.timed_out, dropping.requests as u64 / 50, "{err}");
    // Hangs below the overall timeout are the stack's to bound: injected at 20%, they
    // come back as rejections, and the invariant holds.
    let hanging = rt.block_on(simulate_with(FaultScript::new(), 0.2, 7, None));
    assert_eq!(check(&hanging), Ok(()));
}

#[test]
fn the_probe_counter_counts_probes_in_flight_per_half_open_period() {
    use Step::{Became, Done, Passed};
    let steps = [
        Passed(0),
        Became(State::Open),
        Became(State::HalfOpen),
        Passed(1),
        Passed(2),
        Done(1), // dropped: its permit is handed back
        Passed(3),
        Became(State::Open),
        Became(State::HalfOpen),
        Passed(4),
        Done(2), // a probe of the last period ends: not counted in this one
        Became(State::Closed),
        Passed(5),
        Passed(6),
        Passed(7),
    ];
    assert_eq!(max_probes(&steps), 2);
    let too_many = [Became(State::HalfOpen), Passed(1), Passed(2), Passed(3)];
    assert_eq!(max_probes(&too_many), 3);
}

#[test]
fn an_outage_exercises_the_probe_limit() {
    // Not vacuous: a 3 s outage opens the breaker, and after each 500 ms open period
    // half-open lets probes through (at most PROBES each time).
    let secs = Duration::from_secs;
    let script = FaultScript::new().with(Incident::outage(secs(2)..secs(5)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let out = rt.block_on(simulate(script, 0.0, 1));
    let half_opens = out
        .steps
        .iter()
        .filter(|s| **s == Step::Became(State::HalfOpen))
        .count();
    assert!(half_opens >= 2, "{:?}", out.steps);
    assert!((1..=PROBES as usize).contains(&max_probes(&out.steps)));
    assert_eq!(check(&out), Ok(()));
}
