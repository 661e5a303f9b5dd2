//! Hedging: send another copy of a slow request and take the first good answer.
//!
//! Tail latency is often one slow replica or one lost packet, not a slow backend. After a
//! delay (fixed, or a percentile of recent latencies), the [`Hedge`] service sends one more
//! copy of a request a predicate marks as hedgeable (idempotent!), answers with the first
//! good answer and drops the other copies, which cancels them. Copies are bounded by
//! `max_hedges` and by a [`RetryBudget`](crate::RetryBudget), so hedging cannot double the
//! load when everything is slow: the hedge asks the budget when its timer fires, before it
//! reserves the inner service's readiness (a refused hedge holds no permit), and a
//! token-bucket budget counts each answer's outcome. Shared with a retry layer, one budget
//! bounds retries and hedges together (see
//! [one budget, one deposit](crate::RetryBudget#one-budget-one-deposit)).
//!
//! The default classifier is palisade-core's [`RejectionAware`](palisade_core::RejectionAware):
//! only a success wins while another copy is in flight, so a copy refused by a local limit
//! does not beat the original. A fixed delay of `Duration::MAX` never hedges.
//!
//! # Allocation
//!
//! A request that is not hedged allocates nothing; a hedged copy's future is boxed (one
//! allocation per copy sent). The percentile is recomputed in a buffer allocated once.
//!
//! ```
//! use palisade_retry::hedge::{HedgeConfig, HedgeLayer};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // The first call hangs for a second; copies answer in 10 ms.
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let counter = calls.clone();
//! let backend = tower::service_fn(move |key: u32| {
//!     let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move {
//!         let wait = if n == 0 { 1000 } else { 10 };
//!         tokio::time::sleep(Duration::from_millis(wait)).await;
//!         Ok::<_, palisade_core::BoxError>((key, n))
//!     }
//! });
//! let config = HedgeLayer::builder()
//!     .name("lookup")
//!     .delay(Duration::from_millis(50))
//!     .hedgeable(|key: &u32| *key != 0) // say, key 0 is a write
//!     .build()
//!     .unwrap();
//! let service = ServiceBuilder::new().layer(config).service(backend);
//!
//! let start = tokio::time::Instant::now();
//! let (key, copy) = service.oneshot(7).await.unwrap();
//! assert_eq!((key, copy), (7, 1)); // the hedged copy answered
//! assert_eq!(start.elapsed(), Duration::from_millis(60));
//! # }
//! ```

mod config;
mod future;
mod latency;
mod service;

pub use config::{
    AllRequests, DEFAULT_MAX_HEDGES, HedgeConfig, HedgeConfigBuilder, HedgeDelay,
    HedgeLayerBuilder, Hedgeable,
};
pub use future::ResponseFuture;
pub use service::{Hedge, HedgeHandle, HedgeLayer};
