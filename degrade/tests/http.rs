//! Feature `http`: degraded `http::Response`s carry their mark in the extensions, so the
//! layers fit axum/hyper stacks without changing the response type.
#![cfg(feature = "http")]

use palisade_core::{BoxError, CircuitOpen, Name, RejectionKind};
use palisade_degrade::fallback::FromError;
use palisade_degrade::{Degraded, FallbackConfig, FallbackLayer, Trigger};
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test]
async fn the_mark_is_an_extensions_entry() {
    let open = service_fn(|_: http::Request<()>| async {
        Err::<http::Response<String>, BoxError>(CircuitOpen::new(Name::new("api"), None).into())
    });
    let source = FromError::new(|_: Option<&BoxError>| {
        let mut res = http::Response::new("maintenance page".to_string());
        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        res
    });
    let svc = FallbackLayer::new(FallbackConfig::default(), source).layer(open);
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    let mark = res.extensions().get::<Degraded>().expect("marked");
    assert_eq!(
        mark.trigger(),
        Trigger::Rejected(RejectionKind::CircuitOpen)
    );

    let live = service_fn(|_: http::Request<()>| async {
        Ok::<_, BoxError>(http::Response::new(String::new()))
    });
    let source = FromError::new(|_: Option<&BoxError>| http::Response::new(String::new()));
    let svc = FallbackLayer::new(FallbackConfig::default(), source).layer(live);
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    assert!(
        res.extensions().get::<Degraded>().is_none(),
        "live answers carry no mark"
    );
}
