//! `pitr extract` against PostgreSQL: a table dropped in a cluster of
//! three databases found in the WAL and loaded back into the live cluster
//! with exactly its rows, nothing else in the live cluster changed; a
//! TRUNCATE undone the same way; a bad UPDATE undone with `--to` and
//! `--as`; a load onto an existing table refused; a whole database written
//! to a file and loaded into a fresh cluster, exact; the scratch copies
//! gone afterwards; bad input refused with a clear error and nothing
//! written.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// Runs SQL in one database of the cluster at `socket_dir`:`port`.
fn psql_db(socket_dir: &Path, port: u16, database: &str, sql: &str) -> String {
    let output = as_pg_user(pg_bin().join("psql"))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-U", "postgres", "-d", database, "-h"])
        .arg(socket_dir)
        .args(["-p", &port.to_string(), "-c", sql])
        .output()
        .unwrap();
    check(output, &format!("psql {sql}")).trim().to_string()
}

/// Every user table of every database with its row count and a checksum
/// of its rows, one line each: what "unchanged" is compared by.
fn fingerprint(socket_dir: &Path, port: u16) -> Vec<String> {
    let databases = psql_db(
        socket_dir,
        port,
        "postgres",
        "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
    );
    let mut lines = Vec::new();
    for database in databases.lines() {
        let tables = psql_db(
            socket_dir,
            port,
            database,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        );
        for table in tables.lines() {
            let sums = psql_db(
                socket_dir,
                port,
                database,
                &format!(
                    "SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
                ),
            );
            lines.push(format!("{database} {table} {sums}"));
        }
    }
    lines
}

fn rows_of(socket_dir: &Path, port: u16, database: &str, table: &str) -> String {
    psql_db(
        socket_dir,
        port,
        database,
        &format!("SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"),
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

struct Extract<'a> {
    pitr: &'a Path,
    repo: &'a Path,
    scratch: &'a Path,
}

impl Extract<'_> {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(self.pitr)
            .env("TZ", "UTC")
            .env_remove("PITR_REPO")
            .arg("extract")
            .args(args)
            .arg("--repo")
            .arg(self.repo)
            .arg("--scratch")
            .arg(self.scratch)
            .output()
            .unwrap()
    }

    /// Runs `pitr extract ARGS`, which must succeed (a failure shows its
    /// stderr).
    fn succeeded(&self, args: &[&str]) -> Output {
        let output = self.run(args);
        assert!(output.status.success(), "{}", stderr(&output));
        output
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_slice(&self.succeeded(&all).stdout).unwrap()
    }

    /// Runs `pitr extract ARGS`, which must be refused as bad input (exit
    /// code 2) with a message that contains `expected`.
    fn refused(&self, args: &[&str], expected: &str) -> Output {
        let output = self.run(args);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
        output
    }
}

/// `dir/scratch`, where extract makes its copies: every user may enter it
/// (the copy's server runs as the PostgreSQL user).
fn scratch_dir(dir: &Path) -> PathBuf {
    let scratch = dir.join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    fs::set_permissions(&scratch, fs::Permissions::from_mode(0o755)).unwrap();
    scratch
}

/// The connection string extract's `--into` takes for `database` on the
/// live cluster.
fn live_conninfo(socket_dir: &Path, port: u16, database: &str) -> String {
    format!(
        "host={} port={port} user=postgres dbname={database}",
        socket_dir.display()
    )
}

/// The live cluster's [`fingerprint`] is `before` but for `table`
/// (`DATABASE SCHEMA.NAME`), the one extract brought back.
fn assert_rest_unchanged(socket_dir: &Path, port: u16, before: &[String], table: &str) {
    let prefix = format!("{table} ");
    let after: Vec<String> = fingerprint(socket_dir, port)
        .into_iter()
        .filter(|line| !line.starts_with(&prefix))
        .collect();
    assert_eq!(after, before, "the rest of the live cluster changed");
}

/// The scratch directory is empty: no copy left behind.
fn assert_no_scratch_copy(scratch: &Path) {
    assert!(
        fs::read_dir(scratch).unwrap().next().is_none(),
        "copy left behind"
    );
}

/// No copy left in the scratch directory, and no server working there.
fn assert_scratch_gone(scratch: &Path, summary: &serde_json::Value) {
    let left: Vec<_> = fs::read_dir(scratch)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "scratch copies left behind: {left:?}");
    let copy = PathBuf::from(summary["scratch"]["path"].as_str().unwrap());
    assert!(!copy.exists(), "{}", copy.display());
    assert_eq!(summary["scratch"]["kept"], false);
    // Nothing listens on the copy's port any more (its socket was in the
    // removed directory; a TCP bind shows the port is free).
    let port = summary["scratch"]["port"].as_u64().unwrap() as u16;
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn tables_and_databases_come_back_and_nothing_else_changes() {
    let dir = shared_tempdir("pitr-extract-");
    let scratch = scratch_dir(dir.path());
    let cluster = Cluster::start_in(dir.path());
    let repo = cluster.repo.clone();
    let (sock, port) = (cluster.dir.clone(), cluster.port);
    let shop = |sql: &str| psql_db(&sock, port, "shop", sql);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    cluster.sql("CREATE DATABASE shop");
    cluster.sql("CREATE DATABASE other");
    shop("CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL, amount int)");
    shop("CREATE INDEX orders_item ON orders (item)");
    shop("INSERT INTO orders (item, amount) SELECT 'item ' || g, g * 10 FROM generate_series(1, 200) g");
    shop("CREATE TABLE customers (id int PRIMARY KEY, name text)");
    shop("INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 50) g");
    shop("CREATE TABLE events_log (id int, note text)");
    shop("INSERT INTO events_log SELECT g, repeat('n', g % 50) FROM generate_series(1, 300) g");
    shop("CREATE SCHEMA billing");
    shop("CREATE TABLE billing.invoices (id int PRIMARY KEY, total numeric)");
    shop("INSERT INTO billing.invoices SELECT g, g * 1.5 FROM generate_series(1, 20) g");
    psql_db(
        &sock,
        port,
        "other",
        "CREATE TABLE things (id int PRIMARY KEY, label text)",
    );
    psql_db(
        &sock,
        port,
        "other",
        "INSERT INTO things SELECT g, md5(g::text) FROM generate_series(1, 500) g",
    );
    cluster.backup("base", &["-Ft", "-X", "stream"]);
    std::thread::sleep(Duration::from_millis(1200));

    // After the backup: more rows, a VACUUM FULL of customers (a rewrite
    // to follow), a bad UPDATE, a TRUNCATE, the DROP.
    shop("INSERT INTO customers SELECT g, 'late ' || g FROM generate_series(51, 80) g");
    shop("VACUUM FULL customers");
    shop("UPDATE customers SET name = name || ' (vip)' WHERE id % 7 = 0");
    let orders_good = rows_of(&sock, port, "shop", "orders");
    let things_at_good = rows_of(&sock, port, "other", "things");
    let good = cluster.insert_marker(1);
    std::thread::sleep(Duration::from_millis(1100));
    shop("UPDATE orders SET amount = 0");
    psql_db(&sock, port, "other", "DELETE FROM things WHERE id > 250");
    let bad = cluster.insert_marker(2);
    let events_before_truncate = rows_of(&sock, port, "shop", "events_log");
    shop("TRUNCATE events_log");
    shop("INSERT INTO events_log VALUES (1, 'after the truncate')");
    shop("TRUNCATE events_log");
    let customers_before_drop = rows_of(&sock, port, "shop", "customers");
    shop("DROP TABLE customers");
    let dropped = cluster.insert_marker(3);
    // A commit after the last target used, which a time target needs.
    std::thread::sleep(Duration::from_millis(200));
    cluster.insert_marker(4);
    cluster.archive_everything();
    let pitr = shared_pitr_binary(dir.path());
    let extract = Extract {
        pitr: &pitr,
        repo: &repo,
        scratch: &scratch,
    };
    let live = live_conninfo(&sock, port, "shop");
    let before = fingerprint(&sock, port);

    // 1. The DROP, found in the WAL and undone into the live cluster.
    let output = extract.succeeded(&[
        "--table",
        "public.customers",
        "--database",
        "shop",
        "--before-drop",
        "--into",
        &live,
    ]);
    let text = stderr(&output);
    assert_eq!(
        rows_of(&sock, port, "shop", "customers"),
        customers_before_drop
    );
    assert_rest_unchanged(&sock, port, &before, "shop public.customers");
    // The VACUUM FULL was followed, not taken for the drop.
    assert!(
        text.contains("followed: rewrite of public.customers"),
        "{text}"
    );
    assert!(text.contains("found: DROP of public.customers"), "{text}");
    let summary = &text[text.find("extract complete").unwrap()..];
    with_filters(dir.path(), || {
        insta::assert_snapshot!("extract_before_drop_summary", summary)
    });
    assert_no_scratch_copy(&scratch);

    // 2. The TRUNCATE undone, under a new name, with --json. It was
    // truncated twice: both are listed, and --pick chooses.
    let truncate = [
        "--table",
        "public.events_log",
        "--database",
        "shop",
        "--before-truncate",
        "--into",
        &live,
        "--as",
        "events_log_back",
    ];
    let output = extract.refused(
        &[&["--json"], &truncate[..]].concat(),
        "2 transactions truncated the table:\n  1. TRUNCATE of public.events_log: transaction ",
    );
    assert!(stderr(&output).contains("hint: choose one with --pick N"));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        listed["candidates"].as_array().unwrap().len(),
        2,
        "{listed}"
    );
    assert_eq!(listed["chosen"], serde_json::Value::Null);
    assert_no_scratch_copy(&scratch);
    let summary = extract.json(&[&truncate[..], &["--pick", "1"]].concat());
    assert_eq!(
        rows_of(&sock, port, "shop", "events_log_back"),
        events_before_truncate
    );
    assert_eq!(summary["chosen"]["kind"], "truncate", "{summary}");
    assert_eq!(summary["chosen"], summary["candidates"][0], "{summary}");
    assert_eq!(summary["tables"][0]["rows"], 300, "{summary}");
    assert_scratch_gone(&scratch, &summary);

    // 3. The bad UPDATE undone with --to and --as: the original stays.
    // The connection names no database: the table goes back into the
    // database it came from (`shop`), not libpq's default.
    let live_no_db = format!("host={} port={port} user=postgres", sock.display());
    let orders_now = rows_of(&sock, port, "shop", "orders");
    let target = between(&good, &bad).to_rfc3339();
    let orders_at_target = [
        "--table",
        "public.orders",
        "--database",
        "shop",
        "--to",
        &target,
    ];
    let summary = extract.json(
        &[
            &orders_at_target[..],
            &["--into", &live_no_db, "--as", "orders_before"],
        ]
        .concat(),
    );
    assert_eq!(rows_of(&sock, port, "shop", "orders_before"), orders_good);
    assert_eq!(rows_of(&sock, port, "shop", "orders"), orders_now);
    assert_eq!(summary["tables"][0]["rows"], 200, "{summary}");
    // The index and the sequence came under the new name, so they do not
    // collide with the original's.
    let indexes = shop("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'orders_before'");
    assert_eq!(indexes, "orders_before_item,orders_before_pkey");
    assert_scratch_gone(&scratch, &summary);

    // 4. Onto an existing table: refused before anything is restored.
    let output = extract.refused(
        &[&orders_at_target[..], &["--into", &live]].concat(),
        "table `public.orders` exists in the live cluster (--into): pitr never replaces or truncates what is there",
    );
    assert!(stderr(&output).contains("hint: bring it back under another name with --as NEW_NAME"));
    assert_eq!(rows_of(&sock, port, "shop", "orders"), orders_now);
    assert!(!stderr(&output).contains("restoring a scratch copy"));

    // 5. A whole database to a file, loaded into a fresh cluster: exact.
    let dump = dir.path().join("other.dump");
    let summary = extract.json(&[
        "--database",
        "other",
        "--to",
        &target,
        "--into-file",
        &dump.to_string_lossy(),
    ]);
    assert_eq!(summary["destination"]["kind"], "file");
    assert!(summary["destination"]["bytes"].as_u64().unwrap() > 1000);
    assert_scratch_gone(&scratch, &summary);
    let fresh_dir = dir.path().join("fresh");
    fs::create_dir_all(&fresh_dir).unwrap();
    let fresh_repo = fresh_dir.join("repo");
    fs::create_dir_all(&fresh_repo).unwrap();
    let fresh = Cluster::start(&fresh_dir, &fresh_repo);
    fs::set_permissions(&dump, fs::Permissions::from_mode(0o644)).unwrap();
    check(
        as_pg_user(pg_bin().join("pg_restore"))
            .args([
                "-C",
                "--exit-on-error",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-h",
            ])
            .arg(&fresh.dir)
            .args(["-p", &fresh.port.to_string()])
            .arg(&dump)
            .output()
            .unwrap(),
        "pg_restore into the fresh cluster",
    );
    assert_eq!(
        rows_of(&fresh.dir, fresh.port, "other", "things"),
        things_at_good
    );
    assert!(things_at_good.starts_with("500 "));
    drop(fresh);

    // 6. A schema as plain SQL; the same file again is refused at once.
    let sql_file = dir.path().join("billing.sql");
    let schema_args = [
        "--schema",
        "billing",
        "--database",
        "shop",
        "--to",
        &target,
        "--into-file",
        &sql_file.to_string_lossy(),
        "--format",
        "plain",
    ];
    let summary = extract.json(&[&schema_args[..], &["--keep"]].concat());
    // --keep: the copy stays, stopped.
    let kept = PathBuf::from(summary["scratch"]["path"].as_str().unwrap());
    assert_eq!(summary["scratch"]["kept"], true);
    assert!(kept.join("data/PG_VERSION").is_file());
    assert!(processes_working_in(&kept.join("data")).is_empty());
    assert!(postmaster_pid(&kept.join("data")).is_none());
    fs::remove_dir_all(&kept).unwrap();
    assert_eq!(
        summary["tables"][0]["table"], "billing.invoices",
        "{summary}"
    );
    assert_eq!(summary["tables"][0]["rows"], 20, "{summary}");
    let sql = fs::read_to_string(&sql_file).unwrap();
    assert!(sql.contains("CREATE SCHEMA billing;"), "{sql}");
    assert!(sql.contains("CREATE TABLE billing.invoices"), "{sql}");
    assert!(sql.contains("20\t30.0\n"), "{sql}");
    extract.refused(
        &schema_args,
        "exists: --into-file writes a new file and never replaces one",
    );
    assert_eq!(fs::read_to_string(&sql_file).unwrap(), sql);

    // Bad input: clear errors, non-zero exits, nothing written.
    let nothing = dir.path().join("nothing.dump");
    let nothing_arg = nothing.to_string_lossy().into_owned();
    extract.refused(
        &[
            "--table",
            "public.nope",
            "--database",
            "shop",
            "--to",
            &target,
            "--into-file",
            &nothing_arg,
        ],
        "table `public.nope` does not exist in database `shop` at the target",
    );
    // Absent at the target: customers, as of just after the DROP.
    extract.refused(
        &[
            "--table",
            "public.customers",
            "--database",
            "shop",
            "--to",
            &dropped.committed.to_rfc3339(),
            "--into-file",
            &nothing_arg,
        ],
        "table `public.customers` does not exist in database `shop` at the target",
    );
    extract.refused(
        &[
            "--table",
            "public.gone",
            "--database",
            "shop",
            "--before-drop",
            "--into-file",
            &nothing_arg,
        ],
        "does not exist in database `shop` at the window's start",
    );
    extract.refused(
        &[
            "--table",
            "public.orders",
            "--schema",
            "public",
            "--to",
            "latest",
            "--into-file",
            &nothing_arg,
        ],
        "cannot be used with",
    );
    extract.refused(
        &[
            "--table",
            "orders",
            "--to",
            "latest",
            "--into-file",
            &nothing_arg,
        ],
        "not schema-qualified",
    );
    for (args, expected) in [
        (
            &[
                "--schema",
                "billing",
                "--database",
                "shop",
                "--before-drop",
                "--into-file",
                &nothing_arg,
            ][..],
            "--before-drop and --before-truncate find a table: give --table SCHEMA.NAME",
        ),
        (
            &[
                "--table",
                "public.orders",
                "--database",
                "shop",
                "--to",
                "latest",
                "--format",
                "plain",
                "--into",
                &live,
            ],
            "--format is the format of --into-file",
        ),
        (
            &[
                "--table",
                "public.orders",
                "--database",
                "shop",
                "--to",
                "latest",
                "--as",
                "x",
                "--table",
                "public.t",
                "--into",
                &live,
            ],
            "--as renames one table: give a single --table",
        ),
    ] {
        extract.refused(args, expected);
    }
    assert!(!nothing.exists());
    assert_no_scratch_copy(&scratch);
    drop(cluster);
}

/// Placeholders for what changes from run to run (as tests/snapshots.rs).
fn with_filters(dir: &Path, body: impl FnOnce()) {
    let escape = |path: &Path| {
        path.to_string_lossy()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '/' {
                    c.to_string()
                } else {
                    format!("\\{c}")
                }
            })
            .collect::<String>()
    };
    let mut settings = insta::Settings::clone_current();
    for (pattern, replacement) in [
        (escape(dir), "[TMP]"),
        (
            r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?( UTC|Z|[+-]\d{2}(:\d{2})?)?"
                .to_string(),
            "[TIME]",
        ),
        (r"base/\d+/\d+".to_string(), "base/[DB]/[FILE]"),
        (r"\b[0-9A-F]{1,8}/[0-9A-F]{1,8}\b".to_string(), "[LSN]"),
        (r"(xid:?|transaction) \d+".to_string(), "$1 [XID]"),
        (r"\b\d+T\d+Z\b".to_string(), "[BACKUP]"),
        (r"\b\d+\.\d+ ?s\b".to_string(), "[SECS]"),
        // Sizes and file counts differ between PostgreSQL majors.
        (r"\b\d+(\.\d+)? ([KMG]i)?B\b".to_string(), "[SIZE]"),
        (r"\b\d+ sparse files".to_string(), "[N] sparse files"),
    ] {
        settings.add_filter(&pattern, replacement);
    }
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(body);
}

/// Apparent and allocated (st_blocks) bytes of the files under `dir`.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut apparent, mut allocated) = (0, 0);
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        if meta.is_dir() {
            let (a, b) = disk_usage(&entry.path());
            apparent += a;
            allocated += b;
        } else if meta.is_file() {
            apparent += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    (apparent, allocated)
}

/// A cluster of three databases where another database holds a large
/// table: the extract of a small table leaves that database as sparse
/// files (replay passes over them, with changes to the large table after
/// the backup and across a checkpoint), writes far fewer bytes, brings the
/// rows back exactly and changes nothing else. The same cluster with
/// full_page_writes turned off after a second backup: everything is
/// written, the summary says why, and the rows are exact.
#[test]
fn only_the_chosen_database_is_written() {
    let dir = shared_tempdir("pitr-extract-sparse-");
    let scratch = scratch_dir(dir.path());
    let cluster = Cluster::start_in(dir.path());
    let repo = cluster.repo.clone();
    let (sock, port) = (cluster.dir.clone(), cluster.port);
    let db = |database: &str, sql: &str| psql_db(&sock, port, database, sql);
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    for database in ["small", "big", "third"] {
        cluster.sql(&format!("CREATE DATABASE {database}"));
    }
    db(
        "small",
        "CREATE TABLE items (id int PRIMARY KEY, label text)",
    );
    db(
        "small",
        "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 2000) g",
    );
    db("big", "CREATE TABLE payload (id int PRIMARY KEY, v text)");
    db("big", "INSERT INTO payload SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 600000) g");
    db(
        "third",
        "CREATE TABLE notes (id int PRIMARY KEY, body text)",
    );
    db(
        "third",
        "INSERT INTO notes SELECT g, repeat('x', g % 100) FROM generate_series(1, 500) g",
    );
    // Hint bits set before the backup: with data checksums (initdb's
    // default from 18) the first scan after it would log every page of
    // the table as an image, and replay would rightly write them all.
    db("big", "VACUUM payload");
    cluster.sql("CHECKPOINT");
    cluster.backup("base", &["-Ft", "-X", "stream"]);
    // After the backup, in every database, across a checkpoint: replay
    // changes pages of the sparse database.
    db("big", "UPDATE payload SET v = v || 'u' WHERE id % 997 = 0");
    db(
        "small",
        "UPDATE items SET label = label || ' changed' WHERE id % 3 = 0",
    );
    cluster.sql("CHECKPOINT");
    db("big", "DELETE FROM payload WHERE id % 1009 = 0");
    db("small", "DELETE FROM items WHERE id % 11 = 0");
    db("third", "UPDATE notes SET body = 'y' WHERE id < 50");
    let expected = rows_of(&sock, port, "small", "items");
    let marker = cluster.insert_marker(1);
    db("small", "UPDATE items SET label = 'wrong'");
    cluster.insert_marker(2);
    cluster.archive_everything();
    let pitr = shared_pitr_binary(dir.path());
    let extract = Extract {
        pitr: &pitr,
        repo: &repo,
        scratch: &scratch,
    };
    let live = live_conninfo(&sock, port, "small");
    let before = fingerprint(&sock, port);
    let big_oid = cluster.sql("SELECT oid FROM pg_database WHERE datname = 'big'");
    let to = format!("xid:{}", marker.xid);

    let output = extract.succeeded(&[
        "--table",
        "public.items",
        "--database",
        "small",
        "--to",
        &to,
        "--into",
        &live,
        "--as",
        "items_back",
        "--keep",
        "--json",
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows_of(&sock, port, "small", "items_back"), expected);
    assert_rest_unchanged(&sock, port, &before, "small public.items_back");
    let written = &summary["written"];
    let sparse: Vec<&str> = written["sparse_databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(sparse, ["big", "third"], "{written:#}");
    // The kept copy: the large database takes (almost) no blocks, and
    // the restore wrote far fewer bytes than the backup holds.
    let data = PathBuf::from(summary["scratch"]["path"].as_str().unwrap()).join("data");
    // Every step is timed, and the steps add up to the total.
    let seconds = &summary["seconds"];
    let step = |name: &str| {
        seconds[name]
            .as_f64()
            .unwrap_or_else(|| panic!("no {name}: {seconds:#}"))
    };
    let steps: f64 = [
        "checks",
        "finding",
        "restore",
        "queries",
        "dump_and_load",
        "removal",
    ]
    .iter()
    .map(|name| step(name))
    .sum();
    assert!(
        steps <= step("total") && step("total") - steps < 0.5,
        "{seconds:#}"
    );
    for phase in ["plan", "staging", "recovery", "wal_read"] {
        assert!(
            seconds["restore_phases"][phase].as_f64().is_some(),
            "{seconds:#}"
        );
    }
    // The copy is scratch: nothing flushed for it (fsync off), and not
    // restarted after its promotion (the restart's checkpoint would write
    // out every page replay filled in the sparse databases), so its
    // server started once.
    let settings = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(settings.contains("fsync = 'off'"), "{settings}");
    let log = fs::read_to_string(data.join("pitr-recovery.log")).unwrap();
    assert_eq!(
        log.matches("database system is ready to accept connections")
            .count(),
        1,
        "{log}"
    );
    let (apparent, allocated) = disk_usage(&data.join("base").join(&big_oid));
    assert!(apparent > 40 << 20, "{apparent}");
    assert!(
        allocated * 5 < apparent,
        "big: {allocated} of {apparent} bytes allocated"
    );
    let (bytes, sparse_bytes) = (
        written["bytes"].as_u64().unwrap(),
        written["sparse_bytes"].as_u64().unwrap(),
    );
    assert!(
        sparse_bytes > 40 << 20 && bytes < sparse_bytes,
        "{written:#}"
    );
    fs::remove_dir_all(data.parent().unwrap()).unwrap();

    // A text summary says what was left sparse.
    let output = extract.succeeded(&[
        "--table",
        "public.items",
        "--database",
        "small",
        "--to",
        &to,
        "--into-file",
        &dir.path().join("items.dump").to_string_lossy(),
    ]);
    let text = stderr(&output);
    assert!(text.contains("big, third left as "), "{text}");

    // full_page_writes turned off after a new backup: replay would read
    // zeroed pages, so everything is written.
    cluster.backup("second", &["-Ft", "-X", "stream"]);
    cluster.sql("ALTER SYSTEM SET full_page_writes = off");
    cluster.sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    cluster.sql("CHECKPOINT");
    db("big", "UPDATE payload SET v = v || 'w' WHERE id % 499 = 0");
    db(
        "small",
        "UPDATE items SET label = 'after fpw off' WHERE id % 5 = 0",
    );
    let expected = rows_of(&sock, port, "small", "items");
    let marker = cluster.insert_marker(3);
    cluster.insert_marker(4);
    cluster.archive_everything();
    let output = extract.succeeded(&[
        "--table",
        "public.items",
        "--database",
        "small",
        "--to",
        &format!("xid:{}", marker.xid),
        "--into",
        &live,
        "--as",
        "items_fpw_off",
        "--json",
    ]);
    let text = stderr(&output);
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows_of(&sock, port, "small", "items_fpw_off"), expected);
    // The WAL is read while the copy is staged with what the catalog
    // allows sparse; what the WAL forbids is then staged again, whole.
    assert!(
        text.contains("again: the WAL needs more databases written in full"),
        "{text}"
    );
    let written = &summary["written"];
    assert_eq!(
        written["sparse_databases"],
        serde_json::json!([]),
        "{written:#}"
    );
    assert!(
        written["all_written_because"]
            .as_str()
            .unwrap()
            .contains("full_page_writes was turned off at"),
        "{written:#}"
    );
    assert_no_scratch_copy(&scratch);
}
