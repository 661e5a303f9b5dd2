//! The simulation kit: deterministic, open-loop, and a backend that behaves like a queue.

use std::time::Duration;

use palisade_chaos::sim::{
    CallOutcome, FaultScript, Incident, LoadGen, RequestOutcome, SimBackend,
};
use palisade_chaos::{ChaosConfig, ChaosLayer, Latency};
use palisade_core::BoxError;
use tower::Layer;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn backend(capacity: f64, script: FaultScript) -> SimBackend {
    SimBackend::builder()
        .capacity(capacity)
        .script(script)
        .build()
        .expect("valid backend")
}

fn load(rate: f64, duration: Duration) -> LoadGen {
    LoadGen::builder()
        .poisson(rate)
        .duration(duration)
        .build()
        .expect("valid load")
}

#[tokio::test(start_paused = true)]
async fn a_run_replays_exactly_for_its_seeds() {
    async fn once() -> (Vec<(Duration, Duration, RequestOutcome)>, u64) {
        let script = FaultScript::new().with(Incident::errors(secs(2)..secs(4), 0.3));
        let b = backend(150.0, script);
        let chaos = ChaosConfig::<(), _, BoxError>::builder()
            .injected_error(0.1)
            .latency(0.2, Latency::lognormal(Duration::from_millis(20), 1.0))
            .build()
            .expect("valid");
        let stack = ChaosLayer::new(chaos).layer(b.clone());
        let run = load(120.0, secs(6)).run(stack, |_| ()).await;
        let rows = run
            .records
            .iter()
            .map(|r| (r.sent_at - run.start, r.latency, r.outcome))
            .collect();
        (rows, b.calls())
    }
    let (a, b) = (once().await, once().await);
    assert!(!a.0.is_empty());
    assert_eq!(a, b);
}

#[tokio::test(start_paused = true)]
async fn latency_grows_as_load_nears_capacity() {
    async fn p99_at(rate: f64) -> Duration {
        let b = backend(100.0, FaultScript::new());
        load(rate, secs(30))
            .run(b.clone(), |_| ())
            .await
            .report(&b)
            .p99
    }
    let (light, heavy) = (p99_at(30.0).await, p99_at(95.0).await);
    // M/D/1 at ρ=0.3 queues ~2ms on average; at ρ=0.95 ~95ms, with a tail of several
    // hundred ms: the p99 must grow by far more than the base latency's own p99 (≈32ms).
    assert!(
        heavy > light + Duration::from_millis(100),
        "{light:?} vs {heavy:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn twice_the_capacity_is_shed_and_goodput_stays_at_capacity() {
    let b = backend(100.0, FaultScript::new());
    let report = load(200.0, secs(20))
        .run(b.clone(), |_| ())
        .await
        .report(&b);
    println!("{report}");
    // The backend serves 100/s and sheds the rest. Its queue is full from the first
    // second on, so it works through 20s of arrivals plus the 1s queue left at the end:
    // 100 × (20 + 1) = 2100 served at most (+1 for the slot at t=0), and no fewer than
    // 20s × 100 = 2000. Success ≈ 50%, and every request reached it exactly once.
    assert!((2000..=2101).contains(&report.successes), "{report}");
    assert!((0.45..0.55).contains(&report.success_ratio), "{report}");
    assert_eq!(report.amplification, Some(1.0));
    let shed = b
        .log()
        .iter()
        .filter(|c| c.outcome == CallOutcome::Shed)
        .count() as u64;
    assert_eq!(shed, report.failures);
}

#[tokio::test(start_paused = true)]
async fn a_brownout_cuts_capacity_and_slow_recovery_ramps_it_back() {
    let script = FaultScript::new()
        .with(Incident::brownout(secs(10)..secs(20), 0.25).recovering_over(secs(10)));
    let b = backend(100.0, script);
    let report = load(80.0, secs(40)).run(b.clone(), |_| ()).await.report(&b);
    println!("{report}");
    // Before: 80/s of 100 served. During: capacity 25/s, so ≈ 25/80 = 31% succeed.
    // Recovery: over the 10s ramp capacity is 25 + 75·x per second (x: fraction of the
    // ramp gone); it covers the 80/s offered once x ≥ 0.73, 7.3s after the brownout ends,
    // plus up to the 1s queue to drain: recovery in 5..=10s.
    assert!(
        report.success_ratio_between(secs(0)..secs(10)) > 0.99,
        "{report}"
    );
    let during = report.success_ratio_between(secs(11)..secs(20));
    assert!((0.25..0.40).contains(&during), "{during}");
    let ttr = report.time_to_recover.expect("recovers");
    assert!((secs(5)..=secs(10)).contains(&ttr), "{ttr:?}");
}

#[tokio::test(start_paused = true)]
async fn the_generator_is_open_loop_and_bounded() {
    // A stack that never answers: a closed loop would send one request and wait forever.
    let config = ChaosConfig::builder().hang(1.0).build().expect("valid");
    let b = backend(100.0, FaultScript::new());
    let hanging = ChaosLayer::<(), _, BoxError>::new(config).layer(b.clone());
    let run = LoadGen::builder()
        .fixed(100.0)
        .duration(secs(5))
        .max_in_flight(200)
        .drain(secs(1))
        .build()
        .expect("valid")
        .run(hanging, |_| ())
        .await;
    assert_eq!(run.records.len(), 500, "fixed 100/s for 5s");
    assert_eq!(run.count(RequestOutcome::Unfinished), 200, "the bound");
    assert_eq!(run.count(RequestOutcome::Skipped), 300);
    assert_eq!(b.calls(), 0, "hangs never reach the backend");
}

#[tokio::test(start_paused = true)]
async fn client_deadlines_time_requests_out_and_are_visible_to_the_backend() {
    let spike = Latency::fixed(Duration::from_secs(2));
    let script = FaultScript::new().with(Incident::latency_spike(secs(5)..secs(10), spike));
    let b = backend(1000.0, script);
    let run = LoadGen::builder()
        .fixed(50.0)
        .duration(secs(15))
        .deadline(Duration::from_secs(1))
        .build()
        .expect("valid")
        .run(b.clone(), |_| ())
        .await;
    let report = run.report(&b);
    println!("{report}");
    // Every request in the spike takes ≥ 2s > its 1s deadline: 5s × 50/s = 250 time out.
    assert_eq!(report.timed_out, 250, "{report}");
    assert_eq!(
        report.max,
        Duration::from_secs(1),
        "the client stops waiting at 1s"
    );
    assert_eq!(
        report.late_attempts,
        Some(0),
        "no attempt started after its deadline"
    );
    assert_eq!(report.unfinished + report.answered_twice, 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_deadline_of_duration_max_means_no_deadline_not_a_panic() {
    let b = backend(1000.0, FaultScript::new());
    let run = LoadGen::builder()
        .fixed(10.0)
        .duration(secs(1))
        .deadline(Duration::MAX)
        .build()
        .expect("valid")
        .run(b.clone(), |_| ())
        .await;
    let report = run.report(&b);
    assert_eq!(report.timed_out, 0, "{report}");
    assert_eq!(run.records.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn the_backend_speaks_palisade_error_too() {
    use palisade_chaos::sim::{SimError, SimErrorKind};
    use palisade_core::Error;
    use tower::ServiceExt;

    let script = FaultScript::new().with(Incident::outage(secs(0)..secs(1)));
    let b = backend(100.0, script).with_error::<Error<SimError>>();
    let err = b.clone().oneshot(()).await.expect_err("outage");
    assert!(matches!(&err, Error::Inner(e) if e.kind() == SimErrorKind::Outage));

    // Behind a palisade timeout, one error type carries both the backend's and the layer's.
    let spike = Latency::fixed(secs(5));
    let slow = backend(
        100.0,
        FaultScript::new().with(Incident::latency_spike(secs(0)..secs(9), spike)),
    )
    .with_error::<Error<SimError>>();
    let timeout = palisade_timeout::TimeoutLayer::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("valid");
    let err = timeout
        .layer(slow)
        .oneshot(())
        .await
        .expect_err("timed out");
    assert!(matches!(err, Error::Elapsed(_)));
}

// ===== the incidents of the scorecard =====

#[tokio::test(start_paused = true)]
async fn slowed_calls_are_a_fraction_and_hangs_only_end_at_a_deadline() {
    // 30% of calls take 3 s more and 10% hang, from 0 to 20 s; 100 req/s, a 2 s deadline.
    let script = FaultScript::new()
        .with(Incident::slow_calls(
            secs(0)..secs(20),
            0.3,
            Latency::fixed(secs(3)),
        ))
        .with(Incident::hang(secs(0)..secs(20), 0.1));
    let b = backend(1000.0, script);
    let run = LoadGen::builder()
        .poisson(100.0)
        .duration(secs(20))
        .deadline(secs(2))
        .build()
        .expect("valid load")
        .run(b.clone(), |_| ())
        .await;
    let report = run.report(&b);
    // A hung call never answers: it is admitted (it holds the backend), and only the
    // client's deadline ends it. Of the rest, 30% are slowed past the deadline: in all
    // 0.1 + 0.9 × 0.3 = 37% time out (≈ 2000 requests: ± 3% is ± 3 standard deviations).
    let hung = b
        .log()
        .iter()
        .filter(|c| c.outcome == CallOutcome::Hung)
        .count() as f64;
    let timed_out = report.timed_out as f64 / report.requests as f64;
    assert!((0.34..0.40).contains(&timed_out), "{report}");
    assert!(
        (0.08..0.12).contains(&(hung / report.requests as f64)),
        "{report}"
    );
    assert_eq!(report.unfinished, 0, "{report}");
    // Every call is admitted load, hung or slowed alike (the last arrival may tick into
    // second 20).
    assert_eq!(report.admitted_between(secs(0)..secs(21)), b.calls());
}

#[tokio::test(start_paused = true)]
async fn a_quota_answers_429_with_retry_after_and_refusals_are_not_load() {
    use tower::ServiceExt;
    // A quota of 60 calls a second from 0 to 10 s under 100 req/s (fixed arrivals).
    let b = backend(
        1000.0,
        FaultScript::new().with(Incident::rate_limited(secs(0)..secs(10), 60)),
    );
    let run = LoadGen::builder()
        .fixed(100.0)
        .duration(secs(10))
        .build()
        .expect("valid load")
        .run(b.clone(), |_| ())
        .await;
    let report = run.report(&b);
    // Exactly 60 of each second's 100 requests are served; the other 40 are refused fast.
    assert_eq!(report.successes, 600, "{report}");
    assert_eq!(
        report.peak_backend_rps,
        Some(60),
        "refusals are not load: {report}"
    );
    assert!(
        report
            .timeline
            .iter()
            .take(10)
            .all(|s| s.backend_calls == 100)
    );
    // The refusal is a 429 whose Retry-After points at the next second.
    tokio::time::advance(Duration::from_millis(10)).await;
    let b = backend(
        1000.0,
        FaultScript::new().with(Incident::rate_limited(secs(0)..secs(10), 1)),
    );
    assert!(b.clone().oneshot(()).await.is_ok());
    tokio::time::advance(Duration::from_millis(250)).await;
    let err = b.clone().oneshot(()).await.expect_err("over quota");
    let sim = err
        .downcast_ref::<palisade_chaos::sim::SimError>()
        .expect("a SimError");
    assert_eq!(sim.kind(), palisade_chaos::sim::SimErrorKind::RateLimited);
    let retry_after = sim.retry_after().expect("a hint");
    assert!(
        (Duration::from_millis(740)..=Duration::from_millis(750)).contains(&retry_after),
        "{retry_after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flapping_backend_serves_only_in_its_up_phases() {
    // Down 1 s, up 1 s from 0 to 10 s; fixed 100 req/s: half the requests fail.
    let b = backend(
        1000.0,
        FaultScript::new().with(Incident::flapping(secs(0)..secs(10), secs(1), secs(1))),
    );
    let report = load(100.0, secs(10))
        .run(b.clone(), |_| ())
        .await
        .report(&b);
    for (i, second) in report.timeline.iter().take(10).enumerate() {
        let expect_up = i % 2 == 1;
        assert_eq!(
            second.succeeded == second.sent,
            expect_up,
            "second {i}: {second:?}"
        );
        assert_eq!(second.succeeded == 0, !expect_up, "second {i}: {second:?}");
    }
}
