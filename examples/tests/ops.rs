//! The operations kit, checked:
//! - the SLO rules and dashboard are what `slo-gen` makes of `slo.toml` (not stale);
//! - rules and dashboards name only metrics palisade and the ETL document, and the SLO
//!   dashboard only series the SLO rules record;
//! - `promtool check rules` passes, and `promtool test rules` runs scenarios against every
//!   alert: a healthy stretch (silent), a fast burn (pages within minutes), a slow burn
//!   (ticket, no page), a blip (silent), recovery (resolves), stale or missing data past
//!   the freshness SLO (fires); and a firing and a silent case for each threshold alert;
//! - end to end: the ETL under a scripted sink outage, its Prometheus endpoint scraped at
//!   intervals, the scraped series fed to `promtool test rules`: the sink's SLO pages
//!   fire, the source's stay silent.
//!
//! Without promtool the promtool parts print why and skip, unless `CI` is set: then a
//! missing promtool is a failure.

mod etl_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use palisade::core::metrics::MetricKind;
use palisade_examples::etl::stats::ETL_METRICS;
use palisade_examples::etl::{self, ChaosScenario};
use palisade_examples::slo::{self, Sli, Slo, SloSpec};
use palisade_examples::stream::redis::STREAM_METRICS;
use palisade_examples::telemetry;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yaml_rust2::{Yaml, YamlLoader};

const ALERTS: &str = include_str!("../ops/alerts.yml");
const DASHBOARD: &str = include_str!("../ops/dashboard.json");
const SLO_TOML: &str = include_str!("../ops/slo.toml");
const SLO_RULES: &str = include_str!("../ops/slo-rules.yml");
const SLO_DASHBOARD: &str = include_str!("../ops/slo-dashboard.json");

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops")
}

fn spec() -> SloSpec {
    SloSpec::from_toml(SLO_TOML).expect("slo.toml is valid")
}

// ===== metric names =====

/// The metric names in a PromQL expression: `palisade_*` and `etl_*` identifiers, and
/// recorded `palisade:*` series.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < expr.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &expr[i..];
        if boundary
            && (rest.starts_with("palisade_")
                || rest.starts_with("palisade:")
                || rest.starts_with("etl_")
                || rest.starts_with("stream_"))
        {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    names
}

/// Whether `name` is a documented metric (palisade's, the ETL's, the run gauges), or a
/// histogram's `_bucket`/`_sum`/`_count` series.
fn is_documented(name: &str) -> bool {
    let mut all: Vec<(&str, MetricKind)> = palisade::metrics()
        .iter()
        .map(|m| (m.name, m.kind))
        .collect();
    for (etl_name, help) in ETL_METRICS {
        let kind = if help.starts_with("histogram") {
            MetricKind::Histogram
        } else {
            MetricKind::Gauge
        };
        all.push((etl_name, kind));
    }
    for (run_name, kind, _) in telemetry::RUN_METRICS {
        all.push((run_name, *kind));
    }
    for (stream_name, kind, _) in STREAM_METRICS {
        all.push((stream_name, *kind));
    }
    if all.iter().any(|(n, _)| *n == name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            all.iter()
                .any(|(n, k)| *n == base && *k == MetricKind::Histogram)
        })
    })
}

fn rules_of(yaml: &str) -> Vec<Yaml> {
    let docs = YamlLoader::load_from_str(yaml).expect("rules are YAML");
    let mut out = Vec::new();
    for group in docs[0]["groups"].as_vec().expect("a list of groups") {
        out.extend(group["rules"].as_vec().expect("rules").iter().cloned());
    }
    out
}

#[test]
fn the_metric_name_scanner_finds_histogram_and_recorded_series() {
    let names = metric_names(
        "rate(palisade_x_seconds_bucket[5m]) / palisade_y_total + palisade:slo_error_ratio:rate5m{a=\"b\"} + time() - max(etl_z)",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec![
            "etl_z",
            "palisade:slo_error_ratio:rate5m",
            "palisade_x_seconds_bucket",
            "palisade_y_total"
        ]
    );
    assert!(is_documented(
        "palisade_timeout_call_duration_seconds_bucket"
    ));
    assert!(is_documented("etl_run_completeness_ratio"));
    assert!(is_documented("etl_stage_duration_seconds_count"));
    assert!(!is_documented("palisade_timeout_calls_total_bucket"));
    assert!(!is_documented("palisade_nonexistent_total"));
}

// ===== static checks =====

#[test]
fn the_generated_files_are_current() {
    let spec = spec();
    let hint = "stale: run `cargo run -p palisade-examples --bin slo-gen` and commit the result";
    assert!(spec.rules_yaml() == SLO_RULES, "slo-rules.yml is {hint}");
    assert!(
        spec.dashboard_json() == SLO_DASHBOARD,
        "slo-dashboard.json is {hint}"
    );
}

#[test]
fn threshold_alerts_parse_and_name_only_documented_metrics() {
    let mut severities = BTreeSet::new();
    let slo_alerts: BTreeSet<String> = spec().alert_rules().into_iter().map(|r| r.name).collect();
    for rule in rules_of(ALERTS) {
        let alert = rule["alert"].as_str().expect("every rule is an alert");
        assert!(!slo_alerts.contains(alert), "{alert} is also an SLO alert");
        let severity = rule["labels"]["severity"].as_str().expect("a severity");
        // Paging is the SLO alerts' job: what is left here is a ticket or context.
        assert!(["P2", "P3"].contains(&severity), "{alert}: {severity}");
        let annotations = &rule["annotations"];
        assert!(
            annotations["runbook"]
                .as_str()
                .is_some_and(|r| r.len() > 80),
            "{alert} needs a runbook note"
        );
        let url = annotations["runbook_url"].as_str().expect("a runbook link");
        assert!(
            url.ends_with(&format!("#{}", alert.to_lowercase())),
            "{alert}: {url}"
        );
        let names = metric_names(rule["expr"].as_str().expect("an expression"));
        assert!(!names.is_empty(), "{alert} names no metric");
        for name in names {
            assert!(is_documented(&name), "{alert} uses undocumented {name}");
        }
        severities.insert(severity.to_owned());
    }
    assert_eq!(severities.len(), 2, "P2 and P3 rules");
}

#[test]
fn slo_rules_record_every_window_and_alert_on_every_slo() {
    let spec = spec();
    let rules = rules_of(SLO_RULES);
    let mut recorded = BTreeMap::<(String, String), BTreeSet<String>>::new();
    let mut alerts = BTreeMap::new();
    for rule in &rules {
        let expr = rule["expr"].as_str().expect("an expression");
        for name in metric_names(expr) {
            let ok = is_documented(&name) || name.starts_with("palisade:");
            assert!(ok, "SLO rules use undocumented {name}");
        }
        if let Some(record) = rule["record"].as_str() {
            let key = (
                rule["labels"]["dependency"].as_str().unwrap().to_owned(),
                rule["labels"]["sli"].as_str().unwrap().to_owned(),
            );
            recorded.entry(key).or_default().insert(record.to_owned());
        } else {
            let alert = rule["alert"].as_str().expect("a record or an alert");
            let severity = rule["labels"]["severity"].as_str().unwrap();
            assert!(["P0", "P1", "P2", "P3"].contains(&severity), "{alert}");
            let url = rule["annotations"]["runbook_url"].as_str().unwrap();
            assert!(url.contains("#slo-"), "{alert}: {url}");
            alerts.insert(alert.to_owned(), severity.to_owned());
        }
    }
    for s in &spec.slos {
        let key = (s.dependency.clone(), s.sli.as_str().to_owned());
        let series = &recorded[&key];
        for (w, _) in slo::WINDOWS {
            assert!(series.contains(&slo::error_ratio_series(w)), "{key:?} {w}");
        }
        assert_eq!(alerts[&s.page_alert()], s.page, "{key:?}");
        assert_eq!(alerts[&s.ticket_alert()], s.ticket, "{key:?}");
    }
    assert_eq!(alerts.len(), 2 * spec.slos.len());
}

#[test]
fn the_layer_dashboard_names_only_documented_metrics() {
    let dash: Value = serde_json::from_str(DASHBOARD).expect("dashboard is JSON");
    let mut seen = BTreeSet::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            for name in metric_names(target["expr"].as_str().expect("expr")) {
                assert!(is_documented(&name), "dashboard uses undocumented {name}");
                seen.insert(name);
            }
        }
    }
    for layer in [
        "timeout",
        "retry",
        "circuit_breaker",
        "rate_limit",
        "degrade",
        "chaos",
    ] {
        let prefix = format!("palisade_{layer}_");
        assert!(
            seen.iter().any(|n| n.starts_with(&prefix)),
            "no panel for {layer}"
        );
    }
}

#[test]
fn the_slo_dashboard_shows_every_slo_from_recorded_series() {
    let spec = spec();
    let recorded: BTreeSet<String> = rules_of(SLO_RULES)
        .iter()
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect();
    let dash: Value = serde_json::from_str(SLO_DASHBOARD).expect("SLO dashboard is JSON");
    let mut shown = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for panel in dash["panels"].as_array().expect("panels") {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "duplicate id");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for name in metric_names(expr) {
                if name.starts_with("palisade:") {
                    assert!(recorded.contains(&name), "{name} is not recorded");
                } else {
                    assert!(is_documented(&name), "undocumented {name}");
                }
            }
            if let Some(at) = expr.find("dependency=\"") {
                let rest = &expr[at..];
                shown.insert(rest[..rest.find('}').unwrap()].to_owned());
            }
        }
    }
    for s in &spec.slos {
        let key = format!(
            "dependency=\"{}\", sli=\"{}\"",
            s.dependency,
            s.sli.as_str()
        );
        assert!(shown.contains(&key), "no panel for {key}");
    }
}

// ===== promtool =====

/// Whether promtool is installed. Missing: a failure when `CI` is set, else a skip that
/// says why.
#[allow(clippy::print_stderr)] // a skipped check says why
fn promtool() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing and CI is set: install it (Debian package `prometheus`)"
        );
        eprintln!(
            "SKIPPED: promtool is not installed (Debian package `prometheus`); rule checks and rule unit tests need it"
        );
    }
    found
}

fn run_promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `promtool test rules` on `tests` (JSON is YAML) against `rule_file`.
fn promtool_test(rule_file: &Path, tests: &[Value]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("test.yml");
    let doc = json!({
        "rule_files": [rule_file.to_string_lossy()],
        "evaluation_interval": "1m",
        "tests": tests,
    });
    let text = serde_json::to_string_pretty(&doc).expect("JSON");
    std::fs::write(&file, text).expect("write the promtool test file");
    run_promtool(&["test", "rules", &file.to_string_lossy()]);
}

#[test]
fn promtool_accepts_the_rule_files() {
    if !promtool() {
        return;
    }
    for file in ["alerts.yml", "slo-rules.yml"] {
        run_promtool(&["check", "rules", &ops_dir().join(file).to_string_lossy()]);
    }
}

/// A promtool input series.
fn series(name: &str, values: &[Option<f64>]) -> Value {
    let text: Vec<String> = values
        .iter()
        .map(|v| match v {
            Some(v) => format!("{v}"),
            None => "_".to_owned(),
        })
        .collect();
    json!({"series": name, "values": text.join(" ")})
}

/// A counter growing by `per_minute[i]` at minute `i` (from 0 at minute 0).
fn counter(per_minute: &[f64]) -> Vec<Option<f64>> {
    let mut total = 0.0;
    per_minute
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if i > 0 {
                total += n;
            }
            Some((total * 1000.0).round() / 1000.0)
        })
        .collect()
}

/// Requests per minute in the synthetic series.
const RATE: f64 = 1000.0;

/// The input series of `slo` for a profile: the bad share of each minute (event SLIs),
/// or whether the minute is bad (>= 0.5; time SLIs).
fn slo_inputs(spec: &SloSpec, s: &Slo, bad: &[f64]) -> Vec<Value> {
    let dep = &spec.dependencies[&s.dependency];
    let all = vec![RATE; bad.len()];
    let bad_n: Vec<f64> = bad.iter().map(|b| b * RATE).collect();
    let good_n: Vec<f64> = bad.iter().map(|b| (1.0 - b) * RATE).collect();
    let requests = |good: &[f64], failed: &[f64]| match (&dep.request_timeout, &dep.retry) {
        (Some(t), _) => vec![
            series(
                &format!("palisade_timeout_calls_total{{name=\"{t}\",outcome=\"completed\"}}"),
                &counter(good),
            ),
            series(
                &format!("palisade_timeout_calls_total{{name=\"{t}\",outcome=\"elapsed\"}}"),
                &counter(failed),
            ),
        ],
        (None, Some(r)) => {
            let mut out = vec![series(
                &format!("palisade_retry_attempts_count{{name=\"{r}\"}}"),
                &counter(&all),
            )];
            let b = dep.circuit_breaker.as_deref().expect("a breaker");
            out.push(series(
                &format!("palisade_circuit_breaker_rejected_total{{name=\"{b}\"}}"),
                &counter(failed),
            ));
            out
        }
        (None, None) => panic!("no requests"),
    };
    let zeros = vec![0.0; bad.len()];
    match s.sli {
        Sli::Availability => requests(&good_n, &bad_n),
        Sli::Degraded => {
            let mut out = requests(&all, &zeros);
            let f = dep.fallback.as_deref().expect("a fallback layer");
            out.push(series(
                &format!("palisade_degrade_fallback_total{{name=\"{f}\",trigger=\"failure\"}}"),
                &counter(&bad_n),
            ));
            out
        }
        Sli::Latency => {
            let l = &dep.latency;
            let le = s.threshold.expect("a latency threshold");
            vec![
                series(
                    &format!("palisade_timeout_call_duration_seconds_count{{name=\"{l}\"}}"),
                    &counter(&all),
                ),
                series(
                    &format!(
                        "palisade_timeout_call_duration_seconds_bucket{{name=\"{l}\",le=\"{le}\"}}"
                    ),
                    &counter(&good_n),
                ),
            ]
        }
        Sli::Freshness => {
            let max_age = s.threshold.expect("a freshness threshold");
            let values: Vec<Option<f64>> = bad
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let now = i as f64 * 60.0;
                    Some(if *b >= 0.5 { now - max_age - 60.0 } else { now })
                })
                .collect();
            vec![series(s.metric.as_deref().expect("a gauge"), &values)]
        }
        Sli::Completeness => {
            let values: Vec<Option<f64>> = bad
                .iter()
                .map(|b| Some(if *b >= 0.5 { 0.5 } else { 1.0 }))
                .collect();
            vec![series(s.metric.as_deref().expect("a gauge"), &values)]
        }
    }
}

/// `alertname` at `minute`: firing for `s` when `fires`, else silent.
fn expect(spec: &SloSpec, s: &Slo, page: bool, minute: u64, fires: bool) -> Value {
    let name = if page {
        s.page_alert()
    } else {
        s.ticket_alert()
    };
    let mut exp = Vec::new();
    if fires {
        let rule = spec
            .alert_rules()
            .into_iter()
            .find(|r| r.name == name)
            .expect("every SLO has its alerts");
        let annotations: BTreeMap<_, _> = rule.annotations.into_iter().collect();
        exp.push(json!({
            "exp_labels": {
                "severity": if page { &s.page } else { &s.ticket },
                "dependency": s.dependency,
                "sli": s.sli.as_str(),
            },
            "exp_annotations": annotations,
        }));
    }
    json!({"eval_time": format!("{minute}m"), "alertname": name, "exp_alerts": exp})
}

/// A profile of `minutes + 1` samples: `base`, with `value` over `from..=to`.
fn profile(minutes: usize, base: f64, spans: &[(usize, usize, f64)]) -> Vec<f64> {
    let mut p = vec![base; minutes + 1];
    for (from, to, value) in spans {
        for v in &mut p[*from..=*to] {
            *v = *value;
        }
    }
    p
}

fn scenario(spec: &SloSpec, s: &Slo, name: &str, bad: &[f64], checks: &[Value]) -> Value {
    let mut inputs = slo_inputs(spec, s, bad);
    // Keeps a test with an absent metric valid.
    inputs.push(series(
        "up{job=\"palisade-test\"}",
        &vec![Some(1.0); bad.len()],
    ));
    json!({
        "name": format!("{} {}: {name}", s.dependency, s.sli.as_str()),
        "interval": "1m",
        "input_series": inputs,
        "alert_rule_test": checks,
    })
}

#[test]
fn every_slo_alert_fires_when_it_should_and_only_then() {
    if !promtool() {
        return;
    }
    let spec = spec();
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for s in &spec.slos {
        let mut tests = Vec::new();
        let b = s.budget();
        let time = s.sli.is_time_based();
        let healthy = if time { 0.0 } else { 0.2 * b };
        // A total outage must page within the workbook's detection time: the long window
        // (1h) reaches 14.4x the budget after 14.4 * budget of an hour (52 s at 99.9%,
        // 8.6 min at 99%); plus two evaluations.
        let fast = s.burn_factor(slo::BURN_CONDITIONS[0].2, 60);
        let page_within = (fast * b * 60.0).ceil() as u64 + 2;

        tests.push(scenario(
            &spec,
            s,
            "a healthy stretch is silent",
            &profile(240, healthy, &[]),
            &[60, 180, 240]
                .iter()
                .flat_map(|m| {
                    [
                        expect(&spec, s, true, *m, false),
                        expect(&spec, s, false, *m, false),
                    ]
                })
                .collect::<Vec<_>>(),
        ));
        tests.push(scenario(
            &spec,
            s,
            "a fast burn pages within minutes",
            &profile(180, healthy, &[(61, 180, 1.0)]),
            &[
                expect(&spec, s, true, 60, false),
                expect(&spec, s, true, 60 + page_within, true),
                expect(&spec, s, true, 120, true),
            ],
        ));
        // Twice the sustainable rate: the budget runs out in half the window. Bad minutes
        // come one in 1 / (2b).
        let slow = if time {
            let every = (1.0 / (2.0 * b)).round() as usize;
            (0..=240)
                .map(|i| if i > 0 && i % every == 0 { 1.0 } else { 0.0 })
                .collect()
        } else {
            profile(240, 2.0 * b, &[])
        };
        tests.push(scenario(
            &spec,
            s,
            "a slow burn opens a ticket and does not page",
            &slow,
            &[
                expect(&spec, s, false, 240, true),
                expect(&spec, s, true, 240, false),
                expect(&spec, s, true, 120, false),
            ],
        ));
        let blip = if time { 1.0 } else { 10.0 * b };
        tests.push(scenario(
            &spec,
            s,
            "a brief blip is silent",
            &profile(340, healthy, &[(301, 302, blip)]),
            &[302, 305, 310, 330, 340]
                .iter()
                .flat_map(|m| {
                    [
                        expect(&spec, s, true, *m, false),
                        expect(&spec, s, false, *m, false),
                    ]
                })
                .collect::<Vec<_>>(),
        ));
        tests.push(scenario(
            &spec,
            s,
            "the page resolves after recovery",
            &profile(150, healthy, &[(61, 90, 1.0)]),
            &[
                expect(&spec, s, true, 85, true),
                // Within the short windows (5m, 30m) of the recovery.
                expect(&spec, s, true, 125, false),
            ],
        ));
        if let Some(t) = s
            .threshold
            .filter(|t| s.sli == Sli::Latency && t.fract() == 0.0)
        {
            // Prometheus 3 stores a whole bucket bound as `1.0`, the exporter writes `1`.
            let l = &spec.dependencies[&s.dependency].latency;
            let bad = profile(120, healthy, &[(61, 120, 1.0)]);
            let all = vec![RATE; bad.len()];
            let good: Vec<f64> = bad.iter().map(|b| (1.0 - b) * RATE).collect();
            tests.push(json!({
                "name": format!("{} latency: bucket bound written as {t}.0", s.dependency),
                "interval": "1m",
                "input_series": [
                    series(&format!("palisade_timeout_call_duration_seconds_count{{name=\"{l}\"}}"), &counter(&all)),
                    series(&format!("palisade_timeout_call_duration_seconds_bucket{{name=\"{l}\",le=\"{t}.0\"}}"), &counter(&good)),
                ],
                "alert_rule_test": [
                    expect(&spec, s, true, 60, false),
                    expect(&spec, s, true, 60 + page_within, true),
                ],
            }));
        }
        if s.sli == Sli::Freshness {
            let max_age = s.threshold.unwrap();
            let frozen: Vec<Option<f64>> = (0..=180)
                .map(|i| Some(f64::from(i.min(60)) * 60.0))
                .collect();
            let past = 60 + (max_age / 60.0) as u64;
            tests.push(json!({
                "name": format!("{} freshness: loads stop; data older than the SLO pages", s.dependency),
                "interval": "1m",
                "input_series": [series(s.metric.as_deref().unwrap(), &frozen)],
                "alert_rule_test": [
                    expect(&spec, s, true, past - 1, false),
                    expect(&spec, s, true, past + 15, true),
                ],
            }));
            tests.push(json!({
                "name": format!("{} freshness: no data at all pages", s.dependency),
                "interval": "1m",
                "input_series": [series("up{job=\"palisade-test\"}", &vec![Some(1.0); 61])],
                "alert_rule_test": [expect(&spec, s, true, 10, true)],
            }));
        }
        // Each SLO's rules alone (the rules of one SLO do not read another's), so the
        // SLOs' tests run side by side; `the_generated_files_are_current` ties them to
        // the committed file.
        let one = SloSpec {
            slos: vec![s.clone()],
            ..spec.clone()
        };
        let text = one.rules_yaml();
        let groups = &text[text.find("groups:\n").unwrap() + "groups:\n".len()..];
        let (recording, alerts) = groups
            .split_once("  - name: palisade-slo-alerts\n    rules:\n")
            .unwrap();
        assert!(SLO_RULES.contains(recording) && SLO_RULES.contains(alerts));
        let rules = dir
            .path()
            .join(format!("{}-{}.yml", s.dependency, s.sli.as_str()));
        std::fs::write(&rules, &text).unwrap();
        runs.push((rules, tests));
    }
    std::thread::scope(|scope| {
        for (rules, tests) in runs {
            scope.spawn(move || promtool_test(&rules, &tests));
        }
    });
}

/// The labels and annotations `alert` has for `name`, as promtool expects them.
fn threshold_alert(alert: &str, labels: &[(&str, &str)]) -> Value {
    let rule = rules_of(ALERTS)
        .into_iter()
        .find(|r| r["alert"].as_str() == Some(alert))
        .expect("the alert is in alerts.yml");
    let mut exp_labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    exp_labels.insert(
        "severity".into(),
        rule["labels"]["severity"]
            .as_str()
            .expect("a severity")
            .into(),
    );
    let name = labels
        .iter()
        .find(|(k, _)| *k == "name")
        .map_or("", |(_, v)| *v);
    let mut exp_annotations = BTreeMap::new();
    for (k, v) in rule["annotations"].as_hash().expect("annotations") {
        let text = v
            .as_str()
            .expect("text")
            .replace("{{ $labels.name }}", name);
        exp_annotations.insert(k.as_str().expect("a key").to_owned(), text);
    }
    json!({"exp_labels": exp_labels, "exp_annotations": exp_annotations})
}

fn values(segments: &[(f64, usize)]) -> Vec<Option<f64>> {
    // A counter rising by `step` per sample for `n` samples, segment after segment.
    let mut out = vec![Some(0.0)];
    let mut total = 0.0;
    for (step, n) in segments {
        for _ in 0..*n {
            total += step;
            out.push(Some(total));
        }
    }
    out
}

#[test]
fn every_threshold_alert_fires_when_it_should_and_only_then() {
    if !promtool() {
        return;
    }
    let minute = |m: u64, alert: &str, firing: &[&str]| {
        json!({
            "eval_time": format!("{m}m"),
            "alertname": alert,
            "exp_alerts": firing.iter().map(|n| threshold_alert(alert, &[("name", n)])).collect::<Vec<_>>(),
        })
    };
    let gauge = |v: f64, n: usize| vec![Some(v); n];
    let flat = |v: f64, n: usize, then: f64, m: usize| {
        let mut g = vec![Some(v); n];
        g.extend(vec![Some(then); m]);
        g
    };
    let day = 24 * 12; // 5-minute samples in a day
    let tests = vec![
        json!({
            "name": "stale answers over an hour old open a ticket; younger ones do not",
            "interval": "1m",
            "input_series": [
                series("palisade_degrade_stale_age_seconds_count{name=\"old\"}", &values(&[(10.0, 60)])),
                series("palisade_degrade_stale_age_seconds_sum{name=\"old\"}", &values(&[(72000.0, 60)])),
                series("palisade_degrade_stale_age_seconds_count{name=\"young\"}", &values(&[(10.0, 60)])),
                series("palisade_degrade_stale_age_seconds_sum{name=\"young\"}", &values(&[(600.0, 60)])),
            ],
            "alert_rule_test": [
                minute(5, "PalisadeServingStaleData", &[]),
                minute(30, "PalisadeServingStaleData", &["old"]),
            ],
        }),
        json!({
            "name": "manual degraded mode left on for 30 minutes opens a ticket",
            "interval": "1m",
            "input_series": [
                series("palisade_degrade_mode{name=\"left-on\"}", &gauge(1.0, 61)),
                series("palisade_degrade_mode{name=\"switched-back\"}", &flat(1.0, 20, 0.0, 41)),
            ],
            "alert_rule_test": [
                minute(20, "PalisadeDegradedModeOn", &[]),
                minute(45, "PalisadeDegradedModeOn", &["left-on"]),
            ],
        }),
        json!({
            "name": "rate-limit rejections doubling against yesterday open a ticket",
            "interval": "5m",
            "input_series": [
                series("palisade_rate_limit_rejected_total{name=\"doubled\",kind=\"rate\"}", &values(&[(150.0, day), (900.0, 24)])),
                series("palisade_rate_limit_rejected_total{name=\"steady\",kind=\"rate\"}", &values(&[(150.0, day + 24)])),
            ],
            "alert_rule_test": [
                minute(24 * 60, "PalisadeRateLimitRejectionsRising", &[]),
                minute(24 * 60 + 60, "PalisadeRateLimitRejectionsRising", &["doubled"]),
            ],
        }),
        json!({
            "name": "a breaker open for 15 minutes is logged as context",
            "interval": "1m",
            "input_series": [
                series("palisade_circuit_breaker_state{name=\"stuck\",state=\"open\"}", &gauge(1.0, 61)),
                series("palisade_circuit_breaker_state{name=\"recovered\",state=\"open\"}", &flat(1.0, 10, 0.0, 51)),
            ],
            "alert_rule_test": [
                minute(10, "PalisadeCircuitOpenTooLong", &[]),
                minute(30, "PalisadeCircuitOpenTooLong", &["stuck"]),
            ],
        }),
        json!({
            "name": "an exhausted retry budget is logged as context",
            "interval": "1m",
            "input_series": [
                series("palisade_retry_budget_rejected_total{name=\"starved\"}", &values(&[(1.0, 60)])),
                series("palisade_retry_budget_rejected_total{name=\"fine\"}", &values(&[(0.0, 60)])),
            ],
            "alert_rule_test": [
                minute(5, "PalisadeRetryBudgetExhausted", &[]),
                minute(30, "PalisadeRetryBudgetExhausted", &["starved"]),
            ],
        }),
        json!({
            "name": "p95 latency 50% above yesterday's is logged as context",
            "interval": "5m",
            "input_series": [
                series("palisade_timeout_call_duration_seconds_bucket{name=\"slower\",le=\"0.1\"}", &values(&[(100.0, day), (0.0, 24)])),
                series("palisade_timeout_call_duration_seconds_bucket{name=\"slower\",le=\"0.5\"}", &values(&[(100.0, day + 24)])),
                series("palisade_timeout_call_duration_seconds_bucket{name=\"slower\",le=\"+Inf\"}", &values(&[(100.0, day + 24)])),
                series("palisade_timeout_call_duration_seconds_bucket{name=\"same\",le=\"0.1\"}", &values(&[(100.0, day + 24)])),
                series("palisade_timeout_call_duration_seconds_bucket{name=\"same\",le=\"0.5\"}", &values(&[(100.0, day + 24)])),
                series("palisade_timeout_call_duration_seconds_bucket{name=\"same\",le=\"+Inf\"}", &values(&[(100.0, day + 24)])),
            ],
            "alert_rule_test": [
                minute(24 * 60, "PalisadeLatencyP95Up", &[]),
                minute(24 * 60 + 60, "PalisadeLatencyP95Up", &["slower"]),
            ],
        }),
        json!({
            "name": "a stream group far behind its stream for 15 minutes opens a ticket",
            "interval": "1m",
            "input_series": [
                series("stream_lag_entries{name=\"ledger/behind\"}", &gauge(50000.0, 61)),
                series("stream_lag_entries{name=\"ledger/caught-up\"}", &flat(50000.0, 10, 20.0, 51)),
            ],
            "alert_rule_test": [
                minute(10, "StreamConsumerLagHigh", &[]),
                minute(30, "StreamConsumerLagHigh", &["ledger/behind"]),
            ],
        }),
        json!({
            "name": "entries pending unacknowledged for 15 minutes open a ticket",
            "interval": "1m",
            "input_series": [
                series("stream_pending_entries{name=\"ledger/stuck\"}", &gauge(5000.0, 61)),
                series("stream_pending_entries{name=\"ledger/flowing\"}", &gauge(40.0, 61)),
            ],
            "alert_rule_test": [
                minute(10, "StreamPendingEntriesHigh", &[]),
                minute(30, "StreamPendingEntriesHigh", &["ledger/stuck"]),
            ],
        }),
        json!({
            "name": "a dead letter opens a ticket",
            "interval": "1m",
            "input_series": [
                series("stream_dead_letters_total{name=\"ledger/poisoned\"}", &values(&[(0.0, 20), (1.0, 1), (0.0, 39)])),
                series("stream_dead_letters_total{name=\"ledger/clean\"}", &values(&[(0.0, 60)])),
            ],
            "alert_rule_test": [
                minute(15, "StreamDeadLetters", &[]),
                minute(30, "StreamDeadLetters", &["ledger/poisoned"]),
            ],
        }),
        json!({
            "name": "steady redeliveries are logged as context",
            "interval": "1m",
            "input_series": [
                series("stream_redeliveries_total{name=\"ledger/flapping\"}", &values(&[(120.0, 60)])),
                series("stream_redeliveries_total{name=\"ledger/calm\"}", &values(&[(3.0, 60)])),
            ],
            "alert_rule_test": [
                minute(10, "StreamRedeliveriesHigh", &[]),
                minute(40, "StreamRedeliveriesHigh", &["ledger/flapping"]),
            ],
        }),
    ];
    // Every alert in the file has a case.
    let covered: BTreeSet<String> = tests
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap().clone())
        .map(|c| c["alertname"].as_str().unwrap().to_owned())
        .collect();
    let all: BTreeSet<String> = rules_of(ALERTS)
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(covered, all);
    promtool_test(&ops_dir().join("alerts.yml"), &tests);
}

// ===== end to end =====

async fn scrape(addr: SocketAddr) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// `series → value` of one exposition.
fn parse_exposition(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            value.is_finite().then(|| (series.to_owned(), value))
        })
        .collect()
}

/// The sum over series starting with `prefix` and containing `label`, in one scrape.
fn total(scrape: &BTreeMap<String, f64>, prefix: &str, label: &str) -> f64 {
    scrape
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && k.contains(label))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_outage_in_a_real_run_pages_for_the_sink_and_not_the_source() {
    let addr = telemetry::serve_metrics(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("etl.sqlite");
    let outage = Duration::from_millis(500)..Duration::from_millis(1800);
    let mut config = etl_common::config(
        db.to_str().unwrap(),
        &dir.path().join("journal.jsonl"),
        5,
        ChaosScenario {
            sink_outage: Some(outage.clone()),
            ..ChaosScenario::none()
        },
    );
    // About 2.5 s of pages at 10 a second, two batches a page: a steady stream of writes.
    config.rate = 10;
    config.burst = Some(1);
    config.batch_size = 10;
    config.dataset.rows = 500;

    let started = tokio::time::Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let run = async {
        let summary = etl::run(&config).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        summary
    };
    // One scrape every 100 ms stands for one minute of Prometheus time: the SLO rules'
    // ratios do not depend on the time scale. Bounded: at most 30 s of scraping.
    let scraper = async {
        let mut scrapes: Vec<(Duration, BTreeMap<String, f64>)> = Vec::new();
        let mut every = tokio::time::interval(Duration::from_millis(100));
        // Late ticks do not bunch up: scrapes stay at least 100 ms apart.
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut after_end = 0;
        while scrapes.len() < 300 && after_end < 3 {
            every.tick().await;
            if let Some(body) = scrape(addr).await {
                scrapes.push((started.elapsed(), parse_exposition(&body)));
            }
            if done.load(std::sync::atomic::Ordering::Relaxed) {
                after_end += 1;
            }
        }
        scrapes
    };
    let (summary, scrapes) = tokio::join!(run, scraper);
    let summary = summary.unwrap();
    assert!(summary.ok(), "{summary}");
    assert!(
        summary.spilled_batches > 0,
        "the outage spilled:\n{summary}"
    );
    // Spilled, replayed, complete: the completeness SLI's gauge says so after the run.
    let last = &scrapes.last().expect("scrapes").1;
    assert_eq!(last.get("etl_run_completeness_ratio"), Some(&1.0));
    assert_eq!(
        last.get("etl_run_expected_records"),
        last.get("etl_run_loaded_records")
    );

    // The scrape taken once the outage has lasted 900 ms (nine "minutes"): its 5m window
    // lies inside the outage.
    let at = scrapes
        .iter()
        .position(|(t, _)| *t >= outage.start + Duration::from_millis(900))
        .expect("scrapes during the outage");
    assert!(
        scrapes[at].0 < outage.end,
        "the run was too slow to scrape the outage"
    );
    let before = scrapes
        .iter()
        .rposition(|(t, _)| *t < outage.start)
        .expect("a scrape before the outage");

    // In Rust first (also without promtool): over the last five scrapes, the sink's bad
    // share (breaker rejections and exhausted retries over requests) is far above 14.4x
    // the budget of a 99.9% SLO, and the source's is nil.
    let window = |prefix: &str, label: &str| {
        total(&scrapes[at].1, prefix, label) - total(&scrapes[at - 5].1, prefix, label)
    };
    let sink_requests = window("palisade_retry_attempts_count", "name=\"sink\"");
    let sink_bad = window("palisade_circuit_breaker_rejected_total", "name=\"sink\"")
        + window("palisade_retry_exhausted_total", "name=\"sink\"");
    assert!(sink_requests > 0.0, "sink writes during the outage");
    assert!(
        sink_bad / sink_requests > 14.4 * 0.001,
        "{sink_bad} of {sink_requests}"
    );
    assert_eq!(
        window("palisade_retry_exhausted_total", "name=\"source\""),
        0.0
    );

    if !promtool() {
        return;
    }
    // Every scraped series, one sample per scrape ("_" where it did not exist yet).
    let names: BTreeSet<&String> = scrapes.iter().flat_map(|(_, s)| s.keys()).collect();
    let inputs: Vec<Value> = names
        .iter()
        .map(|name| {
            let values: Vec<Option<f64>> =
                scrapes.iter().map(|(_, s)| s.get(*name).copied()).collect();
            series(name, &values)
        })
        .collect();
    let spec = spec();
    let slo_of = |dep: &str, sli: Sli| {
        spec.slos
            .iter()
            .find(|s| s.dependency == dep && s.sli == sli)
            .unwrap()
            .clone()
    };
    let sink = slo_of("sink", Sli::Availability);
    let degraded = slo_of("sink", Sli::Degraded);
    let source = slo_of("source", Sli::Availability);
    let at_min = at as u64;
    let before_min = before as u64;
    let test = json!({
        "name": "end to end: a sink outage in a real run",
        "interval": "1m",
        "input_series": inputs,
        "alert_rule_test": [
            expect(&spec, &sink, true, before_min, false),
            expect(&spec, &sink, true, at_min, true),
            expect(&spec, &degraded, true, at_min, true),
            expect(&spec, &source, true, at_min, false),
            expect(&spec, &source, false, at_min, false),
        ],
    });
    promtool_test(&ops_dir().join("slo-rules.yml"), &[test]);
}
