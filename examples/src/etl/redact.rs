//! Credentials out of everything the pipeline prints: logs, errors and the summary.
//!
//! A sink is written either as a URL (`postgres://user:secret@host/db?password=secret`)
//! or as a libpq `key=value` string (`host=db user=etl password='secret'`). [`redact`]
//! replaces every password in both forms by `***` and leaves the rest readable, so an
//! operator still sees which database a line is about.

/// `text` with the password of a URL's user info, a URL's `password=` query parameter and
/// a `key=value` string's `password` replaced by `***`.
///
/// ```
/// use palisade_examples::etl::redact::redact;
///
/// assert_eq!(redact("postgres://etl:s3cret@db:5432/etl"), "postgres://etl:***@db:5432/etl");
/// assert_eq!(redact("host=db password='s 3' user=etl"), "host=db password=*** user=etl");
/// assert_eq!(redact("data/etl.sqlite"), "data/etl.sqlite");
/// ```
pub fn redact(text: &str) -> String {
    if let Some((scheme, rest)) = text.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return format!("{scheme}://{}", redact_url_rest(rest));
    }
    if looks_like_key_value(text) {
        return redact_key_value(text);
    }
    text.to_owned()
}

/// Whether `text` is a libpq `key=value` connection string (its first word is a libpq
/// keyword followed by `=`).
pub fn looks_like_key_value(text: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "sslmode",
        "application_name",
        "connect_timeout",
        "options",
        "target_session_attrs",
        "keepalives",
        "channel_binding",
        "load_balance_hosts",
    ];
    let first = text.split_whitespace().next().unwrap_or("");
    first
        .split_once('=')
        .is_some_and(|(key, _)| KEYWORDS.contains(&key.trim()))
}

/// The part of a URL after `scheme://`: user info password, then query `password=`.
fn redact_url_rest(rest: &str) -> String {
    // The authority ends at the first `/`, `?` or `#`; its user info at the last `@`.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{authority}{tail}")
}

/// A libpq `key=value` string with its `password` value (quoted or not) replaced.
fn redact_key_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = find_password_key(rest) {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        // `after` starts with `password`, optional spaces, `=`, optional spaces.
        let eq = after.find('=').unwrap_or(after.len());
        out.push_str("password=***");
        let value = after[(eq + 1).min(after.len())..].trim_start();
        rest = skip_value(value);
    }
    out.push_str(rest);
    out
}

/// Where a `password` key (a whole word followed by `=`) starts in `text`.
fn find_password_key(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find("password") {
        let at = from + i;
        let word_start = at == 0 || text[..at].ends_with(char::is_whitespace);
        let after = text[at + "password".len()..].trim_start();
        if word_start && after.starts_with('=') {
            return Some(at);
        }
        from = at + "password".len();
    }
    None
}

/// `value` without its leading libpq value: a single-quoted string (with `\'` and `\\`
/// escapes) or a run of non-space characters.
fn skip_value(value: &str) -> &str {
    let mut chars = value.char_indices();
    if value.starts_with('\'') {
        chars.next();
        let mut escaped = false;
        for (i, c) in chars {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => return &value[i + 1..],
                _ => {}
            }
        }
        return "";
    }
    let end = value.find(char::is_whitespace).unwrap_or(value.len());
    &value[end..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_redacted() {
        let cases = [
            (
                "postgres://etl:s3cret@127.0.0.1:5432/db",
                "postgres://etl:***@127.0.0.1:5432/db",
            ),
            ("postgres://etl@127.0.0.1/db", "postgres://etl@127.0.0.1/db"),
            (
                "postgresql://u:p%40ss@h/db?sslmode=disable&password=s3cret",
                "postgresql://u:***@h/db?sslmode=disable&password=***",
            ),
            ("postgres://u:a@b@h/db", "postgres://u:***@h/db"),
            ("data/etl.sqlite", "data/etl.sqlite"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
    }

    #[test]
    fn key_value_passwords_are_redacted() {
        let cases = [
            (
                "host=127.0.0.1 user=etl password=s3cret dbname=db",
                "host=127.0.0.1 user=etl password=*** dbname=db",
            ),
            (
                "host=h password = 's3 \\' cret' port=5432",
                "host=h password=*** port=5432",
            ),
            ("password=s3cret", "password=***"),
            ("host=h password='unterminated", "host=h password=***"),
            ("host=h user=etl", "host=h user=etl"),
        ];
        for (input, want) in cases {
            let got = redact(input);
            assert_eq!(got, want, "{input}");
            assert!(!got.contains("s3"), "{got}");
        }
        assert!(looks_like_key_value("host=h dbname=x"));
        assert!(!looks_like_key_value("data/a=b.sqlite"));
    }

    proptest::proptest! {
        /// Whatever the password, in whichever form and position, it is not in the output
        /// (in a URL, `&`, `#`, `/`, `?` and `@` are percent-encoded, as URLs require).
        #[test]
        fn no_password_survives(
            password in "[A-Z0-9!$%*+,;=~^-]{4,24}",
            user in "[a-z]{1,8}",
            port in 1u16..,
            form in 0usize..5,
        ) {
            let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
            let text = match form {
                0 => format!("postgres://{user}:{password}@127.0.0.1:{port}/db"),
                1 => format!("postgresql://{user}@h:{port}/db?sslmode=disable&password={password}"),
                2 => format!("host=h port={port} user={user} password={password} dbname=db"),
                3 => format!("password='{quoted} x' host=h user={user}"),
                _ => format!("user={user}   password =  {password}"),
            };
            let redacted = redact(&text);
            proptest::prop_assert!(!redacted.contains(&password), "{} -> {}", text, redacted);
            proptest::prop_assert!(redacted.contains(&user));
        }
    }
}
