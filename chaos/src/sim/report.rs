//! The report of a simulated incident: what the client saw and what the backend paid.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use super::backend::SimBackend;
use super::load::{LoadRun, RequestOutcome};

/// Requests in one second of the run (by the second they were sent in), and the backend
/// calls that arrived in that second: the per-second time series of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Second {
    /// Client requests sent.
    pub sent: u64,
    /// Of those, how many succeeded.
    pub succeeded: u64,
    /// Backend calls that arrived during this second (all attempts, refused ones too).
    pub backend_calls: u64,
    /// Of those, the calls the backend took on ([`CallOutcome::is_admitted`](super::CallOutcome::is_admitted)): its load.
    pub admitted: u64,
}

/// The numbers of one simulated run. Print it (`Display`) for a table.
///
/// Ratios over a time span come from [`Report::timeline`]: [`Report::success_ratio_between`]
/// and [`Report::amplification_between`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// How long requests kept arriving.
    pub duration: Duration,
    /// Client requests (every arrival, sent or skipped).
    pub requests: u64,
    /// Requests that succeeded.
    pub successes: u64,
    /// Requests the service failed.
    pub failures: u64,
    /// Requests a palisade layer rejected.
    pub rejected: u64,
    /// Requests whose client deadline passed.
    pub timed_out: u64,
    /// Requests not sent (the generator's in-flight bound).
    pub skipped: u64,
    /// Requests never answered: lost.
    pub unfinished: u64,
    /// Answers recorded twice for one request (must be zero).
    pub answered_twice: u64,
    /// Offered load: requests per second.
    pub offered_rps: f64,
    /// Goodput: successful requests per second.
    pub goodput_rps: f64,
    /// Successes / requests.
    pub success_ratio: f64,
    /// Latency percentiles over answered requests (successes, failures, rejections and
    /// timeouts alike).
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The slowest answer.
    pub max: Duration,
    /// Backend calls received since the run started (with a backend).
    pub backend_calls: Option<u64>,
    /// Backend calls per client request (with a backend): 1.0 means no extra work.
    pub amplification: Option<f64>,
    /// The most admitted backend calls in any one second (with a backend): the peak load.
    /// Calls refused fast (outage, error burst, shed, quota) are not load and not counted.
    pub peak_backend_rps: Option<u64>,
    /// Backend calls that arrived after their deadline had passed (with a backend).
    pub late_attempts: Option<u64>,
    /// When the backend's last incident ended, from the run's start (with a backend whose
    /// script has incidents).
    pub fault_end: Option<Duration>,
    /// When the backend was healthy again (the last incident's recovery ramp ended), from
    /// the run's start (with a backend whose script has incidents).
    pub fault_cleared: Option<Duration>,
    /// From `fault_end` to the start of the first second from which every later second
    /// of the arrival period has a success ratio of at least [`Report::RECOVERED`]; `None`
    /// if the run never recovered before arrivals stopped (or had no fault).
    pub time_to_recover: Option<Duration>,
    /// Second by second, from the run's start.
    pub timeline: Vec<Second>,
}

impl Report {
    /// The success ratio from which a second counts as recovered: 95%, loose enough that
    /// background noise (a 1% error rate) does not read as "still broken", strict enough
    /// that a half-recovered service does not pass.
    pub const RECOVERED: f64 = 0.95;

    pub(crate) fn new<E>(run: &LoadRun, backend: Option<&SimBackend<E>>) -> Self {
        let count = |o: RequestOutcome| run.count(o);
        let requests = run.records.len() as u64;
        let successes = count(RequestOutcome::Success);
        let secs = run.duration.as_secs_f64().max(f64::MIN_POSITIVE);
        let rejected = run
            .records
            .iter()
            .filter(|r| matches!(r.outcome, RequestOutcome::Rejected(_)))
            .count() as u64;
        let mut latencies: Vec<Duration> = run
            .records
            .iter()
            .filter(|r| {
                !matches!(
                    r.outcome,
                    RequestOutcome::Skipped | RequestOutcome::Unfinished
                )
            })
            .map(|r| r.latency)
            .collect();
        latencies.sort_unstable();
        let timeline = timeline(run, backend);
        let mut report = Report {
            duration: run.duration,
            requests,
            successes,
            failures: count(RequestOutcome::Failure),
            rejected,
            timed_out: count(RequestOutcome::TimedOut),
            skipped: count(RequestOutcome::Skipped),
            unfinished: count(RequestOutcome::Unfinished),
            answered_twice: run.answered_twice,
            offered_rps: requests as f64 / secs,
            goodput_rps: successes as f64 / secs,
            success_ratio: ratio(successes, requests),
            p50: percentile(&latencies, 0.50),
            p95: percentile(&latencies, 0.95),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or_default(),
            backend_calls: None,
            amplification: None,
            peak_backend_rps: None,
            late_attempts: None,
            fault_end: None,
            fault_cleared: None,
            time_to_recover: None,
            timeline,
        };
        if let Some(backend) = backend {
            let log = backend.log();
            let since_start = log.iter().filter(|c| c.at >= run.start);
            let calls = since_start.clone().count() as u64;
            report.backend_calls = Some(calls);
            report.amplification = Some(ratio(calls, requests));
            report.late_attempts = Some(since_start.filter(|c| c.is_late()).count() as u64);
            report.peak_backend_rps = report.timeline.iter().map(|s| s.admitted).max();
            let from_start =
                |end: Duration| (backend.origin() + end).saturating_duration_since(run.start);
            report.fault_end = backend.script().fault_end().map(from_start);
            report.fault_cleared = backend.script().fault_cleared().map(from_start);
            report.time_to_recover = report.time_to_recover_at(Self::RECOVERED);
        }
        report
    }

    /// Time to recover with a different threshold than [`Report::RECOVERED`].
    pub fn time_to_recover_at(&self, threshold: f64) -> Option<Duration> {
        let end = self.fault_end?;
        let first = usize::try_from(end.as_secs()).ok()?;
        let healthy = |s: &Second| s.sent == 0 || ratio(s.succeeded, s.sent) >= threshold;
        // Only seconds with arrivals can show recovery; the drain after them cannot.
        let arrival_secs = self.duration.as_secs_f64().ceil() as usize;
        let mut recovered_from = None;
        let seconds = self.timeline.iter().take(arrival_secs);
        for (i, second) in seconds.enumerate().skip(first) {
            match (healthy(second), recovered_from) {
                (true, None) => recovered_from = Some(i),
                (false, _) => recovered_from = None,
                _ => {}
            }
        }
        let from = Duration::from_secs(recovered_from? as u64);
        Some(from.saturating_sub(end))
    }

    /// The run stayed degraded after the fault was gone: the backend had been healthy for
    /// at least `settle` (its last recovery ramp ended that long before arrivals stopped),
    /// yet the last `settle` of arrivals still had a success ratio under
    /// [`Report::RECOVERED`]. The load the stack itself keeps up (a retry storm, a queue of
    /// abandoned work) is what holds such a run down: a metastable failure. `false` for a
    /// run without a fault or one too short to tell.
    pub fn is_metastable(&self, settle: Duration) -> bool {
        let Some(cleared) = self.fault_cleared else {
            return false;
        };
        if cleared.saturating_add(settle) > self.duration {
            return false;
        }
        self.success_ratio_between(self.duration.saturating_sub(settle)..self.duration)
            < Self::RECOVERED
    }

    /// Admitted backend calls during `span` (whole seconds from the run's start).
    pub fn admitted_between(&self, span: Range<Duration>) -> u64 {
        self.seconds(span).map(|s| s.admitted).sum()
    }

    /// The success ratio of requests sent during `span` (whole seconds from the run's start;
    /// a partial second counts whole).
    pub fn success_ratio_between(&self, span: Range<Duration>) -> f64 {
        let (sent, ok) = self
            .seconds(span)
            .fold((0, 0), |(n, k), s| (n + s.sent, k + s.succeeded));
        ratio(ok, sent)
    }

    /// Backend calls per client request during `span` (whole seconds from the run's start).
    pub fn amplification_between(&self, span: Range<Duration>) -> f64 {
        let (sent, calls) = self
            .seconds(span)
            .fold((0, 0), |(n, c), s| (n + s.sent, c + s.backend_calls));
        ratio(calls, sent)
    }

    /// The most admitted backend calls in one second during `span` (the peak load; fast
    /// refusals are not load).
    pub fn peak_backend_rps_between(&self, span: Range<Duration>) -> u64 {
        self.seconds(span).map(|s| s.admitted).max().unwrap_or(0)
    }

    fn seconds(&self, span: Range<Duration>) -> impl Iterator<Item = &Second> {
        let from = span.start.as_secs() as usize;
        let to = span.end.as_secs_f64().ceil() as usize;
        self.timeline.iter().take(to).skip(from)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn timeline<E>(run: &LoadRun, backend: Option<&SimBackend<E>>) -> Vec<Second> {
    let mut seconds = vec![Second::default(); run.duration.as_secs_f64().ceil() as usize];
    for r in &run.records {
        let s = slot(&mut seconds, r.sent_at.saturating_duration_since(run.start));
        s.sent += 1;
        s.succeeded += u64::from(r.outcome == RequestOutcome::Success);
    }
    for call in backend.map(SimBackend::log).unwrap_or_default() {
        if call.at >= run.start {
            let s = slot(&mut seconds, call.at - run.start);
            s.backend_calls += 1;
            s.admitted += u64::from(call.outcome.is_admitted());
        }
    }
    seconds
}

/// The second `offset` falls in, growing the timeline for answers after the run's end.
fn slot(seconds: &mut Vec<Second>, offset: Duration) -> &mut Second {
    let i = usize::try_from(offset.as_secs()).unwrap_or(usize::MAX - 1);
    if i >= seconds.len() {
        seconds.resize(i + 1, Second::default());
    }
    &mut seconds[i]
}

// ===== Display =====

struct Ms(Duration);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1}ms", self.0.as_secs_f64() * 1000.0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: fmt::Arguments<'_>| {
            // `format_args!` ignores width, so render the value first to pad it.
            let v = v.to_string();
            writeln!(f, "| {k:<20} | {v:<52} |")
        };
        writeln!(f, "| {:<20} | {:<52} |", "metric", "value")?;
        writeln!(f, "|{:-<22}|{:-<54}|", "", "")?;
        row(
            f,
            "offered load",
            format_args!(
                "{:.1} req/s ({} requests over {:.1}s)",
                self.offered_rps,
                self.requests,
                self.duration.as_secs_f64()
            ),
        )?;
        row(f, "goodput", format_args!("{:.1} req/s", self.goodput_rps))?;
        row(
            f,
            "success ratio",
            format_args!("{:.3}%", self.success_ratio * 100.0),
        )?;
        row(
            f,
            "outcomes",
            format_args!(
                "ok {} fail {} rejected {} timeout {} skip {} lost {}",
                self.successes,
                self.failures,
                self.rejected,
                self.timed_out,
                self.skipped,
                self.unfinished
            ),
        )?;
        row(
            f,
            "latency p50/p95/p99",
            format_args!(
                "{} / {} / {} (max {})",
                Ms(self.p50),
                Ms(self.p95),
                Ms(self.p99),
                Ms(self.max)
            ),
        )?;
        if let (Some(calls), Some(amp)) = (self.backend_calls, self.amplification) {
            row(
                f,
                "backend calls",
                format_args!("{calls} (amplification {amp:.3})"),
            )?;
        }
        if let Some(peak) = self.peak_backend_rps {
            row(
                f,
                "peak backend load",
                format_args!("{peak} admitted calls/s"),
            )?;
        }
        if let Some(late) = self.late_attempts {
            row(f, "late attempts", format_args!("{late}"))?;
        }
        if let Some(end) = self.fault_end {
            match self.time_to_recover {
                None if end >= self.duration => row(
                    f,
                    "recovery",
                    format_args!("fault lasts past the run ({:.1}s)", end.as_secs_f64()),
                )?,
                Some(ttr) => row(
                    f,
                    "recovery",
                    format_args!(
                        "fault ended at {:.1}s; recovered {:.1}s later",
                        end.as_secs_f64(),
                        ttr.as_secs_f64()
                    ),
                )?,
                None => row(
                    f,
                    "recovery",
                    format_args!("fault ended at {:.1}s; never recovered", end.as_secs_f64()),
                )?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    fn report_with(timeline: Vec<Second>, fault_end: Duration) -> Report {
        Report {
            duration: Duration::from_secs(timeline.len() as u64),
            requests: 0,
            successes: 0,
            failures: 0,
            rejected: 0,
            timed_out: 0,
            skipped: 0,
            unfinished: 0,
            answered_twice: 0,
            offered_rps: 0.0,
            goodput_rps: 0.0,
            success_ratio: 0.0,
            p50: Duration::ZERO,
            p95: Duration::ZERO,
            p99: Duration::ZERO,
            max: Duration::ZERO,
            backend_calls: None,
            amplification: None,
            peak_backend_rps: None,
            late_attempts: None,
            fault_end: Some(fault_end),
            fault_cleared: Some(fault_end),
            time_to_recover: None,
            timeline,
        }
    }

    #[test]
    fn recovery_is_the_start_of_the_last_healthy_stretch() {
        let s = |sent, succeeded| Second {
            sent,
            succeeded,
            backend_calls: 0,
            admitted: 0,
        };
        // fault ends at 2.5s; second 3 is bad, second 4 good, 5 bad again, 6.. good
        let r = report_with(
            vec![
                s(10, 0),
                s(10, 0),
                s(10, 0),
                s(10, 5),
                s(10, 10),
                s(10, 2),
                s(10, 10),
                s(10, 10),
            ],
            Duration::from_millis(2500),
        );
        assert_eq!(
            r.time_to_recover_at(0.95),
            Some(Duration::from_millis(3500))
        );
        let never = report_with(vec![s(10, 10), s(10, 0)], Duration::ZERO);
        assert_eq!(never.time_to_recover_at(0.95), None);
        // Seconds after the arrivals (the drain) send nothing and prove nothing.
        let mut drained = report_with(vec![s(10, 10), s(10, 0), s(0, 0)], Duration::ZERO);
        drained.duration = Duration::from_secs(2);
        assert_eq!(drained.time_to_recover_at(0.95), None);
    }

    #[test]
    fn metastable_means_still_failing_long_after_the_fault_cleared() {
        let s = |sent, succeeded| Second {
            sent,
            succeeded,
            backend_calls: 0,
            admitted: 0,
        };
        let two = Duration::from_secs(2);
        // The fault clears at 1 s; seconds 3 and 4 (the last two) still fail: metastable.
        let stuck = report_with(vec![s(10, 0); 5], Duration::from_secs(1));
        assert!(stuck.is_metastable(two));
        // Recovered in the last two seconds: not metastable.
        let mut healed = vec![s(10, 0); 5];
        healed[3] = s(10, 10);
        healed[4] = s(10, 10);
        assert!(!report_with(healed, Duration::from_secs(1)).is_metastable(two));
        // Cleared at 4 s in a 5 s run: less than `settle` left to tell, so not judged.
        assert!(!report_with(vec![s(10, 0); 5], Duration::from_secs(4)).is_metastable(two));
    }
}
