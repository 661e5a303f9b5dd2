//! The registry's JSON snapshot: serde structs of every policy's live state.

use std::collections::BTreeMap;

use palisade_circuit_breaker::State;
use palisade_core::config::duration;
use serde::Serialize;

use super::Events;
use crate::policy::{Policy, PolicyHandles};

/// Every policy's live state, by name; `serde_json::to_string_pretty` writes the admin
/// view (see [`Registry::snapshot_json`](super::Registry::snapshot_json)).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RegistrySnapshot {
    /// The policies, by name.
    pub policies: BTreeMap<String, PolicySnapshot>,
}

/// One policy's live state: a section per layer it has, its recent events and its
/// config in effect.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PolicySnapshot {
    /// The slots the policy fills, outermost first.
    pub layers: Vec<&'static str>,
    /// The overall timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutState>,
    /// The retry layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryState>,
    /// The circuit breaker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerState>,
    /// The rate limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitState>,
    /// The concurrency limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<ConcurrencyLimitState>,
    /// The adaptive limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive_limit: Option<AdaptiveLimitState>,
    /// The per-attempt timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_timeout: Option<TimeoutState>,
    /// The policy's degrade switch is in degraded mode
    /// ([`Registry::degrade_switch`](super::Registry::degrade_switch); `None` without the
    /// `degrade` feature).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<bool>,
    /// Recent events, oldest first: breaker transitions with their reasons, resets by a
    /// reload (at most [`EVENTS_KEPT`](super::EVENTS_KEPT)).
    pub events: Vec<PolicyEvent>,
    /// The config in effect, as a policies file writes it.
    pub config: serde_json::Value,
}

/// A timeout's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TimeoutState {
    /// The timeout in effect (`"2s"`).
    pub timeout: String,
}

/// A retry layer's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RetryState {
    /// The most attempts per request (`None`: bounded by time alone).
    pub max_attempts: Option<u32>,
    /// Retries the budget allows now (`None`: no budget).
    pub budget_available: Option<f64>,
}

/// A circuit breaker's state and window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CircuitBreakerState {
    /// The state (`closed`, `open`, `half_open`, `forced_open`, `disabled`).
    pub state: State,
    /// Metrics-only mode: the state machine runs, nothing is rejected.
    pub metrics_only: bool,
    /// Calls in the window.
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// The window's failure rate, percent.
    pub failure_rate: f64,
    /// The window's slow-call rate, percent.
    pub slow_call_rate: f64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// While open: how long until a probe is admitted.
    pub retry_after: Option<String>,
}

/// A rate limit's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RateLimitState {
    /// The rate set: `cells` per `period`.
    pub cells: u32,
    /// The rate's period.
    pub period: String,
    /// The emission interval in effect (above `period / cells` while ramping up).
    pub interval: String,
    /// `true` while the rate climbs to the one set.
    pub ramping: bool,
    /// Calls waiting for their cells.
    pub waiting: usize,
}

/// A concurrency limit's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ConcurrencyLimitState {
    /// The limit.
    pub max_in_flight: usize,
    /// Permits held (calls in flight and readied services).
    pub in_flight: usize,
    /// Calls waiting for a permit.
    pub waiting: usize,
}

/// An adaptive limit's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AdaptiveLimitState {
    /// The current limit.
    pub limit: usize,
    /// Slots held.
    pub in_flight: usize,
    /// The lowest the limit goes.
    pub min_limit: usize,
    /// The highest the limit goes.
    pub max_limit: usize,
}

/// A recent event of a policy's layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PolicyEvent {
    /// The layer's slot.
    pub layer: &'static str,
    /// What happened (`"closed -> open"`).
    pub event: String,
    /// Why.
    pub reason: String,
    /// How long ago (`"1500ms"`).
    pub ago: String,
}

pub(super) fn policy(
    policy: &Policy,
    handles: &PolicyHandles,
    events: &Events,
    degraded: Option<bool>,
) -> PolicySnapshot {
    let timeout = |h: &palisade_timeout::TimeoutHandle| TimeoutState {
        timeout: duration::format(h.timeout()),
    };
    PolicySnapshot {
        layers: policy.layers(),
        timeout: handles.timeout().map(timeout),
        retry: handles.retry().map(|h| {
            let s = h.snapshot();
            RetryState {
                max_attempts: (!s.config.until_deadline()).then(|| s.config.max_attempts()),
                budget_available: s.budget_available,
            }
        }),
        circuit_breaker: handles.circuit_breaker().map(|h| {
            let w = h.snapshot();
            CircuitBreakerState {
                state: w.state,
                metrics_only: w.metrics_only,
                calls: w.calls,
                failures: w.failures,
                slow_calls: w.slow_calls,
                failure_rate: w.failure_rate,
                slow_call_rate: w.slow_call_rate,
                consecutive_failures: w.consecutive_failures,
                retry_after: h.retry_after().map(duration::format),
            }
        }),
        rate_limit: handles.rate_limit().map(|h| {
            let s = h.snapshot();
            RateLimitState {
                cells: s.cells,
                period: duration::format(s.period),
                interval: duration::format(s.interval),
                ramping: s.ramping,
                waiting: s.waiting,
            }
        }),
        concurrency_limit: handles.concurrency_limit().map(|h| ConcurrencyLimitState {
            max_in_flight: h.max_in_flight(),
            in_flight: h.in_flight(),
            waiting: h.waiting(),
        }),
        adaptive_limit: handles.adaptive_limit().map(|h| {
            let config = h.config();
            AdaptiveLimitState {
                limit: h.limit(),
                in_flight: h.in_flight(),
                min_limit: config.min_limit(),
                max_limit: config.max_limit(),
            }
        }),
        attempt_timeout: handles.attempt_timeout().map(timeout),
        degraded,
        events: events.list(),
        config: policy.to_value(),
    }
}
