//! `pitr wal-fetch` as PostgreSQL's restore_command: 0 delivered, 1 not in
//! the archive, 126 for any other error, and never a partial file.

use std::fs;
use std::io::Write;
use std::process::Command;

fn fetch(archive: &std::path::Path, name: &str, dest: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pitr"))
        .args(["wal-fetch", "--wal-archive"])
        .arg(archive)
        .arg(name)
        .arg(dest)
        .output()
        .unwrap()
}

#[test]
fn exit_codes_and_atomic_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("wal");
    let pg_wal = dir.path().join("pg_wal");
    fs::create_dir_all(&archive).unwrap();
    fs::create_dir_all(&pg_wal).unwrap();
    let segment: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    fs::write(archive.join("000000010000000000000003"), &segment).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&segment).unwrap();
    fs::write(
        archive.join("000000010000000000000004.gz"),
        gz.finish().unwrap(),
    )
    .unwrap();
    fs::write(
        archive.join("00000002.history"),
        b"1\t0/3000000\tno recovery target specified\n",
    )
    .unwrap();

    let dest = pg_wal.join("RECOVERYXLOG");
    let output = fetch(&archive, "000000010000000000000003", &dest);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(fs::read(&dest).unwrap(), segment);

    // Compressed segments are served decompressed.
    let output = fetch(&archive, "000000010000000000000004", &dest);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(fs::read(&dest).unwrap(), segment);

    let output = fetch(
        &archive,
        "00000002.history",
        &pg_wal.join("RECOVERYHISTORY"),
    );
    assert_eq!(output.status.code(), Some(0));

    // Not in the archive: 1, the normal "end of archive" answer.
    let output = fetch(&archive, "000000010000000000000005", &pg_wal.join("X"));
    assert_eq!(output.status.code(), Some(1));
    assert!(!pg_wal.join("X").exists());
    let output = fetch(&archive, "00000003.history", &pg_wal.join("X"));
    assert_eq!(output.status.code(), Some(1));

    // Any other error: above 125, so PostgreSQL aborts instead of ending recovery.
    let output = fetch(
        &dir.path().join("no-such-archive"),
        "000000010000000000000003",
        &dest,
    );
    assert_eq!(output.status.code(), Some(126));
    let output = fetch(
        &archive,
        "000000010000000000000003",
        &dir.path().join("missing-dir/RECOVERYXLOG"),
    );
    assert_eq!(output.status.code(), Some(126));
    let output = fetch(&archive, "../../etc/passwd", &dest);
    assert_eq!(output.status.code(), Some(126));

    // A corrupt compressed file is an error, and leaves no partial file.
    fs::write(
        archive.join("000000010000000000000006.gz"),
        b"\x1f\x8bnot gzip at all",
    )
    .unwrap();
    let before: Vec<_> = fs::read_dir(&pg_wal)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let output = fetch(
        &archive,
        "000000010000000000000006",
        &pg_wal.join("RECOVERYXLOG6"),
    );
    assert_eq!(output.status.code(), Some(126));
    let after: Vec<_> = fs::read_dir(&pg_wal)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "no partial or temporary file may remain"
    );
}
