//! Pushing ahead: one store request at a time, per segment, per process, is
//! what makes a busy primary fall behind its archive. So when PostgreSQL
//! hands over a segment that needs pushing, `wal-push` also pushes the
//! next segments it has marked ready (at most `--push-ahead`, in WAL
//! order), all at once, and leaves a record of each one stored. PostgreSQL
//! then hands those over one by one, and each is answered without a
//! request: the file is proven to be the bytes stored (same size and
//! SHA-256 as the record), else it is pushed as usual.
//!
//! What makes it safe:
//! - PostgreSQL only ever hears about the segment it handed over; that
//!   answer is the same as without pushing ahead.
//! - A record is written after the store confirmed the write (durable), so
//!   no crash leaves a record of something not stored; nothing pushed
//!   ahead is ever dropped or marked done here (PostgreSQL still owns
//!   `archive_status`).
//! - A segment pushed ahead that the store refuses (another cluster's,
//!   other bytes under its name) gets no record: PostgreSQL hands it over
//!   later and hears the refusal then.
//! - Two `wal-push` at once (the archiver and one run by hand) may push the
//!   same segment: the store's create-only write lets one win and the other
//!   compare, as for any repeated push.
//!
//! Unlike pgBackRest's asynchronous archive-push, there is no daemon and no
//! queue that could overflow: the backlog stays in `pg_wal`, where
//! PostgreSQL keeps it until each segment is acknowledged.

use std::path::Path;

use anyhow::{anyhow, Context};

use super::{push_into, How};
use crate::postgres::pg_wal::open_handed_over;
use crate::postgres::pushed_ahead::{Fingerprint, PgWal, PushRecord, Records};
use crate::repo;
use crate::repo::archive_name::WalFileName;
use crate::repo::push::{PushError, Pushed, Source};
use crate::repo::store::Writable;

/// Archives `source` (PostgreSQL's `name`), or answers for it from the
/// record of an earlier push ahead; when it had to be pushed, also pushes
/// up to `ahead` later ready segments of its `pg_wal` alongside.
pub fn push_and_ahead(
    archive: &Writable,
    source: &Path,
    name: &WalFileName,
    how: How,
    ahead: usize,
) -> Result<Pushed, PushError> {
    // Only whole segments inside a server's pg_wal have records and
    // followers; anything else is pushed as it always was.
    let pg_wal = match name {
        WalFileName::Segment(_) => PgWal::holding(source),
        _ => None,
    };
    let Some(pg_wal) = pg_wal else {
        return push_into(archive, source, name, how);
    };
    let records = pg_wal.records();
    let identity = archive.identity();
    let name = name.to_string();
    if let Some(key) = pushed_earlier(&records, &name, source, &identity) {
        records.forget(&name);
        return Ok(Pushed::PushedAhead(key));
    }
    records.forget(&name);
    records.prune(&pg_wal);
    let followers = followers(&pg_wal, &records, &name, ahead);
    std::thread::scope(|scope| {
        let pushing: Vec<_> = followers
            .iter()
            .map(|follower| {
                let (pg_wal, records, identity) = (&pg_wal, &records, &identity);
                let pushed = scope.spawn(move || {
                    push_one_ahead(archive, pg_wal, records, identity, follower, how)
                });
                (follower, pushed)
            })
            .collect();
        let pushed = push_into(archive, source, &WalFileName::Segment(name.clone()), how);
        for (follower, outcome) in pushing {
            // Goes to the server log. Not an error of this push: the
            // segment stays ready and is pushed when handed over.
            let failure = match outcome.join() {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => format!("{:#}", error.error()),
                Err(_) => "its thread panicked".to_string(),
            };
            eprintln!(
                "pitr wal-push: warning: `{follower}` was not pushed ahead ({failure}); it is pushed when PostgreSQL hands it over"
            );
        }
        pushed
    })
}

/// The key `name` was stored under by an earlier push ahead, when its
/// record proves that `source` holds exactly those bytes.
fn pushed_earlier(records: &Records, name: &str, source: &Path, identity: &str) -> Option<String> {
    let mut input = open_handed_over(source).ok()?;
    records.confirms(name, identity, &mut input.file).ok()?
}

/// Up to `ahead` ready segments after `name` without a record yet (one
/// being pushed by another process has none, and is pushed again: the
/// store settles it).
fn followers(pg_wal: &PgWal, records: &Records, name: &str, ahead: usize) -> Vec<String> {
    match pg_wal.ready_after(name, ahead) {
        Ok(ready) => ready
            .into_iter()
            .filter(|segment| records.get(segment).is_none())
            .collect(),
        Err(error) => {
            eprintln!(
                "pitr wal-push: warning: cannot read `{}` ({error}); nothing is pushed ahead",
                pg_wal.path_of("archive_status").display()
            );
            Vec::new()
        }
    }
}

/// Pushes the ready segment `name` and records it once stored. The file is
/// hashed before and after the push: the record is written only when both
/// agree, so it describes the bytes that were read and stored.
fn push_one_ahead(
    archive: &Writable,
    pg_wal: &PgWal,
    records: &Records,
    identity: &str,
    name: &str,
    how: How,
) -> Result<(), PushError> {
    let path = pg_wal.path_of(name);
    let mut input = open_handed_over(&path).map_err(|error| PushError::Failed(error.into()))?;
    let read = |file: &mut std::fs::File| {
        Fingerprint::of(file).with_context(|| format!("cannot read `{}`", path.display()))
    };
    let before = read(&mut input.file)?;
    let pushed = repo::push::push(
        archive,
        Source {
            file: &mut input.file,
            path: &path,
            mode: input.mode,
        },
        &WalFileName::Segment(name.to_string()),
        how.compression,
        how.level,
    )?;
    let key = match pushed {
        Pushed::Archived(key) | Pushed::AlreadyArchived(key) | Pushed::PushedAhead(key) => key,
    };
    let after = read(&mut input.file)?;
    if after != before {
        return Err(PushError::Failed(anyhow!(
            "`{}` changed while it was pushed",
            path.display()
        )));
    }
    records
        .write(&PushRecord {
            name: name.to_string(),
            archive: identity.to_string(),
            key,
            fingerprint: after,
        })
        .with_context(|| format!("cannot record `{name}` as pushed ahead"))?;
    Ok(())
}
