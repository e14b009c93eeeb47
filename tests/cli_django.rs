//! The `cqrs` command beside the real django-cqrs 3.1.0 (the Django project of the wire test,
//! `tests/django_wire/`, its SQLite tables made by Django's own migrations):
//! - `cqrs consume`, configured by a file alone, replicates a Django master into the table
//!   Django's replica app creates, while a Django replica consumes the same events on another
//!   queue: the two tables end equal to the master's;
//! - the diff pipeline mixes the two: Django's `cqrs_diff_master` feeds `cqrs diff-replica`,
//!   whose output feeds Django's `cqrs_diff_sync`, and the drifted Rust replica is repaired
//!   (a queue in line 1, and the string `None` for a broadcast);
//! - a dump of either side loads with the other's bulk load.
//!
//! Each test has its own exchange and queues in the virtual host `/` (django-cqrs 3.1.0 always
//! uses it) and deletes them, and its own directory of files.

#![cfg(feature = "cli")]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cqrs_transports::conformance::run_check;
use sea_orm::ConnectionTrait;
use support::cli::{Consumer, Dir, run};
use support::django::{AMQP_URL, Django, Rows, declare_queue, teardown, transport, wait_rows};
use support::unique;

/// A configuration file of the `cqrs` command: the test's exchange (and `queue` if any), the
/// SQLite file `db`, and the `[replicas.*]`/`[masters.*]` sections.
fn config(dir: &Dir, exchange: &str, queue: Option<&str>, db: &Path, tables: &str) -> PathBuf {
    let queue = queue.map_or_else(String::new, |q| format!("queue = \"{q}\"\n"));
    let text = format!(
        "url = \"{AMQP_URL}/%2f?connection_name=cqrs-cli-django\"\nexchange = \"{exchange}\"\n\
         {queue}database_url = \"sqlite://{}\"\n{tables}",
        db.display()
    );
    dir.file(&unique("cqrs.toml"), &text)
}

/// The standalone replica's section: the table Django's replica app created.
const REPLICA: &str = "[replicas.author]\ntable = \"replica_app_author\"\n";
/// The master's section: the Django master's table.
const MASTER: &str = "[masters.author]\ntable = \"master_app_author\"\n";

/// Runs SQL on a SQLite file.
async fn sql(db: &Path, statements: &[&str]) {
    let url = format!("sqlite://{}?mode=rw", db.display());
    let conn = sea_orm::Database::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    for statement in statements {
        conn.execute_unprepared(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let _ = conn.close().await;
}

/// The Django master's authors (`wire_master`): 1-10, then 11-60 with updates and deletes, a
/// SYNC of 1-5 directed at `queue` and a broadcast SYNC of 6-10; answers the master's rows.
fn fill(master: &Django, queue: &str) -> Rows {
    master.run(&["wire_master", "before"]);
    master.run(&["wire_master", "main", "--queue", queue]);
    let rows = master.rows();
    assert_eq!(rows.len(), 60 - 7, "60 authors less 7 deleted");
    rows
}

#[actix_rt::test]
async fn a_standalone_replica_and_a_django_replica_converge_on_a_django_master() {
    support::init_tracing();
    let dir = Dir::new("django_consume");
    let exchange = unique("cli_dj_consume");
    let (rust_queue, dj_queue) = (unique("cli_replica"), unique("dj_replica"));
    let master = Django::new("master", &dir.0, &exchange, "unused");
    let dj_replica = Django::new("replica", &dir.0, &exchange, &dj_queue);
    // Django's migrations create the standalone replica's table; Django reads it back.
    let standalone = Django::with_db(
        "replica",
        dir.path("standalone.sqlite3"),
        &exchange,
        "unused",
    );
    let replica_config = config(&dir, &exchange, Some(&rust_queue), standalone.db(), REPLICA);
    let (t, addr) = transport(&exchange).await;
    run_check(
        async {
            declare_queue(&t, &rust_queue).await;
            declare_queue(&t, &dj_queue).await;
            let consumer = Consumer::start(&replica_config, &[], &dir).await;
            let dj_consumer = dj_replica.consume();
            // Both queues exist now: every event reaches both replicas, and the directed syncs
            // of 1-5 reach the standalone one only.
            let expected = fill(&master, &rust_queue);
            wait_rows("the standalone replica", &standalone, &expected).await;
            wait_rows("the Django replica", &dj_replica, &expected).await;
            assert_eq!(standalone.rows(), dj_replica.rows());
            drop(dj_consumer);
            let (code, log) = consumer.stop("-TERM").await;
            assert_eq!(code, 0, "{log}");
        },
        teardown(&addr),
    )
    .await;
}

/// Makes the standalone replica drift: `drifted` rows get other contents and their revision
/// moved by `shift`, `lost` rows are deleted.
async fn drift(db: &Path, drifted: &[i64], shift: i64, lost: &[i64]) {
    let join = |ids: &[i64]| {
        ids.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let update = format!(
        "UPDATE replica_app_author SET name = 'drifted', cqrs_revision = cqrs_revision + {shift} \
         WHERE id IN ({})",
        join(drifted)
    );
    let delete = format!(
        "DELETE FROM replica_app_author WHERE id IN ({})",
        join(lost)
    );
    sql(db, &[&update, &delete]).await;
}

/// Django's `cqrs_diff_master` (in batches of 7) into `cqrs diff-replica`: checks line 1 (the
/// master's, then `queue`) and that the pks to resync are `want`; answers the output and
/// what the command wrote to stderr.
async fn diff(master: &Django, replica: &Path, queue: &str, want: &[i64]) -> (String, String) {
    let (master_diff, _) = master.output(&["cqrs_diff_master", "-cid", "author", "-b", "7"], b"");
    let master_first = master_diff.lines().next().unwrap_or_default();
    assert!(master_first.starts_with("author,"), "{master_diff}");
    let ran = run(replica, &["diff-replica"], master_diff.as_bytes())
        .await
        .ok();
    let lines = ran.lines();
    assert_eq!(lines[0], format!("{master_first},{queue}"), "{ran:?}");
    let pks: BTreeSet<i64> = lines[1..]
        .iter()
        .flat_map(|l| serde_json::from_str::<Vec<i64>>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(pks, want.iter().copied().collect(), "{ran:?}");
    (ran.stdout, ran.stderr)
}

/// The sum of the `N instance(s) synced.` lines (Django's `cqrs_diff_sync` prints one per
/// input line).
fn synced(out: &str) -> u64 {
    out.lines()
        .filter_map(|l| l.strip_suffix(" instance(s) synced."))
        .map(|n| n.parse::<u64>().unwrap_or_else(|e| panic!("{n}: {e}")))
        .sum()
}

#[actix_rt::test]
async fn django_diff_master_and_diff_sync_repair_a_standalone_replica_with_cqrs_diff_replica() {
    support::init_tracing();
    let dir = Dir::new("django_diff");
    let exchange = unique("cli_dj_diff");
    let rust_queue = unique("cli_replica");
    let master = Django::new("master", &dir.0, &exchange, "unused");
    let standalone = Django::with_db(
        "replica",
        dir.path("standalone.sqlite3"),
        &exchange,
        "unused",
    );
    let replica_config = config(&dir, &exchange, Some(&rust_queue), standalone.db(), REPLICA);
    // The same replica without a queue, and the Django master's table seen by the command.
    let no_queue_config = config(&dir, &exchange, None, standalone.db(), REPLICA);
    let master_config = config(&dir, &exchange, None, master.db(), MASTER);
    let (t, addr) = transport(&exchange).await;
    run_check(
        async {
            declare_queue(&t, &rust_queue).await;
            let consumer = Consumer::start(&replica_config, &[], &dir).await;
            let expected = fill(&master, &rust_queue);
            wait_rows("the standalone replica", &standalone, &expected).await;

            // Line 1 names the replica's queue: Django's cqrs_diff_sync syncs to it. Older
            // revisions and lost rows.
            drift(standalone.db(), &[11, 20, 59], -1, &[3, 60]).await;
            assert_ne!(standalone.rows(), expected);
            let (out, _) = diff(&master, &replica_config, &rust_queue, &[3, 11, 20, 59, 60]).await;
            let (synced_out, _) = master.output(&["cqrs_diff_sync", "-b", "2"], out.as_bytes());
            assert_eq!(synced(&synced_out), 5, "{synced_out}");
            wait_rows("the replica repaired by queue", &standalone, &expected).await;

            // No queue configured: line 1 ends with `None`. django-cqrs 3.1.0's
            // cqrs_diff_sync cannot broadcast (every row fails with KeyError 'queue', exit 0),
            // and diff-replica says so; `cqrs diff-sync` over the Django master's table
            // broadcasts the same input. Newer revisions (a SYNC downgrades) and lost rows.
            drift(standalone.db(), &[1, 12, 13], 5, &[2, 58]).await;
            let (out, err) = diff(&master, &no_queue_config, "None", &[1, 2, 12, 13, 58]).await;
            assert!(err.contains("cqrs_diff_sync syncs nothing"), "{err}");
            let (python_out, _) = master.output(&["cqrs_diff_sync"], out.as_bytes());
            assert_eq!(synced(&python_out), 0, "{python_out}");
            assert!(python_out.contains("KeyError: 'queue'"), "{python_out}");
            let ran = run(&master_config, &["diff-sync"], out.as_bytes())
                .await
                .ok();
            assert!(ran.stderr.contains("5 instance(s) synced."), "{ran:?}");
            wait_rows("the replica repaired by broadcast", &standalone, &expected).await;

            // Nothing left to repair.
            diff(&master, &replica_config, &rust_queue, &[]).await;
            let (code, log) = consumer.stop("-TERM").await;
            assert_eq!(code, 0, "{log}");
        },
        teardown(&addr),
    )
    .await;
}

#[actix_rt::test]
async fn bulk_dumps_of_either_side_load_with_the_other() {
    support::init_tracing();
    let dir = Dir::new("django_bulk");
    let exchange = unique("cli_dj_bulk");
    let master = Django::new("master", &dir.0, &exchange, "unused");
    // Nothing consumes here: the transport only deletes the exchange the master declared.
    let (_transport, addr) = transport(&exchange).await;
    run_check(
        async {
            // No replica queue: the master's events go nowhere, only the dumps carry the rows.
            let expected = fill(&master, "nobody");
            let count = format!("{} instance(s) loaded.", expected.len());

            // Django's dump (no newline after the last row) into the standalone replica.
            let standalone = Django::with_db(
                "replica",
                dir.path("standalone.sqlite3"),
                &exchange,
                "unused",
            );
            let replica_config = config(&dir, &exchange, None, standalone.db(), REPLICA);
            let py_dump = dir.path("py.dump").display().to_string();
            master.run(&["cqrs_bulk_dump", "-c", "author", "-o", &py_dump]);
            let text = std::fs::read_to_string(&py_dump).unwrap_or_else(|e| panic!("{e}"));
            assert!(text.starts_with("author\n") && !text.ends_with('\n'));
            let ran = run(&replica_config, &["bulk-load", "-i", &py_dump], b"")
                .await
                .ok();
            assert!(ran.stderr.contains(&count), "{ran:?}");
            assert_eq!(standalone.rows(), expected);
            // Again from Django's stdout: nothing is newer.
            let (stdout, _) = master.output(&["cqrs_bulk_dump", "-c", "author", "-o", "-"], b"");
            let ran = run(
                &replica_config,
                &["bulk-load", "-i", "-"],
                stdout.as_bytes(),
            )
            .await
            .ok();
            assert!(
                ran.stderr.contains("Done!\n0 instance(s) loaded."),
                "{ran:?}"
            );
            assert_eq!(standalone.rows(), expected);

            // The command's dump of the Django master's table into a Django replica.
            let master_config = config(&dir, &exchange, None, master.db(), MASTER);
            let rust_dump = dir.path("rust.dump").display().to_string();
            run(
                &master_config,
                &["bulk-dump", "--cqrs-id", "author", "-o", &rust_dump],
                b"",
            )
            .await
            .ok();
            let dj_replica = Django::new("replica", &dir.0, &exchange, "unused");
            let (_, err) = dj_replica.output(&["cqrs_bulk_load", "-i", &rust_dump], b"");
            assert!(err.contains(&count), "{err}");
            assert_eq!(dj_replica.rows(), expected);
        },
        teardown(&addr),
    )
    .await;
}
