//! The happy paths allocate nothing per call: retry when the first attempt succeeds, hedge
//! when the request answers before its hedge delay (the percentile window recomputing as
//! it goes). A hedged copy's future is boxed: that is the documented exception, paid only
//! by requests slow enough to be hedged.
//!
//! Runs without libtest's harness (`harness = false`): the harness's main thread
//! allocates while it waits for a test, and dhat counts every thread.
#![allow(clippy::print_stdout, clippy::unwrap_used)] // no harness: the test reports itself, and unwraps like a test

use futures_util::FutureExt;
use palisade_core::BoxError;
use palisade_retry::RetryLayer;
use palisade_retry::hedge::HedgeLayer;
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn the_happy_path_allocates_nothing_per_call() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let backend = tower::service_fn(|x: u64| std::future::ready(Ok::<_, BoxError>(x + 1)));
    // The default config: three attempts, jittered backoff, the default budget.
    let layer = RetryLayer::builder().name("alloc").build().unwrap();
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

fn a_request_that_is_not_hedged_allocates_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let backend = tower::service_fn(|x: u64| std::future::ready(Ok::<_, BoxError>(x + 1)));
    // The default config: p95 of the last 1000 latencies after 100, recomputed every 62
    // answers (it allocated a fresh buffer each time: ~161 blocks per 10,000 calls).
    let layer = HedgeLayer::builder().name("alloc").build().unwrap();
    let mut svc = layer.layer(backend);

    let mut call = |x: u64| {
        let ready = ServiceExt::<u64>::ready(&mut svc).now_or_never();
        ready.expect("always ready").expect("no error");
        svc.call(x)
            .now_or_never()
            .expect("ready at once")
            .expect("ok")
    };
    for x in 0..200 {
        assert_eq!(call(x), x + 1);
    }
    assert!(svc_delay_known(&layer));

    let before = dhat::HeapStats::get();
    const CALLS: u64 = 10_000;
    for x in 0..CALLS {
        assert_eq!(call(x), x + 1);
    }
    let after = dhat::HeapStats::get();
    assert_eq!(
        after.total_blocks,
        before.total_blocks,
        "{} blocks allocated in {CALLS} calls",
        after.total_blocks - before.total_blocks
    );
}

/// The percentile is known after the warm-up, so every request arms a hedge timer.
fn svc_delay_known<P: Clone, C: Clone, K: Clone>(layer: &HedgeLayer<P, C, K>) -> bool {
    let probe = layer.layer(tower::service_fn(|x: u64| {
        std::future::ready(Ok::<_, BoxError>(x))
    }));
    probe.current_delay().is_some()
}

fn main() {
    // One profiler for the whole run: dhat counts only while its first profiler lives.
    let _profiler = dhat::Profiler::builder().testing().build();
    the_happy_path_allocates_nothing_per_call();
    println!("alloc: the_happy_path_allocates_nothing_per_call ... ok");
    a_request_that_is_not_hedged_allocates_nothing();
    println!("alloc: a_request_that_is_not_hedged_allocates_nothing ... ok");
}
