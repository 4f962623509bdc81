//! One file of a backup read without staging anything: what a restore
//! must know before it writes (`global/1262`, the database catalog, for a
//! one-database restore). A seekable tar gives it by its index with one
//! ranged read; a plain backup holds it as an object; a stream-only tar is
//! read until the member comes by.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

use super::parallel;
use super::tar_stream::TarStream;
use crate::progress::Reporter;
use crate::repo::backup::{Backup, BackupFormat};
use crate::repo::store::StoreRead;

/// Files larger than this are not read into memory (the catalogs asked
/// for are a few pages).
const MEMBER_LIMIT: u64 = 64 << 20;

/// The bytes of `path` (relative to the data directory) in `backup`, or
/// `None` when the backup has no such file.
pub fn read_backup_file(
    store: &dyn StoreRead,
    backup: &Backup,
    path: &str,
    reporter: &Reporter,
) -> Result<Option<Vec<u8>>> {
    match backup.format {
        BackupFormat::Plain => {
            let key = format!("{}{path}", backup.prefix());
            let Some(object) = store.stat(&key)? else {
                return Ok(None);
            };
            if object.size > MEMBER_LIMIT {
                anyhow::bail!("`{}` is unexpectedly large", store.describe(&key));
            }
            let mut bytes = Vec::new();
            store
                .open(&key)
                .and_then(|mut reader| reader.read_to_end(&mut bytes))
                .with_context(|| format!("cannot read `{}`", store.describe(&key)))?;
            Ok(Some(bytes))
        }
        BackupFormat::Tar(_) => {
            let base = backup
                .base_tar()
                .with_context(|| format!("backup `{}` has no base.tar", backup.id))?;
            if let Some(index) = parallel::usable_index(store, backup, &base, reporter) {
                let Some(member) = index
                    .members
                    .iter()
                    .find(|member| member.is_file() && member.path == path)
                else {
                    return Ok(None);
                };
                if member.size > MEMBER_LIMIT {
                    anyhow::bail!("`{path}` in `{}` is unexpectedly large", base.key);
                }
                return parallel::read_member(store, &base.key, member).map(Some);
            }
            let mut tar = TarStream::open(store, &base)?;
            let mut members = tar.members(None)?;
            let described = members.described().display();
            let wanted = Path::new(path);
            while let Some(mut member) = members.next_member()? {
                if member.relative != wanted || !member.entry.header().entry_type().is_file() {
                    continue;
                }
                if member.entry.size() > MEMBER_LIMIT {
                    anyhow::bail!("`{path}` in `{described}` is unexpectedly large");
                }
                let mut bytes = Vec::new();
                member
                    .entry
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("cannot read `{path}` in `{described}`"))?;
                return Ok(Some(bytes));
            }
            Ok(None)
        }
    }
}
