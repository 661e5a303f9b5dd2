//! An upstream's throttle hint opens the breaker for the hinted time.

use std::fmt;
use std::sync::Arc;

use palisade_core::throttle::ThrottleHint;
use palisade_core::{Classify, Outcome};
use tokio::time::Instant;

use crate::TransitionReason;
use crate::state::Breaker;

/// The classifier of a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) with a
/// [`throttle_hint`](crate::CircuitBreakerLayer::throttle_hint): a result that carries an
/// upstream's throttle hint opens the breaker until the hinted instant and is recorded as
/// [`Outcome::Ignore`] (not a failure of the window); any other result goes to the inner
/// classifier `C`.
#[derive(Clone)]
pub struct HintedClassifier<C, H> {
    classifier: C,
    hint: H,
    breaker: Arc<Breaker>,
}

impl<C, H> HintedClassifier<C, H> {
    pub(crate) fn new(classifier: C, hint: H, breaker: Arc<Breaker>) -> Self {
        Self {
            classifier,
            hint,
            breaker,
        }
    }

    /// The classifier that judges results without a hint.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }
}

impl<Res, E, C, H> Classify<Res, E> for HintedClassifier<C, H>
where
    C: Classify<Res, E>,
    H: ThrottleHint<Res, E>,
{
    fn never_sent(&self, result: &Result<Res, E>) -> bool {
        self.classifier.never_sent(result)
    }

    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match self.hint.throttle(result) {
            Some(throttle) => {
                let now = Instant::now();
                let hinted = throttle.remaining(now);
                self.breaker.open_until_for(
                    throttle.until(now),
                    now,
                    TransitionReason::UpstreamThrottle { hinted },
                );
                Outcome::Ignore
            }
            None => self.classifier.classify(result),
        }
    }
}

impl<C: fmt::Debug, H> fmt::Debug for HintedClassifier<C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HintedClassifier")
            .field("classifier", &self.classifier)
            .field("breaker", &self.breaker.emitter().name())
            .finish_non_exhaustive()
    }
}
