//! The happy path allocates nothing: injection off, and injection on with no fault drawn.
//!
//! Runs without libtest's harness (`harness = false`): the harness's main thread
//! allocates while it waits for a test, and dhat counts every thread.
#![allow(clippy::print_stdout)] // no harness: the test reports itself

use futures_util::FutureExt;
use palisade_chaos::{ChaosConfig, ChaosLayer};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

type Err = std::io::Error;

fn call<S: Service<u64, Response = u64, Error = Err>>(svc: &mut S, n: u64) -> u64 {
    let ready = std::future::poll_fn(|cx| svc.poll_ready(cx)).now_or_never();
    ready.expect("ready at once").expect("no readiness fault");
    let answer = svc.call(n).now_or_never().expect("answers at once");
    answer.expect("no error")
}

fn no_allocation_per_call_on_the_happy_path() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let inner = service_fn(|n: u64| std::future::ready(Ok::<_, Err>(n + 1)));

    let off = ChaosConfig::builder()
        .error(1.0, |_: &u64| Err::other("injected"))
        .enabled(false)
        .build()
        .expect("valid");
    let on_no_fault = ChaosConfig::builder()
        .error_fn(|_: &u64| Err::other("injected"))
        .build()
        .expect("valid");
    let mut services = [
        ChaosLayer::new(off).layer(inner),
        ChaosLayer::new(on_no_fault).layer(inner),
    ];

    for svc in &mut services {
        // Warm up, then count.
        call(svc, 0);
        let before = dhat::HeapStats::get();
        for n in 0..1000 {
            assert_eq!(call(svc, n), n + 1);
        }
        let after = dhat::HeapStats::get();
        dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);
    }
}

fn main() {
    // One profiler for the whole run: dhat counts only while its first profiler lives.
    let _profiler = dhat::Profiler::builder().testing().build();
    no_allocation_per_call_on_the_happy_path();
    println!("alloc: no_allocation_per_call_on_the_happy_path ... ok");
}
