//! The stale cache layer.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use palisade_core::RejectionAware;
use tower_layer::Layer;

use super::service::Core;
use super::{OnFailure, Shared, StaleCache, StaleConfig, WhileRevalidating};
use crate::{DegradeEvent, Switch};

/// Remembers the last good answer per key and serves it, marked stale, when the live call
/// fails; see the [module docs](super).
///
/// All clones (and all services it builds) share one cache, so put the layer around one
/// logical backend.
pub struct StaleCacheLayer<KF, K, V, C = RejectionAware, M = OnFailure> {
    shared: Arc<Core<KF, K, V>>,
    classifier: C,
    _mode: PhantomData<fn() -> M>,
}

impl<KF, K: Hash + Eq + Clone, V> StaleCacheLayer<KF, K, V> {
    /// A cache keyed by `key(&request)`; rejections trigger by kind, as `config`'s triggers
    /// say; other errors are failures, as [`RejectionAware`] judges (change that with
    /// [`classifier`](Self::classifier)).
    pub fn new(config: StaleConfig, key: KF) -> Self {
        Self {
            shared: Arc::new(Core::new(config, key)),
            classifier: RejectionAware,
            _mode: PhantomData,
        }
    }
}

impl<KF, K: Hash + Eq + Clone, V, C, M> StaleCacheLayer<KF, K, V, C, M> {
    /// Decide which answers are good (only successes are remembered) and which are
    /// failures with `classifier` (a `palisade_core::Classify`).
    pub fn classifier<C2>(self, classifier: C2) -> StaleCacheLayer<KF, K, V, C2, M> {
        StaleCacheLayer {
            shared: self.shared,
            classifier,
            _mode: PhantomData,
        }
    }

    /// Call `listener` with every event of this layer (services made before this call see
    /// the listener too).
    #[must_use]
    pub fn on_event(self, listener: impl Fn(&DegradeEvent) + Send + Sync + 'static) -> Self {
        self.shared.emitter.add_listener(listener);
        self
    }
}

impl<KF, K: Hash + Eq + Clone, V, C> StaleCacheLayer<KF, K, V, C> {
    /// Stale-while-revalidate: answer keys with a fresh-enough entry from the cache at
    /// once, refreshing each in the background (one call per key at a time); see
    /// [`WhileRevalidating`]. The answers are marked stale with
    /// [`Trigger::Revalidate`](crate::Trigger::Revalidate).
    pub fn stale_while_revalidate(self) -> StaleCacheLayer<KF, K, V, C, WhileRevalidating> {
        StaleCacheLayer {
            shared: self.shared,
            classifier: self.classifier,
            _mode: PhantomData,
        }
    }
}

impl<KF, K: Hash + Eq + Clone, V, C, M> StaleCacheLayer<KF, K, V, C, M> {
    /// The degrade switch: in degraded mode answers come from the cache when it has a
    /// fresh-enough entry.
    pub fn switch(&self) -> &Switch {
        &self.shared.switch
    }

    /// How many answers are remembered.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// `true` when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget every answer.
    pub fn clear(&self) {
        self.shared.clear();
    }

    /// Forget the answer for `key`; `true` if there was one.
    pub fn remove(&self, key: &K) -> bool {
        self.shared.remove(key)
    }

    /// A handle on this layer (and every service it built): its name, its config, its
    /// triggers and staleness bound changed at run time, its switch, its size.
    pub fn handle(&self) -> super::StaleHandle
    where
        KF: Send + Sync + 'static,
        K: Send + 'static,
        V: Send + Sync + 'static,
    {
        super::StaleHandle::new(Arc::clone(&self.shared) as Arc<dyn super::handle::View>)
    }
}

impl<S, KF, K, V, C: Clone, M> Layer<S> for StaleCacheLayer<KF, K, V, C, M> {
    type Service = StaleCache<S, KF, K, V, C, M>;

    fn layer(&self, inner: S) -> Self::Service {
        StaleCache::from_shared(
            inner,
            Arc::new(Shared::new(
                Arc::clone(&self.shared),
                self.classifier.clone(),
            )),
        )
    }
}

impl<KF, K, V, C: Clone, M> Clone for StaleCacheLayer<KF, K, V, C, M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            _mode: PhantomData,
        }
    }
}

impl<KF, K, V, C, M> fmt::Debug for StaleCacheLayer<KF, K, V, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleCacheLayer")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}
