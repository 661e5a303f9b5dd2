//! The direct rate limiter's happy path allocates nothing per call.
//!
//! Run without libtest's harness (`harness = false`): the harness's main thread allocates
//! while it waits for a test to finish, and dhat counts every thread.
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do
#![allow(clippy::print_stdout)] // without a harness, the test reports its own result

use std::time::Duration;

use futures_util::FutureExt;
use palisade_core::BoxError;
use palisade_rate_limit::RateLimitConfig;
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    direct_limiter_allocates_nothing_per_call();
    println!("alloc: direct_limiter_allocates_nothing_per_call ... ok");
}

fn direct_limiter_allocates_nothing_per_call() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let config = RateLimitConfig::builder(1_000_000_000, Duration::from_secs(1))
        .name("alloc")
        .build()
        .unwrap();
    let mut svc = config.layer(service_fn(|req: u64| {
        std::future::ready(Ok::<_, BoxError>(req))
    }));
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut call = |i: u64| {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let out = svc.call(i).now_or_never().expect("ready at once");
        assert_eq!(out.unwrap(), i);
    };
    for i in 0..100 {
        call(i);
    }
    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get();
    const CALLS: u64 = 10_000;
    for i in 0..CALLS {
        call(i);
    }
    let after = dhat::HeapStats::get();
    assert_eq!(
        after.total_blocks - before.total_blocks,
        0,
        "allocations in {CALLS} calls"
    );
}
