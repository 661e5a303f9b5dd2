//! Where a fallback answer comes from: a value, a function, or a secondary service.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, Ready};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_core::{BoxError, Name};
use pin_project_lite::pin_project;
use tower_service::Service;

/// A source of fallback answers for a service taking `Req` and answering
/// `Result<Res, E>`.
///
/// Implemented by [`Value`], [`FromError`], [`FromRequest`] and [`Secondary`]; implement it
/// for a source of your own (e.g. a local cache tier with its own future).
pub trait FallbackSource<Req, Res, E> {
    /// What the source keeps from each request before the live call: `()` for sources that
    /// do not look at the request (no clone on the live path), the request itself otherwise.
    type Saved;
    /// The source's own failure.
    type Error;
    /// The fallback answer.
    type Future: Future<Output = Result<Res, Self::Error>>;

    /// Keep what [`FallbackSource::answer`] will need from `req`; called once per request,
    /// before the live call.
    fn save(&self, req: &Req) -> Self::Saved;

    /// Answer instead of the live path. `error` is the live error, or `None` when the live
    /// path answered with a response classified as a failure, or was not called (manual
    /// degraded mode).
    fn answer(&self, saved: Self::Saved, error: Option<&E>) -> Self::Future;

    /// Turn the source's failure into the stack's error, keeping `original` (the live
    /// error, if there was one) as its source.
    fn failed(name: &Name, failure: Self::Error, original: Option<E>) -> E;
}

// ===== Value =====

/// A fixed fallback answer, cloned for each degraded call.
///
/// ```
/// use palisade_degrade::fallback::Value;
/// use palisade_degrade::Marked;
///
/// let source = Value::new(Marked::new(vec!["default", "recommendations"]));
/// # let _ = source;
/// ```
#[derive(Debug, Clone)]
pub struct Value<T>(T);

impl<T> Value<T> {
    /// Answer with clones of `value`.
    pub const fn new(value: T) -> Self {
        Self(value)
    }
}

impl<Req, Res: Clone, E> FallbackSource<Req, Res, E> for Value<Res> {
    type Saved = ();
    type Error = Infallible;
    type Future = Ready<Result<Res, Infallible>>;

    fn save(&self, _: &Req) {}

    fn answer(&self, (): (), _: Option<&E>) -> Self::Future {
        std::future::ready(Ok(self.0.clone()))
    }

    fn failed(_: &Name, failure: Infallible, _: Option<E>) -> E {
        match failure {}
    }
}

// ===== FromError =====

/// A fallback answer computed from the live error (`None`: no error, see
/// [`FallbackSource::answer`]); the request is not kept, so nothing is cloned on the live
/// path.
///
/// ```
/// use palisade_degrade::fallback::FromError;
/// use palisade_degrade::Marked;
/// use palisade_core::BoxError;
///
/// let source = FromError::new(|err: Option<&BoxError>| {
///     Marked::new(format!("unavailable: {}", err.map_or("maintenance".into(), |e| e.to_string())))
/// });
/// # let _ = source;
/// ```
#[derive(Debug, Clone)]
pub struct FromError<F>(F);

impl<F> FromError<F> {
    /// Answer with `f(error)`.
    pub const fn new(f: F) -> Self {
        Self(f)
    }
}

impl<Req, Res, E, F> FallbackSource<Req, Res, E> for FromError<F>
where
    F: Fn(Option<&E>) -> Res,
{
    type Saved = ();
    type Error = Infallible;
    type Future = Ready<Result<Res, Infallible>>;

    fn save(&self, _: &Req) {}

    fn answer(&self, (): (), error: Option<&E>) -> Self::Future {
        std::future::ready(Ok((self.0)(error)))
    }

    fn failed(_: &Name, failure: Infallible, _: Option<E>) -> E {
        match failure {}
    }
}

// ===== FromRequest =====

/// A fallback answer computed from the request and the live error; the request is cloned
/// before each live call so the function can have it.
///
/// ```
/// use palisade_degrade::fallback::FromRequest;
/// use palisade_degrade::Marked;
/// use palisade_core::BoxError;
///
/// let source = FromRequest::new(|user: u64, _err: Option<&BoxError>| Marked::new(format!("guest view for {user}")));
/// # let _ = source;
/// ```
#[derive(Debug, Clone)]
pub struct FromRequest<F>(F);

impl<F> FromRequest<F> {
    /// Answer with `f(request, error)`.
    pub const fn new(f: F) -> Self {
        Self(f)
    }
}

impl<Req, Res, E, F> FallbackSource<Req, Res, E> for FromRequest<F>
where
    Req: Clone,
    F: Fn(Req, Option<&E>) -> Res,
{
    type Saved = Req;
    type Error = Infallible;
    type Future = Ready<Result<Res, Infallible>>;

    fn save(&self, req: &Req) -> Req {
        req.clone()
    }

    fn answer(&self, req: Req, error: Option<&E>) -> Self::Future {
        std::future::ready(Ok((self.0)(req, error)))
    }

    fn failed(_: &Name, failure: Infallible, _: Option<E>) -> E {
        match failure {}
    }
}

// ===== Secondary =====

/// A secondary service answers (a replica, a cheaper model, a cache tier); the request is
/// cloned before each live call so the secondary can have it.
///
/// Each fallback call uses a clone of the service, driven to readiness inside the response
/// future (tower's `oneshot`). If the secondary fails too, the stack's error is built from
/// a [`FallbackFailed`] holding both errors, with the original as its `source()`; so the
/// stack's error type must be `From<FallbackFailed>` (`BoxError` is).
#[derive(Debug, Clone)]
pub struct Secondary<T>(T);

impl<T> Secondary<T> {
    /// Fall back to `service`.
    pub const fn new(service: T) -> Self {
        Self(service)
    }
}

impl<Req, Res, E, T> FallbackSource<Req, Res, E> for Secondary<T>
where
    Req: Clone,
    T: Service<Req, Response = Res> + Clone,
    T::Error: Into<BoxError>,
    E: From<FallbackFailed> + Into<BoxError>,
{
    type Saved = Req;
    type Error = T::Error;
    type Future = Oneshot<T, Req>;

    fn save(&self, req: &Req) -> Req {
        req.clone()
    }

    fn answer(&self, req: Req, _: Option<&E>) -> Self::Future {
        Oneshot::new(self.0.clone(), req)
    }

    fn failed(name: &Name, failure: T::Error, original: Option<E>) -> E {
        E::from(FallbackFailed {
            name: name.clone(),
            fallback: failure.into(),
            original: original.map(Into::into),
        })
    }
}

pin_project! {
    /// Drives a clone of a secondary service to readiness, then calls it.
    pub struct Oneshot<T: Service<Req>, Req> {
        #[pin]
        state: OneshotState<T, Req>,
    }
}

pin_project! {
    #[project = OneshotProj]
    enum OneshotState<T: Service<Req>, Req> {
        // Waiting for the service to be ready.
        NotReady { svc: T, req: Option<Req> },
        // Waiting for the answer.
        Called { #[pin] fut: T::Future },
    }
}

impl<T: Service<Req>, Req> fmt::Debug for Oneshot<T, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oneshot").finish_non_exhaustive()
    }
}

impl<T: Service<Req>, Req> Oneshot<T, Req> {
    fn new(svc: T, req: Req) -> Self {
        Self {
            state: OneshotState::NotReady {
                svc,
                req: Some(req),
            },
        }
    }
}

impl<T: Service<Req>, Req> Future for Oneshot<T, Req> {
    type Output = Result<T::Response, T::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                OneshotProj::NotReady { svc, req } => {
                    ready!(svc.poll_ready(cx))?;
                    let req = req.take().expect("Oneshot polled after it was called");
                    let fut = svc.call(req);
                    state.set(OneshotState::Called { fut });
                }
                OneshotProj::Called { fut } => return fut.poll(cx),
            }
        }
    }
}

// ===== FallbackFailed =====

/// The fallback failed too: holds the fallback's error and the original failure of the
/// live path, which is its `source()`, so neither is swallowed.
///
/// Only sources that can fail ([`Secondary`]) produce it; the stack's error type must be
/// `From<FallbackFailed>`. `BoxError` is; with `palisade_core::Error<E>`, `E` must be (the
/// rejection kinds of `Error<E>` are fixed in core). A rejection in the original failure
/// stays findable with `palisade_core::find_rejection` through the `source()` chain.
#[derive(Debug)]
pub struct FallbackFailed {
    name: Name,
    fallback: BoxError,
    original: Option<BoxError>,
}

impl FallbackFailed {
    /// The fallback of layer `name` failed with `fallback` after the live path failed with
    /// `original` (`None`: the live path answered with a failure response, or was not
    /// called in manual mode).
    pub fn new(name: Name, fallback: BoxError, original: Option<BoxError>) -> Self {
        Self {
            name,
            fallback,
            original,
        }
    }

    /// The name of the fallback layer.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The fallback's own error.
    pub fn fallback(&self) -> &BoxError {
        &self.fallback
    }

    /// The live path's error, if there was one.
    pub fn original(&self) -> Option<&BoxError> {
        self.original.as_ref()
    }

    /// The fallback's error and the original error.
    pub fn into_parts(self) -> (BoxError, Option<BoxError>) {
        (self.fallback, self.original)
    }
}

impl fmt::Display for FallbackFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fallback '{}' failed: {}", self.name, self.fallback)?;
        match &self.original {
            Some(original) => write!(f, "; the live call had failed with: {original}"),
            None => f.write_str("; the live path was not used"),
        }
    }
}

impl StdError for FallbackFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.original {
            Some(original) => Some(&**original),
            None => Some(&*self.fallback),
        }
    }
}

/// `palisade_core::Error<E>` has no variant for a failed fallback, so it carries one as its
/// service error `E`.
impl<E: From<FallbackFailed>> From<FallbackFailed> for palisade_core::Error<E> {
    fn from(failed: FallbackFailed) -> Self {
        palisade_core::Error::Inner(E::from(failed))
    }
}
