//! The recommended order of palisade layers, applied for you.

use tower_layer::{Identity, Layer};

/// Builds a stack of resilience layers in the recommended order, whatever order the setters
/// are called in (outermost first):
///
/// 1. **fallback / degrade**: outermost, so it can answer for every failure below it,
///    including an overall timeout or an open circuit;
/// 2. **overall timeout**: the caller's deadline, covering all attempts and back-off sleeps;
///    it makes its deadline current, so everything inside stays within it;
/// 3. **retry** (with its budget): retries see every rejection below and classify it (an
///    open circuit is not retried; a timed-out attempt is);
/// 4. **circuit breaker**: counts each attempt, so retries against a dead backend open it
///    quickly, and an open breaker stops retries from reaching the backend at all;
/// 5. **limit** (rate, concurrency or adaptive): below the breaker, so rejected-by-breaker
///    calls do not use quota, and above the attempt timeout, so waiting for a permit is not
///    counted against the backend. The recommended default is an adaptive concurrency limit
///    (`AdaptiveLimitLayer` with `Aimd` at half the attempt timeout, a floor of 4, and
///    calls over it waiting up to 1 s, 1000 at most): the incident scorecard chose it for
///    overload and gradual recovery (README, "Defaults chosen by incidents");
/// 6. **per-attempt timeout**: innermost, bounds one call to the backend (and is shortened
///    to what is left of the overall deadline).
///
/// Every slot is optional; an empty slot is tower's `Identity`. Each layer keeps its own
/// error contract (`S::Error: From<Rejection>`), so the stack works with `BoxError` or
/// [`Error<E>`](crate::Error).
///
/// ```
/// # #[cfg(feature = "timeout")] {
/// use palisade::prelude::*;
/// use palisade::Stack;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let stack = Stack::new()
///     .attempt_timeout(TimeoutLayer::builder().timeout(Duration::from_millis(200)).build().expect("a valid timeout"))
///     .timeout(TimeoutLayer::builder().timeout(Duration::from_secs(1)).build().expect("a valid timeout"));
/// let svc = stack.layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) }));
/// assert_eq!(svc.oneshot(1).await.unwrap(), 2);
/// # }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Stack<F = Identity, T = Identity, R = Identity, C = Identity, L = Identity, A = Identity>
{
    fallback: F,
    timeout: T,
    retry: R,
    circuit_breaker: C,
    limit: L,
    attempt_timeout: A,
}

/// What a [`Stack`] slot takes: a layer. Every tower layer qualifies; a config does not,
/// and handing one in fails at the call site with a message that says how to make the
/// layer:
///
/// ```compile_fail
/// # #[cfg(feature = "timeout")] {
/// use palisade::Stack;
/// use palisade::timeout::TimeoutConfig;
///
/// let config = TimeoutConfig::builder().build().unwrap();
/// let stack = Stack::new().timeout(config); // error: `TimeoutConfig` is not a layer
/// # }
/// # #[cfg(not(feature = "timeout"))] compile_error!("needs the timeout feature");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a layer: a `Stack` slot takes a layer, not a config",
    label = "not a layer",
    note = "make the layer first: `XLayer::new(config)`, or `XLayer::builder()…build()?`"
)]
pub trait StackLayer {}

/// The service a [`StackLayer`] is checked against: a layer must wrap any service.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct AnyService;

impl<L: Layer<AnyService>> StackLayer for L {}

impl Stack {
    /// An empty stack: every slot is `Identity`.
    pub fn new() -> Self {
        Self {
            fallback: Identity::new(),
            timeout: Identity::new(),
            retry: Identity::new(),
            circuit_breaker: Identity::new(),
            limit: Identity::new(),
            attempt_timeout: Identity::new(),
        }
    }
}

impl Default for Stack {
    fn default() -> Self {
        Self::new()
    }
}

impl<F, T, R, C, L, A> Stack<F, T, R, C, L, A> {
    /// The outermost slot: a fallback, stale cache or load shedder (palisade-degrade).
    pub fn fallback<N: StackLayer>(self, layer: N) -> Stack<N, T, R, C, L, A> {
        Stack {
            fallback: layer,
            timeout: self.timeout,
            retry: self.retry,
            circuit_breaker: self.circuit_breaker,
            limit: self.limit,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// The overall timeout: the caller's deadline over all attempts.
    pub fn timeout<N: StackLayer>(self, layer: N) -> Stack<F, N, R, C, L, A> {
        Stack {
            fallback: self.fallback,
            timeout: layer,
            retry: self.retry,
            circuit_breaker: self.circuit_breaker,
            limit: self.limit,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// The retry layer (palisade-retry), with its budget; or a hedge layer.
    pub fn retry<N: StackLayer>(self, layer: N) -> Stack<F, T, N, C, L, A> {
        Stack {
            fallback: self.fallback,
            timeout: self.timeout,
            retry: layer,
            circuit_breaker: self.circuit_breaker,
            limit: self.limit,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// The circuit breaker (palisade-circuit-breaker), plain or keyed.
    pub fn circuit_breaker<N: StackLayer>(self, layer: N) -> Stack<F, T, R, N, L, A> {
        Stack {
            fallback: self.fallback,
            timeout: self.timeout,
            retry: self.retry,
            circuit_breaker: layer,
            limit: self.limit,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// A rate limit, concurrency limit or adaptive limit (palisade-rate-limit). To use more
    /// than one, pass a `tower::layer::util::Stack` of them.
    pub fn limit<N: StackLayer>(self, layer: N) -> Stack<F, T, R, C, N, A> {
        Stack {
            fallback: self.fallback,
            timeout: self.timeout,
            retry: self.retry,
            circuit_breaker: self.circuit_breaker,
            limit: layer,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// The per-attempt timeout, innermost.
    pub fn attempt_timeout<N: StackLayer>(self, layer: N) -> Stack<F, T, R, C, L, N> {
        Stack {
            fallback: self.fallback,
            timeout: self.timeout,
            retry: self.retry,
            circuit_breaker: self.circuit_breaker,
            limit: self.limit,
            attempt_timeout: layer,
        }
    }
}

impl<S, F, T, R, C, L, A> Layer<S> for Stack<F, T, R, C, L, A>
where
    A: Layer<S>,
    L: Layer<A::Service>,
    C: Layer<L::Service>,
    R: Layer<C::Service>,
    T: Layer<R::Service>,
    F: Layer<T::Service>,
{
    type Service = F::Service;

    fn layer(&self, service: S) -> Self::Service {
        // Inside out: the service first gets its per-attempt timeout, the fallback comes last.
        let service = self.attempt_timeout.layer(service);
        let service = self.limit.layer(service);
        let service = self.circuit_breaker.layer(service);
        let service = self.retry.layer(service);
        let service = self.timeout.layer(service);
        self.fallback.layer(service)
    }
}
