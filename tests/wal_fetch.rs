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
    assert_eq!(
        fs::read(pg_wal.join("RECOVERYHISTORY")).unwrap(),
        b"1\t0/3000000\tno recovery target specified\n"
    );

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

/// Compresses a whole buffer.
type Maker = fn(Vec<u8>) -> Vec<u8>;

fn compressed(tool: Maker, data: &[u8]) -> Vec<u8> {
    tool(data.to_vec())
}

fn gzip(data: Vec<u8>) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&data).unwrap();
    gz.finish().unwrap()
}

fn zstd(data: Vec<u8>) -> Vec<u8> {
    zstd::stream::encode_all(&data[..], 3).unwrap()
}

fn lz4(data: Vec<u8>) -> Vec<u8> {
    let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
    encoder.write_all(&data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn every_suffix_is_served_and_differing_copies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("wal");
    let pg_wal = dir.path().join("pg_wal");
    fs::create_dir_all(&archive).unwrap();
    fs::create_dir_all(&pg_wal).unwrap();
    let segment: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    let dest = pg_wal.join("RECOVERYXLOG");

    // One segment per compression, and a history file in lz4.
    let makers: [(&str, Maker); 3] = [(".gz", gzip), (".zst", zstd), (".lz4", lz4)];
    for (i, (suffix, maker)) in makers.iter().enumerate() {
        let name = format!("0000000100000000000000{:02X}", 0x10 + i);
        fs::write(
            archive.join(format!("{name}{suffix}")),
            compressed(*maker, &segment),
        )
        .unwrap();
        let output = fetch(&archive, &name, &dest);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{suffix}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(fs::read(&dest).unwrap() == segment, "{suffix}");
    }
    let history = b"1\t0/3000000\tno recovery target specified\n";
    fs::write(archive.join("00000002.history.lz4"), lz4(history.to_vec())).unwrap();
    let output = fetch(
        &archive,
        "00000002.history",
        &pg_wal.join("RECOVERYHISTORY"),
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(fs::read(pg_wal.join("RECOVERYHISTORY")).unwrap(), history);

    // The same segment plain and compressed, agreeing: served.
    // (Delivered to a fresh path: `dest` already holds these bytes.)
    let name = "000000010000000000000020";
    fs::write(archive.join(name), &segment).unwrap();
    fs::write(archive.join(format!("{name}.zst")), zstd(segment.clone())).unwrap();
    let agreeing = pg_wal.join("RECOVERYXLOG-agreeing");
    let output = fetch(&archive, name, &agreeing);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        fs::read(&agreeing).unwrap() == segment,
        "the agreed content"
    );

    // Plain and compressed with different contents: 126, naming both files,
    // and nothing delivered.
    let name = "000000010000000000000021";
    let mut other = segment.clone();
    other[777_777] ^= 0x01;
    fs::write(archive.join(name), &segment).unwrap();
    fs::write(archive.join(format!("{name}.gz")), gzip(other.clone())).unwrap();
    let target = pg_wal.join("RECOVERYXLOG21");
    let output = fetch(&archive, name, &target);
    assert_eq!(output.status.code(), Some(126));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains(&archive.join(name).display().to_string())
            && message.contains(&archive.join(format!("{name}.gz")).display().to_string()),
        "{message}"
    );
    assert!(!target.exists());

    // Two compressions that differ: the same.
    let name = "000000010000000000000022";
    fs::write(archive.join(format!("{name}.lz4")), lz4(segment.clone())).unwrap();
    fs::write(archive.join(format!("{name}.zst")), zstd(other)).unwrap();
    let output = fetch(&archive, name, &target);
    assert_eq!(output.status.code(), Some(126));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains(&format!("{name}.lz4`")) && message.contains(&format!("{name}.zst`")),
        "{message}"
    );
    assert!(!target.exists());
}
