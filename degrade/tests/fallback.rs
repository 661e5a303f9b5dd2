//! FallbackLayer against the public API: triggers, sources, failures, marks, switch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{
    BoxError, CircuitOpen, Elapsed, Error, Name, Outcome, Overloaded, Priority, RateLimited,
    RejectionKind, RetriesExhausted, find_rejection,
};
use palisade_degrade::fallback::{FromError, FromRequest, Secondary, Value};
use palisade_degrade::{
    DegradeEvent, FallbackConfig, FallbackFailed, FallbackLayer, Marked, Origin, Switch, Trigger,
    Triggers,
};
use tower::{Layer, Service, ServiceExt, service_fn};

type Res = Marked<&'static str>;

fn rejection(kind: RejectionKind) -> BoxError {
    let name = Name::new("inner");
    match kind {
        RejectionKind::Elapsed => Elapsed::new(name, Duration::from_secs(1)).into(),
        RejectionKind::CircuitOpen => CircuitOpen::new(name, None).into(),
        RejectionKind::RateLimited => RateLimited::new(name, Duration::from_secs(1)).into(),
        RejectionKind::Overloaded => Overloaded::new(name, "queue full").into(),
        RejectionKind::RetriesExhausted => RetriesExhausted::new(name, 3).into(),
    }
}

const KINDS: [RejectionKind; 5] = [
    RejectionKind::Elapsed,
    RejectionKind::CircuitOpen,
    RejectionKind::RateLimited,
    RejectionKind::Overloaded,
    RejectionKind::RetriesExhausted,
];

fn failing(kind: RejectionKind) -> impl Service<u32, Response = Res, Error = BoxError> + Clone {
    service_fn(move |_: u32| async move { Err::<Res, _>(rejection(kind)) })
}

fn config(triggers: Triggers) -> FallbackConfig {
    FallbackConfig::builder()
        .name("fb")
        .triggers(triggers)
        .build()
        .expect("test setup")
}

#[tokio::test(start_paused = true)]
async fn each_rejection_kind_triggers_when_selected_and_passes_through_when_not() {
    for kind in KINDS {
        let on = FallbackLayer::new(
            config(Triggers::none().with(kind, true)),
            Value::new(Marked::new("fb")),
        );
        let answer = on.layer(failing(kind)).oneshot(1).await.unwrap();
        assert_eq!(*answer, "fb");
        let mark = answer.degraded().unwrap();
        assert_eq!(mark.trigger(), Trigger::Rejected(kind));
        assert_eq!(mark.origin(), Origin::Fallback);
        assert_eq!(mark.name().as_str(), "fb");

        let off = FallbackLayer::new(
            config(Triggers::all().with(kind, false)),
            Value::new(Marked::new("fb")),
        );
        let err = off.layer(failing(kind)).oneshot(1).await.unwrap_err();
        assert_eq!(find_rejection(&*err).map(|r| r.kind()), Some(kind));
    }
}

#[tokio::test(start_paused = true)]
async fn service_failures_trigger_unless_only_rejections_do() {
    let boom = service_fn(|_: u32| async { Err::<Res, BoxError>("boom".into()) });
    let layer = FallbackLayer::new(config(Triggers::all()), Value::new(Marked::new("fb")));
    let answer = layer.layer(boom).oneshot(1).await.unwrap();
    assert_eq!(answer.degraded().unwrap().trigger(), Trigger::Failure);

    let layer = FallbackLayer::new(
        config(Triggers::rejections_only()),
        Value::new(Marked::new("fb")),
    );
    assert!(layer.layer(boom).oneshot(1).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_shed_rejection_is_reported_as_shed_with_its_priority() {
    let shed = service_fn(|_: u32| async {
        Err::<Res, BoxError>(
            Overloaded::new(Name::new("s"), "max in-flight")
                .with_priority(Priority::Sheddable)
                .into(),
        )
    });
    let layer = FallbackLayer::new(config(Triggers::all()), Value::new(Marked::new("fb")));
    let answer = layer.layer(shed).oneshot(1).await.unwrap();
    let mark = answer.degraded().unwrap();
    assert!(mark.is_shed());
    assert_eq!(mark.trigger(), Trigger::Shed(Priority::Sheddable));
}

#[tokio::test(start_paused = true)]
async fn a_classifier_turns_failing_responses_into_fallbacks() {
    let status = service_fn(|code: u16| async move { Ok::<_, BoxError>(Marked::new(code)) });
    let classify = |r: &Result<Marked<u16>, BoxError>| match r {
        Ok(code) if **code >= 500 => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    let layer = FallbackLayer::new(config(Triggers::all()), Value::new(Marked::new(200u16)))
        .classifier(classify);
    let mut svc = layer.layer(status);
    let ok = svc.ready().await.unwrap().call(404).await.unwrap();
    assert_eq!((*ok, ok.is_live()), (404, true));
    let replaced = svc.ready().await.unwrap().call(503).await.unwrap();
    assert_eq!(*replaced, 200);
    assert_eq!(replaced.degraded().unwrap().trigger(), Trigger::Failure);
}

#[tokio::test(start_paused = true)]
async fn function_sources_see_the_request_and_the_error() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let source = FromRequest::new(move |req: u32, err: Option<&BoxError>| {
        s.lock()
            .unwrap()
            .push((req, err.map(|e| e.is::<CircuitOpen>())));
        Marked::new("from request")
    });
    let layer = FallbackLayer::new(config(Triggers::all()), source);
    let answer = layer
        .layer(failing(RejectionKind::CircuitOpen))
        .oneshot(9)
        .await
        .unwrap();
    assert_eq!(*answer, "from request");
    assert_eq!(*seen.lock().unwrap(), [(9, Some(true))]);

    let source = FromError::new(|err: Option<&BoxError>| {
        Marked::new(if err.is_some_and(|e| e.is::<Elapsed>()) {
            "slow"
        } else {
            "other"
        })
    });
    let layer = FallbackLayer::new(config(Triggers::all()), source);
    let answer = layer
        .layer(failing(RejectionKind::Elapsed))
        .oneshot(1)
        .await
        .unwrap();
    assert_eq!(*answer, "slow");
}

#[tokio::test(start_paused = true)]
async fn a_secondary_service_answers_and_its_failure_keeps_the_original_as_source() {
    let replica = service_fn(|req: u32| async move {
        Ok::<_, BoxError>(Marked::new(if req == 1 { "replica" } else { "?" }))
    });
    let layer = FallbackLayer::new(config(Triggers::all()), Secondary::new(replica));
    let answer = layer
        .layer(failing(RejectionKind::CircuitOpen))
        .oneshot(1)
        .await
        .unwrap();
    assert_eq!(*answer, "replica");
    assert!(answer.is_degraded());

    let broken = service_fn(|_: u32| async { Err::<Res, BoxError>("replica down".into()) });
    let failures = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&failures);
    let config = FallbackConfig::builder()
        .on_event(move |e| {
            if matches!(
                e,
                DegradeEvent::FallbackFailed {
                    trigger: Trigger::Rejected(RejectionKind::CircuitOpen)
                }
            ) {
                f.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()
        .unwrap();
    let layer = FallbackLayer::new(config, Secondary::new(broken));
    let err = layer
        .layer(failing(RejectionKind::CircuitOpen))
        .oneshot(1)
        .await
        .unwrap_err();
    let failed = err
        .downcast_ref::<FallbackFailed>()
        .expect("a FallbackFailed");
    assert_eq!(failed.fallback().to_string(), "replica down");
    assert!(failed.original().unwrap().is::<CircuitOpen>());
    let source = std::error::Error::source(failed).expect("the original");
    assert!(source.is::<CircuitOpen>());
    // The original rejection stays findable through the chain.
    assert_eq!(
        find_rejection(&*err).map(|r| r.kind()),
        Some(RejectionKind::CircuitOpen)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_fallback_returns_a_live_failure_response_unchanged() {
    let status = service_fn(|code: u16| async move { Ok::<_, BoxError>(Marked::new(code)) });
    let broken = service_fn(|_: u16| async { Err::<Marked<u16>, BoxError>("replica down".into()) });
    let classify = |r: &Result<Marked<u16>, BoxError>| match r {
        Ok(code) if **code >= 500 => Outcome::Failure,
        _ => Outcome::Success,
    };
    let layer =
        FallbackLayer::new(config(Triggers::all()), Secondary::new(broken)).classifier(classify);
    let answer = layer.layer(status).oneshot(503).await.unwrap();
    assert_eq!(*answer, 503);
    assert!(answer.is_live(), "the live answer is not degraded");
}

// ===== palisade_core::Error<E> =====

#[derive(Debug)]
enum AppError {
    Backend,
    Fallback(FallbackFailed),
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("app error")
    }
}

impl std::error::Error for AppError {}

impl From<FallbackFailed> for AppError {
    fn from(f: FallbackFailed) -> Self {
        AppError::Fallback(f)
    }
}

#[tokio::test(start_paused = true)]
async fn works_with_the_typed_error_of_core() {
    let open = service_fn(|_: u32| async {
        Err::<Res, Error<AppError>>(CircuitOpen::new(Name::new("db"), None).into())
    });
    let layer = FallbackLayer::new(config(Triggers::all()), Value::new(Marked::new("fb")));
    let answer = layer.layer(open).oneshot(1).await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().trigger(),
        Trigger::Rejected(RejectionKind::CircuitOpen)
    );

    let backend =
        service_fn(|_: u32| async { Err::<Res, Error<AppError>>(Error::Inner(AppError::Backend)) });
    let broken =
        service_fn(|_: u32| async { Err::<Res, Error<AppError>>(Error::Inner(AppError::Backend)) });
    let layer = FallbackLayer::new(config(Triggers::all()), Secondary::new(broken));
    match layer.layer(backend).oneshot(1).await.unwrap_err() {
        Error::Inner(AppError::Fallback(failed)) => {
            let original = failed.original().expect("the live error");
            assert!(
                original
                    .downcast_ref::<Error<AppError>>()
                    .is_some_and(|e| matches!(e, Error::Inner(AppError::Backend)))
            );
        }
        other => panic!("expected a failed fallback, got {other:?}"),
    }
}

// ===== the manual switch =====

#[tokio::test(start_paused = true)]
async fn the_switch_answers_from_the_fallback_without_calling_the_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let live = service_fn(move |_: u32| {
        c.fetch_add(1, Ordering::Relaxed);
        async { Ok::<_, BoxError>(Marked::new("live")) }
    });
    let switch = Switch::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = Arc::clone(&events);
    let config = FallbackConfig::builder()
        .switch(switch.clone())
        .on_event(move |ev| e.lock().unwrap().push(ev.clone()))
        .build()
        .unwrap();
    let mut svc = FallbackLayer::new(config, Value::new(Marked::new("fb"))).layer(live);

    assert!(svc.ready().await.unwrap().call(1).await.unwrap().is_live());
    switch.degrade();
    let answer = svc.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(*answer, "fb");
    assert!(answer.degraded().unwrap().is_manual());
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "degraded mode does not call the service"
    );
    switch.restore();
    assert!(svc.ready().await.unwrap().call(1).await.unwrap().is_live());
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    assert_eq!(
        *events.lock().unwrap(),
        [
            DegradeEvent::ModeSwitched { degraded: true },
            DegradeEvent::FallbackServed {
                trigger: Trigger::Manual
            },
            DegradeEvent::ModeSwitched { degraded: false },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn degraded_mode_does_not_wait_for_an_unready_service() {
    let (mock, mut handle) = tower_test::mock::pair::<u32, Res>();
    handle.allow(0);
    let layer = FallbackLayer::new(config(Triggers::all()), Value::new(Marked::new("fb")));
    layer.switch().degrade();
    let mut svc = layer.layer(mock);
    let answer = tokio::time::timeout(Duration::from_secs(1), async {
        svc.ready().await.unwrap().call(1).await.unwrap()
    })
    .await
    .expect("answered without the inner service");
    assert!(answer.degraded().unwrap().is_manual());
}
