//! The happy path (first attempt succeeds) allocates nothing per call.
//!
//! Runs without libtest's harness (`harness = false`): the harness's main thread
//! allocates while it waits for a test, and dhat counts every thread.
#![allow(clippy::print_stdout, clippy::unwrap_used)] // no harness: the test reports itself, and unwraps like a test

use futures_util::FutureExt;
use palisade_core::BoxError;
use palisade_retry::{RetryConfig, RetryLayer};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn the_happy_path_allocates_nothing_per_call() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let _profiler = dhat::Profiler::builder().testing().build();

    let backend = tower::service_fn(|x: u64| std::future::ready(Ok::<_, BoxError>(x + 1)));
    // The default config: three attempts, jittered backoff, the default budget.
    let layer = RetryLayer::new(RetryConfig::builder().name("alloc").build().unwrap());
    let mut svc = layer.layer(backend);

    let mut call = |x: u64| {
        let ready = ServiceExt::<u64>::ready(&mut svc).now_or_never();
        ready.expect("always ready").expect("no error");
        svc.call(x)
            .now_or_never()
            .expect("ready at once")
            .expect("ok")
    };
    for x in 0..100 {
        assert_eq!(call(x), x + 1);
    }

    let before = dhat::HeapStats::get();
    const CALLS: u64 = 10_000;
    for x in 0..CALLS {
        assert_eq!(call(x), x + 1);
    }
    let after = dhat::HeapStats::get();
    let per_call = (after.total_blocks - before.total_blocks) as f64 / CALLS as f64;
    assert_eq!(
        after.total_blocks, before.total_blocks,
        "{per_call} allocations per call"
    );
}

fn main() {
    the_happy_path_allocates_nothing_per_call();
    println!("alloc: the_happy_path_allocates_nothing_per_call ... ok");
}
