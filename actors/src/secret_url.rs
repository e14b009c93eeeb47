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
    #[must_use]
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "****".to_owned();
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                let masked = if userinfo.contains(':') {
                    format!("{user}:****")
                } else {
                    user.to_owned()
                };
                format!("{scheme}://{masked}@{host}{tail}")
            }
            None => self.0.clone(),
        }
    }
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
    }
}
