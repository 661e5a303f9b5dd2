//! tower's service contract: readiness is delegated and respected, clones share state.

use std::time::Duration;

use palisade_core::{BoxError, Elapsed};
use palisade_timeout::{PropagateDeadlineLayer, TimeoutLayer};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::Layer;
use tower_test::{assert_request_eq, mock};

#[tokio::test(start_paused = true)]
async fn readiness_comes_from_the_inner_service() {
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(
        TimeoutLayer::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );

    // The inner service is not ready: neither is the timeout.
    handle.allow(0);
    assert_pending!(svc.poll_ready());

    // Once it is, the call goes through and the response comes back.
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(7);
    assert_request_eq!(handle, 7).send_response(8);
    assert_eq!(fut.await.unwrap(), 8);
}

#[tokio::test(start_paused = true)]
async fn an_unready_inner_service_is_not_timed_out_by_readiness() {
    // Readiness waits are not the call's time: the timeout starts at `call`.
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(
        TimeoutLayer::builder()
            .timeout(Duration::from_millis(10))
            .build()
            .unwrap(),
    );
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(1);
    assert_request_eq!(handle, 1).send_response(2);
    assert_eq!(fut.await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(
        TimeoutLayer::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(1);
    assert_request_eq!(handle, 1).send_error(std::io::Error::other("backend down"));
    let err: BoxError = fut.await.unwrap_err();
    assert!(!err.is::<Elapsed>());
    assert!(err.is::<std::io::Error>());
}

#[tokio::test(start_paused = true)]
async fn propagate_deadline_delegates_readiness() {
    #[derive(Debug, PartialEq)]
    struct Req(Option<palisade_core::Deadline>);
    impl palisade_core::RequestDeadline for Req {
        fn deadline(&self) -> Option<palisade_core::Deadline> {
            self.0
        }
        fn set_deadline(&mut self, d: palisade_core::Deadline) {
            self.0 = Some(d);
        }
    }
    let (mut svc, mut handle) = mock::spawn_layer::<Req, (), _>(PropagateDeadlineLayer::new());
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let _fut = svc.call(Req(None));
    assert_request_eq!(handle, Req(None)).send_response(());
}

#[test]
fn layers_and_services_are_clone_and_debug() {
    let layer = TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let layer_clone = layer.clone();
    let svc = layer.layer(tower::service_fn(|()| async { Ok::<_, BoxError>(()) }));
    let clone = svc.clone();
    assert!(format!("{layer:?}").contains("TimeoutLayer"));
    // Clones of the layer and of the service share the configured timeout.
    svc.handle().set_timeout(Duration::from_millis(5)).unwrap();
    assert_eq!(clone.handle().timeout(), Duration::from_millis(5));
    assert_eq!(layer_clone.handle().timeout(), Duration::from_millis(5));
}
