//! The closed path allocates nothing per call.
//!
//! Runs without libtest's harness (`harness = false`): the harness's main thread
//! allocates while it waits for a test, and dhat counts every thread.
#![allow(clippy::print_stdout, clippy::unwrap_used)] // no harness: the test reports itself, and unwraps like a test

use std::time::Duration;

use futures_util::FutureExt;
use palisade_circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerLayer, KeyedCircuitBreakerLayer,
};
use palisade_core::BoxError;
use tower::{Layer, Service, ServiceExt, service_fn};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    closed_path_allocates_nothing_per_call();
    println!("test closed_path_allocates_nothing_per_call ... ok");
    keyed_closed_path_allocates_nothing_per_call();
    println!("test keyed_closed_path_allocates_nothing_per_call ... ok");
}

/// Calls on existing keys: a shard read lock, a map lookup and the same per-call path.
/// Creating a key allocates (its breaker and map entry), so keys are created in warm-up.
fn keyed_closed_path_allocates_nothing_per_call() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let config = CircuitBreakerConfig::builder()
        .name("hosts")
        .build()
        .unwrap();
    rt.block_on(async {
        let layer = KeyedCircuitBreakerLayer::new(config, |x: &u64| x % 8);
        let mut svc = layer.layer(service_fn(|x: u64| async move {
            if x.is_multiple_of(3) {
                Err::<u64, BoxError>(Box::from(""))
            } else {
                Ok(x)
            }
        }));
        let mut call = |x: u64| {
            let fut = svc.ready().now_or_never().unwrap().unwrap().call(x);
            let _ = fut.now_or_never().expect("ready at once");
        };
        for x in 0..100 {
            call(x);
        }
        let before = dhat::HeapStats::get();
        for x in 0..10_000u64 {
            call(x * 3 + 1);
        }
        let after = dhat::HeapStats::get();
        dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);
    });
}

fn closed_path_allocates_nothing_per_call() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let count = CircuitBreakerConfig::builder().build().unwrap();
    let time = CircuitBreakerConfig::builder()
        .time_window(Duration::from_secs(10), 10)
        .slow_call_duration(Duration::from_secs(1))
        .consecutive_failures(1_000)
        .build()
        .unwrap();
    rt.block_on(async {
        for config in [count, time] {
            let mut svc = CircuitBreakerLayer::new(config).layer(service_fn(|x: u64| async move {
                if x.is_multiple_of(3) {
                    Err::<u64, BoxError>(Box::from(""))
                } else {
                    Ok(x)
                }
            }));
            let mut call = |x: u64| {
                let fut = svc.ready().now_or_never().unwrap().unwrap().call(x);
                let _ = fut.now_or_never().expect("ready at once");
            };
            // Warm up (a failing call allocates its BoxError: only successes are measured).
            for x in 0..100 {
                call(x);
            }
            let before = dhat::HeapStats::get();
            for x in 0..10_000u64 {
                call(x * 3 + 1);
            }
            let after = dhat::HeapStats::get();
            dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);
            // A clone per request, used for one call and dropped (axum's way): nothing
            // either (a service makes its own reference count only after a few calls).
            let before = dhat::HeapStats::get();
            for x in 0..10_000u64 {
                let mut clone = svc.clone();
                let fut = clone
                    .ready()
                    .now_or_never()
                    .unwrap()
                    .unwrap()
                    .call(x * 3 + 1);
                let _ = fut.now_or_never().expect("ready at once");
            }
            let after = dhat::HeapStats::get();
            dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);
        }
    });
}
