//! The run: extract pages → transform → load in batches → drain the journal → reconcile.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use palisade::circuit_breaker::{CircuitBreakerHandle, State};
use palisade::retry::{Backoff, Jitter, RetryEvent, RetryLayer};
use palisade::{AsRejection, BoxError, Deadline, Outcome};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

use super::client::{SourceClient, SourceError};
use super::config::EtlConfig;
use super::journal::Journal;
use super::redact::redact;
use super::sink::{Batch, Sink, SinkCounts};
use super::source::{Page, SourceServer};
use super::stack::{ExtractService, LastError, LoadStack, extract_stack, load_stack};
use super::stats::{Check, Reconciliation, Stage, Stats, Summary};
use super::transform::Transform;

/// Run the pipeline once with `config`; the summary says whether reconciliation held.
///
/// Starts the built-in source API when `config.source_url` is `None` (and stops it at the
/// end). Errors are setup failures before anything was loaded (a bad setting, the sink or
/// the journal cannot be opened, another run holds the journal). Once loading started, a
/// run always ends with a summary: faults the stacks ride out are counted in it, and a
/// failure that stops the run (the source sends something that is not a page, the journal
/// cannot be written, the sink cannot be counted) is listed in [`Summary::errors`] and
/// fails reconciliation.
pub async fn run(config: &EtlConfig) -> Result<Summary, BoxError> {
    run_with_progress(config, progress_bar(config)).await
}

/// [`run`], drawing progress on `progress` (e.g. the bar the logs were told about with
/// [`telemetry::init_logs`](super::telemetry::init_logs), so log lines do not tear it).
pub async fn run_with_progress(
    config: &EtlConfig,
    progress: ProgressBar,
) -> Result<Summary, BoxError> {
    // Every log line of the run carries the sink and the scenario.
    let span = tracing::info_span!(
        "etl",
        sink = %config.sink_display(),
        scenario = %if config.chaos.is_some() { "custom" } else { config.scenario.as_str() },
        chaos_seed = config.chaos_seed
    );
    pipeline(config, progress).instrument(span).await
}

async fn pipeline(config: &EtlConfig, progress: ProgressBar) -> Result<Summary, BoxError> {
    config.validate()?;
    let started = Instant::now();
    let deadline = started + config.max_run_time;
    let scenario = config.chaos_scenario()?;
    let stats = Arc::new(Stats::default());

    let server = match &config.source_url {
        Some(_) => None,
        None => Some(SourceServer::start(&config.dataset, &scenario, config.chaos_seed).await?),
    };
    let (source_url, source_tag) = match &server {
        Some(server) => (
            server.url(),
            format!(
                "builtin:seed={}:rows={}:page={}",
                config.dataset.seed, config.dataset.rows, config.dataset.page_size
            ),
        ),
        None => {
            let url = config.source_url.clone().unwrap_or_default();
            (url.clone(), url)
        }
    };

    let target = config.sink_target()?;
    let journal_path = config.journal_path()?;
    let identity = target.identity();
    // The journal first: its lock tells a second run on the same sink to stand back
    // before it touches anything.
    let journal =
        tokio::task::spawn_blocking(move || Journal::open(&journal_path, &identity)).await??;
    let sink = Sink::open(&target).await?;
    let (extract, source_breaker) = extract_stack(
        SourceClient::new(&source_url),
        &config.resilience,
        config.rate,
        config.burst(),
        config.chaos_seed,
        &stats,
    )?;
    let load = load_stack(
        sink.clone(),
        &journal,
        &config.resilience,
        &scenario,
        config.chaos_seed,
        &stats,
    )?;
    let mut errors: Vec<String> = Vec::new();
    let mut loader = Loader::new(load, journal, Arc::clone(&stats)).await?;
    // Batches a previous run spilled and never replayed go first.
    loader.replay().await;

    let mut extractor = Extractor::new(
        extract,
        source_breaker,
        Arc::clone(&stats),
        deadline,
        &progress,
        config.chaos_seed,
    )?;
    let transform = Transform::new();
    let mut batch = Batch::empty(0, &source_tag);
    let mut source_rows = 0;
    let mut complete = false;
    let mut next = Some(0);
    'pages: while let Some(number) = next {
        if Instant::now() >= deadline {
            // A source that pages forever must not keep the run alive.
            tracing::error!(page = number, "run deadline reached; extraction stopped");
            break;
        }
        let page = match extractor.fetch(number).await {
            Ok(Some(page)) => page,
            Ok(None) => {
                tracing::error!(page = number, "run deadline reached; extraction stopped");
                break;
            }
            Err(err) => {
                let err = redact(&err.to_string());
                tracing::error!(page = number, error = %err, "extraction stopped");
                errors.push(err);
                break;
            }
        };
        source_rows = page.total_rows;
        progress.set_length(page.total_rows);
        progress.inc(page.rows.len() as u64);
        next = page.next;
        complete = next.is_none();

        let t0 = Instant::now();
        let out = transform.apply(&page);
        stats.observe(Stage::Transform, t0.elapsed());
        stats.count(&stats.valid, "valid", out.valid.len() as u64);
        stats.count(&stats.rejected, "rejected", out.rejected.len() as u64);
        stats.count(&stats.duplicates, "duplicate", out.duplicates);

        batch.records.extend(out.valid);
        batch.rejected.extend(out.rejected);
        while batch.records.len() >= config.batch_size {
            let mut next_batch = Batch::empty(batch.seq + 1, &source_tag);
            next_batch.records = batch.records.split_off(config.batch_size);
            let full = std::mem::replace(&mut batch, next_batch);
            if let Err(err) = loader.load(full).await {
                errors.push(err.to_string());
                break 'pages;
            }
            progress.set_message(loader.status());
        }
    }
    if errors.is_empty()
        && !batch.is_empty()
        && let Err(err) = loader.load(batch).await
    {
        errors.push(err.to_string());
    }
    progress.set_message("draining the journal");
    loader.drain(deadline).await;
    progress.finish_and_clear();

    let sink_counts = match sink.counts(&source_tag).await {
        Ok(counts) => counts,
        Err(err) => {
            let err = format!("cannot count the sink's rows: {err}");
            tracing::error!(error = %err, "reconciliation has no sink counts");
            errors.push(err);
            SinkCounts::default()
        }
    };
    let faults = [
        server.as_ref().map_or(0, |s| s.chaos().injected_total()),
        loader.stack.chaos.injected_total(),
    ];
    if let Some(server) = server {
        server.shutdown().await;
    }
    let summary = Summary {
        source: source_tag,
        sink: config.sink_display(),
        elapsed: started.elapsed(),
        source_rows,
        complete,
        pages: stats.pages.load(Relaxed),
        extracted: stats.extracted.load(Relaxed),
        valid: stats.valid.load(Relaxed),
        rejected: stats.rejected.load(Relaxed),
        duplicates: stats.duplicates.load(Relaxed),
        load: stats.load_report(),
        spilled_batches: stats.spilled_batches.load(Relaxed),
        replayed_batches: stats.replayed_batches.load(Relaxed),
        journal_pending: loader.pending as u64,
        retries: [
            stats.source_retries.load(Relaxed),
            stats.sink_retries.load(Relaxed),
            stats.budget_refusals.load(Relaxed),
            stats.page_rounds.load(Relaxed),
        ],
        breaker_trips: [
            stats.source_trips.load(Relaxed),
            stats.sink_trips.load(Relaxed),
        ],
        degraded: stats.degraded(),
        faults,
        latency: Stage::ALL.iter().map(|s| stats.latency(*s)).collect(),
        sink_counts,
        errors: errors.iter().map(|e| redact(e)).collect(),
        reconciliation: Reconciliation::default(),
    };
    Ok(crate::telemetry::record_run(reconcile(summary)))
}

/// Source count vs what went through the stages vs what the sink holds.
fn reconcile(mut summary: Summary) -> Summary {
    let s = &summary;
    summary.reconciliation.checks = vec![
        Check {
            what: "last source page reached",
            expected: 1,
            actual: u64::from(s.complete),
        },
        Check {
            what: "extracted = source rows",
            expected: s.source_rows,
            actual: s.extracted,
        },
        Check {
            what: "valid + rejected + duplicates = extracted",
            expected: s.extracted,
            actual: s.valid + s.rejected + s.duplicates,
        },
        Check {
            what: "sink records = valid",
            expected: s.valid,
            actual: s.sink_counts.records,
        },
        Check {
            what: "sink rejected rows = rejected",
            expected: s.rejected,
            actual: s.sink_counts.rejected,
        },
        Check {
            what: "journal batches pending = 0",
            expected: 0,
            actual: s.journal_pending,
        },
        Check {
            what: "errors that stopped the run = 0",
            expected: 0,
            actual: s.errors.len() as u64,
        },
    ];
    summary
}

/// The progress bar `config` asks for: hidden without `progress`, with JSON logs, or when
/// stderr is not a terminal.
pub fn progress_bar(config: &EtlConfig) -> ProgressBar {
    if !config.progress || config.json_logs {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{bar:32}] {pos}/{len} rows {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

// ===== Batch =====

impl Batch {
    fn empty(seq: u64, source: &str) -> Self {
        Batch {
            seq,
            source: source.to_owned(),
            records: Vec::new(),
            rejected: Vec::new(),
        }
    }
}

// ===== Extractor =====

/// The page fetcher: the extract stack under a retry bounded by the run's deadline alone.
struct Extractor {
    service: BoxCloneSyncService<u64, Page, BoxError>,
    stats: Arc<Stats>,
    deadline: Instant,
}

impl Extractor {
    /// The extract stack (`service`, whose own retry counts attempts per request) under a
    /// retry that comes back to a page until the run's deadline (palisade-retry's
    /// `until_deadline`): after the breaker's `retry_after` when it is open, else after a
    /// pause. A page whose failure another attempt cannot fix (a client error, a bad
    /// payload) is returned at once. No page is skipped.
    fn new(
        service: ExtractService,
        breaker: CircuitBreakerHandle,
        stats: Arc<Stats>,
        deadline: Instant,
        progress: &ProgressBar,
        seed: u64,
    ) -> Result<Self, BoxError> {
        let last = LastError::default();
        let seen = last.clone();
        let hinted = breaker.clone();
        let counted = Arc::clone(&stats);
        let progress = progress.clone();
        let rounds = RetryLayer::builder()
            .name("source-page")
            .until_deadline()
            .no_budget()
            .backoff(Backoff::constant(Duration::from_millis(100)).jitter(Jitter::None))
            .seed(seed)
            .classifier(move |result: &Result<Page, BoxError>| {
                seen.record(result);
                match result {
                    Ok(_) => Outcome::Success,
                    Err(err)
                        if err
                            .downcast_ref::<SourceError>()
                            .is_some_and(|s| !s.is_transient()) =>
                    {
                        // Returned at once: no hint.
                        Outcome::Ignore
                    }
                    Err(_) => Outcome::Failure,
                }
            })
            .retry_after(move |result: &Result<Page, BoxError>| {
                let err = result.as_ref().err()?;
                if err
                    .downcast_ref::<SourceError>()
                    .is_some_and(|s| !s.is_transient())
                {
                    return None;
                }
                let pause = err
                    .as_rejection()
                    .and_then(|r| r.retry_after())
                    .or_else(|| hinted.retry_after())
                    .unwrap_or(Duration::from_millis(100));
                Some(pause.clamp(Duration::from_millis(10), Duration::from_secs(1)))
            })
            .on_event(move |event: &RetryEvent| {
                if let RetryEvent::Retrying { delay, .. } = event {
                    counted.page_rounds.fetch_add(1, Relaxed);
                    tracing::warn!(
                        error = %redact(&last.get()),
                        pause = ?delay,
                        "page failed; coming back to it"
                    );
                    progress.set_message(format!("source degraded ({})", breaker.state()));
                }
            })
            .build()?;
        Ok(Self {
            service: BoxCloneSyncService::new(rounds.layer(service)),
            stats,
            deadline,
        })
    }

    /// Fetch page `number`, coming back to it until the run's deadline: `None` when the
    /// deadline passed first.
    async fn fetch(&mut self, number: u64) -> Result<Option<Page>, BoxError> {
        let t0 = Instant::now();
        let svc = self.service.ready().await?;
        // The run's deadline bounds the page retry (read when the call starts).
        let call = Deadline::at(self.deadline).scope(|| svc.call(number));
        let result = call.await;
        self.stats.observe(Stage::Extract, t0.elapsed());
        match result {
            Ok(page) => {
                self.stats.pages.fetch_add(1, Relaxed);
                self.stats
                    .count(&self.stats.extracted, "extracted", page.rows.len() as u64);
                Ok(Some(page))
            }
            Err(err) => match err.downcast_ref::<SourceError>() {
                Some(source) if !source.is_transient() => {
                    Err(format!("page {number}: {source}").into())
                }
                // Bounded by time alone and never refused by a budget, the page retry
                // stops only at the deadline.
                _ => {
                    tracing::warn!(page = number, error = %redact(&err.to_string()), "run deadline reached while the page kept failing");
                    Ok(None)
                }
            },
        }
    }
}

// ===== Loader =====

struct Loader {
    stack: LoadStack,
    journal: Journal,
    stats: Arc<Stats>,
    pending: usize,
    /// Whether a live batch was loaded yet (the sink outage's clock starts then).
    started: bool,
    /// Whether the last replay failed (so a sink still down is logged once, not per try).
    replay_failing: bool,
}

impl Loader {
    async fn new(stack: LoadStack, journal: Journal, stats: Arc<Stats>) -> Result<Self, BoxError> {
        let pending = journal.pending().await?.len();
        metrics::gauge!("etl_journal_pending_batches").set(pending as f64);
        Ok(Self {
            stack,
            journal,
            stats,
            pending,
            started: false,
            replay_failing: false,
        })
    }

    fn status(&self) -> String {
        match (self.pending, self.stack.breaker.state()) {
            (0, State::Closed) => String::new(),
            (n, state) => format!("sink {state}, {n} batch(es) in the journal"),
        }
    }

    /// Load one batch: to the sink, or to the journal if the sink fails. An error only if
    /// the journal cannot be written either (nothing is acknowledged then).
    async fn load(&mut self, batch: Batch) -> Result<(), BoxError> {
        if !self.started {
            // The scenario's sink outage is timed from the first batch, so it hits
            // batches whatever the source's pace.
            self.started = true;
            self.stack.chaos.restart_schedule();
        }
        if self.pending > 0 && self.stack.breaker.state() != State::Open {
            self.replay().await;
        }
        let seq = batch.seq;
        let t0 = Instant::now();
        let answer = self.stack.live.ready().await?.call(batch).await?;
        self.stats.observe(Stage::Load, t0.elapsed());
        if answer.is_degraded() {
            tracing::warn!(
                batch = seq,
                error = %redact(&self.stack.last_error.get()),
                "sink unavailable; batch spilled to the journal"
            );
            self.stats.spilled_batches.fetch_add(1, Relaxed);
            self.stats.sink_degraded(true);
            self.pending += 1;
            metrics::gauge!("etl_journal_pending_batches").set(self.pending as f64);
        }
        self.stats.loaded(&answer);
        Ok(())
    }

    /// Replay the journal through the guarded sink, oldest first, until one fails.
    async fn replay(&mut self) {
        let guarded = self.stack.guarded.clone();
        let replayed = self
            .journal
            .replay(|batch| {
                let svc = guarded.clone();
                async move { svc.oneshot(batch).await }
            })
            .await;
        match replayed {
            Ok(r) => {
                for report in &r.loaded {
                    self.stats.loaded(report);
                }
                let n = r.loaded.len() as u64;
                self.stats.replayed_batches.fetch_add(n, Relaxed);
                if n > 0 {
                    metrics::counter!("etl_records_total", "stage" => "replayed").increment(
                        r.loaded
                            .iter()
                            .map(|l| l.inserted + l.updated + l.unchanged)
                            .sum(),
                    );
                    tracing::info!(batches = n, left = r.remaining, "journal replayed");
                }
                match r.error {
                    Some(err) if !self.replay_failing => {
                        tracing::warn!(
                            error = %redact(&err.to_string()),
                            left = r.remaining,
                            "journal replay paused: sink still failing"
                        );
                        self.replay_failing = true;
                    }
                    Some(_) => {}
                    None => self.replay_failing = false,
                }
                self.pending = r.remaining;
            }
            Err(err) => {
                tracing::error!(error = %redact(&err.to_string()), "cannot read the journal");
            }
        }
        metrics::gauge!("etl_journal_pending_batches").set(self.pending as f64);
        if self.pending == 0 {
            self.stats.sink_degraded(false);
        }
    }

    /// Replay until the journal is empty or the deadline passes.
    async fn drain(&mut self, deadline: Instant) {
        loop {
            self.replay().await;
            if self.pending == 0 || Instant::now() >= deadline {
                return;
            }
            let pause = self
                .stack
                .breaker
                .retry_after()
                .unwrap_or(Duration::from_millis(50))
                .clamp(Duration::from_millis(10), Duration::from_millis(500));
            tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use palisade::circuit_breaker::CircuitBreakerLayer;

    use super::*;

    fn page(number: u64) -> Page {
        Page {
            page: number,
            next: None,
            total_rows: 0,
            rows: Vec::new(),
        }
    }

    /// An extractor over a source that answers `script[i]` to its i-th call (then pages).
    fn extractor(
        script: Vec<Option<SourceError>>,
        run_time: Duration,
    ) -> (Extractor, Arc<Stats>, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&calls);
        let script = Arc::new(script);
        let source = tower::service_fn(move |number: u64| {
            let n = counter.fetch_add(1, Relaxed) as usize;
            let script = Arc::clone(&script);
            async move {
                match script.get(n).cloned().flatten() {
                    Some(err) => Err::<Page, BoxError>(err.into()),
                    None => Ok(page(number)),
                }
            }
        });
        let breaker = CircuitBreakerLayer::builder()
            .name("test-source")
            .consecutive_failures(1_000)
            .build()
            .unwrap();
        let handle = breaker.handle();
        let stats = Arc::new(Stats::default());
        let service = BoxCloneSyncService::new(breaker.layer(source));
        let deadline = Instant::now() + run_time;
        let extractor = Extractor::new(
            service,
            handle,
            Arc::clone(&stats),
            deadline,
            &ProgressBar::hidden(),
            1,
        )
        .unwrap();
        (extractor, stats, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_page_is_fetched_again_until_it_comes() {
        let down = Some(SourceError::Status(503));
        let (mut x, stats, calls) = extractor(
            vec![down.clone(), down.clone(), down],
            Duration::from_secs(50),
        );
        let got = x
            .fetch(7)
            .await
            .unwrap()
            .expect("a page before the deadline");
        assert_eq!(got.page, 7);
        assert_eq!(calls.load(Relaxed), 4);
        assert_eq!(stats.page_rounds.load(Relaxed), 3);
        assert_eq!(stats.pages.load(Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_no_attempt_can_fix_is_an_error_at_once() {
        let (mut x, stats, calls) = extractor(
            vec![Some(SourceError::Status(404))],
            Duration::from_secs(50),
        );
        let err = x.fetch(3).await.unwrap_err();
        assert!(err.to_string().contains("page 3"), "{err}");
        assert_eq!(calls.load(Relaxed), 1);
        assert_eq!(stats.page_rounds.load(Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_down_past_the_run_deadline_ends_the_page_at_the_deadline() {
        let start = Instant::now();
        let down = vec![Some(SourceError::Transport("refused".into())); 10_000];
        let (mut x, stats, calls) = extractor(down, Duration::from_secs(5));
        assert!(x.fetch(0).await.unwrap().is_none());
        let waited = start.elapsed();
        assert!(
            waited <= Duration::from_secs(5),
            "past the deadline: {waited:?}"
        );
        assert!(
            waited >= Duration::from_secs(4),
            "gave up early: {waited:?}"
        );
        // About one round per 100 ms pause, bounded by time rather than a count.
        let n = calls.load(Relaxed);
        assert!((30..=51).contains(&n), "{n} calls");
        assert_eq!(stats.page_rounds.load(Relaxed), u64::from(n) - 1);
    }
}
