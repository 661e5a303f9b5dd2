//! Two threads calling one shared breaker or limiter at once (each thread its own clone of
//! the service, sharing the layer's state), against the same peers as the overhead bench, in
//! one run: the time per call on each thread while the other calls too.
//!
//! `cargo bench -p palisade-benches --bench contention`

#![allow(missing_docs)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use tokio::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use palisade::prelude::*;
use palisade::rate_limit::ConcurrencyLimitLayer;
use palisade_benches::harness::{backend, call_once};
use tower::Layer;

const THREADS: usize = 2;
const HUGE: u32 = 1_000_000_000;

/// Run `iters` calls of `call` on each of [`THREADS`] threads at once (each with its own
/// clone of `state`, a current-thread runtime entered); the slowest thread's time.
fn contended<T: Clone + Send>(
    iters: u64,
    state: &T,
    call: impl Fn(&mut T, u64) + Sync,
) -> Duration {
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let mut mine = state.clone();
                let (barrier, call) = (&barrier, &call);
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .expect("runtime");
                    let _guard = rt.enter();
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        call(&mut mine, i.wrapping_mul(THREADS as u64) + t as u64);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("contention (2 threads)");
    let second = Duration::from_secs(1);

    // ----- circuit breaker
    let breaker = CircuitBreakerLayer::builder()
        .name("bench")
        .build()
        .expect("config")
        .layer(backend());
    g.bench_function("breaker: palisade (count window)", |b| {
        b.iter_custom(|iters| {
            contended(iters, &breaker, |svc, x| {
                black_box(call_once(svc, x));
            })
        });
    });
    let failsafe_breaker = {
        use failsafe::{Config, backoff, failure_policy};
        let policy =
            failure_policy::consecutive_failures(5, backoff::constant(Duration::from_secs(30)));
        Config::new().failure_policy(policy).build()
    };
    g.bench_function("breaker: failsafe (consecutive)", |b| {
        use failsafe::CircuitBreaker;
        b.iter_custom(|iters| {
            contended(iters, &failsafe_breaker, |cb, x| {
                black_box(cb.call(|| Ok::<u64, ()>(x))).expect("closed");
            })
        });
    });
    g.bench_function("breaker: failsafe futures (consecutive)", |b| {
        use failsafe::futures::CircuitBreaker;
        use std::future::Future;
        b.iter_custom(|iters| {
            contended(iters, &failsafe_breaker, |cb, x| {
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                let fut = cb.call(std::future::ready(Ok::<u64, ()>(x)));
                match std::pin::pin!(fut).poll(&mut cx) {
                    std::task::Poll::Ready(r) => {
                        black_box(r).expect("closed");
                    }
                    std::task::Poll::Pending => panic!("ready at once"),
                }
            })
        });
    });

    // ----- concurrency limit
    let limit = ConcurrencyLimitLayer::builder(1024)
        .build()
        .expect("config")
        .layer(backend());
    g.bench_function("concurrency: palisade", |b| {
        b.iter_custom(|iters| {
            contended(iters, &limit, |svc, x| {
                black_box(call_once(svc, x));
            })
        });
    });
    let tower_limit = tower::limit::ConcurrencyLimitLayer::new(1024).layer(backend());
    g.bench_function("concurrency: tower ConcurrencyLimit", |b| {
        b.iter_custom(|iters| {
            contended(iters, &tower_limit, |svc, x| {
                black_box(call_once(svc, x));
            })
        });
    });

    // ----- rate limit
    let quota = Quota::per_second(NonZeroU32::new(HUGE).expect("non-zero"));
    let governor = Arc::new(RateLimiter::direct(quota));
    g.bench_function("rate, direct: governor check", |b| {
        b.iter_custom(|iters| {
            contended(iters, &governor, |l, _| {
                black_box(l.check()).expect("admitted");
            })
        });
    });
    let rate = RateLimitLayer::builder(HUGE, second)
        .build()
        .expect("config")
        .layer(backend());
    g.bench_function("rate, direct: palisade", |b| {
        b.iter_custom(|iters| {
            contended(iters, &rate, |svc, x| {
                black_box(call_once(svc, x));
            })
        });
    });
    let keyed_governor = Arc::new(RateLimiter::hashmap(quota));
    g.bench_function("rate, keyed 1000: governor check_key", |b| {
        b.iter_custom(|iters| {
            contended(iters, &keyed_governor, |l, x| {
                black_box(l.check_key(&(x % 1000))).expect("admitted");
            })
        });
    });
    let keyed = RateLimitLayer::builder(HUGE, second)
        .build()
        .expect("config")
        .key_by(|req: &u64| *req % 1000)
        .layer(backend());
    g.bench_function("rate, keyed 1000: palisade", |b| {
        b.iter_custom(|iters| {
            contended(iters, &keyed, |svc, x| {
                black_box(call_once(svc, x));
            })
        });
    });

    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
