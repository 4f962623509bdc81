//! Extracting any tar never writes outside the destination, never creates
//! a symbolic link, and never panics.
#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pitr::compression::Compression;
use pitr::progress::{Reporter, Unit};
use pitr::repo::backup::BackupFile;
use pitr::repo::store::posix::Posix;
use pitr::stage::extract::extract_tar;
use pitr::stage::FileWriter;

fn no_symlinks(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let kind = entry.file_type().unwrap();
        assert!(!kind.is_symlink(), "symlink created: {}", entry.path().display());
        if kind.is_dir() {
            no_symlinks(&entry.path());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.tar");
    fs::write(&input, data).unwrap();
    let dest = dir.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let reporter = Reporter {
        quiet: true,
        terminal: false,
        verbose: false,
    };
    let mut progress = reporter.bar("fuzz", data.len() as u64, Unit::Bytes);
    let mut writer = FileWriter::default();
    // The tar is read as staging reads every backup: an object of a store.
    let store = Posix::new(dir.path());
    let file = BackupFile {
        key: "input.tar".to_string(),
        compression: Compression::None,
    };
    let _ = extract_tar(&store, &file, &dest, &mut progress, None, &mut writer);
    let mut outside: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    outside.sort();
    assert_eq!(outside, ["dest", "input.tar"], "something was written outside the destination");
    no_symlinks(&dest);
});
