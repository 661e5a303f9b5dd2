//! End to end: palisade layers on a real axum server, called over loopback.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use common::{Hits, hyper_client, serve};
use http::{HeaderName, StatusCode};
use palisade_core::{Deadline, Priority, RejectionKind};
use palisade_degrade::{ShedConfig, ShedLayer};
use palisade_http::key::ClientIp;
use palisade_http::{
    Cause, IncomingDeadlineLayer, PriorityFrom, RejectionResponseConfig, RejectionResponseLayer,
};
use palisade_rate_limit::RateLimitLayer;
use palisade_timeout::TimeoutLayer;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

/// The bound on any one test's wait for the server.
const PATIENCE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_keyed_limit_answers_429_with_its_hints() {
    let hits = Hits::default();
    let h = hits.clone();
    let limit = RateLimitLayer::builder(1, Duration::from_secs(2))
        .name("per-ip")
        .build()
        .unwrap()
        .key_by(
            ClientIp::peer()
                .peer_addr_from(|c: &ConnectInfo<SocketAddr>| c.0)
                .key_fn(),
        );
    let responses = RejectionResponseConfig::builder()
        .rate_limit_policy(
            "per-ip",
            palisade_http::headers::RateLimitPolicy::new(1, Duration::from_secs(2)),
        )
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/",
            get(move || async move {
                h.hit();
                "ok"
            }),
        )
        .layer(RejectionResponseLayer::new(responses).around(ServiceBuilder::new().layer(limit)));
    let addr = serve(app).await;
    let client = hyper_client();

    let first = client.request(common::get(addr, "/")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = client.request(common::get(addr, "/")).await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = second.headers();
    assert_eq!(
        h["retry-after"], "2",
        "1 per 2s, just used: about 2s to wait, rounded up"
    );
    assert_eq!(h["ratelimit"], r#""per-ip";r=0;t=2"#);
    assert_eq!(h["ratelimit-policy"], r#""per-ip";q=1;w=2"#);
    assert_eq!(
        hits.get(),
        1,
        "the rejected request never reached the handler"
    );
}

#[tokio::test]
async fn shedding_answers_503_to_sheddable_routes_only() {
    let overloaded = Arc::new(AtomicBool::new(false));
    let signal = Arc::clone(&overloaded);
    let shed = ShedLayer::new(
        ShedConfig::builder()
            .overloaded_when(move || signal.load(Ordering::SeqCst))
            .build()
            .unwrap(),
    )
    .prioritize(
        PriorityFrom::new()
            .header(HeaderName::from_static("x-priority"))
            .route("/checkout", Priority::Critical)
            .fallback(Priority::Sheddable)
            .priority_fn(),
    );
    let app = Router::new()
        .route("/checkout", get(|| async { "paid" }))
        .route("/report", get(|| async { "report" }))
        .layer(RejectionResponseLayer::default().around(ServiceBuilder::new().layer(shed)));
    let addr = serve(app).await;
    let client = hyper_client();

    let status = |path: &'static str| {
        let client = client.clone();
        async move { client.request(common::get(addr, path)).await.unwrap() }
    };
    assert_eq!(status("/report").await.status(), StatusCode::OK);
    overloaded.store(true, Ordering::SeqCst);
    let shed = status("/report").await;
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(status("/checkout").await.status(), StatusCode::OK);

    let mut critical = common::get(addr, "/report");
    critical
        .headers_mut()
        .insert("x-priority", "critical".parse().unwrap());
    assert_eq!(
        client.request(critical).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_hung_handler_gets_504_within_its_budget() {
    let app = Router::new()
        .route("/hang", get(std::future::pending::<&'static str>))
        .layer(
            RejectionResponseLayer::default().around(
                ServiceBuilder::new().layer(
                    TimeoutLayer::builder()
                        .timeout(Duration::from_millis(200))
                        .build()
                        .unwrap(),
                ),
            ),
        );
    let addr = serve(app).await;
    let started = Instant::now();
    let response =
        tokio::time::timeout(PATIENCE, hyper_client().request(common::get(addr, "/hang")))
            .await
            .expect("answered within the test's patience")
            .unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn the_servers_own_request_timeout_is_408() {
    let request_timeout = TimeoutLayer::builder()
        .name("request")
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let responses = RejectionResponseConfig::builder()
        .request_timeout("request")
        .body(Cause::RequestTimeout, "too slow")
        .build()
        .unwrap();
    let app = Router::new()
        .route("/hang", get(std::future::pending::<&'static str>))
        .layer(
            RejectionResponseLayer::new(responses)
                .around(ServiceBuilder::new().layer(request_timeout)),
        );
    // Driven in process: the same service, no socket needed to check the mapping.
    let mut svc = app.into_service::<axum::body::Body>();
    let req = http::Request::get("/hang")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        palisade_http::rejection_kind(&response),
        Some(RejectionKind::Elapsed)
    );
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(&body[..], b"too slow");
}

#[tokio::test]
async fn the_callers_deadline_bounds_the_handler() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let s = Arc::clone(&seen);
    let app = Router::new()
        .route(
            "/slow",
            get(move || async move {
                *s.lock().unwrap() = Deadline::current().map(Deadline::remaining);
                tokio::time::sleep(Duration::from_secs(30)).await;
                "done"
            }),
        )
        .layer(
            RejectionResponseLayer::default()
                .around(ServiceBuilder::new().layer(IncomingDeadlineLayer::grpc())),
        );
    let addr = serve(app).await;
    let mut req = common::get(addr, "/slow");
    req.headers_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let started = Instant::now();
    let response = tokio::time::timeout(PATIENCE, hyper_client().request(req))
        .await
        .expect("answered within the test's patience")
        .unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let left = seen
        .lock()
        .unwrap()
        .expect("the handler saw the caller's deadline");
    assert!(left <= Duration::from_millis(300), "{left:?}");
}
