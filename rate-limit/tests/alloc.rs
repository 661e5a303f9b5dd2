//! The happy paths allocate nothing per call: the direct and the keyed rate limit, the
//! concurrency limit and the adaptive limit (its completion feeding the algorithm).
//!
//! Run without libtest's harness (`harness = false`): the harness's main thread allocates
//! while it waits for a test to finish, and dhat counts every thread.
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do
#![allow(clippy::print_stdout)] // without a harness, the test reports its own result

use std::time::Duration;

use futures_util::FutureExt;
use palisade_core::BoxError;
use palisade_rate_limit::{AdaptiveLimitLayer, ConcurrencyLimitLayer, RateLimitLayer};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let _profiler = dhat::Profiler::builder().testing().build();

    let backend = || service_fn(|req: u64| std::future::ready(Ok::<_, BoxError>(req)));

    let direct = RateLimitLayer::builder(1_000_000_000, Duration::from_secs(1))
        .name("alloc")
        .build()
        .unwrap();
    check("direct rate limit", &mut direct.layer(backend()));

    // 1000 keys, all seen during warm-up: the happy path is a lookup, no insert.
    let keyed = RateLimitLayer::builder(1_000_000_000, Duration::from_secs(1))
        .name("alloc-keyed")
        .build()
        .unwrap()
        .key_by(|req: &u64| *req % 1000);
    check("keyed rate limit", &mut keyed.layer(backend()));

    let concurrency = ConcurrencyLimitLayer::builder(64)
        .name("alloc-concurrency")
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    check("concurrency limit", &mut concurrency.layer(backend()));

    let adaptive = AdaptiveLimitLayer::builder()
        .name("alloc-adaptive")
        .build()
        .unwrap();
    check("adaptive limit", &mut adaptive.layer(backend()));
}

fn check<S>(what: &str, svc: &mut S)
where
    S: Service<u64, Response = u64, Error = BoxError>,
{
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut call = |i: u64| {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let out = svc.call(i).now_or_never().expect("ready at once");
        assert_eq!(out.unwrap(), i);
    };
    for i in 0..2_000 {
        call(i);
    }
    let before = dhat::HeapStats::get();
    const CALLS: u64 = 10_000;
    for i in 0..CALLS {
        call(i);
    }
    let after = dhat::HeapStats::get();
    assert_eq!(
        after.total_blocks - before.total_blocks,
        0,
        "{what}: allocations in {CALLS} calls"
    );
    println!("alloc: {what} allocates nothing per call ... ok");
}
