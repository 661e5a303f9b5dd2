//! The chaos layer's faults, schedule, handle, predicate and events, on paused time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_chaos::{
    ChaosConfig, ChaosConfigBuilder, ChaosEvent, ChaosLayer, Fault, FaultKind, Latency, Window,
};
use palisade_core::BoxError;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

type Builder = ChaosConfigBuilder<u32, u32, BoxError>;

/// A service doubling its input that counts its calls.
fn counted() -> (
    impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone,
    Arc<AtomicU64>,
) {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&calls);
    let svc = service_fn(move |n: u32| {
        seen.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, BoxError>(n * 2) }
    });
    (svc, calls)
}

fn injected(_: &u32) -> BoxError {
    BoxError::from("injected")
}

/// Which of `n` calls failed, for a config.
async fn failures(builder: Builder, n: u32) -> Vec<u32> {
    let (inner, _) = counted();
    let mut svc = ChaosLayer::new(builder.build().expect("valid")).layer(inner);
    let mut failed = Vec::new();
    for i in 0..n {
        if svc.ready().await.expect("ready").call(i).await.is_err() {
            failed.push(i);
        }
    }
    failed
}

#[tokio::test(start_paused = true)]
async fn error_rate_is_honoured_and_replays_for_a_seed() {
    let run = |seed| failures(ChaosConfig::builder().seed(seed).error(0.2, injected), 2000);
    let (a, b, c) = (run(1).await, run(1).await, run(2).await);
    // 2000 draws at p=0.2: mean 400, sd 17.9; ±5 sd
    assert!((310..490).contains(&a.len()), "{}", a.len());
    assert_eq!(a, b, "same seed, same faulted calls");
    assert_ne!(a, c, "another seed, another run");
}

#[tokio::test(start_paused = true)]
async fn injected_errors_and_replacements_skip_the_service() {
    let (inner, calls) = counted();
    let config = ChaosConfig::builder()
        .error(1.0, injected)
        .build()
        .expect("valid");
    let err = ChaosLayer::new(config)
        .layer(inner)
        .oneshot(1)
        .await
        .expect_err("error");
    assert_eq!(err.to_string(), "injected");
    assert_eq!(calls.load(Ordering::Relaxed), 0);

    let (inner, calls) = counted();
    let config = ChaosConfig::<u32, u32, BoxError>::builder()
        .replace(1.0, |n| n + 503)
        .build()
        .expect("valid");
    let res = ChaosLayer::new(config)
        .layer(inner)
        .oneshot(1)
        .await
        .expect("replaced");
    assert_eq!(res, 504);
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_answer_after_the_service_ran() {
    let (inner, calls) = counted();
    let config = ChaosConfig::<u32, u32, BoxError>::builder()
        .latency(1.0, Latency::fixed(Duration::from_millis(250)))
        .build()
        .expect("valid");
    let start = Instant::now();
    let res = ChaosLayer::new(config)
        .layer(inner)
        .oneshot(4)
        .await
        .expect("ok");
    assert_eq!(res, 8);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hang_never_answers_and_a_timeout_ends_it() {
    let (inner, calls) = counted();
    let config = ChaosConfig::<u32, u32, BoxError>::builder()
        .hang(1.0)
        .build()
        .expect("valid");
    let svc = ChaosLayer::new(config).layer(inner);
    let res = tokio::time::timeout(Duration::from_secs(3600), svc.oneshot(1)).await;
    assert!(res.is_err(), "still pending after an hour");
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn behaviour_runs_on_the_request_before_the_call() {
    let config = ChaosConfig::<u32, u32, BoxError>::builder()
        .behaviour(1.0, |n| *n = 100)
        .build()
        .expect("valid");
    let (inner, _) = counted();
    assert_eq!(
        ChaosLayer::new(config)
            .layer(inner)
            .oneshot(1)
            .await
            .expect("ok"),
        200
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_behaviour_corrupts_the_services_answer() {
    let (inner, calls) = counted();
    let config = ChaosConfig::<u32, u32, BoxError>::builder()
        .rate(FaultKind::Behaviour, 1.0)
        .answer_behaviour_fn(|res| {
            if let Ok(n) = res {
                *n += 1; // a flipped bit
            }
        })
        .latency(1.0, Latency::fixed(Duration::from_millis(3)))
        .build()
        .expect("valid");
    let start = Instant::now();
    let svc = ChaosLayer::new(config).layer(inner);
    assert_eq!(
        svc.oneshot(10).await.expect("ok"),
        21,
        "the service ran, then the answer was corrupted"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(3),
        "and still delayed"
    );

    // A behaviour may also turn a good answer into an error (a dropped connection).
    let config = ChaosConfig::<u32, u32, BoxError>::builder()
        .rate(FaultKind::Behaviour, 1.0)
        .answer_behaviour_fn(|res| *res = Err(BoxError::from("connection reset")))
        .build()
        .expect("valid");
    let (inner, calls) = counted();
    assert!(
        ChaosLayer::new(config)
            .layer(inner)
            .oneshot(1)
            .await
            .is_err()
    );
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn the_predicate_limits_faults_to_chosen_requests() {
    let failed = failures(
        ChaosConfig::builder()
            .error(1.0, injected)
            .enabled_for(|n| n % 2 == 0),
        10,
    )
    .await;
    assert_eq!(failed, vec![0, 2, 4, 6, 8]);
}

#[tokio::test(start_paused = true)]
async fn an_outage_window_fails_every_call_inside_it_only() {
    let secs = Duration::from_secs;
    let config = ChaosConfig::builder()
        .error_fn(injected)
        .window(Window::new(Fault::Error, secs(30)..secs(60)))
        .build()
        .expect("valid");
    let layer = ChaosLayer::new(config);
    let (inner, _) = counted();
    let mut svc = layer.layer(inner);
    let mut failed_at = Vec::new();
    for t in 0..90u32 {
        if svc.ready().await.expect("ready").call(t).await.is_err() {
            failed_at.push(t);
        }
        tokio::time::advance(secs(1)).await;
    }
    assert_eq!(failed_at, (30..60).collect::<Vec<_>>());
    assert_eq!(layer.handle().injected(FaultKind::Error), 30);
}

#[tokio::test(start_paused = true)]
async fn a_periodic_latency_spike_and_a_restarted_schedule() {
    let secs = Duration::from_secs;
    let spike = Latency::fixed(Duration::from_millis(500));
    let config = ChaosConfig::<u32, u32, BoxError>::builder()
        .window(Window::new(Fault::Latency(spike), secs(10)..secs(20)).every(secs(300)))
        .build()
        .expect("valid");
    let layer = ChaosLayer::new(config);
    let handle = layer.handle();
    let (inner, _) = counted();
    let mut svc = layer.layer(inner);
    let at = |offset: u64| tokio::time::sleep_until(Instant::now() + secs(offset));
    assert_eq!(latency_of(&mut svc).await, Duration::ZERO, "t=0");
    at(15).await; // t=15: inside the first window
    assert_eq!(latency_of(&mut svc).await, Duration::from_millis(500));
    at(300).await; // t≈315.5: inside the second window
    assert_eq!(latency_of(&mut svc).await, Duration::from_millis(500));
    handle.restart_schedule(); // now t=0 again: outside
    assert_eq!(latency_of(&mut svc).await, Duration::ZERO);
}

async fn latency_of<S: Service<u32, Error = BoxError>>(svc: &mut S) -> Duration {
    let start = Instant::now();
    svc.ready().await.expect("ready").call(1).await.expect("ok");
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn rates_change_at_run_time_through_the_handle() {
    let config = ChaosConfig::builder()
        .error_fn(injected)
        .build()
        .expect("valid");
    let layer = ChaosLayer::new(config);
    let handle = layer.handle();
    let (inner, _) = counted();
    let mut svc = layer.layer(inner);
    assert!(svc.ready().await.expect("ready").call(1).await.is_ok());
    handle.set_rate(FaultKind::Error, 1.0).expect("valid");
    assert!(svc.ready().await.expect("ready").call(1).await.is_err());
    handle.disable();
    assert!(svc.ready().await.expect("ready").call(1).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn every_injected_fault_is_an_event() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let config = ChaosConfig::<u32, u32, BoxError>::builder()
        .error(0.3, injected)
        .latency(0.3, Latency::fixed(Duration::from_millis(1)))
        .on_event(move |e: &ChaosEvent| sink.lock().expect("lock").push(e.clone()))
        .build()
        .expect("valid");
    let layer = ChaosLayer::new(config);
    let handle = layer.handle();
    let (inner, _) = counted();
    let mut svc = layer.layer(inner);
    for i in 0..200 {
        let _ = svc.ready().await.expect("ready").call(i).await;
    }
    handle.disable();
    let events = events.lock().expect("lock");
    let count = |kind| {
        events
            .iter()
            .filter(|e| matches!(e, ChaosEvent::Injected { fault, .. } if *fault == kind))
            .count() as u64
    };
    assert!(handle.injected(FaultKind::Error) > 0);
    assert_eq!(count(FaultKind::Error), handle.injected(FaultKind::Error));
    assert_eq!(
        count(FaultKind::Latency),
        handle.injected(FaultKind::Latency)
    );
    assert_eq!(events.last(), Some(&ChaosEvent::Toggled { enabled: false }));
}

#[cfg(feature = "serde")]
#[test]
fn settings_load_from_data() {
    use palisade_chaos::ChaosSettings;
    let json = r#"{
        "name": "orders",
        "seed": 9,
        "rates": { "latency": 0.25, "hang": 0.01 },
        "latency": { "log_normal": { "median": "20ms", "sigma": 1.0, "cap": "5s" } },
        "schedule": [
            { "fault": "hang", "from": "30s", "until": "60s" },
            { "fault": { "latency": { "fixed": "2s" } }, "from": "0s", "until": "20s",
              "every": "5m", "probability": 0.5 }
        ]
    }"#;
    let settings: ChaosSettings = serde_json::from_str(json).expect("parses");
    assert_eq!(settings.name.as_str(), "orders");
    assert!(settings.enabled, "absent fields take their defaults");
    assert_eq!(settings.rates.latency, 0.25);
    assert_eq!(
        settings.schedule[1].period(),
        Some(Duration::from_secs(300))
    );
    let config = ChaosConfig::<u32, u32, BoxError>::builder()
        .settings(settings)
        .build()
        .expect("valid");
    assert_eq!(config.settings().seed, 9);
}
