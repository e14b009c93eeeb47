//! The master service: it owns the tables `publisher`, `author` and `book`, serves a JSON REST
//! API to change them, and publishes every committed change to the replicas.
//!
//! Each write goes through a [`MasterTable`], which bumps `cqrs_revision` and records the event
//! in the outbox in the row's own transaction; the system relays the outbox to the broker.
//! Foreign keys go out under their Django field names (`publisher`, `author`), as a Django
//! master of the same tables sends them (see `examples/service/entities.rs`).
//!
//! ```text
//! CQRS_URL=amqp://guest:guest@127.0.0.1:5672/ \
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/master \
//! cargo run --example master --features postgres,sqlite,rabbitmq,redis
//! ```
//!
//! Settings (environment, or the TOML file `CQRS_CONFIG` names; see
//! `examples/service/settings.rs`): `CQRS_URL` (`amqp://...` or `redis://...`, required),
//! `CQRS_EXCHANGE` (default `cqrs`), `DATABASE_URL` (`postgres://...` or `sqlite://...`,
//! default `sqlite://master.db?mode=rwc`), `HTTP_ADDR` (default `127.0.0.1:8000`),
//! `RUST_LOG` (default `info`). The tables and the outbox are created at start if missing.
//! SIGTERM or Ctrl-C stops the HTTP server, sends what is left in the outbox and exits.
//!
//! ```text
//! curl -d '{"name": "Penguin"}' localhost:8000/publishers
//! curl -d '{"id": 1, "name": "Ada", "rating": "4.50", "publisher_id": 1, "tags": ["math"]}' localhost:8000/authors
//! curl -d '{"title": "Notes", "author_id": 1, "price": "12.99", "published": "1843-09-01"}' localhost:8000/books
//! curl -X PATCH -d '{"email": "ada@example.com"}' localhost:8000/authors/1
//! curl localhost:8000/authors/1
//! curl -X DELETE localhost:8000/authors/1          # and its books
//! curl -d '{"cqrs_id": "author", "filter": {"id__in": [1, 2]}, "queue": "replica"}' localhost:8000/sync
//! curl localhost:8000/health
//! ```
//!
//! | route | does |
//! |---|---|
//! | `GET /publishers`, `/authors`, `/books` | every row, in primary-key order |
//! | `POST` to the same | creates a row (201); `publisher` ids come from the database, `author` ids from the client, `book` ids from the client or a new UUID |
//! | `GET /<table>s/{id}` | one row |
//! | `PUT /<table>s/{id}` | replaces a row: the required fields, the others back to their defaults |
//! | `PATCH /<table>s/{id}` | changes the fields given |
//! | `DELETE /<table>s/{id}` | deletes a row (204); an author's books go with it, each with its own DELETE event |
//! | `POST /sync` | re-sends the rows a django-cqrs filter selects as SYNC events, to every replica or to one `queue` |
//! | `GET /health` | `{"status": "ok", "published": n}` |
//!
//! Errors are `{"error": "..."}`: 400 for a body that is not JSON or not the expected JSON, 404
//! for an unknown id, 409 for a taken primary key or a publisher authors still refer to, 500 for
//! a database failure.

mod service;

use std::collections::BTreeMap;
use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, middleware, web};
use cqrs_sync::orm::{Filter, MasterSource, MasterTable, Outbox};
use cqrs_sync::prelude::*;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection,
    DatabaseTransaction, IntoActiveModel, SqlErr, TransactionTrait,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use service::bodies::{
    AuthorBody, BookBody, PublisherBody, SyncBody, Write, decimal_within, new_uuid, text,
};
use service::entities::{ForeignKeys, Table, author, book, create_tables, publisher};
use service::http::{ApiError, HttpDb, sql_error};
use service::lifecycle::{SystemSlot, serve_until_stopped};
use service::settings::{Defaults, Settings};

/// What the write handlers share: the tables, the outbox (woken after a transaction of our
/// own commits) and the sources `POST /sync` reads.
struct Master {
    db: DatabaseConnection,
    outbox: Outbox,
    publishers: MasterTable<publisher::Entity>,
    authors: MasterTable<author::Entity>,
    books: MasterTable<book::Entity>,
    sources: BTreeMap<&'static str, Arc<dyn MasterSource>>,
    publisher: Publisher,
}

#[actix::main]
async fn main() -> ExitCode {
    service::settings::init_tracing();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the master stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let settings = Settings::load(Defaults {
        database_url: "sqlite://master.db?mode=rwc",
        http_addr: "127.0.0.1:8000",
    })?;
    tracing::info!(
        broker = %settings.cqrs.url().redacted(),
        exchange = settings.cqrs.exchange(),
        database = %settings.database_url.redacted(),
        "starting the master"
    );
    // The system's pool: the outbox relay reads and deletes through it.
    let db = settings.connect(4).await?;
    create_tables(&db, ForeignKeys::Enforced).await?;
    let outbox = Outbox::new(db.clone());
    outbox.create_table().await?;

    let publishers = MasterTable::new("publisher", publisher::Entity, &outbox)?;
    let authors = MasterTable::new("author", author::Entity, &outbox)?
        .with_wire_keys([(author::Column::PublisherId, "publisher")])
        .with_tracked_fields([author::Column::Name, author::Column::Email]);
    let books = MasterTable::new("book", book::Entity, &outbox)?
        .with_wire_keys([(book::Column::AuthorId, "author")]);
    let system = CqrsSystem::builder()
        .config(settings.cqrs.clone())
        .master(&publishers)
        .master(&authors)
        .master(&books)
        .start()
        .await?;

    let http_db = settings.connect(8).await?;
    let sources = BTreeMap::from([
        ("publisher", publishers.source(http_db.clone())),
        ("author", authors.source(http_db.clone())),
        ("book", books.source(http_db.clone())),
    ]);
    let master = web::Data::new(Master {
        db: http_db.clone(),
        outbox,
        publishers,
        authors,
        books,
        sources,
        publisher: system.publisher(),
    });
    let slot = SystemSlot::new(system);
    let reads = web::Data::new(HttpDb(http_db));
    let health = web::Data::new(slot.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(master.clone())
            .app_data(reads.clone())
            .app_data(health.clone())
            .app_data(service::http::json_config())
            .app_data(service::http::path_config())
            .wrap(middleware::from_fn(service::http::log_request))
            .configure(routes::<publisher::Entity>)
            .configure(routes::<author::Entity>)
            .configure(routes::<book::Entity>)
            .route("/sync", web::post().to(sync))
            .route("/health", web::get().to(health_check))
            .default_service(web::to(service::http::no_route))
    })
    .disable_signals()
    .shutdown_timeout(10)
    .bind(&settings.http_addr)
    .map(actix_web::HttpServer::run);
    let served = serve_until_stopped(server, &settings.http_addr).await;
    if let Some(system) = slot.take().await {
        flush(&system).await;
        system.shutdown().await?;
        tracing::info!("stopped");
    }
    Ok(served?)
}

/// Sends what the outbox still holds, for at most 10 s; what the broker did not confirm by
/// then stays in the outbox for the next start.
async fn flush(system: &CqrsSystem) {
    match tokio::time::timeout(Duration::from_secs(10), system.flush()).await {
        Ok(Ok(())) => tracing::info!("outbox flushed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "flush failed; the outbox keeps the events"),
        Err(_) => {
            tracing::warn!("the broker did not confirm within 10 s; the outbox keeps the rest")
        }
    }
}

/// `/<table>s` and `/<table>s/{id}`.
fn routes<R: Resource>(cfg: &mut web::ServiceConfig) {
    let name = R::CQRS_ID;
    cfg.service(
        web::resource(format!("/{name}s"))
            .route(web::get().to(service::http::list::<R>))
            .route(web::post().to(create::<R>))
            .default_service(web::to(service::http::wrong_method)),
    )
    .service(
        web::resource(format!("/{name}s/{{id}}"))
            .route(web::get().to(service::http::get::<R>))
            .route(web::put().to(replace::<R>))
            .route(web::patch().to(patch::<R>))
            .route(web::delete().to(delete::<R>))
            .default_service(web::to(service::http::wrong_method)),
    );
}

/// A table the REST API writes: how a request body becomes column values.
trait Resource:
    Table<Model: IntoActiveModel<Self::ActiveModel> + Sync, ActiveModel: ActiveModelBehavior + Send>
{
    /// The request body: what the client sent, each field absent or given.
    type Body: DeserializeOwned + 'static;

    /// What a foreign key the database refused on a write means (`None`: the table has none).
    const PARENT: Option<&'static str>;

    /// Its master table.
    fn table(master: &Master) -> &MasterTable<Self>;

    /// Sets the body's fields on `row`. For [`Write::Replace`] and [`Write::Patch`] the
    /// primary key is set already (from the path).
    fn fill(body: Self::Body, row: &mut Self::ActiveModel, write: Write) -> Result<(), ApiError>;

    /// Deletes the row with this key, publishing a DELETE for each row deleted; answers
    /// whether there was one.
    async fn remove(master: &Master, id: Self::Pk) -> Result<bool, ApiError> {
        Ok(Self::table(master).delete(&master.db, id).await?)
    }
}

impl Resource for publisher::Entity {
    type Body = PublisherBody;
    const PARENT: Option<&'static str> = None;

    fn table(master: &Master) -> &MasterTable<Self> {
        &master.publishers
    }

    fn fill(
        body: PublisherBody,
        row: &mut publisher::ActiveModel,
        write: Write,
    ) -> Result<(), ApiError> {
        if let Some(name) = write.required(body.name, "name")? {
            row.name = Set(text("name", name, 200)?);
        }
        Ok(())
    }
}

impl Resource for author::Entity {
    type Body = AuthorBody;
    const PARENT: Option<&'static str> = Some("publisher_id names no publisher");

    fn table(master: &Master) -> &MasterTable<Self> {
        &master.authors
    }

    fn fill(body: AuthorBody, row: &mut author::ActiveModel, write: Write) -> Result<(), ApiError> {
        match (write, body.id) {
            (Write::Create, Some(id)) => row.id = Set(id),
            (Write::Create, None) => return Err(ApiError::bad_request("id is required")),
            (_, Some(id)) if row.id != Set(id) => {
                return Err(ApiError::bad_request("id differs from the one in the path"));
            }
            _ => {}
        }
        if let Some(name) = write.required(body.name, "name")? {
            row.name = Set(text("name", name, 200)?);
        }
        if let Some(email) = write.optional(body.email, || None) {
            row.email = Set(email.map(|e| text("email", e, 254)).transpose()?);
        }
        if let Some(date) = write.optional(body.birth_date, || None) {
            row.birth_date = Set(date);
        }
        if let Some(rating) = write.required(body.rating, "rating")? {
            row.rating = Set(decimal_within("rating", rating, 6, 2)?);
        }
        if let Some(publisher) = write.optional(body.publisher_id, || None) {
            row.publisher_id = Set(publisher);
        }
        if let Some(tags) = write.optional(body.tags, Vec::new) {
            row.tags = Set(json!(tags));
        }
        Ok(())
    }

    /// The author's books first, through their own table, then the author, in one
    /// transaction: a database cascade would delete the books without their DELETE events.
    async fn remove(master: &Master, id: i64) -> Result<bool, ApiError> {
        let txn = begin(&master.db).await?;
        let books = Condition::all().add(book::Column::AuthorId.eq(id));
        master.books.delete_many(&txn, books).await?;
        let deleted = master.authors.delete(&txn, id).await?;
        commit(txn, master).await?;
        Ok(deleted)
    }
}

impl Resource for book::Entity {
    type Body = BookBody;
    const PARENT: Option<&'static str> = Some("author_id names no author");

    fn table(master: &Master) -> &MasterTable<Self> {
        &master.books
    }

    fn fill(body: BookBody, row: &mut book::ActiveModel, write: Write) -> Result<(), ApiError> {
        match (write, body.id) {
            (Write::Create, id) => row.id = Set(id.unwrap_or_else(new_uuid)),
            (_, Some(id)) if row.id != Set(id) => {
                return Err(ApiError::bad_request("id differs from the one in the path"));
            }
            _ => {}
        }
        if let Some(title) = write.required(body.title, "title")? {
            row.title = Set(text("title", title, 200)?);
        }
        if let Some(author) = write.required(body.author_id, "author_id")? {
            row.author_id = Set(author);
        }
        if let Some(price) = write.required(body.price, "price")? {
            row.price = Set(decimal_within("price", price, 10, 2)?);
        }
        if let Some(date) = write.optional(body.published, || None) {
            row.published = Set(date);
        }
        if let Some(extra) = write.optional(body.extra, serde_json::Map::new) {
            row.extra = Set(Value::Object(extra));
        }
        Ok(())
    }
}

/// A database error of a write: a foreign key that names no row is the client's (400), a
/// taken primary key a conflict (409).
fn written<R: Resource>(err: cqrs_sync::Error) -> ApiError {
    match (sql_error(&err), R::PARENT) {
        (Some(SqlErr::ForeignKeyConstraintViolation(_)), Some(parent)) => {
            ApiError::bad_request(parent)
        }
        (Some(SqlErr::UniqueConstraintViolation(_)), _) => {
            ApiError::conflict(format!("{}: a row with this id exists", R::CQRS_ID))
        }
        _ => err.into(),
    }
}

/// A transaction that writes from its first statement (SQLite: `BEGIN IMMEDIATE`, so that it
/// waits for the other connection instead of failing when it starts to write).
async fn begin(db: &DatabaseConnection) -> Result<DatabaseTransaction, ApiError> {
    let options = sea_orm::TransactionOptions {
        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    Ok(db.begin_with_options(options).await?)
}

/// Commits a transaction of ours and wakes the relay: the events written inside it became
/// visible only now.
async fn commit(txn: DatabaseTransaction, master: &Master) -> Result<(), ApiError> {
    txn.commit().await?;
    master.outbox.wake();
    Ok(())
}

/// `POST /<table>s`.
async fn create<R: Resource>(
    master: web::Data<Master>,
    body: web::Json<R::Body>,
) -> Result<HttpResponse, ApiError> {
    let mut row = R::ActiveModel::default();
    R::fill(body.into_inner(), &mut row, Write::Create)?;
    let model = R::table(&master)
        .insert(&master.db, row)
        .await
        .map_err(written::<R>)?;
    Ok(HttpResponse::Created().json(model))
}

/// `PUT /<table>s/{id}`.
async fn replace<R: Resource>(
    master: web::Data<Master>,
    id: web::Path<R::Pk>,
    body: web::Json<R::Body>,
) -> Result<HttpResponse, ApiError> {
    update::<R>(&master, id.into_inner(), body.into_inner(), Write::Replace).await
}

/// `PATCH /<table>s/{id}`.
async fn patch<R: Resource>(
    master: web::Data<Master>,
    id: web::Path<R::Pk>,
    body: web::Json<R::Body>,
) -> Result<HttpResponse, ApiError> {
    update::<R>(&master, id.into_inner(), body.into_inner(), Write::Patch).await
}

/// Updates one row in a transaction of ours, so that a missing row is a 404.
async fn update<R: Resource>(
    master: &Master,
    id: R::Pk,
    body: R::Body,
    write: Write,
) -> Result<HttpResponse, ApiError> {
    let mut row = R::ActiveModel::default();
    row.set(R::pk(), id.clone().into());
    R::fill(body, &mut row, write)?;
    let txn = begin(&master.db).await?;
    if R::find_by_id(id.clone()).one(&txn).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "{} {id} not found",
            R::CQRS_ID
        )));
    }
    let model = R::table(master)
        .update(&txn, row)
        .await
        .map_err(written::<R>)?;
    commit(txn, master).await?;
    Ok(HttpResponse::Ok().json(model))
}

/// `DELETE /<table>s/{id}`: 204, or 404; 409 while other rows refer to it.
async fn delete<R: Resource>(
    master: web::Data<Master>,
    id: web::Path<R::Pk>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match R::remove(&master, id.clone()).await {
        Ok(true) => Ok(HttpResponse::NoContent().finish()),
        Ok(false) => Err(ApiError::not_found(format!(
            "{} {id} not found",
            R::CQRS_ID
        ))),
        Err(e) if e.status() == actix_web::http::StatusCode::CONFLICT => {
            Err(ApiError::conflict(format!(
                "{} {id} is referred to by other rows: delete or change them first",
                R::CQRS_ID
            )))
        }
        Err(e) => Err(e),
    }
}

/// Records a SYNC of each selected row in the outbox, in primary-key order, a page at a time;
/// the relay sends them at once. Answers how many rows were read and synced.
async fn sync(
    master: web::Data<Master>,
    body: web::Json<SyncBody>,
) -> Result<HttpResponse, ApiError> {
    let SyncBody {
        cqrs_id,
        filter,
        queue,
    } = body.into_inner();
    let Some(source) = master.sources.get(cqrs_id.as_str()) else {
        let known: Vec<&str> = master.sources.keys().copied().collect();
        return Err(ApiError::bad_request(format!(
            "cqrs_id {cqrs_id:?} is not one of {}",
            known.join(", ")
        )));
    };
    if queue.as_deref().is_some_and(|q| q.trim().is_empty()) {
        return Err(ApiError::bad_request(
            "queue is blank: leave it out to sync to every replica",
        ));
    }
    let filter = Filter::from_json(&filter)?;
    let (mut synced, mut processed, mut after) = (0, 0, None);
    loop {
        let page = source
            .sync_page(
                &filter,
                after.take(),
                500,
                queue.as_deref(),
                &master.publisher,
            )
            .await?;
        synced += page.synced;
        processed += page.processed;
        match page.last {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    tracing::info!(
        cqrs_id,
        queue = queue.as_deref().unwrap_or("*"),
        synced,
        "sync recorded"
    );
    Ok(HttpResponse::Ok().json(json!({
        "cqrs_id": cqrs_id,
        "queue": queue,
        "processed": processed,
        "synced": synced,
    })))
}

/// `GET /health`: 200 with the count of confirmed publishes, 503 once stopping.
async fn health_check(slot: web::Data<SystemSlot>) -> Result<HttpResponse, ApiError> {
    let metrics = slot
        .metrics()
        .await
        .ok_or_else(|| ApiError::unavailable("stopping"))?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "ok",
        "published": metrics.published,
    })))
}
