//! ShedLayer against the public API, on paused time.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, Error, Overloaded, Priority};
use palisade_degrade::fallback::Value;
use palisade_degrade::shed::Thresholds;
use palisade_degrade::{
    DegradeEvent, FallbackConfig, FallbackLayer, Marked, ShedConfig, ShedLayer, Trigger,
};
use tokio::time::sleep;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

fn priority_of(i: &u64) -> Priority {
    match i % 5 {
        0 => Priority::Critical,
        1 | 2 => Priority::Default,
        _ => Priority::Sheddable,
    }
}

#[derive(Default)]
struct Counts {
    offered: [AtomicUsize; 3],
    served: [AtomicUsize; 3],
}

fn idx(p: Priority) -> usize {
    match p {
        Priority::Sheddable => 0,
        Priority::Default => 1,
        Priority::Critical => 2,
    }
}

/// 2x overload: a backend that can take 10 requests at once (100 ms each) is offered 20
/// (one every 5 ms) for 10 simulated seconds; 20% critical, 40% default, 40% sheddable.
#[tokio::test(start_paused = true)]
async fn critical_traffic_survives_twice_the_capacity() {
    const CAPACITY: usize = 10;
    let busy = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (b, pk) = (Arc::clone(&busy), Arc::clone(&peak));
    let backend = service_fn(move |_: u64| {
        let (b, pk) = (Arc::clone(&b), Arc::clone(&pk));
        async move {
            let now = b.fetch_add(1, Ordering::SeqCst) + 1;
            pk.fetch_max(now, Ordering::SeqCst);
            sleep(Duration::from_millis(100)).await;
            b.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, BoxError>(())
        }
    });
    let config = ShedConfig::builder()
        .max_in_flight(CAPACITY)
        .build()
        .unwrap();
    let shed = ShedLayer::new(config).prioritize(priority_of);
    let svc = shed.layer(backend);

    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for i in 0..2000u64 {
        let p = priority_of(&i);
        counts.offered[idx(p)].fetch_add(1, Ordering::Relaxed);
        let (svc, counts) = (svc.clone(), Arc::clone(&counts));
        tasks.push(tokio::spawn(async move {
            match svc.oneshot(i).await {
                Ok(()) => {
                    counts.served[idx(p)].fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => assert_eq!(
                    e.downcast_ref::<Overloaded>()
                        .and_then(Overloaded::priority),
                    Some(p)
                ),
            }
        }));
        sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let served = |p: Priority| counts.served[idx(p)].load(Ordering::Relaxed);
    let offered = |p: Priority| counts.offered[idx(p)].load(Ordering::Relaxed);
    assert!(
        peak.load(Ordering::SeqCst) <= CAPACITY,
        "the backend never exceeds its capacity"
    );
    assert_eq!(
        served(Priority::Critical),
        offered(Priority::Critical),
        "every critical request is served"
    );
    assert!(
        served(Priority::Sheddable) * 4 < offered(Priority::Sheddable),
        "sheddable traffic is shed most"
    );
    assert!(served(Priority::Sheddable) < served(Priority::Default));
    let total: usize = [Priority::Sheddable, Priority::Default, Priority::Critical]
        .map(served)
        .iter()
        .sum();
    // The backend stays busy: at 2x load it serves most of its capacity (10 per 100 ms);
    // the 20% headroom kept for critical traffic (default threshold 0.8) is the price.
    assert!(total >= 780, "served {total} of a possible 1000");
    assert_eq!(shed.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn queueing_delay_sheds_by_priority() {
    let (mock, mut handle) = tower_test::mock::pair::<Priority, ()>();
    let config = ShedConfig::builder()
        .target_delay(Duration::from_millis(100))
        .thresholds(Thresholds {
            sheddable: 0.5,
            default: 0.8,
            critical: 1.0,
        })
        .build()
        .unwrap();
    let shed = ShedLayer::new(config).prioritize(|p: &Priority| *p);
    let mut svc = shed.layer(mock);

    // The backend makes us wait 90 ms for readiness: above the default threshold (80 ms).
    handle.allow(0);
    let mut ready = ready_future(&mut svc);
    let waited = tokio::time::timeout(Duration::from_millis(90), ready.as_mut()).await;
    assert!(waited.is_err(), "not ready while the backend makes us wait");
    handle.allow(10);
    ready.as_mut().await;
    drop(ready);
    assert_eq!(shed.queue_delay(), Duration::from_millis(90));
    let err = svc.call(Priority::Default).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Overloaded>().map(Overloaded::limit),
        Some("queueing delay")
    );
    svc.ready().await.unwrap();
    let call = svc.call(Priority::Critical);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, Priority::Critical);
    send.send_response(());
    call.await.unwrap();
}

// Poll readiness in a pinned future so the test can advance time while it waits.
fn ready_future<S: Service<Priority>>(svc: &mut S) -> Pin<Box<impl Future<Output = ()> + '_>>
where
    S::Error: std::fmt::Debug,
{
    Box::pin(async move {
        std::future::poll_fn(|cx| svc.poll_ready(cx))
            .await
            .expect("ready");
    })
}

#[tokio::test(start_paused = true)]
async fn an_external_signal_and_the_switch_spare_only_critical() {
    let overloaded = Arc::new(AtomicBool::new(false));
    let o = Arc::clone(&overloaded);
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = Arc::clone(&events);
    let config = ShedConfig::builder()
        .overloaded_when(move || o.load(Ordering::Relaxed))
        .on_event(move |ev| e.lock().unwrap().push(ev.clone()))
        .build()
        .unwrap();
    let shed = ShedLayer::new(config).prioritize(|p: &Priority| *p);
    let mut svc = shed.layer(service_fn(|_: Priority| async { Ok::<_, BoxError>(()) }));

    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(Priority::Sheddable)
            .await
            .is_ok()
    );
    overloaded.store(true, Ordering::Relaxed);
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(Priority::Default)
            .await
            .is_err()
    );
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(Priority::Critical)
            .await
            .is_ok()
    );
    overloaded.store(false, Ordering::Relaxed);
    shed.switch().degrade();
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(Priority::Sheddable)
            .await
            .is_err()
    );
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(Priority::Critical)
            .await
            .is_ok()
    );
    shed.switch().restore();
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(Priority::Sheddable)
            .await
            .is_ok()
    );
    assert_eq!(
        *events.lock().unwrap(),
        [
            DegradeEvent::Shed {
                priority: Priority::Default,
                limit: "overload signal"
            },
            DegradeEvent::ModeSwitched { degraded: true },
            DegradeEvent::Shed {
                priority: Priority::Sheddable,
                limit: "degraded mode"
            },
            DegradeEvent::ModeSwitched { degraded: false },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn sheds_into_the_typed_error_and_a_fallback_marks_them_shed() {
    let inner =
        service_fn(|_: Priority| async { Ok::<_, Error<std::io::Error>>(Marked::new("live")) });
    let shed = ShedLayer::new(ShedConfig::default()).prioritize(|p: &Priority| *p);
    shed.switch().degrade();
    let mut svc = shed.clone().layer(inner);
    match svc
        .ready()
        .await
        .unwrap()
        .call(Priority::Default)
        .await
        .unwrap_err()
    {
        Error::Overloaded(o) => assert_eq!(o.priority(), Some(Priority::Default)),
        other => panic!("expected Overloaded, got {other:?}"),
    }

    let mut svc = ServiceBuilder::new()
        .layer(FallbackLayer::new(
            FallbackConfig::default(),
            Value::new(Marked::new("cheap")),
        ))
        .layer(shed)
        .service(inner);
    let answer = svc
        .ready()
        .await
        .unwrap()
        .call(Priority::Sheddable)
        .await
        .unwrap();
    assert_eq!(
        answer.degraded().unwrap().trigger(),
        Trigger::Shed(Priority::Sheddable)
    );
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(Priority::Critical)
            .await
            .unwrap()
            .is_live()
    );
}
