//! Retry budgets: a cap on the extra load retries (and hedges) may add.
//!
//! Retrying every failure up to `max_attempts` multiplies the load on a backend exactly when
//! it is struggling. A budget shared by all clones of a layer (and, through its handle,
//! by several layers) lets retries add at most a fixed ratio of extra requests:
//!
//! - [`RetryBudget::tps`] (the default): Finagle's and tower's `TpsBudget`. Each request
//!   deposits, each retry withdraws `1 / ratio` deposits; deposits expire after a sliding
//!   window (`ttl`), and a small reserve of `min_per_sec` retries per second lets a
//!   low-traffic client retry at all.
//! - [`RetryBudget::token_bucket`]: gRPC's retry throttling. Each failed attempt takes a
//!   token, each successful one gives back `token_ratio`; retries stop while the bucket is
//!   at or below half full.
//!
//! Both are lock-free: a few atomic operations per request.
//!
//! ```
//! use palisade_retry::RetryBudget;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // 10% extra load, no floor: 10 requests buy exactly one retry.
//! let budget = RetryBudget::tps(Duration::from_secs(10), 0, 0.1).unwrap();
//! for _ in 0..10 {
//!     budget.deposit();
//! }
//! assert!(budget.withdraw());
//! assert!(!budget.withdraw());
//! # }
//! ```

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicIsize, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::config::ensure;
use palisade_core::{ConfigError, Outcome};
use tokio::time::Instant;

/// A retry budget; cloning gives another handle to the same budget.
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Kind>,
}

enum Kind {
    Tps(Tps),
    TokenBucket(TokenBucket),
}

// ===== impl RetryBudget =====

impl RetryBudget {
    /// A TPS budget: retries may add `ratio` extra load over a sliding window of `ttl`,
    /// plus `min_per_sec` retries per second whatever the traffic.
    ///
    /// `ttl` must be 1 to 60 s, `ratio` 0.0 to 1000.0 (e.g. 0.2: five requests buy one
    /// retry), `min_per_sec` below 2³¹ (Finagle's bounds).
    pub fn tps(ttl: Duration, min_per_sec: u32, ratio: f64) -> Result<Self, ConfigError> {
        Ok(Self::new(Kind::Tps(Tps::new(ttl, min_per_sec, ratio)?)))
    }

    /// gRPC's retry throttling: a bucket of `max_tokens` (1 to 1000); a failed attempt takes
    /// one token, a successful one returns `token_ratio` (0.001 to 1.0); retries are allowed
    /// only while more than half the tokens remain.
    pub fn token_bucket(max_tokens: u32, token_ratio: f64) -> Result<Self, ConfigError> {
        let bucket = TokenBucket::new(max_tokens, token_ratio)?;
        Ok(Self::new(Kind::TokenBucket(bucket)))
    }

    fn new(kind: Kind) -> Self {
        Self {
            inner: Arc::new(kind),
        }
    }

    /// Record one new request (not a retry). Layers call this once per request.
    #[inline]
    pub fn deposit(&self) {
        if let Kind::Tps(tps) = &*self.inner {
            tps.deposit(Instant::now());
        }
    }

    /// [`deposit`](Self::deposit) for the hot path: reads the clock (to expire old slots)
    /// only on every 32nd request of a thread. A deposit made while the
    /// current slot is stale is filed under the stale slot and so expires early: the
    /// shortcut can only make the budget stricter, never looser.
    #[inline]
    pub(crate) fn deposit_sampled(&self) {
        if let Kind::Tps(tps) = &*self.inner {
            if clock_sample_due() {
                tps.expire(Instant::now());
            }
            tps.add_deposit();
        }
    }

    /// Record one attempt's outcome. Only the token bucket uses it.
    #[inline]
    pub fn record(&self, outcome: Outcome) {
        if let Kind::TokenBucket(bucket) = &*self.inner {
            bucket.record(outcome);
        }
    }

    /// Ask for one retry (or hedge): `true` if the budget allows it (and pays for it).
    pub fn withdraw(&self) -> bool {
        match &*self.inner {
            Kind::Tps(tps) => tps.withdraw(Instant::now()),
            Kind::TokenBucket(bucket) => bucket.allows_retry(),
        }
    }

    /// How many retries the budget allows right now (approximate under concurrency).
    pub fn available(&self) -> f64 {
        match &*self.inner {
            Kind::Tps(tps) => tps.available(Instant::now()),
            Kind::TokenBucket(bucket) => bucket.available(),
        }
    }

    /// `true` when both handles point to the same budget.
    pub fn same_as(&self, other: &RetryBudget) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Default for RetryBudget {
    /// A TPS budget of 20% extra load over 10 s with a floor of 10 retries per second:
    /// Finagle's defaults, also tower's. Under a full outage a client adds at most 1.2x its
    /// normal load instead of `max_attempts`x.
    fn default() -> Self {
        Self::new(Kind::Tps(Tps::default()))
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.inner {
            Kind::Tps(_) => "tps",
            Kind::TokenBucket(_) => "token_bucket",
        };
        f.debug_struct("RetryBudget")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

// ===== impl Tps =====

/// How many requests of one thread share one clock read for the budget's slot rotation.
/// At 32, a thread serving 1000 requests per second still reads the clock 30 times per
/// (1 s) slot, while a request pays for a clock read only 1 time in 32.
const CLOCK_SAMPLE: u32 = 32;

thread_local! {
    static DEPOSITS: Cell<u32> = const { Cell::new(0) };
}

fn clock_sample_due() -> bool {
    DEPOSITS.with(|n| {
        let count = n.get();
        n.set(count.wrapping_add(1));
        count % CLOCK_SAMPLE == 0
    })
}

/// How many slots the `ttl` is split into: deposits expire one slot at a time.
const SLOTS: usize = 10;

/// Fixed-point scale of deposits, so a ratio like 0.3 is not truncated to 1/3.
const SCALE: i64 = 1000;

struct Tps {
    start: Instant,
    slot_nanos: u64,
    /// The index of the current slot since `start`; whoever advances it rotates the slots.
    epoch: AtomicU64,
    slots: [AtomicIsize; SLOTS],
    /// Deposits and withdrawals of the current slot.
    current: AtomicIsize,
    reserve: isize,
    deposit_amount: isize,
    withdraw_amount: isize,
}

impl Tps {
    fn new(ttl: Duration, min_per_sec: u32, ratio: f64) -> Result<Self, ConfigError> {
        let ttl_ok = (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl);
        ensure(ttl_ok, "retry", "budget.ttl", ttl, "1s to 60s")?;
        let ratio_ok = ratio.is_finite() && (0.0..=1000.0).contains(&ratio);
        ensure(ratio_ok, "retry", "budget.ratio", ratio, "0.0 to 1000.0")?;
        let min_ok = min_per_sec < i32::MAX as u32;
        ensure(
            min_ok,
            "retry",
            "budget.min_per_sec",
            min_per_sec,
            "below 2^31",
        )?;

        let (deposit_amount, withdraw_amount) = if ratio == 0.0 {
            // Deposits buy nothing; only the reserve pays for retries.
            (0, SCALE)
        } else {
            (SCALE, ((SCALE as f64 / ratio).round() as i64).max(1))
        };
        let reserve = i64::from(min_per_sec)
            .saturating_mul(ttl.as_secs() as i64)
            .saturating_mul(withdraw_amount);
        let to_isize = |v: i64| isize::try_from(v).unwrap_or(isize::MAX);
        Ok(Self {
            start: Instant::now(),
            slot_nanos: ((ttl / SLOTS as u32).as_nanos() as u64).max(1),
            epoch: AtomicU64::new(0),
            slots: Default::default(),
            current: AtomicIsize::new(0),
            reserve: to_isize(reserve),
            deposit_amount: to_isize(deposit_amount),
            withdraw_amount: to_isize(withdraw_amount),
        })
    }

    /// Move to the slot of `now`, expiring deposits older than the window. Lock-free: the
    /// thread that advances `epoch` does the rotation; writes racing with it land in the
    /// slot being closed, which is harmless.
    fn expire(&self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let epoch = u64::try_from(elapsed / u128::from(self.slot_nanos)).unwrap_or(u64::MAX);
        let seen = self.epoch.load(Ordering::Acquire);
        if epoch <= seen {
            return;
        }
        if self
            .epoch
            .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let closed = self.current.swap(0, Ordering::AcqRel);
        self.slot(seen).store(closed, Ordering::Release);
        let passed = (epoch - seen).min(SLOTS as u64);
        for k in 1..=passed {
            self.slot(seen + k).store(0, Ordering::Release);
        }
    }

    fn slot(&self, epoch: u64) -> &AtomicIsize {
        &self.slots[(epoch % SLOTS as u64) as usize]
    }

    fn past(&self) -> isize {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .fold(self.reserve, isize::saturating_add)
    }

    fn deposit(&self, now: Instant) {
        self.expire(now);
        self.add_deposit();
    }

    fn add_deposit(&self) {
        self.current
            .fetch_add(self.deposit_amount, Ordering::AcqRel);
    }

    fn withdraw(&self, now: Instant) -> bool {
        self.expire(now);
        let past = self.past();
        let mut current = self.current.load(Ordering::Acquire);
        loop {
            if past.saturating_add(current) < self.withdraw_amount {
                return false;
            }
            match self.current.compare_exchange_weak(
                current,
                current - self.withdraw_amount,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    fn available(&self, now: Instant) -> f64 {
        self.expire(now);
        let balance = self
            .past()
            .saturating_add(self.current.load(Ordering::Acquire));
        (balance / self.withdraw_amount).max(0) as f64
    }
}

impl Default for Tps {
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10, 0.2).expect("the default budget is valid")
    }
}

// ===== impl TokenBucket =====

struct TokenBucket {
    /// Milli-tokens, as gRPC keeps three decimals of `token_ratio`.
    tokens: AtomicI64,
    max: i64,
    refill: i64,
}

impl TokenBucket {
    fn new(max_tokens: u32, token_ratio: f64) -> Result<Self, ConfigError> {
        let max_ok = (1..=1000).contains(&max_tokens);
        ensure(
            max_ok,
            "retry",
            "budget.max_tokens",
            max_tokens,
            "1 to 1000",
        )?;
        let ratio_ok = token_ratio.is_finite() && (0.001..=1.0).contains(&token_ratio);
        ensure(
            ratio_ok,
            "retry",
            "budget.token_ratio",
            token_ratio,
            "0.001 to 1.0",
        )?;
        let max = i64::from(max_tokens) * SCALE;
        Ok(Self {
            tokens: AtomicI64::new(max),
            max,
            refill: (token_ratio * SCALE as f64).round() as i64,
        })
    }

    fn record(&self, outcome: Outcome) {
        let delta = match outcome {
            Outcome::Success => self.refill,
            Outcome::Failure => -SCALE,
            Outcome::Ignore => return,
        };
        let max = self.max;
        // fetch_update only fails when the closure returns None, which it never does.
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t + delta).clamp(0, max))
            });
    }

    fn allows_retry(&self) -> bool {
        self.tokens.load(Ordering::Acquire) > self.max / 2
    }

    fn available(&self) -> f64 {
        let above_half = self.tokens.load(Ordering::Acquire) - self.max / 2;
        (above_half.max(0) as f64 / SCALE as f64).ceil()
    }
}

// ===== BudgetConfig =====

/// A budget as data, for configs loaded with `serde`.
///
/// ```
/// use palisade_retry::BudgetConfig;
/// use std::time::Duration;
///
/// let budget = BudgetConfig::Tps { ttl: Duration::from_secs(10), min_per_sec: 10, ratio: 0.2 };
/// assert!(budget.build().unwrap().is_some());
/// assert!(BudgetConfig::None.build().unwrap().is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)
)]
pub enum BudgetConfig {
    /// [`RetryBudget::tps`].
    Tps {
        /// How long a deposit counts.
        #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
        ttl: Duration,
        /// Retries per second allowed whatever the traffic.
        min_per_sec: u32,
        /// Extra load retries may add (0.2 = 20%).
        ratio: f64,
    },
    /// [`RetryBudget::token_bucket`].
    TokenBucket {
        /// Bucket size.
        max_tokens: u32,
        /// Tokens returned per successful attempt.
        token_ratio: f64,
    },
    /// No budget: every failure is retried up to the attempt limit. Not recommended.
    None,
}

impl BudgetConfig {
    /// Validate and make the budget (`None` for [`BudgetConfig::None`]).
    pub fn build(&self) -> Result<Option<RetryBudget>, ConfigError> {
        match *self {
            BudgetConfig::Tps {
                ttl,
                min_per_sec,
                ratio,
            } => RetryBudget::tps(ttl, min_per_sec, ratio).map(Some),
            BudgetConfig::TokenBucket {
                max_tokens,
                token_ratio,
            } => RetryBudget::token_bucket(max_tokens, token_ratio).map(Some),
            BudgetConfig::None => Ok(None),
        }
    }
}

impl Default for BudgetConfig {
    /// The [default budget](RetryBudget::default).
    fn default() -> Self {
        BudgetConfig::Tps {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            ratio: 0.2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    #[tokio::test(start_paused = true)]
    async fn empty_budget_refuses() {
        let budget = RetryBudget::tps(Duration::from_secs(1), 0, 1.0).unwrap();
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_ttl() {
        let budget = RetryBudget::tps(Duration::from_secs(1), 0, 1.0).unwrap();
        budget.deposit();
        advance(Duration::from_secs(3)).await;
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_count_within_the_window() {
        let budget = RetryBudget::tps(Duration::from_secs(1), 0, 0.5).unwrap();
        budget.deposit();
        budget.deposit();
        advance(Duration::from_millis(850)).await;
        assert!(budget.withdraw());
        assert!(!budget.withdraw());

        advance(Duration::from_secs(2)).await;
        budget.deposit();
        advance(Duration::from_millis(300)).await;
        budget.deposit();
        advance(Duration::from_millis(800)).await;
        // The first deposit has expired; one alone does not pay for a retry at 50%.
        assert!(!budget.withdraw());
        budget.deposit();
        assert!(budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_refills_per_ttl() {
        let budget = RetryBudget::tps(Duration::from_secs(1), 5, 1.0).unwrap();
        for _ in 0..5 {
            assert!(budget.withdraw());
        }
        assert!(!budget.withdraw());
        assert_eq!(budget.available(), 0.0);
        advance(Duration::from_millis(1100)).await;
        assert!(budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_ratios_are_not_truncated() {
        // Tower's integer withdraw amount turns 0.3 into one retry per 3 requests.
        let budget = RetryBudget::tps(Duration::from_secs(10), 0, 0.3).unwrap();
        for _ in 0..100 {
            budget.deposit();
        }
        let mut retries = 0;
        while budget.withdraw() {
            retries += 1;
        }
        assert_eq!(retries, 30);
    }

    #[test]
    fn token_bucket_throttles_below_half() {
        let budget = RetryBudget::token_bucket(10, 0.1).unwrap();
        assert!(budget.withdraw());
        for _ in 0..5 {
            budget.record(Outcome::Failure);
        }
        // 5 of 10 tokens left: not above half.
        assert!(!budget.withdraw());
        for _ in 0..10 {
            budget.record(Outcome::Success);
        }
        assert!(budget.withdraw());
        assert_eq!(budget.available(), 1.0);
        budget.record(Outcome::Ignore);
        assert!(budget.withdraw());
    }

    #[test]
    fn invalid_parameters_name_the_field() {
        let err = RetryBudget::tps(Duration::ZERO, 1, 0.2).unwrap_err();
        assert_eq!(err.field(), "budget.ttl");
        let err = RetryBudget::tps(Duration::from_secs(1), 1, -1.0).unwrap_err();
        assert_eq!(err.field(), "budget.ratio");
        let err = RetryBudget::token_bucket(0, 0.1).unwrap_err();
        assert_eq!(err.field(), "budget.max_tokens");
        let err = RetryBudget::token_bucket(10, 2.0).unwrap_err();
        assert_eq!(err.field(), "budget.token_ratio");
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the interleaving of requests, retries and time, retries never exceed
        /// `ratio` times the requests plus the reserve of each window the run spans.
        #[test]
        fn withdrawals_never_exceed_the_budget(
            ops in proptest::collection::vec((any::<bool>(), 0u64..400), 1..300),
            min_per_sec in 0u32..5,
            ratio in 0.0f64..2.0,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let (deposits, withdrawals, elapsed) = rt.block_on(async {
                let budget = RetryBudget::tps(Duration::from_secs(1), min_per_sec, ratio).unwrap();
                let start = Instant::now();
                let (mut deposits, mut withdrawals) = (0u64, 0u64);
                for (deposit, wait_ms) in ops {
                    if deposit {
                        budget.deposit();
                        deposits += 1;
                    } else if budget.withdraw() {
                        withdrawals += 1;
                    }
                    advance(Duration::from_millis(wait_ms)).await;
                }
                (deposits, withdrawals, start.elapsed())
            });
            // Deposits count for at least 0.9 s (nine full slots of the 1 s window).
            let windows = (elapsed.as_secs_f64() / 0.9).floor() + 1.0;
            let cap = ratio * deposits as f64 + f64::from(min_per_sec) * windows + 1.0;
            prop_assert!(withdrawals as f64 <= cap, "{} > {}", withdrawals, cap);
        }
    }

    #[test]
    fn clones_share_one_budget() {
        let a = RetryBudget::default();
        let b = a.clone();
        assert!(a.same_as(&b));
        assert!(!a.same_as(&RetryBudget::default()));
    }
}
