//! The adaptive limit under `HttpLoadSignal`: a server's `503` shrinks the limit, a `500`
//! or a connection error does not (they say nothing about load).

use http::{Response, StatusCode};
use palisade_core::BoxError;
use palisade_http::HttpLoadSignal;
use palisade_rate_limit::{AdaptiveLimitLayer, Aimd};
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn only_the_servers_overload_answers_shrink_the_limit() {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::new())
        .initial_limit(10)
        .build()
        .unwrap()
        .classifier(HttpLoadSignal);
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|code: u16| async move {
        if code == 0 {
            return Err::<Response<()>, BoxError>("connection reset".into());
        }
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::from_u16(code).unwrap();
        Ok(res)
    }));
    for code in [200, 500, 404, 0] {
        let _ = svc.clone().oneshot(code).await;
    }
    assert_eq!(handle.limit(), 10, "no overload said");
    svc.clone().oneshot(503).await.unwrap();
    assert_eq!(handle.limit(), 8, "a 503: 10 × 0.8");
}
