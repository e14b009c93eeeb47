//! The replica service: it keeps copies of the master's `publisher`, `author` and `book`
//! tables in its own database, applying the master's events as they come, and serves the
//! copies read-only as JSON.
//!
//! Each table is a [`ReplicaTable`]: a batch of events is applied in one transaction under the
//! revision rules, and a delivery is acknowledged once its row is committed. The master sends
//! foreign keys under their Django field names; the replica stores them in the columns
//! `publisher_id` and `author_id`: `author` by renaming one key (`with_renames`, the other
//! keys go to the columns of their names), `book` by mapping every key it keeps
//! (`with_mapping`, django-cqrs's `CQRS_MAPPING`: a message without one of them is
//! dead-lettered).
//!
//! ```text
//! CQRS_URL=amqp://guest:guest@127.0.0.1:5672/ CQRS_QUEUE=replica \
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/replica \
//! cargo run --example replica --features postgres,sqlite,rabbitmq,redis
//! ```
//!
//! Settings (environment, or the TOML file `CQRS_CONFIG` names; see
//! `examples/service/settings.rs`): `CQRS_URL` (`amqp://...` or `redis://...`, required),
//! `CQRS_EXCHANGE` (default `cqrs`), `CQRS_QUEUE` (default `replica`), `DATABASE_URL`
//! (`postgres://...` or `sqlite://...`, default `sqlite://replica.db?mode=rwc`),
//! `HTTP_ADDR` (default `127.0.0.1:8001`), `RUST_LOG` (default `info`), and the
//! `CQRS_REPLICA__*` settings (retries, workers, batch size). The tables are created at start
//! if missing. SIGTERM or Ctrl-C stops the HTTP server, then consuming: what is in flight is
//! applied and acknowledged before the process exits.
//!
//! ```text
//! curl localhost:8001/authors
//! curl localhost:8001/authors/1
//! curl localhost:8001/books/0b9b1c52-4d7e-4b8e-9a57-2a1f3c1f0e11
//! curl localhost:8001/health
//! ```
//!
//! | route | answers |
//! |---|---|
//! | `GET /publishers`, `/authors`, `/books` | every row, in primary-key order |
//! | `GET /<table>s/{id}` | one row, or 404 |
//! | `GET /health` | `{"status": "ok", "queue": ..., "received": n, "applied": n, "skipped": n, "retried": n, "dead_lettered": n}` |

mod service;

use std::error::Error;
use std::process::ExitCode;

use actix_web::{App, HttpResponse, HttpServer, middleware, web};
use cqrs_sync::orm::ReplicaTable;
use cqrs_sync::prelude::*;
use serde_json::json;

use service::entities::{ForeignKeys, Table, author, book, create_tables, publisher};
use service::http::{ApiError, HttpDb};
use service::lifecycle::{SystemSlot, serve_until_stopped};
use service::settings::{Defaults, Settings};

#[actix::main]
async fn main() -> ExitCode {
    service::settings::init_tracing();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the replica stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let mut settings = Settings::load(Defaults {
        database_url: "sqlite://replica.db?mode=rwc",
        http_addr: "127.0.0.1:8001",
    })?;
    if settings.cqrs.queue().is_none() {
        settings.cqrs = settings.cqrs.with_queue("replica");
    }
    let queue = settings.cqrs.queue().unwrap_or_default().to_owned();
    tracing::info!(
        broker = %settings.cqrs.url().redacted(),
        exchange = settings.cqrs.exchange(),
        queue,
        database = %settings.database_url.redacted(),
        "starting the replica"
    );
    // The system's pool: the apply workers write through it.
    let db = settings.connect(4).await?;
    create_tables(&db, ForeignKeys::None).await?;

    let publishers = ReplicaTable::new(db.clone(), publisher::Entity)?;
    let authors = ReplicaTable::new(db.clone(), author::Entity)?
        .with_renames([("publisher", "publisher_id")])?;
    let books = ReplicaTable::new(db.clone(), book::Entity)?.with_mapping([
        ("id", "id"),
        ("title", "title"),
        ("author", "author_id"),
        ("price", "price"),
        ("published", "published"),
        ("extra", "extra"),
    ])?;
    let system = CqrsSystem::builder()
        .config(settings.cqrs.clone())
        .replica(ReplicaModel::new("publisher", publishers))
        .replica(ReplicaModel::new("author", authors))
        .replica(ReplicaModel::new("book", books))
        .start()
        .await?;
    tracing::info!(queue, "consuming");

    let slot = SystemSlot::new(system);
    let reads = web::Data::new(HttpDb(settings.connect(8).await?));
    let health = web::Data::new((slot.clone(), queue));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(reads.clone())
            .app_data(health.clone())
            .app_data(service::http::path_config())
            .wrap(middleware::from_fn(service::http::log_request))
            .configure(routes::<publisher::Entity>)
            .configure(routes::<author::Entity>)
            .configure(routes::<book::Entity>)
            .route("/health", web::get().to(health_check))
            .default_service(web::to(service::http::no_route))
    })
    .disable_signals()
    .shutdown_timeout(10)
    .bind(&settings.http_addr)
    .map(actix_web::HttpServer::run);
    let served = serve_until_stopped(server, &settings.http_addr).await;
    if let Some(system) = slot.take().await {
        system.shutdown().await?;
        tracing::info!("stopped");
    }
    Ok(served?)
}

/// `GET /<table>s` and `GET /<table>s/{id}`; other methods are refused (405): the master
/// owns the rows.
fn routes<T: Table>(cfg: &mut web::ServiceConfig) {
    let name = T::CQRS_ID;
    cfg.service(
        web::resource(format!("/{name}s"))
            .route(web::get().to(service::http::list::<T>))
            .default_service(web::to(service::http::wrong_method)),
    )
    .service(
        web::resource(format!("/{name}s/{{id}}"))
            .route(web::get().to(service::http::get::<T>))
            .default_service(web::to(service::http::wrong_method)),
    );
}

/// `GET /health`: 200 with the replica's counters, 503 once stopping.
async fn health_check(health: web::Data<(SystemSlot, String)>) -> Result<HttpResponse, ApiError> {
    let (slot, queue) = health.get_ref();
    let m = slot
        .metrics()
        .await
        .ok_or_else(|| ApiError::unavailable("stopping"))?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "ok",
        "queue": queue,
        "received": m.received,
        "applied": m.applied,
        "skipped": m.skipped,
        "retried": m.retried,
        "dead_lettered": m.dead_lettered,
    })))
}
