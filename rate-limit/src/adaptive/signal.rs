//! What an adaptive limit takes as a sign of overload, by default.

use palisade_core::{Classify, Outcome};

/// The adaptive limit's default classifier: **latency alone** judges the backend's load.
/// An answer is a sample (its round-trip time, against the algorithm's latency threshold
/// or its gradient); an error of any kind feeds no sample.
///
/// | result | outcome | why |
/// |---|---|---|
/// | `Ok(_)` | `Success` | a latency sample |
/// | a backend error | `Ignore` | a fast error says nothing about load (a bad request, a missing row) |
/// | [`Elapsed`](palisade_core::Elapsed) (an attempt timed out) | `Ignore` | ambiguous: in a brown-out some calls are slow while the backend has room; shrinking the limit then turns away calls that would have been served (but see [`Aimd`](super::Aimd): with no fast answer while it ran, it is a decrease) |
/// | a local rejection ([`RateLimited`](palisade_core::RateLimited), [`Overloaded`](palisade_core::Overloaded), ...) | `Ignore` | our own layers' decision, not the backend's load |
///
/// Chosen by the incident scorecard (`cargo run --release -p palisade-benches --bin
/// scorecard`, and `--example candidates` for the alternatives): with an AIMD limit at a
/// 150 ms latency threshold under the breaker, counting timed-out attempts as decrease
/// signals served 85.0 req/s in the brown-out incident (30% of calls slowed by 3 s)
/// against 95.1 with latency alone, and counting every backend error served 96.8 against
/// 99.8 with 10% random errors (the limit shrank on errors that had nothing to do with
/// load), for no gain in the 2× overload (84.3 either way).
///
/// A backend that says "overloaded" in its answers (an HTTP `503` or `429`, a gRPC
/// `RESOURCE_EXHAUSTED`) is a sharper signal than latency: pass a classifier that returns
/// `Failure` for those with [`AdaptiveLimitLayer::classifier`](super::AdaptiveLimitLayer::classifier)
/// (`palisade-http` has them: `HttpLoadSignal`, `GrpcLoadSignal`).
///
/// ```
/// use palisade_core::{BoxError, Classify, Outcome};
/// use palisade_rate_limit::LatencyOnly;
///
/// assert_eq!(LatencyOnly.classify(&Ok::<u32, BoxError>(7)), Outcome::Success);
/// let failed: Result<u32, BoxError> = Err("connection reset".into());
/// assert_eq!(LatencyOnly.classify(&failed), Outcome::Ignore);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyOnly;

impl<Res, E> Classify<Res, E> for LatencyOnly {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Ignore,
        }
    }
}
