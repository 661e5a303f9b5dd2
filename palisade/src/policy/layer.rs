//! The stack a policy builds, its hooks attached by slot name, and the handles of its layers.

use std::fmt;

use palisade_circuit_breaker::{CircuitBreakerHandle, CircuitBreakerLayer};
use palisade_rate_limit::{
    AdaptiveLimitHandle, AdaptiveLimitLayer, ConcurrencyLimitHandle, ConcurrencyLimitLayer,
    RateLimitHandle, RateLimitLayer,
};
use palisade_retry::{RetryHandle, RetryLayer};
use palisade_timeout::{TimeoutHandle, TimeoutLayer};
use tower::util::Either;
use tower_layer::{Identity, Layer, Stack};

use super::Policy;

impl Policy {
    /// Build the policy's layers, in the recommended order (outermost first): fallback (none
    /// until you set one), overall `timeout`, `retry`, `circuit_breaker`, the limits
    /// (`rate_limit`, then `concurrency_limit`, then `adaptive_limit`), `attempt_timeout`.
    /// Empty slots are skipped. Attach code hooks by slot name before layering a service:
    ///
    /// ```
    /// use palisade::policy::Policies;
    /// use palisade::prelude::*;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let policies = Policies::from_toml(r#"
    ///     [policies.search.retry]
    ///     max_attempts = 2
    ///     backoff = { kind = "constant", delay = "1ms", jitter = "none" }
    ///     [policies.search.circuit_breaker]
    ///     minimum_calls = 5
    /// "#).unwrap();
    /// let layer = policies["search"]
    ///     .layer()
    ///     .retry(|retry| retry.on_event(|e| tracing::debug!(?e)))
    ///     .circuit_breaker(|breaker| {
    ///         breaker.classifier(|res: &Result<u32, BoxError>| match res {
    ///             Err(e) if e.to_string().contains("404") => Outcome::Ignore,
    ///             Err(_) => Outcome::Failure,
    ///             Ok(_) => Outcome::Success,
    ///         })
    ///     });
    /// let handles = layer.handles().clone();
    /// let svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
    /// assert_eq!(svc.oneshot(7).await.unwrap(), 7);
    /// assert!(handles.circuit_breaker().is_some());
    /// # }
    /// ```
    pub fn layer(&self) -> PolicyLayer {
        let timeout = self.timeout.clone().map(TimeoutLayer::new);
        let retry = self.retry.clone().map(RetryLayer::new);
        let circuit_breaker = self.circuit_breaker.clone().map(CircuitBreakerLayer::new);
        let rate_limit = self.rate_limit.clone().map(RateLimitLayer::new);
        let concurrency_limit = self
            .concurrency_limit
            .clone()
            .map(ConcurrencyLimitLayer::new);
        let adaptive_limit = self.adaptive_limit.clone().map(AdaptiveLimitLayer::new);
        let attempt_timeout = self.attempt_timeout.clone().map(TimeoutLayer::new);
        let handles = PolicyHandles {
            name: self.name.clone(),
            timeout: timeout.as_ref().map(TimeoutLayer::handle),
            retry: retry.as_ref().map(RetryLayer::handle),
            circuit_breaker: circuit_breaker.as_ref().map(CircuitBreakerLayer::handle),
            rate_limit: rate_limit.as_ref().map(RateLimitLayer::handle),
            concurrency_limit: concurrency_limit
                .as_ref()
                .map(ConcurrencyLimitLayer::handle),
            adaptive_limit: adaptive_limit.as_ref().map(AdaptiveLimitLayer::handle),
            attempt_timeout: attempt_timeout.as_ref().map(TimeoutLayer::handle),
        };
        PolicyLayer {
            fallback: Identity::new(),
            timeout,
            retry,
            circuit_breaker,
            rate_limit,
            concurrency_limit,
            adaptive_limit,
            attempt_timeout,
            handles,
        }
    }
}

/// The layers of one [`Policy`], applied in the recommended order; from
/// [`Policy::layer`] or a [`Registry`](crate::registry::Registry).
///
/// Every clone shares the layers' state (one breaker, one budget, one limiter). Hooks are
/// attached by slot name, each method taking a function from the slot's layer to the layer
/// with the hook: [`timeout`](Self::timeout), [`retry`](Self::retry),
/// [`circuit_breaker`](Self::circuit_breaker), [`rate_limit`](Self::rate_limit),
/// [`concurrency_limit`](Self::concurrency_limit), [`adaptive_limit`](Self::adaptive_limit),
/// [`attempt_timeout`](Self::attempt_timeout); a function for an empty slot is not called.
/// The layer's hook methods keep its shared state, so the [`handles`](Self::handles) still
/// reach it (a function that builds another layer instead would leave the handles, and a
/// registry's reloads, behind). Two hooks build new state: a rate limit's `key_by` makes a
/// keyed limiter per call (the run-time rate still follows the handle; attach it once and
/// share the layer it gives), and a breaker's `key_by` makes a keyed breaker that the
/// handles and reloads do not reach. [`fallback`](Self::fallback) sets the outermost slot.
///
/// The service is a nest of `tower::util::Either` (an empty slot is the service itself),
/// with the inner service's error type: `BoxError` or `palisade::Error<E>`, as every
/// layer requires.
#[derive(Clone)]
pub struct PolicyLayer<
    F = Identity,
    T = TimeoutLayer,
    R = RetryLayer,
    C = CircuitBreakerLayer,
    RL = RateLimitLayer,
    CL = ConcurrencyLimitLayer,
    AL = AdaptiveLimitLayer,
    A = TimeoutLayer,
> {
    fallback: F,
    timeout: Option<T>,
    retry: Option<R>,
    circuit_breaker: Option<C>,
    rate_limit: Option<RL>,
    concurrency_limit: Option<CL>,
    adaptive_limit: Option<AL>,
    attempt_timeout: Option<A>,
    handles: PolicyHandles,
}

/// The slot methods of [`PolicyLayer`]: each replaces or maps one slot's layer and moves
/// every other slot over as it is, so no method copies the fields by hand. The field list
/// is given where the macro is called, so that a method's slot and the moved fields are
/// the same bindings.
macro_rules! slot_hooks {
    (@rebuild $this:ident, $slot:ident = $new:expr, [$($field:ident),*]) => {{
        #[allow(unused_variables, reason = "a replaced slot's old layer is dropped")]
        let PolicyLayer { $($field,)* handles } = $this;
        let $slot = $new;
        PolicyLayer { $($field,)* handles }
    }};
    (
        fields $fields:tt;
        $(#[$set_doc:meta])* set $set:ident<$SetNew:ident> -> ($($SetOut:ident),*);
        $( $(#[$doc:meta])* fn $slot:ident<$New:ident>($Old:ident) -> ($($Out:ident),*); )*
    ) => {
        $(#[$set_doc])*
        pub fn $set<$SetNew>(self, layer: $SetNew) -> PolicyLayer<$($SetOut),*> {
            slot_hooks!(@rebuild self, $set = layer, $fields)
        }
        $(
            $(#[$doc])*
            pub fn $slot<$New>(self, f: impl FnOnce($Old) -> $New) -> PolicyLayer<$($Out),*> {
                slot_hooks!(@rebuild self, $slot = $slot.map(f), $fields)
            }
        )*
    };
}

impl<F, T, R, C, RL, CL, AL, A> PolicyLayer<F, T, R, C, RL, CL, AL, A> {
    /// The handles of the policy's layers (taken when it was built).
    pub fn handles(&self) -> &PolicyHandles {
        &self.handles
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.handles.name
    }

    slot_hooks! {
        fields [
            fallback, timeout, retry, circuit_breaker, rate_limit, concurrency_limit,
            adaptive_limit, attempt_timeout
        ];
        /// Set the outermost slot: a fallback, stale cache or load shedder
        /// (palisade-degrade), or any layer.
        set fallback<F2> -> (F2, T, R, C, RL, CL, AL, A);
        /// Attach hooks to the overall timeout (e.g. `|t| t.on_event(..)`).
        fn timeout<T2>(T) -> (F, T2, R, C, RL, CL, AL, A);
        /// Attach hooks to the retry layer (`classifier`, `retry_after`, `clone_request`,
        /// `share_budget`, `on_event`).
        fn retry<R2>(R) -> (F, T, R2, C, RL, CL, AL, A);
        /// Attach hooks to the circuit breaker (`classifier`, `on_event`, `throttle_hint`).
        fn circuit_breaker<C2>(C) -> (F, T, R, C2, RL, CL, AL, A);
        /// Attach hooks to the rate limit (`key_by`, `cost`, `on_event`).
        fn rate_limit<RL2>(RL) -> (F, T, R, C, RL2, CL, AL, A);
        /// Attach hooks to the concurrency limit (`on_event`).
        fn concurrency_limit<CL2>(CL) -> (F, T, R, C, RL, CL2, AL, A);
        /// Attach hooks to the adaptive limit (`classifier`, `on_event`).
        fn adaptive_limit<AL2>(AL) -> (F, T, R, C, RL, CL, AL2, A);
        /// Attach hooks to the per-attempt timeout (e.g. `|t| t.on_event(..)`).
        fn attempt_timeout<A2>(A) -> (F, T, R, C, RL, CL, AL, A2);
    }
}

/// A slot: its layer, or the service itself when empty.
type Slot<L> = Either<L, Identity>;

fn slot<L: Clone>(layer: &Option<L>) -> Slot<L> {
    match layer {
        Some(layer) => Either::Left(layer.clone()),
        None => Either::Right(Identity::new()),
    }
}

/// The layers inside out: attempt timeout, adaptive, concurrency, rate, breaker, retry,
/// timeout, fallback.
type Chain<F, T, R, C, RL, CL, AL, A> = Stack<
    Stack<
        Stack<Stack<Stack<Stack<Stack<Slot<A>, Slot<AL>>, Slot<CL>>, Slot<RL>>, Slot<C>>, Slot<R>>,
        Slot<T>,
    >,
    F,
>;

impl<F, T, R, C, RL, CL, AL, A> PolicyLayer<F, T, R, C, RL, CL, AL, A>
where
    F: Clone,
    T: Clone,
    R: Clone,
    C: Clone,
    RL: Clone,
    CL: Clone,
    AL: Clone,
    A: Clone,
{
    fn chain(&self) -> Chain<F, T, R, C, RL, CL, AL, A> {
        let chain = Stack::new(slot(&self.attempt_timeout), slot(&self.adaptive_limit));
        let chain = Stack::new(chain, slot(&self.concurrency_limit));
        let chain = Stack::new(chain, slot(&self.rate_limit));
        let chain = Stack::new(chain, slot(&self.circuit_breaker));
        let chain = Stack::new(chain, slot(&self.retry));
        let chain = Stack::new(chain, slot(&self.timeout));
        Stack::new(chain, self.fallback.clone())
    }
}

impl<S, F, T, R, C, RL, CL, AL, A> Layer<S> for PolicyLayer<F, T, R, C, RL, CL, AL, A>
where
    F: Clone,
    T: Clone,
    R: Clone,
    C: Clone,
    RL: Clone,
    CL: Clone,
    AL: Clone,
    A: Clone,
    Chain<F, T, R, C, RL, CL, AL, A>: Layer<S>,
{
    type Service = <Chain<F, T, R, C, RL, CL, AL, A> as Layer<S>>::Service;

    fn layer(&self, service: S) -> Self::Service {
        self.chain().layer(service)
    }
}

impl<F, T, R, C, RL, CL, AL, A> fmt::Debug for PolicyLayer<F, T, R, C, RL, CL, AL, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyLayer")
            .field("handles", &self.handles)
            .finish_non_exhaustive()
    }
}

/// The handles of one built policy's layers, by slot (`None` for an empty slot): read
/// state, force a breaker open, or change a layer's config at run time. Cloneable; every
/// clone reaches the same layers.
#[derive(Clone, Debug)]
pub struct PolicyHandles {
    pub(crate) name: String,
    pub(crate) timeout: Option<TimeoutHandle>,
    pub(crate) retry: Option<RetryHandle>,
    pub(crate) circuit_breaker: Option<CircuitBreakerHandle>,
    pub(crate) rate_limit: Option<RateLimitHandle>,
    pub(crate) concurrency_limit: Option<ConcurrencyLimitHandle>,
    pub(crate) adaptive_limit: Option<AdaptiveLimitHandle>,
    pub(crate) attempt_timeout: Option<TimeoutHandle>,
}

impl PolicyHandles {
    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The overall timeout's handle.
    pub fn timeout(&self) -> Option<&TimeoutHandle> {
        self.timeout.as_ref()
    }

    /// The retry layer's handle.
    pub fn retry(&self) -> Option<&RetryHandle> {
        self.retry.as_ref()
    }

    /// The circuit breaker's handle.
    pub fn circuit_breaker(&self) -> Option<&CircuitBreakerHandle> {
        self.circuit_breaker.as_ref()
    }

    /// The rate limit's handle.
    pub fn rate_limit(&self) -> Option<&RateLimitHandle> {
        self.rate_limit.as_ref()
    }

    /// The concurrency limit's handle.
    pub fn concurrency_limit(&self) -> Option<&ConcurrencyLimitHandle> {
        self.concurrency_limit.as_ref()
    }

    /// The adaptive limit's handle.
    pub fn adaptive_limit(&self) -> Option<&AdaptiveLimitHandle> {
        self.adaptive_limit.as_ref()
    }

    /// The per-attempt timeout's handle.
    pub fn attempt_timeout(&self) -> Option<&TimeoutHandle> {
        self.attempt_timeout.as_ref()
    }
}
