//! The operations kit is checked against palisade's documented metric list: the alert rules
//! and the dashboard parse, and every metric they name exists.

use std::collections::BTreeSet;

use palisade::core::metrics::MetricKind;

const ALERTS: &str = include_str!("../ops/alerts.yml");
const DASHBOARD: &str = include_str!("../ops/dashboard.json");

/// The `palisade_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("palisade_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Whether `name` is a documented metric, or a histogram's `_bucket`/`_sum`/`_count` series.
fn is_documented(name: &str) -> bool {
    let all = palisade::metrics();
    if all.iter().any(|m| m.name == name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            all.iter()
                .any(|m| m.name == base && m.kind == MetricKind::Histogram)
        })
    })
}

#[test]
fn alert_rules_parse_and_name_only_documented_metrics() {
    let docs = yaml_rust2::YamlLoader::load_from_str(ALERTS).expect("alerts.yml is YAML");
    let groups = docs[0]["groups"].as_vec().expect("a list of groups");
    let mut severities = BTreeSet::new();
    let mut rules = 0;
    for group in groups {
        for rule in group["rules"].as_vec().expect("rules") {
            let alert = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"].as_str().expect("an expression");
            let severity = rule["labels"]["severity"].as_str().expect("a severity");
            assert!(
                ["P0", "P1", "P2"].contains(&severity),
                "{alert}: severity {severity}"
            );
            assert!(
                rule["annotations"]["runbook"]
                    .as_str()
                    .is_some_and(|r| r.len() > 80),
                "{alert} needs a runbook note"
            );
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{alert} names no palisade metric");
            for name in names {
                assert!(
                    is_documented(&name),
                    "{alert} uses undocumented metric {name}"
                );
            }
            severities.insert(severity.to_owned());
            rules += 1;
        }
    }
    assert_eq!(severities.len(), 3, "P0, P1 and P2 rules");
    assert!(rules >= 8);
}

#[test]
fn the_dashboard_parses_and_names_only_documented_metrics() {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let mut seen = BTreeSet::new();
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for name in metric_names(expr) {
                assert!(
                    is_documented(&name),
                    "dashboard uses undocumented metric {name}"
                );
                seen.insert(name);
            }
        }
    }
    // Every crate's metrics appear on the dashboard.
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
fn the_metric_name_scanner_finds_histogram_series() {
    let names = metric_names("rate(palisade_x_seconds_bucket[5m]) / palisade_y_total");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["palisade_x_seconds_bucket", "palisade_y_total"]
    );
    assert!(is_documented(
        "palisade_timeout_call_duration_seconds_bucket"
    ));
    assert!(!is_documented("palisade_timeout_calls_total_bucket"));
    assert!(!is_documented("palisade_nonexistent_total"));
}
