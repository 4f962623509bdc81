//! Snapshots of the text people read at 3 a.m.: the plan, the restore
//! summary and the main refusals. A change of wording fails here and shows
//! the difference; accept it with `cargo insta review` (or
//! `INSTA_UPDATE=always`) after reading it, and commit the `.snap` files.
//!
//! Temporary paths, ports, times, LSNs, segment names, xids, sizes and
//! durations are replaced by placeholders, so the snapshots hold only what
//! pitr decides to say.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;

/// Placeholders for what changes from run to run.
fn filters(dir: &Path) -> Vec<(String, &'static str)> {
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
    vec![
        (escape(dir), "[TMP]"),
        (escape(&pg_bin()), "[PG_BIN]"),
        (r"PostgreSQL \d+".to_string(), "PostgreSQL [MAJOR]"),
        (
            r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?".to_string(),
            "[TIME]",
        ),
        (r"\b[0-9A-F]{24}\b".to_string(), "[SEGMENT]"),
        (r"\b[0-9A-F]{1,8}/[0-9A-F]{1,8}\b".to_string(), "[LSN]"),
        (r"(xid:?|transaction) \d+".to_string(), "$1 [XID]"),
        (r"\d+(\.\d+)? (B|KiB|MiB|GiB)\b".to_string(), "[SIZE]"),
        (r"\b\d+\.\d+ ?s\b".to_string(), "[SECS]"),
        (r"(port|-p) \d+".to_string(), "$1 [PORT]"),
        (r"port = '\d+'".to_string(), "port = '[PORT]'"),
        // Singular or plural, as the count decides.
        (r"\b\d+ (segment|file)s?\b".to_string(), "[N] ${1}s"),
        (r"\b\d+ of \d+ compared".to_string(), "[N] of [N] compared"),
        (r"-\d+\b".to_string(), "-[N]"),
    ]
}

/// Runs `body` with the filters for `dir` in place.
fn with_filters(dir: &Path, body: impl FnOnce()) {
    let mut settings = insta::Settings::clone_current();
    for (pattern, replacement) in filters(dir) {
        settings.add_filter(&pattern, replacement);
    }
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(body);
}

fn run_with_repo(binary: &Path, repo: &Path, args: &[&str]) -> Output {
    pitr(binary)
        .args(args)
        .arg("--repo")
        .arg(repo)
        .output()
        .unwrap()
}

#[test]
fn what_people_read() {
    let dir = shared_tempdir("pitr-snap-");
    let cluster = Cluster::start_in(dir.path());
    let repo = cluster.repo.clone();
    let before_everything = chrono::Utc::now();
    cluster.sql("CREATE TABLE markers (id int PRIMARY KEY)");
    cluster.backup("base", &["-Ft", "-X", "stream"]);
    std::thread::sleep(Duration::from_millis(1200));
    let mut markers = Vec::new();
    for id in 1..=3 {
        markers.push(cluster.insert_marker(id));
        cluster.archive_everything();
    }
    drop(cluster);
    let binary = shared_pitr_binary(dir.path());
    let target = between(&markers[0], &markers[1]).to_rfc3339();

    // A target that cannot be parsed: nothing in it varies, and its
    // examples must stay as written, so no placeholders.
    let output = run_with_repo(&binary, &repo, &["plan", "--to", "5 minuts ago"]);
    assert_eq!(output.status.code(), Some(2));
    insta::with_settings!({ prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("error_target_parse", stderr(&output));
    });

    with_filters(dir.path(), || {
        // The plan.
        let output = run_with_repo(&binary, &repo, &["plan", "--to", &target]);
        assert!(output.status.success(), "{}", stderr(&output));
        insta::assert_snapshot!("plan", stdout(&output));

        // The restore's summary (the progress lines before it depend on
        // timing).
        let pgdata = dir.path().join("restored");
        let output = run_with_repo(
            &binary,
            &repo,
            &[
                "restore",
                "--to",
                &target,
                "--pgdata",
                &pgdata.to_string_lossy(),
            ],
        );
        let _guard = ServerGuard(pgdata.clone());
        assert!(output.status.success(), "{}", stderr(&output));
        let text = stderr(&output);
        let summary = &text[text.find("restore complete").unwrap_or(0)..];
        insta::assert_snapshot!("restore_summary", summary);

        // A delta restore over that directory, stopped: its forecast, as
        // text and JSON (counts depend on the major version), and what the
        // restore says it did.
        drop(_guard);
        let pgdata_arg = pgdata.to_string_lossy().into_owned();
        let delta_plan = ["plan", "--to", &target, "--delta", "--pgdata", &pgdata_arg];
        let output = run_with_repo(&binary, &repo, &delta_plan);
        assert!(output.status.success(), "{}", stderr(&output));
        insta::assert_snapshot!("plan_delta", stdout(&output));
        let output = run_with_repo(&binary, &repo, &[&["--json"][..], &delta_plan].concat());
        assert!(output.status.success(), "{}", stderr(&output));
        let mut forecast = json(&output)["delta"].clone();
        for part in ["compare", "rewrite", "remove"] {
            for key in ["files", "bytes"] {
                assert!(forecast[part][key].is_u64(), "{forecast}");
                forecast[part][key] = "[N]".into();
            }
        }
        insta::assert_snapshot!("plan_delta_json", format!("{forecast:#}"));
        let output = run_with_repo(
            &binary,
            &repo,
            &[
                "restore",
                "--delta",
                "--to",
                &target,
                "--pgdata",
                &pgdata_arg,
            ],
        );
        let _guard = ServerGuard(pgdata.clone());
        assert!(output.status.success(), "{}", stderr(&output));
        let text = stderr(&output);
        let summary = &text[text.find("restore complete").unwrap_or(0)..];
        insta::assert_snapshot!("restore_delta_summary", summary);
        drop(_guard);

        // -q: nothing at all on success.
        let quiet = dir.path().join("quiet");
        let output = run_with_repo(
            &binary,
            &repo,
            &[
                "-q",
                "restore",
                "--to",
                &target,
                "--pgdata",
                &quiet.to_string_lossy(),
            ],
        );
        let _quiet_guard = ServerGuard(quiet.clone());
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(stderr(&output), "", "-q prints nothing on success");
        assert_eq!(stdout(&output), "");

        // Before the recoverable window.
        let early = (before_everything - chrono::Duration::seconds(30)).to_rfc3339();
        let output = run_with_repo(&binary, &repo, &["plan", "--to", &early]);
        assert_eq!(output.status.code(), Some(3));
        insta::assert_snapshot!("error_before_window", stderr(&output));

        // A non-empty --pgdata.
        let occupied = dir.path().join("occupied");
        fs::create_dir(&occupied).unwrap();
        fs::write(occupied.join("precious"), b"data").unwrap();
        let output = run_with_repo(
            &binary,
            &repo,
            &[
                "restore",
                "--to",
                &target,
                "--pgdata",
                &occupied.to_string_lossy(),
            ],
        );
        assert_eq!(output.status.code(), Some(4));
        insta::assert_snapshot!("error_pgdata_not_empty", stderr(&output));

        // A segment missing from the middle of the archive.
        let mut segments: Vec<_> = fs::read_dir(repo.join("wal"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.len() == 24)
            .collect();
        segments.sort();
        let missing = &segments[segments.len() - 2];
        fs::remove_file(repo.join("wal").join(missing)).unwrap();
        let output = run_with_repo(&binary, &repo, &["plan", "--to", "latest"]);
        assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
        insta::assert_snapshot!("error_missing_segment", stderr(&output));
    });
}
