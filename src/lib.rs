//! `pitr`: point-in-time recovery for PostgreSQL.
//!
//! The flow of a restore: the `--to` text is parsed into a [`target::Target`];
//! the repository is scanned into a [`repo::Catalog`]; [`plan::make_plan`]
//! chooses the backup and the WAL range (pure, no I/O); [`stage::stage`]
//! writes the data directory; [`postgres`] starts the server and follows it
//! to the target.

// Outside the storage seam (`repo::store`), `stage/` and `postgres/`, the
// library does not touch the file system (clippy.toml says what is refused).
#![deny(clippy::disallowed_methods)]

/// Why a local directory cannot be used (part of the posix driver).
pub use repo::store::posix::access;
pub mod cli;
pub mod commands;
pub mod compression;
pub mod config;
pub mod drill;
pub mod duration;
pub mod error;
pub mod extract;
pub mod health;
pub mod interrupt;
pub mod os_user;
pub mod plan;
pub mod postgres;
pub mod progress;
pub mod repo;
pub mod retention;
pub mod seekable;
pub mod shell;
pub mod size;
pub mod stage;
/// The WAL spool a restore fills ahead of replay (part of staging).
pub use stage::prefetch;
pub mod target;
pub mod verify;
pub mod wal;
