//! `pitr backup --seekable`: the tars pg_basebackup wrote uncompressed into
//! the staged backup replaced by seekable ones, before it is published.

use std::io::BufReader;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::encode::encode;
use super::index::Index;
use super::INDEX_SUFFIX;
use crate::repo::backup::MANIFEST;
use crate::repo::store::{read_all, NewObject, StoreWrite, WriteError};

/// One tar made seekable.
#[derive(Debug)]
pub struct Converted {
    /// `base.tar.zst`, `pg_wal.tar.zst`, `<oid>.tar.zst`.
    pub name: String,
    pub index: Index,
}

/// Replaces every `*.tar` at the top of `staged` (a store over the staged
/// backup's directory) by `*.tar.zst` and its index `*.tar.zst.pitr-index`.
/// Each new object is durable before its tar is deleted.
pub fn convert_staged(staged: &dyn StoreWrite) -> Result<Vec<Converted>> {
    let manifest_sha256 = match staged.stat(MANIFEST)? {
        Some(_) => {
            let bytes = read_all(staged.reader(), MANIFEST)
                .with_context(|| format!("cannot read `{}`", staged.describe(MANIFEST)))?;
            Some(Sha256::digest(&bytes).into())
        }
        None => None,
    };
    let tars: Vec<String> = staged
        .list("", None)
        .with_context(|| format!("cannot list `{}`", staged.describe("")))?
        .into_iter()
        .map(|object| object.key)
        .filter(|key| key.ends_with(".tar"))
        .collect();
    let mut converted = Vec::new();
    for tar in tars {
        let name = format!("{tar}.zst");
        let mut input = BufReader::with_capacity(
            1 << 20,
            staged
                .open(&tar)
                .with_context(|| format!("cannot read `{}`", staged.describe(&tar)))?,
        );
        let mut index = None;
        staged
            .write_stream(&name, &mut |output| {
                index = Some(encode(&mut input, output, manifest_sha256)?);
                Ok(())
            })
            .map_err(|error| write_error(error, staged, &name))?;
        let index =
            index.with_context(|| format!("`{}` was not written", staged.describe(&name)))?;
        let index_name = format!("{name}{INDEX_SUFFIX}");
        let bytes = index.to_bytes();
        staged
            .create_new(&index_name, &NewObject::default(), &mut |output| {
                output.write_all(&bytes)
            })
            .map_err(|error| write_error(error, staged, &index_name))?;
        staged
            .delete(&[&tar])
            .with_context(|| format!("cannot delete `{}`", staged.describe(&tar)))?;
        converted.push(Converted { name, index });
    }
    Ok(converted)
}

fn write_error(error: WriteError, staged: &dyn StoreWrite, key: &str) -> anyhow::Error {
    match error {
        WriteError::Write(error) => {
            anyhow::Error::new(error).context(format!("cannot write `{}`", staged.describe(key)))
        }
        WriteError::Other(error) => error,
    }
}
