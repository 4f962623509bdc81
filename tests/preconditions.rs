//! The precondition helper of tests/common: a skip is printed as
//! `SKIPPED: <test>: <why>`, passes normally, and fails under
//! `PITR_TEST_STRICT=1` unless `PITR_TEST_ALLOWED_SKIPS` lists the test.
//! The skipping test runs in a child process (the settings are process-wide
//! environment variables), so it is ignored when the suite runs it directly.

mod common;

use std::process::{Command, Output};

use common::*;

#[test]
#[ignore = "run by the_skip_helper_reports_and_enforces, in a child process"]
fn probe_that_skips() {
    if !require(
        "probe_that_skips",
        false,
        "the probe's precondition is never met",
    ) {
        return;
    }
    unreachable!("require(false) must not report the precondition as met");
}

fn run_probe(env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "probe_that_skips",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env_remove("PITR_TEST_STRICT")
        .env_remove("PITR_TEST_ALLOWED_SKIPS");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

#[test]
fn the_skip_helper_reports_and_enforces() {
    let skipped = "SKIPPED: probe_that_skips: the probe's precondition is never met";

    // Not strict: printed (past libtest's capture) and passed.
    let output = run_probe(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains(skipped), "{stderr}");

    // Strict: a failure that names the test and the variables.
    let output = run_probe(&[
        ("PITR_TEST_STRICT", "1"),
        ("PITR_TEST_ALLOWED_SKIPS", "other_test"),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(
            "PITR_TEST_STRICT=1 and `probe_that_skips` is not in PITR_TEST_ALLOWED_SKIPS"
        ),
        "{text}"
    );

    // Strict, but this skip is allowed here: printed and passed.
    let output = run_probe(&[
        ("PITR_TEST_STRICT", "1"),
        ("PITR_TEST_ALLOWED_SKIPS", "other_test, probe_that_skips"),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains(skipped), "{stderr}");

    // A met precondition is not a skip.
    assert!(require(
        "the_skip_helper_reports_and_enforces",
        true,
        "never printed"
    ));
}
