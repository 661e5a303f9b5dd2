//! An upstream's advertised quota, read from the `RateLimit` headers, for a rate limit to
//! follow.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Response;
use http::header::{HeaderMap, HeaderName};
use palisade_core::throttle::Quota;

use crate::headers::{RATELIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET};

/// `X-RateLimit-Remaining`, the pre-standard field many APIs still send.
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: delta-seconds, or (GitHub, Twitter style) the Unix time of the reset.
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// A reset value above this many seconds is read as a Unix time (seconds since 1970), not a
/// delay: no quota window is longer than 30 years, and every Unix time since 2001 is
/// larger.
const UNIX_TIME_ABOVE: u64 = 1_000_000_000;

/// The quota a response advertises (calls remaining until the reset), for
/// `palisade_rate_limit::RateLimitHandle::follow` and its `follow_quota` layer: the rate
/// limit then spreads the `remaining` calls over `reset` for every caller, up to its
/// configured rate.
///
/// | headers | quota |
/// |---|---|
/// | `RateLimit: "p";r=40;t=20` (current draft; several policies: the slowest, `r / t`) | 40 in 20 s |
/// | `RateLimit: limit=100, remaining=40, reset=20` (earlier drafts) | 40 in 20 s |
/// | `RateLimit-Remaining: 40` + `RateLimit-Reset: 20` | 40 in 20 s |
/// | `X-RateLimit-Remaining: 40` + `X-RateLimit-Reset: 20` (or a Unix time) | 40 until then |
/// | none of these, an error, a malformed value | none |
///
/// An error (a palisade rejection or a transport error) carries no quota.
///
/// ```
/// use palisade_core::BoxError;
/// use palisade_core::throttle::Quota;
/// use palisade_http::quota_hint;
/// use std::time::Duration;
///
/// let res: Result<http::Response<()>, BoxError> = Ok(http::Response::builder()
///     .header("ratelimit-remaining", "40")
///     .header("ratelimit-reset", "20")
///     .body(())
///     .unwrap());
/// assert_eq!(quota_hint(&res), Some(Quota::new(40, Duration::from_secs(20))));
/// ```
pub fn quota_hint<B, E>(result: &Result<Response<B>, E>) -> Option<Quota> {
    rate_limit_quota(result.as_ref().ok()?.headers(), SystemTime::now())
}

/// The quota advertised in `headers` (see [`quota_hint`]); `now` dates an
/// `X-RateLimit-Reset` given as a Unix time.
///
/// ```
/// use http::HeaderMap;
/// use palisade_core::throttle::Quota;
/// use palisade_http::headers::rate_limit_quota;
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-remaining", "5".parse().unwrap());
/// headers.insert("x-ratelimit-reset", "1700000030".parse().unwrap());
/// assert_eq!(rate_limit_quota(&headers, now), Some(Quota::new(5, Duration::from_secs(30))));
/// ```
pub fn rate_limit_quota(headers: &HeaderMap, now: SystemTime) -> Option<Quota> {
    let mut best: Option<Quota> = None;
    for value in headers.get_all(&RATELIMIT) {
        let Ok(text) = value.to_str() else { continue };
        for quota in parse_structured(text) {
            best = Some(best.map_or(quota, |b| slowest(b, quota)));
        }
    }
    if best.is_some() {
        return best;
    }
    for (remaining, reset) in [
        (&RATELIMIT_REMAINING, &RATELIMIT_RESET),
        (&X_RATELIMIT_REMAINING, &X_RATELIMIT_RESET),
    ] {
        if let (Some(r), Some(t)) = (header_u64(headers, remaining), header_u64(headers, reset)) {
            return Some(Quota::new(r, reset_delay(t, now)));
        }
    }
    None
}

/// A reset value as a delay: delta-seconds, or a Unix time (large values).
fn reset_delay(value: u64, now: SystemTime) -> Duration {
    if value > UNIX_TIME_ABOVE {
        let at = UNIX_EPOCH + Duration::from_secs(value);
        at.duration_since(now).unwrap_or(Duration::ZERO)
    } else {
        Duration::from_secs(value)
    }
}

/// The slower of two quotas (`remaining / reset`), compared exactly.
fn slowest(a: Quota, b: Quota) -> Quota {
    let ra = u128::from(a.remaining) * b.reset.as_nanos();
    let rb = u128::from(b.remaining) * a.reset.as_nanos();
    if rb < ra { b } else { a }
}

/// Every quota in a `RateLimit` value: the current draft's `"p";r=N;t=S` items, or the
/// earlier drafts' `remaining=N, reset=S` dictionary.
fn parse_structured(text: &str) -> Vec<Quota> {
    let mut found = Vec::new();
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
        let (mut r, mut t) = (None, None);
        for param in params {
            match param.split_once('=') {
                Some(("r", v)) => r = v.trim().parse::<u64>().ok(),
                Some(("t", v)) => t = v.trim().parse::<u64>().ok(),
                _ => {}
            }
        }
        if let (Some(r), Some(t)) = (r, t) {
            found.push(Quota::new(r, Duration::from_secs(t)));
        }
    }
    if let (Some(r), Some(t)) = (remaining, reset) {
        found.push(Quota::new(r, Duration::from_secs(t)));
    }
    found
}

fn header_u64(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::{BoxError, Name, RateLimited};

    fn response(headers: &[(&str, &str)]) -> Result<Response<()>, BoxError> {
        let mut b = Response::builder().status(200);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Ok(b.body(()).expect("response"))
    }

    fn q(r: u64, t: u64) -> Option<Quota> {
        Some(Quota::new(r, Duration::from_secs(t)))
    }

    #[test]
    fn every_header_form() {
        assert_eq!(
            quota_hint(&response(&[("ratelimit", r#""a";r=40;t=20"#)])),
            q(40, 20)
        );
        // Two policies: the slower one (5 in 10 s is slower than 40 in 20 s).
        assert_eq!(
            quota_hint(&response(&[(
                "ratelimit",
                r#""a";r=40;t=20, "b";r=5;t=10"#
            )])),
            q(5, 10)
        );
        assert_eq!(
            quota_hint(&response(&[(
                "ratelimit",
                "limit=100, remaining=7, reset=3"
            )])),
            q(7, 3)
        );
        assert_eq!(
            quota_hint(&response(&[
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "9")
            ])),
            q(0, 9)
        );
        assert_eq!(
            quota_hint(&response(&[
                ("x-ratelimit-remaining", "12"),
                ("x-ratelimit-reset", "60")
            ])),
            q(12, 60)
        );
    }

    #[test]
    fn unix_time_resets_and_the_past() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", "3".parse().unwrap());
        h.insert("x-ratelimit-reset", "1699999990".parse().unwrap());
        assert_eq!(
            rate_limit_quota(&h, now),
            Some(Quota::new(3, Duration::ZERO))
        );
    }

    #[test]
    fn no_quota_without_both_fields_or_from_errors() {
        assert_eq!(quota_hint(&response(&[])), None);
        assert_eq!(quota_hint(&response(&[("ratelimit-remaining", "4")])), None);
        assert_eq!(
            quota_hint(&response(&[
                ("ratelimit-remaining", "lots"),
                ("ratelimit-reset", "4")
            ])),
            None
        );
        assert_eq!(quota_hint(&response(&[("ratelimit", "garbage;;=")])), None);
        let local: Result<Response<()>, BoxError> = Err(Box::new(RateLimited::new(
            Name::from_static("mine"),
            Duration::from_secs(1),
        )));
        assert_eq!(quota_hint(&local), None);
    }
}
