//! The chaos service: decides per call which faults to inject.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use crate::config::Funcs;
use crate::fault::{Fault, FaultKind, Latency};
use crate::future::ResponseFuture;
use crate::handle::{ChaosHandle, Control};
use crate::schedule::Window;

// ===== Shared =====

/// The immutable part of a layer's state: the functions, the latency and the schedule.
pub(crate) struct Shared<Req, Res, E> {
    funcs: Funcs<Req, Res, E>,
    latency: Latency,
    schedule: Vec<Window>,
}

/// What one call will suffer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    /// Call the service (after running the behaviour, if it hit).
    Call {
        behaviour: bool,
    },
    Error,
    Replace,
    Hang,
}

impl<Req, Res, E> Shared<Req, Res, E> {
    pub(crate) fn new(funcs: Funcs<Req, Res, E>, latency: Latency, schedule: Vec<Window>) -> Self {
        Self {
            funcs,
            latency,
            schedule,
        }
    }

    fn applies_to(&self, req: &Req) -> bool {
        self.funcs.enabled_for.as_ref().is_none_or(|p| p(req))
    }

    /// The probability of `kind` now: its rate, raised by any active window of that kind.
    fn probability(&self, control: &Control, kind: FaultKind, elapsed: Option<Duration>) -> f64 {
        if !self.funcs.has(kind) {
            return 0.0;
        }
        let windows = elapsed.map_or(0.0, |t| {
            self.active(t)
                .filter(|w| w.fault().kind() == kind && kind != FaultKind::Latency)
                .map(Window::hit_probability)
                .fold(0.0, f64::max)
        });
        control.rate(kind).max(windows)
    }

    fn active(&self, elapsed: Duration) -> impl Iterator<Item = &Window> {
        self.schedule.iter().filter(move |w| w.is_active(elapsed))
    }

    fn elapsed(&self, control: &Control) -> Option<Duration> {
        (!self.schedule.is_empty()).then(|| control.schedule_elapsed())
    }

    /// Decide the faults of one call. Kinds are drawn in a fixed order so a seed replays.
    fn plan(&self, control: &Control) -> (Action, Option<Duration>) {
        let mut rng = control.rng();
        let elapsed = self.elapsed(control);
        let mut hit = |kind: FaultKind| {
            let p = self.probability(control, kind, elapsed);
            p > 0.0 && rng.f64() < p
        };
        let action = if hit(FaultKind::Hang) {
            Action::Hang
        } else if hit(FaultKind::Error) {
            Action::Error
        } else if hit(FaultKind::Replace) {
            Action::Replace
        } else {
            Action::Call {
                behaviour: hit(FaultKind::Behaviour),
            }
        };
        let delay = if action == Action::Hang {
            None
        } else {
            self.delay(control, elapsed, &mut rng)
        };
        (action, delay)
    }

    /// The injected delay: the longest of the background latency and active latency windows.
    fn delay(
        &self,
        control: &Control,
        elapsed: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Option<Duration> {
        let mut delay: Option<Duration> = None;
        let rate = control.rate(FaultKind::Latency);
        if rate > 0.0 && rng.f64() < rate {
            delay = Some(self.latency.sample(rng));
        }
        for window in elapsed.into_iter().flat_map(|t| self.active(t)) {
            if let Fault::Latency(latency) = window.fault()
                && rng.f64() < window.hit_probability()
            {
                delay = delay.max(Some(latency.sample(rng)));
            }
        }
        delay
    }

    #[inline(never)]
    fn readiness_fault(&self, control: &Control) -> Option<E> {
        let make = self.funcs.ready_error.as_ref()?;
        let p = self.probability(control, FaultKind::Readiness, self.elapsed(control));
        if p > 0.0 && control.rng().f64() < p {
            control.record(FaultKind::Readiness, None);
            Some(make())
        } else {
            None
        }
    }
}

// ===== Chaos =====

/// A service that injects faults into the calls of `S`, built by
/// [`ChaosLayer`](crate::ChaosLayer).
///
/// While injection is off, `poll_ready` costs one relaxed atomic load and `call` goes
/// straight to the inner service.
pub struct Chaos<S, Req, Res, E> {
    inner: S,
    shared: Arc<Shared<Req, Res, E>>,
    control: Arc<Control>,
    /// Whether injection was on at the last `poll_ready`, so `call` needs no atomic load.
    armed: bool,
}

impl<S, Req, Res, E> Chaos<S, Req, Res, E> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<Req, Res, E>>, control: Arc<Control>) -> Self {
        Self {
            inner,
            shared,
            control,
            armed: false,
        }
    }

    /// A handle on the layer this service belongs to.
    pub fn handle(&self) -> ChaosHandle {
        ChaosHandle::new(Arc::clone(&self.control))
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, Req, Res, E> Clone for Chaos<S, Req, Res, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            control: Arc::clone(&self.control),
            // A clone has not been polled ready.
            armed: false,
        }
    }
}

impl<S: fmt::Debug, Req, Res, E> fmt::Debug for Chaos<S, Req, Res, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("inner", &self.inner)
            .field("handle", &self.handle())
            .finish_non_exhaustive()
    }
}

impl<S, Req, Res, E> Service<Req> for Chaos<S, Req, Res, E>
where
    S: Service<Req, Response = Res, Error = E>,
{
    type Response = Res;
    type Error = E;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.armed = self.control.is_enabled();
        if self.armed
            && self.shared.funcs.ready_error.is_some()
            && let Some(err) = self.shared.readiness_fault(&self.control)
        {
            return Poll::Ready(Err(err));
        }
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // Injection off: straight through, kept small so it inlines into the caller.
        if std::mem::take(&mut self.armed) {
            self.call_with_faults(req)
        } else {
            ResponseFuture::inner(self.inner.call(req), None)
        }
    }
}

impl<S, Req, Res, E> Chaos<S, Req, Res, E>
where
    S: Service<Req, Response = Res, Error = E>,
{
    #[inline(never)]
    fn call_with_faults(&mut self, mut req: Req) -> ResponseFuture<S::Future> {
        if !self.shared.applies_to(&req) {
            return ResponseFuture::inner(self.inner.call(req), None);
        }
        let (action, delay) = self.shared.plan(&self.control);
        if let Some(d) = delay {
            self.control.record(FaultKind::Latency, Some(d));
        }
        let funcs = &self.shared.funcs;
        match (action, &funcs.error, &funcs.replace) {
            (Action::Hang, _, _) => {
                self.control.record(FaultKind::Hang, None);
                ResponseFuture::hang()
            }
            (Action::Error, Some(make), _) => {
                self.control.record(FaultKind::Error, None);
                ResponseFuture::injected(Err(make(&req)), delay)
            }
            (Action::Replace, _, Some(make)) => {
                self.control.record(FaultKind::Replace, None);
                ResponseFuture::injected(Ok(make(&req)), delay)
            }
            (Action::Call { behaviour: false }, _, _) => {
                ResponseFuture::inner(self.inner.call(req), delay)
            }
            (Action::Call { behaviour: true }, _, _) => {
                self.control.record(FaultKind::Behaviour, None);
                if let Some(run) = &funcs.behaviour {
                    run(&mut req);
                }
                let future = self.inner.call(req);
                match &funcs.answer_behaviour {
                    Some(behave) => ResponseFuture::behave(future, delay, Arc::clone(behave)),
                    None => ResponseFuture::inner(future, delay),
                }
            }
            // `probability` is zero for a kind without its function, so this cannot be
            // drawn; calling the service is the harmless answer if it ever were.
            (Action::Error | Action::Replace, _, _) => {
                ResponseFuture::inner(self.inner.call(req), delay)
            }
        }
    }
}
