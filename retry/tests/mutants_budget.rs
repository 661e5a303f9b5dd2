//! The retry budget and the backoff schedule pinned down where mutation testing found them
//! loose: what `available` reports, the exact balance boundary, the config a budget keeps,
//! equal jitter's spread, the f64 arithmetic of long exponential schedules, and the serde
//! defaults.
#![allow(clippy::unwrap_used)] // tests unwrap

use std::time::Duration;

use palisade_core::Outcome;
use palisade_retry::{Backoff, BudgetConfig, Jitter, RetryBudget};
use tokio::time::advance;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn take(b: &Backoff, seed: u64, n: usize) -> Vec<Duration> {
    b.schedule(fastrand::Rng::with_seed(seed)).take(n).collect()
}

// ===== the TPS budget =====

/// `available` is the number of withdrawals the balance pays for, and withdrawing exactly
/// the balance is allowed.
#[tokio::test(start_paused = true)]
async fn tps_available_counts_the_retries_the_balance_pays_for() {
    // 50%: two requests buy one retry.
    let budget = RetryBudget::tps(Duration::from_secs(10), 0, 0.5).unwrap();
    assert_eq!(budget.available(), 0.0);
    for _ in 0..5 {
        budget.deposit();
    }
    assert_eq!(
        budget.available(),
        2.0,
        "5 requests at 50%: 2 whole retries"
    );
    assert!(budget.withdraw());
    assert_eq!(budget.available(), 1.0);
    budget.deposit();
    assert_eq!(budget.available(), 2.0);
    // The second withdrawal takes the balance to exactly zero: it is paid for.
    assert!(budget.withdraw() && budget.withdraw());
    assert!(!budget.withdraw());
    assert_eq!(budget.available(), 0.0);
}

/// The reserve of `min_per_sec` retries per second counts in `available` and is spent
/// before nothing is left.
#[tokio::test(start_paused = true)]
async fn the_reserve_shows_in_available() {
    let budget = RetryBudget::tps(Duration::from_secs(2), 3, 1.0).unwrap();
    assert_eq!(budget.available(), 6.0, "3 per second over a 2 s window");
    budget.deposit();
    assert_eq!(budget.available(), 7.0);
    for _ in 0..7 {
        assert!(budget.withdraw());
    }
    assert!(!budget.withdraw());
}

/// Deposits count for the whole window and leave it slot by slot.
#[tokio::test(start_paused = true)]
async fn deposits_leave_the_window_one_slot_at_a_time() {
    // 1 s window in 10 slots of 100 ms.
    let budget = RetryBudget::tps(Duration::from_secs(1), 0, 1.0).unwrap();
    for step in 0..10u32 {
        for _ in 0..=step {
            budget.deposit();
        }
        advance(ms(100)).await;
    }
    // Slots of 1, 2, ... 10 deposits, the oldest 1 s old: it has just left the window.
    assert_eq!(budget.available(), 54.0);
    advance(ms(100)).await;
    assert_eq!(budget.available(), 52.0);
    advance(ms(250)).await;
    assert_eq!(budget.available(), 52.0 - 3.0 - 4.0);
    advance(ms(650)).await;
    assert_eq!(budget.available(), 0.0);
    // A later burst is not lost to the slots cleared on the way.
    budget.deposit();
    advance(ms(50)).await;
    budget.deposit();
    assert_eq!(budget.available(), 2.0);
}

/// A long silence clears every slot, whatever their position in the ring.
#[tokio::test(start_paused = true)]
async fn a_long_silence_empties_the_window() {
    let budget = RetryBudget::tps(Duration::from_secs(1), 0, 1.0).unwrap();
    for _ in 0..7 {
        for _ in 0..3 {
            budget.deposit();
        }
        advance(ms(130)).await;
    }
    assert!(budget.available() > 0.0);
    advance(Duration::from_secs(37)).await;
    assert_eq!(budget.available(), 0.0);
    budget.deposit();
    assert_eq!(budget.available(), 1.0);
}

#[test]
fn a_budget_keeps_its_config() {
    let tps = BudgetConfig::Tps {
        ttl: Duration::from_secs(5),
        min_per_sec: 2,
        ratio: 0.3,
    };
    let budget = tps.build().unwrap().expect("a budget");
    assert_eq!(budget.config(), &tps);
    let shown = format!("{budget:?}");
    assert!(
        shown.contains("RetryBudget") && shown.contains("ratio: 0.3"),
        "{shown}"
    );

    let bucket = BudgetConfig::TokenBucket {
        max_tokens: 7,
        token_ratio: 0.5,
    };
    let budget = bucket.build().unwrap().expect("a budget");
    assert_eq!(budget.config(), &bucket);
    assert!(BudgetConfig::None.build().unwrap().is_none());
}

// ===== the token bucket =====

#[test]
fn token_bucket_available_is_the_tokens_above_half() {
    let budget = RetryBudget::token_bucket(10, 0.5).unwrap();
    assert_eq!(budget.available(), 5.0, "a full bucket of 10");
    budget.record(Outcome::Failure);
    assert_eq!(budget.available(), 4.0);
    budget.record(Outcome::Success);
    assert_eq!(
        budget.available(),
        5.0,
        "9.5 tokens: 4.5 above half, rounded up"
    );
    budget.record(Outcome::Success);
    budget.record(Outcome::Success);
    assert_eq!(budget.available(), 5.0, "never above the bucket");
    for _ in 0..20 {
        budget.record(Outcome::Failure);
    }
    assert_eq!(budget.available(), 0.0);
    assert!(!budget.withdraw());
    // Never below empty: 11 successes of 0.5 take it from 0 to 5.5 tokens.
    for _ in 0..11 {
        budget.record(Outcome::Success);
    }
    assert_eq!(budget.available(), 1.0);
    assert!(budget.withdraw());
}

// ===== backoff =====

#[test]
fn equal_jitter_spreads_over_the_upper_half() {
    let b = Backoff::constant(ms(1000)).jitter(Jitter::Equal);
    let delays = take(&b, 11, 200);
    let min = delays.iter().min().copied().unwrap();
    let max = delays.iter().max().copied().unwrap();
    assert!(min >= ms(500) && min < ms(550), "{min:?}");
    assert!(max > ms(950) && max <= ms(1000), "{max:?}");
}

/// Integer factors give exact nanoseconds, even where seconds in an f64 would not.
#[test]
fn long_exponential_schedules_stay_exact() {
    let b = Backoff::exponential(Duration::from_nanos(1))
        .max_delay(Duration::MAX)
        .jitter(Jitter::None);
    let delays = take(&b, 0, 71);
    assert_eq!(delays[60], Duration::from_nanos(1 << 60));
    assert_eq!(delays[63], Duration::from_nanos(1 << 63));
    // Past u64 nanoseconds (584 years), still the right size.
    let expected = 2f64.powi(70) / 1e9;
    let got = delays[70].as_secs_f64();
    assert!(
        (got - expected).abs() / expected < 1e-9,
        "{got} vs {expected}"
    );
}

#[test]
fn validation_bounds_the_factor_from_above() {
    let err = Backoff::exponential(ms(1))
        .factor(101.0)
        .validate()
        .unwrap_err();
    assert_eq!(err.field(), "backoff.factor");
    assert!(
        Backoff::exponential(ms(1))
            .factor(100.0)
            .max_delay(ms(1))
            .validate()
            .is_ok(),
        "a cap equal to the base is allowed"
    );
}

#[test]
fn getters_and_debug() {
    let b = Backoff::linear(ms(100), ms(50))
        .max_delay(ms(700))
        .jitter(Jitter::None);
    assert_eq!(b.get_max_delay(), ms(700));
    assert_eq!(b.get_jitter(), Jitter::None);
    assert_eq!(
        format!("{b:?}"),
        "Backoff { linear: (100ms, 50ms), max_delay: 700ms, jitter: None }"
    );
    let mut schedule = b.schedule(fastrand::Rng::with_seed(1));
    schedule.next();
    let shown = format!("{schedule:?}");
    assert!(
        shown.contains("attempt: 1") && shown.contains("max_delay: 700ms"),
        "{shown}"
    );
}

#[cfg(feature = "serde")]
mod serde {
    use super::*;

    #[test]
    fn exponential_defaults_from_data() {
        let b: Backoff =
            serde_json::from_str(r#"{ "kind": "exponential", "base": "100ms", "jitter": "none" }"#)
                .unwrap();
        assert_eq!(b.get_max_delay(), Duration::from_secs(10));
        assert_eq!(take(&b, 0, 4), [100, 200, 400, 800].map(ms));
        let b: Backoff =
            serde_json::from_str(r#"{ "kind": "constant", "delay": "250ms", "jitter": "none" }"#)
                .unwrap();
        assert_eq!(take(&b, 0, 2), [ms(250); 2]);
        let err = serde_json::from_str::<Backoff>(
            r#"{ "kind": "exponential", "base": "1s", "factor": 0.5 }"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("backoff.factor"), "{err}");
        let json = serde_json::to_string(&b).unwrap();
        assert!(json.contains("250ms"), "{json}");
    }

    #[test]
    fn budget_configs_from_data() {
        let c: BudgetConfig = serde_json::from_str(
            r#"{ "kind": "token_bucket", "max_tokens": 7, "token_ratio": 0.5 }"#,
        )
        .unwrap();
        assert_eq!(
            c,
            BudgetConfig::TokenBucket {
                max_tokens: 7,
                token_ratio: 0.5
            }
        );
        let err = serde_json::from_str::<BudgetConfig>(
            r#"{ "kind": "token_bucket", "max_tokens": 0, "token_ratio": 0.5 }"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("budget.max_tokens"), "{err}");
    }
}
