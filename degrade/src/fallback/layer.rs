//! The fallback layer.

use std::fmt;
use std::sync::Arc;

use palisade_core::RejectionAware;
use tower_layer::Layer;

use super::{Fallback, FallbackConfig, FallbackHandle, Shared};
use crate::{ByMark, DegradeEvent, NoMark, Switch};

/// Answers from a fallback when the live call fails or is rejected; see the
/// [module docs](super).
///
/// All clones (and all services it builds) share one name, listeners, metrics and switch.
///
/// The fallback's answers are marked [`Degraded`](crate::Degraded) through the response's
/// [`Mark`](crate::Mark) impl ([`Marked<T>`](crate::Marked), `http::Response`); for a
/// response type that cannot carry a mark, [`unmarked`](Self::unmarked) falls back without
/// marking:
///
/// ```
/// use palisade_degrade::fallback::Value;
/// use palisade_degrade::{FallbackConfig, FallbackLayer};
/// use palisade_core::BoxError;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let layer = FallbackLayer::new(FallbackConfig::default(), Value::new("default".to_string()))
///     .unmarked();
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|_: ()| async { Err::<String, BoxError>("down".into()) }));
/// assert_eq!(svc.oneshot(()).await?, "default");
/// # Ok(())
/// # }
/// ```
pub struct FallbackLayer<F, C = RejectionAware, M = ByMark> {
    shared: Arc<Shared<F>>,
    classifier: C,
    marker: M,
}

impl<F> FallbackLayer<F> {
    /// Fall back to `source` on what `config` triggers on. Rejections trigger by kind, as
    /// `config`'s triggers say; other errors are failures, as [`RejectionAware`] judges
    /// (change that with [`classifier`](Self::classifier)).
    pub fn new(config: FallbackConfig, source: F) -> Self {
        Self {
            shared: Arc::new(Shared::new(config, source)),
            classifier: RejectionAware,
            marker: ByMark,
        }
    }
}

impl<F, C, M> FallbackLayer<F, C, M> {
    /// Decide which answers are failures with `classifier` (e.g. a `503` response): a
    /// `palisade_core::Classify`, cloned per call (keep it cheap).
    pub fn classifier<C2>(self, classifier: C2) -> FallbackLayer<F, C2, M> {
        FallbackLayer {
            shared: self.shared,
            classifier,
            marker: self.marker,
        }
    }

    /// Call `listener` with every event of this layer (services made before this call see
    /// the listener too).
    #[must_use]
    pub fn on_event(self, listener: impl Fn(&DegradeEvent) + Send + Sync + 'static) -> Self {
        self.shared.emitter.add_listener(listener);
        self
    }

    /// Answer without marking: for any response type, including ones that cannot carry a
    /// [`Degraded`](crate::Degraded) mark (a `String`, your own struct). Degraded answers
    /// are still counted, reported as events and in metrics; the caller cannot tell them
    /// from live ones.
    pub fn unmarked(self) -> FallbackLayer<F, C, NoMark> {
        FallbackLayer {
            shared: self.shared,
            classifier: self.classifier,
            marker: NoMark,
        }
    }

    /// The degrade switch: put the layer into degraded mode (always fall back) and back.
    pub fn switch(&self) -> &Switch {
        &self.shared.switch
    }

    /// A handle on this layer (and every service it built): its name, its config, its
    /// triggers changed at run time, its switch.
    pub fn handle(&self) -> FallbackHandle {
        FallbackHandle::new(Arc::clone(&self.shared.state))
    }
}

impl<S, F, C: Clone, M: Clone> Layer<S> for FallbackLayer<F, C, M> {
    type Service = Fallback<S, F, C, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::from_shared(
            inner,
            Arc::clone(&self.shared),
            self.classifier.clone(),
            self.marker.clone(),
        )
    }
}

impl<F, C: Clone, M: Clone> Clone for FallbackLayer<F, C, M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            marker: self.marker.clone(),
        }
    }
}

impl<F, C, M> fmt::Debug for FallbackLayer<F, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("name", &self.shared.name)
            .field("triggers", &self.shared.triggers.load())
            .finish_non_exhaustive()
    }
}
