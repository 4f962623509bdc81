//! Repository scanning: backups (label, manifest, formats) and the archive
//! listing, gathered into a `Catalog` that planning works from.
//!
//! Every read and write of a repository goes through [`store`]: readers
//! (the catalog, and so restore, list, events, verify; wal-fetch) hold
//! only the read role, [`RepoRead`]; `init`, `backup`, `expire` and
//! `wal-push` open the write role ([`writer::open_for_writing`],
//! [`push`]).

pub mod archive;
pub mod archive_name;
pub mod arrival;
pub mod backup;
pub mod capability;
pub mod facts_cache;
pub mod identity;
pub mod incremental;
pub mod label;
pub mod listing_cache;
pub mod manifest;
pub mod manifest_check;
pub mod pg_control;
pub mod push;
pub mod remembered;
pub mod store;
pub mod tablespace;
pub mod tar_split;
pub mod wal_compression;
pub mod wal_source;
pub mod writer;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::wal::SegmentSize;
use archive::WalArchive;
use backup::{Backup, UnreadableBackup};
use std::sync::Arc;
use store::object::{ObjectStorage, ObjectUrl};
use store::posix::Posix;
use store::{StoreRead, Writable};

/// Where the backups and the WAL archive live: two local directories, or
/// a repository in object storage. Nothing else can be built, so no path
/// ever holds URL text and no URL is ever opened as a directory.
#[derive(Clone, Debug)]
pub enum RepoLocation {
    /// `DIR/base` and `DIR/wal` of `--repo DIR`, or `--backups` and
    /// `--wal-archive` (absolute).
    Local {
        backups: PathBuf,
        wal_archive: PathBuf,
        /// The directory `--repo` named (absolute), when the repository
        /// was given that way rather than as `--backups` and
        /// `--wal-archive`.
        repo_dir: Option<PathBuf>,
    },
    /// `--repo s3://…` (`az://`, `gs://`): `base/` and `wal/` under it.
    Object(ObjectRepo),
}

impl RepoLocation {
    /// Where the backups are, as messages and JSON name it: a path or a URL.
    pub fn backups_text(&self) -> String {
        match self {
            RepoLocation::Local { backups, .. } => backups.display().to_string(),
            RepoLocation::Object(object) => object.url.join("base").to_string(),
        }
    }

    /// Where the WAL archive is, as messages and JSON name it.
    pub fn wal_archive_text(&self) -> String {
        match self {
            RepoLocation::Local { wal_archive, .. } => wal_archive.display().to_string(),
            RepoLocation::Object(object) => object.url.join("wal").to_string(),
        }
    }

    /// The repository as a whole, for reports: the directory holding
    /// `base/` (or the backups directory itself), or the URL.
    pub fn repository_text(&self) -> String {
        match self {
            RepoLocation::Local { backups, .. } => {
                backups.parent().unwrap_or(backups).display().to_string()
            }
            RepoLocation::Object(object) => object.url.to_string(),
        }
    }

    /// The options that name this repository to another pitr command (the
    /// `pitr restore` a drill or an extract runs), the way the user named
    /// it: `--repo` with the URL or the directory, else `--backups` and
    /// `--wal-archive`.
    pub fn command_args(&self) -> Vec<std::ffi::OsString> {
        match self {
            RepoLocation::Object(object) => vec!["--repo".into(), object.url.to_string().into()],
            RepoLocation::Local {
                repo_dir: Some(dir),
                ..
            } => vec!["--repo".into(), dir.into()],
            RepoLocation::Local {
                backups,
                wal_archive,
                repo_dir: None,
            } => vec![
                "--backups".into(),
                backups.into(),
                "--wal-archive".into(),
                wal_archive.into(),
            ],
        }
    }
}

/// The object that marks a prefix as a pitr repository in object storage
/// (what `base/` and `wal/` directories are on disk); `pitr init` writes it.
pub const OBJECT_REPO_MARKER: &str = "pitr-repository.json";

/// What [`OBJECT_REPO_MARKER`] holds: the layout under the prefix, the
/// same as a repository directory's (so a directory copied object by
/// object into a bucket, with this marker beside it, is a repository).
pub const OBJECT_REPO_MARKER_CONTENT: &str = r#"{
  "layout": {
    "backups": "base/",
    "wal_archive": "wal/"
  },
  "pitr_repository": 1
}"#;

/// A repository in object storage (`s3://`, `az://`, `gs://`): its URL and
/// its stores, the prefix itself and `base/` and `wal/` under it.
#[derive(Clone, Debug)]
pub struct ObjectRepo {
    pub url: ObjectUrl,
    pub root: Arc<ObjectStorage>,
    pub backups: Arc<ObjectStorage>,
    pub archive: Arc<ObjectStorage>,
}

impl ObjectRepo {
    /// The repository at `url`, configured from the environment; nothing
    /// is contacted yet.
    pub fn open(url: &ObjectUrl) -> Result<ObjectRepo> {
        let settings = crate::config::Config::load()?.store_settings(url.service)?;
        let open = |url: &ObjectUrl| -> Result<Arc<ObjectStorage>> {
            Ok(Arc::new(ObjectStorage::open_with(url, &settings)?))
        };
        Ok(ObjectRepo {
            url: url.clone(),
            root: open(url)?,
            backups: open(&url.join("base"))?,
            archive: open(&url.join("wal"))?,
        })
    }

    /// Refuses a prefix that `pitr init` did not make a repository (a typo
    /// in the URL would otherwise read as an empty repository).
    pub fn check_initialised(&self) -> Result<()> {
        let found = self
            .root
            .stat(OBJECT_REPO_MARKER)
            .with_context(|| format!("cannot reach the repository {}", self.url))?;
        if found.is_none() {
            bail!(
                "{} is not a pitr repository (it has no {OBJECT_REPO_MARKER}); create one with `pitr init --repo {}`",
                self.url,
                self.url
            );
        }
        Ok(())
    }
}

/// A store in object storage, configured by the configuration file and
/// the environment (which wins).
pub fn open_object_storage(url: &ObjectUrl) -> Result<ObjectStorage> {
    let settings = crate::config::Config::load()?.store_settings(url.service)?;
    ObjectStorage::open_with(url, &settings)
}

/// `--repo` (or `PITR_REPO`), else the configuration file's `repository`.
pub fn repo_or_configured(repo: Option<&Path>) -> Result<Option<PathBuf>> {
    match repo {
        Some(repo) => Ok(Some(repo.to_path_buf())),
        None => Ok(crate::config::Config::load()?.repository.map(PathBuf::from)),
    }
}

/// The repository URL in `--repo` (or `PITR_REPO`), if it is one.
pub fn object_url(repo: &Path) -> Option<Result<ObjectUrl>> {
    ObjectUrl::parse(repo.to_str()?)
}

impl RepoLocation {
    /// `--repo DIR` means `DIR/base` and `DIR/wal`; `--backups` with
    /// `--wal-archive` name the two parts of other layouts.
    pub fn new(
        repo: Option<&Path>,
        backups: Option<&Path>,
        wal_archive: Option<&Path>,
    ) -> Result<RepoLocation> {
        let configured = match (backups, wal_archive) {
            (None, None) => repo_or_configured(repo)?,
            _ => repo.map(Path::to_path_buf),
        };
        let repo = configured.as_deref();
        if let (None, None, Some(repo)) = (backups, wal_archive, repo) {
            if let Some(url) = object_url(repo) {
                let object = ObjectRepo::open(&url?)?;
                object.check_initialised()?;
                return Ok(RepoLocation::Object(object));
            }
        }
        let (backups, wal_archive, repo_dir) = match (backups, wal_archive, repo) {
            (Some(backups), Some(wal), _) => (absolute(backups)?, absolute(wal)?, None),
            (None, None, Some(repo)) => (
                absolute(&repo.join("base"))?,
                absolute(&repo.join("wal"))?,
                Some(absolute(repo)?),
            ),
            _ => bail!(
                "no repository given: pass --repo DIR or URL (or set PITR_REPO, or `repository` in {}), or both --backups DIR and --wal-archive DIR", crate::config::DEFAULT_PATH
            ),
        };
        for (what, dir) in [
            ("backups directory", &backups),
            ("WAL archive", &wal_archive),
        ] {
            check_repo_dir(what, dir, repo)?;
        }
        Ok(RepoLocation::Local {
            backups,
            wal_archive,
            repo_dir,
        })
    }
}

/// A part of the repository must be a directory pitr can read: a missing
/// one points to `pitr init`, an unreadable one says who may read it.
fn check_repo_dir(what: &str, dir: &Path, repo: Option<&Path>) -> Result<()> {
    use store::posix::access::{check_dir, Need, Problem};
    match check_dir(dir, Need::Read) {
        Ok(()) => Ok(()),
        Err(Problem::Missing) => match repo {
            Some(repo) => bail!(
                "the {what} `{}` does not exist: `{}` is not a pitr repository; create one with `pitr init --repo {}`",
                dir.display(),
                repo.display(),
                crate::shell::shell_word(&repo.to_string_lossy())
            ),
            None => bail!("the {what} `{}` does not exist", dir.display()),
        },
        Err(Problem::NotADirectory) => {
            bail!("the {what} `{}` is not a directory", dir.display())
        }
        Err(Problem::Denied(why)) => bail!("the {what} `{}` cannot be read: {why}", dir.display()),
    }
}

/// Read access to a repository, and nothing more: what `restore`, `plan`,
/// `list`, `events` and `verify` work from, so none of them can write it.
#[derive(Clone, Debug)]
pub struct RepoRead {
    pub backups: Arc<dyn StoreRead>,
    pub archive: Arc<dyn StoreRead>,
}

/// Write access to a repository: only `init`, `backup`, `expire` and
/// `wal-push` open one, with [`writer::open_for_writing`].
#[derive(Clone, Debug)]
pub struct RepoWrite {
    pub backups: Writable,
    pub archive: Writable,
}

impl RepoLocation {
    /// The repository's stores, to read.
    pub fn read(&self) -> RepoRead {
        match self {
            RepoLocation::Object(object) => RepoRead {
                backups: object.backups.clone(),
                archive: object.archive.clone(),
            },
            RepoLocation::Local {
                backups,
                wal_archive,
                ..
            } => RepoRead {
                backups: Arc::new(Posix::new(backups)),
                archive: Arc::new(Posix::new(wal_archive)),
            },
        }
    }
}

/// Where `wal-push` and `wal-fetch` find the archive: `--wal-archive`,
/// else `wal/` of `--repo`, a directory or a URL.
pub enum ArchiveAt {
    Dir(PathBuf),
    Object(ObjectUrl),
}

pub fn wal_archive_at(repo: Option<&Path>, wal_archive: Option<&Path>) -> Result<ArchiveAt> {
    let configured = match wal_archive {
        None => repo_or_configured(repo)?,
        Some(_) => None,
    };
    match (wal_archive, configured.as_deref()) {
        (Some(archive), _) => match object_url(archive) {
            Some(url) => Ok(ArchiveAt::Object(url?)),
            None => Ok(ArchiveAt::Dir(archive.to_path_buf())),
        },
        (None, Some(repo)) => match object_url(repo) {
            Some(url) => Ok(ArchiveAt::Object(url?.join("wal"))),
            None => Ok(ArchiveAt::Dir(repo.join("wal"))),
        },
        (None, None) => {
            bail!("no archive given: pass --wal-archive DIR or --repo DIR (or set PITR_REPO, or `repository` in {})", crate::config::DEFAULT_PATH)
        }
    }
}

/// The WAL archive at `dir`, to read only (what `wal-fetch` gets); `None`
/// when it is not a directory.
pub fn open_archive_read(dir: &Path) -> Option<Arc<dyn StoreRead>> {
    let store = Posix::new(dir);
    store
        .exists()
        .then(|| Arc::new(store) as Arc<dyn StoreRead>)
}

/// Makes a path absolute without resolving symlinks (so messages show the
/// path the user gave), because PostgreSQL runs `restore_command` from the
/// data directory.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve `{}`", path.display()))
}

/// Everything known about a repository, read once per command.
#[derive(Debug)]
pub struct Catalog {
    pub location: RepoLocation,
    /// The repository's stores, to read: all a catalog's user gets.
    pub stores: RepoRead,
    /// Understood backups, oldest stop first.
    pub backups: Vec<Backup>,
    pub unreadable: Vec<UnreadableBackup>,
    pub archive: WalArchive,
    /// Problems worth a warning that do not stop planning.
    pub warnings: Vec<String>,
}

impl Catalog {
    pub fn scan(location: RepoLocation, local: &jiff::tz::TimeZone) -> Result<Catalog> {
        let stores = location.read();
        let archive = WalArchive::scan(Arc::clone(&stores.archive), SegmentSize::DEFAULT)?;
        let mut warnings = Vec::new();
        let mut histories = Vec::new();
        for (name, file) in &archive.backup_histories {
            match archive::read_text(file).and_then(|text| {
                label::parse_backup_history(&text, local).map_err(anyhow::Error::from)
            }) {
                Ok(history) => histories.push(history),
                Err(error) => {
                    warnings.push(format!("ignoring backup history file `{name}`: {error:#}"))
                }
            }
        }
        for (timeline, reason) in &archive.broken_histories {
            warnings.push(format!(
                "the history file of timeline {timeline} cannot be read: {reason}"
            ));
        }

        let mut backups = Vec::new();
        let mut unreadable = Vec::new();
        let ids = stores.backups.list_prefixes("").with_context(|| {
            format!(
                "cannot read the backups directory `{}`",
                location.backups_text()
            )
        })?;
        for id in ids {
            // Hidden directories are ours or the user's scratch space.
            if id.starts_with('.') {
                continue;
            }
            match backup::read_backup(stores.backups.as_ref(), &id, &histories, local) {
                Ok(mut backup) => {
                    // A tar backup's PG_VERSION and pg_control lie deep in a
                    // possibly compressed base.tar; the page header of the
                    // backup's first WAL segment tells the same cheaply.
                    let header = start_segment_header(&archive, &backup);
                    if backup.system_identifier.is_none() {
                        backup.system_identifier = header.map(|h| h.system_identifier);
                    }
                    if backup.major_version.is_none() {
                        backup.major_version = header
                            .and_then(|h| h.major_version())
                            .or(archive.major_version);
                    }
                    backups.push(backup)
                }
                Err(error) => unreadable.push(UnreadableBackup {
                    dir: stores.backups.describe(&id),
                    id,
                    reason: format!("{error:#}"),
                }),
            }
        }
        incremental::check_chains(stores.backups.as_ref(), &mut backups, &mut unreadable);
        backups.sort_by_key(|backup| (backup.stop_lsn, backup.stop_time));
        Ok(Catalog {
            location,
            stores,
            backups,
            unreadable,
            archive,
            warnings,
        })
    }

    pub fn backup(&self, id: &str) -> Option<&Backup> {
        self.backups.iter().find(|backup| backup.id == id)
    }
}

/// The page header of the backup's first segment, if the archive has it.
fn start_segment_header(
    archive: &WalArchive,
    backup: &Backup,
) -> Option<crate::wal::page::LongPageHeader> {
    let segment =
        crate::wal::WalSegment::containing(backup.timeline, backup.start_lsn, archive.segment_size);
    let file = archive.segment(segment)?;
    archive::read_long_header(file).ok()
}

#[cfg(test)]
mod read_only_tests {
    /// The commands and parts that only read the repository never name the
    /// write role: they get the catalog (whose stores are `StoreRead`) or a
    /// `StoreRead` of their own, and nothing that could write. This keeps
    /// "a restore never writes the repository" checkable by reading one
    /// list, and fails when someone hands them the write role.
    #[test]
    fn readers_never_name_the_write_role() {
        let readers = [
            (
                "commands/restore.rs",
                include_str!("../commands/restore.rs"),
            ),
            ("commands/list.rs", include_str!("../commands/list.rs")),
            ("commands/events.rs", include_str!("../commands/events.rs")),
            ("commands/verify.rs", include_str!("../commands/verify.rs")),
            (
                "commands/wal_fetch.rs",
                include_str!("../commands/wal_fetch.rs"),
            ),
            ("commands/mod.rs", include_str!("../commands/mod.rs")),
            ("plan/mod.rs", include_str!("../plan/mod.rs")),
            ("plan/choose.rs", include_str!("../plan/choose.rs")),
            ("plan/window.rs", include_str!("../plan/window.rs")),
            ("plan/wal_range.rs", include_str!("../plan/wal_range.rs")),
            ("plan/error.rs", include_str!("../plan/error.rs")),
            ("verify.rs", include_str!("../verify.rs")),
            ("stage/mod.rs", include_str!("../stage/mod.rs")),
            ("stage/extract.rs", include_str!("../stage/extract.rs")),
            (
                "stage/tablespaces.rs",
                include_str!("../stage/tablespaces.rs"),
            ),
            ("stage/combine.rs", include_str!("../stage/combine.rs")),
            ("stage/tree.rs", include_str!("../stage/tree.rs")),
            ("stage/write.rs", include_str!("../stage/write.rs")),
            ("stage/readahead.rs", include_str!("../stage/readahead.rs")),
            (
                "stage/destination.rs",
                include_str!("../stage/destination.rs"),
            ),
            ("stage/commit.rs", include_str!("../stage/commit.rs")),
            ("stage/ownership.rs", include_str!("../stage/ownership.rs")),
            ("stage/durable.rs", include_str!("../stage/durable.rs")),
            ("stage/prefetch.rs", include_str!("../stage/prefetch.rs")),
            ("repo/wal_source.rs", include_str!("wal_source.rs")),
            (
                "commands/extract.rs",
                include_str!("../commands/extract.rs"),
            ),
            ("extract/moment.rs", include_str!("../extract/moment.rs")),
            (
                "postgres/scratch.rs",
                include_str!("../postgres/scratch.rs"),
            ),
        ];
        for (file, text) in readers {
            // Tests may build any store they like.
            let code = text.split("#[cfg(test)]").next().unwrap_or(text);
            for writer in [
                "StoreWrite",
                "Writable",
                "RepoWrite",
                "open_for_writing",
                "repo::writer",
                "repo::push",
                "store::posix",
            ] {
                assert!(
                    !code.contains(writer),
                    "{file} names `{writer}`: commands that only read get only the read role"
                );
            }
        }
    }
}

#[cfg(test)]
mod command_args_tests {
    // Test fixtures: a repository's two directories on disk.
    #![allow(clippy::disallowed_methods)]

    use super::RepoLocation;
    use std::ffi::OsString;

    fn args(location: &RepoLocation) -> Vec<String> {
        location
            .command_args()
            .into_iter()
            .map(|arg: OsString| arg.to_string_lossy().into_owned())
            .collect()
    }

    /// A child pitr (drill's and extract's restore) is given the
    /// repository the way the user gave it.
    #[test]
    fn the_repository_is_passed_on_as_it_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("base")).unwrap();
        std::fs::create_dir_all(repo.join("wal")).unwrap();

        let given_repo = RepoLocation::new(Some(&repo), None, None).unwrap();
        assert_eq!(args(&given_repo), ["--repo", &repo.to_string_lossy()]);

        let given_parts =
            RepoLocation::new(None, Some(&repo.join("base")), Some(&repo.join("wal"))).unwrap();
        assert_eq!(
            args(&given_parts),
            [
                "--backups",
                &*repo.join("base").to_string_lossy(),
                "--wal-archive",
                &*repo.join("wal").to_string_lossy()
            ]
        );
    }
}
