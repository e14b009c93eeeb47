//! The example services as a user runs them: the built `examples/master` and
//! `examples/replica` binaries started as two processes, each with its own environment and
//! database, walked over HTTP: rows created, changed and deleted on the master and read back
//! on the replica, a replica row changed behind its back and repaired by `POST /sync`, bad
//! requests refused, and both stopped by SIGTERM.
//!
//! Once over RabbitMQ with PostgreSQL (a virtual host, exchange, queue and two schemas of the
//! run's own), once over Redis with SQLite files (a key space, queue and a directory of the
//! run's own); all removed afterwards, also when the walk fails.
//!
//! The binaries come from `cargo build --all-features --examples`, which
//! `cargo test --workspace --all-features` also does.

mod support;

use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::{Value, json};

use support::db::{Backend, TestDb};
use support::services::{RunDir, Service};

#[actix_rt::test]
async fn over_rabbitmq_with_postgres() {
    support::init_tracing();
    let vhost = support::rabbitmq::Vhost::create("cqrs_svc");
    let broker = Broker {
        url: vhost.url(),
        exchange: support::unique("svc_x"),
        queue: support::unique("svc_q"),
        password: Some("guest"),
    };
    let master_db = TestDb::new(Backend::Postgres, "svc_master").await;
    let replica_db = TestDb::new(Backend::Postgres, "svc_replica").await;
    let dir = RunDir::new();
    walk(
        &broker,
        &dir,
        &master_db.url(),
        &replica_db.url(),
        &replica_db.db,
    )
    .await;
    master_db.cleanup().await;
    replica_db.cleanup().await;
    drop(vhost); // its exchanges and queues with it
}

#[actix_rt::test]
async fn over_redis_with_sqlite() {
    support::init_tracing();
    let space = support::redis::Space::create("svc");
    let broker = Broker {
        url: support::redis::url(),
        exchange: space.exchange.clone(),
        queue: support::unique("svc_q"),
        password: None,
    };
    let dir = RunDir::new(); // the two database files, removed with it
    let (master_url, replica_url) = (dir.sqlite("master"), dir.sqlite("replica"));
    let mut options = sea_orm::ConnectOptions::new(replica_url.clone());
    options.max_connections(1).sqlx_logging(false);
    let replica_db = sea_orm::Database::connect(options)
        .await
        .unwrap_or_else(|e| panic!("{replica_url}: {e}"));
    walk(&broker, &dir, &master_url, &replica_url, &replica_db).await;
    let _ = replica_db.close().await;
    drop(space); // its keys with it
}

/// Where both services meet.
struct Broker {
    url: String,
    exchange: String,
    queue: String,
    /// The password in `url`, which no log may show.
    password: Option<&'static str>,
}

/// The whole walk, with the services' logs in `dir`; `replica_db` is a connection of the
/// test's own to the replica's database. The services are stopped (or killed, on a failure)
/// before it returns.
async fn walk(
    broker: &Broker,
    dir: &RunDir,
    master_url: &str,
    replica_url: &str,
    replica_db: &DatabaseConnection,
) {
    let common = [
        ("CQRS_URL", broker.url.clone()),
        ("CQRS_EXCHANGE", broker.exchange.clone()),
    ];
    // The replica first: its queue must exist before the master publishes.
    let mut env = common.to_vec();
    env.push(("CQRS_QUEUE", broker.queue.clone()));
    env.push(("DATABASE_URL", replica_url.to_owned()));
    let replica = Service::start("replica", &env, dir).await;
    let mut env = common.to_vec();
    env.push(("DATABASE_URL", master_url.to_owned()));
    let master = Service::start("master", &env, dir).await;

    rows_replicate(&master, &replica).await;
    bad_requests_are_refused(&master, &replica).await;
    deletes_cascade(&master, &replica).await;
    drift_is_repaired_by_sync(&master, &replica, replica_db, &broker.queue).await;

    let health = replica.call("GET", "/health", None).await.expect(200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["queue"], broker.queue.as_str());
    assert!(health["applied"].as_u64() >= Some(10), "{health}");
    assert_eq!(health["dead_lettered"], 0, "{health}");
    let health = master.call("GET", "/health", None).await.expect(200);
    assert!(health["published"].as_u64() >= Some(10), "{health}");

    for service in [master, replica] {
        let name = service.name;
        let (code, log) = service.stop().await;
        assert_eq!(code, Some(0), "{name} after SIGTERM:\n{log}");
        assert!(
            log.contains(&format!("{name}: stopped")),
            "{name} did not stop cleanly:\n{log}"
        );
        if let Some(password) = broker.password {
            assert!(
                !log.contains(&format!(":{password}@")),
                "{name} logged the broker's password:\n{log}"
            );
        }
    }
}

/// Creates a publisher, two authors and three books, updates both authors, and reads every
/// row back on the replica as the master has it.
async fn rows_replicate(master: &Service, replica: &Service) {
    let publisher = master
        .call("POST", "/publishers", Some(json!({"name": "Penguin"})))
        .await
        .expect(201);
    let publisher_id = publisher["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{publisher}"));
    let ada = json!({
        "id": 1, "name": "Ada", "email": null, "birth_date": "1815-12-10", "rating": "4.5",
        "publisher_id": publisher_id, "tags": ["math", "poetry"],
    });
    let created = master.call("POST", "/authors", Some(ada)).await.expect(201);
    assert_eq!(created["rating"], "4.50", "stored as numeric(6, 2)");
    assert_eq!(created["email"], Value::Null);
    let alan = json!({"id": 2, "name": "Alan", "rating": 3.25});
    let created = master
        .call("POST", "/authors", Some(alan))
        .await
        .expect(201);
    assert_eq!(created["tags"], json!([]), "the default of an absent list");
    assert_eq!(created["publisher_id"], Value::Null);

    let given = "6f1e3c2a-94d5-4f0b-8c1e-1f2a3b4c5d6e";
    let books = [
        json!({"id": given, "title": "Notes", "author_id": 1, "price": "12.99",
               "published": "1843-09-01", "extra": {"pages": 65, "sketch": {"engine": "analytical"}}}),
        json!({"title": "Letters", "author_id": 1, "price": "7.50"}),
        json!({"title": "Computable Numbers", "author_id": 2, "price": 20, "published": "1936-11-12"}),
    ];
    let mut book_ids = Vec::new();
    for book in books {
        let created = master.call("POST", "/books", Some(book)).await.expect(201);
        book_ids.push(created["id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(book_ids[0], given);
    assert_eq!(
        book_ids[1].len(),
        36,
        "a UUID made by the master: {}",
        book_ids[1]
    );

    let changed = master
        .call(
            "PATCH",
            "/authors/1",
            Some(json!({"name": "Ada Lovelace", "email": "ada@example.com"})),
        )
        .await
        .expect(200);
    assert_eq!(changed["cqrs_revision"], 1);
    assert_eq!(
        changed["tags"],
        json!(["math", "poetry"]),
        "PATCH keeps the rest"
    );
    let replaced = master
        .call(
            "PUT",
            "/authors/2",
            Some(json!({"name": "Alan Turing", "rating": "3.30", "tags": ["logic"]})),
        )
        .await
        .expect(200);
    assert_eq!(replaced["cqrs_revision"], 1);

    let mut paths = vec![
        format!("/publishers/{publisher_id}"),
        "/authors/1".to_owned(),
        "/authors/2".to_owned(),
    ];
    paths.extend(book_ids.iter().map(|id| format!("/books/{id}")));
    for path in &paths {
        let on_master = master.call("GET", path, None).await.expect(200);
        let copy = replica
            .eventually(path, "the replica to have the master's revision", |r| {
                r.status == 200 && r.json()["cqrs_revision"] == on_master["cqrs_revision"]
            })
            .await
            .json();
        assert_eq!(comparable(&copy), comparable(&on_master), "{path}");
    }
    let copy = replica.call("GET", "/authors/1", None).await.expect(200);
    assert_eq!(
        copy["publisher_id"], publisher_id,
        "the key `publisher` stored as publisher_id"
    );
    assert_eq!(copy["email"], "ada@example.com");
    let copy = replica.call("GET", &paths[3], None).await.expect(200);
    assert_eq!(copy["author_id"], 1, "the key `author` stored as author_id");
    assert_eq!(copy["extra"]["sketch"]["engine"], "analytical");
    let list = replica.call("GET", "/books", None).await.expect(200);
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
}

/// A row as both services show it, with decimals and timestamps in one form (SQLite may keep
/// `4.50` as `4.5`; the wire carries `cqrs_updated` to the microsecond).
fn comparable(row: &Value) -> Value {
    let mut row = row.clone();
    for field in ["rating", "price"] {
        if let Some(text) = row.get(field).and_then(Value::as_str) {
            let value: Decimal = text
                .parse()
                .unwrap_or_else(|e| panic!("{field} {text}: {e}"));
            row[field] = json!(value.normalize().to_string());
        }
    }
    if let Some(text) = row.get("cqrs_updated").and_then(Value::as_str) {
        let at = chrono::DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("cqrs_updated {text}: {e}"));
        row["cqrs_updated"] = json!(at.timestamp_micros());
    }
    row
}

/// Requests the master refuses, and what the replica does not serve.
async fn bad_requests_are_refused(master: &Service, replica: &Service) {
    let not_json = master.call_raw("POST", "/authors", b"{\"id\": 3,").await;
    assert_eq!(not_json.status, 400, "{}", not_json.body);
    let wrong_type = json!({"id": "three", "name": "X", "rating": "1"});
    let answer = master.call("POST", "/authors", Some(wrong_type)).await;
    assert!(
        answer.expect(400)["error"]
            .as_str()
            .is_some_and(|e| e.contains("id"))
    );
    let cases = [
        (
            "POST",
            "/authors",
            json!({"id": 2, "name": "Again", "rating": "1"}),
            409,
        ),
        ("POST", "/authors", json!({"id": 3, "rating": "1"}), 400),
        (
            "POST",
            "/authors",
            json!({"id": 3, "name": "X", "rating": "1.234"}),
            400,
        ),
        (
            "POST",
            "/authors",
            json!({"id": 3, "name": "X", "rating": "1", "publisher_id": 999}),
            400,
        ),
        (
            "POST",
            "/authors",
            json!({"id": 3, "name": "X", "rating": "1", "nickname": "x"}),
            400,
        ),
        (
            "POST",
            "/books",
            json!({"title": "Orphan", "author_id": 999, "price": "1"}),
            400,
        ),
        ("PATCH", "/authors/999", json!({"name": "Nobody"}), 404),
        ("PATCH", "/authors/1", json!({"id": 5}), 400),
        (
            "POST",
            "/sync",
            json!({"cqrs_id": "nope", "filter": {}}),
            400,
        ),
        (
            "POST",
            "/sync",
            json!({"cqrs_id": "author", "filter": {"nope__in": [1]}}),
            400,
        ),
    ];
    for (method, path, body, status) in cases {
        let answer = master.call(method, path, Some(body.clone())).await;
        assert_eq!(
            answer.status, status,
            "{method} {path} {body}: {}",
            answer.body
        );
        assert!(answer.json()["error"].is_string(), "{}", answer.body);
    }
    master.call("GET", "/authors/999", None).await.expect(404);
    master.call("GET", "/authors/abc", None).await.expect(400);
    let random = "/books/00000000-0000-4000-8000-000000000000";
    master.call("DELETE", random, None).await.expect(404);
    replica.call("GET", "/authors/999", None).await.expect(404);
    replica.call("GET", random, None).await.expect(404);
    replica
        .call("POST", "/authors", Some(json!({"id": 9})))
        .await
        .expect(405);
}

/// Deleting an author deletes its books, and the replica loses all of them; a publisher that
/// authors refer to stays.
async fn deletes_cascade(master: &Service, replica: &Service) {
    let books = master.call("GET", "/books", None).await.expect(200);
    let of_ada: Vec<String> = books
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["author_id"] == 1)
        .filter_map(|b| b["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(of_ada.len(), 2, "{books}");
    let publisher =
        master.call("GET", "/authors/1", None).await.expect(200)["publisher_id"].clone();
    let answer = master
        .call("DELETE", &format!("/publishers/{publisher}"), None)
        .await;
    assert_eq!(
        answer.status, 409,
        "Ada still refers to it: {}",
        answer.body
    );

    master.call("DELETE", "/authors/1", None).await.expect(204);
    master.call("GET", "/authors/1", None).await.expect(404);
    for id in &of_ada {
        master
            .call("GET", &format!("/books/{id}"), None)
            .await
            .expect(404);
    }
    replica
        .eventually("/authors/1", "the replica to delete the author", |r| {
            r.status == 404
        })
        .await;
    for id in &of_ada {
        replica
            .eventually(
                &format!("/books/{id}"),
                "the replica to delete a book",
                |r| r.status == 404,
            )
            .await;
    }
    let left = replica.call("GET", "/books", None).await.expect(200);
    assert_eq!(
        left.as_array().map(Vec::len),
        Some(1),
        "Alan's book stays: {left}"
    );
    master
        .call("DELETE", &format!("/publishers/{publisher}"), None)
        .await
        .expect(204);
    replica
        .eventually(
            &format!("/publishers/{publisher}"),
            "the publisher gone",
            |r| r.status == 404,
        )
        .await;
}

/// A replica row changed in its database (drift) comes back to the master's values after a
/// SYNC to that replica's queue.
async fn drift_is_repaired_by_sync(
    master: &Service,
    replica: &Service,
    replica_db: &DatabaseConnection,
    queue: &str,
) {
    replica_db
        .execute_unprepared("UPDATE author SET name = 'Drifted', tags = '[]' WHERE id = 2")
        .await
        .unwrap_or_else(|e| panic!("drift: {e}"));
    let drifted = replica.call("GET", "/authors/2", None).await.expect(200);
    assert_eq!(drifted["name"], "Drifted");

    let body = json!({"cqrs_id": "author", "filter": {"id__in": [2]}, "queue": queue});
    let answer = master.call("POST", "/sync", Some(body)).await.expect(200);
    assert_eq!(answer["synced"], 1, "{answer}");
    let repaired = replica
        .eventually("/authors/2", "the SYNC to repair the row", |r| {
            r.status == 200 && r.json()["name"] == "Alan Turing"
        })
        .await
        .json();
    assert_eq!(repaired["tags"], json!(["logic"]));
    assert_eq!(repaired["cqrs_revision"], 1, "a SYNC keeps the revision");
}
