//! SLOs as data: a small TOML file of targets becomes Prometheus recording rules,
//! multiwindow multi-burn-rate alerts and a Grafana dashboard.
//!
//! The SLIs come from metrics palisade already exports, per named dependency (the layers'
//! `name` label), and from the pipeline's own gauges:
//!
//! | SLI | bad events / bad time | all events |
//! |---|---|---|
//! | `availability` | requests that failed as callers saw them: the request timeout elapsed, retries were exhausted or refused by the budget, the breaker rejected the call | requests (the request timeout's calls, else the retry layer's requests) |
//! | `degraded` | answers from a fallback or a stale cache | requests, as above |
//! | `latency` | calls slower than `threshold` (a histogram bucket bound) | calls through the latency timeout |
//! | `freshness` | minutes in which the last committed batch is older than `threshold` (or unknown) | minutes |
//! | `completeness` | minutes in which the last run loaded under `min_ratio` of what it should | minutes |
//!
//! An error the retry layer does not retry (a `4xx`: the request was wrong, the dependency
//! is fine) does not burn the dependency's budget.
//!
//! Every SLO gets five recording rules (its error ratio over 5m, 30m, 1h, 6h and 3d) and
//! two alerts in the SRE workbook's scheme, with burn rates derived from the SLO window
//! (the workbook's 14.4, 6 and 1 for 30 days):
//!
//! - **page** (the SLO's `page` severity, P0 by default): 2% of the window's budget spent
//!   in 1h (checked over 1h and 5m), or 5% in 6h (over 6h and 30m);
//! - **ticket** (the SLO's `ticket` severity, P2 by default): 10% spent in 3 days (over 3d
//!   and 6h).
//!
//! ```
//! use palisade_examples::slo::SloSpec;
//!
//! let spec = SloSpec::from_toml(r#"
//!     runbook = "https://example.com/runbook"
//!     [dependency.billing]
//!     request_timeout = "billing"
//!     [[slo]]
//!     dependency = "billing"
//!     sli = "availability"
//!     objective = 0.999
//!     window = "30d"
//! "#)?;
//! let rules = spec.rules_yaml();
//! assert!(rules.contains("alert: SloBillingAvailabilityPage"));
//! assert!(rules.contains("14.4 * (1 - 0.999)"));
//! assert!(SloSpec::from_toml("[[slo]]\nobjective = 2").is_err());
//! # Ok::<(), palisade_examples::slo::SpecError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::telemetry::LATENCY_BUCKETS;

/// The windows every SLO's error ratio is recorded over, in minutes, with their
/// Prometheus spelling.
pub const WINDOWS: [(&str, u64); 5] = [
    ("5m", 5),
    ("30m", 30),
    ("1h", 60),
    ("6h", 360),
    ("3d", 4320),
];

/// The burn-rate alert conditions: `(long window, short window, share of the SLO window's
/// error budget spent in the long window, page?)` (the SRE workbook's table).
pub const BURN_CONDITIONS: [(&str, &str, f64, bool); 3] = [
    ("1h", "5m", 0.02, true),
    ("6h", "30m", 0.05, true),
    ("3d", "6h", 0.10, false),
];

/// The recorded error-ratio series of an SLO over `window` (one of [`WINDOWS`]).
pub fn error_ratio_series(window: &str) -> String {
    format!("palisade:slo_error_ratio:rate{window}")
}

/// The recorded 0/1 series of a time-based SLI (freshness, completeness): 1 while bad.
pub const BAD_NOW_SERIES: &str = "palisade:slo_bad:now";

/// The recorded objective of every SLO (a constant, for dashboards).
pub const OBJECTIVE_SERIES: &str = "palisade:slo_objective:ratio";

/// The freshness gauge the ETL example sets: Unix time of the last committed batch.
pub const DEFAULT_FRESHNESS_METRIC: &str = "etl_last_load_timestamp_seconds";

/// The completeness gauge the ETL example sets at the end of each run.
pub const DEFAULT_COMPLETENESS_METRIC: &str = "etl_run_completeness_ratio";

// ===== errors =====

/// A refused SLO file: which setting, its value, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The setting (`slo[2].objective`), or `line N` for a file that does not parse.
    pub field: String,
    /// The value given.
    pub value: String,
    /// What is allowed.
    pub expected: String,
}

impl SpecError {
    fn new(
        field: impl Into<String>,
        value: impl fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SLO spec: {} = {}: expected {}",
            self.field, self.value, self.expected
        )
    }
}

impl std::error::Error for SpecError {}

// ===== the spec =====

/// What an SLO measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sli {
    /// Requests answered without an error or a rejection.
    Availability,
    /// Requests answered by the dependency itself, not by a fallback or stale cache.
    Degraded,
    /// Calls faster than a threshold.
    Latency,
    /// Time during which the pipeline's last committed batch is younger than a threshold.
    Freshness,
    /// Time during which the pipeline's last run loaded all it should.
    Completeness,
}

impl Sli {
    /// The label value (`"availability"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Sli::Availability => "availability",
            Sli::Degraded => "degraded",
            Sli::Latency => "latency",
            Sli::Freshness => "freshness",
            Sli::Completeness => "completeness",
        }
    }

    /// `true` for SLIs counted in minutes (freshness, completeness) rather than events.
    pub const fn is_time_based(self) -> bool {
        matches!(self, Sli::Freshness | Sli::Completeness)
    }

    fn title(self) -> &'static str {
        match self {
            Sli::Availability => "Availability",
            Sli::Degraded => "Degraded",
            Sli::Latency => "Latency",
            Sli::Freshness => "Freshness",
            Sli::Completeness => "Completeness",
        }
    }
}

/// The layer names of one dependency's stack (the `name` label of their metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The dependency's name: the `dependency` label of every SLO series and alert.
    pub name: String,
    /// The outermost timeout (its calls are the requests callers make), if any.
    pub request_timeout: Option<String>,
    /// The retry layer, if any.
    pub retry: Option<String>,
    /// The circuit breaker, if any.
    pub circuit_breaker: Option<String>,
    /// The fallback or stale-cache layer, if any.
    pub fallback: Option<String>,
    /// The timeout layer whose duration histogram measures latency.
    pub latency: String,
}

/// One SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// The dependency (or pipeline) it is about.
    pub dependency: String,
    /// What it measures.
    pub sli: Sli,
    /// The share of good events (or good minutes), e.g. `0.999`.
    pub objective: f64,
    /// The objective's window, in minutes.
    pub window_minutes: u64,
    /// The window as written (`"30d"`).
    pub window: String,
    /// Latency: the threshold in seconds (a bucket bound). Freshness: the maximum age in
    /// seconds. Completeness: the minimum loaded/expected ratio.
    pub threshold: Option<f64>,
    /// Freshness and completeness: the gauge read.
    pub metric: Option<String>,
    /// Severity of the page alert (`P0`…`P3`).
    pub page: String,
    /// Severity of the ticket alert (`P0`…`P3`).
    pub ticket: String,
}

impl Slo {
    /// The error budget: `1 - objective`.
    pub fn budget(&self) -> f64 {
        1.0 - self.objective
    }

    /// The burn-rate factor of a condition: the share of the budget spent in `long` minutes,
    /// as a multiple of the sustainable rate (14.4 for 2% in 1h of 30 days).
    pub fn burn_factor(&self, share: f64, long_minutes: u64) -> f64 {
        round4(share * self.window_minutes as f64 / long_minutes as f64)
    }

    /// The page alert's name (`SloSinkAvailabilityPage`).
    pub fn page_alert(&self) -> String {
        format!("Slo{}{}Page", camel(&self.dependency), self.sli.title())
    }

    /// The ticket alert's name (`SloSinkAvailabilityTicket`).
    pub fn ticket_alert(&self) -> String {
        format!("Slo{}{}Ticket", camel(&self.dependency), self.sli.title())
    }

    fn selector(&self) -> String {
        format!(
            "{{dependency=\"{}\", sli=\"{}\"}}",
            self.dependency,
            self.sli.as_str()
        )
    }

    fn objective_text(&self) -> String {
        format!("{}%", num(self.objective * 100.0))
    }
}

/// A validated SLO file.
#[derive(Debug, Clone, PartialEq)]
pub struct SloSpec {
    /// Where the runbook is; each alert links to its SLI's section (`#slo-availability`).
    pub runbook: String,
    /// The dependencies, by name.
    pub dependencies: BTreeMap<String, Dependency>,
    /// The SLOs, in file order.
    pub slos: Vec<Slo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    runbook: Option<String>,
    #[serde(default)]
    dependency: BTreeMap<String, RawDependency>,
    #[serde(default)]
    slo: Vec<RawSlo>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDependency {
    request_timeout: Option<String>,
    retry: Option<String>,
    circuit_breaker: Option<String>,
    fallback: Option<String>,
    latency: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    dependency: String,
    sli: Sli,
    objective: f64,
    window: String,
    threshold: Option<String>,
    min_ratio: Option<f64>,
    metric: Option<String>,
    page: Option<String>,
    ticket: Option<String>,
}

impl SloSpec {
    /// Parse and validate a TOML SLO file; the error names the setting, its value and what
    /// is allowed.
    pub fn from_toml(text: &str) -> Result<SloSpec, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let field = e.span().map_or_else(
                || "file".to_owned(),
                |span| format!("line {}", text[..span.start].matches('\n').count() + 1),
            );
            SpecError::new(field, e.message(), "a valid SLO file (see slo.toml)")
        })?;
        let runbook = raw.runbook.unwrap_or_default();
        if !runbook.starts_with("https://") && !runbook.starts_with("http://") {
            return Err(SpecError::new(
                "runbook",
                format!("{runbook:?}"),
                "the runbook's URL (http:// or https://)",
            ));
        }
        let mut dependencies = BTreeMap::new();
        for (name, dep) in &raw.dependency {
            let field = format!("dependency.{name}");
            dependencies.insert(name.clone(), Dependency::from_raw(name, dep, &field)?);
        }
        let mut slos = Vec::new();
        let mut seen = BTreeMap::new();
        for (i, raw_slo) in raw.slo.iter().enumerate() {
            let field = format!("slo[{i}]");
            check_label(&format!("{field}.dependency"), &raw_slo.dependency)?;
            if !dependencies.contains_key(&raw_slo.dependency) {
                let dep =
                    Dependency::from_raw(&raw_slo.dependency, &RawDependency::default(), &field)?;
                dependencies.insert(raw_slo.dependency.clone(), dep);
            }
            let slo = Slo::from_raw(raw_slo, &field)?;
            // `a-b` and `a_b` would share alert names.
            let key = (camel(&slo.dependency), slo.sli);
            if let Some(first) = seen.insert(key, i) {
                return Err(SpecError::new(
                    format!("{field}.sli"),
                    slo.sli.as_str(),
                    format!(
                        "one SLO per dependency and SLI; slo[{first}] already sets {} for {} \
                         (or for a name differing only in '-', '_' or '.')",
                        slo.sli.as_str(),
                        slo.dependency
                    ),
                ));
            }
            let dep = &dependencies[&slo.dependency];
            dep.check_layers_for(&slo, &field)?;
            slos.push(slo);
        }
        if slos.is_empty() {
            return Err(SpecError::new("slo", "[]", "at least one [[slo]]"));
        }
        Ok(SloSpec {
            runbook,
            dependencies,
            slos,
        })
    }

    fn dependency(&self, slo: &Slo) -> &Dependency {
        // Every SLO's dependency is inserted by `from_toml`.
        &self.dependencies[&slo.dependency]
    }

    /// The runbook link of an SLI.
    pub fn runbook_url(&self, sli: Sli) -> String {
        format!("{}#slo-{}", self.runbook, sli.as_str())
    }
}

impl Dependency {
    fn from_raw(name: &str, raw: &RawDependency, field: &str) -> Result<Dependency, SpecError> {
        check_label(field, name)?;
        let layer = |key: &str, value: &Option<String>, default: Option<&str>| {
            let value = value.as_deref().or(default).unwrap_or_default();
            if value.is_empty() {
                return Ok(None);
            }
            check_label(&format!("{field}.{key}"), value).map(|()| Some(value.to_owned()))
        };
        let request_timeout = layer("request_timeout", &raw.request_timeout, None)?;
        let latency_default = request_timeout.as_deref().unwrap_or(name);
        Ok(Dependency {
            name: name.to_owned(),
            retry: layer("retry", &raw.retry, Some(name))?,
            circuit_breaker: layer("circuit_breaker", &raw.circuit_breaker, Some(name))?,
            fallback: layer("fallback", &raw.fallback, Some(name))?,
            latency: layer("latency", &raw.latency, Some(latency_default))?
                .unwrap_or_else(|| latency_default.to_owned()),
            request_timeout,
        })
    }

    fn check_layers_for(&self, slo: &Slo, field: &str) -> Result<(), SpecError> {
        let needs_requests = matches!(slo.sli, Sli::Availability | Sli::Degraded);
        if needs_requests && self.request_timeout.is_none() && self.retry.is_none() {
            return Err(SpecError::new(
                format!("dependency.{}", self.name),
                "no request_timeout and retry = \"\"",
                format!("a request_timeout or a retry layer to count the requests of {field}"),
            ));
        }
        if slo.sli == Sli::Degraded && self.fallback.is_none() {
            return Err(SpecError::new(
                format!("dependency.{}.fallback", self.name),
                "\"\"",
                format!("the fallback or stale-cache layer's name, for {field}"),
            ));
        }
        Ok(())
    }

    /// Requests per second over `w`.
    fn requests(&self, w: &str) -> String {
        match (&self.request_timeout, &self.retry) {
            (Some(t), _) => format!("sum(rate(palisade_timeout_calls_total{{name=\"{t}\"}}[{w}]))"),
            (None, Some(r)) => {
                format!("sum(rate(palisade_retry_attempts_count{{name=\"{r}\"}}[{w}]))")
            }
            // `check_layers_for` refuses an SLO that needs requests without either.
            (None, None) => "vector(0)".to_owned(),
        }
    }

    /// Failed requests per second over `w`, as a sum of terms that are each 0 when absent.
    fn failures(&self, w: &str) -> String {
        let mut terms = Vec::new();
        if let Some(t) = &self.request_timeout {
            terms.push(format!(
                "palisade_timeout_calls_total{{name=\"{t}\", outcome=\"elapsed\"}}"
            ));
        }
        if let Some(r) = &self.retry {
            terms.push(format!("palisade_retry_exhausted_total{{name=\"{r}\"}}"));
            terms.push(format!(
                "palisade_retry_budget_rejected_total{{name=\"{r}\"}}"
            ));
        }
        if let Some(b) = &self.circuit_breaker {
            terms.push(format!(
                "palisade_circuit_breaker_rejected_total{{name=\"{b}\"}}"
            ));
        }
        sum_of(&terms, w)
    }

    fn degraded(&self, w: &str) -> String {
        let f = self.fallback.as_deref().unwrap_or_default();
        sum_of(
            &[
                format!("palisade_degrade_fallback_total{{name=\"{f}\"}}"),
                format!("palisade_degrade_stale_total{{name=\"{f}\"}}"),
            ],
            w,
        )
    }
}

fn sum_of(terms: &[String], w: &str) -> String {
    terms
        .iter()
        .map(|t| format!("(sum(rate({t}[{w}])) or vector(0))"))
        .collect::<Vec<_>>()
        .join("\n  + ")
}

impl Slo {
    fn from_raw(raw: &RawSlo, field: &str) -> Result<Slo, SpecError> {
        let window_minutes = parse_window(&raw.window).ok_or_else(|| {
            SpecError::new(
                format!("{field}.window"),
                format!("{:?}", raw.window),
                "a whole number of days or weeks like \"30d\" or \"4w\", from 7d to 365d",
            )
        })?;
        if !(7 * 1440..=365 * 1440).contains(&window_minutes) {
            return Err(SpecError::new(
                format!("{field}.window"),
                &raw.window,
                "from 7d to 365d (longer than the 3d ticket window)",
            ));
        }
        let mut slo = Slo {
            dependency: raw.dependency.clone(),
            sli: raw.sli,
            objective: raw.objective,
            window_minutes,
            window: raw.window.clone(),
            threshold: None,
            metric: None,
            page: severity(
                &format!("{field}.page"),
                raw.page.as_deref().unwrap_or("P0"),
            )?,
            ticket: severity(
                &format!("{field}.ticket"),
                raw.ticket.as_deref().unwrap_or("P2"),
            )?,
        };
        // The page must be reachable: its burn rate times the budget is an error ratio <= 1.
        let fast = slo.burn_factor(BURN_CONDITIONS[0].2, 60);
        let lowest = 1.0 - 1.0 / fast;
        if !(raw.objective.is_finite() && raw.objective > lowest && raw.objective < 1.0) {
            return Err(SpecError::new(
                format!("{field}.objective"),
                raw.objective,
                format!(
                    "a share of good events above {} and below 1 (with window {}, a lower \
                     objective could never page: its {}x burn rate would need more than 100% errors)",
                    num(lowest),
                    raw.window,
                    num(fast)
                ),
            ));
        }
        let threshold_field = format!("{field}.threshold");
        match raw.sli {
            Sli::Latency => {
                let text = raw.threshold.as_deref().unwrap_or_default();
                let secs = parse_seconds(text);
                let bucket = secs.and_then(|s| {
                    LATENCY_BUCKETS
                        .iter()
                        .copied()
                        .find(|b| (b - s).abs() < 1e-9)
                });
                let allowed = LATENCY_BUCKETS
                    .iter()
                    .map(|b| format!("{}s", num(*b)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let Some(bucket) = bucket else {
                    return Err(SpecError::new(
                        threshold_field,
                        format!("{text:?}"),
                        format!("a latency histogram bucket bound: one of {allowed}"),
                    ));
                };
                slo.threshold = Some(bucket);
            }
            Sli::Freshness => {
                let text = raw.threshold.as_deref().unwrap_or_default();
                let secs = parse_seconds(text).filter(|s| *s >= 60.0 && *s <= 30.0 * 86400.0);
                let Some(secs) = secs else {
                    return Err(SpecError::new(
                        threshold_field,
                        format!("{text:?}"),
                        "the maximum age of fresh data, from \"1m\" to \"30d\"",
                    ));
                };
                slo.threshold = Some(secs);
                slo.metric = Some(metric(raw, field, DEFAULT_FRESHNESS_METRIC)?);
            }
            Sli::Completeness => {
                let min = raw.min_ratio.unwrap_or(1.0);
                if !(min > 0.0 && min <= 1.0) {
                    return Err(SpecError::new(
                        format!("{field}.min_ratio"),
                        min,
                        "the least loaded/expected share of a complete run, in (0, 1]",
                    ));
                }
                slo.threshold = Some(min);
                slo.metric = Some(metric(raw, field, DEFAULT_COMPLETENESS_METRIC)?);
            }
            Sli::Availability | Sli::Degraded => {}
        }
        let allowed_extra: &[&str] = match raw.sli {
            Sli::Latency => &["threshold"],
            Sli::Freshness => &["threshold", "metric"],
            Sli::Completeness => &["min_ratio", "metric"],
            Sli::Availability | Sli::Degraded => &[],
        };
        for (key, given) in [
            ("threshold", raw.threshold.is_some()),
            ("min_ratio", raw.min_ratio.is_some()),
            ("metric", raw.metric.is_some()),
        ] {
            if given && !allowed_extra.contains(&key) {
                return Err(SpecError::new(
                    format!("{field}.{key}"),
                    "(set)",
                    format!("no {key} for a {} SLO", raw.sli.as_str()),
                ));
            }
        }
        Ok(slo)
    }
}

fn metric(raw: &RawSlo, field: &str, default: &str) -> Result<String, SpecError> {
    let name = raw.metric.as_deref().unwrap_or(default);
    let ok = !name.is_empty()
        && name
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(SpecError::new(
            format!("{field}.metric"),
            format!("{name:?}"),
            "a Prometheus metric name ([a-zA-Z_][a-zA-Z0-9_]*)",
        ))
    }
}

fn severity(field: &str, value: &str) -> Result<String, SpecError> {
    if ["P0", "P1", "P2", "P3"].contains(&value) {
        Ok(value.to_owned())
    } else {
        Err(SpecError::new(
            field,
            format!("{value:?}"),
            "a severity: P0 (page), P1 (email and chat), P2 (ticket) or P3 (log only)",
        ))
    }
}

/// Names end up inside PromQL strings and alert names: keep them plain.
fn check_label(field: &str, value: &str) -> Result<(), SpecError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("{value:?}"),
            "a layer or dependency name of 1 to 64 letters, digits, '-', '_' or '.'",
        ))
    }
}

/// `"30d"` / `"4w"` → minutes.
fn parse_window(text: &str) -> Option<u64> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    let per = match unit {
        "d" => 1440,
        "w" => 7 * 1440,
        _ => return None,
    };
    n.checked_mul(per)
}

/// `"500ms"`, `"1s"`, `"2.5s"`, `"10m"`, `"1h"`, `"2d"` → seconds.
fn parse_seconds(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    let secs = value * scale;
    (secs.is_finite() && secs > 0.0).then_some(secs)
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// A number as PromQL and people write it: no trailing zeros, no float noise.
fn num(x: f64) -> String {
    let text = format!("{:.6}", round4_or_more(x));
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

fn round4_or_more(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn camel(name: &str) -> String {
    name.split(['-', '_', '.'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

// ===== rules =====

/// One Prometheus rule, before rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `record:` or `alert:` name.
    pub name: String,
    /// `true` for an alert.
    pub alert: bool,
    /// The PromQL expression.
    pub expr: String,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// Annotations (alerts only).
    pub annotations: Vec<(String, String)>,
}

impl SloSpec {
    /// The recording rules of every SLO: a group per SLO.
    pub fn recording_rules(&self) -> Vec<(String, Vec<Rule>)> {
        self.slos
            .iter()
            .map(|slo| {
                let dep = self.dependency(slo);
                let labels = vec![
                    ("dependency".to_owned(), slo.dependency.clone()),
                    ("sli".to_owned(), slo.sli.as_str().to_owned()),
                ];
                let mut rules = vec![Rule {
                    name: OBJECTIVE_SERIES.to_owned(),
                    alert: false,
                    expr: format!("vector({})", num(slo.objective)),
                    labels: labels.clone(),
                    annotations: Vec::new(),
                }];
                if slo.sli.is_time_based() {
                    rules.push(Rule {
                        name: BAD_NOW_SERIES.to_owned(),
                        alert: false,
                        expr: bad_now(slo),
                        labels: labels.clone(),
                        annotations: Vec::new(),
                    });
                }
                for (w, _) in WINDOWS {
                    rules.push(Rule {
                        name: error_ratio_series(w),
                        alert: false,
                        expr: error_ratio(slo, dep, w),
                        labels: labels.clone(),
                        annotations: Vec::new(),
                    });
                }
                (
                    format!("palisade-slo-{}-{}", slo.dependency, slo.sli.as_str()),
                    rules,
                )
            })
            .collect()
    }

    /// The page and ticket alert of every SLO.
    pub fn alert_rules(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        for slo in &self.slos {
            let sel = slo.selector();
            let budget = format!("(1 - {})", num(slo.objective));
            let cond = |(long, short, share, _): (&str, &str, f64, bool)| {
                let long_minutes = WINDOWS
                    .iter()
                    .find(|(w, _)| *w == long)
                    .map_or(60, |(_, m)| *m);
                let factor = num(slo.burn_factor(share, long_minutes));
                format!(
                    "(\n  {long_s}{sel} > {factor} * {budget}\nand\n  {short_s}{sel} > {factor} * {budget}\n)",
                    long_s = error_ratio_series(long),
                    short_s = error_ratio_series(short),
                )
            };
            let [fast, medium, slow] = BURN_CONDITIONS;
            let what = describe_sli(slo);
            let f = |c: (&str, &str, f64, bool)| {
                let long_minutes = WINDOWS
                    .iter()
                    .find(|(w, _)| *w == c.0)
                    .map_or(60, |(_, m)| *m);
                num(slo.burn_factor(c.2, long_minutes))
            };
            let annotations = |kind: &str, detail: String| {
                vec![
                    (
                        "summary".to_owned(),
                        format!(
                            "{} {}: error budget burning {kind} (SLO {} over {})",
                            slo.dependency,
                            slo.sli.as_str(),
                            slo.objective_text(),
                            slo.window
                        ),
                    ),
                    ("description".to_owned(), format!("{what} {detail}")),
                    ("runbook_url".to_owned(), self.runbook_url(slo.sli)),
                ]
            };
            out.push(Rule {
                name: slo.page_alert(),
                alert: true,
                expr: format!("{}\nor\n{}", cond(fast), cond(medium)),
                labels: vec![("severity".to_owned(), slo.page.clone())],
                annotations: annotations(
                    "fast",
                    format!(
                        "The bad share is over {}x the budget in the last 1h and 5m, or over \
                         {}x in the last 6h and 30m: at this pace the {} budget is gone in \
                         days. Act now.",
                        f(fast),
                        f(medium),
                        slo.window
                    ),
                ),
            });
            out.push(Rule {
                name: slo.ticket_alert(),
                alert: true,
                expr: cond(slow),
                labels: vec![("severity".to_owned(), slo.ticket.clone())],
                annotations: annotations(
                    "slowly",
                    format!(
                        "The bad share is over {}x the budget in the last 3d and 6h: the {} \
                         budget will run out before the window ends. Fix it this week.",
                        f(slow),
                        slo.window
                    ),
                ),
            });
        }
        out
    }

    /// The rules file (`slo-rules.yml`): recording rules, then alerts.
    pub fn rules_yaml(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# Generated by `cargo run -p palisade-examples --bin slo-gen` from slo.toml: do not\n\
             # edit; edit slo.toml and run it again (a test fails while this file is stale).\n\
             #\n\
             # Recording rules: per SLO, the share of bad events (or bad minutes) over 5m, 30m,\n\
             # 1h, 6h and 3d. Alerts: multiwindow, multi-burn-rate (SRE workbook); a page when\n\
             # 2% of the budget burns in 1h or 5% in 6h, a ticket when 10% burns in 3d.\n\
             groups:\n",
        );
        for (group, rules) in self.recording_rules() {
            let _ = writeln!(out, "  - name: {group}\n    rules:");
            for rule in &rules {
                render_rule(&mut out, rule);
            }
        }
        out.push_str("  - name: palisade-slo-alerts\n    rules:\n");
        for rule in self.alert_rules() {
            render_rule(&mut out, &rule);
        }
        out
    }
}

fn describe_sli(slo: &Slo) -> String {
    let t = slo.threshold.unwrap_or_default();
    match slo.sli {
        Sli::Availability => format!(
            "Requests to {} fail (timeout, retries exhausted, breaker open) more often than the SLO allows.",
            slo.dependency
        ),
        Sli::Degraded => format!(
            "Answers for {} come from the fallback or stale cache more often than the SLO allows.",
            slo.dependency
        ),
        Sli::Latency => format!(
            "Calls to {} take over {}s more often than the SLO allows.",
            slo.dependency,
            num(t)
        ),
        Sli::Freshness => format!(
            "The last batch {} committed is older than {}s (or unknown) for longer than the SLO allows.",
            slo.dependency,
            num(t)
        ),
        Sli::Completeness => format!(
            "Runs of {} load less than {} of the expected records for longer than the SLO allows.",
            slo.dependency,
            num(t)
        ),
    }
}

/// The 0/1 expression of a time-based SLI: 1 while the minute is bad.
fn bad_now(slo: &Slo) -> String {
    let metric = slo.metric.as_deref().unwrap_or_default();
    let t = num(slo.threshold.unwrap_or_default());
    match slo.sli {
        // No data is not fresh data: a pipeline that stopped reporting is stale.
        Sli::Freshness => format!("(time() - max({metric}) > bool {t})\nor\nvector(1)"),
        _ => format!("max({metric}) < bool {t}"),
    }
}

fn error_ratio(slo: &Slo, dep: &Dependency, w: &str) -> String {
    match slo.sli {
        Sli::Availability => format!("(\n  {}\n)\n/\n{}", dep.failures(w), dep.requests(w)),
        Sli::Degraded => format!("(\n  {}\n)\n/\n{}", dep.degraded(w), dep.requests(w)),
        Sli::Latency => {
            let l = &dep.latency;
            let le = le_matcher(slo.threshold.unwrap_or_default());
            let count = format!(
                "sum(rate(palisade_timeout_call_duration_seconds_count{{name=\"{l}\"}}[{w}]))"
            );
            format!(
                "(\n  {count}\n  -\n  sum(rate(palisade_timeout_call_duration_seconds_bucket{{name=\"{l}\", {le}}}[{w}]))\n)\n/\n{count}"
            )
        }
        Sli::Freshness | Sli::Completeness => {
            format!("avg_over_time({BAD_NOW_SERIES}{}[{w}])", slo.selector())
        }
    }
}

/// The `le` matcher of a bucket bound. Prometheus 3 writes whole bounds as `1.0` where the
/// exporter and Prometheus 2 write `1`: match both.
fn le_matcher(bound: f64) -> String {
    let n = num(bound);
    if bound.fract() == 0.0 {
        format!("le=~\"{n}|{n}\\\\.0\"")
    } else {
        format!("le=\"{n}\"")
    }
}

fn render_rule(out: &mut String, rule: &Rule) {
    let key = if rule.alert { "alert" } else { "record" };
    let _ = writeln!(out, "      - {key}: {}", rule.name);
    let _ = writeln!(out, "        expr: |");
    for line in rule.expr.lines() {
        let _ = writeln!(out, "          {line}");
    }
    if !rule.labels.is_empty() {
        let _ = writeln!(out, "        labels:");
        for (k, v) in &rule.labels {
            let _ = writeln!(out, "          {k}: {}", quote(v));
        }
    }
    if !rule.annotations.is_empty() {
        let _ = writeln!(out, "        annotations:");
        for (k, v) in &rule.annotations {
            let _ = writeln!(out, "          {k}: {}", quote(v));
        }
    }
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

// ===== dashboard =====

impl SloSpec {
    /// The Grafana dashboard (`slo-dashboard.json`): per SLO, the SLI against its
    /// objective, the error budget left over the SLO window, and the burn rates the alerts
    /// watch.
    pub fn dashboard(&self) -> Value {
        let mut panels = Vec::new();
        let mut y = 0;
        let mut id = 1;
        for slo in &self.slos {
            let sel = slo.selector();
            let title = format!(
                "{} {} (SLO {} over {})",
                slo.dependency,
                slo.sli.as_str(),
                slo.objective_text(),
                slo.window
            );
            panels.push(json!({
                "type": "row", "id": id, "title": title, "collapsed": false,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": [],
            }));
            id += 1;
            y += 1;
            let budget_left = format!(
                "1 - avg_over_time({}{sel}[{}]) / (1 - {})",
                error_ratio_series("5m"),
                slo.window,
                num(slo.objective)
            );
            panels.push(json!({
                "type": "stat", "id": id, "title": format!("Error budget left ({})", slo.window),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 7, "w": 6, "x": 0, "y": y},
                "fieldConfig": {"defaults": {"unit": "percentunit", "min": 0, "max": 1,
                    "thresholds": {"mode": "absolute", "steps": [
                        {"color": "red", "value": null},
                        {"color": "orange", "value": 0.25},
                        {"color": "green", "value": 0.5}]}}},
                "targets": [{"refId": "A", "expr": budget_left}],
            }));
            id += 1;
            let mut sli_targets = vec![
                json!({"refId": "A", "legendFormat": "SLI (5m)",
                    "expr": format!("1 - {}{sel}", error_ratio_series("5m"))}),
                json!({"refId": "B", "legendFormat": "SLI (1h)",
                    "expr": format!("1 - {}{sel}", error_ratio_series("1h"))}),
                json!({"refId": "C", "legendFormat": "objective",
                    "expr": format!("{OBJECTIVE_SERIES}{sel}")}),
            ];
            if let Some(raw) = raw_panel_expr(slo) {
                sli_targets.push(json!({"refId": "D", "legendFormat": raw.0, "expr": raw.1}));
            }
            panels.push(json!({
                "type": "timeseries", "id": id, "title": format!("{} SLI", slo.sli.title()),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 7, "w": 9, "x": 6, "y": y},
                "fieldConfig": {"defaults": {"unit": "percentunit"}},
                "targets": sli_targets,
            }));
            id += 1;
            let burn_targets: Vec<Value> = [("A", "1h"), ("B", "6h"), ("C", "3d")]
                .iter()
                .map(|(ref_id, w)| {
                    json!({
                        "refId": ref_id,
                        "legendFormat": format!("burn rate ({w})"),
                        "expr": format!("{}{sel} / (1 - {})", error_ratio_series(w), num(slo.objective)),
                    })
                })
                .collect();
            panels.push(json!({
                "type": "timeseries", "id": id,
                "title": format!(
                    "Burn rate (page over {}x in 1h or {}x in 6h; ticket over {}x in 3d)",
                    num(slo.burn_factor(BURN_CONDITIONS[0].2, 60)),
                    num(slo.burn_factor(BURN_CONDITIONS[1].2, 360)),
                    num(slo.burn_factor(BURN_CONDITIONS[2].2, 4320)),
                ),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 7, "w": 9, "x": 15, "y": y},
                "targets": burn_targets,
            }));
            id += 1;
            y += 7;
        }
        json!({
            "title": "Palisade SLOs",
            "uid": "palisade-slo",
            "description": "Generated by `cargo run -p palisade-examples --bin slo-gen` from slo.toml: the SLOs of every dependency, their error budgets and burn rates. Series from slo-rules.yml.",
            "schemaVersion": 39,
            "version": 1,
            "editable": true,
            "time": {"from": "now-7d", "to": "now"},
            "refresh": "1m",
            "tags": ["palisade", "slo"],
            "templating": {"list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
            ]},
            "panels": panels,
        })
    }

    /// The dashboard as the committed file's text.
    pub fn dashboard_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.dashboard()).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// The raw gauge of a time-based SLI, for its panel.
fn raw_panel_expr(slo: &Slo) -> Option<(&'static str, String)> {
    let metric = slo.metric.as_deref()?;
    match slo.sli {
        Sli::Freshness => Some((
            "age / threshold",
            format!(
                "(time() - max({metric})) / {}",
                num(slo.threshold.unwrap_or(1.0))
            ),
        )),
        Sli::Completeness => Some(("last run loaded / expected", format!("max({metric})"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        runbook = "https://example.com/ops"
        [[slo]]
        dependency = "db"
        sli = "availability"
        objective = 0.999
        window = "30d"
    "#;

    fn with(extra: &str) -> Result<SloSpec, SpecError> {
        SloSpec::from_toml(&format!("{MINIMAL}{extra}"))
    }

    #[test]
    fn the_workbook_burn_rates_come_out_for_30_days() {
        let spec = SloSpec::from_toml(MINIMAL).unwrap();
        let slo = &spec.slos[0];
        assert_eq!(slo.burn_factor(0.02, 60), 14.4);
        assert_eq!(slo.burn_factor(0.05, 360), 6.0);
        assert_eq!(slo.burn_factor(0.10, 4320), 1.0);
        let rules = spec.rules_yaml();
        assert!(rules.contains("> 14.4 * (1 - 0.999)"), "{rules}");
        assert!(rules.contains("> 6 * (1 - 0.999)"), "{rules}");
        assert!(rules.contains("> 1 * (1 - 0.999)"), "{rules}");
    }

    #[test]
    fn layer_names_default_to_the_dependency() {
        let spec = SloSpec::from_toml(MINIMAL).unwrap();
        let dep = &spec.dependencies["db"];
        assert_eq!(dep.retry.as_deref(), Some("db"));
        assert_eq!(dep.circuit_breaker.as_deref(), Some("db"));
        assert_eq!(dep.request_timeout, None);
        assert!(
            dep.requests("5m")
                .contains("palisade_retry_attempts_count{name=\"db\"}")
        );
    }

    #[test]
    fn bad_values_name_the_setting_and_the_range() {
        let cases = [
            ("objective = 0.999", "objective = 1.0", "slo[0].objective"),
            ("objective = 0.999", "objective = 0.5", "slo[0].objective"),
            ("window = \"30d\"", "window = \"1h\"", "slo[0].window"),
            ("window = \"30d\"", "window = \"2d\"", "slo[0].window"),
            (
                "sli = \"availability\"",
                "sli = \"latency\"\nthreshold = \"0.3s\"",
                "slo[0].threshold",
            ),
            (
                "dependency = \"db\"",
                "dependency = \"a b\"",
                "slo[0].dependency",
            ),
            (
                "runbook = \"https://example.com/ops\"",
                "runbook = \"ops.md\"",
                "runbook",
            ),
        ];
        for (from, to, field) in cases {
            let err = SloSpec::from_toml(&MINIMAL.replace(from, to)).unwrap_err();
            assert_eq!(err.field, field, "{to}: {err}");
            assert!(!err.expected.is_empty());
        }
        let err = with("page = \"critical\"").unwrap_err();
        assert_eq!(err.field, "slo[0].page", "{err}");
        let twice = format!("{MINIMAL}{}", &MINIMAL[MINIMAL.find("[[slo]]").unwrap()..]);
        assert_eq!(SloSpec::from_toml(&twice).unwrap_err().field, "slo[1].sli");
        let alike = twice.replacen("dependency = \"db\"", "dependency = \"d-b\"", 1);
        let alike = alike.replacen("dependency = \"db\"", "dependency = \"d_b\"", 1);
        assert_eq!(SloSpec::from_toml(&alike).unwrap_err().field, "slo[1].sli");
        assert_eq!(
            SloSpec::from_toml("\nrunbook = 1").unwrap_err().field,
            "line 2"
        );
    }

    #[test]
    fn edge_values_are_refused_by_name_never_panic() {
        let windows = [
            "",
            "d",
            "0d",
            "-1d",
            "1.5d",
            "6d",
            "366d",
            "99999999999999999999d",
            "30",
        ];
        for w in windows {
            let err = SloSpec::from_toml(&MINIMAL.replace("\"30d\"", &format!("{w:?}")));
            assert_eq!(err.unwrap_err().field, "slo[0].window", "{w}");
        }
        let thresholds = ["", "0s", "-1s", "1e400s", "NaN", "1.5", "1y", "7ms"];
        for t in thresholds {
            let text = MINIMAL.replace(
                "sli = \"availability\"",
                &format!("sli = \"latency\"\nthreshold = {t:?}"),
            );
            let err = SloSpec::from_toml(&text).unwrap_err();
            assert_eq!(err.field, "slo[0].threshold", "{t}");
        }
        for objective in ["nan", "inf", "-0.5", "0", "1", "1.5"] {
            let text = MINIMAL.replace("0.999", objective);
            assert_eq!(
                SloSpec::from_toml(&text).unwrap_err().field,
                "slo[0].objective"
            );
        }
        // Every accepted objective can page: its fast-burn error ratio is at most 100%.
        for days in [7, 14, 28, 30, 90, 365] {
            for objective in [0.95, 0.99, 0.999, 0.9999] {
                let text = MINIMAL
                    .replace("30d", &format!("{days}d"))
                    .replace("0.999", &objective.to_string());
                if let Ok(spec) = SloSpec::from_toml(&text) {
                    let slo = &spec.slos[0];
                    assert!(slo.burn_factor(0.02, 60) * slo.budget() <= 1.0);
                    assert!(slo.burn_factor(0.10, 4320) > 0.0);
                }
            }
        }
    }

    #[test]
    fn a_latency_threshold_must_be_a_bucket_bound() {
        let spec = SloSpec::from_toml(&MINIMAL.replace(
            "sli = \"availability\"",
            "sli = \"latency\"\nthreshold = \"250ms\"",
        ))
        .unwrap();
        assert!(spec.rules_yaml().contains("le=\"0.25\""));
        assert_eq!(le_matcher(1.0), r#"le=~"1|1\\.0""#);
    }

    #[test]
    fn numbers_print_without_float_noise() {
        assert_eq!(num(14.4), "14.4");
        assert_eq!(num(1.0), "1");
        assert_eq!(num(0.999), "0.999");
        assert_eq!(num(99.9), "99.9");
        assert_eq!(num(1.0 - 0.999), "0.001");
        assert_eq!(camel("source-api.v2"), "SourceApiV2");
        assert_eq!(parse_window("4w"), Some(40320));
        assert_eq!(parse_seconds("500ms"), Some(0.5));
        assert_eq!(parse_seconds("soon"), None);
    }
}
