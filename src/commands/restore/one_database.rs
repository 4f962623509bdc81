//! `restore --only-database NAME` (what `pitr extract` asks for): the
//! other databases' relation files are staged as sparse files where the
//! WAL allows it, decided by [`scope`].

use std::time::{Duration, Instant};

use super::stage_backup;
use crate::error::{Failure, FailureKind, OrFail};
use crate::extract::scope::{self, Scope};
use crate::progress::Reporter;
use crate::repo::Catalog;
use crate::stage::{Destination, StageRequest, Staged};

/// `--only-database NAME`: the other databases' relation files staged as
/// sparse files where the WAL allows it ([`scope`]). Reading the WAL to
/// decide takes as long as staging the few files written, so when this
/// restore makes a new data directory (extract's copies) the two run at
/// once: staging leaves sparse every database the backup's catalog
/// allows, and should the WAL then forbid one (full_page_writes off, a
/// CREATE DATABASE copying it), the directory just made is removed and
/// staged again as the WAL allows. Returns the time the WAL was read.
pub(super) fn stage_one_database(
    name: &str,
    request: &StageRequest<'_>,
    catalog: &Catalog,
    reporter: &Reporter,
) -> Result<(Staged, Scope, Option<Duration>), Failure> {
    // The same staging each time; only which databases stay sparse changes.
    let stage_sparse = |sparse: &[u32]| {
        stage_backup(
            false,
            &StageRequest {
                sparse_databases: sparse,
                ..*request
            },
            reporter,
        )
    };
    let combined = request.combine.is_some();
    let new_directory =
        *request.destination == Destination::Absent && request.placements.is_empty();
    if combined || !new_directory {
        let deciding = Instant::now();
        let scope = scope::for_restore(name, catalog, request.plan, combined, reporter);
        let decided = deciding.elapsed();
        let sparse = scope.sparse_oids();
        let staged = stage_sparse(&sparse)?;
        return Ok((staged, scope, Some(decided)));
    }
    let databases = scope::backup_databases(catalog, request.plan, reporter);
    let candidates: Vec<u32> = databases
        .as_deref()
        .map(|databases| scope::candidates(databases, name).into_keys().collect())
        .unwrap_or_default();
    let (staged, facts) = std::thread::scope(|threads| {
        let facts = (!candidates.is_empty()).then(|| {
            threads.spawn(|| {
                let reading = Instant::now();
                let facts = scope::read_wal_facts(request.plan, &catalog.archive);
                (facts, reading.elapsed())
            })
        });
        let staged = stage_sparse(&candidates);
        let facts = facts.map(|reading| {
            reading.join().unwrap_or_else(|_| {
                let failed = scope::WalFacts {
                    not_proven: Some("reading the WAL failed".to_string()),
                    ..scope::WalFacts::default()
                };
                (failed, Duration::ZERO)
            })
        });
        (staged, facts)
    });
    let staged = staged?;
    let wal_read = facts.as_ref().map(|(_, took)| *took);
    let scope = scope::decide(databases.as_deref(), name, || {
        facts.map(|(facts, _)| facts).unwrap_or_default()
    });
    scope.report(name, reporter);
    let sparse = scope.sparse_oids();
    if sparse == candidates {
        return Ok((staged, scope, wal_read));
    }
    reporter.step(format!(
        "staging {} again: the WAL needs more databases written in full than the backup's catalog suggested",
        request.pgdata.display()
    ));
    crate::stage::remove_new_data_directory(request.pgdata).or_fail(FailureKind::Staging)?;
    let staged = stage_sparse(&sparse)?;
    Ok((staged, scope, wal_read))
}
