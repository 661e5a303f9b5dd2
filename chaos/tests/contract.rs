//! tower's contracts: readiness before call, clones share state, both palisade error types.

use std::time::Duration;

use palisade_chaos::{ChaosConfig, ChaosLayer, FaultKind, InjectedFault, Latency};
use palisade_core::{BoxError, Error};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::{assert_request_eq, mock};

fn latency_layer() -> ChaosLayer<&'static str, &'static str, BoxError> {
    let config = ChaosConfig::builder()
        .latency(1.0, Latency::fixed(Duration::from_millis(5)))
        .build()
        .expect("valid");
    ChaosLayer::new(config)
}

#[tokio::test(start_paused = true)]
async fn calls_the_inner_service_only_after_it_is_ready() {
    // tower-test's mock panics if `call` comes before `poll_ready` succeeded.
    let (mut svc, mut handle) = mock::spawn_layer(latency_layer());
    handle.allow(0);
    assert!(
        svc.poll_ready().is_pending(),
        "readiness is the inner service's"
    );
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let answer = tokio::spawn(svc.call("hello"));
    assert_request_eq!(handle, "hello").send_response("world");
    assert_eq!(answer.await.expect("task").expect("ok"), "world");
}

#[tokio::test(start_paused = true)]
async fn injected_faults_keep_the_readied_inner_service_usable() {
    // Errors skip the inner call; the next request must still reach a ready inner service.
    let config = ChaosConfig::builder()
        .injected_error(0.5)
        .build()
        .expect("valid");
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(ChaosLayer::new(config));
    handle.allow(100);
    let mut answered = 0;
    for _ in 0..20 {
        assert!(svc.poll_ready().is_ready());
        let fut = tokio::spawn(svc.call("x"));
        if let Some(Some((req, send))) =
            futures_util::FutureExt::now_or_never(handle.next_request())
        {
            assert_eq!(req, "x");
            send.send_response("y");
        }
        if fut.await.expect("task").is_ok() {
            answered += 1;
        }
    }
    assert!((3..18).contains(&answered), "about half: {answered}");
}

#[tokio::test(start_paused = true)]
async fn clones_share_switch_rates_and_counters() {
    let config = ChaosConfig::builder()
        .injected_error(1.0)
        .build()
        .expect("valid");
    let layer = ChaosLayer::new(config);
    let handle = layer.handle();
    let inner = service_fn(|_: ()| async { Ok::<_, BoxError>(()) });
    let mut a = layer.layer(inner);
    let mut b = a.clone();
    let mut c = layer.clone().layer(inner);

    for svc in [&mut a, &mut b, &mut c] {
        let err = svc
            .ready()
            .await
            .expect("ready")
            .call(())
            .await
            .expect_err("injected");
        assert!(err.is::<InjectedFault>());
    }
    assert_eq!(handle.injected(FaultKind::Error), 3);
    assert_eq!(b.handle().injected(FaultKind::Error), 3);

    a.handle().disable();
    for svc in [&mut a, &mut b, &mut c] {
        svc.ready()
            .await
            .expect("ready")
            .call(())
            .await
            .expect("off");
    }
    handle.enable();
    handle.set_rate(FaultKind::Error, 0.0).expect("valid");
    c.ready()
        .await
        .expect("ready")
        .call(())
        .await
        .expect("rate 0");
}

#[tokio::test(start_paused = true)]
async fn works_with_box_error_and_palisade_error() {
    // BoxError: the built-in InjectedFault.
    let config = ChaosConfig::builder()
        .injected_error(1.0)
        .build()
        .expect("valid");
    let svc =
        ChaosLayer::new(config).layer(service_fn(|n: u8| async move { Ok::<_, BoxError>(n) }));
    let err = svc.oneshot(1).await.expect_err("injected");
    assert!(err.downcast_ref::<InjectedFault>().is_some());

    // palisade_core::Error<E>: the user builds an inner error (the backend "failed").
    let config = ChaosConfig::builder()
        .error(1.0, |_: &u8| {
            Error::Inner(std::io::Error::other("injected"))
        })
        .build()
        .expect("valid");
    let inner = service_fn(|n: u8| async move { Ok::<_, Error<std::io::Error>>(n) });
    let err = ChaosLayer::new(config)
        .layer(inner)
        .oneshot(1)
        .await
        .expect_err("injected");
    assert!(matches!(err, Error::Inner(_)));
    assert!(!err.is_rejection());
}

#[tokio::test(start_paused = true)]
async fn a_readiness_fault_fails_poll_ready_and_the_service_keeps_working() {
    let config = ChaosConfig::builder()
        .fail_readiness(1.0, || BoxError::from("connection reset"))
        .build()
        .expect("valid");
    let layer = ChaosLayer::new(config);
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(7) }));
    assert!(svc.ready().await.is_err());
    assert_eq!(handle.injected(FaultKind::Readiness), 1);
    handle.set_rate(FaultKind::Readiness, 0.0).expect("valid");
    assert_eq!(
        svc.ready()
            .await
            .expect("ready")
            .call(())
            .await
            .expect("ok"),
        7
    );
}
