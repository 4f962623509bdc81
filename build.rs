//! Puts the git commit into `pitr --version`: `PITR_GIT_COMMIT` when the
//! builder sets it (packagers building from a tarball), else what `git`
//! says about the source tree, else nothing — a tarball without `.git`
//! builds as well, and its version says that the commit is unknown.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=PITR_GIT_COMMIT");
    let commit = std::env::var("PITR_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            // Rebuild when HEAD moves: HEAD itself and the branch it names.
            for path in [git(&["rev-parse", "--git-path", "HEAD"]), {
                git(&["symbolic-ref", "-q", "HEAD"])
                    .and_then(|branch| git(&["rev-parse", "--git-path", &branch]))
            }]
            .into_iter()
            .flatten()
            {
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        });
    let version = env!("CARGO_PKG_VERSION");
    let long = match commit {
        Some(commit) => format!("{version} (commit {commit})"),
        None => format!("{version} (commit unknown: built outside a git checkout)"),
    };
    println!("cargo:rustc-env=PITR_LONG_VERSION={long}");
}
