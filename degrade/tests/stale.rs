//! StaleCacheLayer against the public API, on paused time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, Name, RateLimited, RejectionKind};
use palisade_degrade::{
    DegradeEvent, Degraded, Marked, StaleCacheLayer, StaleConfig, Switch, Trigger,
};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

type Res = Marked<String>;

/// A backend answering `"<key>@<version>"`, failing while `down` is set.
#[derive(Clone)]
struct Backend {
    down: Arc<AtomicBool>,
    version: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Backend {
    fn new() -> Self {
        Self {
            down: Arc::new(AtomicBool::new(false)),
            version: Arc::new(AtomicUsize::new(1)),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn service(&self) -> impl Service<u32, Response = Res, Error = BoxError> + Clone {
        let this = self.clone();
        service_fn(move |key: u32| {
            this.calls.fetch_add(1, Ordering::Relaxed);
            let down = this.down.load(Ordering::Relaxed);
            let version = this.version.load(Ordering::Relaxed);
            async move {
                if down {
                    Err::<Res, BoxError>("backend down".into())
                } else {
                    Ok(Marked::new(format!("{key}@{version}")))
                }
            }
        })
    }
}

fn config(max_staleness: Duration) -> StaleConfig {
    StaleConfig::builder()
        .name("cache")
        .max_staleness(max_staleness)
        .build()
        .expect("test setup")
}

async fn get<S: Service<u32, Response = Res, Error = BoxError>>(
    svc: &mut S,
    key: u32,
) -> Result<Res, BoxError> {
    svc.ready().await?.call(key).await
}

#[tokio::test(start_paused = true)]
async fn serves_stale_only_within_max_staleness_and_live_answers_refresh() {
    let backend = Backend::new();
    let layer = StaleCacheLayer::new(config(Duration::from_secs(60)), |k: &u32| *k);
    let mut svc = layer.layer(backend.service());

    assert!(get(&mut svc, 1).await.unwrap().is_live());
    backend.down.store(true, Ordering::Relaxed);
    advance(Duration::from_secs(40)).await;
    let stale = get(&mut svc, 1).await.unwrap();
    assert_eq!(*stale, "1@1");
    let mark = stale.degraded().unwrap();
    assert_eq!(
        (mark.is_stale(), mark.age(), mark.trigger()),
        (true, Some(Duration::from_secs(40)), Trigger::Failure)
    );
    assert!(get(&mut svc, 2).await.is_err(), "no entry for another key");

    // A live answer refreshes the entry: its age starts over.
    backend.down.store(false, Ordering::Relaxed);
    backend.version.store(2, Ordering::Relaxed);
    assert_eq!(*get(&mut svc, 1).await.unwrap(), "1@2");
    backend.down.store(true, Ordering::Relaxed);
    advance(Duration::from_secs(60)).await;
    let stale = get(&mut svc, 1).await.unwrap();
    assert_eq!(
        (stale.get_ref().as_str(), stale.degraded().unwrap().age()),
        ("1@2", Some(Duration::from_secs(60)))
    );

    // One tick past max staleness: the failure passes through.
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        get(&mut svc, 1).await.unwrap_err().to_string(),
        "backend down"
    );
}

#[tokio::test(start_paused = true)]
async fn memory_is_bounded_by_capacity_evicting_the_least_recently_stored() {
    let backend = Backend::new();
    let config = StaleConfig::builder().capacity(2).build().unwrap();
    let layer = StaleCacheLayer::new(config, |k: &u32| *k);
    let mut svc = layer.layer(backend.service());
    for key in [1, 2, 1, 3] {
        get(&mut svc, key).await.unwrap();
        assert!(layer.len() <= 2);
    }
    backend.down.store(true, Ordering::Relaxed);
    assert!(get(&mut svc, 1).await.unwrap().is_degraded());
    assert!(get(&mut svc, 3).await.unwrap().is_degraded());
    assert!(
        get(&mut svc, 2).await.is_err(),
        "2 was stored least recently and evicted"
    );
    assert!(layer.remove(&1));
    assert!(get(&mut svc, 1).await.is_err());
    layer.clear();
    assert!(layer.is_empty());
}

#[tokio::test(start_paused = true)]
async fn only_good_live_answers_are_remembered() {
    // An inner layer's degraded answer must not become "the last good response".
    let inner = service_fn(|key: u32| async move {
        let mark = Degraded::fallback(Name::new("inner"), Trigger::Failure);
        Ok::<_, BoxError>(Marked::with_mark(format!("{key}"), mark))
    });
    let layer = StaleCacheLayer::new(config(Duration::from_secs(60)), |k: &u32| *k);
    let mut svc = layer.layer(inner);
    get(&mut svc, 1).await.unwrap();
    assert!(layer.is_empty());
}

#[tokio::test(start_paused = true)]
async fn rejections_trigger_by_kind() {
    let limited = Arc::new(AtomicBool::new(false));
    let l = Arc::clone(&limited);
    let inner = service_fn(move |key: u32| {
        let limited = l.load(Ordering::Relaxed);
        async move {
            if limited {
                Err::<Res, BoxError>(
                    RateLimited::new(Name::new("api"), Duration::from_secs(1)).into(),
                )
            } else {
                Ok(Marked::new(key.to_string()))
            }
        }
    });
    let config = StaleConfig::builder()
        .on_rejection(RejectionKind::RateLimited, false)
        .build()
        .unwrap();
    let layer = StaleCacheLayer::new(config, |k: &u32| *k);
    let mut svc = layer.clone().layer(inner.clone());
    get(&mut svc, 1).await.unwrap();
    limited.store(true, Ordering::Relaxed);
    assert!(get(&mut svc, 1).await.unwrap_err().is::<RateLimited>());

    let layer = StaleCacheLayer::new(StaleConfig::default(), |k: &u32| *k);
    let mut svc = layer.layer(inner);
    limited.store(false, Ordering::Relaxed);
    get(&mut svc, 1).await.unwrap();
    limited.store(true, Ordering::Relaxed);
    let stale = get(&mut svc, 1).await.unwrap();
    assert_eq!(
        stale.degraded().unwrap().trigger(),
        Trigger::Rejected(RejectionKind::RateLimited)
    );
}

#[tokio::test(start_paused = true)]
async fn the_switch_serves_from_the_cache_and_falls_through_for_unknown_keys() {
    let backend = Backend::new();
    let switch = Switch::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = Arc::clone(&events);
    let config = StaleConfig::builder()
        .switch(switch.clone())
        .on_event(move |ev| e.lock().unwrap().push(ev.clone()))
        .build()
        .unwrap();
    let mut svc = StaleCacheLayer::new(config, |k: &u32| *k).layer(backend.service());
    get(&mut svc, 1).await.unwrap();
    switch.degrade();
    advance(Duration::from_secs(5)).await;
    let cached = get(&mut svc, 1).await.unwrap();
    assert!(cached.degraded().unwrap().is_manual());
    assert_eq!(
        backend.calls.load(Ordering::Relaxed),
        1,
        "answered without the backend"
    );
    assert!(
        get(&mut svc, 2).await.unwrap().is_live(),
        "no entry: the live path answers"
    );
    assert_eq!(backend.calls.load(Ordering::Relaxed), 2);
    let events = events.lock().unwrap();
    assert!(events.contains(&DegradeEvent::StaleServed {
        age: Duration::from_secs(5),
        trigger: Trigger::Manual
    }));
    assert!(events.contains(&DegradeEvent::StaleMissed {
        trigger: Trigger::Manual
    }));
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once_per_key_in_the_background() {
    let calls = Arc::new(AtomicUsize::new(0));
    let version = Arc::new(AtomicUsize::new(1));
    let down = Arc::new(AtomicBool::new(false));
    let (c, v, d) = (Arc::clone(&calls), Arc::clone(&version), Arc::clone(&down));
    // A slow backend: 1 s per answer.
    let backend = service_fn(move |key: u32| {
        c.fetch_add(1, Ordering::Relaxed);
        let (version, down) = (v.load(Ordering::Relaxed), d.load(Ordering::Relaxed));
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if down {
                Err::<Res, BoxError>("down".into())
            } else {
                Ok(Marked::new(format!("{key}@{version}")))
            }
        }
    });
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = Arc::clone(&events);
    let config = StaleConfig::builder()
        .on_event(move |ev| e.lock().unwrap().push(ev.clone()))
        .build()
        .unwrap();
    let layer = StaleCacheLayer::new(config, |k: &u32| *k).stale_while_revalidate();
    let mut svc = layer.layer(backend);

    // No entry yet: the live path answers (after 1 s).
    let first = get(&mut svc, 1).await.unwrap();
    assert!(first.is_live());
    assert_eq!(calls.load(Ordering::Relaxed), 1);

    // An entry: answered at once, marked, while one background call refreshes it.
    version.store(2, Ordering::Relaxed);
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        let answer = get(&mut svc, 1).await.unwrap();
        assert_eq!(*answer, "1@1");
        assert_eq!(answer.degraded().unwrap().trigger(), Trigger::Revalidate);
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "stale answers do not wait"
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        2,
        "one refresh per key at a time"
    );

    // Just past the refresh's 1 s (the same instant would race the background task).
    tokio::time::sleep(Duration::from_millis(1001)).await;
    let answer = get(&mut svc, 1).await.unwrap();
    assert_eq!(*answer, "1@2", "the background call refreshed the entry");
    assert!(
        events
            .lock()
            .unwrap()
            .contains(&DegradeEvent::Revalidated { refreshed: true })
    );

    // A failing refresh keeps the old entry.
    down.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1001)).await;
    assert_eq!(*get(&mut svc, 1).await.unwrap(), "1@2");
    tokio::time::sleep(Duration::from_millis(1001)).await;
    assert!(
        events
            .lock()
            .unwrap()
            .contains(&DegradeEvent::Revalidated { refreshed: false })
    );
    assert_eq!(*get(&mut svc, 1).await.unwrap(), "1@2");
}
