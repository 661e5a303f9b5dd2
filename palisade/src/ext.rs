//! `ServiceBuilder` methods for palisade's layers, as tower-http's `ServiceBuilderExt`.

use tower::ServiceBuilder;
use tower::layer::util::Stack as Tower;

/// A builder with `N` added as the next layer inside `L`.
pub type ServiceBuilderWith<N, L> = ServiceBuilder<Tower<N, L>>;

/// Adds palisade's layers to tower's [`ServiceBuilder`] by name: one method per layer kind,
/// each taking that kind's layer (made with `XLayer::new(config)` or
/// `XLayer::builder()…build()?`), so a slot cannot take the wrong layer or a config.
///
/// The names avoid tower's own inherent methods (`timeout`, `retry`, `rate_limit`,
/// `concurrency_limit`, `load_shed` take tower's layers' arguments and would win).
/// `ServiceBuilder` applies layers in the order they are added, outermost first: add them
/// in the recommended order (fallback, overall timeout, retry, circuit breaker, limit,
/// attempt timeout), or use [`Stack`](crate::Stack), which orders them for you.
///
/// ```
/// # #[cfg(all(feature = "timeout", feature = "retry", feature = "circuit-breaker"))] {
/// use palisade::prelude::*;
/// use palisade::ServiceBuilderExt;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let svc = ServiceBuilder::new()
///     .timeout_with(TimeoutLayer::builder().name("overall").timeout(Duration::from_secs(2)).build()?)
///     .retry_with(RetryLayer::builder().name("api").build()?)
///     .circuit_breaker(CircuitBreakerLayer::builder().name("api").build()?)
///     .timeout_with(TimeoutLayer::builder().name("attempt").timeout(Duration::from_millis(300)).build()?)
///     .service(service_fn(|x: u32| async move { Ok::<_, BoxError>(x * 2) }));
/// assert_eq!(svc.oneshot(21).await?, 42);
/// # Ok(())
/// # }
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// Add a timeout (an overall deadline, or a per-attempt timeout further in).
    #[cfg(feature = "timeout")]
    fn timeout_with<T>(
        self,
        layer: palisade_timeout::TimeoutLayer<T>,
    ) -> ServiceBuilderWith<palisade_timeout::TimeoutLayer<T>, L>;

    /// Add a retry layer (with its budget).
    #[cfg(feature = "retry")]
    fn retry_with<C, A, K>(
        self,
        layer: palisade_retry::RetryLayer<C, A, K>,
    ) -> ServiceBuilderWith<palisade_retry::RetryLayer<C, A, K>, L>;

    /// Add a hedge layer.
    #[cfg(feature = "retry")]
    fn hedge<P, C, K>(
        self,
        layer: palisade_retry::hedge::HedgeLayer<P, C, K>,
    ) -> ServiceBuilderWith<palisade_retry::hedge::HedgeLayer<P, C, K>, L>;

    /// Add a circuit breaker.
    #[cfg(feature = "circuit-breaker")]
    fn circuit_breaker<C>(
        self,
        layer: palisade_circuit_breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilderWith<palisade_circuit_breaker::CircuitBreakerLayer<C>, L>;

    /// Add a rate limit (GCRA), direct or keyed.
    #[cfg(feature = "rate-limit")]
    fn rate_limit_with<K, C>(
        self,
        layer: palisade_rate_limit::RateLimitLayer<K, C>,
    ) -> ServiceBuilderWith<palisade_rate_limit::RateLimitLayer<K, C>, L>;

    /// Add a concurrency limit (bulkhead).
    #[cfg(feature = "rate-limit")]
    fn concurrency_limit_with(
        self,
        layer: palisade_rate_limit::ConcurrencyLimitLayer,
    ) -> ServiceBuilderWith<palisade_rate_limit::ConcurrencyLimitLayer, L>;

    /// Add an adaptive concurrency limit.
    #[cfg(feature = "rate-limit")]
    fn adaptive_limit<C>(
        self,
        layer: palisade_rate_limit::AdaptiveLimitLayer<C>,
    ) -> ServiceBuilderWith<palisade_rate_limit::AdaptiveLimitLayer<C>, L>;

    /// Add a throttle gate that obeys an upstream's "slow down".
    #[cfg(feature = "rate-limit")]
    fn throttle<H>(
        self,
        layer: palisade_rate_limit::ThrottleLayer<H>,
    ) -> ServiceBuilderWith<palisade_rate_limit::ThrottleLayer<H>, L>;

    /// Add a fallback.
    #[cfg(feature = "degrade")]
    fn fallback<F, C, M>(
        self,
        layer: palisade_degrade::FallbackLayer<F, C, M>,
    ) -> ServiceBuilderWith<palisade_degrade::FallbackLayer<F, C, M>, L>;

    /// Add a stale cache.
    #[cfg(feature = "degrade")]
    fn stale_cache<KF, K, V, C, M>(
        self,
        layer: palisade_degrade::StaleCacheLayer<KF, K, V, C, M>,
    ) -> ServiceBuilderWith<palisade_degrade::StaleCacheLayer<KF, K, V, C, M>, L>;

    /// Add a load shedder.
    #[cfg(feature = "degrade")]
    fn shed<P>(
        self,
        layer: palisade_degrade::ShedLayer<P>,
    ) -> ServiceBuilderWith<palisade_degrade::ShedLayer<P>, L>;
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "timeout")]
    fn timeout_with<T>(
        self,
        layer: palisade_timeout::TimeoutLayer<T>,
    ) -> ServiceBuilderWith<palisade_timeout::TimeoutLayer<T>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "retry")]
    fn retry_with<C, A, K>(
        self,
        layer: palisade_retry::RetryLayer<C, A, K>,
    ) -> ServiceBuilderWith<palisade_retry::RetryLayer<C, A, K>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "retry")]
    fn hedge<P, C, K>(
        self,
        layer: palisade_retry::hedge::HedgeLayer<P, C, K>,
    ) -> ServiceBuilderWith<palisade_retry::hedge::HedgeLayer<P, C, K>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "circuit-breaker")]
    fn circuit_breaker<C>(
        self,
        layer: palisade_circuit_breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilderWith<palisade_circuit_breaker::CircuitBreakerLayer<C>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "rate-limit")]
    fn rate_limit_with<K, C>(
        self,
        layer: palisade_rate_limit::RateLimitLayer<K, C>,
    ) -> ServiceBuilderWith<palisade_rate_limit::RateLimitLayer<K, C>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "rate-limit")]
    fn concurrency_limit_with(
        self,
        layer: palisade_rate_limit::ConcurrencyLimitLayer,
    ) -> ServiceBuilderWith<palisade_rate_limit::ConcurrencyLimitLayer, L> {
        self.layer(layer)
    }

    #[cfg(feature = "rate-limit")]
    fn adaptive_limit<C>(
        self,
        layer: palisade_rate_limit::AdaptiveLimitLayer<C>,
    ) -> ServiceBuilderWith<palisade_rate_limit::AdaptiveLimitLayer<C>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "rate-limit")]
    fn throttle<H>(
        self,
        layer: palisade_rate_limit::ThrottleLayer<H>,
    ) -> ServiceBuilderWith<palisade_rate_limit::ThrottleLayer<H>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "degrade")]
    fn fallback<F, C, M>(
        self,
        layer: palisade_degrade::FallbackLayer<F, C, M>,
    ) -> ServiceBuilderWith<palisade_degrade::FallbackLayer<F, C, M>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "degrade")]
    fn stale_cache<KF, K, V, C, M>(
        self,
        layer: palisade_degrade::StaleCacheLayer<KF, K, V, C, M>,
    ) -> ServiceBuilderWith<palisade_degrade::StaleCacheLayer<KF, K, V, C, M>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "degrade")]
    fn shed<P>(
        self,
        layer: palisade_degrade::ShedLayer<P>,
    ) -> ServiceBuilderWith<palisade_degrade::ShedLayer<P>, L> {
        self.layer(layer)
    }
}
