//! Shared outcome classification: "was this call a failure?"

/// What one call's result means to a resilience layer.
///
/// Retry retries `Failure`s, the circuit breaker counts them, degrade falls back on them and
/// the metrics label them. `Ignore` is for results that say nothing about the backend's
/// health (a client-side validation error, a cancelled call): the breaker does not count
/// them, retry does not retry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed in a way that reflects on the backend.
    Failure,
    /// The call's result is not evidence either way.
    Ignore,
}

impl Outcome {
    /// `true` for [`Outcome::Failure`].
    pub const fn is_failure(self) -> bool {
        matches!(self, Outcome::Failure)
    }

    /// `true` for [`Outcome::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, Outcome::Success)
    }
}

/// Turns a call's `&Result<Res, E>` into an [`Outcome`].
///
/// Implemented for every closure `Fn(&Result<Res, E>) -> Outcome`, so an HTTP user can count
/// a `503` response as a failure and a `400` as a success (the backend is healthy; the
/// request was wrong):
///
/// ```
/// use palisade_core::{Classify, Outcome};
///
/// let by_status = |res: &Result<u16, std::io::Error>| match res {
///     Ok(status) if *status >= 500 => Outcome::Failure,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// };
/// assert_eq!(by_status.classify(&Ok(503)), Outcome::Failure);
/// assert_eq!(by_status.classify(&Ok(400)), Outcome::Success);
/// ```
pub trait Classify<Res, E> {
    /// Classify one result.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;
}

impl<Res, E, F> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: every `Err` is a failure, every `Ok` a success.
///
/// ```
/// use palisade_core::{Classify, DefaultClassifier, Outcome};
///
/// assert_eq!(DefaultClassifier.classify(&Ok::<_, ()>(1)), Outcome::Success);
/// assert_eq!(DefaultClassifier.classify(&Err::<u8, _>(())), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl<Res, E> Classify<Res, E> for DefaultClassifier {
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}
