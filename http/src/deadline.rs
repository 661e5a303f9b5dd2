//! Deadlines across the wire: a caller's remaining time read from a request header on the
//! server ([`IncomingDeadlineLayer`]) and written onto outgoing requests on the client
//! ([`SendDeadlineLayer`]).
//!
//! Inside a process the deadline is a [`Deadline`] (made current for inner layers, and kept
//! in the request's extensions through [`RequestDeadline`]); on the wire it is a relative
//! timeout in a header, by default gRPC's `grpc-timeout` ([`TimeoutHeader`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Request;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use palisade_core::{Deadline, Elapsed, Name, RequestDeadline, deadline};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

/// The `grpc-timeout` request header.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The largest value gRPC's `TimeoutValue` may have: eight digits.
const GRPC_MAX: u64 = 99_999_999;

// ===== TimeoutHeader =====

/// Where a relative timeout travels on the wire, and in which format.
///
/// ```
/// use http::HeaderName;
/// use palisade_http::deadline::TimeoutHeader;
/// use std::time::Duration;
///
/// let grpc = TimeoutHeader::grpc();
/// assert_eq!(grpc.value(Duration::from_millis(250)), "250000u");
/// assert_eq!(grpc.parse("250m"), Some(Duration::from_millis(250)));
///
/// let envoy = TimeoutHeader::millis(HeaderName::from_static("x-envoy-expected-rq-timeout-ms"));
/// assert_eq!(envoy.value(Duration::from_secs(2)), "2000");
/// assert_eq!(envoy.parse("2000"), Some(Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutHeader {
    name: HeaderName,
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Grpc,
    Millis,
}

impl TimeoutHeader {
    /// gRPC's `grpc-timeout`: up to eight digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
    pub fn grpc() -> Self {
        Self {
            name: GRPC_TIMEOUT.clone(),
            format: Format::Grpc,
        }
    }

    /// A header of your choice holding whole milliseconds (Envoy's
    /// `x-envoy-expected-rq-timeout-ms` style).
    pub fn millis(name: HeaderName) -> Self {
        Self {
            name,
            format: Format::Millis,
        }
    }

    /// The header's name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// Parse a header value; `None` when malformed (a malformed timeout is no timeout).
    pub fn parse(&self, value: &str) -> Option<Duration> {
        match self.format {
            Format::Grpc => parse_grpc_timeout(value),
            Format::Millis => {
                let value = value.trim();
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(Duration::from_millis(value.parse().unwrap_or(u64::MAX)))
            }
        }
    }

    /// The timeout in `headers`, if present and well formed.
    pub fn read(&self, headers: &HeaderMap) -> Option<Duration> {
        self.parse(headers.get(&self.name)?.to_str().ok()?)
    }

    /// The header value for `timeout`, rounded down (the receiver never thinks it has more
    /// time than the sender).
    pub fn value(&self, timeout: Duration) -> HeaderValue {
        match self.format {
            Format::Grpc => grpc_timeout_value(timeout),
            Format::Millis => {
                HeaderValue::from(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            }
        }
    }
}

impl Default for TimeoutHeader {
    fn default() -> Self {
        Self::grpc()
    }
}

/// Parse a `grpc-timeout` value: 1 to 8 digits followed by `H`, `M`, `S`, `m` (ms), `u`
/// (µs) or `n` (ns).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at_checked(split)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A `grpc-timeout` value for `timeout`: the finest unit whose count fits in eight digits,
/// rounded down.
pub fn grpc_timeout_value(timeout: Duration) -> HeaderValue {
    const UNITS: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let nanos = timeout.as_nanos();
    let (count, unit) = UNITS
        .iter()
        .map(|&(size, unit)| (nanos / size, unit))
        .find(|&(count, _)| count <= u128::from(GRPC_MAX))
        .unwrap_or((u128::from(GRPC_MAX), 'H'));
    HeaderValue::from_str(&format!("{count}{unit}")).expect("digits and a letter")
}

// ===== IncomingDeadlineLayer =====

/// On a server: reads the caller's timeout from a header (`grpc-timeout` by default), so the
/// caller's deadline bounds the server's work.
///
/// The deadline (the earlier of the header's and any already on the request) is stored on
/// the request ([`RequestDeadline`]) and made current ([`Deadline::current`]) while the
/// inner layers and the handler run, so every palisade timeout and retry inside takes at
/// most what is left. The layer also enforces it: when it passes, the call is cancelled
/// with [`Elapsed`] (named after this layer, default `"caller_deadline"`), which
/// [`RejectionResponseLayer`](crate::RejectionResponseLayer) answers with `504`. A request
/// that arrives with no time left is refused without calling the service. Requests
/// without the header (or with a malformed one) pass through untouched.
///
/// ```
/// use palisade_core::{BoxError, Deadline};
/// use palisade_http::IncomingDeadlineLayer;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let handler = service_fn(|_req: http::Request<()>| async {
///     // The handler sees the caller's deadline.
///     Ok::<_, BoxError>(Deadline::current().map(|d| d.remaining()))
/// });
/// let svc = ServiceBuilder::new().layer(IncomingDeadlineLayer::grpc()).service(handler);
/// let req = http::Request::builder().header("grpc-timeout", "2S").body(()).unwrap();
/// let left = svc.oneshot(req).await.unwrap();
/// assert_eq!(left, Some(Duration::from_secs(2)));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct IncomingDeadlineLayer {
    header: TimeoutHeader,
    name: Name,
}

impl IncomingDeadlineLayer {
    /// Read the caller's timeout from `header`.
    pub fn new(header: TimeoutHeader) -> Self {
        Self {
            header,
            name: Name::from_static("caller_deadline"),
        }
    }

    /// Read the caller's timeout from `grpc-timeout`.
    pub fn grpc() -> Self {
        Self::new(TimeoutHeader::grpc())
    }

    /// The name on the [`Elapsed`] returned when the caller's deadline passes (default
    /// `"caller_deadline"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.name = name.into();
        self
    }
}

impl<S> Layer<S> for IncomingDeadlineLayer {
    type Service = IncomingDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IncomingDeadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`IncomingDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct IncomingDeadline<S> {
    inner: S,
    layer: IncomingDeadlineLayer,
}

impl<S> IncomingDeadline<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for IncomingDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: From<Elapsed>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(timeout) = self.layer.header.read(req.headers()) else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        let caller = Deadline::after(timeout);
        let effective = Deadline::earliest(Some(caller), req.deadline()).unwrap_or(caller);
        let elapsed = Elapsed::new(self.layer.name.clone(), timeout);
        if effective.is_expired() {
            return ResponseFuture::expired(elapsed);
        }
        req.set_deadline(effective);
        let inner = deadline::scope(Some(effective), || self.inner.call(req));
        ResponseFuture::called(inner, effective, elapsed)
    }
}

// ===== SendDeadlineLayer =====

/// On a client: writes the caller's remaining time onto each outgoing request, in
/// `grpc-timeout` by default, so the server stops working on it when the caller stops
/// waiting.
///
/// The deadline is the earlier of the current one ([`Deadline::current`], set by an outer
/// palisade timeout) and one stored on the request ([`RequestDeadline`]); a request without
/// either goes out unchanged. A request whose deadline has already passed is not sent: the
/// call fails at once with [`Elapsed`] (named after this layer, default `"send_deadline"`).
/// Put it innermost, right above the transport, so the value is computed when the attempt
/// leaves (each retry sends what is left then).
///
/// ```
/// use palisade_core::{BoxError, Deadline, RequestDeadline};
/// use palisade_http::SendDeadlineLayer;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let transport = service_fn(|req: http::Request<()>| async move {
///     Ok::<_, BoxError>(req.headers().get("grpc-timeout").cloned())
/// });
/// let client = ServiceBuilder::new().layer(SendDeadlineLayer::grpc()).service(transport);
/// // An outer palisade timeout sets the deadline; here the request carries one.
/// let mut req = http::Request::new(());
/// req.set_deadline(Deadline::after(Duration::from_millis(300)));
/// let sent = client.oneshot(req).await.unwrap();
/// assert_eq!(sent.unwrap(), "300000u");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SendDeadlineLayer {
    header: TimeoutHeader,
    name: Name,
}

impl SendDeadlineLayer {
    /// Send the remaining time in `header`.
    pub fn new(header: TimeoutHeader) -> Self {
        Self {
            header,
            name: Name::from_static("send_deadline"),
        }
    }

    /// Send the remaining time in `grpc-timeout`.
    pub fn grpc() -> Self {
        Self::new(TimeoutHeader::grpc())
    }

    /// The name on the [`Elapsed`] returned for a request whose deadline has passed
    /// (default `"send_deadline"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<Name>) -> Self {
        self.name = name.into();
        self
    }
}

impl<S> Layer<S> for SendDeadlineLayer {
    type Service = SendDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SendDeadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`SendDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct SendDeadline<S> {
    inner: S,
    layer: SendDeadlineLayer,
}

impl<S> SendDeadline<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for SendDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: From<Elapsed>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(deadline) = Deadline::earliest(req.deadline(), Deadline::current()) else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        let left = deadline.remaining();
        if left.is_zero() {
            return ResponseFuture::expired(Elapsed::new(self.layer.name.clone(), left));
        }
        req.set_deadline(deadline);
        let name = self.layer.header.name().clone();
        req.headers_mut()
            .insert(name, self.layer.header.value(left));
        ResponseFuture::passthrough(self.inner.call(req))
    }
}

// ===== ResponseFuture =====

pin_project! {
    /// The response future of [`IncomingDeadline`] and [`SendDeadline`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        // The service was called.
        Called {
            #[pin]
            inner: F,
            deadline: Option<Deadline>,
            #[pin]
            sleep: Option<Sleep>,
            elapsed: Option<Elapsed>,
        },
        // The deadline had passed before the call.
        Expired { elapsed: Option<Elapsed> },
    }
}

impl<F> ResponseFuture<F> {
    fn called(inner: F, deadline: Deadline, elapsed: Elapsed) -> Self {
        let kind = Kind::Called {
            inner,
            deadline: Some(deadline),
            sleep: Some(tokio::time::sleep_until(deadline.instant())),
            elapsed: Some(elapsed),
        };
        Self { kind }
    }

    fn passthrough(inner: F) -> Self {
        let kind = Kind::Called {
            inner,
            deadline: None,
            sleep: None,
            elapsed: None,
        };
        Self { kind }
    }

    fn expired(elapsed: Elapsed) -> Self {
        let kind = Kind::Expired {
            elapsed: Some(elapsed),
        };
        Self { kind }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<Elapsed>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                inner,
                deadline,
                sleep,
                elapsed,
            } => {
                // First, poll the call with the caller's deadline in effect.
                if let Poll::Ready(out) = deadline::scope(*deadline, || inner.poll(cx)) {
                    return Poll::Ready(out);
                }
                // Then check whether the caller has stopped waiting.
                let Some(sleep) = sleep.as_pin_mut() else {
                    return Poll::Pending;
                };
                ready!(sleep.poll(cx));
                Poll::Ready(Err(take_elapsed(elapsed).into()))
            }
            KindProj::Expired { elapsed } => Poll::Ready(Err(take_elapsed(elapsed).into())),
        }
    }
}

fn take_elapsed(elapsed: &mut Option<Elapsed>) -> Elapsed {
    elapsed
        .take()
        .expect("a deadline future is not polled after it completed")
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Called { deadline, .. } => f
                .debug_struct("ResponseFuture")
                .field("deadline", deadline)
                .finish_non_exhaustive(),
            Kind::Expired { .. } => f.write_str("ResponseFuture::Expired"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::BoxError;
    use proptest::prelude::*;
    use tower::{ServiceExt, service_fn};

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("4m"), Some(Duration::from_millis(4)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "123456789S", "1s", "1.5S", "-1S", "1 S", "1é", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout_value(Duration::ZERO), "0n");
        assert_eq!(grpc_timeout_value(Duration::from_secs(1)), "1000000u");
        assert_eq!(grpc_timeout_value(Duration::MAX), "99999999H");
    }

    #[test]
    fn millis_header_values() {
        let h = TimeoutHeader::millis(HeaderName::from_static("x-timeout-ms"));
        assert_eq!(h.parse(" 15 "), Some(Duration::from_millis(15)));
        assert_eq!(h.parse("1.5"), None);
        assert_eq!(h.parse(""), None);
        assert_eq!(h.value(Duration::from_micros(1500)), "1");
    }

    #[tokio::test(start_paused = true)]
    async fn incoming_deadline_is_enforced() {
        let hang = service_fn(|_req: Request<()>| async {
            std::future::pending::<()>().await;
            Ok::<(), BoxError>(())
        });
        let svc = IncomingDeadlineLayer::grpc().layer(hang);
        let req = Request::builder()
            .header("grpc-timeout", "100m")
            .body(())
            .unwrap();
        let started = tokio::time::Instant::now();
        let err = svc.oneshot(req).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        let elapsed = err.downcast_ref::<Elapsed>().expect("an Elapsed");
        assert_eq!(elapsed.name().as_str(), "caller_deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_requests_are_not_served() {
        let svc = service_fn(|_req: Request<()>| async { Ok::<u8, BoxError>(1) });
        let incoming = IncomingDeadlineLayer::grpc().layer(svc);
        let req = Request::builder()
            .header("grpc-timeout", "0m")
            .body(())
            .unwrap();
        assert!(incoming.oneshot(req).await.unwrap_err().is::<Elapsed>());

        let send = SendDeadlineLayer::grpc().layer(svc);
        let mut req = Request::new(());
        req.set_deadline(Deadline::after(Duration::ZERO));
        assert!(send.oneshot(req).await.unwrap_err().is::<Elapsed>());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_header_nothing_changes() {
        let svc = service_fn(|req: Request<()>| async move {
            Ok::<_, BoxError>((req.deadline(), req.headers().len()))
        });
        let incoming = IncomingDeadlineLayer::grpc().layer(svc);
        assert_eq!(incoming.oneshot(Request::new(())).await.unwrap(), (None, 0));
        let send = SendDeadlineLayer::grpc().layer(svc);
        assert_eq!(send.oneshot(Request::new(())).await.unwrap(), (None, 0));
    }

    proptest! {
        #[test]
        fn grpc_timeouts_round_trip(nanos in any::<u64>(), secs in any::<u64>()) {
            for d in [Duration::from_nanos(nanos), Duration::from_secs(secs)] {
                let value = grpc_timeout_value(d);
                let back = parse_grpc_timeout(value.to_str().unwrap()).unwrap();
                // Never more than was left, and within the unit's precision (a unit is used
                // only for more than 10^8 of the next finer one, 1000 times smaller: under
                // 1 part in 10^5 is lost), except past the format's maximum (11,000 years).
                prop_assert!(back <= d);
                if d < Duration::from_secs(GRPC_MAX * 3600) {
                    prop_assert!(d - back <= d / 100_000 + Duration::from_nanos(1));
                }
            }
        }

        #[test]
        fn grpc_parser_never_panics(s in "\\PC{0,12}") {
            let _ = parse_grpc_timeout(&s);
        }
    }
}
