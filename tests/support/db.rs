//! Databases for the adapter tests: a SQLite file, a PostgreSQL schema or a MariaDB database
//! of their own, created per test and dropped by [`TestDb::cleanup`], or on drop when a failed
//! assertion unwinds past it.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, EntityTrait, Schema};

/// Runs scenarios on each database: for each `async fn scenario(Backend)` named, a module with
/// a test on SQLite always, and on PostgreSQL and MariaDB when their features are on
/// (`--all-features`).
// Not every test binary that includes `support` runs scenarios.
#[allow(unused_macros)]
macro_rules! on_each_db {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use crate::support::db::Backend;
            #[actix_rt::test]
            async fn sqlite() {
                super::$scenario(Backend::Sqlite).await;
            }
            #[cfg(feature = "postgres")]
            #[actix_rt::test]
            async fn postgres() {
                super::$scenario(Backend::Postgres).await;
            }
            #[cfg(feature = "mysql")]
            #[actix_rt::test]
            async fn mariadb() {
                super::$scenario(Backend::MySql).await;
            }
        }
    )*};
}
#[allow(unused_imports)] // see above
pub(crate) use on_each_db;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

/// A database of one test's own.
pub struct TestDb {
    pub db: DatabaseConnection,
    pub backend: Backend,
    name: String,
    admin: Option<DatabaseConnection>,
    cleaned: bool,
}

impl Drop for TestDb {
    /// A test that panicked never reached `cleanup`: drop its database from a thread of its
    /// own (the test's runtime may be unwinding), so failed runs leave nothing behind.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        if self.backend == Backend::Sqlite {
            let _ = std::fs::remove_file(&self.name);
            return;
        }
        let Some(Admin { url, drop: sql, .. }) = admin(self.backend, &self.name) else {
            return;
        };
        cleanup_detached(async move {
            if let Ok(admin) = Database::connect(options(url, 1)).await {
                let _ = admin.execute_unprepared(&sql).await;
                let _ = admin.close().await;
            }
        });
    }
}

/// Runs a cleanup to its end from a `Drop`: on a thread and a runtime of its own, as the
/// caller's runtime may be unwinding from a panic.
pub fn cleanup_detached(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(cleanup);
        }
    })
    .join();
}

fn options(url: &str, pool: u32) -> ConnectOptions {
    let mut o = ConnectOptions::new(url.to_owned());
    o.max_connections(pool)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    o
}

async fn connect(url: &str, pool: u32) -> DatabaseConnection {
    Database::connect(options(url, pool))
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// The server a test database lives on (`None`: a SQLite file), and the statements that
/// create and drop it there.
struct Admin {
    url: &'static str,
    create: String,
    drop: String,
}

fn admin(backend: Backend, name: &str) -> Option<Admin> {
    let (url, kind) = match backend {
        Backend::Sqlite => return None,
        Backend::Postgres => ("postgres://postgres@127.0.0.1:5432/test", "SCHEMA"),
        Backend::MySql => ("mysql://root@127.0.0.1:3306/test", "DATABASE"),
    };
    let drop = match backend {
        Backend::Postgres => format!("DROP SCHEMA IF EXISTS {name} CASCADE"),
        _ => format!("DROP {kind} IF EXISTS {name}"),
    };
    Some(Admin {
        url,
        create: format!("CREATE {kind} {name}"),
        drop,
    })
}

/// The URL of a test database (for SQLite, `name` is the file's path) and its pool size.
fn database_url(backend: Backend, name: &str) -> (String, u32) {
    match backend {
        Backend::Sqlite => (format!("sqlite://{name}?mode=rwc"), 1),
        Backend::Postgres => (
            format!("postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{name}"),
            8,
        ),
        Backend::MySql => (format!("mysql://root@127.0.0.1:3306/{name}"), 8),
    }
}

impl TestDb {
    /// A new, empty database of `backend`.
    pub async fn new(backend: Backend, name: &str) -> Self {
        let mut name = super::unique(&format!("cqrs_t_{name}")).to_lowercase();
        let mut admin_conn = None;
        match admin(backend, &name) {
            Some(Admin { url, create, .. }) => {
                let conn = connect(url, 1).await;
                conn.execute_unprepared(&create)
                    .await
                    .unwrap_or_else(|e| panic!("{create}: {e}"));
                admin_conn = Some(conn);
            }
            None => {
                let path = std::env::temp_dir().join(format!("{name}.sqlite3"));
                name = path.display().to_string();
            }
        }
        Self {
            db: Self::open(backend, &name).await,
            backend,
            name,
            admin: admin_conn,
            cleaned: false,
        }
    }

    async fn open(backend: Backend, name: &str) -> DatabaseConnection {
        let (url, pool) = database_url(backend, name);
        connect(&url, pool).await
    }

    /// The database's URL, for another process.
    pub fn url(&self) -> String {
        database_url(self.backend, &self.name).0
    }

    /// Another connection pool to the same database (a second "process").
    pub async fn reconnect(&self) -> DatabaseConnection {
        Self::open(self.backend, &self.name).await
    }

    /// Creates `entity`'s table.
    pub async fn create<E: EntityTrait>(&self, entity: E) {
        self.create_with_checks(entity, []).await;
    }

    /// Creates `entity`'s table with `CHECK` constraints.
    pub async fn create_with_checks<E: EntityTrait>(
        &self,
        entity: E,
        checks: impl IntoIterator<Item = sea_orm::sea_query::Expr>,
    ) {
        let schema = Schema::new(self.db.get_database_backend());
        let mut stmt = schema.create_table_from_entity(entity);
        for check in checks {
            stmt.check(check);
        }
        self.db
            .execute(&stmt)
            .await
            .unwrap_or_else(|e| panic!("create table: {e}"));
    }

    /// Drops the database (or removes the file).
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        let _ = self.db.clone().close().await;
        if self.backend == Backend::Sqlite {
            let _ = std::fs::remove_file(&self.name);
            return;
        }
        if let (Some(conn), Some(Admin { drop, .. })) =
            (self.admin.take(), admin(self.backend, &self.name))
        {
            let _ = conn.execute_unprepared(&drop).await;
            let _ = conn.close().await;
        }
    }
}
