//! What a run counts while it runs (shared, lock-free counters, also fed to the `metrics`
//! facade) and the final summary table.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use super::sink::{LoadReport, SinkCounts};

/// The metrics the pipeline itself emits (besides palisade's `palisade_*` metrics), for
/// dashboards and alert rules.
pub const ETL_METRICS: &[(&str, &str)] = &[
    (
        "etl_records_total",
        "counter; label stage = extracted | valid | rejected | duplicate | inserted | updated | unchanged | spilled | replayed",
    ),
    (
        "etl_stage_duration_seconds",
        "histogram; label stage = extract | transform | load",
    ),
    (
        "etl_journal_pending_batches",
        "gauge; batches spilled and not yet replayed",
    ),
    (
        "etl_last_load_timestamp_seconds",
        "gauge; Unix time of the last batch committed to the sink (data freshness)",
    ),
];

/// A pipeline stage, for latencies and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// One page fetch through the client stack (retries included).
    Extract,
    /// Validating and de-duplicating one page.
    Transform,
    /// Loading (or spilling) one batch.
    Load,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 3] = [Stage::Extract, Stage::Transform, Stage::Load];

    /// The label (`"extract"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Extract => "extract",
            Stage::Transform => "transform",
            Stage::Load => "load",
        }
    }

    const fn index(self) -> usize {
        match self {
            Stage::Extract => 0,
            Stage::Transform => 1,
            Stage::Load => 2,
        }
    }
}

/// Time spent degraded: between `enter` and `leave`, summed.
#[derive(Debug, Default)]
struct DegradedClock {
    since: Option<Instant>,
    total: Duration,
}

/// The run's counters; shared by the stages and the layers' event listeners.
#[derive(Debug, Default)]
pub struct Stats {
    /// Rows received from the source.
    pub extracted: AtomicU64,
    /// Pages received.
    pub pages: AtomicU64,
    /// Valid, first-seen records.
    pub valid: AtomicU64,
    /// Rows that failed validation.
    pub rejected: AtomicU64,
    /// Valid rows dropped as duplicates.
    pub duplicates: AtomicU64,
    /// Retries sent by the source client's retry layer.
    pub source_retries: AtomicU64,
    /// Retries sent by the sink's retry layer.
    pub sink_retries: AtomicU64,
    /// Retries the retry budgets refused.
    pub budget_refusals: AtomicU64,
    /// Times the pipeline came back to a page after the client stack gave up on it.
    pub page_rounds: AtomicU64,
    /// Source breaker transitions to open.
    pub source_trips: AtomicU64,
    /// Sink breaker transitions to open.
    pub sink_trips: AtomicU64,
    /// Batches spilled to the journal.
    pub spilled_batches: AtomicU64,
    /// Batches replayed from the journal.
    pub replayed_batches: AtomicU64,
    latencies: [Mutex<Vec<Duration>>; 3],
    source_degraded: Mutex<DegradedClock>,
    sink_degraded: Mutex<DegradedClock>,
    load: Mutex<LoadReport>,
}

impl Stats {
    /// Add `n` to a counter and to `etl_records_total{stage}`.
    pub fn count(&self, counter: &AtomicU64, stage: &'static str, n: u64) {
        counter.fetch_add(n, Relaxed);
        metrics::counter!("etl_records_total", "stage" => stage).increment(n);
    }

    /// Record one stage latency.
    pub fn observe(&self, stage: Stage, took: Duration) {
        metrics::histogram!("etl_stage_duration_seconds", "stage" => stage.as_str())
            .record(took.as_secs_f64());
        lock(&self.latencies[stage.index()]).push(took);
    }

    /// Add a sink load report.
    pub fn loaded(&self, report: &LoadReport) {
        let counters = [
            ("inserted", report.inserted),
            ("updated", report.updated),
            ("unchanged", report.unchanged),
            ("spilled", report.spilled),
        ];
        for (stage, n) in counters {
            if n > 0 {
                metrics::counter!("etl_records_total", "stage" => stage).increment(n);
            }
        }
        lock(&self.load).add(report);
        if report.spilled == 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            metrics::gauge!("etl_last_load_timestamp_seconds").set(now.as_secs_f64());
        }
    }

    /// The source breaker opened (`true`) or closed (`false`).
    pub fn source_degraded(&self, degraded: bool) {
        toggle(&self.source_degraded, degraded);
    }

    /// The load stage started (`true`) or stopped (`false`) spilling.
    pub fn sink_degraded(&self, degraded: bool) {
        toggle(&self.sink_degraded, degraded);
    }

    /// The latency percentiles of `stage`.
    pub fn latency(&self, stage: Stage) -> StageLatency {
        let mut samples = lock(&self.latencies[stage.index()]).clone();
        samples.sort_unstable();
        StageLatency {
            stage,
            count: samples.len(),
            p50: percentile(&samples, 50),
            p95: percentile(&samples, 95),
            p99: percentile(&samples, 99),
        }
    }

    /// The sum of the sink's load reports.
    pub fn load_report(&self) -> LoadReport {
        *lock(&self.load)
    }

    /// Time the source breaker was not closed, and time the load stage was spilling.
    pub fn degraded(&self) -> [Duration; 2] {
        [
            Self::degraded_time(&self.source_degraded),
            Self::degraded_time(&self.sink_degraded),
        ]
    }

    fn degraded_time(clock: &Mutex<DegradedClock>) -> Duration {
        let clock = lock(clock);
        clock.total + clock.since.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

fn toggle(clock: &Mutex<DegradedClock>, degraded: bool) {
    let mut clock = lock(clock);
    match (degraded, clock.since) {
        (true, None) => clock.since = Some(Instant::now()),
        (false, Some(since)) => {
            clock.total += since.elapsed();
            clock.since = None;
        }
        _ => {}
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters stay meaningful even if a listener panicked while holding the lock.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// Latency percentiles of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageLatency {
    /// The stage.
    pub stage: Stage,
    /// Observations.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

// ===== reconciliation =====

/// One reconciliation check: two counts that must agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What is compared.
    pub what: &'static str,
    /// The count the pipeline expects.
    pub expected: u64,
    /// The count found.
    pub actual: u64,
}

impl Check {
    /// Whether the counts agree.
    pub fn ok(&self) -> bool {
        self.expected == self.actual
    }
}

/// Source count vs destination count vs rejected count, checked at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl Reconciliation {
    /// Whether every check agrees.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(Check::ok)
    }
}

// ===== Summary =====

/// The outcome of a run: what the final table shows.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The source (a URL, or `builtin:…`); the key under which rows are stored.
    pub source: String,
    /// The sink (path or URL, password removed).
    pub sink: String,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Rows the source says it holds.
    pub source_rows: u64,
    /// Whether extraction reached the last page.
    pub complete: bool,
    /// Pages fetched.
    pub pages: u64,
    /// Rows received.
    pub extracted: u64,
    /// Valid first-seen records.
    pub valid: u64,
    /// Rows rejected by validation.
    pub rejected: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// What the sink did with the batches (replays included).
    pub load: LoadReport,
    /// Batches spilled to the journal.
    pub spilled_batches: u64,
    /// Batches replayed from the journal.
    pub replayed_batches: u64,
    /// Batches still in the journal at the end (0 unless the sink never came back).
    pub journal_pending: u64,
    /// Source retries, sink retries, retries refused by a budget, page rounds.
    pub retries: [u64; 4],
    /// Source breaker trips, sink breaker trips.
    pub breaker_trips: [u64; 2],
    /// Time the source breaker was not closed; time the load stage was spilling.
    pub degraded: [Duration; 2],
    /// Faults injected into the source API and the sink.
    pub faults: [u64; 2],
    /// Stage latencies.
    pub latency: Vec<StageLatency>,
    /// The sink's counts for this source at the end.
    pub sink_counts: SinkCounts,
    /// Failures that stopped the run early (credentials redacted); reconciliation fails
    /// when there is any.
    pub errors: Vec<String>,
    /// The checks.
    pub reconciliation: Reconciliation,
}

impl Summary {
    /// Whether the run loaded everything exactly once (reconciliation OK).
    pub fn ok(&self) -> bool {
        self.reconciliation.ok()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = "-".repeat(66);
        writeln!(f, "{line}")?;
        writeln!(
            f,
            " palisade etl: summary ({:.2} s)",
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, " source  {}", super::redact::redact(&self.source))?;
        writeln!(f, " sink    {}", self.sink)?;
        writeln!(f, "{line}")?;
        writeln!(f, " {:<34}{:>12}", "records per stage", "")?;
        let rows: [(&str, u64); 12] = [
            ("  source (declared)", self.source_rows),
            ("  extracted", self.extracted),
            ("  valid (first seen)", self.valid),
            ("  rejected (schema)", self.rejected),
            ("  duplicates dropped", self.duplicates),
            ("  loaded: inserted", self.load.inserted),
            ("  loaded: updated", self.load.updated),
            ("  loaded: unchanged (re-run)", self.load.unchanged),
            ("  rejected rows recorded", self.load.rejected_inserted),
            ("  spilled to journal (records)", self.load.spilled),
            ("  batches spilled / replayed", self.spilled_batches),
            ("  journal pending at end", self.journal_pending),
        ];
        for (label, n) in rows {
            if label.contains("spilled /") {
                writeln!(
                    f,
                    " {label:<34}{:>12}",
                    format!("{n} / {}", self.replayed_batches)
                )?;
            } else {
                writeln!(f, " {label:<34}{n:>12}")?;
            }
        }
        writeln!(f, " {:<34}{:>12}", "resilience", "")?;
        let [src, sink, refused, rounds] = self.retries;
        writeln!(
            f,
            " {:<34}{:>12}",
            "  retries source / sink",
            format!("{src} / {sink}")
        )?;
        writeln!(f, " {:<34}{:>12}", "  retries refused by budget", refused)?;
        writeln!(f, " {:<34}{:>12}", "  pages re-tried after give-up", rounds)?;
        let [ts, tk] = self.breaker_trips;
        writeln!(
            f,
            " {:<34}{:>12}",
            "  breaker trips source / sink",
            format!("{ts} / {tk}")
        )?;
        let [ds, dk] = self.degraded;
        writeln!(
            f,
            " {:<34}{:>12}",
            "  time degraded: source breaker",
            ms(ds)
        )?;
        writeln!(f, " {:<34}{:>12}", "  time degraded: sink spilling", ms(dk))?;
        let [fs, fk] = self.faults;
        writeln!(
            f,
            " {:<34}{:>12}",
            "  faults injected source / sink",
            format!("{fs} / {fk}")
        )?;
        writeln!(
            f,
            " {:<12}{:>8}{:>14}{:>14}{:>14}",
            "latency", "n", "p50", "p95", "p99"
        )?;
        for l in &self.latency {
            writeln!(
                f,
                "  {:<10}{:>8}{:>14}{:>14}{:>14}",
                l.stage.as_str(),
                l.count,
                ms(l.p50),
                ms(l.p95),
                ms(l.p99)
            )?;
        }
        writeln!(f, " reconciliation")?;
        for c in &self.reconciliation.checks {
            let mark = if c.ok() { "ok" } else { "MISMATCH" };
            writeln!(
                f,
                "  {:<40}{:>8} = {:<8}{mark}",
                c.what, c.expected, c.actual
            )?;
        }
        for err in &self.errors {
            writeln!(f, " error: {err}")?;
        }
        let verdict = if self.ok() { "OK" } else { "FAILED" };
        writeln!(f, "{line}")?;
        writeln!(f, " reconciliation {verdict}")?;
        write!(f, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99), Duration::from_millis(99));
        assert_eq!(percentile(&samples[..1], 95), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn degraded_time_adds_up_intervals() {
        let stats = Stats::default();
        stats.source_degraded(true);
        tokio::time::advance(Duration::from_millis(300)).await;
        stats.source_degraded(true);
        stats.source_degraded(false);
        stats.source_degraded(false);
        tokio::time::advance(Duration::from_millis(100)).await;
        stats.source_degraded(true);
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(
            Stats::degraded_time(&stats.source_degraded),
            Duration::from_millis(350)
        );
    }
}
