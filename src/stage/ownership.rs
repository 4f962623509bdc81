//! The ownership step: the staged data directory belongs to the server's
//! OS user, and only that user may enter it (PostgreSQL refuses a data
//! directory that others can read).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::os_user::OsUser;

/// Gives the staged tree to `user` and closes its top directory to others.
pub fn give_data_directory(staging: &Path, user: &OsUser) -> Result<()> {
    give_tree(staging, user)?;
    fs::set_permissions(staging, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of `{}`", staging.display()))
}

/// Gives every entry of the tree to the server's OS user (when root).
pub fn give_tree(dir: &Path, user: &OsUser) -> Result<()> {
    if !user.switch {
        return Ok(());
    }
    user.own(dir)?;
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read `{}`", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read `{}`", dir.display()))?;
        let path = entry.path();
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            give_tree(&path, user)?;
        } else {
            user.own(&path)?;
        }
    }
    Ok(())
}
