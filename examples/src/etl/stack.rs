//! The palisade stacks: one around the source client, one around the sink.
//!
//! Extract, outermost first (the order of [`palisade::Stack`]):
//! request timeout → retry (jittered exponential backoff, retry budget, `Retry-After`) →
//! circuit breaker → client-side rate limit → per-attempt timeout → HTTP client.
//!
//! Load: fallback (spill to the journal) → retry → circuit breaker → write timeout →
//! (chaos, for the demo's sink outage) → sink. Replays from the journal use the same stack
//! without the fallback, so a replay that fails stays in the journal instead of spilling
//! back into it.

use std::sync::Arc;
use std::time::Duration;

use palisade::chaos::{ChaosConfig, ChaosHandle, ChaosLayer, Fault, Window};
use palisade::circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerEvent, CircuitBreakerHandle, CircuitBreakerLayer, State,
};
use palisade::degrade::fallback::{FallbackLayer, Secondary};
use palisade::degrade::{FallbackConfig, Marked};
use palisade::rate_limit::RateLimitConfig;
use palisade::retry::{Backoff, RejectionAware, RetryAfter, RetryConfig, RetryEvent, RetryLayer};
use palisade::timeout::TimeoutConfig;
use palisade::{AsRejection, BoxError, Outcome, Rejection, Stack};
use tower::util::{BoxCloneService, BoxService};
use tower::{Layer, service_fn};

use super::client::{SourceClient, SourceError};
use super::config::{ChaosScenario, ResilienceConfig};
use super::journal::Journal;
use super::sink::{Batch, LoadReport, Sink};
use super::source::Page;
use super::stats::Stats;

/// The source client behind its stack.
pub type ExtractService = BoxService<u64, Page, BoxError>;

/// The sink behind retry, breaker and timeout (no fallback): what replays use.
pub type GuardedSink = BoxCloneService<Batch, Marked<LoadReport>, BoxError>;

/// The sink behind the full load stack, fallback included: what live batches use.
pub type LoadService = BoxService<Batch, Marked<LoadReport>, BoxError>;

// ===== classification =====

/// Retry a page fetch on transient source errors and on timeouts; not on a client error,
/// a bad payload, an open circuit or an inner retry that gave up.
pub fn classify_fetch(result: &Result<Page, BoxError>) -> Outcome {
    let Err(err) = result else {
        return Outcome::Success;
    };
    if let Some(source) = err.downcast_ref::<SourceError>() {
        return if source.is_transient() {
            Outcome::Failure
        } else {
            Outcome::Ignore
        };
    }
    match err.as_rejection() {
        Some(Rejection::CircuitOpen(_) | Rejection::RetriesExhausted(_)) => Outcome::Ignore,
        _ => Outcome::Failure,
    }
}

/// What the source breaker counts as the source failing: server errors, transport errors
/// and timeouts. A `429` is the source pacing us, not failing; our own limiter's rejection
/// is not the source's either.
pub fn classify_source_health(result: &Result<Page, BoxError>) -> Outcome {
    let Err(err) = result else {
        return Outcome::Success;
    };
    if let Some(source) = err.downcast_ref::<SourceError>() {
        return match source {
            SourceError::Throttled { .. } => Outcome::Ignore,
            SourceError::Status(s) if *s < 500 && *s != 408 => Outcome::Ignore,
            _ => Outcome::Failure,
        };
    }
    match err.as_rejection() {
        Some(Rejection::RateLimited(_) | Rejection::Overloaded(_)) => Outcome::Ignore,
        _ => Outcome::Failure,
    }
}

/// The server's `Retry-After` on a `429`, else a palisade rate limiter's hint.
pub fn fetch_retry_after(result: &Result<Page, BoxError>) -> Option<Duration> {
    if let Err(err) = result
        && let Some(SourceError::Throttled { retry_after }) = err.downcast_ref::<SourceError>()
    {
        return *retry_after;
    }
    RejectionAware.retry_after(result)
}

// ===== extract =====

/// The source client wrapped in its stack; the breaker's handle for the pipeline to
/// read its state.
pub fn extract_stack(
    client: SourceClient,
    config: &ResilienceConfig,
    rate: u32,
    burst: u32,
    seed: u64,
    stats: &Arc<Stats>,
) -> Result<(ExtractService, CircuitBreakerHandle), BoxError> {
    let retry_stats = Arc::clone(stats);
    let retry = RetryConfig::builder()
        .name("source")
        .max_attempts(config.max_attempts)
        .backoff(Backoff::exponential(config.backoff_base).max_delay(config.backoff_max))
        .seed(seed)
        .classify(classify_fetch)
        .retry_after(fetch_retry_after)
        .on_event(move |e: &RetryEvent| count_retry(&retry_stats, e, true))
        .build()?;
    let breaker_stats = Arc::clone(stats);
    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder()
            .name("source")
            .consecutive_failures(config.breaker_failures)
            .open_duration(config.breaker_open)
            .on_event(move |e: &CircuitBreakerEvent| on_breaker(&breaker_stats, e, true))
            .build()?,
    )
    .with_classifier(classify_source_health);
    let handle = breaker.handle();
    // Wait for a permit (pacing) rather than fail: the limit protects the source, and a
    // batch job has time. A wait longer than the cap fails fast and is retried later.
    let limit = RateLimitConfig::builder(rate, Duration::from_secs(1))
        .name("source")
        .burst(burst)
        .max_wait(Duration::from_secs(2))
        .build()?;
    let stack = Stack::new()
        .timeout(
            TimeoutConfig::builder()
                .name("source-request")
                .timeout(config.request_timeout)
                .build()?,
        )
        .retry(RetryLayer::new(retry))
        .circuit_breaker(breaker)
        .limit(limit)
        .attempt_timeout(
            TimeoutConfig::builder()
                .name("source-attempt")
                .timeout(config.attempt_timeout)
                .build()?,
        );
    Ok((BoxService::new(stack.layer(client)), handle))
}

fn count_retry(stats: &Stats, event: &RetryEvent, source: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    match event {
        RetryEvent::Retrying { .. } if source => {
            stats.source_retries.fetch_add(1, Relaxed);
        }
        RetryEvent::Retrying { .. } => {
            stats.sink_retries.fetch_add(1, Relaxed);
        }
        RetryEvent::BudgetExhausted { .. } => {
            stats.budget_refusals.fetch_add(1, Relaxed);
        }
        _ => {}
    }
}

fn on_breaker(stats: &Stats, event: &CircuitBreakerEvent, source: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    if let CircuitBreakerEvent::StateTransition { name, from, to, .. } = event {
        tracing::info!(breaker = %name, %from, %to, "circuit breaker transition");
        if *to == State::Open {
            let trips = if source {
                &stats.source_trips
            } else {
                &stats.sink_trips
            };
            trips.fetch_add(1, Relaxed);
        }
        if source {
            stats.source_degraded(*to != State::Closed);
        }
    }
}

// ===== load =====

/// The load stage's services and handles.
pub struct LoadStack {
    /// Live batches: spill to the journal when the guarded sink fails.
    pub live: LoadService,
    /// Replays: the guarded sink alone.
    pub guarded: GuardedSink,
    /// The sink breaker.
    pub breaker: CircuitBreakerHandle,
    /// The sink's chaos (the scenario's sink outage).
    pub chaos: ChaosHandle,
}

impl std::fmt::Debug for LoadStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadStack")
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

/// Build the load stack over `sink`; the scenario's sink outage starts counting now.
pub fn load_stack(
    sink: Sink,
    journal: &Journal,
    config: &ResilienceConfig,
    scenario: &ChaosScenario,
    seed: u64,
    stats: &Arc<Stats>,
) -> Result<LoadStack, BoxError> {
    let mut chaos = ChaosConfig::<Batch, Marked<LoadReport>, BoxError>::builder()
        .name("sink")
        .seed(seed)
        .error_fn(|_batch: &Batch| BoxError::from("sink unavailable (injected outage)"));
    if let Some(outage) = &scenario.sink_outage {
        chaos = chaos.window(Window::new(Fault::Error, outage.clone()));
    }
    let chaos = ChaosLayer::new(chaos.build()?);
    let chaos_handle = chaos.handle();

    let retry_stats = Arc::clone(stats);
    let retry = RetryConfig::builder()
        .name("sink")
        .max_attempts(2)
        .backoff(Backoff::exponential(Duration::from_millis(20)).max_delay(config.backoff_max))
        .seed(seed ^ 1)
        .on_event(move |e: &RetryEvent| count_retry(&retry_stats, e, false))
        .build()?;
    let breaker_stats = Arc::clone(stats);
    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder()
            .name("sink")
            .consecutive_failures(3)
            .open_duration(config.breaker_open)
            .on_event(move |e: &CircuitBreakerEvent| on_breaker(&breaker_stats, e, false))
            .build()?,
    );
    let breaker_handle = breaker.handle();
    let guarded = Stack::new()
        .retry(RetryLayer::new(retry))
        .circuit_breaker(breaker)
        .attempt_timeout(
            TimeoutConfig::builder()
                .name("sink-write")
                .timeout(config.sink_timeout)
                .build()?,
        )
        .layer(chaos.layer(sink));
    let guarded = BoxCloneService::new(guarded);

    let spill_journal = journal.clone();
    let spill = service_fn(move |batch: Batch| {
        let journal = spill_journal.clone();
        async move {
            journal.append(&batch).await?;
            let report = LoadReport {
                spilled: batch.records.len() as u64,
                ..LoadReport::default()
            };
            Ok::<_, BoxError>(Marked::new(report))
        }
    });
    let fallback = FallbackLayer::new(
        FallbackConfig::builder().name("load").build()?,
        Secondary::new(spill),
    );
    let live = BoxService::new(fallback.layer(guarded.clone()));
    Ok(LoadStack {
        live,
        guarded,
        breaker: breaker_handle,
        chaos: chaos_handle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade::{CircuitOpen, Elapsed, Name, RateLimited};

    fn err(e: impl Into<BoxError>) -> Result<Page, BoxError> {
        Err(e.into())
    }

    #[test]
    fn fetches_are_retried_only_when_another_attempt_may_succeed() {
        let s = Duration::from_secs(1);
        assert_eq!(
            classify_fetch(&err(SourceError::Status(503))),
            Outcome::Failure
        );
        assert_eq!(
            classify_fetch(&err(SourceError::Status(404))),
            Outcome::Ignore
        );
        assert_eq!(
            classify_fetch(&err(SourceError::Decode("x".into()))),
            Outcome::Ignore
        );
        assert_eq!(
            classify_fetch(&err(Elapsed::new(Name::new("t"), s))),
            Outcome::Failure
        );
        let open = CircuitOpen::new(Name::new("source"), Some(s));
        assert_eq!(classify_fetch(&err(open)), Outcome::Ignore);
    }

    #[test]
    fn throttling_is_not_the_source_failing() {
        let throttled = SourceError::Throttled { retry_after: None };
        assert_eq!(classify_source_health(&err(throttled)), Outcome::Ignore);
        let limited = RateLimited::new(Name::new("source"), Duration::from_millis(5));
        assert_eq!(classify_source_health(&err(limited)), Outcome::Ignore);
        assert_eq!(
            classify_source_health(&err(SourceError::Status(500))),
            Outcome::Failure
        );
        let elapsed = Elapsed::new(Name::new("t"), Duration::from_secs(1));
        assert_eq!(classify_source_health(&err(elapsed)), Outcome::Failure);
    }

    #[test]
    fn retry_after_comes_from_the_server_or_a_limiter() {
        let hint = Some(Duration::from_secs(2));
        let throttled = SourceError::Throttled { retry_after: hint };
        assert_eq!(fetch_retry_after(&err(throttled)), hint);
        let limited = RateLimited::new(Name::new("source"), Duration::from_millis(7));
        assert_eq!(
            fetch_retry_after(&err(limited)),
            Some(Duration::from_millis(7))
        );
        assert_eq!(fetch_retry_after(&err(SourceError::Status(503))), None);
    }
}
