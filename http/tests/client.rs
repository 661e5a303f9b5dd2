//! End to end: a real hyper client wrapped in palisade layers, against a real axum server.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use common::{Hits, hyper_client, serve};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use palisade_circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerLayer, KeyedCircuitBreakerLayer,
};
use palisade_core::{BoxError, CircuitOpen, Deadline, Elapsed, RequestDeadline};
use palisade_http::key::{ClientIp, HostKey};
use palisade_http::{
    BoxErrorLayer, HttpClassifier, IncomingDeadlineLayer, RejectionResponseLayer,
    SendDeadlineLayer, clone_request, retry_after,
};
use palisade_rate_limit::RateLimitLayer;
use palisade_retry::{Backoff, Jitter, RetryLayer};
use palisade_timeout::TimeoutLayer;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

const PATIENCE: Duration = Duration::from_secs(10);

/// A server with one route per behaviour, each counting its calls.
struct Backend {
    addr: SocketAddr,
    busy: Hits,
    bad: Hits,
    missing: Hits,
    boom: Hits,
}

async fn backend() -> Backend {
    let (busy, bad, missing, boom) = (
        Hits::default(),
        Hits::default(),
        Hits::default(),
        Hits::default(),
    );
    let answer = |hits: &Hits, status: StatusCode| {
        let hits = hits.clone();
        move || async move {
            hits.hit();
            status
        }
    };
    let long = {
        let hits = busy.clone();
        move || async move {
            hits.hit();
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "5")]).into_response()
        }
    };
    let unavailable = answer(&busy, StatusCode::SERVICE_UNAVAILABLE);
    let app = Router::new()
        .route("/busy", get(unavailable.clone()).post(unavailable))
        .route("/busy-long", get(long))
        .route("/bad", get(answer(&bad, StatusCode::BAD_REQUEST)))
        .route(
            "/boom",
            get(answer(&boom, StatusCode::INTERNAL_SERVER_ERROR)),
        )
        .fallback(answer(&missing, StatusCode::NOT_FOUND));
    let addr = serve(app).await;
    Backend {
        addr,
        busy,
        bad,
        missing,
        boom,
    }
}

/// Retry with fast, jitter-free backoff: the tests count attempts, not delays.
type Hint = fn(&Result<Response<Incoming>, BoxError>) -> Option<Duration>;
type Copy = fn(&Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>>;

fn retry(max_attempts: u32) -> RetryLayer<HttpClassifier, Hint, Copy> {
    RetryLayer::builder()
        .max_attempts(max_attempts)
        .backoff(Backoff::constant(Duration::from_millis(20)).jitter(Jitter::None))
        .no_budget()
        .classifier(HttpClassifier)
        .retry_after(retry_after as Hint)
        .clone_request(clone_request as Copy)
        .build()
        .expect("a valid retry config")
}

async fn send<S>(client: &mut S, req: Request<Full<Bytes>>) -> Result<S::Response, BoxError>
where
    S: Service<Request<Full<Bytes>>, Error = BoxError>,
{
    tokio::time::timeout(PATIENCE, async { client.ready().await?.call(req).await })
        .await
        .expect("answered within the test's patience")
}

#[tokio::test]
async fn retries_503_but_not_400_nor_a_post() {
    let server = backend().await;
    let mut client = ServiceBuilder::new()
        .layer(retry(3))
        .layer(BoxErrorLayer::new())
        .service(hyper_client());

    let res = send(&mut client, common::get(server.addr, "/busy"))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the last attempt's answer"
    );
    assert_eq!(server.busy.get(), 3, "503 is retried up to max_attempts");

    let res = send(&mut client, common::get(server.addr, "/bad"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        server.bad.get(),
        1,
        "400 is the caller's problem: not retried"
    );

    let post = common::request("POST", server.addr, "/busy");
    send(&mut client, post).await.unwrap();
    assert_eq!(server.busy.get(), 4, "a POST is sent once");

    let mut keyed = common::request("POST", server.addr, "/busy");
    keyed
        .headers_mut()
        .insert("idempotency-key", "order-17".parse().unwrap());
    send(&mut client, keyed).await.unwrap();
    assert_eq!(
        server.busy.get(),
        7,
        "a POST with an Idempotency-Key is retried"
    );
}

#[tokio::test]
async fn retries_stop_at_the_deadline() {
    let server = backend().await;
    let mut client = ServiceBuilder::new()
        .layer(
            TimeoutLayer::builder()
                .timeout(Duration::from_millis(300))
                .build()
                .unwrap(),
        )
        .layer(retry(100))
        .layer(BoxErrorLayer::new())
        .service(hyper_client());

    let started = Instant::now();
    let result = send(&mut client, common::get(server.addr, "/busy")).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1000), "{took:?}");
    // The retry gives up before the deadline with the last 503, or the timeout cancels the
    // attempt in flight; either way well short of 100 attempts.
    match result {
        Ok(res) => assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE),
        Err(err) => assert!(err.is::<Elapsed>(), "{err}"),
    }
    let attempts = server.busy.get();
    assert!(
        (1..=16).contains(&attempts),
        "{attempts} attempts in 300ms at 20ms apart"
    );

    // A Retry-After longer than the time left ends the retries at once.
    let started = Instant::now();
    let res = send(&mut client, common::get(server.addr, "/busy-long"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        server.busy.get(),
        attempts + 1,
        "not retried: 5s would pass the deadline"
    );
}

#[tokio::test]
async fn the_breaker_opens_on_5xx_and_not_on_404() {
    let server = backend().await;
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .build()
        .unwrap()
        .classifier(HttpClassifier);
    let mut client = ServiceBuilder::new()
        .layer(breaker)
        .layer(BoxErrorLayer::new())
        .service(hyper_client());

    for _ in 0..10 {
        let res = send(&mut client, common::get(server.addr, "/missing"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(server.missing.get(), 10, "404s do not open the breaker");

    for _ in 0..3 {
        let res = send(&mut client, common::get(server.addr, "/boom"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let err = send(&mut client, common::get(server.addr, "/boom"))
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert_eq!(
        server.boom.get(),
        3,
        "the open breaker kept the 4th call local"
    );
}

#[tokio::test]
async fn a_client_honours_the_servers_retry_after() {
    let hits = Hits::default();
    let h = hits.clone();
    let limit = RateLimitLayer::builder(1, Duration::from_secs(1))
        .build()
        .unwrap()
        .key_by(
            ClientIp::peer()
                .peer_addr_from(|c: &ConnectInfo<SocketAddr>| c.0)
                .key_fn(),
        );
    let app = Router::new()
        .route(
            "/",
            get(move || async move {
                h.hit();
                "ok"
            }),
        )
        .layer(RejectionResponseLayer::default().around(ServiceBuilder::new().layer(limit)));
    let addr = serve(app).await;
    let mut client = ServiceBuilder::new()
        .layer(retry(3))
        .layer(BoxErrorLayer::new())
        .service(hyper_client());

    let first = send(&mut client, common::get(addr, "/")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // The quota is used: the server answers 429 + Retry-After: 1; the client waits that
    // long (not its 20ms backoff) and the retry gets in.
    let started = Instant::now();
    let second = send(&mut client, common::get(addr, "/")).await.unwrap();
    let took = started.elapsed();
    assert_eq!(second.status(), StatusCode::OK);
    assert!(took >= Duration::from_secs(1), "waited {took:?}");
    assert!(took < Duration::from_secs(3), "waited {took:?}");
    assert_eq!(hits.get(), 2);
}

#[tokio::test]
async fn the_remaining_deadline_travels_upstream() {
    let app = Router::new()
        .route(
            "/echo",
            get(|headers: HeaderMap| async move {
                let left = Deadline::current().map_or(0, |d| d.remaining().as_millis());
                let sent = headers
                    .get("grpc-timeout")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                format!("{sent} {left}")
            }),
        )
        .layer(
            RejectionResponseLayer::default()
                .around(ServiceBuilder::new().layer(IncomingDeadlineLayer::grpc())),
        );
    let addr = serve(app).await;
    let mut client = ServiceBuilder::new()
        .layer(SendDeadlineLayer::grpc())
        .layer(BoxErrorLayer::new())
        .service(hyper_client());

    let mut req = common::get(addr, "/echo");
    req.set_deadline(Deadline::after(Duration::from_millis(800)));
    let res = send(&mut client, req).await.unwrap();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = std::str::from_utf8(&body).unwrap();
    let (sent, left) = body.split_once(' ').unwrap();
    let sent = palisade_http::deadline::parse_grpc_timeout(sent).expect("grpc-timeout sent");
    let left: u64 = left.parse().unwrap();
    assert!(
        sent <= Duration::from_millis(800) && sent > Duration::from_millis(500),
        "{sent:?}"
    );
    assert!(left <= 800 && left > 400, "the handler had {left}ms");
}

#[tokio::test]
async fn a_keyed_breaker_opens_only_for_the_failing_host() {
    let (sick, healthy) = (backend().await, backend().await);
    let config = CircuitBreakerConfig::builder()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let breakers =
        KeyedCircuitBreakerLayer::new(config, HostKey.key_fn()).classifier(HttpClassifier);
    let handle = breakers.handle();
    let mut client = ServiceBuilder::new()
        .layer(breakers)
        .layer(BoxErrorLayer::new())
        .service(hyper_client());

    for _ in 0..2 {
        let res = send(&mut client, common::get(sick.addr, "/boom"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let err = send(&mut client, common::get(sick.addr, "/items"))
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    let res = send(&mut client, common::get(healthy.addr, "/missing"))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "the other host's breaker is closed"
    );
    assert_eq!(handle.len(), 2, "one breaker per host");
    assert_eq!(
        sick.missing.get(),
        0,
        "the open breaker kept the call local"
    );
}

#[tokio::test]
async fn streamed_bodies_are_buffered_and_retried() {
    use http_body_util::BodyExt;
    use http_body_util::combinators::UnsyncBoxBody;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Bytes>::new()));
    let s = std::sync::Arc::clone(&seen);
    let app = Router::new().route(
        "/doc",
        axum::routing::put(move |body: Bytes| async move {
            let mut seen = s.lock().unwrap();
            seen.push(body);
            if seen.len() == 1 {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            }
        }),
    );
    let addr = serve(app).await;
    let mut client = ServiceBuilder::new()
        .layer(palisade_http::BufferRequestBodyLayer::new(1 << 20))
        .layer(retry(3))
        .layer(BoxErrorLayer::new())
        .service(hyper_client());

    // A body that can be read only once, as a gateway receives it.
    let streamed = Full::new(Bytes::from("v2 of the document"))
        .map_err(|never| -> BoxError { match never {} })
        .boxed_unsync();
    let req = Request::put(format!("http://{addr}/doc"))
        .body(streamed)
        .unwrap();
    let ready = ServiceExt::<Request<UnsyncBoxBody<Bytes, BoxError>>>::ready(&mut client);
    let res = tokio::time::timeout(PATIENCE, ready.await.unwrap().call(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "the 503 was retried with the same body");
    assert!(seen.iter().all(|b| b == "v2 of the document"));
}
