//! Serve the last good answer when the live call fails.
//!
//! [`StaleCacheLayer`] remembers the last successful live answer per key (a key extractor
//! `Fn(&Req) -> K`; answers must be `Clone`) in a bounded store (capacity, least recently
//! stored evicted first; from a capacity of 1024 the store is split in 16 shards by key
//! hash, each evicting its own least recently stored entry first). When a live call triggers (a failure or a selected rejection,
//! see [`Triggers`](crate::Triggers)), it answers with the remembered entry if it is at
//! most `max_staleness` old, marked [`Degraded`](crate::Degraded) with its age; otherwise
//! the failure passes through. Every good live answer refreshes the entry.
//!
//! The live path takes one shard's lock once per successful call, to refresh the entry
//! (the answer is cloned before locking; a lookup clones an `Arc` under the lock); no lock
//! is store-wide, so calls on different keys rarely meet.
//!
//! Optional stale-while-revalidate ([`StaleCacheLayer::stale_while_revalidate`]): keys with
//! a fresh-enough entry are answered from the cache at once and refreshed by one background
//! call per key (spawned on the current tokio runtime).
//!
//! While its [`Switch`](crate::Switch) is in degraded mode the layer answers from a
//! fresh-enough entry without calling the service, and calls it for keys it has none for.
//!
//! ```
//! use palisade_degrade::{Marked, StaleCacheLayer, StaleConfig};
//! use palisade_core::BoxError;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let down = Arc::new(AtomicBool::new(false));
//! let backend = {
//!     let down = Arc::clone(&down);
//!     service_fn(move |city: &'static str| {
//!         let down = down.load(Ordering::Relaxed);
//!         async move {
//!             if down { Err::<Marked<String>, BoxError>("backend down".into()) }
//!             else { Ok(Marked::new(format!("{city}: 21°C"))) }
//!         }
//!     })
//! };
//! let config = StaleConfig::builder().max_staleness(Duration::from_secs(60)).build()?;
//! let mut svc = ServiceBuilder::new()
//!     .layer(StaleCacheLayer::new(config, |city: &&'static str| *city))
//!     .service(backend);
//!
//! let live = svc.ready().await?.call("Oslo").await?;
//! assert!(live.is_live());
//!
//! down.store(true, Ordering::Relaxed);
//! tokio::time::advance(Duration::from_secs(30)).await;
//! let stale = svc.ready().await?.call("Oslo").await?;
//! assert_eq!(*stale, "Oslo: 21°C");
//! assert_eq!(stale.degraded().and_then(|m| m.age()), Some(Duration::from_secs(30)));
//!
//! tokio::time::advance(Duration::from_secs(31)).await; // now too stale
//! assert!(svc.ready().await?.call("Oslo").await.is_err());
//! # Ok(())
//! # }
//! ```

mod config;
mod future;
mod handle;
mod layer;
mod service;
mod store;

pub use config::{DEFAULT_CAPACITY, DEFAULT_MAX_STALENESS, StaleConfig, StaleConfigBuilder};
pub use future::ResponseFuture;
pub use handle::{StaleHandle, StaleSnapshot};
pub use layer::StaleCacheLayer;
pub(crate) use service::Shared;
pub use service::{OnFailure, StaleCache, WhileRevalidating};
