//! Pushing ahead: one store request at a time, per segment, per process, is
//! what makes a busy primary fall behind its archive. So when PostgreSQL
//! hands over a segment that needs pushing, `wal-push` also pushes the
//! next segments it has marked ready (at most `--push-ahead`, in WAL
//! order), all at once once the handed-over one is stored, and leaves a
//! record of each one stored. PostgreSQL
//! then hands those over one by one, and each is answered without a
//! request: the file is proven to be the bytes stored (same size and
//! CRC-32C as the record), else it is pushed as usual.
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
    // The segment handed over first: only once it is stored is the
    // archive's cluster identity known to be this cluster's (a foreign
    // segment left in pg_wal must never be the one to claim an empty
    // archive), and a store that is down is found without pushing more.
    let pushed = push_into(archive, source, &WalFileName::Segment(name.clone()), how)?;
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
    });
    Ok(pushed)
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
/// read and checksummed before and after the push: the record is written only when both
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
        how.earlier,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Compression;
    use crate::repo::store::posix::Posix;
    use crate::repo::store::{StoreRead, StoreWrite};
    use crate::repo::ArchiveAt;

    /// A segment of 64 KiB of the cluster `system_identifier` (its first
    /// page's long header), the rest `fill`.
    fn segment(system_identifier: u64, fill: u8) -> Vec<u8> {
        crate::wal::page::test_segment(system_identifier, fill, 65536)
    }

    const OURS: u64 = 7_000_000_000_000_000_001;
    const HOW: How = How {
        compression: Compression::None,
        level: None,
        earlier: crate::repo::wal_compression::EarlierCopies::ListedFirst,
    };

    /// A server's pg_wal (with archive_status) and an archive directory
    /// beside it, written through the posix driver.
    struct Server {
        _dir: tempfile::TempDir,
        pg_wal: Posix,
        pg_wal_path: std::path::PathBuf,
        archive: Writable,
        archive_dir: Posix,
    }

    impl Server {
        fn new() -> Server {
            let dir = tempfile::tempdir().unwrap();
            let pg_wal_path = dir.path().join("pg_wal");
            let top = Posix::new(dir.path());
            top.write_stream("pg_wal/archive_status/.keep", &mut |_| Ok(()))
                .unwrap();
            top.write_stream("archive/.keep", &mut |_| Ok(())).unwrap();
            let (archive, _) = super::super::open_archive(
                ArchiveAt::Dir(dir.path().join("archive")),
                HOW.compression,
            )
            .unwrap();
            Server {
                pg_wal: Posix::new(&pg_wal_path),
                archive_dir: Posix::new(dir.path().join("archive")),
                pg_wal_path,
                archive,
                _dir: dir,
            }
        }

        /// PostgreSQL finished `name`: the file and its `.ready`.
        fn ready(&self, name: &str, bytes: &[u8]) {
            self.pg_wal
                .write_stream(name, &mut |out| out.write_all(bytes))
                .unwrap();
            self.pg_wal
                .write_stream(&format!("archive_status/{name}.ready"), &mut |_| Ok(()))
                .unwrap();
        }

        fn push(&self, name: &str, ahead: usize) -> Result<Pushed, PushError> {
            push_and_ahead(
                &self.archive,
                &self.pg_wal_path.join(name),
                &WalFileName::parse(name).unwrap(),
                HOW,
                ahead,
            )
        }

        fn archived(&self, name: &str) -> Option<Vec<u8>> {
            self.archive_dir.stat(name).unwrap()?;
            Some(crate::repo::store::read_all(&self.archive_dir, name).unwrap())
        }

        fn recorded(&self, name: &str) -> bool {
            self.pg_wal
                .stat(&format!(".pitr-pushed/{name}"))
                .unwrap()
                .is_some()
        }
    }

    fn name(number: u32) -> String {
        format!("0000000100000000000000{number:02X}")
    }

    #[test]
    fn later_ready_segments_are_pushed_and_answered_from_their_records() {
        let server = Server::new();
        for number in 1..=5 {
            server.ready(&name(number), &segment(OURS, number as u8));
        }
        // Not segments: never pushed ahead.
        server.ready(
            "00000002.history",
            b"1\t0/5000000\tno recovery target specified\n",
        );
        server.ready("000000010000000000000006.partial", &segment(OURS, 6));

        let first = server.push(&name(1), 2).unwrap();
        assert!(matches!(first, Pushed::Archived(_)), "{first:?}");
        for number in 1..=3 {
            assert_eq!(
                server.archived(&name(number)).as_deref(),
                Some(&segment(OURS, number as u8)[..]),
                "{number}"
            );
        }
        assert!(server.archived(&name(4)).is_none(), "bounded: two ahead");
        assert!(server.archived("00000002.history").is_none());
        assert!(server
            .archived("000000010000000000000006.partial")
            .is_none());
        assert!(
            !server.recorded(&name(1)) && server.recorded(&name(2)) && server.recorded(&name(3))
        );

        // PostgreSQL hands over the next one: answered from the record,
        // and the archived copy is not written again.
        let before = server.archive_dir.stat(&name(2)).unwrap().unwrap();
        let second = server.push(&name(2), 2).unwrap();
        assert!(
            matches!(second, Pushed::PushedAhead(ref key) if *key == name(2)),
            "{second:?}"
        );
        assert_eq!(server.archive_dir.stat(&name(2)).unwrap().unwrap(), before);
        assert!(!server.recorded(&name(2)), "a record answers once");

        // The third was rewritten since (same size, other bytes): its
        // record does not answer, and the push refuses the difference.
        server.ready(&name(3), &segment(OURS, 99));
        let error = server.push(&name(3), 0).unwrap_err();
        assert!(matches!(error, PushError::Conflict(_)), "{error:?}");
        assert_eq!(
            server.archived(&name(3)).as_deref(),
            Some(&segment(OURS, 3)[..]),
            "nothing overwritten"
        );

        // Cut short (a partial file): no answer from the record either.
        let fourth = server.push(&name(4), 1).unwrap();
        assert!(matches!(fourth, Pushed::Archived(_)));
        assert!(server.recorded(&name(5)));
        server.ready(&name(5), &segment(OURS, 5)[..4096]);
        let error = server.push(&name(5), 0).unwrap_err();
        assert!(matches!(error, PushError::Conflict(_)), "{error:?}");

        // Off: only the segment handed over.
        server.ready(&name(7), &segment(OURS, 7));
        server.ready(&name(8), &segment(OURS, 8));
        server.push(&name(7), 0).unwrap();
        assert!(server.archived(&name(8)).is_none());
    }

    #[test]
    fn a_segment_the_store_refuses_is_never_recorded() {
        let server = Server::new();
        server.ready(&name(1), &segment(OURS, 1));
        // Another cluster's segment in our pg_wal (copied in by mistake).
        server.ready(&name(2), &segment(OURS + 1, 2));
        server.ready(&name(3), &segment(OURS, 3));
        let first = server.push(&name(1), 8).unwrap();
        assert!(matches!(first, Pushed::Archived(_)));
        assert!(server.archived(&name(2)).is_none());
        assert!(!server.recorded(&name(2)));
        assert!(server.recorded(&name(3)));
        // Handed over, it is refused then, naming both clusters.
        let error = server.push(&name(2), 8).unwrap_err();
        assert!(matches!(error, PushError::Conflict(_)), "{error:?}");
        // A directory where a segment should be (not a file): no record.
        server.ready(&name(4), &segment(OURS, 4));
        server
            .pg_wal
            .write_stream(&format!("{}/x", name(5)), &mut |_| Ok(()))
            .unwrap();
        server
            .pg_wal
            .write_stream(
                &format!("archive_status/{}.ready", name(5)),
                &mut |_| Ok(()),
            )
            .unwrap();
        server.push(&name(4), 8).unwrap();
        assert!(!server.recorded(&name(5)));
    }

    #[test]
    fn two_pushers_at_once_store_every_segment_once() {
        let server = Server::new();
        for number in 1..=12 {
            server.ready(&name(number), &segment(OURS, number as u8));
        }
        let pushed: Vec<_> = std::thread::scope(|scope| {
            let threads: Vec<_> = [1, 2]
                .into_iter()
                .map(|first| {
                    let server = &server;
                    scope.spawn(move || {
                        (first..=12)
                            .map(|number| server.push(&name(number), 4).map(|_| ()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for outcomes in pushed {
            for outcome in outcomes {
                outcome.unwrap();
            }
        }
        for number in 1..=12 {
            assert_eq!(
                server.archived(&name(number)).as_deref(),
                Some(&segment(OURS, number as u8)[..]),
                "{number}"
            );
        }
        // Nothing but the segments and the identity in the archive (no
        // temporary file left by the race).
        let listed = server.archive_dir.list("", None).unwrap();
        assert_eq!(
            listed.iter().filter(|o| !o.key.starts_with('.')).count(),
            12,
            "{listed:?}"
        );
    }
}
