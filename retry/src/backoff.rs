//! Backoff schedules: how long to wait before each retry.
//!
//! Three shapes (constant, linear, exponential), all capped by a maximum delay, and the
//! three jitter kinds from the AWS Architecture Blog's "Exponential Backoff And Jitter"
//! (full, equal, decorrelated). Jitter spreads the retries of many clients that failed at
//! the same moment, so they do not come back as one synchronized wave.
//!
//! Randomness comes from a [`fastrand::Rng`] the caller seeds, so a test or a simulation
//! replays the same delays. Any `Iterator<Item = Duration>` plugs in with
//! [`Backoff::from_fn`], so schedules from other crates fit without a dependency on them.
//!
//! ```
//! use palisade_retry::{Backoff, Jitter};
//! use std::time::Duration;
//!
//! let backoff = Backoff::exponential(Duration::from_millis(100))
//!     .factor(2.0)
//!     .max_delay(Duration::from_millis(500))
//!     .jitter(Jitter::None);
//! let delays: Vec<_> = backoff.schedule(fastrand::Rng::with_seed(7)).take(5).collect();
//! assert_eq!(delays, [100, 200, 400, 500, 500].map(Duration::from_millis));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::config::ensure;
use palisade_core::{ConfigError, time};

/// How randomness is mixed into each delay (see the AWS analysis of backoff and jitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Jitter {
    /// The exact schedule. Clients that failed together retry together.
    None,
    /// A uniform delay in `[0, d]`: the most spread, the least total work (AWS's
    /// recommendation, and the default).
    #[default]
    Full,
    /// `d/2` plus a uniform delay in `[0, d/2]`: never retries sooner than half the delay.
    Equal,
    /// `min(max_delay, uniform(base, previous * 3))`: each delay grows from the previous
    /// random one, not from the attempt number.
    Decorrelated,
}

/// Makes a fresh custom schedule for each request.
type MakeSchedule = Arc<dyn Fn() -> Box<dyn Iterator<Item = Duration> + Send> + Send + Sync>;

#[derive(Clone)]
enum Kind {
    Constant(Duration),
    Linear { base: Duration, step: Duration },
    Exponential { base: Duration, factor: f64 },
    Custom(MakeSchedule),
}

/// A backoff policy: the shape of the delays, their cap and the jitter.
///
/// Built-in shapes start with [`Jitter::Full`] and a 10 s cap; change them with
/// [`jitter`](Backoff::jitter) and [`max_delay`](Backoff::max_delay). A `Backoff` is a
/// description; [`schedule`](Backoff::schedule) makes the per-request iterator of delays.
#[derive(Clone)]
pub struct Backoff {
    kind: Kind,
    max_delay: Duration,
    jitter: Jitter,
}

/// The default cap of every built-in shape: long enough to ride out a restart, short
/// enough that a caller without a deadline does not hang for minutes.
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);

// ===== impl Backoff =====

impl Backoff {
    /// The same delay before every retry.
    pub const fn constant(delay: Duration) -> Self {
        Self::builtin(Kind::Constant(delay))
    }

    /// `base`, then `base + step`, `base + 2 * step`, …
    pub const fn linear(base: Duration, step: Duration) -> Self {
        Self::builtin(Kind::Linear { base, step })
    }

    /// `base`, then `base * factor`, `base * factor²`, … (factor 2 unless changed with
    /// [`factor`](Backoff::factor)).
    pub const fn exponential(base: Duration) -> Self {
        Self::builtin(Kind::Exponential { base, factor: 2.0 })
    }

    /// Any schedule: `make` is called once per request that needs a retry and its
    /// iterator yields the delays; when it ends, retrying stops. Jitter is
    /// [`Jitter::None`] (the iterator owns its randomness) unless set; the 10 s cap holds.
    ///
    /// ```
    /// use palisade_retry::Backoff;
    /// use std::time::Duration;
    ///
    /// // Fibonacci delays, from any crate or hand-written:
    /// let fib = Backoff::from_fn(|| {
    ///     std::iter::successors(Some((1u64, 1u64)), |&(a, b)| Some((b, a + b)))
    ///         .map(|(a, _)| Duration::from_millis(a * 10))
    /// });
    /// let delays: Vec<_> = fib.schedule(fastrand::Rng::new()).take(5).collect();
    /// assert_eq!(delays, [10, 10, 20, 30, 50].map(Duration::from_millis));
    /// ```
    pub fn from_fn<F, I>(make: F) -> Self
    where
        F: Fn() -> I + Send + Sync + 'static,
        I: IntoIterator<Item = Duration>,
        I::IntoIter: Send + 'static,
    {
        let make: MakeSchedule = Arc::new(move || Box::new(make().into_iter()));
        Self {
            kind: Kind::Custom(make),
            max_delay: DEFAULT_MAX_DELAY,
            jitter: Jitter::None,
        }
    }

    const fn builtin(kind: Kind) -> Self {
        Self {
            kind,
            max_delay: DEFAULT_MAX_DELAY,
            jitter: Jitter::Full,
        }
    }

    /// The growth factor of an exponential schedule (ignored by other shapes).
    #[must_use]
    pub fn factor(mut self, factor: f64) -> Self {
        if let Kind::Exponential { factor: f, .. } = &mut self.kind {
            *f = factor;
        }
        self
    }

    /// The cap on every delay, jitter and server hints included.
    #[must_use]
    pub const fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// The jitter kind.
    #[must_use]
    pub const fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The cap on every delay.
    pub const fn get_max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The jitter kind.
    pub const fn get_jitter(&self) -> Jitter {
        self.jitter
    }

    /// Check the parameters: an exponential factor is finite and at least 1, and the cap is
    /// not below the first delay.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Kind::Exponential { factor, .. } = self.kind {
            ensure(
                factor.is_finite() && (1.0..=100.0).contains(&factor),
                "retry",
                "backoff.factor",
                factor,
                "a number from 1.0 to 100.0",
            )?;
        }
        if let Some(base) = self.base() {
            ensure(
                self.max_delay >= base,
                "retry",
                "backoff.max_delay",
                self.max_delay,
                format!("at least the base delay {base:?}"),
            )?;
        }
        Ok(())
    }

    fn base(&self) -> Option<Duration> {
        match self.kind {
            Kind::Constant(d) => Some(d),
            Kind::Linear { base, .. } | Kind::Exponential { base, .. } => Some(base),
            Kind::Custom(_) => None,
        }
    }

    /// The delays for one request, drawing jitter from `rng`.
    pub fn schedule(&self, rng: fastrand::Rng) -> Schedule {
        let source = match &self.kind {
            Kind::Constant(d) => Source::Constant(*d),
            Kind::Linear { base, step } => Source::Linear {
                base: *base,
                step: *step,
            },
            Kind::Exponential { base, factor } => Source::Exponential {
                base: *base,
                factor: *factor,
            },
            Kind::Custom(make) => Source::Custom(make()),
        };
        Schedule {
            source,
            max_delay: self.max_delay,
            jitter: self.jitter,
            attempt: 0,
            base: None,
            previous: Duration::ZERO,
            rng,
        }
    }
}

impl Default for Backoff {
    /// Exponential from 100 ms, factor 2, capped at 10 s, full jitter: AWS's recommended
    /// shape; 100 ms is long enough for a blip to pass and short enough to be invisible to
    /// a user, and 3 attempts then fit in well under a second on average.
    fn default() -> Self {
        Self::exponential(Duration::from_millis(100))
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Backoff");
        match &self.kind {
            Kind::Constant(delay) => d.field("constant", delay),
            Kind::Linear { base, step } => d.field("linear", &(base, step)),
            Kind::Exponential { base, factor } => d.field("exponential", &(base, factor)),
            Kind::Custom(_) => d.field("custom", &".."),
        };
        d.field("max_delay", &self.max_delay)
            .field("jitter", &self.jitter)
            .finish()
    }
}

// ===== impl Schedule =====

enum Source {
    Constant(Duration),
    Linear { base: Duration, step: Duration },
    Exponential { base: Duration, factor: f64 },
    Custom(Box<dyn Iterator<Item = Duration> + Send>),
}

/// One request's delays: an iterator made by [`Backoff::schedule`].
pub struct Schedule {
    source: Source,
    max_delay: Duration,
    jitter: Jitter,
    attempt: u32,
    /// The first raw delay: the floor of decorrelated jitter.
    base: Option<Duration>,
    previous: Duration,
    rng: fastrand::Rng,
}

impl Schedule {
    fn raw(&mut self) -> Option<Duration> {
        let n = self.attempt;
        let delay = match &mut self.source {
            Source::Constant(d) => *d,
            Source::Linear { base, step } => base.saturating_add(step.saturating_mul(n)),
            Source::Exponential { base, factor } => {
                // Nanoseconds in f64 are exact for the usual integer factors.
                let nanos = base.as_nanos() as f64 * factor.powi(n.min(i32::MAX as u32) as i32);
                duration_from_nanos_f64(nanos, self.max_delay)
            }
            Source::Custom(iter) => iter.next()?,
        };
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }

    fn jittered(&mut self, capped: Duration) -> Duration {
        match self.jitter {
            Jitter::None => capped,
            Jitter::Full => uniform(&mut self.rng, Duration::ZERO, capped),
            Jitter::Equal => {
                let half = capped / 2;
                half + uniform(&mut self.rng, Duration::ZERO, capped - half)
            }
            Jitter::Decorrelated => {
                let base = *self.base.get_or_insert(capped);
                let previous = if self.previous.is_zero() {
                    base
                } else {
                    self.previous
                };
                let high = previous.saturating_mul(3).max(base);
                let next = uniform(&mut self.rng, base, high).min(self.max_delay);
                self.previous = next;
                next
            }
        }
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let capped = self.raw()?.min(self.max_delay);
        Some(self.jittered(capped))
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("attempt", &self.attempt)
            .field("max_delay", &self.max_delay)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

fn duration_from_nanos_f64(nanos: f64, cap: Duration) -> Duration {
    if !(nanos.is_finite() && nanos < cap.as_nanos() as f64) {
        return cap;
    }
    if nanos < u64::MAX as f64 {
        // Exact for whole nanoseconds, which is what integer factors give.
        Duration::from_nanos(nanos.round() as u64)
    } else {
        Duration::try_from_secs_f64(nanos / 1e9).map_or(cap, |d| d.min(cap))
    }
}

/// A uniform duration in `[low, high]` (nanosecond resolution).
fn uniform(rng: &mut fastrand::Rng, low: Duration, high: Duration) -> Duration {
    let (low, high) = (time::nanos(low), time::nanos(high));
    if high <= low {
        return Duration::from_nanos(low);
    }
    Duration::from_nanos(rng.u64(low..=high))
}

// ===== serde =====

#[cfg(feature = "serde")]
mod data {
    use super::{Backoff, DEFAULT_MAX_DELAY, Jitter, Kind};
    use std::time::Duration;

    /// A backoff as data: `{ "kind": "exponential", "base": "100ms", "factor": 2.0,
    /// "max_delay": "10s", "jitter": "full" }`.
    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
    pub(super) enum BackoffData {
        Constant {
            #[serde(with = "palisade_core::config::duration")]
            delay: Duration,
            #[serde(default = "max_delay", with = "palisade_core::config::duration")]
            max_delay: Duration,
            #[serde(default)]
            jitter: Jitter,
        },
        Linear {
            #[serde(with = "palisade_core::config::duration")]
            base: Duration,
            #[serde(with = "palisade_core::config::duration")]
            step: Duration,
            #[serde(default = "max_delay", with = "palisade_core::config::duration")]
            max_delay: Duration,
            #[serde(default)]
            jitter: Jitter,
        },
        Exponential {
            #[serde(with = "palisade_core::config::duration")]
            base: Duration,
            #[serde(default = "factor")]
            factor: f64,
            #[serde(default = "max_delay", with = "palisade_core::config::duration")]
            max_delay: Duration,
            #[serde(default)]
            jitter: Jitter,
        },
    }

    fn max_delay() -> Duration {
        DEFAULT_MAX_DELAY
    }

    fn factor() -> f64 {
        2.0
    }

    impl TryFrom<&Backoff> for BackoffData {
        type Error = &'static str;

        fn try_from(b: &Backoff) -> Result<Self, &'static str> {
            let (max_delay, jitter) = (b.max_delay, b.jitter);
            Ok(match b.kind {
                Kind::Constant(delay) => BackoffData::Constant {
                    delay,
                    max_delay,
                    jitter,
                },
                Kind::Linear { base, step } => BackoffData::Linear {
                    base,
                    step,
                    max_delay,
                    jitter,
                },
                Kind::Exponential { base, factor } => BackoffData::Exponential {
                    base,
                    factor,
                    max_delay,
                    jitter,
                },
                Kind::Custom(_) => {
                    return Err("a custom backoff schedule is code and cannot be serialized");
                }
            })
        }
    }

    impl From<BackoffData> for Backoff {
        fn from(data: BackoffData) -> Self {
            match data {
                BackoffData::Constant {
                    delay,
                    max_delay,
                    jitter,
                } => Backoff::constant(delay).max_delay(max_delay).jitter(jitter),
                BackoffData::Linear {
                    base,
                    step,
                    max_delay,
                    jitter,
                } => Backoff::linear(base, step)
                    .max_delay(max_delay)
                    .jitter(jitter),
                BackoffData::Exponential {
                    base,
                    factor,
                    max_delay,
                    jitter,
                } => Backoff::exponential(base)
                    .factor(factor)
                    .max_delay(max_delay)
                    .jitter(jitter),
            }
        }
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Backoff {
    /// Built-in shapes only (a custom iterator is code, not data); validated as
    /// [`Backoff::validate`] does.
    ///
    /// ```
    /// use palisade_retry::Backoff;
    ///
    /// let ok = r#"{ "kind": "constant", "delay": "250ms", "jitter": "none" }"#;
    /// assert!(serde_json::from_str::<Backoff>(ok).is_ok());
    /// let err = serde_json::from_str::<Backoff>(r#"{ "kind": "exponential", "base": "1s", "factor": 0.5 }"#)
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("backoff.factor"));
    /// // A duration needs a unit.
    /// assert!(serde_json::from_str::<Backoff>(r#"{ "kind": "constant", "delay": 250 }"#).is_err());
    /// ```
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let backoff = data::BackoffData::deserialize(d).map(Backoff::from)?;
        backoff.validate().map_err(serde::de::Error::custom)?;
        Ok(backoff)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Backoff {
    /// Built-in shapes, durations with units (round-trip exactly); a custom schedule fails.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        data::BackoffData::try_from(self)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn take(b: &Backoff, seed: u64, n: usize) -> Vec<Duration> {
        b.schedule(fastrand::Rng::with_seed(seed)).take(n).collect()
    }

    #[test]
    fn exact_schedules_without_jitter() {
        let constant = Backoff::constant(ms(50)).jitter(Jitter::None);
        assert_eq!(take(&constant, 0, 4), [ms(50); 4]);

        let linear = Backoff::linear(ms(100), ms(50))
            .max_delay(ms(230))
            .jitter(Jitter::None);
        assert_eq!(take(&linear, 0, 5), [100, 150, 200, 230, 230].map(ms));

        let exp = Backoff::exponential(ms(100))
            .factor(3.0)
            .max_delay(ms(2000))
            .jitter(Jitter::None);
        assert_eq!(take(&exp, 0, 5), [100, 300, 900, 2000, 2000].map(ms));

        let fractional = Backoff::exponential(ms(100))
            .factor(1.5)
            .jitter(Jitter::None);
        assert_eq!(take(&fractional, 0, 3), [100, 150, 225].map(ms));
    }

    #[test]
    fn huge_exponents_saturate_at_the_cap() {
        let exp = Backoff::exponential(ms(1)).jitter(Jitter::None);
        let last = take(&exp, 0, 2000).pop();
        assert_eq!(last, Some(DEFAULT_MAX_DELAY));
    }

    #[test]
    fn jitter_is_reproducible_with_a_seed() {
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            let b = Backoff::exponential(ms(100)).jitter(jitter);
            assert_eq!(take(&b, 42, 8), take(&b, 42, 8), "{jitter:?}");
            assert_ne!(take(&b, 42, 8), take(&b, 43, 8), "{jitter:?}");
        }
    }

    #[test]
    fn jittered_schedules_stay_in_their_bands() {
        let exp = |j| Backoff::exponential(ms(100)).max_delay(ms(1000)).jitter(j);
        let exact = take(&exp(Jitter::None), 0, 6);
        for seed in 0..50 {
            for (d, e) in take(&exp(Jitter::Full), seed, 6).iter().zip(&exact) {
                assert!(d <= e, "full: {d:?} > {e:?}");
            }
            for (d, e) in take(&exp(Jitter::Equal), seed, 6).iter().zip(&exact) {
                assert!(*d >= *e / 2 && d <= e, "equal: {d:?} vs {e:?}");
            }
            let mut previous = ms(100);
            for d in take(&exp(Jitter::Decorrelated), seed, 6) {
                assert!(d >= ms(100) && d <= ms(1000), "decorrelated: {d:?}");
                assert!(d <= previous * 3, "decorrelated grows at most 3x: {d:?}");
                previous = d;
            }
        }
    }

    #[test]
    fn full_jitter_actually_spreads() {
        let b = Backoff::constant(ms(1000));
        let delays = take(&b, 9, 100);
        let min = delays.iter().min().copied().unwrap_or_default();
        let max = delays.iter().max().copied().unwrap_or_default();
        assert!(min < ms(200) && max > ms(800), "{min:?}..{max:?}");
    }

    #[test]
    fn custom_schedules_end_and_are_capped() {
        let b = Backoff::from_fn(|| [ms(1), ms(20_000)]).max_delay(ms(500));
        assert_eq!(take(&b, 0, 5), [ms(1), ms(500)]);
    }

    #[test]
    fn validation_names_the_field() {
        let err = Backoff::exponential(ms(1))
            .factor(0.5)
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "backoff.factor");
        let err = Backoff::exponential(ms(1))
            .factor(f64::NAN)
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "backoff.factor");
        let err = Backoff::constant(ms(10))
            .max_delay(ms(5))
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "backoff.max_delay");
        assert!(Backoff::default().validate().is_ok());
    }

    #[test]
    fn forever_delays_do_not_panic() {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            let b = Backoff::constant(Duration::MAX)
                .max_delay(Duration::MAX)
                .jitter(jitter);
            assert!(b.validate().is_ok());
            let delays = take(&b, 1, 3);
            assert_eq!(delays.len(), 3, "{jitter:?}");
            let e = Backoff::exponential(Duration::MAX)
                .factor(100.0)
                .max_delay(Duration::MAX)
                .jitter(jitter);
            assert_eq!(take(&e, 1, 3).len(), 3);
            let l = Backoff::linear(Duration::MAX, Duration::MAX)
                .max_delay(Duration::MAX)
                .jitter(jitter);
            assert_eq!(take(&l, 1, 3).len(), 3);
        }
        let exact = Backoff::constant(Duration::MAX)
            .max_delay(Duration::MAX)
            .jitter(Jitter::None);
        assert_eq!(take(&exact, 0, 2), [Duration::MAX; 2]);
    }

    fn jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn every_delay_is_within_min_and_cap(
            base_ms in 0u64..5_000,
            extra_ms in 0u64..60_000,
            factor in 1.0f64..10.0,
            shape in 0u8..3,
            jitter in jitter(),
            seed: u64,
        ) {
            let base = ms(base_ms);
            let cap = base + ms(extra_ms);
            let b = match shape {
                0 => Backoff::constant(base),
                1 => Backoff::linear(base, base),
                _ => Backoff::exponential(base).factor(factor),
            }
            .max_delay(cap)
            .jitter(jitter);
            prop_assert!(b.validate().is_ok());
            let exact: Vec<_> = take(&b.clone().jitter(Jitter::None), 0, 30);
            for (d, e) in take(&b, seed, 30).into_iter().zip(exact) {
                prop_assert!(d <= cap);
                let floor = match jitter {
                    Jitter::None => e,
                    Jitter::Full => Duration::ZERO,
                    Jitter::Equal => e / 2,
                    Jitter::Decorrelated => base,
                };
                prop_assert!(d >= floor, "{:?} below {:?}", d, floor);
                if jitter == Jitter::None {
                    prop_assert_eq!(d, e);
                }
            }
        }
    }
}
