//! The TLS settings of `amqps://` and `rediss://`, the same for both transports: which CA to
//! trust and, optionally, the client certificate to present, each a PEM file.
//!
//! - `tls_ca_file`: when set, the server's certificate must chain to a CA of this bundle and
//!   to nothing else (the system's roots are not consulted); when not set, the system's roots
//!   are used. Trusting only the named CA is what someone who names one expects: a private
//!   broker's certificate should not be accepted because some public CA signed a certificate
//!   for the same name.
//! - `tls_cert_file` and `tls_key_file` (both or neither): the client certificate (chain) and
//!   its private key (PKCS#8, PKCS#1 or SEC1), for brokers that check clients.
//!
//! The host checked against the certificate is the URL's host. The files are read when a
//! connection is set up (RabbitMQ: at every reconnect; Redis: when the transport or a consumer
//! opens its connection); a missing, unreadable or invalid file is an
//! [`ErrorKind::Config`](cqrs_actors::ErrorKind::Config) error naming the setting and the path,
//! never the contents.

use std::fmt;
use std::path::PathBuf;

use cqrs_actors::{Error, Result};

use crate::url::OptionValue;

/// The option keys, as in the `[rabbitmq]` and `[redis]` tables.
pub(crate) const TLS_OPTIONS: &str = "tls_ca_file, tls_cert_file, tls_key_file";

/// The PEM files of a TLS connection (paths only: nothing secret, so `Debug` shows them).
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

impl TlsFiles {
    /// Takes `tls_*` option `key` of a transport's table; `false` when `key` is another option.
    pub(crate) fn set_option(&mut self, key: &str, value: &OptionValue<'_>) -> Result<bool> {
        let slot = match key {
            "tls_ca_file" => &mut self.ca_file,
            "tls_cert_file" => &mut self.cert_file,
            "tls_key_file" => &mut self.key_file,
            _ => return Ok(false),
        };
        let path = value.string()?;
        if path.is_empty() {
            return Err(value.wrong("the path of a PEM file"));
        }
        *slot = Some(PathBuf::from(path));
        Ok(true)
    }

    /// Whether any file is set.
    pub(crate) fn any(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Checks what can be checked without reading the files: a certificate needs its key and
    /// the reverse, and files are for TLS URLs only. `table` names the options
    /// (`rabbitmq`, `redis`) and `secure` the TLS scheme.
    pub(crate) fn check(&self, table: &str, tls: bool, secure: &str) -> Result<()> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err(Error::config(
                    &format!("{table}.tls_key_file"),
                    "missing: tls_cert_file needs the key of the certificate",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    &format!("{table}.tls_cert_file"),
                    "missing: tls_key_file needs the certificate it belongs to",
                ));
            }
            _ => {}
        }
        if self.any() && !tls {
            return Err(Error::config(
                &format!("{table}.tls_ca_file"),
                format!("TLS files are set but the url is not {secure}://"),
            ));
        }
        Ok(())
    }
}

#[cfg(any(feature = "rabbitmq-tls", feature = "redis-tls"))]
pub(crate) use material::refusal;

#[cfg(any(feature = "rabbitmq-tls", feature = "redis-tls"))]
mod material {
    use std::error::Error as StdError;
    use std::io;
    use std::path::Path;
    use std::sync::Arc;

    use cqrs_actors::{Error, Result};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::TlsFiles;

    /// The client certificate and key, as read (PEM, for redis-rs) and parsed (DER, for rustls).
    /// No `Debug`: the key must not end up in a log.
    // Each transport reads one of the two forms; with only one of them compiled in, the other
    // form is read only here, to check the files.
    #[cfg_attr(
        not(all(feature = "rabbitmq-tls", feature = "redis-tls")),
        allow(dead_code)
    )]
    pub(crate) struct Identity {
        pub cert_pem: Vec<u8>,
        pub key_pem: Vec<u8>,
        pub chain: Vec<CertificateDer<'static>>,
        pub key: PrivateKeyDer<'static>,
    }

    /// The files of [`TlsFiles`], read and checked.
    #[derive(Default)]
    pub(crate) struct TlsMaterial {
        /// The CA bundle as read and its certificates; `None`: the system's roots.
        pub roots: Option<(Vec<u8>, Vec<CertificateDer<'static>>)>,
        pub identity: Option<Identity>,
    }

    fn read(setting: &str, path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path)
            .map_err(|e| Error::config(setting, format!("cannot read {}: {e}", path.display())))
    }

    /// The certificates of a PEM file (at least one).
    fn certificates(
        setting: &str,
        path: &Path,
        pem: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| {
                Error::config(
                    setting,
                    format!("{} is not a valid PEM file", path.display()),
                )
            })?;
        if certs.is_empty() {
            return Err(Error::config(
                setting,
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
        Ok(certs)
    }

    impl TlsFiles {
        /// Reads and checks the files; errors name `<table>.<setting>` and the path.
        pub(crate) fn load(&self, table: &str) -> Result<TlsMaterial> {
            let setting = |name: &str| format!("{table}.{name}");
            let mut material = TlsMaterial::default();
            if let Some(path) = &self.ca_file {
                let name = setting("tls_ca_file");
                let pem = read(&name, path)?;
                let certs = certificates(&name, path, &pem)?;
                let mut store = rustls::RootCertStore::empty();
                for cert in &certs {
                    store.add(cert.clone()).map_err(|e| {
                        Error::config(
                            &name,
                            format!(
                                "{} holds a certificate that is not a CA: {e}",
                                path.display()
                            ),
                        )
                    })?;
                }
                material.roots = Some((pem, certs));
            }
            if let (Some(cert_path), Some(key_path)) = (&self.cert_file, &self.key_file) {
                let cert_name = setting("tls_cert_file");
                let key_name = setting("tls_key_file");
                let cert_pem = read(&cert_name, cert_path)?;
                let chain = certificates(&cert_name, cert_path, &cert_pem)?;
                let key_pem = read(&key_name, key_path)?;
                // The parser's error is not quoted: it could carry part of the key.
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                    Error::config(
                        &key_name,
                        format!(
                            "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                            key_path.display()
                        ),
                    )
                })?;
                let provider = rustls::crypto::ring::default_provider();
                rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
                    .map_err(|e| {
                        Error::config(
                            &key_name,
                            format!(
                                "{} does not go with the certificate of {}: {e}",
                                key_path.display(),
                                cert_path.display()
                            ),
                        )
                    })?;
                material.identity = Some(Identity {
                    cert_pem,
                    key_pem,
                    chain,
                    key,
                });
            }
            Ok(material)
        }
    }

    /// Why the TLS handshake failed, when it failed over a certificate: the server's was
    /// refused here (unknown CA, a name that is not the URL's host, expired), or ours there;
    /// with what to check in the `table` options. Waiting does not mend these, unlike a
    /// broker that is down; `None` for other failures.
    pub(crate) fn refusal(error: &(dyn StdError + 'static), table: &str) -> Option<String> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(tls) = as_rustls(e) {
                return match tls {
                    rustls::Error::InvalidCertificate(_) => Some(format!(
                        "the server's certificate was refused: {tls} (check {table}.tls_ca_file, \
                         and that the URL's host is a name of the server's certificate)"
                    )),
                    rustls::Error::AlertReceived(alert) if certificate_alert(*alert) => {
                        Some(format!(
                            "the server refused the client certificate: {tls} (check \
                             {table}.tls_cert_file: is it signed by a CA the server trusts?)"
                        ))
                    }
                    _ => None,
                };
            }
            next = e.source();
        }
        None
    }

    /// The rustls error of one link of an error chain. `io::Error::source` skips the error it
    /// wraps, and redis-rs holds its I/O errors in an `Arc`, so both are opened here.
    fn as_rustls<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(shared) = e.downcast_ref::<Arc<dyn StdError + Send + Sync>>() {
            return as_rustls(&**shared);
        }
        if let Some(shared) = e.downcast_ref::<Arc<io::Error>>() {
            return as_rustls(&**shared);
        }
        let inner = e.downcast_ref::<io::Error>()?.get_ref()?;
        as_rustls(inner)
    }

    fn certificate_alert(alert: rustls::AlertDescription) -> bool {
        use rustls::AlertDescription as A;
        matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::CertificateRequired
                | A::AccessDenied
                | A::DecryptError
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_actors::ErrorKind;

    fn files(ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> TlsFiles {
        TlsFiles {
            ca_file: ca.map(PathBuf::from),
            cert_file: cert.map(PathBuf::from),
            key_file: key.map(PathBuf::from),
        }
    }

    #[test]
    fn a_certificate_needs_its_key_and_files_need_a_tls_url() {
        let kind = |r: Result<()>| r.map_err(|e| e.kind());
        assert_eq!(
            kind(files(None, None, None).check("redis", false, "rediss")),
            Ok(())
        );
        assert_eq!(
            kind(files(Some("ca.pem"), None, None).check("redis", true, "rediss")),
            Ok(())
        );
        for (f, tls, key) in [
            (files(None, Some("c.pem"), None), true, "redis.tls_key_file"),
            (
                files(None, None, Some("k.pem")),
                true,
                "redis.tls_cert_file",
            ),
            (
                files(Some("ca.pem"), None, None),
                false,
                "redis.tls_ca_file",
            ),
        ] {
            let err = f.check("redis", tls, "rediss").expect_err(key);
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[cfg(any(feature = "rabbitmq-tls", feature = "redis-tls"))]
    #[test]
    fn unreadable_and_invalid_files_are_named_and_their_contents_never_quoted() {
        let dir = std::env::temp_dir().join(format!("cqrs-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
            path.display().to_string()
        };
        let missing = dir.join("missing.pem").display().to_string();
        let empty = write("empty.pem", "nothing here");
        let broken = write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nS3CRETS3CRET!!\n-----END CERTIFICATE-----\n",
        );
        for (f, setting, path) in [
            (files(Some(&missing), None, None), "tls_ca_file", &missing),
            (files(Some(&empty), None, None), "tls_ca_file", &empty),
            (files(Some(&broken), None, None), "tls_ca_file", &broken),
            (
                files(None, Some(&missing), Some(&empty)),
                "tls_cert_file",
                &missing,
            ),
            (
                files(None, Some(&broken), Some(&empty)),
                "tls_cert_file",
                &broken,
            ),
        ] {
            let err = f.load("rabbitmq").err().unwrap_or_else(|| panic!("{path}"));
            assert_eq!(err.kind(), ErrorKind::Config, "{err}");
            let text = err.to_string();
            assert!(text.contains(&format!("rabbitmq.{setting}")), "{text}");
            assert!(text.contains(path.as_str()), "{text}");
            assert!(!text.contains("S3CRET"), "{text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
