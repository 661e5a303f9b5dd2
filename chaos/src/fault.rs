//! What can be injected: fault kinds, scheduled faults and latency distributions.

use std::fmt;
use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::config::ensure;

// ===== FaultKind =====

/// The kinds of fault a [`ChaosLayer`](crate::ChaosLayer) injects, without their data: used
/// for rates, events, metric labels and the handle's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FaultKind {
    /// The call fails with an error built by the configured error function; the inner
    /// service is not called.
    Error,
    /// The call answers with a response built by the configured function (a `503`, an
    /// empty body); the inner service is not called.
    Replace,
    /// The answer is delayed by a sampled latency.
    Latency,
    /// The call never answers (to exercise timeouts); the inner service is not called.
    Hang,
    /// `poll_ready` fails. Tower treats this as the service having failed for good: see
    /// [`ChaosConfigBuilder::fail_readiness`](crate::ChaosConfigBuilder::fail_readiness).
    Readiness,
    /// A user behaviour runs on the request before the inner service is called and/or on
    /// its answer (drop a connection, corrupt a field).
    Behaviour,
}

impl FaultKind {
    /// Every kind, in the order faults are decided for a call.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Hang,
        FaultKind::Error,
        FaultKind::Replace,
        FaultKind::Latency,
        FaultKind::Behaviour,
        FaultKind::Readiness,
    ];

    /// Every kind, ordered by [`FaultKind::index`].
    pub(crate) const BY_INDEX: [FaultKind; 6] = [
        FaultKind::Error,
        FaultKind::Replace,
        FaultKind::Latency,
        FaultKind::Hang,
        FaultKind::Readiness,
        FaultKind::Behaviour,
    ];

    /// The lower-case name used in events and as the `fault` metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            FaultKind::Error => "error",
            FaultKind::Replace => "replace",
            FaultKind::Latency => "latency",
            FaultKind::Hang => "hang",
            FaultKind::Readiness => "readiness",
            FaultKind::Behaviour => "behaviour",
        }
    }

    /// A dense index for per-kind arrays.
    pub(crate) const fn index(self) -> usize {
        match self {
            FaultKind::Error => 0,
            FaultKind::Replace => 1,
            FaultKind::Latency => 2,
            FaultKind::Hang => 3,
            FaultKind::Readiness => 4,
            FaultKind::Behaviour => 5,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ===== Fault =====

/// A fault with its data, as used by a scheduled [`Window`](crate::Window).
///
/// `Error`, `Replace`, `Readiness` and `Behaviour` use the functions configured on the
/// builder; `Latency` carries its own distribution so a "latency spike" window can be much
/// slower than the background latency rate.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Fault {
    /// Fail with the configured error.
    Error,
    /// Answer with the configured replacement response.
    Replace,
    /// Delay the answer by a sample of this distribution.
    Latency(Latency),
    /// Never answer.
    Hang,
    /// Fail `poll_ready` with the configured readiness error.
    Readiness,
    /// Run the configured behaviours on the request and the answer.
    Behaviour,
}

impl Fault {
    /// The kind of this fault.
    pub const fn kind(&self) -> FaultKind {
        match self {
            Fault::Error => FaultKind::Error,
            Fault::Replace => FaultKind::Replace,
            Fault::Latency(_) => FaultKind::Latency,
            Fault::Hang => FaultKind::Hang,
            Fault::Readiness => FaultKind::Readiness,
            Fault::Behaviour => FaultKind::Behaviour,
        }
    }
}

// ===== Latency =====

/// A latency distribution: fixed, uniform or long-tailed.
///
/// Long tails are what hurt in production (one slow call in a hundred sets the p99), so
/// [`Latency::pareto`] and [`Latency::lognormal`] are there to reproduce them; every sample
/// is capped (default [`Latency::DEFAULT_CAP`]) so a tail sample cannot stall a simulation.
///
/// ```
/// use palisade_chaos::Latency;
/// use std::time::Duration;
///
/// let tail = Latency::pareto(Duration::from_millis(10), 1.5);
/// let mut rng = fastrand::Rng::with_seed(1);
/// let samples: Vec<Duration> = (0..1000).map(|_| tail.sample(&mut rng)).collect();
/// assert!(samples.iter().all(|d| *d >= Duration::from_millis(10)));
/// assert!(samples.iter().any(|d| *d > Duration::from_millis(100)), "a long tail");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Latency {
    /// Always this delay.
    Fixed(#[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))] Duration),
    /// Uniformly between `min` and `max`.
    Uniform {
        /// The smallest delay.
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
        min: Duration,
        /// The largest delay.
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
        max: Duration,
    },
    /// Pareto: at least `scale`, with a power-law tail (`shape` 1.1 to 3; smaller is
    /// heavier; the mean is `shape * scale / (shape - 1)`), capped at `cap`.
    Pareto {
        /// The smallest delay (the distribution's minimum).
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
        scale: Duration,
        /// The tail index.
        shape: f64,
        /// No sample exceeds this.
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
        cap: Duration,
    },
    /// Log-normal: half the samples under `median`, spread `sigma` (0.5 is a mild tail, 1.0
    /// a heavy one: p99 ≈ 10× the median), capped at `cap`.
    LogNormal {
        /// The median delay.
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
        median: Duration,
        /// The standard deviation of the log of the delay.
        sigma: f64,
        /// No sample exceeds this.
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
        cap: Duration,
    },
}

impl Default for Latency {
    /// 100 ms fixed: visible in every percentile, yet under typical 1 s timeouts, so turning
    /// latency on does not silently turn into timeouts.
    fn default() -> Self {
        Latency::Fixed(Duration::from_millis(100))
    }
}

impl Latency {
    /// The default cap on long-tailed samples: 30 s, the common client timeout; a longer
    /// sample behaves like a [`FaultKind::Hang`] anyway.
    pub const DEFAULT_CAP: Duration = Duration::from_secs(30);

    /// Always `delay`.
    pub const fn fixed(delay: Duration) -> Self {
        Latency::Fixed(delay)
    }

    /// Uniformly between `min` and `max`.
    pub const fn uniform(min: Duration, max: Duration) -> Self {
        Latency::Uniform { min, max }
    }

    /// A Pareto tail from `scale` with tail index `shape`, capped at [`Self::DEFAULT_CAP`].
    pub const fn pareto(scale: Duration, shape: f64) -> Self {
        Latency::Pareto {
            scale,
            shape,
            cap: Self::DEFAULT_CAP,
        }
    }

    /// A log-normal around `median` with spread `sigma`, capped at [`Self::DEFAULT_CAP`].
    pub const fn lognormal(median: Duration, sigma: f64) -> Self {
        Latency::LogNormal {
            median,
            sigma,
            cap: Self::DEFAULT_CAP,
        }
    }

    /// The same distribution with its samples capped at `cap` (no effect on `Fixed` and
    /// `Uniform`, which are bounded already).
    #[must_use]
    pub const fn capped(self, cap: Duration) -> Self {
        match self {
            Latency::Pareto { scale, shape, .. } => Latency::Pareto { scale, shape, cap },
            Latency::LogNormal { median, sigma, .. } => Latency::LogNormal { median, sigma, cap },
            other => other,
        }
    }

    /// Draw one delay.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => min + (max.saturating_sub(min)).mul_f64(rng.f64()),
            Latency::Pareto { scale, shape, cap } => {
                // Inverse transform: x = scale / U^(1/shape), U in (0, 1].
                let u = 1.0 - rng.f64();
                secs_capped(scale.as_secs_f64() / u.powf(1.0 / shape), cap)
            }
            Latency::LogNormal { median, sigma, cap } => {
                let z = standard_normal(rng);
                secs_capped(median.as_secs_f64() * (sigma * z).exp(), cap)
            }
        }
    }

    /// Refuse impossible parameters; `field` names the config field in the error.
    pub(crate) fn validate(
        &self,
        layer: &'static str,
        field: &'static str,
    ) -> Result<(), ConfigError> {
        match *self {
            Latency::Fixed(_) => Ok(()),
            Latency::Uniform { min, max } => ensure(
                min <= max,
                layer,
                field,
                self,
                "uniform latency with min <= max",
            ),
            Latency::Pareto { scale, shape, cap } => {
                ensure(
                    shape.is_finite() && shape > 0.0,
                    layer,
                    field,
                    self,
                    "pareto shape > 0",
                )?;
                ensure(scale <= cap, layer, field, self, "pareto scale <= cap")
            }
            Latency::LogNormal { median, sigma, cap } => {
                ensure(
                    sigma.is_finite() && sigma >= 0.0,
                    layer,
                    field,
                    self,
                    "lognormal sigma >= 0",
                )?;
                ensure(median <= cap, layer, field, self, "lognormal median <= cap")
            }
        }
    }
}

fn secs_capped(secs: f64, cap: Duration) -> Duration {
    if secs.is_finite() && secs < cap.as_secs_f64() {
        Duration::from_secs_f64(secs.max(0.0))
    } else {
        cap
    }
}

/// Box-Muller: one standard normal sample from two uniforms.
fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64(); // (0, 1]: ln(0) would be -inf
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(l: Latency, n: usize) -> Vec<Duration> {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut v: Vec<Duration> = (0..n).map(|_| l.sample(&mut rng)).collect();
        v.sort();
        v
    }

    #[test]
    fn uniform_stays_in_bounds() {
        let v = samples(
            Latency::uniform(Duration::from_millis(10), Duration::from_millis(20)),
            1000,
        );
        assert!(v[0] >= Duration::from_millis(10));
        assert!(v[999] <= Duration::from_millis(20));
    }

    #[test]
    fn lognormal_median_is_the_median() {
        let v = samples(Latency::lognormal(Duration::from_millis(50), 1.0), 4001);
        let median = v[2000].as_secs_f64();
        assert!((0.045..0.055).contains(&median), "median {median}");
        // sigma 1: p99 = median * e^(2.326) ≈ 10.2x
        let p99 = v[3960].as_secs_f64();
        assert!((0.35..0.75).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn pareto_respects_minimum_and_cap() {
        let l = Latency::pareto(Duration::from_millis(10), 0.5).capped(Duration::from_secs(1));
        let v = samples(l, 2000);
        assert!(v[0] >= Duration::from_millis(10));
        assert_eq!(v[1999], Duration::from_secs(1), "shape 0.5 reaches the cap");
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let bad = [
            Latency::uniform(Duration::from_secs(2), Duration::from_secs(1)),
            Latency::pareto(Duration::from_millis(1), 0.0),
            Latency::lognormal(Duration::from_millis(1), f64::NAN),
            Latency::lognormal(Duration::from_secs(60), 1.0),
        ];
        for l in bad {
            assert!(l.validate("chaos", "latency").is_err(), "{l:?}");
        }
        assert!(Latency::default().validate("chaos", "latency").is_ok());
    }
}
