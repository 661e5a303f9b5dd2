//! Client side: which HTTP and gRPC results are failures, when the server said to come back,
//! and which requests may be sent again.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName};
use http::{Method, Request, Response, StatusCode};
use palisade_core::throttle::Throttle;
use palisade_core::{AsRejection, Classify, Outcome, Rejection, RejectionAware};

use crate::headers;

// ===== HttpClassifier =====

/// Classifies `Result<http::Response<B>, E>` for retry, circuit breakers and fallbacks.
///
/// | result | outcome | why |
/// |---|---|---|
/// | `5xx`, `429`, `408` | `Failure` | the server is failing, overloaded or too slow: retry, count against it |
/// | any other status (`2xx`, `3xx`, `404`, `400`, …) | `Success` | the server answered; a bad request does not make it unhealthy, so a breaker never opens on `4xx` |
/// | `Err`: a connection error, a timeout ([`Elapsed`](palisade_core::Elapsed)) | `Failure` | |
/// | `Err`: [`RateLimited`](palisade_core::RateLimited), [`Overloaded`](palisade_core::Overloaded), [`CircuitOpen`](palisade_core::CircuitOpen), [`RetriesExhausted`](palisade_core::RetriesExhausted) | `Ignore` | our own layers refused locally: nothing was learnt about the server |
///
/// Used for retry, the ignored local refusals are not retried either: to wait for your own
/// quota, give the local rate limit a `max_wait` instead.
///
/// The error must be [`AsRejection`]: a `BoxError` (use
/// [`BoxErrorLayer`](crate::BoxErrorLayer) over a transport) or `palisade_core::Error<E>`.
///
/// ```
/// use palisade_core::{BoxError, Classify, Name, Outcome, RateLimited};
/// use palisade_http::HttpClassifier;
/// use std::time::Duration;
///
/// let status = |code: u16| -> Result<http::Response<()>, BoxError> {
///     let mut res = http::Response::new(());
///     *res.status_mut() = http::StatusCode::from_u16(code).unwrap();
///     Ok(res)
/// };
/// assert_eq!(HttpClassifier.classify(&status(503)), Outcome::Failure);
/// assert_eq!(HttpClassifier.classify(&status(429)), Outcome::Failure);
/// assert_eq!(HttpClassifier.classify(&status(404)), Outcome::Success);
/// let local: Result<http::Response<()>, BoxError> =
///     Err(RateLimited::new(Name::new("ours"), Duration::from_secs(1)).into());
/// assert_eq!(HttpClassifier.classify(&local), Outcome::Ignore);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpClassifier;

impl<B, E: AsRejection> Classify<Response<B>, E> for HttpClassifier {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => status_outcome(response.status()),
            Err(err) => error_outcome(err),
        }
    }

    fn never_sent(&self, result: &Result<Response<B>, E>) -> bool {
        RejectionAware.never_sent(result)
    }
}

/// The outcome of an HTTP status: `5xx`, `429` and `408` are failures, anything else a
/// success.
pub fn status_outcome(status: StatusCode) -> Outcome {
    let failed = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    if failed {
        Outcome::Failure
    } else {
        Outcome::Success
    }
}

/// The outcome of an error: our own layers' local refusals are `Ignore`, everything else
/// (connection errors, timeouts) a `Failure`.
fn error_outcome<E: AsRejection>(err: &E) -> Outcome {
    match err.as_rejection() {
        Some(Rejection::Elapsed(_)) | None => Outcome::Failure,
        Some(_) => Outcome::Ignore,
    }
}

// ===== GrpcClassifier =====

/// The `grpc-status` response header (or trailer).
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// gRPC's `grpc-retry-pushback-ms`: the server's retry hint in milliseconds (negative: do
/// not retry).
pub static GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// gRPC status codes this crate looks at.
pub mod grpc_code {
    /// `OK`.
    pub const OK: u32 = 0;
    /// `DEADLINE_EXCEEDED`: the deadline passed before the server answered.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    /// `RESOURCE_EXHAUSTED`: a quota or the server's capacity is used up.
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// `INTERNAL`.
    pub const INTERNAL: u32 = 13;
    /// `UNAVAILABLE`: the service is down or unreachable for now.
    pub const UNAVAILABLE: u32 = 14;
    /// `UNKNOWN`.
    pub const UNKNOWN: u32 = 2;
    /// `UNIMPLEMENTED`.
    pub const UNIMPLEMENTED: u32 = 12;
    /// `UNAUTHENTICATED`.
    pub const UNAUTHENTICATED: u32 = 16;
    /// `PERMISSION_DENIED`.
    pub const PERMISSION_DENIED: u32 = 7;
}

/// Classifies gRPC calls over `http` (tonic's `http::Response`s included) without
/// depending on tonic: `UNAVAILABLE`, `RESOURCE_EXHAUSTED` and `DEADLINE_EXCEEDED` are
/// failures (retried, counted by a breaker); every other status is a success (the server
/// answered). Errors are classified as by [`HttpClassifier`].
///
/// The status is read from the `grpc-status` header, where a server puts it when it fails
/// a call before sending any message ("trailers-only" responses: the usual shape of the
/// failures above). A status sent in trailers after a streamed body is not visible when the
/// response arrives; such a call counts as a success here. A response with an HTTP status
/// other than 200 is mapped to a gRPC status as the gRPC spec says (`429`, `502`, `503`,
/// `504` → `UNAVAILABLE`).
///
/// ```
/// use palisade_core::{BoxError, Classify, Outcome};
/// use palisade_http::GrpcClassifier;
///
/// let status = |code: &'static str| -> Result<http::Response<()>, BoxError> {
///     Ok(http::Response::builder().header("grpc-status", code).body(()).unwrap())
/// };
/// assert_eq!(GrpcClassifier.classify(&status("14")), Outcome::Failure); // UNAVAILABLE
/// assert_eq!(GrpcClassifier.classify(&status("5")), Outcome::Success); // NOT_FOUND
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcClassifier;

impl<B, E: AsRejection> Classify<Response<B>, E> for GrpcClassifier {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => grpc_outcome(grpc_status(response)),
            Err(err) => error_outcome(err),
        }
    }

    fn never_sent(&self, result: &Result<Response<B>, E>) -> bool {
        RejectionAware.never_sent(result)
    }
}

/// The gRPC status of a response: its `grpc-status` header, or the status its HTTP status
/// maps to; `None` for a `200` without `grpc-status` (the status follows in trailers).
pub fn grpc_status<B>(response: &Response<B>) -> Option<u32> {
    if let Some(code) = grpc_status_header(response.headers()) {
        return Some(code);
    }
    use grpc_code::*;
    Some(match response.status().as_u16() {
        200 => return None,
        400 => INTERNAL,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        404 => UNIMPLEMENTED,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    })
}

/// The `grpc-status` in a header map (headers or trailers).
pub fn grpc_status_header(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(&GRPC_STATUS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The outcome of a gRPC status (`None`: not known yet, a success).
pub fn grpc_outcome(code: Option<u32>) -> Outcome {
    use grpc_code::*;
    match code {
        Some(UNAVAILABLE | RESOURCE_EXHAUSTED | DEADLINE_EXCEEDED) => Outcome::Failure,
        _ => Outcome::Success,
    }
}

// ===== load signals =====

/// Classifies HTTP results for an adaptive concurrency limit
/// (`palisade_rate_limit::AdaptiveLimitLayer::classifier`): the server saying it is
/// overloaded is a decrease signal, every other answer a latency sample, and no error feeds
/// one.
///
/// | result | outcome | why |
/// |---|---|---|
/// | `503`, `429` | `Failure` | the server shed the call: the sharpest overload signal there is |
/// | any other status | `Success` | an answer: its latency is the sample |
/// | `Err` (a connection error, a timed-out attempt, a local rejection) | `Ignore` | a fast error says nothing about load; a timeout is ambiguous (a brown-out's slow calls are not overload); a local rejection is our own decision |
///
/// It is the limit's default rule (`palisade_rate_limit::LatencyOnly`: latency alone) plus
/// the server's own word. Chosen by the incident scorecard
/// (`cargo run --release -p palisade-benches --example candidates`): counting timed-out
/// attempts too served 85.0 req/s in the brown-out against 95.1.
///
/// ```
/// use palisade_core::{BoxError, Classify, Outcome};
/// use palisade_http::HttpLoadSignal;
///
/// let status = |code: u16| -> Result<http::Response<()>, BoxError> {
///     let mut res = http::Response::new(());
///     *res.status_mut() = http::StatusCode::from_u16(code).unwrap();
///     Ok(res)
/// };
/// assert_eq!(HttpLoadSignal.classify(&status(503)), Outcome::Failure);
/// assert_eq!(HttpLoadSignal.classify(&status(500)), Outcome::Success);
/// let reset: Result<http::Response<()>, BoxError> = Err("connection reset".into());
/// assert_eq!(HttpLoadSignal.classify(&reset), Outcome::Ignore);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpLoadSignal;

impl<B, E> Classify<Response<B>, E> for HttpLoadSignal {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => {
                let status = response.status();
                if status == StatusCode::SERVICE_UNAVAILABLE
                    || status == StatusCode::TOO_MANY_REQUESTS
                {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            }
            Err(_) => Outcome::Ignore,
        }
    }
}

/// [`HttpLoadSignal`] for gRPC: `RESOURCE_EXHAUSTED` and `UNAVAILABLE` (a `grpc-status`
/// header, or an HTTP `429`/`503` mapped as the gRPC spec says) are decrease signals, every
/// other answer a latency sample, no error feeds one.
///
/// ```
/// use palisade_core::{BoxError, Classify, Outcome};
/// use palisade_http::GrpcLoadSignal;
///
/// let status = |code: &'static str| -> Result<http::Response<()>, BoxError> {
///     Ok(http::Response::builder().header("grpc-status", code).body(()).unwrap())
/// };
/// assert_eq!(GrpcLoadSignal.classify(&status("8")), Outcome::Failure); // RESOURCE_EXHAUSTED
/// assert_eq!(GrpcLoadSignal.classify(&status("4")), Outcome::Success); // DEADLINE_EXCEEDED
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcLoadSignal;

impl<B, E> Classify<Response<B>, E> for GrpcLoadSignal {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        use grpc_code::{RESOURCE_EXHAUSTED, UNAVAILABLE};
        match result {
            Ok(response) => match grpc_status(response) {
                Some(RESOURCE_EXHAUSTED | UNAVAILABLE) => Outcome::Failure,
                _ => Outcome::Success,
            },
            Err(_) => Outcome::Ignore,
        }
    }
}

// ===== retry hints =====

/// The server's hint of when to try again, for palisade-retry's `retry_after` hook:
///
/// - `Retry-After` (delta-seconds or an HTTP-date),
/// - else the `RateLimit` headers, when they say the quota is used up
///   ([`headers::rate_limit_reset`]),
/// - else gRPC's `grpc-retry-pushback-ms`,
/// - for an error, a [`RateLimited`](palisade_core::RateLimited)'s `retry_after` (not a
///   permanent one), a [`CircuitOpen`](palisade_core::CircuitOpen)'s (when its next probe
///   may go), zero for an [`Overloaded`](palisade_core::Overloaded): the retry layer's
///   default hook's hints. (Which refusals are retried free of the budget is the
///   classifier's to say: [`HttpClassifier`] and [`GrpcClassifier`] know them.)
///
/// The retry layer waits at least the hint (capped by its backoff's `max_delay`, so raise
/// that to honour long hints) and never past the caller's deadline: a hint that would
/// outlast it ends the retries at once.
///
/// ```
/// use palisade_core::BoxError;
/// use palisade_http::retry_after;
/// use std::time::Duration;
///
/// let busy: Result<http::Response<()>, BoxError> =
///     Ok(http::Response::builder().status(503).header("retry-after", "3").body(()).unwrap());
/// assert_eq!(retry_after(&busy), Some(Duration::from_secs(3)));
/// ```
pub fn retry_after<B, E: AsRejection>(result: &Result<Response<B>, E>) -> Option<Duration> {
    match result {
        Ok(response) => {
            let h = response.headers();
            headers::retry_after(h)
                .or_else(|| headers::rate_limit_reset(h))
                .or_else(|| grpc_pushback(h))
        }
        // As the retry layer's default hook (`RejectionAware`): a rate limit's, an open
        // circuit's hint (when its next probe may go), an overload's "now".
        Err(err) => match err.as_rejection()? {
            Rejection::Overloaded(_) => Some(Duration::ZERO),
            r => r.retry_after(),
        },
    }
}

/// The upstream's throttle hint in a response, for a throttle gate
/// (`palisade::rate_limit::ThrottleLayer::hint`): every caller sharing the gate then holds
/// back until the upstream's time is up, not only the one that got the answer.
///
/// | response | hint |
/// |---|---|
/// | `429`, or `503` with `Retry-After` | `Retry-After` (delta-seconds or HTTP-date); a `429` without one: 1 s |
/// | `RateLimit: ...;r=0;t=N` (quota used up), any status | `N` seconds |
/// | gRPC `RESOURCE_EXHAUSTED` (trailers-only) | `grpc-retry-pushback-ms`, else 1 s |
/// | anything else, and palisade's own local rejections | none |
///
/// Local rejections are never hints: a gate closed by its own `RateLimited` would hold
/// itself shut.
///
/// ```
/// use palisade_core::BoxError;
/// use palisade_core::throttle::Throttle;
/// use palisade_http::throttle_hint;
/// use std::time::Duration;
///
/// let busy: Result<http::Response<()>, BoxError> =
///     Ok(http::Response::builder().status(429).header("retry-after", "30").body(()).unwrap());
/// assert_eq!(throttle_hint(&busy), Some(Throttle::For(Duration::from_secs(30))));
///
/// let fine: Result<http::Response<()>, BoxError> =
///     Ok(http::Response::builder().status(200).body(()).unwrap());
/// assert_eq!(throttle_hint(&fine), None);
/// ```
pub fn throttle_hint<B, E>(result: &Result<Response<B>, E>) -> Option<Throttle> {
    let response = result.as_ref().ok()?;
    let h = response.headers();
    let status = response.status().as_u16();
    let hinted = headers::retry_after(h);
    let wait = match status {
        429 => Some(hinted.unwrap_or(Duration::from_secs(1))),
        503 => hinted,
        _ => None,
    }
    .or_else(|| headers::rate_limit_reset(h))
    .or_else(|| {
        (grpc_status_header(h) == Some(grpc_code::RESOURCE_EXHAUSTED))
            .then(|| grpc_pushback(h).unwrap_or(Duration::from_secs(1)))
    })?;
    Some(Throttle::For(wait))
}

fn grpc_pushback(headers: &HeaderMap) -> Option<Duration> {
    let ms: i64 = headers
        .get(&GRPC_RETRY_PUSHBACK_MS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // A negative pushback means "do not retry"; a retry layer cannot be told that through
    // a delay, so it is no hint (the classifier and budget decide).
    u64::try_from(ms).ok().map(Duration::from_millis)
}

// ===== request cloning =====

/// The header a client sends to make a non-idempotent request safe to repeat.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// `true` when sending `req` twice has the effect of sending it once: an idempotent method
/// (RFC 9110 §9.2.2: `GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`) or a request
/// carrying an `Idempotency-Key`.
pub fn is_retry_safe<B>(req: &Request<B>) -> bool {
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    idempotent || req.headers().contains_key(&IDEMPOTENCY_KEY)
}

/// A copy of `req` for another attempt if it is safe to send again ([`is_retry_safe`]),
/// for palisade-retry's `clone_request` hook: a `POST` without an `Idempotency-Key` is
/// sent once, whatever the classifier says.
///
/// Works for any cloneable body: `Full<Bytes>`, `Bytes`, `String`, `Empty<Bytes>`, `()`.
/// Method, URI, version, headers and extensions are copied.
///
/// ```
/// use palisade_http::clone_request;
///
/// let get = http::Request::get("/items/1").body(String::new()).unwrap();
/// assert!(clone_request(&get).is_some());
/// let post = http::Request::post("/orders").body("{}".to_string()).unwrap();
/// assert!(clone_request(&post).is_none());
/// let keyed = http::Request::post("/orders").header("idempotency-key", "k1").body(String::new()).unwrap();
/// assert_eq!(clone_request(&keyed).unwrap().headers()["idempotency-key"], "k1");
/// ```
pub fn clone_request<B: Clone>(req: &Request<B>) -> Option<Request<B>> {
    if is_retry_safe(req) {
        clone_any_request(req)
    } else {
        None
    }
}

/// A copy of any request, whatever its method: for callers who know their `POST`s are
/// safe to repeat.
pub fn clone_any_request<B: Clone>(req: &Request<B>) -> Option<Request<B>> {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::{
        BoxError, CircuitOpen, Elapsed, Error, Name, Overloaded, RateLimited, RetriesExhausted,
    };

    type Res = Result<Response<()>, BoxError>;

    fn status(code: u16) -> Res {
        Ok(Response::builder().status(code).body(()).unwrap())
    }

    #[test]
    fn statuses() {
        for code in [500, 502, 503, 504, 429, 408] {
            assert_eq!(
                HttpClassifier.classify(&status(code)),
                Outcome::Failure,
                "{code}"
            );
        }
        for code in [200, 201, 204, 301, 304, 400, 401, 403, 404, 409, 422] {
            assert_eq!(
                HttpClassifier.classify(&status(code)),
                Outcome::Success,
                "{code}"
            );
        }
    }

    #[test]
    fn errors() {
        let n = || Name::new("x");
        let s = Duration::from_secs(1);
        let err = |e: BoxError| HttpClassifier.classify(&Err::<Response<()>, _>(e));
        assert_eq!(err("connection refused".into()), Outcome::Failure);
        assert_eq!(err(Elapsed::new(n(), s).into()), Outcome::Failure);
        assert_eq!(err(CircuitOpen::new(n(), None).into()), Outcome::Ignore);
        assert_eq!(err(Overloaded::new(n(), "q").into()), Outcome::Ignore);
        assert_eq!(err(RetriesExhausted::new(n(), 3).into()), Outcome::Ignore);
        // The typed error works the same way.
        let typed: Result<Response<()>, Error<std::io::Error>> =
            Err(CircuitOpen::new(n(), None).into());
        assert_eq!(HttpClassifier.classify(&typed), Outcome::Ignore);
    }

    #[test]
    fn grpc() {
        let with = |code: &str| -> Res {
            Ok(Response::builder()
                .header("grpc-status", code)
                .body(())
                .unwrap())
        };
        for code in ["4", "8", "14"] {
            assert_eq!(
                GrpcClassifier.classify(&with(code)),
                Outcome::Failure,
                "{code}"
            );
        }
        for code in ["0", "1", "2", "3", "5", "9", "13", "16", "garbage"] {
            assert_eq!(
                GrpcClassifier.classify(&with(code)),
                Outcome::Success,
                "{code}"
            );
        }
        assert_eq!(GrpcClassifier.classify(&status(200)), Outcome::Success);
        assert_eq!(GrpcClassifier.classify(&status(503)), Outcome::Failure);
        assert_eq!(GrpcClassifier.classify(&status(500)), Outcome::Success);
    }

    #[test]
    fn hints() {
        let with = |name: &str, value: &str| -> Res {
            Ok(Response::builder()
                .status(503)
                .header(name, value)
                .body(())
                .unwrap())
        };
        assert_eq!(
            retry_after(&with("retry-after", "2")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&with("ratelimit", "\"a\";r=0;t=4")),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            retry_after(&with("grpc-retry-pushback-ms", "250")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(&with("grpc-retry-pushback-ms", "-1")), None);
        assert_eq!(retry_after(&status(503)), None);
        let refused = |e: BoxError| retry_after::<(), _>(&Err(e));
        let n = Name::new("api");
        let s = Duration::from_secs(1);
        assert_eq!(
            refused(CircuitOpen::new(n.clone(), Some(s)).into()),
            Some(s)
        );
        assert_eq!(refused(CircuitOpen::new(n.clone(), None).into()), None);
        assert_eq!(
            refused(Overloaded::new(n.clone(), "q").into()),
            Some(Duration::ZERO)
        );
        assert_eq!(refused(RateLimited::new(n.clone(), s).into()), Some(s));
        assert_eq!(
            refused(RateLimited::insufficient_capacity(n, 10, 5).into()),
            None
        );
        assert_eq!(refused("boom".into()), None);
    }

    #[test]
    fn cloning_copies_everything() {
        let req = Request::put("http://example.com/a")
            .header("x-a", "1")
            .version(http::Version::HTTP_2)
            .extension(7u32)
            .body(bytes::Bytes::from_static(b"body"))
            .unwrap();
        let copy = clone_request(&req).unwrap();
        assert_eq!(copy.method(), Method::PUT);
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.version(), http::Version::HTTP_2);
        assert_eq!(copy.headers(), req.headers());
        assert_eq!(copy.extensions().get::<u32>(), Some(&7));
        assert_eq!(copy.body(), req.body());
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            let req = Request::builder().method(method).body(()).unwrap();
            assert!(clone_request(&req).is_none());
            assert!(clone_any_request(&req).is_some());
        }
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::*;
    use palisade_core::{BoxError, Name, RateLimited};

    fn response(status: u16, headers: &[(&str, &str)]) -> Result<Response<()>, BoxError> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Ok(b.body(()).expect("response"))
    }

    #[test]
    fn throttle_hints_come_only_from_the_upstream() {
        let secs = |n| Some(Throttle::For(Duration::from_secs(n)));
        assert_eq!(
            throttle_hint(&response(429, &[("retry-after", "7")])),
            secs(7)
        );
        assert_eq!(throttle_hint(&response(429, &[])), secs(1));
        assert_eq!(
            throttle_hint(&response(503, &[("retry-after", "4")])),
            secs(4)
        );
        assert_eq!(throttle_hint(&response(503, &[])), None);
        assert_eq!(
            throttle_hint(&response(200, &[("ratelimit", r#""q";r=0;t=9"#)])),
            secs(9)
        );
        assert_eq!(
            throttle_hint(&response(200, &[("ratelimit", r#""q";r=5;t=9"#)])),
            None
        );
        assert_eq!(
            throttle_hint(&response(
                200,
                &[("grpc-status", "8"), ("grpc-retry-pushback-ms", "250")]
            )),
            Some(Throttle::For(Duration::from_millis(250)))
        );
        assert_eq!(throttle_hint(&response(500, &[])), None);
        let local: Result<Response<()>, BoxError> =
            Err(RateLimited::new(Name::new("mine"), Duration::from_secs(5)).into());
        assert_eq!(throttle_hint(&local), None, "a local rejection is no hint");
    }
}
