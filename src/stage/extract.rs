//! Writing backup files into the staging directory: tar members checked
//! and streamed out, plain backups copied.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};

use super::readahead::ReadAhead;
use super::Interrupted;
use crate::compression::Compression;
use crate::interrupt;
use crate::progress::Progress;
use crate::repo::manifest_check::ManifestCheck;

/// Checking extracted files against the backup's manifest, under a path
/// prefix (`pg_tblspc/<oid>/` for a tablespace).
pub struct Verify<'a> {
    pub check: &'a mut ManifestCheck,
    pub prefix: String,
}

impl Verify<'_> {
    fn manifest_path(&self, relative: &Path) -> String {
        format!("{}{}", self.prefix, relative.to_string_lossy())
    }
}

/// One buffer for every file written: data goes from the reader into it
/// and from there to the kernel, one copy in user space.
pub struct FileWriter {
    buffer: Vec<u8>,
}

impl Default for FileWriter {
    fn default() -> FileWriter {
        FileWriter {
            buffer: vec![0; 256 * 1024],
        }
    }
}

/// Copies `reader` into a new file at `target`, checksumming on the way
/// when the manifest has a checksum for it, and checks it.
fn write_checked(
    reader: &mut dyn Read,
    target: &Path,
    relative: &Path,
    mode: u32,
    verify: &mut Option<&mut Verify<'_>>,
    writer: &mut FileWriter,
) -> Result<u64> {
    let manifest_path = verify.as_ref().map(|v| v.manifest_path(relative));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o7777)
        .open(target)
        .map_err(|e| interrupt_or(e, target))?;
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

/// Checks a tar member name and turns it into a relative path: no absolute
/// paths, no `..`, nothing that could land outside the staging directory.
pub fn safe_member_path(name: &Path) -> Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                bail!("refusing tar member `{}`: absolute path", name.display())
            }
            Component::ParentDir => {
                bail!("refusing tar member `{}`: it contains `..`", name.display())
            }
        }
    }
    Ok(clean)
}

/// Streams a (compressed) tar into `dest`, refusing hostile members. The
/// archive is decompressed on a second thread while this one writes.
pub fn extract_tar(
    path: &Path,
    compression: Compression,
    dest: &Path,
    progress: &mut Progress,
    mut verify: Option<&mut Verify<'_>>,
    writer: &mut FileWriter,
) -> Result<u64> {
    let decompressed = ReadAhead::open(path, compression)
        .with_context(|| format!("cannot open `{}`", path.display()))?;
    let consumed = decompressed.consumed();
    let mut reported = 0;
    let mut archive = tar::Archive::new(decompressed);
    let mut written = 0;
    let entries = archive
        .entries()
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    for entry in entries {
        simulated_slow_staging();
        let mut entry = entry.map_err(|e| interrupt_or(e, path))?;
        let now = consumed.load(Ordering::Relaxed);
        progress.add(now.saturating_sub(reported));
        reported = now;
        let raw = entry
            .path()
            .with_context(|| format!("`{}` has a member with an unreadable name", path.display()))?
            .into_owned();
        let relative =
            safe_member_path(&raw).with_context(|| format!("in `{}`", path.display()))?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&relative);
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            // pg_basebackup writes tablespace links as symlinks in
            // pg_tblspc/; the server recreates them from tablespace_map.
            if relative.starts_with("pg_tblspc") {
                continue;
            }
            bail!(
                "refusing tar member `{}` in `{}`: a symbolic link outside pg_tblspc/",
                raw.display(),
                path.display()
            );
        }
        if kind.is_hard_link() {
            let link = entry.link_name().ok().flatten().with_context(|| {
                format!("`{}` has a hard link without a target", path.display())
            })?;
            let source = dest.join(safe_member_path(&link).with_context(|| {
                format!("in `{}`: hard link `{}`", path.display(), raw.display())
            })?);
            fs::hard_link(&source, &target)
                .with_context(|| format!("cannot create hard link `{}`", target.display()))?;
            continue;
        }
        if !(kind.is_file() || kind.is_dir()) {
            bail!(
                "refusing tar member `{}` in `{}`: not a file or directory",
                raw.display(),
                path.display()
            );
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        let mode = entry.header().mode().unwrap_or(0o600);
        if kind.is_dir() {
            match fs::DirBuilder::new().mode(mode & 0o7777).create(&target) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {}
                Err(error) => return Err(interrupt_or(error, &target)),
            }
            continue;
        }
        written += write_checked(&mut entry, &target, &relative, mode, &mut verify, writer)?;
    }
    progress.add(consumed.load(Ordering::Relaxed).saturating_sub(reported));
    Ok(written)
}

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
fn simulated_slow_staging() {
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

/// Copies a plain-format backup. A symlinked `pg_wal` is copied as a real
/// directory; tablespace links in `pg_tblspc/` are skipped (tablespaces are
/// staged on their own and the server relinks them from tablespace_map);
/// any other link is refused.
pub fn copy_tree(
    source: &Path,
    dest: &Path,
    relative: &Path,
    progress: &mut Progress,
    verify: &mut Option<&mut Verify<'_>>,
    writer: &mut FileWriter,
) -> Result<u64> {
    let mut written = 0;
    let dir = source.join(relative);
    let entries = fs::read_dir(&dir).with_context(|| format!("cannot read `{}`", dir.display()))?;
    for entry in entries {
        simulated_slow_staging();
        if interrupt::requested() {
            bail!(Interrupted);
        }
        let entry = entry.with_context(|| format!("cannot read `{}`", dir.display()))?;
        let rel = relative.join(entry.file_name());
        let from = source.join(&rel);
        let to = dest.join(&rel);
        let metadata = fs::symlink_metadata(&from)
            .with_context(|| format!("cannot read `{}`", from.display()))?;
        let metadata = if metadata.file_type().is_symlink() {
            if rel == Path::new("pg_wal") {
                fs::metadata(&from)
                    .with_context(|| format!("cannot follow `{}`", from.display()))?
            } else if rel.parent() == Some(Path::new("pg_tblspc")) {
                continue;
            } else {
                bail!(
                    "`{}` is a symbolic link outside pg_tblspc/; pitr does not follow links in backups",
                    from.display()
                );
            }
        } else {
            metadata
        };
        if metadata.is_dir() {
            fs::DirBuilder::new()
                .mode(metadata.permissions().mode() & 0o7777)
                .create(&to)
                .with_context(|| format!("cannot create `{}`", to.display()))?;
            written += copy_tree(source, dest, &rel, progress, verify, writer)?;
        } else if metadata.is_file() {
            let copied = if verify.is_some() {
                let mut input = File::open(&from)
                    .with_context(|| format!("cannot open `{}`", from.display()))?;
                write_checked(
                    &mut input,
                    &to,
                    &rel,
                    metadata.permissions().mode(),
                    verify,
                    writer,
                )?
            } else {
                // copy_file_range: no pass through user space.
                fs::copy(&from, &to).map_err(|e| interrupt_or(e, &to))?
            };
            written += copied;
            progress.add(copied);
        }
    }
    Ok(written)
}
