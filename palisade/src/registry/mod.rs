//! A registry of named policies: built once, shared by name, reloaded in place, and
//! observed as a JSON snapshot.
//!
//! ```
//! use palisade::policy::Policies;
//! use palisade::registry::Registry;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let registry = Registry::from_policies(Policies::from_toml(r#"
//!     [policies.payments.circuit_breaker]
//!     minimum_calls = 5
//!     [policies.payments.retry]
//!     max_attempts = 3
//! "#).unwrap());
//!
//! // Every user of "payments" shares one breaker and one retry budget.
//! let layer = registry.get("payments").expect("defined in the file");
//! let svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, palisade::BoxError>(x) }));
//! assert_eq!(svc.oneshot(1).await.unwrap(), 1);
//!
//! // Later: a new file, applied in place (the breaker keeps its state and window).
//! let report = registry.reload(Policies::from_toml(r#"
//!     [policies.payments.circuit_breaker]
//!     minimum_calls = 10
//!     [policies.payments.retry]
//!     max_attempts = 2
//! "#).unwrap()).expect("a compatible reload");
//! assert_eq!(report.updated().count(), 2);
//! println!("{}", registry.snapshot_json());
//! # }
//! ```
//!
//! # What a reload guarantees
//!
//! [`Registry::reload`] first checks the whole new set against the running layers; if any
//! value cannot be applied in place (a layer added to or removed from a running policy, a
//! circuit breaker's window shape, a rate limit's burst, wait, keys or ramp, a rate above
//! the one the limit was built with, an adaptive limit's algorithm, another layer name), it
//! returns every such error and **changes nothing**. Otherwise it applies the new configs
//! through the layers' handles, keeping their state (breaker state and window, limiter
//! tokens, the budget's balance), except where the new config says otherwise: a retry
//! budget whose parameters changed starts afresh, an adaptive limit with a new
//! `initial_limit` restarts from it; the [`ReloadReport`] and the policy's events say so.
//!
//! Atomicity, precisely: each layer's config is swapped atomically (a call reads a layer's
//! old or new config, never a mix). Within one policy, layers are updated innermost first
//! (attempt timeout, limits, breaker, retry, overall timeout), so a call already running
//! during a reload may meet new inner layers under old outer ones; a call started after
//! `reload` returns sees only the new policy. Reloads, inserts, removals and snapshots take
//! one lock, so a snapshot shows each policy entirely before or entirely after a reload.

mod snapshot;
#[cfg(feature = "watch")]
mod watch;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use palisade_circuit_breaker::{CircuitBreakerEvent, TransitionReason};
use palisade_core::ConfigError;
use palisade_core::config::{duration, ensure, ensure_same_name};
use tokio::time::Instant;

use crate::policy::{
    Format, LAYERS, Policies, Policy, PolicyError, PolicyErrors, PolicyHandles, PolicyLayer,
};

pub use snapshot::{
    AdaptiveLimitState, CircuitBreakerState, ConcurrencyLimitState, PolicyEvent, PolicySnapshot,
    RateLimitState, RegistrySnapshot, RetryState, TimeoutState,
};
#[cfg(feature = "watch")]
pub use watch::PolicyWatcher;

/// How many recent events (breaker transitions, resets by a reload) each policy keeps for
/// its snapshot.
pub const EVENTS_KEPT: usize = 16;

/// Named policies, each built once and shared by every user of its name; reloaded in
/// place; observed through [`snapshot`](Self::snapshot).
///
/// Cloneable: every clone (in any task or thread) is the same registry.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<BTreeMap<String, Entry>>>,
}

#[derive(Clone)]
struct Entry {
    policy: Policy,
    layer: PolicyLayer,
    events: Arc<Events>,
    /// The policy's degrade switch: kept across reloads, flipped by operators.
    #[cfg(feature = "degrade")]
    switch: palisade_degrade::Switch,
}

/// A policy's recent events, newest last.
#[derive(Default)]
pub(crate) struct Events {
    recent: Mutex<VecDeque<(Instant, PolicyEvent)>>,
}

impl Events {
    fn push(&self, layer: &'static str, event: String, reason: String) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == EVENTS_KEPT {
            recent.pop_front();
        }
        recent.push_back((
            Instant::now(),
            PolicyEvent {
                layer,
                event,
                reason,
                ago: String::new(),
            },
        ));
    }

    pub(crate) fn list(&self) -> Vec<PolicyEvent> {
        let now = Instant::now();
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent
            .iter()
            .map(|(at, event)| PolicyEvent {
                ago: duration::format(now.saturating_duration_since(*at)),
                ..event.clone()
            })
            .collect()
    }
}

fn reason_text(reason: &TransitionReason) -> String {
    match reason {
        TransitionReason::FailureRate(rate) => {
            format!("failure rate {rate:.1}% reached the threshold")
        }
        TransitionReason::SlowCallRate(rate) => {
            format!("slow-call rate {rate:.1}% reached the threshold")
        }
        TransitionReason::ConsecutiveFailures(n) => format!("{n} failures in a row"),
        TransitionReason::OpenDurationElapsed => "the open duration passed".to_owned(),
        TransitionReason::ProbesSucceeded => "the probes succeeded".to_owned(),
        TransitionReason::ProbesFailed { failure_rate, .. } => {
            format!("the probes failed ({failure_rate:.1}% failures)")
        }
        TransitionReason::Operator => "an operator".to_owned(),
        TransitionReason::UpstreamThrottle { hinted } => {
            format!(
                "the upstream asked to slow down for {}",
                duration::format(*hinted)
            )
        }
        other => format!("{other:?}"),
    }
}

/// The policy's degrade mode, when the facade has the degrade layers.
fn degraded(entry: &Entry) -> Option<bool> {
    #[cfg(feature = "degrade")]
    {
        Some(entry.switch.is_degraded())
    }
    #[cfg(not(feature = "degrade"))]
    {
        let _ = entry;
        None
    }
}

fn build(policy: Policy) -> Entry {
    let events = Arc::new(Events::default());
    let recorder = Arc::clone(&events);
    let layer = policy.layer().circuit_breaker(move |breaker| {
        breaker.on_event(move |event| {
            if let CircuitBreakerEvent::StateTransition {
                from, to, reason, ..
            } = event
            {
                recorder.push(
                    "circuit_breaker",
                    format!("{from} -> {to}"),
                    reason_text(reason),
                );
            }
        })
    });
    Entry {
        policy,
        layer,
        events,
        #[cfg(feature = "degrade")]
        switch: palisade_degrade::Switch::new(),
    }
}

/// What a reload did to one policy or layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeKind {
    /// A new policy, built.
    Added,
    /// A policy no longer in the set: removed from the registry.
    Removed,
    /// A layer's config, applied in place.
    Updated,
    /// A policy whose configs are all the same as before.
    Unchanged,
    /// A layer whose handle refused its new config although the check passed (a handle
    /// updated by other code meanwhile); the layer keeps its config.
    Failed,
}

/// One line of a [`ReloadReport`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Change {
    /// The policy.
    pub policy: String,
    /// The layer's slot, for a change of one layer.
    pub layer: Option<&'static str>,
    /// What happened.
    pub kind: ChangeKind,
    /// What else the change did (a budget started afresh, a limit restarted) or why it
    /// failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a [`Registry::reload`] changed, policy by policy, layer by layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// The changes, by policy name; within a policy, innermost layer first.
    pub changes: Vec<Change>,
}

impl ReloadReport {
    fn push(
        &mut self,
        policy: &str,
        layer: Option<&'static str>,
        kind: ChangeKind,
        note: Option<String>,
    ) {
        self.changes.push(Change {
            policy: policy.to_owned(),
            layer,
            kind,
            note,
        });
    }

    /// The layers updated in place.
    pub fn updated(&self) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Updated)
    }

    /// The changes of one kind.
    pub fn of_kind(&self, kind: ChangeKind) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(move |c| c.kind == kind)
    }

    /// `true` when nothing changed.
    pub fn is_unchanged(&self) -> bool {
        self.changes.iter().all(|c| c.kind == ChangeKind::Unchanged)
    }
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for change in &self.changes {
            if !first {
                f.write_str("\n")?;
            }
            first = false;
            let kind = match change.kind {
                ChangeKind::Added => "added",
                ChangeKind::Removed => "removed",
                ChangeKind::Updated => "updated",
                ChangeKind::Unchanged => "unchanged",
                ChangeKind::Failed => "FAILED",
            };
            write!(f, "{}", change.policy)?;
            if let Some(layer) = change.layer {
                write!(f, ".{layer}")?;
            }
            write!(f, ": {kind}")?;
            if let Some(note) = &change.note {
                write!(f, " ({note})")?;
            }
        }
        Ok(())
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with every policy of `policies`, each built once.
    pub fn from_policies(policies: Policies) -> Self {
        let registry = Self::new();
        {
            let mut entries = registry.lock();
            for policy in policies {
                entries.insert(policy.name.clone(), build(policy));
            }
        }
        registry
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Build `policy` and add it; refused (changing nothing) when the name is empty or
    /// taken: change a running policy with [`reload`](Self::reload).
    pub fn insert(&self, policy: Policy) -> Result<PolicyLayer, PolicyErrors> {
        let path = format!("policies.{}", policy.name);
        let mut entries = self.lock();
        if policy.name.is_empty() {
            return Err(PolicyErrors::one(PolicyError::new(
                path,
                "a policy needs a non-empty name",
            )));
        }
        if entries.contains_key(&policy.name) {
            return Err(PolicyErrors::one(PolicyError::new(
                path,
                "already in the registry (reload to change it, or remove it first)",
            )));
        }
        let entry = build(policy);
        let layer = entry.layer.clone();
        tracing::info!(target: "palisade::policy", policy = %entry.policy.name, "policy added");
        entries.insert(entry.policy.name.clone(), entry);
        Ok(layer)
    }

    /// The layer of the policy named `name`: every layer handed out for one name shares
    /// the same state (one breaker, one budget, one limiter). Attach hooks by slot name
    /// before layering a service (see [`PolicyLayer`]).
    ///
    /// Listeners (`on_event`) join the shared layer's listeners: attach them once, not
    /// on every `get`.
    pub fn get(&self, name: &str) -> Option<PolicyLayer> {
        self.lock().get(name).map(|e| e.layer.clone())
    }

    /// The degrade switch of the policy named `name`: one per policy, kept across reloads.
    /// Give it to the degrade layers around the policy's stack (`FallbackConfig::builder()
    /// .switch(..)`, a stale cache's or a shedder's) so an operator can put them all into
    /// degraded mode at once; [`snapshot`](Self::snapshot) reports its mode.
    ///
    /// ```
    /// use palisade::policy::Policies;
    /// use palisade::registry::Registry;
    /// use palisade::degrade::fallback::Value;
    /// use palisade::prelude::*;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let registry = Registry::from_policies(Policies::from_toml(
    ///     "[policies.search.timeout]\ntimeout = \"1s\"",
    /// )?);
    /// let switch = registry.degrade_switch("search").expect("a known policy");
    /// let fallback = FallbackLayer::new(
    ///     FallbackConfig::builder().name("search").switch(switch.clone()).build()?,
    ///     Value::new(0u32),
    /// )
    /// .unmarked();
    /// let svc = fallback.layer(registry.get("search").expect("known").layer(
    ///     service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }),
    /// ));
    /// assert_eq!(svc.clone().oneshot(7).await?, 7);
    /// switch.degrade(); // what an operator's "degrade" does
    /// assert_eq!(svc.oneshot(7).await?, 0);
    /// assert_eq!(registry.snapshot().policies["search"].degraded, Some(true));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "degrade")]
    pub fn degrade_switch(&self, name: &str) -> Option<palisade_degrade::Switch> {
        self.lock().get(name).map(|e| e.switch.clone())
    }

    /// The handles of the policy named `name`.
    pub fn handles(&self, name: &str) -> Option<PolicyHandles> {
        self.lock().get(name).map(|e| e.layer.handles().clone())
    }

    /// The config in effect of the policy named `name`.
    pub fn policy(&self, name: &str) -> Option<Policy> {
        self.lock().get(name).map(|e| e.policy.clone())
    }

    /// Every policy in effect.
    pub fn policies(&self) -> Policies {
        self.lock().values().map(|e| e.policy.clone()).collect()
    }

    /// The policies' names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// `true` when a policy is named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// How many policies.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// `true` when there is none.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Remove the policy named `name` and return its config. The registry lets go of its
    /// layers: services already built from them keep working (calls in flight finish) with
    /// their last config until they are dropped, but no reload reaches them any more, and
    /// a later [`insert`](Self::insert) of the name builds fresh layers.
    pub fn remove(&self, name: &str) -> Option<Policy> {
        let entry = self.lock().remove(name)?;
        tracing::info!(target: "palisade::policy", policy = %name, "policy removed");
        Some(entry.policy)
    }

    /// Parse a policies file (with the `PALISADE__…` overrides among `env`) and
    /// [`reload`](Self::reload) it; a file that does not load changes nothing.
    pub fn reload_from<K, V>(
        &self,
        format: Format,
        text: &str,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<ReloadReport, PolicyErrors>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        self.reload(Policies::load(format, text, env)?)
    }

    /// Make the registry hold `policies`: policies not in it yet are built, policies no
    /// longer in it are removed, and every other policy's changed configs are applied in
    /// place through its layers' handles. Checked first, as a whole: if any change cannot
    /// be applied in place, every such error is returned and nothing changes. See the
    /// [module docs](self#what-a-reload-guarantees) for what is kept and what is atomic.
    ///
    /// The registry is locked while a reload applies: listeners that run during it (a rate
    /// limit's `RateSet`, an adaptive limit's `LimitChanged`) must not call back into the
    /// registry.
    pub fn reload(&self, policies: Policies) -> Result<ReloadReport, PolicyErrors> {
        let mut entries = self.lock();
        let mut errors = Vec::new();
        for policy in policies.iter() {
            if let Some(entry) = entries.get(&policy.name) {
                check(entry, policy, &mut errors);
            }
        }
        if !errors.is_empty() {
            let errors = PolicyErrors::new(errors);
            tracing::warn!(target: "palisade::policy", %errors, "reload refused; nothing changed");
            return Err(errors);
        }
        let mut report = ReloadReport::default();
        let gone: Vec<String> = entries
            .keys()
            .filter(|name| policies.get(name).is_none())
            .cloned()
            .collect();
        for name in gone {
            entries.remove(&name);
            report.push(&name, None, ChangeKind::Removed, None);
        }
        for policy in policies {
            match entries.get_mut(&policy.name) {
                Some(entry) => apply(entry, &policy, &mut report),
                None => {
                    report.push(&policy.name, None, ChangeKind::Added, None);
                    entries.insert(policy.name.clone(), build(policy));
                }
            }
        }
        tracing::info!(target: "palisade::policy", report = %report, "policies reloaded");
        Ok(report)
    }

    /// The live state of every policy: configs, breaker states and rates, limiter rates,
    /// permits and waiters, budget balances, recent transitions with their reasons.
    pub fn snapshot(&self) -> RegistrySnapshot {
        let entries = self.lock();
        RegistrySnapshot {
            policies: entries
                .iter()
                .map(|(name, e)| {
                    (
                        name.clone(),
                        snapshot::policy(&e.policy, e.layer.handles(), &e.events, degraded(e)),
                    )
                })
                .collect(),
        }
    }

    /// [`snapshot`](Self::snapshot) as pretty-printed JSON.
    pub fn snapshot_json(&self) -> String {
        serde_json::to_string_pretty(&self.snapshot())
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("policies", &self.names())
            .finish()
    }
}

/// Check that `new` can be applied in place to `entry`'s layers, without changing them.
fn check(entry: &Entry, new: &Policy, errors: &mut Vec<PolicyError>) {
    let old = &entry.policy;
    let handles = entry.layer.handles();
    for slot in LAYERS {
        let path = format!("policies.{}.{slot}", new.name);
        match (old.has(slot), new.has(slot)) {
            (false, false) => {}
            (true, false) | (false, true) => errors.push(PolicyError::new(
                path,
                format!(
                    "cannot be {} a running policy (its services are built): remove the \
                     policy and insert it again, which starts its state afresh",
                    if new.has(slot) {
                        "added to"
                    } else {
                        "removed from"
                    }
                ),
            )),
            (true, true) => {
                if let Err(e) = check_layer(slot, handles, new) {
                    errors.push(PolicyError::out_of_range(
                        format!("{path}.{}", e.field()),
                        e.value().to_owned(),
                        e.expected().to_owned(),
                    ));
                }
            }
        }
    }
}

/// What each handle's `update` refuses, checked without updating.
fn check_layer(slot: &str, handles: &PolicyHandles, new: &Policy) -> Result<(), ConfigError> {
    match slot {
        "timeout" | "attempt_timeout" => {
            let (Some(handle), Some(config)) = (
                if slot == "timeout" {
                    handles.timeout()
                } else {
                    handles.attempt_timeout()
                },
                if slot == "timeout" {
                    new.timeout()
                } else {
                    new.attempt_timeout()
                },
            ) else {
                return Ok(());
            };
            ensure_same_name("timeout", handle.name(), config.name())
        }
        "retry" => match (handles.retry(), new.retry()) {
            (Some(h), Some(c)) => ensure_same_name("retry", h.name(), c.name()),
            _ => Ok(()),
        },
        "circuit_breaker" => match (handles.circuit_breaker(), new.circuit_breaker()) {
            (Some(h), Some(c)) => {
                ensure_same_name("circuit_breaker", h.name(), c.name())?;
                let built = h.config().window();
                ensure(
                    c.window() == built,
                    "circuit_breaker",
                    "window",
                    c.window(),
                    format!("the window the breaker was built with ({built:?})"),
                )
            }
            _ => Ok(()),
        },
        "rate_limit" => match (handles.rate_limit(), new.rate_limit()) {
            (Some(h), Some(c)) => {
                ensure_same_name("rate_limit", h.name(), c.name())?;
                let built = h.config();
                let fixed =
                    "the value the limit was built with (only the rate changes at run time)";
                let burst_expected = if c.burst().is_none() {
                    format!(
                        "the burst the limit was built with, {0}; the burst defaults to `cells`, \
                         so write `burst = {0}` to change the rate at run time",
                        built.effective_burst()
                    )
                } else {
                    format!(
                        "the burst the limit was built with, {}",
                        built.effective_burst()
                    )
                };
                ensure(
                    c.effective_burst() == built.effective_burst(),
                    "rate_limit",
                    "burst",
                    c.effective_burst(),
                    burst_expected,
                )?;
                ensure(
                    c.max_wait() == built.max_wait(),
                    "rate_limit",
                    "max_wait",
                    c.max_wait(),
                    fixed,
                )?;
                ensure(
                    c.cleanup_interval() == built.cleanup_interval(),
                    "rate_limit",
                    "cleanup_interval",
                    c.cleanup_interval(),
                    fixed,
                )?;
                ensure(
                    c.max_keys() == built.max_keys(),
                    "rate_limit",
                    "max_keys",
                    c.max_keys(),
                    fixed,
                )?;
                ensure(
                    c.ramp() == built.ramp(),
                    "rate_limit",
                    "ramp",
                    c.ramp(),
                    fixed,
                )?;
                let faster = u128::from(c.cells()) * built.period().as_nanos()
                    > u128::from(built.cells()) * c.period().as_nanos();
                ensure(
                    !faster,
                    "rate_limit",
                    "cells",
                    format!("{} per {}", c.cells(), duration::format(c.period())),
                    format!(
                        "at most the rate the limit was built with, {} per {}",
                        built.cells(),
                        duration::format(built.period())
                    ),
                )
            }
            _ => Ok(()),
        },
        "concurrency_limit" => match (handles.concurrency_limit(), new.concurrency_limit()) {
            (Some(h), Some(c)) => ensure_same_name("concurrency_limit", h.name(), c.name()),
            _ => Ok(()),
        },
        "adaptive_limit" => match (handles.adaptive_limit(), new.adaptive_limit()) {
            (Some(h), Some(c)) => {
                ensure_same_name("adaptive_limit", h.name(), c.name())?;
                let built = h.config();
                ensure(
                    c.algorithm() == built.algorithm(),
                    "adaptive_limit",
                    "algorithm",
                    c.algorithm(),
                    "the algorithm and parameters the limit was built with",
                )
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Apply a checked `new` policy to `entry`, innermost layer first.
fn apply(entry: &mut Entry, new: &Policy, report: &mut ReloadReport) {
    let name = new.name.clone();
    let handles = entry.layer.handles().clone();
    let old = entry.policy.clone();
    let mut kept = new.clone();
    let mut changed = false;
    for slot in LAYERS.iter().rev().copied() {
        let same = matches!(
            (old.layer_value(slot), new.layer_value(slot)),
            (Some(a), Some(b)) if a == b
        );
        if !new.has(slot) || same {
            continue;
        }
        changed = true;
        let mut note = None;
        let result = match slot {
            "timeout" => update(handles.timeout(), new.timeout.clone(), |h, c| h.update(c)),
            "attempt_timeout" => update(
                handles.attempt_timeout(),
                new.attempt_timeout.clone(),
                |h, c| h.update(c),
            ),
            "retry" => {
                if old.retry.as_ref().map(|c| c.budget()) != new.retry.as_ref().map(|c| c.budget())
                {
                    note = Some(
                        "its budget starts afresh: the budget's parameters changed".to_owned(),
                    );
                }
                update(handles.retry(), new.retry.clone(), |h, c| h.update(c))
            }
            "circuit_breaker" => update(
                handles.circuit_breaker(),
                new.circuit_breaker.clone(),
                |h, c| h.update(c),
            ),
            "rate_limit" => {
                if let (Some(o), Some(n)) = (&old.rate_limit, &new.rate_limit) {
                    let faster = u128::from(n.cells()) * o.period().as_nanos()
                        > u128::from(o.cells()) * n.period().as_nanos();
                    if faster {
                        note = Some(format!(
                            "the rate rises to the new one over the ramp ({})",
                            duration::format(n.ramp())
                        ));
                    }
                }
                update(handles.rate_limit(), new.rate_limit.clone(), |h, c| {
                    h.update(c)
                })
            }
            "concurrency_limit" => update(
                handles.concurrency_limit(),
                new.concurrency_limit.clone(),
                |h, c| h.update(c),
            ),
            "adaptive_limit" => {
                if old.adaptive_limit.as_ref().map(|c| c.initial_limit())
                    != new.adaptive_limit.as_ref().map(|c| c.initial_limit())
                {
                    note = Some("the limit restarts from the new initial_limit".to_owned());
                }
                update(
                    handles.adaptive_limit(),
                    new.adaptive_limit.clone(),
                    |h, c| h.update(c),
                )
            }
            _ => Ok(()),
        };
        match result {
            Ok(()) => {
                // A reset is an event of the policy; a ramp is not.
                if let Some(note) = &note
                    && slot != "rate_limit"
                {
                    entry
                        .events
                        .push(slot, "reset by a reload".to_owned(), note.clone());
                }
                report.push(&name, Some(slot), ChangeKind::Updated, note);
            }
            Err(e) => {
                tracing::warn!(target: "palisade::policy", policy = %name, layer = slot, error = %e, "a layer refused its reloaded config");
                keep_slot(&mut kept, &old, slot);
                report.push(&name, Some(slot), ChangeKind::Failed, Some(e.to_string()));
            }
        }
    }
    if !changed {
        report.push(&name, None, ChangeKind::Unchanged, None);
    }
    entry.policy = kept;
}

fn update<H, C>(
    handle: Option<&H>,
    config: Option<C>,
    apply: impl FnOnce(&H, C) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    match (handle, config) {
        (Some(handle), Some(config)) => apply(handle, config),
        _ => Ok(()),
    }
}

/// Put `old`'s config of `slot` back into `policy` (a layer that refused its new config).
fn keep_slot(policy: &mut Policy, old: &Policy, slot: &str) {
    match slot {
        "timeout" => policy.timeout.clone_from(&old.timeout),
        "retry" => policy.retry.clone_from(&old.retry),
        "circuit_breaker" => policy.circuit_breaker.clone_from(&old.circuit_breaker),
        "rate_limit" => policy.rate_limit.clone_from(&old.rate_limit),
        "concurrency_limit" => policy.concurrency_limit.clone_from(&old.concurrency_limit),
        "adaptive_limit" => policy.adaptive_limit.clone_from(&old.adaptive_limit),
        "attempt_timeout" => policy.attempt_timeout.clone_from(&old.attempt_timeout),
        _ => {}
    }
}
