//! The degraded mark is present exactly when the answer did not come from the live path:
//! a model-based property test of Fallback over StaleCache on paused time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_degrade::fallback::Value;
use palisade_degrade::{
    FallbackConfig, FallbackLayer, Marked, Origin, StaleCacheLayer, StaleConfig, Trigger,
};
use proptest::prelude::*;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

const MAX_STALENESS: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Step {
    key: u8,
    fail: bool,
    advance_s: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (0u8..4, any::<bool>(), 0u64..20).prop_map(|(key, fail, advance_s)| Step {
        key,
        fail,
        advance_s,
    })
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("test setup");
    rt.block_on(async {
        let down = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&down);
        let backend = service_fn(move |key: u8| {
            let fail = d.load(Ordering::Relaxed);
            async move {
                if fail {
                    Err::<Marked<String>, BoxError>("down".into())
                } else {
                    Ok(Marked::new(format!("live {key}")))
                }
            }
        });
        let stale = StaleConfig::builder()
            .capacity(8)
            .max_staleness(MAX_STALENESS)
            .build()
            .expect("test setup");
        let mut svc = ServiceBuilder::new()
            .layer(FallbackLayer::new(
                FallbackConfig::default(),
                Value::new(Marked::new("fallback".to_string())),
            ))
            .layer(StaleCacheLayer::new(stale, |k: &u8| *k))
            .service(backend);

        // The model: when each key last got a live answer.
        let mut stored: HashMap<u8, Duration> = HashMap::new();
        let mut now = Duration::ZERO;
        for s in steps {
            tokio::time::advance(Duration::from_secs(s.advance_s)).await;
            now += Duration::from_secs(s.advance_s);
            down.store(s.fail, Ordering::Relaxed);
            let answer = svc
                .ready()
                .await
                .expect("test setup")
                .call(s.key)
                .await
                .expect("test setup");
            if !s.fail {
                prop_assert!(answer.is_live());
                prop_assert_eq!(answer.get_ref(), &format!("live {}", s.key));
                stored.insert(s.key, now);
                continue;
            }
            let mark = answer.degraded().cloned();
            prop_assert!(mark.is_some(), "a failed live call must be marked");
            let mark = mark.expect("test setup");
            prop_assert_eq!(mark.trigger(), Trigger::Failure);
            match stored
                .get(&s.key)
                .map(|t| now - *t)
                .filter(|age| *age <= MAX_STALENESS)
            {
                Some(age) => {
                    prop_assert_eq!(mark.origin(), Origin::Stale { age });
                    prop_assert_eq!(answer.get_ref(), &format!("live {}", s.key));
                }
                None => {
                    prop_assert_eq!(mark.origin(), Origin::Fallback);
                    prop_assert_eq!(answer.get_ref().as_str(), "fallback");
                }
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn marked_exactly_when_not_live(steps in proptest::collection::vec(step(), 1..40)) {
        run(&steps)?;
    }
}
