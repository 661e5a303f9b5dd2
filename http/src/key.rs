//! Keys for keyed rate limits and keyed circuit breakers: on a server, the client's IP
//! address (from the connection, or from trusted `X-Forwarded-For` / `Forwarded` headers)
//! or a header's value (API key, tenant); on a client, the upstream host.
//!
//! The keyed layers take a key function `Fn(&Req) -> K`; each extractor here gives one with
//! `key_fn()`, for `http::Request<B>` with the body type `B` inferred from the service the
//! layer ends up on (or named, as here, where there is no service):
//!
//! ```
//! use palisade_http::key::{ClientIp, HeaderKey};
//! use palisade_rate_limit::RateLimitLayer;
//! use std::time::Duration;
//!
//! // 100 requests per second per client IP, behind one load balancer.
//! let per_ip = RateLimitLayer::builder(100, Duration::from_secs(1))
//!     .build()
//!     .unwrap()
//!     .key_by(ClientIp::x_forwarded_for(1).key_fn::<()>());
//! // 10 per second per API key.
//! let per_key = RateLimitLayer::builder(10, Duration::from_secs(1))
//!     .build()
//!     .unwrap()
//!     .key_by(HeaderKey::new(http::HeaderName::from_static("x-api-key")).key_fn::<()>());
//! # let _ = (per_ip, per_key);
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{FORWARDED, HOST, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Extensions, Request};

/// The header `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

type PeerFn = Arc<dyn Fn(&Extensions) -> Option<SocketAddr> + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Peer,
    XForwardedFor,
    Forwarded,
}

/// The client's IP address, for keying limits and breakers per client.
///
/// - [`peer`](Self::peer): the address of the connection. The server must put it in the
///   request's extensions: as a plain [`SocketAddr`] (what a hyper server loop inserts
///   itself), or, with axum's `into_make_service_with_connect_info::<SocketAddr>()`, as
///   axum's `ConnectInfo<SocketAddr>`, read with
///   `.peer_addr_from(|c: &ConnectInfo<SocketAddr>| c.0)`.
/// - [`x_forwarded_for`](Self::x_forwarded_for) and [`forwarded`](Self::forwarded)
///   (RFC 7239): behind `trusted_proxies` reverse proxies that each append the address they
///   saw, the client is the `trusted_proxies`-th address from the right. Addresses further
///   left were written by the client and are never trusted. A request whose header has
///   fewer addresses than that (it did not come through all the proxies) is keyed by its
///   peer address.
///
/// The key is `Option<IpAddr>`: `None` when no address is known, so such requests share
/// one key.
///
/// ```
/// use palisade_http::key::ClientIp;
/// use std::net::{IpAddr, SocketAddr};
///
/// let req = http::Request::builder()
///     .header("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.2")
///     .extension(SocketAddr::from(([10, 0, 0, 1], 443)))
///     .body(())
///     .unwrap();
/// let ip = |s: &str| s.parse::<IpAddr>().ok();
/// // Two proxies of ours: the load balancer (10.0.0.2 appended by the inner one) and the
/// // edge, which saw the client at 203.0.113.7; 6.6.6.6 is whatever the client claimed.
/// assert_eq!(ClientIp::x_forwarded_for(2).ip(&req), ip("203.0.113.7"));
/// assert_eq!(ClientIp::x_forwarded_for(1).ip(&req), ip("10.0.0.2"));
/// assert_eq!(ClientIp::peer().ip(&req), ip("10.0.0.1"));
/// ```
#[derive(Clone)]
pub struct ClientIp {
    source: Source,
    trusted_proxies: usize,
    peer: PeerFn,
}

impl ClientIp {
    /// The connection's peer address ([`SocketAddr`] in the request's extensions, or what
    /// [`peer_addr_from`](Self::peer_addr_from) reads).
    pub fn peer() -> Self {
        Self {
            source: Source::Peer,
            trusted_proxies: 0,
            peer: Arc::new(|ext: &Extensions| ext.get::<SocketAddr>().copied()),
        }
    }

    /// The address `trusted_proxies` from the right in `X-Forwarded-For` (0: the peer).
    pub fn x_forwarded_for(trusted_proxies: usize) -> Self {
        Self {
            source: Source::XForwardedFor,
            trusted_proxies,
            ..Self::peer()
        }
    }

    /// The `for=` address `trusted_proxies` from the right in `Forwarded` (RFC 7239; 0:
    /// the peer).
    pub fn forwarded(trusted_proxies: usize) -> Self {
        Self {
            source: Source::Forwarded,
            trusted_proxies,
            ..Self::peer()
        }
    }

    /// Read the peer address from an extension of type `T` (e.g. axum's
    /// `ConnectInfo<SocketAddr>`) instead of a plain `SocketAddr`.
    #[must_use]
    pub fn peer_addr_from<T, F>(mut self, read: F) -> Self
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> SocketAddr + Send + Sync + 'static,
    {
        self.peer = Arc::new(move |ext: &Extensions| ext.get::<T>().map(&read));
        self
    }

    /// The client's address, if known.
    pub fn ip<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = || (self.peer)(req.extensions()).map(|a| a.ip());
        if self.trusted_proxies == 0 {
            return peer();
        }
        let (name, parse): (&HeaderName, fn(&str) -> Option<IpAddr>) = match self.source {
            Source::Peer => return peer(),
            Source::XForwardedFor => (&X_FORWARDED_FOR, parse_node),
            Source::Forwarded => (&FORWARDED, forwarded_node),
        };
        let headers = req.headers();
        match nth_from_right(|| list_items(headers, name), self.trusted_proxies) {
            Some(hop) => parse(hop),
            None => peer(),
        }
    }

    /// The key function for a keyed layer, over `http::Request<B>` (the body type is
    /// usually inferred from the service the layer ends up on).
    pub fn key_fn<B>(
        self,
    ) -> impl Fn(&Request<B>) -> Option<IpAddr> + Clone + Send + Sync + 'static {
        move |req: &Request<B>| self.ip(req)
    }
}

impl fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIp")
            .field("source", &self.source)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

/// The `n`-th item from the right (1-based), or `None` when the list is shorter. Two passes
/// over the header instead of a `Vec` per request; only the chosen item is parsed.
fn nth_from_right<'a, I: Iterator<Item = &'a str>>(
    items: impl Fn() -> I,
    n: usize,
) -> Option<&'a str> {
    let index = items().count().checked_sub(n)?;
    items().nth(index)
}

/// The `for=` address of one `Forwarded` element (`None` without one, or for an obfuscated
/// or `unknown` node).
fn forwarded_node(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value.trim().trim_matches('"')))
            .flatten()
    })
}

/// The items of a comma-separated list header, left to right, over all its lines.
fn list_items<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

// ===== HeaderKey =====

/// A request header's value as the key (an API key, a tenant id); `None` when absent.
///
/// The breaker of a keyed circuit breaker is named after its key's `Debug`; for secrets,
/// [`sensitive`](Self::sensitive) makes that print `Sensitive` instead.
///
/// ```
/// use http::HeaderName;
/// use palisade_http::key::HeaderKey;
///
/// let tenant = HeaderKey::new(HeaderName::from_static("x-tenant"));
/// let req = http::Request::builder().header("x-tenant", "acme").body(()).unwrap();
/// assert_eq!(tenant.key(&req).unwrap(), "acme");
/// ```
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
    sensitive: bool,
}

impl HeaderKey {
    /// Key requests by the value of `name`.
    pub fn new(name: HeaderName) -> Self {
        Self {
            name,
            sensitive: false,
        }
    }

    /// Mark the keys sensitive: their `Debug` (in breaker names, logs) hides the value.
    #[must_use]
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    /// The key of `req`.
    pub fn key<B>(&self, req: &Request<B>) -> Option<HeaderValue> {
        let mut value = req.headers().get(&self.name)?.clone();
        if self.sensitive {
            value.set_sensitive(true);
        }
        Some(value)
    }

    /// The key function for a keyed layer, over `http::Request<B>` (the body type is
    /// usually inferred).
    pub fn key_fn<B>(
        self,
    ) -> impl Fn(&Request<B>) -> Option<HeaderValue> + Clone + Send + Sync + 'static {
        move |req: &Request<B>| self.key(req)
    }
}

// ===== HostKey =====

/// The host a request goes to, for a client's keyed breaker (one breaker per upstream):
/// the URI's authority (`host:port`), else the `Host` header; `None` when neither is set.
/// Authorities compare without regard to case.
///
/// ```
/// use palisade_http::key::HostKey;
///
/// let req = http::Request::get("http://Api.Example.com:8080/v1").body(()).unwrap();
/// assert_eq!(HostKey.key(&req).unwrap(), "api.example.com:8080");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct HostKey;

impl HostKey {
    /// The key of `req`.
    pub fn key<B>(&self, req: &Request<B>) -> Option<Authority> {
        if let Some(authority) = req.uri().authority() {
            return Some(authority.clone());
        }
        let host = req.headers().get(HOST)?.to_str().ok()?;
        host.parse().ok()
    }

    /// The key function for a keyed layer, over `http::Request<B>`.
    pub fn key_fn<B>(
        self,
    ) -> impl Fn(&Request<B>) -> Option<Authority> + Clone + Send + Sync + 'static {
        move |req: &Request<B>| self.key(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    fn with_peer(builder: http::request::Builder) -> Request<()> {
        builder
            .extension(SocketAddr::from(([10, 0, 0, 1], 1234)))
            .body(())
            .unwrap()
    }

    #[test]
    fn forwarded_elements() {
        let req = with_peer(Request::builder().header(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8::17]:4711";proto=https, by=10.0.0.9;For=192.0.2.60:80"#,
        ));
        assert_eq!(ClientIp::forwarded(1).ip(&req), ip("192.0.2.60"));
        assert_eq!(ClientIp::forwarded(2).ip(&req), ip("2001:db8::17"));
        assert_eq!(ClientIp::forwarded(3).ip(&req), ip("6.6.6.6"));
        // Fewer elements than proxies: the request skipped one; the peer is what we know.
        assert_eq!(ClientIp::forwarded(4).ip(&req), ip("10.0.0.1"));

        let hidden = with_peer(Request::builder().header("forwarded", "for=_gazonk, for=unknown"));
        assert_eq!(ClientIp::forwarded(1).ip(&hidden), None);
    }

    #[test]
    fn x_forwarded_for_over_several_lines() {
        let req = with_peer(
            Request::builder()
                .header("x-forwarded-for", "1.1.1.1, 2.2.2.2")
                .header("x-forwarded-for", "[2001:db8::1]:80")
                .header("x-forwarded-for", "3.3.3.3:8080"),
        );
        assert_eq!(ClientIp::x_forwarded_for(1).ip(&req), ip("3.3.3.3"));
        assert_eq!(ClientIp::x_forwarded_for(2).ip(&req), ip("2001:db8::1"));
        assert_eq!(ClientIp::x_forwarded_for(0).ip(&req), ip("10.0.0.1"));
        let none = Request::builder().body(()).unwrap();
        assert_eq!(ClientIp::x_forwarded_for(1).ip(&none), None);
        assert_eq!(ClientIp::peer().ip(&none), None);
    }

    #[test]
    fn header_keys_can_hide_their_value() {
        let req = Request::builder()
            .header("x-api-key", "s3cret")
            .body(())
            .unwrap();
        let key = HeaderKey::new(HeaderName::from_static("x-api-key")).sensitive();
        let value = key.key(&req).unwrap();
        assert_eq!(value, "s3cret");
        assert!(!format!("{value:?}").contains("s3cret"));
        let plain = HeaderKey::new(HeaderName::from_static("x-api-key")).key_fn();
        assert_eq!(plain(&req).unwrap(), "s3cret");
    }

    proptest! {
        /// Whatever the client writes on the left, the key is the address our
        /// `trusted` proxies wrote, `trusted` from the right.
        #[test]
        fn spoofed_prefixes_never_change_the_key(
            spoofed in proptest::collection::vec("[ -~]{0,20}", 0..4),
            proxies in proptest::collection::vec(any::<[u8; 4]>(), 1..5),
            trusted in 1usize..5,
        ) {
            let mut list: Vec<String> = spoofed
                .into_iter()
                .map(|s| s.replace(',', ""))
                .collect();
            list.extend(proxies.iter().map(|o| IpAddr::from(*o).to_string()));
            let Ok(value) = HeaderValue::from_str(&list.join(", ")) else { return Ok(()); };
            let req = with_peer(Request::builder().header("x-forwarded-for", value));
            let got = ClientIp::x_forwarded_for(trusted).ip(&req);
            if trusted <= proxies.len() {
                prop_assert_eq!(got, Some(IpAddr::from(proxies[proxies.len() - trusted])));
            }
        }
    }
}
