//! A request's [`Priority`] for load shedding, from a header or its route.

use std::sync::Arc;

use http::Request;
use http::header::HeaderName;
use palisade_core::Priority;

/// Tells a request's [`Priority`] from a header, its path, or a fallback, in that order.
///
/// - **Header** (if set with [`header`](Self::header)): `critical`, `default` or
///   `sheddable` (also `high`, `normal`, `low`; any case). The header is trusted: set or
///   strip it at your edge, or leave it unset so clients cannot raise their own priority.
/// - **Route**: the longest matching path prefix given with [`route`](Self::route),
///   matched on whole segments (`/checkout` matches `/checkout` and `/checkout/pay`, not
///   `/checkouts`).
/// - **Fallback**: [`Priority::Default`] unless set with [`fallback`](Self::fallback).
///
/// Give [`priority_fn`](Self::priority_fn) to palisade-degrade's `ShedLayer::prioritize`:
///
/// ```
/// use http::HeaderName;
/// use palisade_core::Priority;
/// use palisade_http::PriorityFrom;
///
/// let priority = PriorityFrom::new()
///     .header(HeaderName::from_static("x-priority"))
///     .route("/checkout", Priority::Critical)
///     .route("/reports", Priority::Sheddable);
/// let req = |path: &str| http::Request::get(path).body(()).unwrap();
/// assert_eq!(priority.priority(&req("/checkout/pay")), Priority::Critical);
/// assert_eq!(priority.priority(&req("/reports?year=2024")), Priority::Sheddable);
/// assert_eq!(priority.priority(&req("/checkouts")), Priority::Default);
///
/// let batch = http::Request::get("/checkout").header("x-priority", "low").body(()).unwrap();
/// assert_eq!(priority.priority(&batch), Priority::Sheddable);
/// ```
#[derive(Debug, Clone, Default)]
pub struct PriorityFrom {
    header: Option<HeaderName>,
    // Longest prefix first.
    routes: Arc<Vec<(String, Priority)>>,
    fallback: Priority,
}

impl PriorityFrom {
    /// Every request [`Priority::Default`] until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read the priority from header `name` first.
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Self {
        self.header = Some(name);
        self
    }

    /// Requests whose path is `prefix` or below it have `priority`.
    #[must_use]
    pub fn route(mut self, prefix: impl Into<String>, priority: Priority) -> Self {
        let mut prefix = prefix.into();
        while prefix.len() > 1 && prefix.ends_with('/') {
            prefix.pop();
        }
        let routes = Arc::make_mut(&mut self.routes);
        routes.push((prefix, priority));
        routes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        self
    }

    /// The priority of requests no header or route decides (default [`Priority::Default`]).
    #[must_use]
    pub fn fallback(mut self, priority: Priority) -> Self {
        self.fallback = priority;
        self
    }

    /// The priority of `req`.
    pub fn priority<B>(&self, req: &Request<B>) -> Priority {
        let from_header = self.header.as_ref().and_then(|name| {
            let value = req.headers().get(name)?.to_str().ok()?;
            parse_priority(value)
        });
        if let Some(priority) = from_header {
            return priority;
        }
        let path = req.uri().path();
        self.routes
            .iter()
            .find(|(prefix, _)| under(path, prefix))
            .map_or(self.fallback, |(_, priority)| *priority)
    }

    /// The function for a load shedder's `prioritize`, over `http::Request<B>`.
    pub fn priority_fn<B>(
        self,
    ) -> impl Fn(&Request<B>) -> Priority + Clone + Send + Sync + 'static {
        move |req: &Request<B>| self.priority(req)
    }
}

/// `true` when `path` is `prefix` or below it, on segment boundaries.
fn under(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A priority's name: `critical`/`high`, `default`/`normal`, `sheddable`/`low`, any case.
///
/// ```
/// use palisade_core::Priority;
/// use palisade_http::priority::parse_priority;
///
/// assert_eq!(parse_priority("Critical"), Some(Priority::Critical));
/// assert_eq!(parse_priority("urgent"), None);
/// ```
pub fn parse_priority(value: &str) -> Option<Priority> {
    let value = value.trim();
    let is = |name: &str| value.eq_ignore_ascii_case(name);
    if is("critical") || is("high") {
        Some(Priority::Critical)
    } else if is("default") || is("normal") {
        Some(Priority::Default)
    } else if is("sheddable") || is("low") {
        Some(Priority::Sheddable)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_longest_prefix() {
        let p = PriorityFrom::new()
            .route("/api/", Priority::Sheddable)
            .route("/api/pay", Priority::Critical)
            .fallback(Priority::Critical);
        let of = |path: &str| p.priority(&Request::get(path).body(()).unwrap());
        assert_eq!(of("/api"), Priority::Sheddable);
        assert_eq!(of("/api/pay/now"), Priority::Critical);
        assert_eq!(of("/api/payments"), Priority::Sheddable);
        assert_eq!(of("/other"), Priority::Critical);
        let all = PriorityFrom::new().route("/", Priority::Sheddable);
        assert_eq!(
            all.priority(&Request::get("/x").body(()).unwrap()),
            Priority::Sheddable
        );
    }

    #[test]
    fn bad_header_values_fall_through() {
        let p = PriorityFrom::new()
            .header(HeaderName::from_static("x-priority"))
            .route("/a", Priority::Sheddable);
        let req = Request::get("/a")
            .header("x-priority", "urgent")
            .body(())
            .unwrap();
        assert_eq!(p.priority(&req), Priority::Sheddable);
    }
}
