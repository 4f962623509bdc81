//! Writing one file of the staged data directory: the bytes go from the
//! backup's stream through one reused buffer to the kernel, checksummed on
//! the way when the manifest has a checksum for the file.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Result;

use super::sparse::SparseDatabases;
use super::Interrupted;
use crate::interrupt;
use crate::repo::manifest_check::ManifestCheck;

/// Checking extracted files against the backup's manifest, under a path
/// prefix (`pg_tblspc/<oid>/` for a tablespace).
pub struct Verify<'a> {
    pub check: &'a mut ManifestCheck,
    pub prefix: String,
}

impl Verify<'_> {
    pub(super) fn manifest_path(&self, relative: &Path) -> String {
        format!("{}{}", self.prefix, relative.to_string_lossy())
    }
}

/// How staging writes files: one buffer for every file written (data
/// goes from the reader into it and from there to the kernel, one copy in
/// user space), and the databases whose files are only given their size.
pub struct FileWriter {
    buffer: Vec<u8>,
    pub sparse: SparseDatabases,
}

impl Default for FileWriter {
    fn default() -> FileWriter {
        FileWriter {
            buffer: vec![0; 256 * 1024],
            sparse: SparseDatabases::default(),
        }
    }
}

impl FileWriter {
    /// A writer that stages the relation files of `sparse` as sparse files.
    pub fn with_sparse(sparse: SparseDatabases) -> FileWriter {
        FileWriter {
            sparse,
            ..FileWriter::default()
        }
    }
}

/// Copies `reader` into a new file at `target`, checksumming on the way
/// when the manifest has a checksum for it, and checks it.
pub fn write_checked(
    reader: &mut dyn Read,
    target: &Path,
    relative: &Path,
    mode: u32,
    verify: &mut Option<&mut Verify<'_>>,
    writer: &mut FileWriter,
) -> Result<u64> {
    let manifest_path = verify.as_ref().map(|v| v.manifest_path(relative));
    let mut file = create_new(target, mode)?;
    let mut checksummer = match (&verify, &manifest_path) {
        (Some(v), Some(path)) => v.check.checksummer(path),
        _ => None,
    };
    let buffer = &mut writer.buffer;
    let mut written = 0u64;
    loop {
        let n = match reader.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted && !interrupt::requested() => {
                continue
            }
            Err(error) => return Err(interrupt_or(error, target)),
        };
        if let Some(checksummer) = &mut checksummer {
            checksummer.update(&buffer[..n]);
        }
        file.write_all(&buffer[..n])
            .map_err(|e| interrupt_or(e, target))?;
        written += n as u64;
    }
    if let (Some(verify), Some(path)) = (verify.as_mut(), manifest_path) {
        let digest = checksummer.map(|c| c.finish());
        verify
            .check
            .record(&path, written, digest)
            .map_err(|problem| {
                anyhow::anyhow!("the backup does not match its manifest: {problem}")
            })?;
    }
    Ok(written)
}

/// A new file at `target` with permission bits `mode`; never replaces one.
pub fn create_new(target: &Path, mode: u32) -> Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o7777)
        .open(target)
        .map_err(|e| interrupt_or(e, target))
}

/// The error for a failed write: an interruption when Ctrl-C arrived, a
/// full disk said plainly, else the I/O error with the file's name.
pub fn interrupt_or(error: io::Error, path: &Path) -> anyhow::Error {
    if interrupt::requested() {
        anyhow::Error::new(Interrupted)
    } else if error.raw_os_error() == Some(nix::libc::ENOSPC) {
        anyhow::anyhow!("out of disk space while writing `{}`", path.display())
    } else {
        anyhow::Error::new(error).context(format!("cannot extract `{}`", path.display()))
    }
}

/// Test knob, not a setting: `PITR_STAGE_DELAY_MS` makes staging wait that
/// long before each file of a backup (copied or extracted), so that a test
/// can deliver a signal while staging is certainly under way (like
/// `PITR_FETCH_DELAY_MS` for replay). Unset, it costs one lookup per restore.
pub fn simulated_slow_staging() {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("PITR_STAGE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_millis)
    });
    if let Some(delay) = delay {
        std::thread::sleep(*delay);
    }
}

/// A small file of pitr's own in the staged tree (`tablespace_map`),
/// readable by its owner only, as PostgreSQL writes its files.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, contents).map_err(|e| interrupt_or(e, path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set the mode of `{}`", path.display()))
}
