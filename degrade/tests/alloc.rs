//! The live, healthy path allocates nothing per call through Fallback and Shed.
//!
//! Runs without libtest's harness (`harness = false`): the harness's main thread
//! allocates while it waits for a test, and dhat counts every thread.
#![allow(clippy::print_stdout, clippy::unwrap_used)] // no harness: the test reports itself, and unwraps like a test

use std::future::{Ready, ready};

use futures_util::FutureExt;
use palisade_core::{BoxError, Priority};
use palisade_degrade::fallback::Value;
use palisade_degrade::{FallbackConfig, FallbackLayer, Marked, ShedConfig, ShedLayer};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn the_live_path_allocates_nothing_per_call() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let backend =
        service_fn(|n: u64| -> Ready<Result<Marked<u64>, BoxError>> { ready(Ok(Marked::new(n))) });
    let mut svc = ServiceBuilder::new()
        .layer(FallbackLayer::new(
            FallbackConfig::default(),
            Value::new(Marked::new(0)),
        ))
        .layer(
            ShedLayer::new(ShedConfig::builder().max_in_flight(100).build().unwrap())
                .prioritize(|_: &u64| Priority::Default),
        )
        .service(backend);

    let mut call = |n: u64| {
        let svc = svc.ready().now_or_never().unwrap().unwrap();
        svc.call(n).now_or_never().unwrap().unwrap()
    };
    for n in 0..10 {
        assert!(call(n).is_live());
    }
    let before = dhat::HeapStats::get();
    for n in 0..1000 {
        assert!(call(n).is_live());
    }
    let after = dhat::HeapStats::get();
    dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);
}

fn main() {
    the_live_path_allocates_nothing_per_call();
    println!("alloc: the_live_path_allocates_nothing_per_call ... ok");
}
