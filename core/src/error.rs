//! One flat error type for a whole stack: the service's own error or one rejection.

use std::error::Error as StdError;
use std::fmt;

use crate::rejection::{
    AsRejection, CircuitOpen, Elapsed, Overloaded, RateLimited, Rejection, RetriesExhausted,
};

/// A type-erased error, identical to `tower::BoxError`: the tower convention.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The error of a stack of palisade layers over a service whose own error is `E`.
///
/// Every layer returns `S::Error` and only requires `S::Error: From<TheRejection>`, so this
/// one enum is the error type of the whole stack, in any layer order. A caller tells "the
/// circuit was open" from "the backend failed" by matching, never by reading messages:
///
/// ```
/// use palisade_core::{CircuitOpen, Error, Name};
///
/// fn describe(err: &Error<std::io::Error>) -> &'static str {
///     match err {
///         Error::Inner(_) => "the backend failed",
///         Error::CircuitOpen(_) => "we did not call the backend",
///         _ => "another rejection",
///     }
/// }
/// let err: Error<std::io::Error> = CircuitOpen::new(Name::new("db"), None).into();
/// assert_eq!(describe(&err), "we did not call the backend");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The wrapped service's own error.
    Inner(E),
    /// A timeout elapsed.
    Elapsed(Elapsed),
    /// A circuit breaker was open.
    CircuitOpen(CircuitOpen),
    /// A rate limit was exceeded.
    RateLimited(RateLimited),
    /// A concurrency limit, queue or load shedder refused the call.
    Overloaded(Overloaded),
    /// A retry layer gave up without a result of its own.
    RetriesExhausted(RetriesExhausted),
}

impl<E> Error<E> {
    /// Wrap the service's own error (the same as `Error::Inner(e)`; handy in `map_err`).
    pub fn inner(e: E) -> Self {
        Error::Inner(e)
    }

    /// The service's own error, if this is one.
    pub fn as_inner(&self) -> Option<&E> {
        match self {
            Error::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// The service's own error, or `Err(self)` for a rejection.
    pub fn into_inner(self) -> Result<E, Self> {
        match self {
            Error::Inner(e) => Ok(e),
            other => Err(other),
        }
    }

    /// `true` when a palisade layer rejected the call (it is not the service's own error).
    pub fn is_rejection(&self) -> bool {
        !matches!(self, Error::Inner(_))
    }
}

impl<E> AsRejection for Error<E> {
    fn as_rejection(&self) -> Option<Rejection<'_>> {
        match self {
            Error::Inner(_) => None,
            Error::Elapsed(r) => Some(Rejection::Elapsed(r)),
            Error::CircuitOpen(r) => Some(Rejection::CircuitOpen(r)),
            Error::RateLimited(r) => Some(Rejection::RateLimited(r)),
            Error::Overloaded(r) => Some(Rejection::Overloaded(r)),
            Error::RetriesExhausted(r) => Some(Rejection::RetriesExhausted(r)),
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Inner(e) => fmt::Display::fmt(e, f),
            Error::Elapsed(r) => fmt::Display::fmt(r, f),
            Error::CircuitOpen(r) => fmt::Display::fmt(r, f),
            Error::RateLimited(r) => fmt::Display::fmt(r, f),
            Error::Overloaded(r) => fmt::Display::fmt(r, f),
            Error::RetriesExhausted(r) => fmt::Display::fmt(r, f),
        }
    }
}

/// Transparent: an `Error<E>` displays exactly what it holds and has the same `source()` as
/// what it holds, so an error report (`anyhow`, `eyre`, a `source()` walk) prints each
/// message once. Rejections have no source.
impl<E: StdError + 'static> StdError for Error<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Inner(e) => e.source(),
            Error::Elapsed(r) => r.source(),
            Error::CircuitOpen(r) => r.source(),
            Error::RateLimited(r) => r.source(),
            Error::Overloaded(r) => r.source(),
            Error::RetriesExhausted(r) => r.source(),
        }
    }
}

impl<E: Clone> Clone for Error<E> {
    fn clone(&self) -> Self {
        match self {
            Error::Inner(e) => Error::Inner(e.clone()),
            Error::Elapsed(r) => Error::Elapsed(r.clone()),
            Error::CircuitOpen(r) => Error::CircuitOpen(r.clone()),
            Error::RateLimited(r) => Error::RateLimited(r.clone()),
            Error::Overloaded(r) => Error::Overloaded(r.clone()),
            Error::RetriesExhausted(r) => Error::RetriesExhausted(r.clone()),
        }
    }
}

macro_rules! from_rejection {
    ($($ty:ident),*) => {$(
        impl<E> From<$ty> for Error<E> {
            fn from(r: $ty) -> Self {
                Error::$ty(r)
            }
        }
    )*};
}

from_rejection!(
    Elapsed,
    CircuitOpen,
    RateLimited,
    Overloaded,
    RetriesExhausted
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Name, RejectionKind};
    use std::time::Duration;

    #[test]
    fn transparent_display_and_source() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("query failed")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let err: Error<Outer> = Error::inner(Outer(std::io::Error::other("disk")));
        assert!(!err.is_rejection());
        assert_eq!(err.to_string(), "query failed");
        // the source is the inner error's source, not the inner error again
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("disk")
        );

        let err: Error<std::io::Error> =
            RateLimited::new(Name::new("api"), Duration::from_secs(1)).into();
        assert!(err.is_rejection());
        assert_eq!(
            err.as_rejection().map(|r| r.kind()),
            Some(RejectionKind::RateLimited)
        );
        assert!(err.source().is_none());
        assert!(err.to_string().contains("'api'"));
    }
}
