//! Policies as data: round trips of every layer's config in every format, every kind of
//! validation error with its full path, environment overrides, and the stack a policy
//! builds (order and hooks by slot name).
#![cfg(feature = "policy")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade::policy::{Format, LAYERS, Policies, Policy};
use palisade::prelude::*;
use palisade::{RejectionKind, find_rejection};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

/// Every slot, every value off its default, durations below a millisecond.
const FULL: &str = r#"
[policies.payments.timeout]
timeout = "1500us"

[policies.payments.retry]
max_attempts = 4
max_elapsed = "2500us"
backoff = { kind = "exponential", base = "250us", factor = 3.0, max_delay = "750ms", jitter = "equal" }
budget = { kind = "tps", ttl = "5s", min_per_sec = 2, ratio = 0.25 }
seed = 7

[policies.payments.circuit_breaker]
window = { kind = "time", duration = "30s", buckets = 10 }
failure_rate_threshold = 25.5
slow_call_rate_threshold = 80.0
slow_call_duration = "900us"
minimum_calls = 7
open_duration = "1500ms"
open_duration_multiplier = 2.0
max_open_duration = "1m"
half_open_probes = 3
max_probe_duration = "10s"

[policies.payments.rate_limit]
cells = 50
period = "1s"
burst = 10
max_wait = "20ms"
ramp = "5s"

[policies.payments.concurrency_limit]
max_in_flight = 8
max_wait = "5ms"
max_queue = 16

[policies.payments.adaptive_limit]
algorithm = { aimd = { backoff_ratio = 0.8, latency_threshold = "300us" } }
initial_limit = 10
min_limit = 2
max_limit = 40

[policies.payments.attempt_timeout]
name = "payments-try"
timeout = "333us"

[policies.search.timeout]
timeout = "2s"
"#;

#[test]
fn a_full_file_round_trips_through_every_format() {
    let policies = Policies::from_toml(FULL).unwrap();
    let payments = &policies["payments"];
    assert_eq!(payments.layers(), LAYERS.to_vec());
    assert_eq!(
        payments.timeout().unwrap().timeout(),
        Duration::from_micros(1500)
    );
    assert_eq!(payments.timeout().unwrap().name().as_str(), "payments");
    assert_eq!(
        payments.attempt_timeout().unwrap().timeout(),
        Duration::from_micros(333)
    );
    assert_eq!(
        payments.circuit_breaker().unwrap().slow_call_duration(),
        Some(Duration::from_micros(900))
    );
    assert_eq!(payments.retry().unwrap().max_attempts(), 4);

    let toml_text = toml::to_string(&policies).unwrap();
    assert!(toml_text.contains("\"1500us\""), "{toml_text}");
    assert_eq!(Policies::from_toml(&toml_text).unwrap(), policies);

    let json = serde_json::to_string_pretty(&policies).unwrap();
    assert_eq!(Policies::from_json(&json).unwrap(), policies);
    // serde's own entry point validates the same way
    assert_eq!(toml::from_str::<Policies>(&toml_text).unwrap(), policies);

    #[cfg(feature = "yaml")]
    {
        let yaml = r#"
policies:
  payments:
    timeout: { timeout: "1500us" }
    attempt_timeout: { name: payments-try, timeout: "333us" }
"#;
        let from_yaml = Policies::from_yaml(yaml).unwrap();
        assert_eq!(
            from_yaml["payments"].attempt_timeout(),
            policies["payments"].attempt_timeout()
        );
        assert_eq!(
            from_yaml["payments"].timeout(),
            policies["payments"].timeout()
        );
    }
}

#[test]
fn a_policy_built_in_code_round_trips() {
    let policy = Policy::new("inventory")
        .with_timeout(
            TimeoutConfig::builder()
                .name("inventory")
                .timeout(Duration::from_nanos(1_500))
                .build()
                .unwrap(),
        )
        .with_retry(
            RetryConfig::builder()
                .name("inventory")
                .max_attempts(2)
                .max_elapsed(Duration::from_micros(10))
                .build()
                .unwrap(),
        )
        .with_rate_limit(
            RateLimitConfig::builder(3, Duration::from_micros(900))
                .name("inventory")
                .build()
                .unwrap(),
        );
    let policies: Policies = [policy.clone()].into_iter().collect();
    let text = toml::to_string(&policies).unwrap();
    assert!(text.contains("\"1500ns\""), "{text}");
    let back = Policies::from_toml(&text).unwrap();
    assert_eq!(back["inventory"], policy);
    assert_ne!(
        back["inventory"],
        policy.with_timeout(TimeoutConfig::default()),
        "a changed layer is another policy"
    );
}

/// One bad value per line of the table: its path, and a word of its message.
#[test]
fn every_kind_of_error_names_its_full_path() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[policies.p.retry]\nmax_attempts = 0",
            "policies.p.retry.max_attempts",
            "0 is not allowed (1 to 100",
        ),
        (
            "[policies.p.retry]\nbudget = { kind = \"tps\", ttl = \"10s\", min_per_sec = 5, ratio = 7.0 }",
            "policies.p.retry.budget.ratio",
            "7.0 is not allowed",
        ),
        (
            "[policies.p.retry]\nmax_attempt = 3",
            "policies.p.retry.max_attempt",
            "unknown field",
        ),
        (
            "[policies.p.timeout]\ntimeout = 250",
            "policies.p.timeout.timeout",
            "\"250ms\"",
        ),
        (
            "[policies.p.timeout]\ntimeout = \"soon\"",
            "policies.p.timeout.timeout",
            "not a duration",
        ),
        (
            "[policies.p.attempt_timeout]\ntimeout = 1.5",
            "policies.p.attempt_timeout.timeout",
            "bare number",
        ),
        (
            "[policies.p.circuit_breaker]\nfailure_rate_threshold = 150.0",
            "policies.p.circuit_breaker.failure_rate_threshold",
            "150.0 is not allowed",
        ),
        (
            "[policies.p.circuit_breaker]\nwindow = { kind = \"count\", size = 0 }",
            "policies.p.circuit_breaker.window.size",
            "0 is not allowed",
        ),
        (
            "[policies.p.rate_limit]\ncells = 0\nperiod = \"1s\"",
            "policies.p.rate_limit.cells",
            "0 is not allowed",
        ),
        (
            "[policies.p.rate_limit]\ncells = 10\nperiod = 1",
            "policies.p.rate_limit.period",
            "bare number",
        ),
        (
            "[policies.p.concurrency_limit]\nmax_in_flight = 0",
            "policies.p.concurrency_limit.max_in_flight",
            "0 is not allowed",
        ),
        (
            "[policies.p.adaptive_limit]\nmin_limit = 0",
            "policies.p.adaptive_limit.min_limit",
            "0 is not allowed",
        ),
        (
            "[policies.p.adaptive_limit]\nalgorithm = { aimd = { backoff_ratio = 5.0 } }",
            "policies.p.adaptive_limit.algorithm.aimd.backoff_ratio",
            "5.0 is not allowed",
        ),
        (
            "[policies.p.timeout]\nname = \"\"",
            "policies.p.timeout.name",
            "\"\" is not allowed",
        ),
        (
            "[policies.p.retyr]\nmax_attempts = 3",
            "policies.p.retyr",
            "unknown layer",
        ),
        (
            "[policies.p]\ntimeout = \"2s\"",
            "policies.p.timeout",
            "expected a table",
        ),
        ("policies = 3", "policies", "expected a table of policies"),
        (
            "[policy.p.timeout]\ntimeout = \"2s\"",
            "policy",
            "unknown key",
        ),
        ("[policies.p.timeout\ntimeout = \"2s\"", "", "invalid TOML"),
    ];
    for (file, path, message) in cases {
        let errors = Policies::from_toml(file).expect_err(file);
        let error = errors.iter().next().unwrap();
        assert_eq!(error.path(), *path, "{file}: {errors}");
        assert!(error.to_string().contains(message), "{file}: {error}");
    }

    // Out-of-range values carry the value and the range apart, too.
    let errors = Policies::from_toml("[policies.p.retry]\nmax_attempts = 0").unwrap_err();
    let error = errors.iter().next().unwrap();
    assert_eq!(error.value(), Some("0"));
    assert!(error.expected().unwrap().starts_with("1 to 100"));

    let errors = Policies::from_json(r#"{ "policies": { "": { } } }"#).unwrap_err();
    assert_eq!(errors.paths(), ["policies."]);
}

#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let errors = Policies::from_toml(
        r#"
        [policies.payments.retry]
        max_attempts = 0
        budget = { kind = "tps", ttl = "10s", min_per_sec = 5, ratio = 7.0 }
        backoff = { kind = "constant", delay = 250 }
        [policies.payments.timeout]
        timeout = 250
        [policies.search.rate_limit]
        cells = 0
        period = "1s"
        [policies.search.circuit_breaker]
        minimum_calls = 0
        window = { kind = "count", size = 0 }
        "#,
    )
    .unwrap_err();
    let mut paths = errors.paths();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "policies.payments.retry.backoff",
            "policies.payments.retry.budget.ratio",
            "policies.payments.retry.max_attempts",
            "policies.payments.timeout.timeout",
            "policies.search.circuit_breaker.minimum_calls",
            "policies.search.circuit_breaker.window.size",
            "policies.search.rate_limit.cells",
        ],
        "{errors}"
    );
    assert!(errors.to_string().starts_with("7 invalid policy values:"));
}

#[test]
fn environment_overrides_change_fields_before_validation() {
    let file = r#"
        [policies.payments-eu.retry]
        max_attempts = 3
        backoff = { kind = "constant", delay = "10ms", jitter = "none" }
        [policies.payments-eu.timeout]
        name = "007"
        timeout = "1s"
    "#;
    let env = [
        ("PALISADE__PAYMENTS_EU__RETRY__MAX_ATTEMPTS", "5"),
        ("PALISADE__PAYMENTS_EU__RETRY__BACKOFF__DELAY", "20ms"),
        ("palisade__ignored", "lower-case prefix is not ours"),
        ("PALISADE__payments_eu__Timeout__Timeout", "250ms"),
        ("PALISADE__PAYMENTS_EU__ATTEMPT_TIMEOUT__TIMEOUT", "50ms"),
        ("PALISADE__PAYMENTS_EU__TIMEOUT__NAME", "\"008\""),
        ("PATH", "/usr/bin"),
    ];
    let policies = Policies::load(Format::Toml, file, env).unwrap();
    let p = &policies["payments-eu"];
    assert_eq!(p.retry().unwrap().max_attempts(), 5);
    let backoff = serde_json::to_value(p.retry().unwrap().backoff()).unwrap();
    assert_eq!(backoff["delay"], "20ms", "{backoff}");
    assert_eq!(p.timeout().unwrap().timeout(), Duration::from_millis(250));
    assert_eq!(
        p.timeout().unwrap().name().as_str(),
        "008",
        "a JSON string stays a string"
    );
    assert_eq!(
        p.attempt_timeout().unwrap().timeout(),
        Duration::from_millis(50),
        "an override can add a layer"
    );
    assert_eq!(
        p.attempt_timeout().unwrap().name().as_str(),
        "payments-eu-attempt"
    );

    // Bad overrides are reported like bad file values, naming the variable.
    let env = [
        ("PALISADE__PAYMENTS_EU__RETRY__MAX_ATTEMPTS", "0"),
        ("PALISADE__PAYMENTS_EU__TIMEOUT__TIMEOUT", "250"),
        ("PALISADE__PAYMNETS__RETRY__MAX_ATTEMPTS", "2"),
        ("PALISADE__PAYMENTS_EU__RETYR__MAX_ATTEMPTS", "2"),
        ("PALISADE__PAYMENTS_EU", "1"),
    ];
    let errors = Policies::load(Format::Toml, file, env).unwrap_err();
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let expect = [
        "policies.payments-eu.retry.max_attempts: 0 is not allowed",
        "(set by PALISADE__PAYMENTS_EU__RETRY__MAX_ATTEMPTS)",
        "policies.payments-eu.timeout.timeout: 250 is a bare number",
        "policies.paymnets: no policy of that name",
        "policies.payments-eu.retyr: unknown layer",
        "PALISADE__PAYMENTS_EU: expected PALISADE__<POLICY>__<LAYER>__<FIELD>",
    ];
    for needle in expect {
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "{needle} in {errors}"
        );
    }
    assert_eq!(errors.len(), 5, "{errors}");
    let attempts = errors
        .iter()
        .find(|e| e.path() == "policies.payments-eu.retry.max_attempts")
        .unwrap();
    assert_eq!(
        attempts.env_var(),
        Some("PALISADE__PAYMENTS_EU__RETRY__MAX_ATTEMPTS")
    );
}

#[test]
fn files_load_by_extension() {
    let dir = std::env::temp_dir().join(format!("palisade-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml_path = dir.join("policies.toml");
    std::fs::write(&toml_path, "[policies.a.timeout]\ntimeout = \"2s\"\n").unwrap();
    let json_path = dir.join("policies.json");
    std::fs::write(
        &json_path,
        r#"{"policies":{"a":{"timeout":{"timeout":"2s"}}}}"#,
    )
    .unwrap();
    let none = std::iter::empty::<(String, String)>;
    assert_eq!(
        Policies::from_path(&toml_path, none()).unwrap(),
        Policies::from_path(&json_path, none()).unwrap()
    );
    let err = Policies::from_path(dir.join("policies.ini"), none()).unwrap_err();
    assert!(err.to_string().contains("extension"), "{err}");
    let err = Policies::from_path(dir.join("missing.toml"), none()).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A backend that hangs on every call and counts them.
fn hanging(
    calls: Arc<AtomicU32>,
) -> impl tower::Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            std::future::pending::<()>().await;
            Ok::<u32, BoxError>(0)
        }
    })
}

/// The stack applies the recommended order: the attempt timeout inside retry (each attempt
/// is timed out and retried), the overall timeout outside it (bounding all attempts).
#[tokio::test(start_paused = true)]
async fn the_stack_applies_the_recommended_order() {
    let file = |overall: &str| {
        format!(
            r#"
            [policies.p.attempt_timeout]
            timeout = "100ms"
            [policies.p.retry]
            max_attempts = 3
            backoff = {{ kind = "constant", delay = "1ms", jitter = "none" }}
            budget = {{ kind = "none" }}
            [policies.p.timeout]
            timeout = "{overall}"
            "#
        )
    };
    let calls = Arc::new(AtomicU32::new(0));
    let policies = Policies::from_toml(&file("1s")).unwrap();
    let svc = policies["p"].layer().layer(hanging(Arc::clone(&calls)));
    let start = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "every attempt timed out and was retried"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(302));
    assert!(find_rejection(&*err).is_some(), "{err}");

    calls.store(0, Ordering::SeqCst);
    let policies = Policies::from_toml(&file("150ms")).unwrap();
    let svc = policies["p"].layer().layer(hanging(Arc::clone(&calls)));
    let start = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(150),
        "the overall deadline bounds the retries"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        find_rejection(&*err).map(|r| r.kind()),
        Some(RejectionKind::Elapsed),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn hooks_attach_by_slot_name_and_keep_the_handles() {
    let policies = Policies::from_toml(
        r#"
        [policies.p.circuit_breaker]
        window = { kind = "count", size = 4 }
        minimum_calls = 4
        failure_rate_threshold = 50.0
        open_duration = "10s"
        "#,
    )
    .unwrap();
    let mut retry_hook_called = false;
    let layer = policies["p"]
        .layer()
        .retry(|r| {
            retry_hook_called = true;
            r
        })
        .circuit_breaker(|b| {
            // "404" is the caller's mistake, not the backend's: not a failure.
            b.classifier(|res: &Result<u32, BoxError>| match res {
                Err(e) if e.to_string().contains("404") => Outcome::Ignore,
                Err(_) => Outcome::Failure,
                Ok(_) => Outcome::Success,
            })
        });
    assert!(!retry_hook_called, "no retry slot: its hook is not called");
    let handles = layer.handles().clone();
    let svc = layer.layer(service_fn(|x: u32| async move {
        match x {
            404 => Err::<u32, BoxError>("404 not found".into()),
            500 => Err("500 broken".into()),
            x => Ok(x),
        }
    }));
    for _ in 0..8 {
        let _ = svc.clone().oneshot(404).await;
    }
    let breaker = handles.circuit_breaker().unwrap();
    assert_eq!(
        breaker.state(),
        palisade::circuit_breaker::State::Closed,
        "404s are ignored"
    );
    for _ in 0..4 {
        let _ = svc.clone().oneshot(500).await;
    }
    assert_eq!(breaker.state(), palisade::circuit_breaker::State::Open);
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(
        find_rejection(&*err).map(|r| r.kind()),
        Some(RejectionKind::CircuitOpen)
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_policy_is_the_service_itself() {
    let policies = Policies::from_toml("[policies.plain]\n").unwrap();
    assert!(policies["plain"].layers().is_empty());
    let svc = policies["plain"]
        .layer()
        .layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) }));
    assert_eq!(svc.oneshot(1).await.unwrap(), 2);
    assert!(
        Policies::from_toml("").unwrap().is_empty(),
        "an empty file has no policies"
    );
}
