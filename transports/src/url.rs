//! The parts of a broker URL, read the same way for every transport: a password may hold any
//! character, so the URL is checked to be unambiguous before any part of it is read, and the
//! errors name the part, never its text.

use std::time::Duration;

use cqrs_actors::{Error, Result};

/// What to do about a URL whose password holds a reserved character.
pub(crate) const RESERVED_HINT: &str = "percent-encode `@`, `/`, `?`, `#` and `%` in the user and \
     password (`%40`, `%2F`, `%3F`, `%23`, `%25`) and `@` and `#` in the path and query";

/// A URL split into its parts, each still percent-encoded but the user and password.
pub(crate) struct UrlParts<'a> {
    /// The scheme, lowercase.
    pub scheme: String,
    /// The decoded user and password, if the URL has user information.
    pub userinfo: Option<(String, String)>,
    /// `host[:port]` (an IPv6 host in brackets).
    pub hostport: &'a str,
    /// The path without its leading `/`.
    pub path: &'a str,
    /// The query without its `?`.
    pub query: &'a str,
}

impl<'a> UrlParts<'a> {
    /// Splits `url`. The authority ends at the first `/` or `?`, and nothing after it may hold
    /// an `@` (nor a `#` anywhere), else part of the password would be taken for the host, the
    /// path or the query.
    pub(crate) fn split(url: &'a str, expected: &str) -> Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::config("url", format!("expected {expected}")))?;
        if rest.contains('#') {
            return Err(Error::config("url", RESERVED_HINT));
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if tail.contains('@') {
            return Err(Error::config("url", RESERVED_HINT));
        }
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let path = path.strip_prefix('/').unwrap_or(path);
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let userinfo = match userinfo {
            Some(u) => {
                let (name, pass) = u.split_once(':').unwrap_or((u, ""));
                Some((decode(name, "url user")?, decode(pass, "url password")?))
            }
            None => None,
        };
        Ok(Self {
            scheme: scheme.to_ascii_lowercase(),
            userinfo,
            hostport,
            path,
            query,
        })
    }

    /// Whether the scheme is the secure one of `plain`/`secure` (say `redis`/`rediss`); any
    /// other scheme is a configuration error, and so is the secure one when TLS is not
    /// compiled in (`tls_feature` names the feature that adds it).
    pub(crate) fn tls(
        &self,
        plain: &str,
        secure: &str,
        tls_compiled: bool,
        tls_feature: &str,
    ) -> Result<bool> {
        let tls = match self.scheme.as_str() {
            s if s == plain => false,
            s if s == secure => true,
            other => {
                return Err(Error::config(
                    "url",
                    format!("scheme {other:?} is not {plain} or {secure}"),
                ));
            }
        };
        if tls && !tls_compiled {
            return Err(Error::config(
                "url",
                format!(
                    "{secure}:// needs TLS: enable the `{tls_feature}` feature of cqrs-sync \
                     (or of cqrs-transports)"
                ),
            ));
        }
        Ok(tls)
    }

    /// The query's `key=value` pairs, values decoded.
    pub(crate) fn query_pairs(&self) -> impl Iterator<Item = Result<(&'a str, String)>> + 'a {
        self.query.split('&').filter(|p| !p.is_empty()).map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((key, decode(value, key)?))
        })
    }
}

/// Splits `host[:port]` (`[v6]:port` for IPv6); an empty host is `localhost`.
pub(crate) fn split_host_port(hostport: &str, default_port: u16) -> Result<(String, u16)> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| Error::config("url host", "unclosed '[' in an IPv6 address"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() => p.parse().map_err(|_| {
            Error::config(
                "url port",
                format!("not a number from 0 to 65535; {RESERVED_HINT}"),
            )
        })?,
        _ => default_port,
    };
    let host = if host.is_empty() { "localhost" } else { host };
    Ok((decode(host, "url host")?, port))
}

/// Percent-decodes one URL component; the error names the component, never its text.
pub(crate) fn decode(text: &str, what: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::config(what, "bad percent escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::config(what, "not UTF-8 once percent-decoded"))
}

/// Reads the values of a transport's options table (`[rabbitmq]`, `[redis]`); errors name
/// `<table>.<key>`.
pub(crate) struct OptionValue<'a> {
    pub name: String,
    pub value: &'a toml::Value,
}

impl<'a> OptionValue<'a> {
    pub(crate) fn new(table: &str, key: &str, value: &'a toml::Value) -> Self {
        Self {
            name: format!("{table}.{key}"),
            value,
        }
    }

    /// An error saying what was expected.
    pub(crate) fn wrong(&self, what: &str) -> Error {
        Error::config(&self.name, format!("expected {what}"))
    }

    /// A number of seconds from 0 (integer or float).
    pub(crate) fn seconds(&self) -> Result<Duration> {
        self.seconds_of(self.value)
    }

    /// A number of seconds from 0, for one element of a list.
    pub(crate) fn seconds_of(&self, v: &toml::Value) -> Result<Duration> {
        let secs = match v {
            toml::Value::Integer(n) => *n as f64,
            toml::Value::Float(f) => *f,
            _ => return Err(self.wrong("a number of seconds")),
        };
        if secs.is_finite() && (0.0..1e9).contains(&secs) {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(self.wrong("a number of seconds from 0"))
        }
    }

    /// A positive integer that fits a `u32`.
    pub(crate) fn count(&self) -> Result<u32> {
        self.value
            .as_integer()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| self.wrong("a positive integer"))
    }

    /// A boolean.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn boolean(&self) -> Result<bool> {
        self.value
            .as_bool()
            .ok_or_else(|| self.wrong("true or false"))
    }

    /// A string.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn string(&self) -> Result<&'a str> {
        self.value.as_str().ok_or_else(|| self.wrong("a string"))
    }

    /// A list of strings.
    pub(crate) fn strings(&self) -> Result<Vec<String>> {
        self.value
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| self.wrong("a list of strings"))
    }
}
