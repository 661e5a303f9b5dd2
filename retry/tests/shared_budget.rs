//! One budget, one deposit: a retry layer and a hedge layer sharing one budget, in either
//! order, add at most `ratio × requests + floor` extra backend calls together.
#![allow(clippy::unwrap_used)] // helpers of tests unwrap like the tests

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_retry::hedge::HedgeLayer;
use palisade_retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use proptest::prelude::*;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

/// Answers call `n` after `script[n % len].1` ms, failing where `script[n % len].0`.
#[derive(Clone)]
struct Backend {
    script: Arc<Vec<(bool, u64)>>,
    calls: Arc<AtomicUsize>,
}

impl tower::Service<u32> for Backend {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let (fail, latency) = self.script[n % self.script.len()];
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(latency)).await;
            if fail {
                Err("backend failed".into())
            } else {
                Ok(req)
            }
        })
    }
}

struct Case {
    hedge_outside: bool,
    ratio: f64,
    min_per_sec: u32,
    max_attempts: u32,
    hedge_ms: u64,
    script: Vec<(bool, u64)>,
    gaps: Vec<u64>,
    /// How many requests are in flight together.
    batch: usize,
}

/// Runs the requests in batches of `batch` concurrent requests (interleaved on one thread),
/// a gap after each batch; returns (requests, backend calls, elapsed).
fn run(case: &Case) -> (usize, usize, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let budget =
            RetryBudget::tps(Duration::from_secs(1), case.min_per_sec, case.ratio).unwrap();
        let retry = RetryLayer::builder()
            .max_attempts(case.max_attempts)
            .backoff(Backoff::constant(Duration::from_millis(1)).jitter(Jitter::None))
            .share_budget(budget.clone())
            .build()
            .unwrap();
        let hedge = HedgeLayer::builder()
            .delay(Duration::from_millis(case.hedge_ms))
            .max_hedges(2)
            .share_budget(budget.clone())
            .build()
            .unwrap();
        let backend = Backend {
            script: Arc::new(case.script.clone()),
            calls: Arc::new(AtomicUsize::new(0)),
        };
        let svc: BoxCloneService<u32, u32, BoxError> = if case.hedge_outside {
            BoxCloneService::new(hedge.layer(retry.layer(backend.clone())))
        } else {
            BoxCloneService::new(retry.layer(hedge.layer(backend.clone())))
        };
        let start = tokio::time::Instant::now();
        for (b, gaps) in case.gaps.chunks(case.batch.max(1)).enumerate() {
            let calls = gaps
                .iter()
                .enumerate()
                .map(|(i, _)| svc.clone().oneshot((b * 1000 + i) as u32));
            let _ = futures_util::future::join_all(calls).await;
            let gap = gaps.iter().sum::<u64>();
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
        (
            case.gaps.len(),
            backend.calls.load(Ordering::SeqCst),
            start.elapsed(),
        )
    })
}

fn within_budget(case: &Case) -> Result<(), String> {
    let (requests, calls, elapsed) = run(case);
    let extra = calls.saturating_sub(requests) as f64;
    // Deposits count for at least 0.9 s (nine full slots of the 1 s window), so the floor
    // refills at most once per 0.9 s.
    let windows = (elapsed.as_secs_f64() / 0.9).floor() + 1.0;
    let cap = case.ratio * requests as f64 + f64::from(case.min_per_sec) * windows + 1.0;
    if extra <= cap {
        Ok(())
    } else {
        Err(format!(
            "{extra} extra calls for {requests} requests > cap {cap} (hedge outside: {})",
            case.hedge_outside
        ))
    }
}

#[test]
fn a_failing_backend_behind_both_layers_gets_one_ratio_of_extra_load() {
    // Every call fails and is slow enough to be hedged: both layers want extra calls.
    for hedge_outside in [false, true] {
        let case = Case {
            hedge_outside,
            ratio: 0.2,
            min_per_sec: 0,
            max_attempts: 4,
            hedge_ms: 5,
            script: vec![(true, 20)],
            gaps: vec![10; 500],
            batch: 1,
        };
        within_budget(&case).unwrap();
        let (requests, calls, _) = run(&case);
        // The allowance is used (not refused outright): close to 20% extra.
        assert!(calls >= requests + requests / 10, "{calls} calls");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn retries_and_hedges_together_stay_within_one_budget(
        hedge_outside: bool,
        ratio in 0.0f64..=1.0,
        min_per_sec in 0u32..4,
        max_attempts in 2u32..6,
        hedge_ms in 1u64..40,
        script in proptest::collection::vec((proptest::bool::weighted(0.6), 0u64..60), 1..40),
        gaps in proptest::collection::vec(0u64..60, 1..200),
        batch in 1usize..8,
    ) {
        let case = Case {
            hedge_outside, ratio, min_per_sec, max_attempts, hedge_ms, script, gaps, batch,
        };
        prop_assert!(within_budget(&case).is_ok(), "{}", within_budget(&case).unwrap_err());
    }
}
