//! tower's contract for the deadline layers: readiness is the inner service's, a request is
//! passed through once, clones share nothing that matters. Timing on paused tokio time.

use std::time::Duration;

use http::Request;
use palisade_core::{BoxError, Deadline, Elapsed, RequestDeadline};
use palisade_http::{IncomingDeadlineLayer, SendDeadlineLayer};
use tokio::time::Instant;
use tower_test::mock;

#[tokio::test(start_paused = true)]
async fn incoming_deadline_delegates_readiness_and_stores_the_deadline() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, (), _>(IncomingDeadlineLayer::grpc().name("caller"));
    handle.allow(0);
    assert!(svc.poll_ready().is_pending());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());

    let req = Request::builder()
        .header("grpc-timeout", "2S")
        .body(())
        .unwrap();
    let started = Instant::now();
    let response = svc.call(req);
    let (req, send) = handle.next_request().await.unwrap();
    let deadline = req
        .deadline()
        .expect("the caller's deadline is on the request");
    assert_eq!(deadline.instant(), started + Duration::from_secs(2));
    send.send_response(());
    response.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn incoming_deadline_cancels_at_the_callers_deadline() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, (), _>(IncomingDeadlineLayer::grpc().name("caller"));
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let req = Request::builder()
        .header("grpc-timeout", "250m")
        .body(())
        .unwrap();
    let started = Instant::now();
    let response = svc.call(req);
    let (_req, _send) = handle.next_request().await.unwrap(); // never answered
    let err: BoxError = response.await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    let elapsed = err.downcast_ref::<Elapsed>().unwrap();
    assert_eq!(elapsed.name().as_str(), "caller");
    assert_eq!(elapsed.timeout(), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn an_earlier_deadline_on_the_request_wins() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, (), _>(IncomingDeadlineLayer::grpc());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let mut req = Request::builder()
        .header("grpc-timeout", "10S")
        .body(())
        .unwrap();
    let earlier = Deadline::after(Duration::from_secs(1));
    req.set_deadline(earlier);
    let response = svc.call(req);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.deadline(), Some(earlier));
    send.send_response(());
    response.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn send_deadline_writes_what_is_left_when_the_attempt_leaves() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, (), _>(SendDeadlineLayer::grpc());
    handle.allow(0);
    assert!(svc.poll_ready().is_pending());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());

    let mut req = Request::new(());
    req.set_deadline(Deadline::after(Duration::from_secs(2)));
    tokio::time::advance(Duration::from_millis(500)).await;
    let response = svc.call(req);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.headers()["grpc-timeout"], "1500000u");
    send.send_response(());
    response.await.unwrap();

    // A caller's header is replaced, not duplicated.
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let mut req = Request::builder()
        .header("grpc-timeout", "1H")
        .body(())
        .unwrap();
    req.set_deadline(Deadline::after(Duration::from_millis(10)));
    let response = svc.call(req);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.headers().get_all("grpc-timeout").iter().count(), 1);
    assert_eq!(req.headers()["grpc-timeout"], "10000000n");
    send.send_response(());
    response.await.unwrap();
}
