//! The `cqrs` command end to end, as a user runs it: configuration files, real databases
//! (PostgreSQL, MariaDB, SQLite), real brokers (RabbitMQ, Redis), processes and pipes.

#![cfg(feature = "cli")]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;
use support::cli::{Consumer, Dir, config_text, create_book, fill_books, pipeline, run};
use support::db::{Backend, TestDb};
use support::rabbitmq::Vhost;
use support::redis::Space;
use support::wait_until;

/// The `[replicas.book]` section over `table`.
fn replica_section(table: &str) -> String {
    format!("[replicas.book]\ntable = \"{table}\"\nkeys = {{ author = \"author_id\" }}\n")
}

/// The `[masters.book]` section over `table`.
fn master_section(table: &str) -> String {
    format!("[masters.book]\ntable = \"{table}\"\nkeys = {{ author = \"author_id\" }}\n")
}

fn rabbitmq_broker(vhost: &Vhost, queue: Option<&str>) -> String {
    let queue = queue.map_or_else(String::new, |q| format!("queue = \"{q}\""));
    format!(
        "url = \"{}\"\nexchange = \"cqrs_cli\"\n{queue}",
        vhost.url()
    )
}

fn redis_broker(space: &Space, queue: Option<&str>) -> String {
    let queue = queue.map_or_else(String::new, |q| format!("queue = \"{q}\""));
    format!(
        "url = \"{}\"\nexchange = \"{}\"\n{queue}",
        support::redis::url(),
        space.exchange
    )
}

/// A table's rows as `bulk-dump` writes them, decimals compared as numbers (databases differ
/// in trailing zeros), keyed by pk.
async fn dumped(config: &Path) -> Vec<Json> {
    let ran = run(config, &["bulk-dump", "--cqrs-id", "book", "-o", "-"], b"")
        .await
        .ok();
    let mut lines = ran.stdout.lines();
    assert_eq!(lines.next(), Some("book"), "{ran:?}");
    lines
        .map(|l| {
            let mut row: Json = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            if let Some(price) = row.get("price").and_then(Json::as_str) {
                let price: f64 = price.parse().unwrap_or_else(|e| panic!("{price}: {e}"));
                row["price"] = Json::from(price);
            }
            row
        })
        .collect()
}

fn ids(rows: &[Json]) -> BTreeSet<i64> {
    rows.iter().filter_map(|r| r["id"].as_i64()).collect()
}

/// A master and a replica database with a `book` table each (`title` nullable on the master
/// when `title_null`), `rows` books on the master, and their configuration files: the
/// master's with `[masters.book]`; the replica's on queue `books` with `[replicas.book]` and,
/// to compare tables with `dumped`, `[masters.book]` over its own table.
struct Sides {
    master: TestDb,
    replica: TestDb,
    master_config: PathBuf,
    replica_config: PathBuf,
}

async fn sides(
    dir: &Dir,
    (master_backend, replica_backend): (Backend, Backend),
    broker: &dyn Fn(Option<&str>) -> String,
    rows: u64,
    title_null: bool,
) -> Sides {
    let master = TestDb::new(master_backend, "cli_master").await;
    let replica = TestDb::new(replica_backend, "cli_replica").await;
    create_book(&master, "book", title_null).await;
    create_book(&replica, "book", false).await;
    fill_books(&master, "book", rows).await;
    let master_config = dir.file(
        "m.toml",
        &config_text(&broker(None), &master, &master_section("book")),
    );
    let replica_text = format!("{}{}", replica_section("book"), master_section("book"));
    let replica_config = dir.file(
        "r.toml",
        &config_text(&broker(Some("books")), &replica, &replica_text),
    );
    Sides {
        master,
        replica,
        master_config,
        replica_config,
    }
}

fn memory_broker(queue: Option<&str>) -> String {
    let queue = queue.map_or_else(String::new, |q| format!("queue = \"{q}\""));
    format!("url = \"memory://\"\n{queue}")
}

#[actix_rt::test]
async fn usage_errors_exit_2_and_say_what_is_wrong() {
    let dir = Dir::new("usage");
    let db = TestDb::new(Backend::Sqlite, "cli_usage").await;
    create_book(&db, "book", false).await;
    let broker = "url = \"memory://\"\nqueue = \"q\"";
    let both = format!("{}{}", replica_section("book"), master_section("book"));
    let config = dir.file("c.toml", &config_text(broker, &db, &both));

    run(&config, &[], b"").await.fails(2, "Usage");
    run(&config, &["nope"], b"")
        .await
        .fails(2, "unrecognized subcommand");
    run(&config, &["sync", "--cqrs-id", "book"], b"")
        .await
        .fails(2, "-f '{}' every row");
    run(&config, &["sync", "--cqrs-id", "nope", "-f", "{}"], b"")
        .await
        .fails(2, "wrong CQRS id \"nope\": the master ids are book");
    run(&config, &["consume", "--cqrs-id", "author"], b"")
        .await
        .fails(2, "the replica ids are book");
    run(
        &config,
        &["sync", "--cqrs-id", "book", "-f", r#"{"color": "red"}"#],
        b"",
    )
    .await
    .fails(2, "no column \"color\"");
    run(
        &config,
        &["sync", "--cqrs-id", "book", "-f", r#"{"id__like": 1}"#],
        b"",
    )
    .await
    .fails(2, "unknown lookup \"like\"");
    run(
        &config,
        &["sync", "--cqrs-id", "book", "-f", r#"{"id": "1 OR 1=1"}"#],
        b"",
    )
    .await
    .fails(2, "\"id\"");
    run(
        &config,
        &["sync", "--cqrs-id", "book", "-f", "{not json"],
        b"",
    )
    .await
    .fails(2, "not valid JSON");
    run(
        &config,
        &["bulk-dump", "--cqrs-id", "book", "--batch", "0"],
        b"",
    )
    .await
    .fails(2, "--batch");
    run(&config, &["bulk-load", "-i", "/nonexistent/dump"], b"")
        .await
        .fails(2, "can't be read");
    run(&config, &["bulk-load", "-i", "-"], b"")
        .await
        .fails(2, "is empty");
    run(&config, &["bulk-load", "-i", "-"], b"author\n{}\n")
        .await
        .fails(2, "wrong CQRS id \"author\"");
    run(&config, &["diff-replica"], b"")
        .await
        .fails(2, "the input is empty");
    run(&config, &["topology", "--force"], b"")
        .await
        .fails(2, "--delete");
    let existing = dir.file("exists.dump", "");
    run(
        &config,
        &[
            "bulk-dump",
            "--cqrs-id",
            "book",
            "-o",
            &existing.display().to_string(),
        ],
        b"",
    )
    .await
    .fails(2, "exists");

    // The file itself.
    let bad = dir.file(
        "bad.toml",
        "url = \"memory://\"\n[replicas.book]\ntable = \"book\"\n",
    );
    run(&bad, &["consume"], b"")
        .await
        .fails(2, "no database_url");
    let bad = dir.file(
        "bad2.toml",
        &config_text(broker, &db, "[replicas.book]\ntable = \"missing\"\n"),
    );
    run(&bad, &["consume"], b"")
        .await
        .fails(2, "[book]: config: missing: no such table");
    let bad = dir.file(
        "bad3.toml",
        &config_text(
            broker,
            &db,
            "[replicas.book]\ntable = \"book\"\ncolour = 1\n",
        ),
    );
    run(&bad, &["consume"], b"")
        .await
        .fails(2, "unknown field `colour`");
    let bad = dir.file("bad4.toml", &config_text(broker, &db, "nonsense = 1\n"));
    run(&bad, &["consume"], b"").await.fails(2, "nonsense");
    let bad = dir.file(
        "bad5.toml",
        &config_text(
            broker,
            &db,
            "[replicas.book]\ntable = \"book\"\nkeys = { a = \"nope\" }\n",
        ),
    );
    run(&bad, &["consume"], b"")
        .await
        .fails(2, "no column \"nope\"");
    let secret = dir.file(
        "secret.toml",
        "url = \"memory://\"\ndatabase_url = \"postgres://u:hunter2@127.0.0.1:1/x\"\n[replicas.book]\ntable = \"book\"\n",
    );
    let ran = run(&secret, &["consume"], b"").await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(!ran.stderr.contains("hunter2"), "{ran:?}");
    db.cleanup().await;
}

#[actix_rt::test]
async fn tables_are_read_from_each_database() {
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let db = TestDb::new(backend, "cli_introspect").await;
        create_book(&db, "book", true).await;
        fill_books(&db, "book", 5).await;
        let dir = Dir::new("introspect");
        let text = config_text(
            "url = \"memory://\"\nqueue = \"q\"",
            &db,
            &format!("{}{}", replica_section("book"), master_section("book")),
        );
        let config = dir.file("c.toml", &text);
        let rows = dumped(&config).await;
        assert_eq!(rows.len(), 5, "{backend:?}");
        let second = &rows[1];
        assert_eq!(second["id"], 2, "{backend:?}: {second}");
        assert_eq!(second["title"], "Book 2");
        assert_eq!(second["price"], 2.5);
        assert_eq!(second["published"], "2020-01-03");
        assert_eq!(second["extra"], serde_json::json!({"n": 2}), "{backend:?}");
        assert_eq!(second["author"], 2);
        assert_eq!(second["cqrs_revision"], 2);
        assert_eq!(
            second["cqrs_updated"], "2026-11-30 10:00:02.500000+00:00",
            "{backend:?}"
        );
        assert!(rows[2]["published"].is_null());

        // What a replica cannot be: no primary key, two columns in it, no cqrs columns, a
        // type the adapters do not convert.
        use sea_orm::ConnectionTrait;
        let blob = if backend == Backend::Postgres {
            "BYTEA"
        } else {
            "BLOB"
        };
        for (table, ddl, error) in [
            ("nopk", "CREATE TABLE nopk (id INTEGER, cqrs_revision INTEGER, cqrs_updated DATE)".to_owned(), "no primary key"),
            ("twopk", "CREATE TABLE twopk (a INTEGER, b INTEGER, cqrs_revision INTEGER, cqrs_updated DATE, PRIMARY KEY (a, b))".to_owned(), "single-column primary key"),
            ("nocqrs", "CREATE TABLE nocqrs (id INTEGER PRIMARY KEY)".to_owned(), "no cqrs_revision"),
            ("blobby", format!("CREATE TABLE blobby (id INTEGER PRIMARY KEY, b {blob}, cqrs_revision INTEGER, cqrs_updated DATE)"), "column \"b\" has type"),
        ] {
            db.db.execute_unprepared(&ddl).await.unwrap_or_else(|e| panic!("{ddl}: {e}"));
            let config = dir.file(
                "bad.toml",
                &config_text("url = \"memory://\"", &db, &replica_section(table)),
            );
            run(&config, &["consume"], b"").await.fails(2, error);
        }
        db.cleanup().await;
    }
}

/// 100,000 rows out of PostgreSQL and into MariaDB, through a file, in batches that do not
/// divide the row count; then the same file again: every row is skipped, none is lost.
#[actix_rt::test]
async fn dump_and_load_round_trip_100_000_rows() {
    let dir = Dir::new("roundtrip");
    let Sides {
        master,
        replica,
        master_config,
        replica_config,
    } = sides(
        &dir,
        (Backend::Postgres, Backend::MySql),
        &memory_broker,
        100_000,
        false,
    )
    .await;
    let file = dir.path("book.dump").display().to_string();

    let ran = run(
        &master_config,
        &[
            "bulk-dump",
            "--cqrs-id",
            "book",
            "-o",
            &file,
            "--batch",
            "7777",
        ],
        b"",
    )
    .await
    .ok();
    assert!(ran.stderr.contains("100000 instance(s) saved."), "{ran:?}");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text.lines().count(), 100_001);
    let ran = run(
        &replica_config,
        &["bulk-load", "-i", &file, "--batch", "3000"],
        b"",
    )
    .await
    .ok();
    assert!(ran.stderr.contains("100000 instance(s) loaded."), "{ran:?}");
    assert_eq!(dumped(&replica_config).await, dumped(&master_config).await);

    // Again, from stdin: nothing is newer, nothing changes.
    let ran = run(&replica_config, &["bulk-load", "-i", "-"], text.as_bytes())
        .await
        .ok();
    assert!(ran.stderr.contains("0 instance(s) loaded."), "{ran:?}");
    assert!(ran.stderr.contains("100000 instance(s) skipped"), "{ran:?}");

    // --clear, and a file with broken lines: each is reported by number, the rest load, and
    // the command exits 1.
    let mut lines: Vec<String> = text.lines().take(11).map(str::to_owned).collect();
    lines[3] = "{not json".into();
    lines[5] = "[1, 2]".into();
    lines[7] = lines[7].replace("\"title\":\"Book 7\"", "\"title\":null");
    lines.push(String::new());
    let ran = run(
        &replica_config,
        &["bulk-load", "-i", "-", "--clear", "--batch", "4"],
        lines.join("\n").as_bytes(),
    )
    .await;
    ran.fails(1, "line 4: dump line can't be parsed");
    let rows = dumped(&replica_config).await;
    assert_eq!(ids(&rows), BTreeSet::from([1, 2, 4, 6, 8, 9, 10]));

    // An empty table dumps its id line only.
    use sea_orm::ConnectionTrait;
    master
        .db
        .execute_unprepared("DELETE FROM book")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ran = run(
        &master_config,
        &["bulk-dump", "--cqrs-id", "book", "-o", "-"],
        b"",
    )
    .await
    .ok();
    assert_eq!(ran.stdout, "book\n");
    master.cleanup().await;
    replica.cleanup().await;
}

/// A replica run by `consume` from its file alone, fed by `sync` with filters, broadcast and
/// to its queue, over RabbitMQ; then stopped by SIGTERM.
#[actix_rt::test]
async fn sync_by_filter_reaches_a_standalone_replica_over_rabbitmq() {
    let dir = Dir::new("sync");
    let vhost = Vhost::create("cqrs_cli_sync");
    let Sides {
        master,
        replica,
        master_config,
        replica_config,
    } = sides(
        &dir,
        (Backend::MySql, Backend::Sqlite),
        &|queue| rabbitmq_broker(&vhost, queue),
        250,
        false,
    )
    .await;
    let consumer = Consumer::start(&replica_config, &["-w", "2"], &dir).await;

    let expect = |filter: &'static str, expected: BTreeSet<i64>, extra: &'static [&'static str]| {
        let (master_config, replica_config) = (master_config.clone(), replica_config.clone());
        async move {
            let mut args = vec!["sync", "--cqrs-id", "book", "-f", filter, "--batch", "7"];
            args.extend_from_slice(extra);
            let ran = run(&master_config, &args, b"").await.ok();
            let synced = format!("{} instance(s) synced.", expected.len());
            assert!(ran.stderr.contains(&synced), "{filter}: {ran:?}");
            wait_until(filter, Duration::from_secs(30), || {
                let (replica_config, expected) = (replica_config.clone(), expected.clone());
                async move { expected.is_subset(&ids(&dumped(&replica_config).await)) }
            })
            .await;
        }
    };
    let filters: [(&str, BTreeSet<i64>, &[&str]); 4] = [
        (r#"{"id__in": [1, 2, 3]}"#, BTreeSet::from([1, 2, 3]), &[]),
        (
            r#"{"title__startswith": "Book 24"}"#,
            (240..=249).chain([24]).collect(),
            &[],
        ),
        (
            r#"{"pk__gt": 200, "published__isnull": true}"#,
            (201..=250).filter(|i| i % 3 == 0).collect(),
            &["-q", "books"],
        ),
        (
            r#"{"price__lte": "12.5", "author__isnull": false}"#,
            (1..=10).filter(|i| i % 7 != 0).collect(),
            &[],
        ),
    ];
    let mut union = BTreeSet::new();
    for (filter, expected, extra) in filters {
        union.extend(expected.iter().copied());
        expect(filter, expected, extra).await;
    }
    let all = dumped(&replica_config).await;
    assert_eq!(ids(&all), union, "only the selected rows were synced");
    let masters: Vec<Json> = dumped(&master_config)
        .await
        .into_iter()
        .filter(|r| union.contains(&r["id"].as_i64().unwrap_or_default()))
        .collect();
    assert_eq!(all, masters, "the synced rows are the master's");

    let ran = run(
        &master_config,
        &["sync", "--cqrs-id", "book", "-f", r#"{"id": 999}"#],
        b"",
    )
    .await
    .ok();
    assert!(
        ran.stderr.contains("No objects found for filter!"),
        "{ran:?}"
    );
    run(
        &master_config,
        &["sync", "--cqrs-id", "book", "-f", "{}", "-q", "nobody"],
        b"",
    )
    .await
    .fails(1, "no queue is bound");

    let (code, log) = consumer.stop("-TERM").await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("SIGTERM: finishing what is in flight") && log.contains("stopped"),
        "{log}"
    );
    master.cleanup().await;
    replica.cleanup().await;
}

/// Both repair pipelines, through pipes and files, over Redis: a replica with stale, missing
/// and extra rows becomes equal to the master.
#[actix_rt::test]
async fn the_diff_pipelines_make_the_replica_equal_over_redis() {
    let dir = Dir::new("diff");
    let space = Space::create("cqrs_cli_diff");
    let Sides {
        master,
        replica,
        master_config,
        replica_config,
    } = sides(
        &dir,
        (Backend::Postgres, Backend::MySql),
        &|queue| redis_broker(&space, queue),
        2_500,
        false,
    )
    .await;
    // The replica starts from a dump, then drifts: stale revisions, lost rows, rows the
    // master deleted.
    let file = dir.path("book.dump").display().to_string();
    run(
        &master_config,
        &["bulk-dump", "--cqrs-id", "book", "-o", &file],
        b"",
    )
    .await
    .ok();
    run(&replica_config, &["bulk-load", "-i", &file], b"")
        .await
        .ok();
    use sea_orm::ConnectionTrait;
    for sql in [
        "UPDATE book SET title = 'stale', cqrs_revision = 99 WHERE id IN (5, 999, 1000, 1001, 2500)",
        "DELETE FROM book WHERE id IN (7, 1500, 2499)",
        "INSERT INTO book SELECT id + 10000, title, price, published, extra, author_id, cqrs_revision, cqrs_updated FROM book WHERE id <= 3",
    ] {
        replica
            .db
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    master
        .db
        .execute_unprepared("DELETE FROM book WHERE id IN (10, 11)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let consumer = Consumer::start(&replica_config, &[], &dir).await;

    // Revisions: master | replica | master, the middle output kept in a file.
    let diff = dir.path("diff.txt").display().to_string();
    let ran = pipeline(&[
        (
            &master_config,
            &["diff-master", "--cqrs-id", "book", "--batch", "1000"],
        ),
        (&replica_config, &["diff-replica", "--batch", "300"]),
    ])
    .await
    .ok();
    std::fs::write(&diff, &ran.stdout).unwrap_or_else(|e| panic!("{e}"));
    let lines = ran.lines();
    assert!(
        lines[0].starts_with("book,") && lines[0].ends_with(",books"),
        "{ran:?}"
    );
    let to_sync: BTreeSet<i64> = lines[1..]
        .iter()
        .flat_map(|l| serde_json::from_str::<Vec<i64>>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(
        to_sync,
        BTreeSet::from([5, 7, 999, 1000, 1001, 1500, 2499, 2500])
    );
    let text = std::fs::read(&diff).unwrap_or_else(|e| panic!("{e}"));
    let ran = run(&master_config, &["diff-sync", "--batch", "3"], &text)
        .await
        .ok();
    assert!(ran.stderr.contains("8 instance(s) synced."), "{ran:?}");

    // Deletions: replica | master | replica, all through pipes.
    let ran = pipeline(&[
        (
            &replica_config,
            &[
                "deleted-diff-replica",
                "--cqrs-id",
                "book",
                "--batch",
                "700",
            ],
        ),
        (&master_config, &["deleted-diff-master"]),
        (&replica_config, &["deleted-sync-replica"]),
    ])
    .await
    .ok();
    assert!(ran.stderr.contains("5 instance(s) deleted."), "{ran:?}");

    let expected = dumped(&master_config).await;
    assert_eq!(expected.len(), 2_498);
    wait_until("replica == master", Duration::from_secs(30), || {
        let (replica_config, expected) = (replica_config.clone(), expected.clone());
        async move { dumped(&replica_config).await == expected }
    })
    .await;
    // Nothing left to do.
    let ran = pipeline(&[
        (&master_config, &["diff-master", "--cqrs-id", "book"]),
        (&replica_config, &["diff-replica"]),
    ])
    .await
    .ok();
    assert_eq!(ran.lines().len(), 1, "{ran:?}");

    // Broken input is refused by line number.
    run(
        &replica_config,
        &["diff-replica"],
        b"book,now\n[[1, 2], [3]]\n",
    )
    .await
    .fails(1, "line 2: expected a JSON array of [pk, revision] pairs");
    run(
        &master_config,
        &["deleted-diff-master"],
        b"book,now\n{\"a\": 1}\n",
    )
    .await
    .fails(1, "line 2: expected a JSON array of primary keys");
    run(&master_config, &["diff-sync"], b"nope,now,None\n[1]\n")
        .await
        .fails(2, "wrong CQRS id \"nope\"");
    let (code, log) = consumer.stop("-INT").await;
    assert_eq!(code, 0, "{log}");
    master.cleanup().await;
    replica.cleanup().await;
}

/// Dead letters a user can see, fix and replay: rows the replica refuses (a NOT NULL column
/// the master leaves empty) are dead-lettered; `dump` shows them and leaves them; after the
/// schema is fixed, `retry` brings them back and they apply; `purge` and `topology --delete`
/// clear the rest.
async fn dead_letters_and_topology(broker: impl Fn(Option<&str>) -> String) {
    let dir = Dir::new("dead_letters");
    let Sides {
        master,
        replica,
        master_config,
        replica_config,
    } = sides(
        &dir,
        (Backend::Sqlite, Backend::Postgres),
        &broker,
        20,
        true,
    )
    .await;
    use sea_orm::ConnectionTrait;
    master
        .db
        .execute_unprepared("UPDATE book SET title = NULL WHERE id % 4 = 0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let consumer = Consumer::start(&replica_config, &[], &dir).await;
    run(
        &master_config,
        &["sync", "--cqrs-id", "book", "-f", "{}"],
        b"",
    )
    .await
    .ok();
    let dump = |extra: &'static [&'static str]| {
        let replica_config = replica_config.clone();
        async move {
            let mut args = vec!["dead-letters", "dump"];
            args.extend_from_slice(extra);
            let ran = run(&replica_config, &args, b"").await.ok();
            ran.lines()
                .iter()
                .map(|l| serde_json::from_str::<Json>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
                .collect::<Vec<_>>()
        }
    };
    wait_until("5 dead letters", Duration::from_secs(30), || async {
        dump(&[]).await.len() == 5
    })
    .await;
    let letters = dump(&[]).await;
    for letter in &letters {
        assert_eq!(letter["reason"], "invalid_data", "{letter}");
        assert!(
            letter["error"]
                .as_str()
                .is_some_and(|e| e.contains("NOT NULL")),
            "{letter}"
        );
        assert_eq!(letter["cqrs_id"], "book");
        assert_eq!(letter["body"]["signal_type"], "SYNC");
        assert!(letter["body"]["instance_data"]["title"].is_null());
    }
    let dead: BTreeSet<i64> = letters
        .iter()
        .filter_map(|l| l["body"]["instance_pk"].as_i64())
        .collect();
    assert_eq!(dead, BTreeSet::from([4, 8, 12, 16, 20]));
    assert_eq!(dump(&[]).await.len(), 5, "dump takes nothing");
    assert_eq!(dump(&["--limit", "2"]).await.len(), 2);
    assert_eq!(dump(&["--cqrs-id", "author"]).await.len(), 0);

    // The operator fixes the schema, restarts the replica, and replays two.
    let (code, log) = consumer.stop("-TERM").await;
    assert_eq!(code, 0, "{log}");
    replica
        .db
        .execute_unprepared("ALTER TABLE book ALTER COLUMN title DROP NOT NULL")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let consumer = Consumer::start(&replica_config, &[], &dir).await;
    let ran = run(
        &replica_config,
        &["dead-letters", "retry", "--limit", "2"],
        b"",
    )
    .await
    .ok();
    assert!(ran.stderr.contains("Retried: 2"), "{ran:?}");
    wait_until("17 rows", Duration::from_secs(30), || async {
        dumped(&replica_config).await.len() == 17
    })
    .await;
    assert_eq!(dump(&[]).await.len(), 3);
    let (code, log) = consumer.stop("-TERM").await;
    assert_eq!(code, 0, "{log}");

    // What consume declared, with the three dead letters in it; deleting it is refused
    // until they are purged.
    let ran = run(&replica_config, &["topology"], b"").await.ok();
    let dead_letter_line = ran
        .lines()
        .into_iter()
        .find(|l| l.contains("dead_letter_books"))
        .unwrap_or_else(|| panic!("{ran:?}"))
        .to_owned();
    assert!(dead_letter_line.contains(" 3 "), "{dead_letter_line}");
    run(&replica_config, &["topology", "--delete"], b"")
        .await
        .fails(2, "force");
    let ran = run(
        &replica_config,
        &["dead-letters", "purge", "--cqrs-id", "author"],
        b"",
    )
    .await
    .ok();
    assert!(ran.stderr.contains("Purged: 0"), "{ran:?}");
    let ran = run(&replica_config, &["dead-letters", "purge"], b"")
        .await
        .ok();
    assert!(ran.stderr.contains("Purged: 3"), "{ran:?}");
    let ran = run(&replica_config, &["topology", "--delete"], b"")
        .await
        .ok();
    assert!(ran.lines().iter().any(|l| l.ends_with("books")), "{ran:?}");
    let ran = run(&replica_config, &["topology"], b"").await.ok();
    assert!(!ran.stdout.contains("books"), "{ran:?}");
    master.cleanup().await;
    replica.cleanup().await;
}

#[actix_rt::test]
async fn dead_letters_and_topology_over_rabbitmq() {
    let vhost = Vhost::create("cqrs_cli_dl");
    dead_letters_and_topology(|queue| rabbitmq_broker(&vhost, queue)).await;
}

#[actix_rt::test]
async fn dead_letters_and_topology_over_redis() {
    let space = Space::create("cqrs_cli_dl");
    dead_letters_and_topology(|queue| redis_broker(&space, queue)).await;
}

/// A second signal does not wait for the graceful shutdown: here an apply is stuck on a
/// table the test holds locked, so the first signal's shutdown cannot end by itself.
#[actix_rt::test]
async fn a_second_signal_exits_at_once() {
    use sea_orm::ConnectionTrait;
    let dir = Dir::new("signals");
    let vhost = Vhost::create("cqrs_cli_sig");
    let master = TestDb::new(Backend::Sqlite, "cli_sig_master").await;
    let replica = TestDb::new(Backend::Sqlite, "cli_sig").await;
    create_book(&master, "book", false).await;
    fill_books(&master, "book", 3).await;
    create_book(&replica, "book", false).await;
    let master_config = dir.file(
        "m.toml",
        &config_text(
            &rabbitmq_broker(&vhost, None),
            &master,
            &master_section("book"),
        ),
    );
    let config = dir.file(
        "r.toml",
        &config_text(
            &rabbitmq_broker(&vhost, Some("books")),
            &replica,
            &replica_section("book"),
        ),
    );
    let consumer = Consumer::start(&config, &[], &dir).await;
    let lock = replica.reconnect().await;
    lock.execute_unprepared("BEGIN EXCLUSIVE")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    run(
        &master_config,
        &["sync", "--cqrs-id", "book", "-f", "{}"],
        b"",
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, log) = consumer.stop_twice().await;
    assert_eq!(code, 130, "{log}");
    assert!(log.contains("SIGINT: exiting now"), "{log}");
    lock.execute_unprepared("ROLLBACK")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    master.cleanup().await;
    replica.cleanup().await;
}

/// The command tree mounted in a service's own binary: its own master table (with its
/// serializer and outbox) and replica table, in code, on the memory transport.
#[actix_rt::test]
async fn the_commands_run_embedded_over_tables_built_in_code() {
    use cqrs_sync::cli::{Command, SyncArgs, Tools};
    use cqrs_sync::orm::{MasterTable, Outbox, ReplicaTable};
    use cqrs_sync::prelude::*;
    use sea_orm::ConnectionTrait;
    use support::entities::author;

    let db = TestDb::new(Backend::Sqlite, "cli_embedded").await;
    db.create(author::Entity).await;
    let outbox = Outbox::new(db.db.clone());
    outbox
        .create_table()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let replica_db = TestDb::new(Backend::Sqlite, "cli_embedded_replica").await;
    replica_db.create(author::Entity).await;
    // Systems that connect `memory://<name>` share its broker within one actix system.
    let config = CqrsConfig::default()
        .with_url(support::unique("memory://embedded"))
        .with_queue("embedded");
    let table =
        MasterTable::new("author", author::Entity, &outbox).unwrap_or_else(|e| panic!("{e}"));
    // The service's replica, consuming as it always does.
    let replica = CqrsSystem::builder()
        .config(config.clone())
        .replica(ReplicaModel::new(
            "author",
            ReplicaTable::new(replica_db.db.clone(), author::Entity)
                .unwrap_or_else(|e| panic!("{e}")),
        ))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for id in 1..=5 {
        db.db
            .execute_unprepared(&format!(
                "INSERT INTO author (id, name, cqrs_revision, cqrs_updated) \
                 VALUES ({id}, 'a{id}', 3, '2026-11-30 10:00:00+00:00')"
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let tools = Tools::new(config, cqrs_sync::UrlConnector).master_table(&table, db.db.clone());
    let code = cqrs_sync::cli::run(
        Command::Sync(SyncArgs {
            cqrs_id: "author".into(),
            filter: Some(r#"{"id__gte": 2}"#.into()),
            queue: None,
            batch: 2,
        }),
        &tools,
    )
    .await;
    assert_eq!(code, 0);
    replica.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));
    let rows = replica_db
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "SELECT id, cqrs_revision FROM author ORDER BY id",
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<(i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get_by_index(0).unwrap_or_default(),
                r.try_get_by_index(1).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(got, vec![(2, 3), (3, 3), (4, 3), (5, 3)]);
    let code = cqrs_sync::cli::run(
        Command::Sync(SyncArgs {
            cqrs_id: "book".into(),
            filter: Some("{}".into()),
            queue: None,
            batch: 2,
        }),
        &tools,
    )
    .await;
    assert_eq!(code, 2, "an unknown id is a usage error");
    replica.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    db.cleanup().await;
    replica_db.cleanup().await;
}
