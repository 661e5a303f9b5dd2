//! Buffering streamed request bodies, so requests can be copied for retries and hedges.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Request;
use http::request::Parts;
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, Full, Limited};
use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Reads each request's body into memory (up to `limit` bytes) and passes the request on
/// with a [`Full<Bytes>`] body, which [`clone_request`](crate::clone_request) can copy.
///
/// A streamed body (axum's `Body`, hyper's `Incoming`) can be sent only once; a gateway
/// that retries or hedges what it forwards needs the bytes. Put this layer above the retry
/// layer. A body over `limit`, or one that fails while being read, fails the call with
/// [`BufferError`] without calling the service (answer it with `413` if you like).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use palisade_core::BoxError;
/// use palisade_http::{BufferError, BufferRequestBodyLayer, clone_request};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let upstream = service_fn(|req: http::Request<Full<Bytes>>| async move {
///     let copy = clone_request(&req).expect("a PUT with a buffered body can be copied");
///     Ok::<_, BoxError>(copy.into_body().collect().await?.to_bytes())
/// });
/// let svc = ServiceBuilder::new().layer(BufferRequestBodyLayer::new(1024)).service(upstream);
///
/// // A body type that cannot be cloned: a boxed stream.
/// let streamed = Full::new(Bytes::from("payload")).map_err(|e| match e {}).boxed();
/// let req = http::Request::put("/doc").body(streamed).unwrap();
/// assert_eq!(svc.clone().oneshot(req).await.unwrap(), "payload");
///
/// let big = Full::new(Bytes::from(vec![0u8; 2048])).map_err(|e| match e {}).boxed();
/// let err = svc.oneshot(http::Request::put("/doc").body(big).unwrap()).await.unwrap_err();
/// assert!(matches!(err.downcast_ref::<BufferError>(), Some(BufferError::TooLarge { limit: 1024 })));
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct BufferRequestBodyLayer {
    limit: usize,
}

impl BufferRequestBodyLayer {
    /// Buffer bodies of at most `limit` bytes.
    pub const fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for BufferRequestBodyLayer {
    type Service = BufferRequestBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferRequestBody {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`BufferRequestBodyLayer`].
#[derive(Debug, Clone)]
pub struct BufferRequestBody<S> {
    inner: S,
    limit: usize,
}

impl<S> BufferRequestBody<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// A request body could not be buffered.
#[derive(Debug)]
#[non_exhaustive]
pub enum BufferError {
    /// The body is longer than the layer's limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Reading the body failed.
    Body(BoxError),
}

impl fmt::Display for BufferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BufferError::TooLarge { limit } => write!(
                f,
                "request body longer than the buffer limit of {limit} bytes; it was not sent"
            ),
            BufferError::Body(e) => write!(f, "reading the request body failed: {e}"),
        }
    }
}

impl std::error::Error for BufferError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BufferError::Body(e) => Some(&**e),
            BufferError::TooLarge { .. } => None,
        }
    }
}

impl<S, B> Service<Request<B>> for BufferRequestBody<S>
where
    S: Service<Request<Full<Bytes>>> + Clone,
    S::Error: From<BufferError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BufferFuture<S, B>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The service made ready goes with the request; the clone stays for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        BufferFuture {
            state: State::Reading {
                body: Limited::new(body, self.limit).collect(),
                parts: Some(parts),
                inner: Some(inner),
                limit: self.limit,
            },
        }
    }
}

pin_project! {
    /// The response future of [`BufferRequestBody`]: reading the body, then the call.
    pub struct BufferFuture<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        Reading {
            #[pin]
            body: Collect<Limited<B>>,
            parts: Option<Parts>,
            inner: Option<S>,
            limit: usize,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
    }
}

impl<S, B> Future for BufferFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: From<BufferError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Reading {
                    body,
                    parts,
                    inner,
                    limit,
                } => {
                    // First, the whole body; then the call, with the service made ready.
                    let bytes = match ready!(body.poll(cx)) {
                        Ok(collected) => collected.to_bytes(),
                        Err(e) => return Poll::Ready(Err(body_error(e, *limit).into())),
                    };
                    let parts = parts.take().expect("the body is read once");
                    let mut inner = inner.take().expect("the service is called once");
                    let future = inner.call(Request::from_parts(parts, Full::new(bytes)));
                    state.set(State::Calling { future });
                }
                StateProj::Calling { future } => return future.poll(cx),
            }
        }
    }
}

fn body_error(e: BoxError, limit: usize) -> BufferError {
    if e.is::<http_body_util::LengthLimitError>() {
        BufferError::TooLarge { limit }
    } else {
        BufferError::Body(e)
    }
}

impl<S, B> fmt::Debug for BufferFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferFuture").finish_non_exhaustive()
    }
}
