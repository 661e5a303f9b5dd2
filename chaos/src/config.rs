//! The chaos layer's configuration: the data part ([`ChaosSettings`], loadable with serde)
//! and the functions that build injected errors and responses.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use palisade_core::config::ensure;
use palisade_core::{ConfigError, Listeners, Name};

use crate::event::ChaosEvent;
use crate::fault::{FaultKind, Latency};
use crate::schedule::Window;

pub(crate) type ErrorFn<Req, E> = Arc<dyn Fn(&Req) -> E + Send + Sync>;
pub(crate) type ReadyErrorFn<E> = Arc<dyn Fn() -> E + Send + Sync>;
pub(crate) type ReplaceFn<Req, Res> = Arc<dyn Fn(&Req) -> Res + Send + Sync>;
pub(crate) type BehaviourFn<Req> = Arc<dyn Fn(&mut Req) + Send + Sync>;
pub(crate) type AnswerBehaviourFn<Res, E> = crate::future::OnAnswer<Result<Res, E>>;
pub(crate) type Predicate<Req> = Arc<dyn Fn(&Req) -> bool + Send + Sync>;

// ===== ChaosSettings =====

/// The data part of a chaos config: everything but the functions, so operators can load it
/// from a file (feature `serde`) and a game day can be replayed from its settings.
///
/// ```
/// use palisade_chaos::{ChaosSettings, FaultRates, Latency};
/// use std::time::Duration;
///
/// let settings = ChaosSettings {
///     seed: 7,
///     rates: FaultRates { latency: 0.2, ..FaultRates::default() },
///     latency: Latency::lognormal(Duration::from_millis(50), 1.0),
///     ..ChaosSettings::default()
/// };
/// assert!(settings.enabled, "a chaos layer injects unless switched off");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct ChaosSettings {
    /// The layer's name, on events and metrics. Default `"default"`.
    pub name: Name,
    /// The RNG seed. Default `0x5EED`: fixed, so two runs without an explicit seed inject
    /// the same faults into the same calls (chaos you cannot replay is just noise).
    pub seed: u64,
    /// Whether injection starts switched on. Default `true`: a chaos layer you add is meant
    /// to inject; switch it off with the handle.
    pub enabled: bool,
    /// The probability of each fault per call, outside scheduled windows. Default 0 for
    /// every fault: nothing is injected until you ask for it.
    pub rates: FaultRates,
    /// The delay distribution of the latency rate. Default 100 ms fixed (see
    /// [`Latency::default`]).
    pub latency: Latency,
    /// Scheduled windows. Default none.
    pub schedule: Vec<Window>,
}

impl Default for ChaosSettings {
    fn default() -> Self {
        Self {
            name: Name::default(),
            seed: 0x5EED,
            enabled: true,
            rates: FaultRates::default(),
            latency: Latency::default(),
            schedule: Vec::new(),
        }
    }
}

/// Per-call probabilities (0.0 to 1.0) of each fault.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct FaultRates {
    /// Fail with the error function's error.
    pub error: f64,
    /// Answer with the replacement function's response.
    pub replace: f64,
    /// Delay by a sample of [`ChaosSettings::latency`].
    pub latency: f64,
    /// Never answer.
    pub hang: f64,
    /// Fail `poll_ready`.
    pub readiness: f64,
    /// Run the behaviour functions on the request and the answer.
    pub behaviour: f64,
}

impl FaultRates {
    /// The rate of `kind`.
    pub const fn get(&self, kind: FaultKind) -> f64 {
        match kind {
            FaultKind::Error => self.error,
            FaultKind::Replace => self.replace,
            FaultKind::Latency => self.latency,
            FaultKind::Hang => self.hang,
            FaultKind::Readiness => self.readiness,
            FaultKind::Behaviour => self.behaviour,
        }
    }

    /// Set the rate of `kind`.
    pub fn set(&mut self, kind: FaultKind, rate: f64) {
        let slot = match kind {
            FaultKind::Error => &mut self.error,
            FaultKind::Replace => &mut self.replace,
            FaultKind::Latency => &mut self.latency,
            FaultKind::Hang => &mut self.hang,
            FaultKind::Readiness => &mut self.readiness,
            FaultKind::Behaviour => &mut self.behaviour,
        };
        *slot = rate;
    }

    pub(crate) fn by_index(&self) -> [f64; 6] {
        FaultKind::BY_INDEX.map(|k| self.get(k))
    }
}

// ===== InjectedFault =====

/// The built-in injected error, for services whose error type is `From<InjectedFault>`
/// (such as [`BoxError`](palisade_core::BoxError)); see
/// [`ChaosConfigBuilder::injected_error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFault {
    fault: FaultKind,
}

impl InjectedFault {
    /// An injected fault of `kind`.
    pub const fn new(fault: FaultKind) -> Self {
        Self { fault }
    }

    /// Which fault produced this error.
    pub const fn fault(&self) -> FaultKind {
        self.fault
    }
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chaos: injected {} fault; this call never reached the service",
            self.fault
        )
    }
}

impl StdError for InjectedFault {}

// ===== ChaosConfig =====

/// The functions that turn a decided fault into a value of the service's types.
pub(crate) struct Funcs<Req, Res, E> {
    pub(crate) error: Option<ErrorFn<Req, E>>,
    pub(crate) ready_error: Option<ReadyErrorFn<E>>,
    pub(crate) replace: Option<ReplaceFn<Req, Res>>,
    pub(crate) behaviour: Option<BehaviourFn<Req>>,
    pub(crate) answer_behaviour: Option<AnswerBehaviourFn<Res, E>>,
    pub(crate) enabled_for: Option<Predicate<Req>>,
}

impl<Req, Res, E> Funcs<Req, Res, E> {
    pub(crate) fn has(&self, kind: FaultKind) -> bool {
        match kind {
            FaultKind::Error => self.error.is_some(),
            FaultKind::Replace => self.replace.is_some(),
            FaultKind::Readiness => self.ready_error.is_some(),
            FaultKind::Behaviour => self.behaviour.is_some() || self.answer_behaviour.is_some(),
            FaultKind::Latency | FaultKind::Hang => true,
        }
    }
}

impl<Req, Res, E> Clone for Funcs<Req, Res, E> {
    fn clone(&self) -> Self {
        Self {
            error: self.error.clone(),
            ready_error: self.ready_error.clone(),
            replace: self.replace.clone(),
            behaviour: self.behaviour.clone(),
            answer_behaviour: self.answer_behaviour.clone(),
            enabled_for: self.enabled_for.clone(),
        }
    }
}

/// A validated chaos configuration for a service taking `Req` and answering
/// `Result<Res, E>`. Build one with [`ChaosConfig::builder`], then make a
/// [`ChaosLayer`](crate::ChaosLayer) from it.
pub struct ChaosConfig<Req, Res, E> {
    pub(crate) settings: ChaosSettings,
    pub(crate) funcs: Funcs<Req, Res, E>,
    pub(crate) listeners: Listeners<ChaosEvent>,
}

impl<Req, Res, E> ChaosConfig<Req, Res, E> {
    /// A builder with the defaults of [`ChaosSettings`]: enabled, seed `0x5EED`, no faults.
    pub fn builder() -> ChaosConfigBuilder<Req, Res, E> {
        ChaosConfigBuilder {
            settings: ChaosSettings::default(),
            funcs: Funcs {
                error: None,
                ready_error: None,
                replace: None,
                behaviour: None,
                answer_behaviour: None,
                enabled_for: None,
            },
            listeners: Listeners::new(),
        }
    }

    /// The data part of this config.
    pub fn settings(&self) -> &ChaosSettings {
        &self.settings
    }
}

impl<Req, Res, E> Clone for ChaosConfig<Req, Res, E> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            funcs: self.funcs.clone(),
            listeners: self.listeners.clone(),
        }
    }
}

impl<Req, Res, E> fmt::Debug for ChaosConfig<Req, Res, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosConfig")
            .field("settings", &self.settings)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

// ===== ChaosConfigBuilder =====

/// Builds a [`ChaosConfig`]; every fault is off until a method turns it on.
///
/// A fault that needs a function (error, replace, readiness, behaviour) takes its rate and
/// function together; the `*_fn` variants set only the function, for faults that happen
/// only in scheduled [`Window`]s or whose rate the handle raises later.
pub struct ChaosConfigBuilder<Req, Res, E> {
    settings: ChaosSettings,
    funcs: Funcs<Req, Res, E>,
    listeners: Listeners<ChaosEvent>,
}

impl<Req, Res, E> ChaosConfigBuilder<Req, Res, E> {
    /// Replace the data part (name, seed, rates, latency, schedule), e.g. with settings
    /// loaded from a file. Functions and listeners set on the builder are kept.
    #[must_use]
    pub fn settings(mut self, settings: ChaosSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The layer's name, on events and metric labels.
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// The RNG seed: the same seed and the same call order inject the same faults.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = seed;
        self
    }

    /// Whether injection starts on (default `true`).
    #[must_use]
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.settings.enabled = enabled;
        self
    }

    /// Fail a fraction `rate` of calls with `make(&request)`, without calling the service.
    #[must_use]
    pub fn error(self, rate: f64, make: impl Fn(&Req) -> E + Send + Sync + 'static) -> Self {
        self.rate(FaultKind::Error, rate).error_fn(make)
    }

    /// The function building injected errors (for [`Fault::Error`](crate::Fault::Error) windows).
    #[must_use]
    pub fn error_fn(mut self, make: impl Fn(&Req) -> E + Send + Sync + 'static) -> Self {
        self.funcs.error = Some(Arc::new(make));
        self
    }

    /// Fail a fraction `rate` of calls with the built-in [`InjectedFault`] error.
    #[must_use]
    pub fn injected_error(self, rate: f64) -> Self
    where
        E: From<InjectedFault>,
    {
        self.error(rate, |_| InjectedFault::new(FaultKind::Error).into())
    }

    /// Answer a fraction `rate` of calls with `make(&request)` (a `503`, a stale body),
    /// without calling the service.
    #[must_use]
    pub fn replace(self, rate: f64, make: impl Fn(&Req) -> Res + Send + Sync + 'static) -> Self {
        self.rate(FaultKind::Replace, rate).replace_fn(make)
    }

    /// The function building replacement responses (for [`Fault::Replace`](crate::Fault::Replace) windows).
    #[must_use]
    pub fn replace_fn(mut self, make: impl Fn(&Req) -> Res + Send + Sync + 'static) -> Self {
        self.funcs.replace = Some(Arc::new(make));
        self
    }

    /// Delay a fraction `rate` of answers by a sample of `latency`. The service is called
    /// first and its answer held back, as a slow network would.
    #[must_use]
    pub fn latency(mut self, rate: f64, latency: Latency) -> Self {
        self.settings.latency = latency;
        self.rate(FaultKind::Latency, rate)
    }

    /// Never answer a fraction `rate` of calls (the service is not called): for proving
    /// that timeouts are in place.
    #[must_use]
    pub fn hang(self, rate: f64) -> Self {
        self.rate(FaultKind::Hang, rate)
    }

    /// Fail a fraction `rate` of `poll_ready` calls with `make()`.
    ///
    /// Tower's contract: once `poll_ready` returns an error, the service is considered
    /// failed for good. `ServiceExt::ready`/`oneshot` hand the error to the caller of that
    /// request; `tower::balance` drops the endpoint; a `Buffer`'s worker stops and fails
    /// every later call. This fault therefore simulates a dead connection, not a transient
    /// error, and deliberately breaks palisade's "rejections come from `call`" rule: the
    /// layers above must survive it (that is the point of injecting it). The chaos service
    /// itself keeps working if polled again.
    #[must_use]
    pub fn fail_readiness(self, rate: f64, make: impl Fn() -> E + Send + Sync + 'static) -> Self {
        self.rate(FaultKind::Readiness, rate)
            .readiness_error_fn(make)
    }

    /// The function building readiness errors (for [`Fault::Readiness`](crate::Fault::Readiness) windows).
    #[must_use]
    pub fn readiness_error_fn(mut self, make: impl Fn() -> E + Send + Sync + 'static) -> Self {
        self.funcs.ready_error = Some(Arc::new(make));
        self
    }

    /// Run `behaviour` on a fraction `rate` of requests before the service is called (drop
    /// a connection, corrupt a field).
    #[must_use]
    pub fn behaviour(
        self,
        rate: f64,
        behaviour: impl Fn(&mut Req) + Send + Sync + 'static,
    ) -> Self {
        self.rate(FaultKind::Behaviour, rate)
            .behaviour_fn(behaviour)
    }

    /// A behaviour to run on the service's answer when the behaviour fault hits (corrupt a
    /// field of the response, turn it into an error), in addition to or instead of the
    /// request behaviour. Its rate is the behaviour rate
    /// ([`rate(FaultKind::Behaviour, ..)`](Self::rate) or [`behaviour`](Self::behaviour)).
    #[must_use]
    pub fn answer_behaviour_fn(
        mut self,
        behaviour: impl Fn(&mut Result<Res, E>) + Send + Sync + 'static,
    ) -> Self {
        self.funcs.answer_behaviour = Some(Arc::new(behaviour));
        self
    }

    /// The behaviour function (for [`Fault::Behaviour`](crate::Fault::Behaviour) windows).
    #[must_use]
    pub fn behaviour_fn(mut self, behaviour: impl Fn(&mut Req) + Send + Sync + 'static) -> Self {
        self.funcs.behaviour = Some(Arc::new(behaviour));
        self
    }

    /// Only requests for which `predicate` is `true` may suffer faults (one tenant, one
    /// route, requests carrying a "chaos" header). Readiness faults are not per request
    /// and ignore it.
    #[must_use]
    pub fn enabled_for(mut self, predicate: impl Fn(&Req) -> bool + Send + Sync + 'static) -> Self {
        self.funcs.enabled_for = Some(Arc::new(predicate));
        self
    }

    /// Add a scheduled window.
    #[must_use]
    pub fn window(mut self, window: Window) -> Self {
        self.settings.schedule.push(window);
        self
    }

    /// The probability of `fault` per call (0.0 to 1.0).
    #[must_use]
    pub fn rate(mut self, fault: FaultKind, rate: f64) -> Self {
        self.settings.rates.set(fault, rate);
        self
    }

    /// Register a listener for [`ChaosEvent`]s.
    #[must_use]
    pub fn on_event(mut self, listener: impl Fn(&ChaosEvent) + Send + Sync + 'static) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Validate and build. Refused: a rate outside 0.0 to 1.0, an invalid latency
    /// distribution or window, and a fault that is asked for (by rate or window) without
    /// the function it needs.
    pub fn build(self) -> Result<ChaosConfig<Req, Res, E>, ConfigError> {
        let s = &self.settings;
        for kind in FaultKind::ALL {
            let rate = s.rates.get(kind);
            ensure(
                (0.0..=1.0).contains(&rate),
                "chaos",
                field(kind),
                rate,
                "0.0 to 1.0",
            )?;
            let wanted = rate > 0.0 || s.schedule.iter().any(|w| w.fault().kind() == kind);
            ensure(
                !wanted || self.funcs.has(kind),
                "chaos",
                field(kind),
                rate,
                "a function for this fault (e.g. `.error(rate, |req| err)`)",
            )?;
        }
        s.latency.validate("chaos", "latency")?;
        for window in &s.schedule {
            window.validate()?;
        }
        Ok(ChaosConfig {
            settings: self.settings,
            funcs: self.funcs,
            listeners: self.listeners,
        })
    }
}

impl<Req, Res, E> fmt::Debug for ChaosConfigBuilder<Req, Res, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosConfigBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn field(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Error => "rates.error",
        FaultKind::Replace => "rates.replace",
        FaultKind::Latency => "rates.latency",
        FaultKind::Hang => "rates.hang",
        FaultKind::Readiness => "rates.readiness",
        FaultKind::Behaviour => "rates.behaviour",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Fault;
    use std::time::Duration;

    type Builder = ChaosConfigBuilder<u32, u32, String>;

    fn builder() -> Builder {
        ChaosConfig::builder()
    }

    #[test]
    fn defaults_inject_nothing() {
        let c = builder().build().expect("defaults are valid");
        assert_eq!(c.settings().rates, FaultRates::default());
        assert!(c.settings().enabled);
    }

    #[test]
    fn out_of_range_rates_are_refused() {
        let err = builder().hang(1.5).build().expect_err("rate > 1");
        assert_eq!(err.field(), "rates.hang");
        let err = builder()
            .latency(f64::NAN, Latency::default())
            .build()
            .expect_err("nan");
        assert_eq!(err.field(), "rates.latency");
    }

    #[test]
    fn a_fault_without_its_function_is_refused() {
        let err = builder()
            .rate(FaultKind::Error, 0.1)
            .build()
            .expect_err("no error fn");
        assert_eq!(err.field(), "rates.error");
        let window = Window::new(Fault::Replace, Duration::ZERO..Duration::from_secs(1));
        let err = builder()
            .window(window.clone())
            .build()
            .expect_err("no replace fn");
        assert_eq!(err.field(), "rates.replace");
        assert!(builder().window(window).replace_fn(|r| *r).build().is_ok());
    }

    #[test]
    fn invalid_windows_and_latency_are_refused() {
        let s = Duration::from_secs;
        let bad_window = Window::new(Fault::Hang, s(2)..s(1));
        assert!(builder().window(bad_window).build().is_err());
        let bad_latency = Latency::uniform(s(2), s(1));
        assert!(builder().latency(0.5, bad_latency).build().is_err());
    }
}
