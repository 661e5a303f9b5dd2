//! Property: any valid policy, written to TOML, JSON (and YAML) and read back, is the same
//! policy, durations to the nanosecond (`Duration::MAX` included).
#![cfg(feature = "policy")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade::policy::{Policies, Policy};
use palisade::prelude::*;
use proptest::prelude::*;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..2_000_000).prop_map(Duration::from_nanos),
        (1u64..100_000).prop_map(Duration::from_micros),
        (1u64..10_000).prop_map(Duration::from_millis),
        (1u64..100_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        Just(Duration::MAX),
    ]
}

prop_compose! {
    fn policy()(
        name in "[a-z][a-z0-9_-]{0,12}",
        timeout in proptest::option::of(duration()),
        attempts in proptest::option::of(1u32..=100),
        elapsed in proptest::option::of(duration()),
        cells in proptest::option::of((1u32..10_000, 1u64..60_000)),
        in_flight in proptest::option::of(1usize..10_000),
        adaptive in proptest::option::of((1usize..1_000, prop_oneof![Just(Duration::ZERO), duration()], proptest::option::of(1usize..10_000))),
        attempt in proptest::option::of(duration()),
    ) -> Policy {
        let mut policy = Policy::new(name.clone());
        if let Some(t) = timeout {
            policy = policy.with_timeout(TimeoutConfig::builder().name(name.clone()).timeout(t).build().unwrap());
        }
        if let Some(n) = attempts {
            let mut retry = RetryConfig::builder().name(name.clone()).max_attempts(n);
            if let Some(e) = elapsed {
                retry = retry.max_elapsed(e);
            }
            policy = policy.with_retry(retry.build().unwrap());
        }
        if let Some((c, ms)) = cells {
            policy = policy.with_rate_limit(
                RateLimitConfig::builder(c, Duration::from_millis(ms)).name(name.clone()).build().unwrap(),
            );
        }
        if let Some(n) = in_flight {
            policy = policy.with_concurrency_limit(
                ConcurrencyLimitConfig::builder(n).name(name.clone()).build().unwrap(),
            );
        }
        if let Some((initial, max_wait, max_queue)) = adaptive {
            let mut limit = AdaptiveLimitConfig::builder()
                .name(name.clone())
                .initial_limit(initial)
                .max_wait(max_wait);
            if let Some(q) = max_queue {
                limit = limit.max_queue(q);
            }
            policy = policy.with_adaptive_limit(limit.build().unwrap());
        }
        if let Some(t) = attempt {
            policy = policy.with_attempt_timeout(
                TimeoutConfig::builder().name(format!("{name}-attempt")).timeout(t).build().unwrap(),
            );
        }
        policy
    }
}

proptest! {
    #[test]
    fn every_valid_policy_round_trips(policies in proptest::collection::vec(policy(), 0..4)) {
        let policies: Policies = policies.into_iter().collect();
        let toml_text = toml::to_string(&policies).unwrap();
        prop_assert_eq!(&Policies::from_toml(&toml_text).unwrap(), &policies, "{}", toml_text);
        let json = serde_json::to_string(&policies).unwrap();
        prop_assert_eq!(&Policies::from_json(&json).unwrap(), &policies, "{}", json);
        #[cfg(feature = "yaml")]
        {
            let yaml = yaml_from_json(&json);
            prop_assert_eq!(&Policies::from_yaml(&yaml).unwrap(), &policies, "{}", yaml);
        }
        // A policy equals itself only: one changed duration is another policy.
        for policy in policies.iter() {
            if let Some(t) = policy.timeout() {
                let other = t.to_builder().timeout(t.timeout().saturating_sub(Duration::from_nanos(1)).max(Duration::from_nanos(1))).build().unwrap();
                if other != *t {
                    prop_assert_ne!(&policy.clone().with_timeout(other), policy);
                }
            }
        }
    }
}

/// JSON is YAML: a flow-style document every YAML parser reads.
#[cfg(feature = "yaml")]
fn yaml_from_json(json: &str) -> String {
    format!("# written as flow YAML\n{json}\n")
}
