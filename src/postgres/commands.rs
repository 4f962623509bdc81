//! Command lines pitr prints for the user to paste: full program paths,
//! quoted only where the shell needs it, run as the server's OS user.

use std::path::PathBuf;

use nix::unistd::{Uid, User};

pub use crate::shell::shell_word;

/// This very binary by its real path: what the server runs as
/// archive_command and restore_command (its PATH is not the user's).
pub fn this_program() -> std::io::Result<PathBuf> {
    std::env::current_exe().and_then(|path| path.canonicalize())
}

/// `command` run as OS user `user`: unchanged when pitr already runs as that
/// user, else through `sudo -u` (or `runuser -u`, always present on Linux,
/// when pitr is root and sudo is not installed). PostgreSQL's programs
/// refuse to run as root, and peer authentication maps the OS user.
pub fn as_user(user: &str, command: &str) -> String {
    let me = Uid::effective();
    let current = User::from_uid(me).ok().flatten().map(|u| u.name);
    if current.as_deref() == Some(user) {
        return command.to_string();
    }
    if me.is_root() && !on_path("sudo") {
        return format!("runuser -u {} -- {command}", shell_word(user));
    }
    format!("sudo -u {} {command}", shell_word(user))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
