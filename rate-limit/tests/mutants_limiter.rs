//! The GCRA glue (`rate/limiter.rs`) pinned down where mutation testing found it loose:
//! the `retry_after` of a call whose max wait ends while it is still in line, the idle-key
//! sweep's timing (every 64th call, due exactly at the cleanup interval), draining a burst
//! above 2^31, batch costs on both limiters, and what `Debug` and the limiter trait report.
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do

use std::num::NonZeroU32;
use std::time::Duration;

use palisade_core::{BoxError, RateLimited};
use palisade_rate_limit::rate::Limiter;
use palisade_rate_limit::{Cost, RateLimitLayer, UnitCost};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt, service_fn};

const SEC: Duration = Duration::from_secs(1);

fn echo() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|req: u32| std::future::ready(Ok::<_, BoxError>(req)))
}

fn retry_after(err: &BoxError) -> Duration {
    err.downcast_ref::<RateLimited>()
        .expect("a RateLimited rejection")
        .retry_after()
}

fn cells(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// A call that cannot get its cells within its max wait, behind a call that holds the head
/// of the line, is refused at once and told when its turn would come (the head's cells,
/// then its own), not "now".
#[tokio::test(start_paused = true)]
async fn a_call_behind_the_head_of_the_line_is_told_when_its_turn_comes() {
    // 1 cell per second, burst 10, wait up to 6 s; a request costs its value in cells.
    let layer = RateLimitLayer::builder(10, 10 * SEC)
        .max_wait(6 * SEC)
        .build()
        .unwrap()
        .cost(|n: &u32| *n);
    let mut svc = layer.layer(echo());
    let t0 = Instant::now();
    // Take the whole burst.
    svc.ready().await.unwrap().call(10).await.unwrap();
    // Five cells conform at t0 + 5 s: this call takes the head of the line and waits there.
    let head = tokio::spawn(svc.ready().await.unwrap().call(5));
    tokio::task::yield_now().await;
    // Two more cells would conform at t0 + 7 s, past this call's max wait (t0 + 6 s).
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(Instant::now() - t0, Duration::ZERO, "refused at once");
    assert_eq!(
        retry_after(&err),
        7 * SEC,
        "its turn: the head's 5 cells, then its own 2"
    );
    assert_eq!(head.await.unwrap().unwrap(), 5);
    assert_eq!(Instant::now() - t0, 5 * SEC);
}

/// Draining a burst above 2^31 cells (no power of two above it fits a `u32`) takes them all.
#[tokio::test(start_paused = true)]
async fn drain_empties_a_burst_above_two_to_the_31() {
    let burst = 3_000_000_000;
    let layer = RateLimitLayer::builder(burst, 3 * SEC).build().unwrap();
    let limiter = layer.limiter();
    limiter.drain();
    let err = Limiter::<u32>::check(limiter, &(), cells(1)).unwrap_err();
    assert_eq!(err - Instant::now(), Duration::from_nanos(1));
}

/// A batch checks (and takes) all its cells on the direct and on the keyed limiter.
#[tokio::test(start_paused = true)]
async fn a_batch_takes_all_its_cells_on_both_limiters() {
    let direct = RateLimitLayer::builder(10, SEC).build().unwrap();
    let d = direct.limiter();
    assert_eq!(Limiter::<u32>::check(d, &(), cells(4)), Ok(()));
    assert_eq!(Limiter::<u32>::check(d, &(), cells(4)), Ok(()));
    // 2 cells left: 4 more conform 200 ms from now.
    let at = Limiter::<u32>::check(d, &(), cells(4)).unwrap_err();
    assert_eq!(at - Instant::now(), Duration::from_millis(200));
    assert_eq!(Limiter::<u32>::check(d, &(), cells(2)), Ok(()));
    let at = Limiter::<u32>::check(d, &(), cells(1)).unwrap_err();
    assert_eq!(at - Instant::now(), Duration::from_millis(100));

    let keyed = RateLimitLayer::builder(10, SEC)
        .build()
        .unwrap()
        .key_by(|r: &u32| *r);
    let k = keyed.limiter();
    assert_eq!(k.check(&1, cells(4)), Ok(()));
    assert_eq!(k.check(&1, cells(4)), Ok(()));
    let at = k.check(&1, cells(4)).unwrap_err();
    assert_eq!(at - Instant::now(), Duration::from_millis(200));
    assert_eq!(
        k.check(&2, cells(10)),
        Ok(()),
        "another key has its own cells"
    );
    let at = k.check(&2, cells(1)).unwrap_err();
    assert_eq!(at - Instant::now(), Duration::from_millis(100));
}

/// The keyed limiter looks at the clock on the 1st, 65th, 129th... call, and the sweep is due
/// exactly `cleanup_interval` after the limiter was made.
#[tokio::test(start_paused = true)]
async fn the_idle_key_sweep_runs_on_every_64th_call_once_due() {
    let layer = RateLimitLayer::builder(1, SEC)
        .cleanup_interval(10 * SEC)
        .build()
        .unwrap()
        .key_by(|r: &u32| *r);
    let k = layer.limiter();
    assert!(k.is_empty());
    assert_eq!(k.len(), 0);
    // Calls 1..=64: key 1 (call 1 looks at the clock: nothing due).
    for _ in 0..64 {
        let _ = k.check(&1, cells(1));
    }
    assert_eq!(k.len(), 1);
    assert!(!k.is_empty());
    // Key 1 refills in 1 s; at 5 s it is idle but the sweep is not due yet.
    advance(5 * SEC).await;
    // Call 65 looks at the clock: not due, key 1 stays.
    let _ = k.check(&2, cells(1));
    assert_eq!(k.len(), 2, "no sweep before the cleanup interval");
    // Calls 66..=128 do not look at the clock, even once the sweep is due.
    advance(5 * SEC).await;
    for _ in 0..63 {
        let _ = k.check(&3, cells(1));
    }
    assert_eq!(k.len(), 3, "the clock is looked at once per 64 calls");
    // Call 129, exactly at the cleanup interval: the sweep is due and runs before the
    // check; keys 1 and 2 are idle (key 3 is not: it was just used).
    let _ = k.check(&3, cells(1));
    assert_eq!(k.len(), 1);
    // The next sweep is due 10 s later: key 3 idles, but nothing sweeps it before then.
    advance(2 * SEC).await;
    for _ in 0..64 {
        let _ = k.check(&4, cells(1));
    }
    assert_eq!(k.len(), 2);
    // By hand, at any time.
    advance(2 * SEC).await;
    k.retain_recent();
    assert!(k.is_empty());
}

/// Only the direct limiter serves waiting calls through one FIFO line.
#[test]
fn only_the_direct_limiter_is_fifo() {
    let direct = RateLimitLayer::builder(1, SEC).build().unwrap();
    assert!(Limiter::<u32>::fifo(direct.limiter()));
    let keyed = RateLimitLayer::builder(1, SEC)
        .build()
        .unwrap()
        .key_by(|r: &u32| *r);
    assert!(!Limiter::<u32>::fifo(keyed.limiter()));
    assert_eq!(Limiter::<u32>::key(keyed.limiter(), &7), 7);
}

#[test]
fn costs() {
    assert_eq!(Cost::<u32>::cost(&UnitCost, &9), 1);
    let rows = |r: &u32| *r * 2;
    assert_eq!(Cost::<u32>::cost(&rows, &9), 18);
}

#[tokio::test(start_paused = true)]
async fn debug_shows_the_settings() {
    let layer = RateLimitLayer::builder(5, SEC)
        .name("search")
        .max_wait(SEC)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|req: u32| {
        std::future::ready(Ok::<_, BoxError>(req))
    }));
    let shown = format!("{svc:?}");
    for part in ["search", "max_wait: 1s", "burst: 5", "waiting: 0", "Direct"] {
        assert!(shown.contains(part), "{part} missing from {shown}");
    }
    let keyed = RateLimitLayer::builder(5, SEC)
        .build()
        .unwrap()
        .key_by(|r: &u32| *r);
    let _ = keyed.limiter().check(&1, cells(1));
    let _ = keyed.limiter().check(&2, cells(1));
    let shown = format!("{:?}", keyed.limiter());
    assert!(
        shown.contains("Keyed") && shown.contains("keys: 2"),
        "{shown}"
    );
}
