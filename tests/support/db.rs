//! Databases for the adapter tests: a SQLite file, a PostgreSQL schema or a MariaDB database
//! of their own, created per test and dropped by [`TestDb::cleanup`], or on drop when a failed
//! assertion unwinds past it.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, EntityTrait, Schema};

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

/// The statement that drops a test database, and the server to send it to.
fn drop_statement(backend: Backend, name: &str) -> Option<(&'static str, String)> {
    match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some((
            "postgres://postgres@127.0.0.1:5432/test",
            format!("DROP SCHEMA IF EXISTS {name} CASCADE"),
        )),
        Backend::MySql => Some((
            "mysql://root@127.0.0.1:3306/test",
            format!("DROP DATABASE IF EXISTS {name}"),
        )),
    }
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
        let Some((url, sql)) = drop_statement(self.backend, &self.name) else {
            return;
        };
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(admin) = Database::connect(options(url, 1)).await {
                    let _ = admin.execute_unprepared(&sql).await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
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

impl TestDb {
    /// A new, empty database of `backend`.
    pub async fn new(backend: Backend, name: &str) -> Self {
        let name = super::unique(&format!("cqrs_t_{name}")).to_lowercase();
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.sqlite3"));
                let url = format!("sqlite://{}?mode=rwc", path.display());
                Self {
                    db: connect(&url, 1).await,
                    backend,
                    name: path.display().to_string(),
                    admin: None,
                    cleaned: false,
                }
            }
            Backend::Postgres => {
                let admin = connect("postgres://postgres@127.0.0.1:5432/test", 1).await;
                admin
                    .execute_unprepared(&format!("CREATE SCHEMA {name}"))
                    .await
                    .unwrap_or_else(|e| panic!("create schema: {e}"));
                let url = format!(
                    "postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{name}"
                );
                Self {
                    db: connect(&url, 8).await,
                    backend,
                    name,
                    admin: Some(admin),
                    cleaned: false,
                }
            }
            Backend::MySql => {
                let admin = connect("mysql://root@127.0.0.1:3306/test", 1).await;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap_or_else(|e| panic!("create database: {e}"));
                let url = format!("mysql://root@127.0.0.1:3306/{name}");
                Self {
                    db: connect(&url, 8).await,
                    backend,
                    name,
                    admin: Some(admin),
                    cleaned: false,
                }
            }
        }
    }

    /// Another connection pool to the same database (a second "process").
    pub async fn reconnect(&self) -> DatabaseConnection {
        match self.backend {
            Backend::Sqlite => connect(&format!("sqlite://{}?mode=rwc", self.name), 1).await,
            Backend::Postgres => {
                connect(
                    &format!(
                        "postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{}",
                        self.name
                    ),
                    8,
                )
                .await
            }
            Backend::MySql => {
                connect(&format!("mysql://root@127.0.0.1:3306/{}", self.name), 8).await
            }
        }
    }

    /// Creates `entity`'s table.
    pub async fn create<E: EntityTrait>(&self, entity: E) {
        let schema = Schema::new(self.db.get_database_backend());
        let stmt = schema.create_table_from_entity(entity);
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
        if let (Some(admin), Some((_, sql))) =
            (self.admin.take(), drop_statement(self.backend, &self.name))
        {
            let _ = admin.execute_unprepared(&sql).await;
            let _ = admin.close().await;
        }
    }
}
