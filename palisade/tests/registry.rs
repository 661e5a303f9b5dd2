//! The registry: one built policy per name shared across clones and tasks, hot reload in
//! place under load (state kept, no request lost or answered twice), invalid reloads that
//! change nothing, removal, and a snapshot that shows forced states.
#![cfg(feature = "policy")]
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::circuit_breaker::State;
use palisade::policy::{Format, Policies};
use palisade::prelude::*;
use palisade::registry::{ChangeKind, Registry};
use palisade::{RejectionKind, find_rejection};
use tokio::time::{Instant, sleep};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

type Svc = BoxCloneService<u32, u32, BoxError>;

fn policies(text: &str) -> Policies {
    Policies::from_toml(text).unwrap()
}

const BREAKER: &str = r#"
[policies.payments.circuit_breaker]
window = { kind = "count", size = 4 }
minimum_calls = 4
failure_rate_threshold = 50.0
open_duration = "10s"

[policies.search.timeout]
timeout = "1s"
"#;

/// A backend answering `x * 10`, failing every request for `0`.
fn backend(
    calls: Arc<AtomicU32>,
) -> impl tower::Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send + 'static
{
    service_fn(move |x: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            sleep(Duration::from_millis(5)).await;
            if x == 0 {
                Err::<u32, BoxError>("503 unavailable".into())
            } else {
                Ok(x * 10)
            }
        }
    })
}

fn service(registry: &Registry, name: &str, calls: &Arc<AtomicU32>) -> Svc {
    BoxCloneService::new(
        registry
            .get(name)
            .unwrap()
            .layer(backend(Arc::clone(calls))),
    )
}

#[tokio::test(start_paused = true)]
async fn every_clone_and_task_shares_one_breaker_per_name() {
    let registry = Registry::from_policies(policies(BREAKER));
    assert_eq!(registry.names(), ["payments", "search"]);
    let calls = Arc::new(AtomicU32::new(0));

    // Four tasks, each with its own clone of the registry and its own service, fail once.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let svc = service(&registry.clone(), "payments", &calls);
        tasks.push(tokio::spawn(svc.oneshot(0)));
    }
    for task in tasks {
        assert!(task.await.unwrap().is_err());
    }
    // Together they opened the one breaker: a fifth service, made now, is refused.
    let handles = registry.clone().handles("payments").unwrap();
    assert_eq!(handles.circuit_breaker().unwrap().state(), State::Open);
    let svc = service(&registry, "payments", &calls);
    let err = tokio::spawn(svc.oneshot(1)).await.unwrap().unwrap_err();
    assert_eq!(
        find_rejection(&*err).map(|r| r.kind()),
        Some(RejectionKind::CircuitOpen)
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "the refused call never reached the backend"
    );

    // Another name has its own layers.
    let search = service(&registry, "search", &calls);
    assert_eq!(search.oneshot(2).await.unwrap(), 20);
    assert!(registry.get("nope").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_reload_applies_in_place_and_keeps_the_breaker_state() {
    let registry = Registry::from_policies(policies(BREAKER));
    let calls = Arc::new(AtomicU32::new(0));
    let svc = service(&registry, "payments", &calls);
    for _ in 0..4 {
        let _ = svc.clone().oneshot(0).await;
    }
    let breaker = registry
        .handles("payments")
        .unwrap()
        .circuit_breaker()
        .unwrap()
        .clone();
    assert_eq!(breaker.state(), State::Open);
    let before = breaker.snapshot();

    let report = registry
        .reload(policies(
            &BREAKER.replace("open_duration = \"10s\"", "open_duration = \"20s\""),
        ))
        .unwrap();
    assert_eq!(report.updated().count(), 1, "{report}");
    let change = report.updated().next().unwrap();
    assert_eq!(
        (change.policy.as_str(), change.layer),
        ("payments", Some("circuit_breaker"))
    );
    assert!(
        report
            .of_kind(ChangeKind::Unchanged)
            .any(|c| c.policy == "search")
    );

    assert_eq!(breaker.state(), State::Open, "state kept");
    assert_eq!(breaker.snapshot().failures, before.failures, "window kept");
    assert_eq!(breaker.config().open_duration(), Duration::from_secs(20));
    assert_eq!(
        registry
            .policy("payments")
            .unwrap()
            .circuit_breaker()
            .unwrap()
            .open_duration(),
        Duration::from_secs(20)
    );
    // The service made before the reload runs the new config.
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(
        find_rejection(&*err).map(|r| r.kind()),
        Some(RejectionKind::CircuitOpen)
    );

    // The same file again changes nothing.
    let report = registry
        .reload(policies(
            &BREAKER.replace("open_duration = \"10s\"", "open_duration = \"20s\""),
        ))
        .unwrap();
    assert!(report.is_unchanged(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn an_invalid_reload_changes_nothing_and_reports_every_error() {
    let file = r#"
        [policies.payments.circuit_breaker]
        window = { kind = "count", size = 4 }
        open_duration = "10s"
        [policies.payments.rate_limit]
        cells = 10
        period = "1s"
        burst = 10
        [policies.payments.retry]
        max_attempts = 3
        [policies.search.timeout]
        timeout = "1s"
    "#;
    let registry = Registry::from_policies(policies(file));
    let before = registry.policies();
    let snapshot_before = registry.snapshot_json();

    // Each change is valid on its own but cannot be applied in place.
    let bad = file
        .replace("size = 4", "size = 8")
        .replace("cells = 10", "cells = 20")
        .replace("open_duration = \"10s\"", "open_duration = \"5s\"")
        .replace(
            "max_attempts = 3",
            "max_attempts = 2\n[policies.payments.timeout]\ntimeout = \"1s\"",
        )
        .replace(
            "[policies.search.timeout]\n        timeout = \"1s\"",
            "[policies.search.retry]\n",
        );
    let errors = registry.reload(policies(&bad)).unwrap_err();
    let mut paths = errors.paths();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "policies.payments.circuit_breaker.window",
            "policies.payments.rate_limit.cells",
            "policies.payments.timeout",
            "policies.search.retry",
            "policies.search.timeout",
        ],
        "{errors}"
    );
    assert!(
        errors
            .to_string()
            .contains("at most the rate the limit was built with, 10 per 1s"),
        "{errors}"
    );
    assert_eq!(registry.policies(), before, "nothing changed");

    // A rate change without an explicit burst changes the burst (it defaults to `cells`):
    // the error says what to write.
    let no_burst = file.replace(
        "cells = 10\n        period = \"1s\"\n        burst = 10",
        "cells = 5\n        period = \"1s\"",
    );
    assert_ne!(no_burst, file);
    let errors = registry.reload(policies(&no_burst)).unwrap_err();
    assert_eq!(
        errors.paths(),
        ["policies.payments.rate_limit.burst"],
        "{errors}"
    );
    assert!(
        errors.to_string().contains("write `burst = 10`"),
        "{errors}"
    );
    assert_eq!(registry.policies(), before);
    let handles = registry.handles("payments").unwrap();
    assert_eq!(
        handles.circuit_breaker().unwrap().config().open_duration(),
        Duration::from_secs(10)
    );
    assert_eq!(handles.retry().unwrap().config().max_attempts(), 3);
    assert_eq!(registry.snapshot_json(), snapshot_before);

    // A file that does not even load changes nothing either.
    let errors = registry
        .reload_from(
            Format::Toml,
            "[policies.payments.retry]\nmax_attempts = 0\n",
            [("A", "B")],
        )
        .unwrap_err();
    assert_eq!(errors.paths(), ["policies.payments.retry.max_attempts"]);
    assert_eq!(registry.policies(), before);

    // With the burst written out, a lower rate applies in place.
    registry
        .reload(policies(&file.replace("cells = 10", "cells = 5")))
        .unwrap();
    let limit = registry
        .handles("payments")
        .unwrap()
        .rate_limit()
        .unwrap()
        .clone();
    assert_eq!(limit.rate(), (5, Duration::from_secs(1)));

    // And back up: by the ramp, as the report says.
    let report = registry.reload(policies(file)).unwrap();
    assert!(
        report.to_string().contains(
            "payments.rate_limit: updated (the rate rises to the new one over the ramp (10s))"
        ),
        "{report}"
    );
    assert_eq!(limit.rate(), (10, Duration::from_secs(1)));
    assert!(limit.snapshot().ramping);
}

#[tokio::test(start_paused = true)]
async fn a_reload_adds_and_removes_policies_and_says_what_it_reset() {
    let registry = Registry::from_policies(policies(
        r#"
        [policies.payments.retry]
        budget = { kind = "tps", ttl = "10s", min_per_sec = 5, ratio = 0.1 }
        [policies.old.timeout]
        timeout = "1s"
        "#,
    ));
    let calls = Arc::new(AtomicU32::new(0));
    let old = service(&registry, "old", &calls);
    let report = registry
        .reload(policies(
            r#"
            [policies.payments.retry]
            budget = { kind = "tps", ttl = "10s", min_per_sec = 5, ratio = 0.2 }
            [policies.new.timeout]
            timeout = "1s"
            "#,
        ))
        .unwrap();
    let lines = report.to_string();
    assert!(lines.contains("old: removed"), "{lines}");
    assert!(lines.contains("new: added"), "{lines}");
    assert!(
        lines.contains("payments.retry: updated (its budget starts afresh"),
        "{lines}"
    );
    assert_eq!(registry.names(), ["new", "payments"]);
    // A removed policy's services keep working with their last config.
    assert_eq!(old.oneshot(3).await.unwrap(), 30);
    // The reset is among the policy's events.
    let snapshot = registry.snapshot();
    let events = &snapshot.policies["payments"].events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].layer, "retry");
    assert!(events[0].reason.contains("budget"));
}

#[tokio::test(start_paused = true)]
async fn remove_and_insert_start_afresh() {
    let registry = Registry::from_policies(policies(BREAKER));
    let breaker = registry
        .handles("payments")
        .unwrap()
        .circuit_breaker()
        .unwrap()
        .clone();
    breaker.force_open();
    let policy = registry.remove("payments").unwrap();
    assert!(registry.get("payments").is_none());
    assert!(registry.remove("payments").is_none());
    assert_eq!(
        breaker.state(),
        State::ForcedOpen,
        "the old layers live on while used"
    );

    registry.insert(policy.clone()).unwrap();
    let fresh = registry.handles("payments").unwrap();
    assert_eq!(fresh.circuit_breaker().unwrap().state(), State::Closed);
    let err = registry.insert(policy).unwrap_err();
    assert!(err.to_string().contains("already in the registry"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_shows_forced_states_and_their_reasons() {
    let registry = Registry::from_policies(policies(
        r#"
        [policies.payments.circuit_breaker]
        window = { kind = "count", size = 4 }
        [policies.payments.rate_limit]
        cells = 10
        period = "1s"
        [policies.payments.concurrency_limit]
        max_in_flight = 3
        [policies.payments.retry]
        max_attempts = 2
        [policies.payments.attempt_timeout]
        timeout = "250us"
        [policies.payments.adaptive_limit]
        initial_limit = 5
        "#,
    ));
    let handles = registry.handles("payments").unwrap();
    handles.circuit_breaker().unwrap().force_open();
    tokio::time::advance(Duration::from_millis(1500)).await;

    let json: serde_json::Value = serde_json::from_str(&registry.snapshot_json()).unwrap();
    let p = &json["policies"]["payments"];
    assert_eq!(p["circuit_breaker"]["state"], "forced_open");
    assert_eq!(p["events"][0]["layer"], "circuit_breaker");
    assert_eq!(p["events"][0]["event"], "closed -> forced_open");
    assert_eq!(p["events"][0]["reason"], "an operator");
    assert_eq!(p["events"][0]["ago"], "1500ms");
    assert_eq!(p["rate_limit"]["cells"], 10);
    assert_eq!(p["rate_limit"]["period"], "1s");
    assert_eq!(p["concurrency_limit"]["max_in_flight"], 3);
    assert_eq!(p["adaptive_limit"]["limit"], 5);
    assert_eq!(p["retry"]["max_attempts"], 2);
    assert!(p["retry"]["budget_available"].is_number());
    assert_eq!(p["attempt_timeout"]["timeout"], "250us");
    assert_eq!(p["config"]["attempt_timeout"]["timeout"], "250us");
    assert_eq!(
        p["layers"],
        serde_json::json!([
            "retry",
            "circuit_breaker",
            "rate_limit",
            "concurrency_limit",
            "adaptive_limit",
            "attempt_timeout"
        ])
    );

    handles.circuit_breaker().unwrap().reset();
    let snapshot = registry.snapshot();
    let breaker = snapshot.policies["payments"]
        .circuit_breaker
        .as_ref()
        .unwrap();
    assert_eq!(breaker.state, State::Closed);
    assert_eq!(snapshot.policies["payments"].events.len(), 2);
}

const LOAD_V1: &str = r#"
[policies.api.timeout]
timeout = "2s"
[policies.api.retry]
max_attempts = 3
backoff = { kind = "constant", delay = "1ms", jitter = "none" }
budget = { kind = "none" }
[policies.api.circuit_breaker]
window = { kind = "count", size = 50 }
minimum_calls = 50
failure_rate_threshold = 90.0
open_duration = "1s"
[policies.api.concurrency_limit]
max_in_flight = 8
max_wait = "5s"
max_queue = 100
[policies.api.attempt_timeout]
timeout = "500ms"
"#;

/// Many clients call through services built before the reloads while the policy flips
/// between two versions: every request is answered exactly once, with its own answer, and
/// the breaker's window carries over every reload.
#[tokio::test(start_paused = true)]
async fn hot_reload_under_load_loses_and_duplicates_nothing() {
    let load_v2 = LOAD_V1
        .replace("timeout = \"2s\"", "timeout = \"3s\"")
        .replace("max_attempts = 3", "max_attempts = 2")
        .replace(
            "failure_rate_threshold = 90.0",
            "failure_rate_threshold = 95.0",
        )
        .replace("max_in_flight = 8", "max_in_flight = 4")
        .replace("timeout = \"500ms\"", "timeout = \"400ms\"");
    let registry = Registry::from_policies(policies(LOAD_V1));
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let failed_once = Arc::new(Mutex::new(HashSet::new()));
    // The first attempt of every 10th request fails: retried, and well under the breaker's
    // threshold.
    let flaky = service_fn(move |x: u32| {
        counter.fetch_add(1, Ordering::SeqCst);
        let fail = x % 10 == 9 && failed_once.lock().unwrap().insert(x);
        async move {
            sleep(Duration::from_millis(3)).await;
            if fail {
                Err::<u32, BoxError>("503".into())
            } else {
                Ok(x)
            }
        }
    });
    let svc: Svc = BoxCloneService::new(registry.get("api").unwrap().layer(flaky));
    let answers = Arc::new(Mutex::new(Vec::new()));

    let mut clients = Vec::new();
    for client in 0..16u32 {
        let svc = svc.clone();
        let answers = Arc::clone(&answers);
        clients.push(tokio::spawn(async move {
            for i in 0..50u32 {
                let id = client * 1000 + i;
                let answer = svc.clone().oneshot(id).await;
                answers
                    .lock()
                    .unwrap()
                    .push((id, answer.map_err(|e| e.to_string())));
                sleep(Duration::from_millis(u64::from(i % 3))).await;
            }
        }));
    }
    let flipper = {
        let registry = registry.clone();
        let v2 = load_v2.clone();
        tokio::spawn(async move {
            let mut reloads = 0;
            for round in 0..40 {
                sleep(Duration::from_millis(7)).await;
                let text = if round % 2 == 0 { v2.as_str() } else { LOAD_V1 };
                let report = registry.reload(policies(text)).unwrap();
                assert_eq!(report.of_kind(ChangeKind::Failed).count(), 0, "{report}");
                reloads += 1;
            }
            reloads
        })
    };
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(flipper.await.unwrap(), 40);

    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), 16 * 50, "every request answered");
    let ids: HashSet<u32> = answers.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 16 * 50, "none answered twice");
    for (id, answer) in answers.iter() {
        assert_eq!(answer.as_ref(), Ok(id), "request {id} got its own answer");
    }
    let breaker = registry
        .handles("api")
        .unwrap()
        .circuit_breaker()
        .unwrap()
        .snapshot();
    assert_eq!(breaker.state, State::Closed);
    assert_eq!(
        breaker.calls, 50,
        "the window kept filling across 40 reloads"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        16 * 50 + 16 * 5,
        "one retry per 10 requests"
    );
}

/// A call started after `reload` returns sees the whole new policy: its retry and its
/// attempt timeout together.
#[tokio::test(start_paused = true)]
async fn a_call_after_a_reload_sees_every_new_layer() {
    let registry = Registry::from_policies(policies(LOAD_V1));
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let hanging: Svc = BoxCloneService::new(registry.get("api").unwrap().layer(service_fn(
        move |_: u32| {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<u32, BoxError>>()
        },
    )));
    let start = Instant::now();
    assert!(hanging.clone().oneshot(1).await.is_err());
    assert_eq!(calls.swap(0, Ordering::SeqCst), 3);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(1502),
        "3 x 500ms + 2 x 1ms"
    );

    registry
        .reload(policies(
            &LOAD_V1
                .replace("max_attempts = 3", "max_attempts = 2")
                .replace("timeout = \"500ms\"", "timeout = \"100ms\""),
        ))
        .unwrap();
    let start = Instant::now();
    assert!(hanging.oneshot(1).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(201),
        "2 x 100ms + 1ms"
    );
}

/// A policy built in code may hold what a file cannot (a backoff made of code): it is
/// listed, never taken for unchanged, and reloaded through the handle.
#[tokio::test(start_paused = true)]
async fn a_code_only_config_is_always_applied() {
    use palisade::policy::Policy;
    let policy = |attempts: u32| {
        Policy::new("code").with_retry(
            RetryConfig::builder()
                .name("code")
                .max_attempts(attempts)
                .backoff(Backoff::from_fn(|| {
                    std::iter::repeat(Duration::from_millis(1))
                }))
                .build()
                .unwrap(),
        )
    };
    assert_eq!(policy(2).layers(), ["retry"]);
    assert_ne!(policy(2), policy(2), "unwritable configs compare unequal");
    let registry = Registry::from_policies([policy(2)].into_iter().collect());
    let report = registry.reload([policy(4)].into_iter().collect()).unwrap();
    assert_eq!(report.updated().count(), 1, "{report}");
    let handles = registry.handles("code").unwrap();
    assert_eq!(handles.retry().unwrap().config().max_attempts(), 4);
}
