//! Command lines pitr prints for the user to paste: full program paths,
//! quoted only where the shell needs it, run as the server's OS user.

use std::path::PathBuf;

use nix::unistd::{Uid, User};

/// This very binary by its real path: what the server runs as
/// archive_command and restore_command (its PATH is not the user's).
pub fn this_program() -> std::io::Result<PathBuf> {
    std::env::current_exe().and_then(|path| path.canonicalize())
}

/// A word as the shell needs it: bare when it holds only safe characters,
/// else in single quotes.
pub fn shell_word(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(
            shell_word("/usr/lib/postgresql/15/bin/pg_ctl"),
            "/usr/lib/postgresql/15/bin/pg_ctl"
        );
        assert_eq!(shell_word("/srv/my data"), "'/srv/my data'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
