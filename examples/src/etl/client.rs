//! The extract stage's HTTP client: `GET {base}/records?page=N` as a tower service, and the
//! palisade stack around it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::BoxError;
use palisade::core::ConfigError;
use tower::Service;

use super::source::Page;

/// Why a page request failed (before palisade's layers add their rejections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// `429 Too Many Requests`, with the server's `Retry-After` hint if it sent one.
    Throttled {
        /// The parsed `Retry-After` (seconds; fractions accepted).
        retry_after: Option<Duration>,
    },
    /// Another non-success status.
    Status(u16),
    /// The connection failed.
    Transport(String),
    /// The body is not a page.
    Decode(String),
    /// The source URL is malformed: no attempt can succeed.
    InvalidUrl(String),
}

impl SourceError {
    /// Whether another attempt may succeed: throttling, server errors, timeouts
    /// (`408`) and transport failures; not other client errors or bad payloads.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Throttled { .. } | SourceError::Transport(_) => true,
            SourceError::Status(s) => *s >= 500 || *s == 408,
            SourceError::Decode(_) | SourceError::InvalidUrl(_) => false,
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Throttled {
                retry_after: Some(after),
            } => write!(
                f,
                "source throttled the request (retry after {:.1} s)",
                after.as_secs_f64()
            ),
            SourceError::Throttled { retry_after: None } => {
                write!(f, "source throttled the request")
            }
            SourceError::Status(s) => write!(f, "source answered HTTP {s}"),
            SourceError::Transport(e) => write!(f, "source unreachable: {e}"),
            SourceError::Decode(e) => write!(f, "source sent an invalid page: {e}"),
            SourceError::InvalidUrl(e) => write!(f, "invalid source URL: {e}"),
        }
    }
}

impl std::error::Error for SourceError {}

/// `GET {base}/records?page=N`, answering the decoded [`Page`]. Clones share one
/// connection pool.
#[derive(Clone)]
pub struct SourceClient {
    http: Client<HttpConnector, Empty<Bytes>>,
    base: String,
}

impl fmt::Debug for SourceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl SourceClient {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Self {
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    async fn fetch(
        http: Client<HttpConnector, Empty<Bytes>>,
        url: String,
    ) -> Result<Page, SourceError> {
        let uri = parse_base_url(&url).map_err(|e| SourceError::InvalidUrl(e.to_string()))?;
        let response = http
            .get(uri)
            .await
            .map_err(|e| SourceError::Transport(e.to_string()))?;
        let status = response.status();
        if status == http::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            return Err(SourceError::Throttled { retry_after });
        }
        if !status.is_success() {
            return Err(SourceError::Status(status.as_u16()));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| SourceError::Transport(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| SourceError::Decode(e.to_string()))
    }
}

/// Check a source base URL: `http://host[:port][/path]`. `https` is refused (this example
/// client speaks plain HTTP, for a local or tunnelled API), as is anything without a host.
pub fn parse_base_url(url: &str) -> Result<http::Uri, ConfigError> {
    let refuse = |why: &str| {
        ConfigError::new(
            "etl",
            "source_url",
            super::redact::redact(url),
            format!("an http://host:port URL ({why})"),
        )
    };
    let uri: http::Uri = url.trim().parse().map_err(|e| refuse(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(refuse("https is not supported by this example client")),
        _ => return Err(refuse("the scheme must be http")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(refuse("no host"));
    }
    Ok(uri)
}

/// `Retry-After` in seconds (RFC 9110's delay-seconds; fractions accepted). HTTP dates
/// are not supported: the hint is then ignored and the backoff decides.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

impl Service<u64> for SourceClient {
    type Response = Page;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Page, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pool opens connections on demand.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, page: u64) -> Self::Future {
        let url = format!("{}/records?page={page}", self.base);
        let http = self.http.clone();
        Box::pin(async move { Self::fetch(http, url).await.map_err(BoxError::from) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parses_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 0.25 "),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn only_transient_errors_are_worth_retrying() {
        assert!(SourceError::Status(503).is_transient());
        assert!(SourceError::Throttled { retry_after: None }.is_transient());
        assert!(!SourceError::Status(404).is_transient());
        assert!(!SourceError::Decode("x".into()).is_transient());
        assert!(!SourceError::InvalidUrl("x".into()).is_transient());
    }

    #[test]
    fn only_plain_http_urls_with_a_host_are_sources() {
        assert!(parse_base_url("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "htp:/x",
            "127.0.0.1:8080",
            "https://h",
            "http://",
            "not a url",
            "",
        ] {
            let err = parse_base_url(bad).expect_err(bad);
            assert_eq!(err.field(), "source_url");
        }
    }

    #[tokio::test]
    async fn a_malformed_url_fails_at_once_and_for_good() {
        use tower::ServiceExt;
        let err = SourceClient::new("http://[::1")
            .oneshot(0)
            .await
            .unwrap_err();
        let source = err.downcast_ref::<SourceError>().unwrap();
        assert!(matches!(source, SourceError::InvalidUrl(_)), "{source}");
        assert!(!source.is_transient());
    }
}
