//! Which OS user PostgreSQL runs as.
//!
//! PostgreSQL refuses to run as root. When `pitr` runs as root it stages
//! files owned by the PostgreSQL user and starts the server as that user;
//! otherwise everything runs as the invoking user.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::unistd::{Gid, Uid, User};

/// The identity PostgreSQL's programs run under.
#[derive(Clone, Debug)]
pub struct OsUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// True when `pitr` is root and must switch to this user for the server.
    pub switch: bool,
}

impl OsUser {
    /// As root: the user named by `--os-user`; otherwise the current user.
    pub fn for_server(requested: &str) -> Result<OsUser> {
        if !Uid::effective().is_root() {
            let uid = Uid::effective();
            let name = User::from_uid(uid)
                .ok()
                .flatten()
                .map(|user| user.name)
                .unwrap_or_else(|| uid.to_string());
            return Ok(OsUser {
                name,
                uid,
                gid: Gid::effective(),
                switch: false,
            });
        }
        let user = User::from_name(requested)
            .with_context(|| format!("cannot look up the OS user `{requested}`"))?;
        let Some(user) = user else {
            bail!(
                "PostgreSQL cannot run as root and the OS user `{requested}` does not exist: create it or pass --os-user NAME"
            );
        };
        if user.uid.is_root() {
            bail!("PostgreSQL cannot run as root: pass --os-user with an unprivileged user");
        }
        Ok(OsUser {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            switch: true,
        })
    }

    /// A command that runs as this user (uid and gid set before exec, which
    /// also drops root's supplementary groups).
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        if self.switch {
            command.uid(self.uid.as_raw()).gid(self.gid.as_raw());
            if let Ok(Some(user)) = User::from_uid(self.uid) {
                command
                    .env("HOME", user.dir)
                    .env("USER", &self.name)
                    .env("LOGNAME", &self.name);
            }
        }
        command
    }

    /// Gives `path` (not following symlinks) to this user, when switching.
    pub fn own(&self, path: &Path) -> Result<()> {
        if self.switch {
            std::os::unix::fs::lchown(path, Some(self.uid.as_raw()), Some(self.gid.as_raw()))
                .with_context(|| {
                    format!(
                        "cannot give `{}` to OS user `{}`",
                        path.display(),
                        self.name
                    )
                })?;
        }
        Ok(())
    }
}
