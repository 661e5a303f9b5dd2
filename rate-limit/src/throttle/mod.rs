//! The throttle gate: when an upstream says "slow down", every caller sharing the gate obeys.
//!
//! A per-request `Retry-After` makes one caller wait while the other callers keep sending
//! into the throttle. A [`ThrottleLayer`] reads an upstream's hint from each result (a
//! [`ThrottleHint`](palisade_core::throttle::ThrottleHint): HTTP 429/503 + `Retry-After`,
//! gRPC `RESOURCE_EXHAUSTED`, an error type of your own) and closes for **every** caller that
//! shares it (all clones of the layer) until the hinted instant:
//!
//! - **while closed**, calls are refused at once with [`RateLimited`](palisade_core::RateLimited)
//!   carrying the exact time left (reject mode), or wait for the gate within their own
//!   deadline (wait mode: a call whose deadline comes before the gate opens is refused at
//!   once with the exact `retry_after`, never after waiting its turn);
//! - **when the hinted time is over**, it does not step back to full rate: it admits one call
//!   per hinted interval (a probe), and while the upstream answers without a hint it doubles
//!   the calls admitted per interval up to `ramp_limit`, after which the gate is fully open.
//!   A hint during the ramp closes it again and halves the allowance (AIMD). So the upstream
//!   sees at most one probe per interval while it still throttles, and a gradual return
//!   when it stops.
//!
//! Its refusals are local rejections (`RateLimited`): the default classifier
//! ([`palisade_core::RejectionAware`]) counts them neither as successes nor as failures, so
//! an upstream's throttle does not open a breaker by itself, and a retry above it takes the
//! `retry_after` as its floor. Place it where a limit goes in the recommended order (below
//! the breaker, above the attempt timeout), or directly around the client.
//!
//! Operators (or a classifier of your own) can also close it through its
//! [`ThrottleHandle`]: `throttle_for(d)`, `throttle_until(t)`, `reopen()`.
//!
//! ```
//! use palisade_core::throttle::Throttle;
//! use palisade_core::{BoxError, RateLimited};
//! use palisade_rate_limit::{ThrottleConfig, ThrottleLayer};
//! use std::time::Duration;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // An upstream that answers "429, retry after 2 s" to the first call.
//! let upstream = service_fn(|n: u32| async move {
//!     if n == 0 { Ok::<_, BoxError>(429u16) } else { Ok(200u16) }
//! });
//! let layer = ThrottleLayer::new(ThrottleConfig::builder().name("api").build().unwrap())
//!     .hint(|res: &Result<u16, BoxError>| match res {
//!         Ok(429) => Some(Throttle::For(Duration::from_secs(2))),
//!         _ => None,
//!     });
//! let client = layer.layer(upstream);
//!
//! assert_eq!(client.clone().oneshot(0).await.unwrap(), 429);
//! // every caller is now held back for 2 s, without a call reaching the upstream
//! let err = client.clone().oneshot(1).await.unwrap_err();
//! let limited = err.downcast_ref::<RateLimited>().expect("refused locally");
//! assert_eq!(limited.retry_after(), Duration::from_secs(2));
//! tokio::time::advance(Duration::from_secs(2)).await;
//! assert_eq!(client.oneshot(1).await.unwrap(), 200); // the probe goes through
//! # }
//! ```

mod config;
mod future;
mod handle;
mod layer;
mod state;

pub use config::{ThrottleConfig, ThrottleConfigBuilder, ThrottleMode};
pub use future::ResponseFuture;
pub use handle::{ThrottleHandle, ThrottleSnapshot};
pub use layer::{ThrottleLayer, Throttled};
pub use state::{CLOSED, METRICS, REFUSED, RESTRICTED, ThrottleEvent};
