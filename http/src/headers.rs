//! Reading and writing the headers that carry "when to come back": `Retry-After` (RFC 9110
//! §10.2.3) and the IETF `RateLimit` / `RateLimit-Policy` fields
//! (draft-ietf-httpapi-ratelimit-headers).
//!
//! Parsers never panic and return `None` for anything they do not understand: a malformed
//! hint is no hint.

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

pub use crate::quota::rate_limit_quota;

/// The `RateLimit` response field: the state of the quota the response counted against.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// The `RateLimit-Policy` response field: the quota policies the server applies.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit-Remaining`, from the earlier drafts (three separate fields).
pub static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset` (delta-seconds), from the earlier drafts.
pub static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

// ===== Retry-After =====

/// Parse a `Retry-After` value, in either form: delta-seconds (`"120"`) or an HTTP-date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`, and the obsolete RFC 850 and asctime forms), the
/// latter relative to `now`. A date in the past means "now" (`Duration::ZERO`).
///
/// ```
/// use palisade_http::headers::parse_retry_after;
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(
///     parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now),
///     Some(Duration::from_secs(60)),
/// );
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit is still "a very long time".
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `Retry-After` of a response's headers, relative to the system clock.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// A `Retry-After` value for `delay`: whole seconds, rounded up so a client that honours it
/// never comes back early.
///
/// ```
/// use palisade_http::headers::retry_after_value;
/// use std::time::Duration;
///
/// assert_eq!(retry_after_value(Duration::from_millis(1200)), "2");
/// assert_eq!(retry_after_value(Duration::ZERO), "0");
/// ```
pub fn retry_after_value(delay: Duration) -> HeaderValue {
    HeaderValue::from(ceil_secs(delay))
}

/// `delay` in whole seconds, rounded up.
pub(crate) fn ceil_secs(delay: Duration) -> u64 {
    let secs = delay.as_secs();
    if delay.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    }
}

// ===== RateLimit =====

/// How long until the quota a response counted against has room again, read from the
/// `RateLimit` headers, when they say it is used up (remaining `0`).
///
/// Understands the current draft's structured field (`RateLimit: "default";r=0;t=30`, the
/// longest reset among exhausted policies wins), the combined form of the earlier drafts
/// (`RateLimit: limit=100, remaining=0, reset=30`) and their separate fields
/// (`RateLimit-Remaining: 0` with `RateLimit-Reset: 30`).
///
/// ```
/// use http::HeaderMap;
/// use palisade_http::headers::rate_limit_reset;
/// use std::time::Duration;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("ratelimit", r#""per-minute";r=0;t=42"#.parse().unwrap());
/// assert_eq!(rate_limit_reset(&headers), Some(Duration::from_secs(42)));
///
/// headers.insert("ratelimit", r#""per-minute";r=7;t=42"#.parse().unwrap());
/// assert_eq!(rate_limit_reset(&headers), None); // quota left: no reason to wait
/// ```
pub fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let mut wait: Option<u64> = None;
    for value in headers.get_all(&RATELIMIT) {
        let Ok(text) = value.to_str() else { continue };
        if let Some(t) = parse_rate_limit(text) {
            wait = Some(wait.map_or(t, |w| w.max(t)));
        }
    }
    if wait.is_none() {
        let remaining = header_u64(headers, &RATELIMIT_REMAINING);
        let reset = header_u64(headers, &RATELIMIT_RESET);
        if let (Some(0), Some(t)) = (remaining, reset) {
            wait = Some(t);
        }
    }
    wait.map(Duration::from_secs)
}

/// The reset (seconds) of a `RateLimit` value whose quota is exhausted, in either syntax.
fn parse_rate_limit(text: &str) -> Option<u64> {
    let mut exhausted: Option<u64> = None;
    // Earlier drafts: one dictionary, `limit=10, remaining=0, reset=5`.
    let (mut remaining, mut reset) = (None, None);
    for member in text.split(',') {
        let mut params = member.split(';').map(str::trim);
        let first = params.next().unwrap_or_default();
        if let Some((key, value)) = first.split_once('=') {
            match key.trim().to_ascii_lowercase().as_str() {
                "remaining" => remaining = value.trim().parse::<u64>().ok(),
                "reset" => reset = value.trim().parse::<u64>().ok(),
                _ => {}
            }
            continue;
        }
        // Current draft: a list of `"policy";r=<remaining>;t=<reset>` items.
        let (mut r, mut t) = (None, None);
        for param in params {
            match param.split_once('=') {
                Some(("r", v)) => r = v.trim().parse::<u64>().ok(),
                Some(("t", v)) => t = v.trim().parse::<u64>().ok(),
                _ => {}
            }
        }
        if let (Some(0), Some(t)) = (r, t) {
            exhausted = Some(exhausted.map_or(t, |e| e.max(t)));
        }
    }
    if let (Some(0), Some(t)) = (remaining, reset) {
        exhausted = Some(exhausted.map_or(t, |e| e.max(t)));
    }
    exhausted
}

fn header_u64(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// A quota as the server announces it in `RateLimit-Policy`: `quota` units per `window`.
///
/// ```
/// use palisade_http::headers::RateLimitPolicy;
/// use std::time::Duration;
///
/// let policy = RateLimitPolicy::new(100, Duration::from_secs(60));
/// assert_eq!(policy.header_value("api"), r#""api";q=100;w=60"#);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitPolicy {
    quota: u64,
    window: Duration,
}

impl RateLimitPolicy {
    /// `quota` units per `window` (the window is announced in whole seconds, rounded up).
    pub const fn new(quota: u64, window: Duration) -> Self {
        Self { quota, window }
    }

    /// The quota.
    pub const fn quota(&self) -> u64 {
        self.quota
    }

    /// The window.
    pub const fn window(&self) -> Duration {
        self.window
    }

    /// The `RateLimit-Policy` value for the policy called `name`.
    pub fn header_value(&self, name: &str) -> HeaderValue {
        let text = format!(
            "{};q={};w={}",
            sf_string(name),
            self.quota,
            ceil_secs(self.window)
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("\"default\""))
    }
}

/// The `RateLimit` value of an exhausted quota: the policy `name`, nothing remaining, room
/// again in `reset` (whole seconds, rounded up).
///
/// ```
/// use palisade_http::headers::rate_limit_value;
/// use std::time::Duration;
///
/// assert_eq!(rate_limit_value("api", Duration::from_millis(1500)), r#""api";r=0;t=2"#);
/// ```
pub fn rate_limit_value(name: &str, reset: Duration) -> HeaderValue {
    let text = format!("{};r=0;t={}", sf_string(name), ceil_secs(reset));
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("\"default\";r=0"))
}

/// `name` as a structured-field string: quoted, with `"` and `\` escaped and anything
/// outside printable ASCII replaced by `_`.
fn sf_string(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_445_412_480)
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after(" 3 ", now()),
            Some(Duration::from_secs(3))
        );
        assert_eq!(parse_retry_after("0", now()), Some(Duration::ZERO));
        // RFC 850 and asctime dates are accepted too (RFC 9110 §5.6.7).
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:10 2015", now()),
            Some(Duration::from_secs(10))
        );
        // In the past: come back now.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now()),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", "-1", "1.5", "Wed, 32 Oct 2015 07:28:00 GMT", "tomorrow"] {
            assert_eq!(parse_retry_after(bad, now()), None, "{bad:?}");
        }
    }

    #[test]
    fn rate_limit_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(rate_limit_reset(&h), None);
        h.insert(
            &RATELIMIT,
            "limit=10, remaining=0, reset=7".parse().unwrap(),
        );
        assert_eq!(rate_limit_reset(&h), Some(Duration::from_secs(7)));
        h.insert(
            &RATELIMIT,
            r#""a";r=0;t=3, "b";r=5;t=60, "c";r=0;t=9"#.parse().unwrap(),
        );
        assert_eq!(rate_limit_reset(&h), Some(Duration::from_secs(9)));
        h.remove(&RATELIMIT);
        h.insert(&RATELIMIT_REMAINING, "0".parse().unwrap());
        h.insert(&RATELIMIT_RESET, "12".parse().unwrap());
        assert_eq!(rate_limit_reset(&h), Some(Duration::from_secs(12)));
        h.insert(&RATELIMIT_REMAINING, "1".parse().unwrap());
        assert_eq!(rate_limit_reset(&h), None);
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            rate_limit_value("a\"b\\c\u{e9}", Duration::from_secs(1)),
            r#""a\"b\\c_";r=0;t=1"#
        );
    }

    proptest! {
        #[test]
        fn retry_after_parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_retry_after(&s, now());
            let _ = parse_rate_limit(&s);
        }

        #[test]
        fn delta_seconds_round_trip(secs in 0u64..=u64::MAX / 2, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            let value = retry_after_value(d);
            let parsed = parse_retry_after(value.to_str().unwrap(), now()).unwrap();
            // Never early, and at most one second late.
            prop_assert!(parsed >= d);
            prop_assert!(parsed - d < Duration::from_secs(1));
        }

        #[test]
        fn http_dates_round_trip(secs in 0u64..10_000_000) {
            let at = now() + Duration::from_secs(secs);
            let text = httpdate::fmt_http_date(at);
            prop_assert_eq!(parse_retry_after(&text, now()), Some(Duration::from_secs(secs)));
        }

        #[test]
        fn written_rate_limits_read_back(name in "[ -~]{0,20}", ms in 0u64..10_000_000) {
            let d = Duration::from_millis(ms);
            let mut h = HeaderMap::new();
            h.insert(&RATELIMIT, rate_limit_value(&name, d));
            let back = rate_limit_reset(&h);
            // The reader splits on `,`, `;` and `=` without unquoting first.
            if !name.contains([',', ';', '=']) {
                prop_assert_eq!(back, Some(Duration::from_secs(ceil_secs(d))));
            }
        }
    }
}
