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
                Ok(found) => seen_versions.push(format!("{} ({found})", dir.display())),
                Err(_) => continue,
            }
        }
        if let Some(dir) = explicit {
            bail!(
                "`{}` holds no PostgreSQL {major_version} server programs (postgres, pg_ctl){}",
                dir.display(),
                found_suffix(&seen_versions)
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

fn found_suffix(seen: &[String]) -> String {
    if seen.is_empty() {
        String::new()
    } else {
        format!(" (found other versions: {})", seen.join(", "))
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
