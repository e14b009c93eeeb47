//! No credential shows in `Debug`, `Display`, error texts or logs: generated passwords with
//! every reserved and percent-encoded character go through each configuration path (builder,
//! TOML, environment, the RabbitMQ and Redis URL parsers, `from_cqrs_config`), raw and
//! percent-encoded, for `amqp`, `amqps`, `redis` and `rediss` URLs; and real connections to
//! RabbitMQ and Redis, logged at trace level (RabbitMQ's with the documented filter), leak
//! nothing.
//!
//! The seed is printed; replay a failure with `CQRS_TEST_SEED=<seed>`.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use cqrs_sync::CqrsConfig;
use cqrs_sync::CqrsSystemExt;

/// Characters a generated password is made of: letters, digits, every character URLs
/// reserve, `%`, quotes, backslash, space and a non-ASCII letter.
const PASSWORD_CHARS: &str = "abcXYZ0189:/?#[]@!$&'()*+,;=%\"\\ é-._~";

fn seeded() -> fastrand::Rng {
    let seed = std::env::var("CQRS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("password seed {seed} (replay with CQRS_TEST_SEED={seed})");
    fastrand::Rng::with_seed(seed)
}

/// A random password of 10 to 24 characters starting with a letter, sometimes with a
/// percent-escape in it.
fn password(rng: &mut fastrand::Rng) -> String {
    let chars: Vec<char> = PASSWORD_CHARS.chars().collect();
    let mut p: String = std::iter::once('k')
        .chain((0..rng.usize(10..24)).map(|_| chars[rng.usize(..chars.len())]))
        .collect();
    if rng.bool() {
        let at = p.char_indices().nth(rng.usize(1..5)).map_or(1, |(i, _)| i);
        p.insert_str(at, "%2F");
    }
    p
}

/// `text` with everything but the URL's unreserved characters percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The forms a password could show in: as it is, percent-encoded, and as the byte list
/// `Debug` prints for a byte string (`[107, 58, ...]`).
fn forms(password: &str) -> [String; 3] {
    let bytes: Vec<String> = password.bytes().map(|b| b.to_string()).collect();
    [
        password.to_owned(),
        percent_encode(password),
        bytes.join(", "),
    ]
}

/// Fails when `shown` holds `password` in any of its forms.
fn assert_hidden(shown: &str, password: &str, path: &str) {
    for form in forms(password) {
        assert!(
            !shown.contains(&form),
            "{path}: the password {password:?} shows in {shown:?}"
        );
    }
}

#[test]
fn no_generated_password_shows_through_any_configuration_path() {
    let mut rng = seeded();
    for _ in 0..500 {
        let pw = password(&mut rng);
        let scheme = ["amqp", "amqps", "redis", "rediss"][rng.usize(..4)];
        let raw = format!("{scheme}://svc:{pw}@broker.local:5672/vh?heartbeat=10");
        let encoded = format!("{scheme}://svc:{}@broker.local/vh", percent_encode(&pw));
        for url in [raw, encoded] {
            let built = CqrsConfig::default().with_url(&url);
            assert_hidden(&format!("{built:?} {}", built.url()), &pw, "builder");

            let mut table = toml::Table::new();
            table.insert("url".into(), toml::Value::String(url.clone()));
            let file = toml::to_string(&table).unwrap();
            let from_file = CqrsConfig::from_toml_str(&file).unwrap();
            assert_eq!(from_file.url().expose(), url);
            assert_hidden(&format!("{from_file:?} {}", from_file.url()), &pw, "TOML");

            let env = [("CQRS_URL".to_owned(), url.clone())];
            let from_env = CqrsConfig::from_sources("", env).unwrap();
            assert_eq!(from_env.url().expose(), url);
            assert_hidden(
                &format!("{from_env:?} {}", from_env.url()),
                &pw,
                "environment",
            );

            let broken = format!("{file}[replica]\nworkers = 0\n");
            let err = CqrsConfig::from_toml_str(&broken).unwrap_err();
            assert_hidden(&format!("{err} {err:?}"), &pw, "validation error");
            let wrong_scheme = url.replacen(scheme, "http", 1);
            let err = CqrsConfig::default()
                .with_url(&wrong_scheme)
                .validate()
                .unwrap_err();
            assert_hidden(&format!("{err} {err:?}"), &pw, "scheme error");

            #[cfg(feature = "rabbitmq")]
            rabbitmq_paths(&url, &pw, &from_env);
            #[cfg(feature = "redis")]
            redis_paths(&url, &pw);
        }
    }
}

/// Publishes row 1 of `author` through `system` (a master and a replica of it into `table`)
/// and waits until it is applied.
#[cfg(any(feature = "rabbitmq", feature = "redis"))]
async fn one_row_through(system: &cqrs_sync::CqrsSystem, table: &cqrs_sync::MemoryTable) {
    use cqrs_sync::{Route, SignalType};
    system
        .publisher()
        .publish(
            cqrs_sync::Envelope::new(SignalType::Save, "author", support::row(1, 0, "Ada")),
            Route::broadcast("author"),
        )
        .await
        .unwrap();
    support::wait_until(
        "the row applied",
        std::time::Duration::from_secs(30),
        || {
            let n = table.snapshot().len();
            async move { n == 1 }
        },
    )
    .await;
}

/// The RabbitMQ URL parser, directly and from a service configuration: a URL with the
/// password percent-encoded parses to that password; a raw one may be refused (reserved
/// characters make it ambiguous), but neither its `Debug` nor its error shows the password.
#[cfg(feature = "rabbitmq")]
fn rabbitmq_paths(url: &str, pw: &str, service: &CqrsConfig) {
    use cqrs_sync::transports::rabbitmq::RabbitMqConfig;
    let direct = CqrsConfig::default().with_url(url);
    for parsed in [
        RabbitMqConfig::from_cqrs_config(&direct),
        RabbitMqConfig::from_cqrs_config(service),
    ] {
        match parsed {
            Ok(config) => {
                assert_hidden(
                    &format!("{config:?} {}", config.redacted_url()),
                    pw,
                    "RabbitMqConfig",
                );
            }
            Err(e) => assert_hidden(&format!("{e} {e:?}"), pw, "RabbitMqConfig error"),
        }
    }
    let amqp = url.starts_with("amqp://")
        || (url.starts_with("amqps://") && cfg!(feature = "rabbitmq-tls"));
    if amqp && url.contains(&percent_encode(pw)) {
        let config = RabbitMqConfig::from_cqrs_config(&direct)
            .unwrap_or_else(|e| panic!("an encoded password parses: {e}"));
        assert_eq!(config.redacted_url().split("****").count(), 2);
    }
}

/// The Redis URL parser, from a service configuration: a URL with the password
/// percent-encoded parses to that password; neither `Debug` nor an error shows it.
#[cfg(feature = "redis")]
fn redis_paths(url: &str, pw: &str) {
    use cqrs_sync::transports::redis::RedisConfig;
    // The same URL with what a Redis URL has after the host: a database number.
    let url = &url.replace("/vh?heartbeat=10", "/3").replace("/vh", "/3");
    match RedisConfig::from_cqrs_config(&CqrsConfig::default().with_url(url)) {
        Ok(config) => assert_hidden(
            &format!("{config:?} {}", config.redacted_url()),
            pw,
            "RedisConfig",
        ),
        Err(e) => assert_hidden(&format!("{e} {e:?}"), pw, "RedisConfig error"),
    }
    let redis = url.starts_with("redis://")
        || (url.starts_with("rediss://") && cfg!(feature = "redis-tls"));
    if redis && url.contains(&percent_encode(pw)) {
        let config = RedisConfig::from_cqrs_config(&CqrsConfig::default().with_url(url))
            .unwrap_or_else(|e| panic!("an encoded password parses: {e}"));
        assert_eq!(config.redacted_url().split("****").count(), 2);
    }
}

/// A real Redis login with a generated password (an ACL user of its own), logged at trace
/// level: the transport connects and carries a message, a wrong password is refused, and no
/// line, error or `Debug` holds either password.
#[cfg(feature = "redis")]
#[actix_rt::test]
async fn a_real_redis_login_with_a_generated_password_logs_no_password() {
    use cqrs_sync::transports::redis::{RedisConfig, RedisTransport};
    use cqrs_sync::{ErrorKind, MemoryTable, ReplicaModel};
    use support::Capture;
    use support::redis::{Space, client};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(tracing_subscriber::EnvFilter::new("trace")),
    );
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut rng = seeded();
    let pw = password(&mut rng);
    /// The ACL user of the test, deleted when dropped (also when the test fails).
    struct AclUser(String);
    impl Drop for AclUser {
        fn drop(&mut self) {
            let _ = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&self.0)
                .query::<i64>(&mut client());
        }
    }
    let acl = AclUser(support::unique("cqrs_secret_user"));
    let user = acl.0.clone();
    let _: String = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(format!(">{pw}"))
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query(&mut client())
        .unwrap();
    let space = Space::create("cqrs_secrets");
    let url = |password: &str| {
        format!(
            "redis://{user}:{}@127.0.0.1:6379/0",
            percent_encode(password)
        )
    };
    let service = |password: &str| {
        CqrsConfig::default()
            .with_url(url(password))
            .with_exchange(&space.exchange)
    };
    let outcome = async {
        let table = MemoryTable::new();
        let system = cqrs_sync::CqrsSystem::builder()
            .config(service(&pw).with_queue("secrets"))
            .replica(ReplicaModel::new("author", table.clone()))
            .master(cqrs_sync::MasterModel::new("author"))
            .start()
            .await
            .unwrap();
        one_row_through(&system, &table).await;
        tracing::info!(system = ?system, config = ?RedisConfig::from_cqrs_config(&service(&pw)), "system running");
        system.shutdown().await.unwrap();

        let wrong = password(&mut rng);
        let refused = RedisConfig::from_cqrs_config(&service(&wrong)).unwrap();
        let err = RedisTransport::connect(refused).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transport);
        assert_hidden(&format!("{err} {err:?}"), &wrong, "connect error");
        wrong
    };
    let wrong = outcome.await;
    drop(acl);
    let shown = capture.text();
    assert!(
        shown.contains("system running"),
        "the capture holds the test's lines"
    );
    assert_hidden(&shown, &pw, "trace log");
    assert_hidden(&shown, &wrong, "trace log");
}

/// A real connection, logged at trace level: with [`LOG_DIRECTIVE`] in the filter no line
/// holds the password, neither for a login that works nor for one the broker refuses, while
/// the same run logged unfiltered shows lapin's frames (the filter is what keeps it out).
///
/// [`LOG_DIRECTIVE`]: cqrs_sync::transports::rabbitmq::LOG_DIRECTIVE
#[cfg(feature = "rabbitmq")]
#[actix_rt::test]
async fn a_real_connection_logs_no_password_at_trace_level() {
    use std::time::Duration;

    use cqrs_sync::transports::rabbitmq::{LOG_DIRECTIVE, RabbitMqConfig, RabbitMqTransport};
    use cqrs_sync::{ErrorKind, MemoryTable, ReplicaModel};
    use support::Capture;
    use support::rabbitmq::{User, Vhost};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    fn layer<S>(capture: &Capture, filter: &str) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let capture = capture.clone();
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || capture.clone())
            .with_filter(tracing_subscriber::EnvFilter::new(filter))
    }
    let (filtered, unfiltered) = (Capture::default(), Capture::default());
    let subscriber = tracing_subscriber::registry()
        .with(layer(&filtered, &format!("trace,{LOG_DIRECTIVE}")))
        .with(layer(&unfiltered, "trace"));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let mut rng = seeded();
    // Debian's rabbitmqctl wrapper passes its arguments through `su -c "..."`, where `$`, `\`,
    // `"` and backquotes would be interpreted: the broker would store another password.
    let pw = password(&mut rng).replace(['$', '\\', '"', '`'], "x");
    let vhost = Vhost::create("cqrs_secrets");
    let user = User::create("cqrs_secret_user", &pw, &vhost);
    let url = |password: &str| {
        format!(
            "amqp://{}:{}@127.0.0.1:5672/{}",
            user.name,
            percent_encode(password),
            vhost.name
        )
    };

    // A login that works, and traffic on it.
    let config =
        RabbitMqConfig::from_cqrs_config(&CqrsConfig::default().with_url(url(&pw))).unwrap();
    let (transport, _addr) = support::rabbitmq::connect(config).await;
    let table = MemoryTable::new();
    let system = cqrs_sync::CqrsSystem::builder()
        .config(
            CqrsConfig::default()
                .with_url(url(&pw))
                .with_queue("secrets"),
        )
        .replica(ReplicaModel::new("author", table.clone()))
        .master(cqrs_sync::MasterModel::new("author"))
        .transport(transport)
        .start()
        .await
        .unwrap();
    one_row_through(&system, &table).await;
    tracing::info!(config = ?system, "system running");
    system.shutdown().await.unwrap();

    // A login the broker refuses.
    let wrong = password(&mut rng);
    let refused = RabbitMqConfig::from_cqrs_config(&CqrsConfig::default().with_url(url(&wrong)))
        .unwrap()
        .with_publish_timeout(Duration::from_secs(2));
    let err = RabbitMqTransport::connect(refused).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert_hidden(&format!("{err} {err:?}"), &wrong, "connect error");

    let shown = filtered.text();
    assert!(
        shown.contains("RabbitMQ connection up"),
        "the capture holds the transport's own lines"
    );
    assert_hidden(&shown, &pw, "trace log with the directive");
    assert_hidden(&shown, &wrong, "trace log with the directive");
    assert!(
        unfiltered.text().contains("lapin::io_loop"),
        "unfiltered, the same run logs lapin's frames at trace level"
    );
    drop(user);
}
