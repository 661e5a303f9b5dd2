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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::chaos::{ChaosConfig, ChaosHandle, ChaosLayer, Fault, Window};
use palisade::circuit_breaker::{
    CircuitBreakerEvent, CircuitBreakerHandle, CircuitBreakerLayer, State,
};
use palisade::degrade::fallback::{FallbackLayer, Secondary};
use palisade::degrade::{FallbackConfig, Marked};
use palisade::rate_limit::RateLimitLayer;
use palisade::retry::{Backoff, RejectionAware, RetryAfter, RetryEvent, RetryLayer};
use palisade::timeout::TimeoutLayer;
use palisade::{AsRejection, BoxError, Classify, Outcome, Rejection, Stack};
use tower::util::{BoxCloneSyncService, BoxService};
use tower::{Layer, service_fn};

use super::client::{SourceClient, SourceError};
use super::config::{ChaosScenario, ResilienceConfig};
use super::journal::Journal;
use super::sink::{Batch, LoadReport, Sink};
use super::source::Page;
use super::stats::Stats;

/// The source client behind its stack.
pub type ExtractService = BoxCloneSyncService<u64, Page, BoxError>;

/// The sink behind retry, breaker and timeout (no fallback): what replays use.
pub type GuardedSink = BoxCloneSyncService<Batch, Marked<LoadReport>, BoxError>;

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
/// and timeouts. A `429` is the source pacing us, not failing. Everything else is the
/// library's default, [`palisade::core::RejectionAware`]: our own limiter's rejections are
/// neither successes nor failures, so the caller's own limit never opens this breaker.
pub fn classify_source_health(result: &Result<Page, BoxError>) -> Outcome {
    if let Err(err) = result
        && let Some(source) = err.downcast_ref::<SourceError>()
    {
        return match source {
            SourceError::Throttled { .. } => Outcome::Ignore,
            SourceError::Status(s) if *s < 500 && *s != 408 => Outcome::Ignore,
            _ => Outcome::Failure,
        };
    }
    RejectionAware.classify(result)
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

// ===== the last error, for log lines =====

/// The last error an attempt of a stack saw: palisade's retry and fallback events say
/// *that* an attempt failed, this says *why*, so the log line that reports a retry or a
/// spill carries an `error` field (the runbook's first clue).
#[derive(Debug, Clone, Default)]
pub struct LastError(Arc<Mutex<Option<String>>>);

impl LastError {
    /// Remember `err` if `result` is one.
    pub fn record<T>(&self, result: &Result<T, BoxError>) {
        if let Err(err) = result {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(err.to_string());
        }
    }

    /// The last error seen (`"unknown"` before any).
    pub fn get(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "unknown".into())
    }
}

/// A layer's config error, named as the setting the user wrote.
fn setting(name: &'static str) -> impl Fn(palisade::core::ConfigError) -> BoxError {
    move |e| format!("{name}: {e}").into()
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
    let last = LastError::default();
    let seen = last.clone();
    let retry = RetryLayer::builder()
        .name("source")
        .max_attempts(config.max_attempts)
        .backoff(Backoff::exponential(config.backoff_base).max_delay(config.backoff_max))
        .seed(seed)
        .classifier(move |result: &Result<Page, BoxError>| {
            seen.record(result);
            classify_fetch(result)
        })
        .retry_after(fetch_retry_after)
        .on_event(move |e: &RetryEvent| count_retry(&retry_stats, e, "source", &last))
        .build()
        .map_err(setting("resilience (source retry)"))?;
    let breaker_stats = Arc::clone(stats);
    let breaker = CircuitBreakerLayer::builder()
        .name("source")
        .consecutive_failures(config.breaker_failures)
        .open_duration(config.breaker_open)
        .on_event(move |e: &CircuitBreakerEvent| on_breaker(&breaker_stats, e, true))
        .build()
        .map_err(setting(
            "resilience.breaker_failures / resilience.breaker_open",
        ))?
        .classifier(classify_source_health);
    let handle = breaker.handle();
    // Wait for a permit (pacing) rather than fail: the limit protects the source, and a
    // batch job has time. A wait longer than the cap fails fast and is retried later.
    let limit = RateLimitLayer::builder(rate, Duration::from_secs(1))
        .name("source")
        .burst(burst)
        .max_wait(Duration::from_secs(2))
        .build()
        .map_err(setting("rate / burst"))?;
    let stack = Stack::new()
        .timeout(
            TimeoutLayer::builder()
                .name("source-request")
                .timeout(config.request_timeout)
                .build()
                .map_err(setting("resilience.request_timeout"))?,
        )
        .retry(retry)
        .circuit_breaker(breaker)
        .limit(limit)
        .attempt_timeout(
            TimeoutLayer::builder()
                .name("source-attempt")
                .timeout(config.attempt_timeout)
                .build()
                .map_err(setting("resilience.attempt_timeout"))?,
        );
    Ok((BoxCloneSyncService::new(stack.layer(client)), handle))
}

/// Count a retry event and log it with the error that caused it.
fn count_retry(stats: &Stats, event: &RetryEvent, stage: &'static str, last: &LastError) {
    use std::sync::atomic::Ordering::Relaxed;
    match event {
        RetryEvent::Retrying { attempt, delay } => {
            let counter = if stage == "source" {
                &stats.source_retries
            } else {
                &stats.sink_retries
            };
            counter.fetch_add(1, Relaxed);
            tracing::info!(
                stage,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %last.get(),
                "attempt failed; retrying"
            );
        }
        RetryEvent::BudgetExhausted { attempts } => {
            stats.budget_refusals.fetch_add(1, Relaxed);
            tracing::warn!(
                stage,
                attempts,
                error = %last.get(),
                "retry budget exhausted; not retrying"
            );
        }
        _ => {}
    }
}

/// Count breaker trips and degraded time. The transition itself is logged once, by the
/// breaker (at INFO, target `palisade::circuit_breaker`).
fn on_breaker(stats: &Stats, event: &CircuitBreakerEvent, source: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    if let CircuitBreakerEvent::StateTransition { to, .. } = event {
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
    /// The sink's chaos (the scenario's sink outage; its clock restarts at the first load).
    pub chaos: ChaosHandle,
    /// The last error a sink write saw, for the spill and replay log lines.
    pub last_error: LastError,
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
    let chaos = ChaosLayer::new(chaos.build().map_err(setting("chaos.sink_outage"))?);
    let chaos_handle = chaos.handle();

    let retry_stats = Arc::clone(stats);
    let last = LastError::default();
    let seen = last.clone();
    let logged = last.clone();
    let retry = RetryLayer::builder()
        .name("sink")
        .max_attempts(2)
        .backoff(Backoff::exponential(Duration::from_millis(20)).max_delay(config.backoff_max))
        .seed(seed ^ 1)
        .classifier(move |result: &Result<Marked<LoadReport>, BoxError>| {
            seen.record(result);
            RejectionAware.classify(result)
        })
        .on_event(move |e: &RetryEvent| count_retry(&retry_stats, e, "sink", &logged))
        .build()
        .map_err(setting("resilience (sink retry)"))?;
    let breaker_stats = Arc::clone(stats);
    let breaker = CircuitBreakerLayer::builder()
        .name("sink")
        .consecutive_failures(3)
        .open_duration(config.breaker_open)
        .on_event(move |e: &CircuitBreakerEvent| on_breaker(&breaker_stats, e, false))
        .build()
        .map_err(setting("resilience.breaker_open"))?;
    let breaker_handle = breaker.handle();
    let guarded = Stack::new()
        .retry(retry)
        .circuit_breaker(breaker)
        .attempt_timeout(
            TimeoutLayer::builder()
                .name("sink-write")
                .timeout(config.sink_timeout)
                .build()
                .map_err(setting("resilience.sink_timeout"))?,
        )
        .layer(chaos.layer(sink));
    let guarded = BoxCloneSyncService::new(guarded);

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
        last_error: last,
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
