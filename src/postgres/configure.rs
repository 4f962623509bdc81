//! The configuration step: a staged data directory made ready to start in
//! recovery. A backup made with `-R` loses its `standby.signal`, a backup of
//! a Debian cluster gets the configuration files it lacks, and pitr's
//! recovery settings are appended to `postgresql.auto.conf` with
//! `recovery.signal` beside it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::settings::RecoverySettings;
use crate::plan::Plan;

/// Makes the extracted backup ready to start in recovery.
pub fn prepare_data_directory(
    dir: &Path,
    plan: &Plan,
    settings: &RecoverySettings,
    notes: &mut Vec<String>,
) -> Result<()> {
    if !dir.join("backup_label").is_file() {
        bail!(
            "backup `{}` extracted without a backup_label; it is not a pg_basebackup backup",
            plan.backup.id
        );
    }
    for dir_name in ["pg_wal", "pg_wal/archive_status"] {
        let path = dir.join(dir_name);
        if !path.is_dir() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .with_context(|| format!("cannot create `{}`", path.display()))?;
        }
    }
    // A backup made with `pg_basebackup -R` would start as a standby.
    for signal in ["standby.signal", "recovery.signal"] {
        let path = dir.join(signal);
        if path.exists() {
            fs::remove_file(&path)
                .with_context(|| format!("cannot remove `{}`", path.display()))?;
            if signal == "standby.signal" {
                notes.push("removed standby.signal (the backup was made with -R)".to_string());
            }
        }
    }
    // The log of an earlier restore, carried by a backup of a restored
    // cluster: the new restore starts its own.
    let old_log = dir.join(super::server::LOG_FILE_NAME);
    if old_log.exists() {
        fs::remove_file(&old_log)
            .with_context(|| format!("cannot remove `{}`", old_log.display()))?;
    }
    // Debian keeps postgresql.conf and pg_hba.conf in /etc, outside the
    // data directory, so backups of such clusters have none.
    let conf = dir.join("postgresql.conf");
    if !conf.exists() {
        write_file(
            &conf,
            b"# written by pitr: the backup had no postgresql.conf\n",
        )?;
        notes.push(
            "the backup has no postgresql.conf (as on Debian); an empty one was written"
                .to_string(),
        );
    }
    let hba = dir.join("pg_hba.conf");
    if !hba.exists() {
        write_file(
            &hba,
            b"# written by pitr: the backup had no pg_hba.conf\nlocal all all peer\n",
        )?;
        notes.push(
            "the backup has no pg_hba.conf; one allowing local peer connections was written"
                .to_string(),
        );
    }
    let ident = dir.join("pg_ident.conf");
    if !ident.exists() {
        write_file(&ident, b"")?;
    }
    let auto = dir.join("postgresql.auto.conf");
    let header = format!(
        "Added by pitr restore at {}: backup {}, target {}",
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S %:z"),
        plan.backup.id,
        plan.target.describe(&jiff::tz::TimeZone::system())
    );
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto)
        .with_context(|| format!("cannot open `{}`", auto.display()))?;
    file.write_all(settings.render(&header).as_bytes())
        .with_context(|| format!("cannot write `{}`", auto.display()))?;
    write_file(&dir.join("recovery.signal"), b"")?;
    Ok(())
}

/// A small configuration file, readable by its owner only.
fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("cannot write `{}`", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set the mode of `{}`", path.display()))
}
