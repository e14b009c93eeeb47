//! [`SecretUrl`]: a broker URL that keeps its password out of logs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A broker URL whose password never appears in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, password included: for connecting, never for printing.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The scheme (`memory`, `amqp`, `amqps`, `redis`, ...), lowercase.
    #[must_use]
    pub fn scheme(&self) -> String {
        self.0
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// The URL with the password replaced by `****`.
    ///
    /// Conservative on purpose: a password may hold any character, escaped or not (an
    /// unescaped `/`, `?`, `#` or `@` makes the URL ambiguous), so everything from the first
    /// `:` after the scheme to the last `@` is hidden, and so are the values of query
    /// parameters named like a password or a token. A URL without `://` is hidden whole.
    #[must_use]
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "****".to_owned();
        };
        let rest = match rest.rfind('@') {
            Some(at) => match rest[..at].find(':') {
                Some(colon) => format!("{}:****{}", &rest[..colon], &rest[at..]),
                None => rest.to_owned(),
            },
            None => rest.to_owned(),
        };
        format!("{scheme}://{}", redact_query(&rest))
    }
}

/// Hides the values of query parameters whose name says they are secret (`password`, `pass`,
/// `token`, `secret`, any case).
fn redact_query(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => format!("{key}=****"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", pairs.join("&"))
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "token", "secret"].iter().any(|s| key.contains(s))
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_password_is_hidden() {
        let url = SecretUrl::new("amqps://svc:s3cr3t@broker:5671/vh?heartbeat=10");
        assert_eq!(
            url.redacted(),
            "amqps://svc:****@broker:5671/vh?heartbeat=10"
        );
        assert_eq!(
            format!("{url:?}"),
            "\"amqps://svc:****@broker:5671/vh?heartbeat=10\""
        );
        assert_eq!(url.scheme(), "amqps");
        assert_eq!(
            SecretUrl::new("amqp://user@host/").redacted(),
            "amqp://user@host/"
        );
        assert_eq!(SecretUrl::new("no scheme").redacted(), "****");
        assert_eq!(
            SecretUrl::new("redis://:pw@h:6379/0").redacted(),
            "redis://:****@h:6379/0"
        );
        assert_eq!(
            SecretUrl::new("redis+unix:///run/redis.sock?db=1&pass=pw").redacted(),
            "redis+unix:///run/redis.sock?db=1&pass=****"
        );
    }

    #[test]
    fn unescaped_reserved_characters_hide_more_never_less() {
        for (url, shown) in [
            ("amqp://svc:S3cret/Pw@host/vh", "amqp://svc:****@host/vh"),
            ("amqp://svc:a?b#c@host/vh", "amqp://svc:****@host/vh"),
            ("amqp://svc:p@ss@host/vh", "amqp://svc:****@host/vh"),
            (
                "amqp://svc:pw@host/vh?connection_name=a@b",
                "amqp://svc:****@b",
            ),
        ] {
            assert_eq!(SecretUrl::new(url).redacted(), shown, "{url}");
        }
    }
}
