//! A deterministic simulation kit: replay incidents in virtual time.
//!
//! - [`SimBackend`]: a service with a capacity (calls per second), a latency that grows as
//!   arrivals near it, and a [`FaultScript`] of [`Incident`]s (error bursts, outages,
//!   latency spikes, capacity brown-outs, a fraction of calls slowed, hangs, flapping
//!   availability, quotas answering `429` with Retry-After, and capacity that ramps back
//!   after any of them). It logs every call it receives and what it did with it.
//! - [`LoadGen`]: open-loop arrivals (Poisson or fixed) at a rate for a duration, each
//!   request its own task; every outcome and latency is recorded in a [`LoadRun`].
//! - [`Report`]: offered load, goodput, success ratio, amplification (backend calls per
//!   client request), latency percentiles, time to recover, whether the run stayed
//!   degraded after the fault cleared ([`Report::is_metastable`]), peak backend load
//!   (admitted calls only), and the per-second time series behind them ([`Second`]).
//!
//! Run on a paused tokio clock (`#[tokio::test(start_paused = true)]`, a current-thread
//! runtime) and a run is a pure function of its seeds: minutes of traffic replay in
//! milliseconds, identically every time.
//!
//! ```
//! use palisade_chaos::sim::{FaultScript, Incident, LoadGen, SimBackend};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secs = Duration::from_secs;
//! // 100 req/s against a backend of capacity 200/s that is down from t=10s to t=20s.
//! let backend = SimBackend::builder()
//!     .capacity(200.0)
//!     .script(FaultScript::new().with(Incident::outage(secs(10)..secs(20))))
//!     .build()?;
//! let load = LoadGen::builder().poisson(100.0).duration(secs(30)).build()?;
//! let report = load.run(backend.clone(), |_| ()).await.report(&backend);
//! println!("{report}");
//!
//! // A third of the run is an outage and nothing retries: about 2/3 succeed.
//! assert!((0.62..0.71).contains(&report.success_ratio), "{report}");
//! assert_eq!(report.success_ratio_between(secs(10)..secs(20)), 0.0);
//! assert_eq!(report.time_to_recover, Some(Duration::ZERO));
//! # Ok(()) }
//! ```

mod backend;
mod load;
mod report;

pub use backend::{
    BackendCall, CallOutcome, FaultScript, Incident, IncidentKind, SimBackend, SimBackendBuilder,
    SimError, SimErrorKind, SimFuture, SimResponse,
};
pub use load::{Arrivals, LoadGen, LoadGenBuilder, LoadRun, RequestOutcome, RequestRecord};
pub use report::{Report, Second};
