//! Issue #20's headline: 20 concurrent callers against an upstream with a quota that
//! answers 429 + Retry-After over it. Alone, each caller obeys only its own Retry-After and
//! the upstream sees a multiple of its quota; with the hint shared (the throttle gate, and
//! the rate limit following the quota the upstream advertises) it sees its quota plus at
//! most one probe per hinted interval, and the goodput is the quota.

#![allow(clippy::unwrap_used)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade_core::throttle::{Quota, Throttle};
use palisade_core::{BoxError, RateLimited};
use palisade_rate_limit::{RateLimitLayer, ThrottleConfig, ThrottleLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// An upstream's "429 Too Many Requests" with `Retry-After`.
#[derive(Debug)]
struct TooManyRequests {
    retry_after: Duration,
}

impl fmt::Display for TooManyRequests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "429, retry after {:?}", self.retry_after)
    }
}

impl std::error::Error for TooManyRequests {}

/// A served call, with the quota left as the upstream advertises it
/// (`RateLimit-Remaining`, `RateLimit-Reset`).
#[derive(Debug, Clone, Copy)]
struct Served {
    remaining: u32,
    reset: Duration,
}

fn throttle_hint(res: &Result<Served, BoxError>) -> Option<Throttle> {
    let err = res.as_ref().err()?;
    err.downcast_ref::<TooManyRequests>()
        .map(|t| Throttle::For(t.retry_after))
}

fn quota_hint(res: &Result<Served, BoxError>) -> Option<Quota> {
    let s = res.as_ref().ok()?;
    Some(Quota::new(u64::from(s.remaining), s.reset))
}

/// An upstream with a quota of `quota` calls per fixed one-second window; calls over it get
/// a 429 with the time left in the window. Counts what it receives and serves during the
/// run.
#[derive(Clone)]
struct Upstream {
    origin: Instant,
    quota: u32,
    window: Arc<AtomicU32>,
    used: Arc<AtomicU32>,
    received: Arc<AtomicU32>,
    served: Arc<AtomicU32>,
}

impl Upstream {
    fn new(quota: u32) -> Self {
        Self {
            origin: Instant::now(),
            quota,
            window: Arc::new(AtomicU32::new(0)),
            used: Arc::new(AtomicU32::new(0)),
            received: Arc::new(AtomicU32::new(0)),
            served: Arc::new(AtomicU32::new(0)),
        }
    }

    fn answer(&self) -> Result<Served, BoxError> {
        let since = Instant::now() - self.origin;
        // Only the run's windows count (a caller waiting in line may call after it).
        let counted = since < RUN;
        if counted {
            self.received.fetch_add(1, Ordering::Relaxed);
        }
        let window = u32::try_from(since.as_secs()).unwrap();
        if self.window.swap(window, Ordering::Relaxed) != window {
            self.used.store(0, Ordering::Relaxed);
        }
        let reset = Duration::from_secs(u64::from(window) + 1) - since;
        let used = self.used.fetch_add(1, Ordering::Relaxed);
        if used < self.quota {
            if counted {
                self.served.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Served {
                remaining: self.quota - used - 1,
                reset,
            })
        } else {
            Err(Box::new(TooManyRequests { retry_after: reset }))
        }
    }

    fn service(
        &self,
    ) -> impl Service<u32, Response = Served, Error = BoxError, Future: Send> + Clone + Send + use<>
    {
        let up = self.clone();
        service_fn(move |_: u32| std::future::ready(up.answer()))
    }

    fn counts(&self) -> (u32, u32) {
        (
            self.received.load(Ordering::Relaxed),
            self.served.load(Ordering::Relaxed),
        )
    }
}

/// 20 callers, each sending as soon as its last answer came (plus a 10 ms round trip) and,
/// on a refusal, waiting exactly what it was told (the upstream's Retry-After or a local
/// `retry_after`), until `run` has passed.
async fn twenty_callers<S>(client: S, run: Duration)
where
    S: Service<u32, Response = Served, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let end = Instant::now() + run;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                if let Err(e) = client.clone().oneshot(0).await {
                    let wait = e
                        .downcast_ref::<TooManyRequests>()
                        .map(|t| t.retry_after)
                        .or_else(|| {
                            e.downcast_ref::<RateLimited>()
                                .map(RateLimited::retry_after)
                        })
                        .unwrap();
                    let until = (Instant::now() + wait).min(end);
                    tokio::time::sleep_until(until).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

const QUOTA: u32 = 5;
const SECS: u32 = 30;
const RUN: Duration = Duration::from_secs(SECS as u64);

#[tokio::test(start_paused = true)]
async fn the_upstream_sees_its_quota_and_the_goodput_is_the_quota() {
    // Alone: each caller obeys only its own Retry-After.
    let alone = Upstream::new(QUOTA);
    twenty_callers(alone.service(), RUN).await;
    let (alone_received, alone_served) = alone.counts();

    // Shared: the throttle gate closes for every caller on a 429, and the rate limit (10x
    // the upstream's quota, as configured by someone who does not know it; burst 1) follows
    // the quota the upstream advertises on every answer, waiting in line up to 2 s.
    let shared = Upstream::new(QUOTA);
    let limit = RateLimitLayer::builder(50, Duration::from_secs(1))
        .name("upstream")
        .burst(1)
        .max_wait(Duration::from_secs(2))
        .build()
        .unwrap();
    let handle = limit.handle();
    let gate = ThrottleLayer::new(ThrottleConfig::builder().name("gate").build().unwrap())
        .throttle_hint(throttle_hint);
    let client = ServiceBuilder::new()
        .layer(gate)
        .layer(limit.quota_hint(quota_hint))
        .service(shared.service());
    twenty_callers(client, RUN).await;
    let (received, served) = shared.counts();
    println!(
        "quota {QUOTA}/s for {SECS} s: alone {alone_received} received, {alone_served} served; \
         shared {received} received, {served} served; limiter now {:?}",
        handle.snapshot()
    );

    // Alone, every caller comes back at each window's start and again after each 429.
    assert!(
        alone_received >= 4 * QUOTA * SECS,
        "without a shared hint the upstream sees a multiple of its quota: {alone_received}"
    );
    // Shared: no more than the quota plus one probe per hinted interval (one per window).
    assert!(
        received <= (QUOTA + 1) * SECS,
        "with the hint shared the upstream sees its quota and one probe per interval: {received}"
    );
    // And the goodput is the quota: every window's quota is used.
    assert_eq!(served, QUOTA * SECS, "goodput is the quota");
}

#[tokio::test(start_paused = true)]
async fn following_the_quota_alone_sends_no_call_over_it_after_the_first_answer() {
    // The limit alone, following the advertised quota: the first answer sets the pace, and
    // from then on no call is refused by the upstream.
    let upstream = Upstream::new(QUOTA);
    let limit = RateLimitLayer::builder(50, Duration::from_secs(1))
        .burst(1)
        .max_wait(Duration::from_secs(2))
        .build()
        .unwrap();
    let client = limit.quota_hint(quota_hint).layer(upstream.service());
    twenty_callers(client, RUN).await;
    let (received, served) = upstream.counts();
    println!(
        "quota {QUOTA}/s for {SECS} s, limit following it: {received} received, {served} served"
    );
    assert_eq!(served, QUOTA * SECS, "goodput is the quota");
    assert!(
        received - served <= 1,
        "{received} received, {served} served"
    );
}
