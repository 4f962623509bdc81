//! Finding PostgreSQL's server programs for a major version.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A directory holding `postgres` and `pg_ctl` of one major version.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Binaries {
    pub dir: PathBuf,
    pub major_version: u32,
}

impl Binaries {
    /// `--bin-dir`, else Debian's `/usr/lib/postgresql/<major>/bin`, else `PATH`.
    pub fn find(explicit: Option<&Path>, major_version: u32) -> Result<Binaries> {
        let mut candidates = Vec::new();
        if let Some(dir) = explicit {
            candidates.push(dir.to_path_buf());
        } else {
            candidates.push(PathBuf::from(format!(
                "/usr/lib/postgresql/{major_version}/bin"
            )));
            candidates.push(PathBuf::from(format!("/usr/pgsql-{major_version}/bin")));
            if let Some(path) = std::env::var_os("PATH") {
                candidates.extend(std::env::split_paths(&path));
            }
        }
        let mut seen_versions = Vec::new();
        for dir in candidates {
            if !dir.join("postgres").is_file() || !dir.join("pg_ctl").is_file() {
                continue;
            }
            match server_major_version(&dir) {
                Ok(found) if found == major_version => return Ok(Binaries { dir, major_version }),
                Ok(found) => seen_versions.push(Seen { dir, major: found }),
                Err(_) => continue,
            }
        }
        if let Some(dir) = explicit {
            // A server recovers only a data directory of its own major
            // version (the catalog and WAL formats differ), and it would
            // refuse one late, after staging; refuse before anything is written.
            if let Some(found) = seen_versions.first() {
                bail!(
                    "--bin-dir `{}` holds the server programs of PostgreSQL {}, but the backup was made by PostgreSQL {major_version}: a server recovers only data directories of its own major version; pass --bin-dir with PostgreSQL {major_version}'s bin directory, or omit it to search /usr/lib/postgresql/{major_version}/bin and PATH",
                    dir.display(),
                    found.major,
                );
            }
            bail!(
                "--bin-dir `{}` holds no PostgreSQL server programs (postgres and pg_ctl, runnable); pass the bin directory of PostgreSQL {major_version}",
                dir.display(),
            );
        }
        bail!(
            "PostgreSQL {major_version} server programs not found in /usr/lib/postgresql/{major_version}/bin or PATH{}; install them (Debian: apt-get install postgresql-{major_version}) or pass --bin-dir",
            found_suffix(&seen_versions)
        )
    }

    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Server programs of another major version met during the search.
struct Seen {
    dir: PathBuf,
    major: u32,
}

fn found_suffix(seen: &[Seen]) -> String {
    if seen.is_empty() {
        String::new()
    } else {
        let found: Vec<String> = seen
            .iter()
            .map(|s| format!("PostgreSQL {} in {}", s.major, s.dir.display()))
            .collect();
        format!(
            " (found only other major versions, which cannot recover it: {})",
            found.join(", ")
        )
    }
}

/// Runs `postgres --version` ("postgres (PostgreSQL) 15.18 (Debian ...)").
fn server_major_version(dir: &Path) -> Result<u32> {
    let output = Command::new(dir.join("postgres"))
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run `{}`", dir.join("postgres").display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version_output(&text)
        .with_context(|| format!("unexpected `postgres --version` output: {text}"))
}

pub fn parse_version_output(text: &str) -> Option<u32> {
    let version = text
        .split("(PostgreSQL)")
        .nth(1)?
        .split_whitespace()
        .next()?;
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_outputs() {
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 18beta1\n"),
            Some(18)
        );
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 12.3\n"),
            Some(12)
        );
        assert_eq!(parse_version_output("nonsense"), None);
    }
}
