//! The rejection-to-response table, cause by cause, and tower's readiness contract.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use palisade_core::{
    BoxError, CircuitOpen, Elapsed, Error, Name, Overloaded, RateLimited, RejectionKind,
    RetriesExhausted,
};
use palisade_http::{
    BoxErrorLayer, Cause, RejectionResponseConfig, RejectionResponseLayer, rejection_kind,
};
use tower::{Layer, ServiceExt, service_fn};
use tower_test::mock;

type Res = Response<Full<Bytes>>;

/// What the layer answers when the service fails with `err`.
async fn answer(layer: &RejectionResponseLayer, err: BoxError) -> Res {
    let mut err = Some(err);
    let svc = layer.layer(service_fn(move |_req: Request<()>| {
        let err = err.take().expect("called once");
        async move { Err::<Res, BoxError>(err) }
    }));
    let response: Result<Res, Infallible> = svc.oneshot(Request::new(())).await;
    response.unwrap()
}

async fn body(res: Res) -> Bytes {
    http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes()
}

fn n(name: &'static str) -> Name {
    Name::from_static(name)
}

#[tokio::test]
async fn each_rejection_has_its_status_and_hints() {
    let layer = RejectionResponseLayer::default();

    let res = answer(
        &layer,
        RateLimited::new(n("api"), Duration::from_millis(1500)).into(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "2");
    assert_eq!(res.headers()["ratelimit"], r#""api";r=0;t=2"#);
    assert!(
        !res.headers().contains_key("ratelimit-policy"),
        "no policy configured"
    );
    assert_eq!(rejection_kind(&res), Some(RejectionKind::RateLimited));
    assert_eq!(body(res).await, "Too Many Requests");

    let res = answer(&layer, Overloaded::new(n("shed"), "queue full").into()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");

    let open = CircuitOpen::new(n("db"), Some(Duration::from_secs(30)));
    let res = answer(&layer, open.into()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "30");
    let forced = CircuitOpen::new(n("db"), None);
    let res = answer(&layer, forced.into()).await;
    assert!(
        !res.headers().contains_key("retry-after"),
        "forced open: no time known"
    );

    let res = answer(
        &layer,
        Elapsed::new(n("upstream"), Duration::from_secs(1)).into(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(!res.headers().contains_key("retry-after"));

    let res = answer(&layer, RetriesExhausted::new(n("r"), 3).into()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    let res = answer(&layer, "database on fire: password=hunter2".into()).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(rejection_kind(&res), None);
    assert_eq!(
        body(res).await,
        "Internal Server Error",
        "internals never leak"
    );
}

#[tokio::test]
async fn statuses_bodies_and_hints_are_configurable() {
    let config = RejectionResponseConfig::builder()
        .status(Cause::Overloaded, StatusCode::TOO_MANY_REQUESTS)
        .overloaded_retry_after(None)
        .body(Cause::Other, r#"{"error":"internal"}"#)
        .content_type(http::HeaderValue::from_static("application/json"))
        .detailed(true)
        .rate_limit_headers(false)
        .request_timeout("request")
        .build()
        .unwrap();
    let layer = RejectionResponseLayer::new(config);

    let res = answer(&layer, Overloaded::new(n("shed"), "queue full").into()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!res.headers().contains_key("retry-after"));
    assert_eq!(
        body(res).await,
        "'shed' is overloaded (queue full); back off and retry later"
    );

    let res = answer(
        &layer,
        RateLimited::new(n("api"), Duration::from_secs(1)).into(),
    )
    .await;
    assert_eq!(res.headers()["retry-after"], "1");
    assert!(!res.headers().contains_key("ratelimit"));

    let res = answer(
        &layer,
        Elapsed::new(n("request"), Duration::from_secs(1)).into(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    let res = answer(
        &layer,
        Elapsed::new(n("upstream"), Duration::from_secs(1)).into(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);

    let res = answer(&layer, "boom".into()).await;
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(body(res).await, r#"{"error":"internal"}"#);
}

#[tokio::test]
async fn typed_errors_work_too() {
    let svc = RejectionResponseLayer::default().layer(service_fn(|_req: Request<()>| async {
        Err::<Res, Error<std::io::Error>>(
            RateLimited::new(n("typed"), Duration::from_secs(3)).into(),
        )
    }));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "3");
}

#[test]
fn refuses_non_error_statuses() {
    for status in [
        StatusCode::OK,
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::CONTINUE,
    ] {
        let err = RejectionResponseConfig::builder()
            .status(Cause::Elapsed, status)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "status.elapsed");
        assert!(err.to_string().contains(status.as_str()), "{err}");
    }
    let err = RejectionResponseConfig::builder()
        .rate_limit_policy(
            "x",
            palisade_http::headers::RateLimitPolicy::new(1, Duration::ZERO),
        )
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "rate_limit_policy.window");
}

// ===== tower's contract =====

#[tokio::test]
async fn readiness_is_delegated_and_a_failed_readiness_is_answered() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, Res, _>(RejectionResponseLayer::default());

    handle.allow(0);
    assert!(
        svc.poll_ready().is_pending(),
        "not ready while the inner service is not"
    );
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let response = svc.call(Request::new(()));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(Full::from("ok")));
    assert_eq!(response.await.unwrap().status(), StatusCode::OK);

    // The inner service fails to become ready: the layer reports ready (its error type is
    // Infallible) and answers the next call without calling the inner service.
    handle.send_error(Overloaded::new(n("inner"), "max in-flight"));
    assert!(matches!(svc.poll_ready(), std::task::Poll::Ready(Ok(()))));
    let res = svc.call(Request::new(())).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn box_errors_keeps_readiness_and_boxes() {
    let (mut svc, mut handle) = mock::spawn_layer::<u8, u8, _>(BoxErrorLayer::new());
    handle.allow(0);
    assert!(svc.poll_ready().is_pending());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let response = svc.call(1);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, 1);
    send.send_error(RateLimited::new(n("x"), Duration::from_secs(1)));
    let err: BoxError = response.await.unwrap_err();
    assert!(err.is::<RateLimited>());
}
