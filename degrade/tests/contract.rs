//! tower's contracts: `call` only after `poll_ready` on the readied service, and clones
//! share state.

use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Priority};
use palisade_degrade::fallback::Value;
use palisade_degrade::{
    FallbackConfig, FallbackLayer, Marked, ShedConfig, ShedLayer, StaleCacheLayer, StaleConfig,
};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// Answers `Ok` only when `call` follows a successful `poll_ready` on the same instance; a
/// clone starts unready, like any real ready-reserving service. `fail` makes it answer
/// `Err` (after the contract check).
#[derive(Debug, Default)]
struct Strict {
    ready: bool,
    fail: bool,
}

impl Clone for Strict {
    fn clone(&self) -> Self {
        Self {
            ready: false,
            fail: self.fail,
        }
    }
}

impl Service<u32> for Strict {
    type Response = Marked<u32>;
    type Error = BoxError;
    type Future = Ready<Result<Marked<u32>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        assert!(self.ready, "call before poll_ready");
        self.ready = false;
        ready(if self.fail {
            Err("failed".into())
        } else {
            Ok(Marked::new(req))
        })
    }
}

async fn exercise<S>(mut svc: S)
where
    S: Service<u32, Response = Marked<u32>, Error = BoxError> + Clone,
{
    for i in 0..3 {
        let answer = svc
            .ready()
            .await
            .expect("the contract holds")
            .call(i)
            .await
            .expect("the contract holds");
        assert_eq!(*answer, i);
        // A clone of a ready service must be readied itself.
        let answer = svc.clone().oneshot(i).await.expect("the contract holds");
        assert_eq!(*answer, i);
    }
}

#[tokio::test(start_paused = true)]
async fn every_layer_calls_only_the_readied_service() {
    let fallback = FallbackLayer::new(FallbackConfig::default(), Value::new(Marked::new(0)));
    exercise(fallback.layer(Strict::default())).await;
    let stale = StaleCacheLayer::new(StaleConfig::default(), |k: &u32| *k);
    exercise(stale.layer(Strict::default())).await;
    let shed = ShedLayer::new(ShedConfig::builder().max_in_flight(4).build().unwrap());
    exercise(shed.layer(Strict::default())).await;
    let stack = ServiceBuilder::new()
        .layer(fallback)
        .layer(stale)
        .layer(shed)
        .service(Strict::default());
    exercise(stack).await;
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_switch_the_cache_and_the_in_flight_count() {
    // Fallback: flipping one clone's switch degrades all of them.
    let layer = FallbackLayer::new(FallbackConfig::default(), Value::new(Marked::new(0)));
    let a = layer.layer(Strict::default());
    let b = a.clone();
    a.switch().degrade();
    assert!(b.switch().is_degraded());
    assert!(b.oneshot(7).await.unwrap().is_degraded());

    // Stale cache: what one clone stores, another serves.
    let layer = StaleCacheLayer::new(StaleConfig::default(), |k: &u32| *k);
    let a = layer.layer(Strict::default());
    let b = layer.clone().layer(Strict {
        ready: false,
        fail: true,
    });
    a.oneshot(5).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    let stale = b.oneshot(5).await.unwrap();
    assert_eq!(
        stale.degraded().and_then(|m| m.age()),
        Some(Duration::from_secs(1))
    );
    assert_eq!(layer.len(), 1);

    // Shed: in-flight counts are shared; a readied-but-unused clone holds no slot.
    let layer = ShedLayer::new(ShedConfig::builder().max_in_flight(1).build().unwrap())
        .prioritize(|_: &u32| Priority::Critical);
    let mut a = layer.layer(tower::service_fn(|_: u32| {
        std::future::pending::<Result<(), BoxError>>()
    }));
    let mut b = a.clone();
    b.ready().await.unwrap();
    drop(b);
    assert_eq!(layer.in_flight(), 0);
    let pending = a.ready().await.unwrap().call(1);
    assert_eq!(layer.in_flight(), 1);
    let mut c = a.clone();
    assert!(
        c.ready().await.unwrap().call(2).await.is_err(),
        "the clone sees the shared count"
    );
    drop(pending);
    assert_eq!(layer.in_flight(), 0, "a dropped call frees its slot");
}
