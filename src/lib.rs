//! `pitr`: point-in-time recovery for PostgreSQL.
//!
//! The flow of a restore: the `--to` text is parsed into a [`target::Target`];
//! the repository is scanned into a [`repo::Catalog`]; [`plan::make_plan`]
//! chooses the backup and the WAL range (pure, no I/O); [`stage::stage`]
//! writes the data directory; [`postgres`] starts the server and follows it
//! to the target.

pub mod access;
pub mod cli;
pub mod commands;
pub mod compression;
pub mod duration;
pub mod error;
pub mod interrupt;
pub mod plan;
pub mod postgres;
pub mod prefetch;
pub mod progress;
pub mod repo;
pub mod retention;
pub mod size;
pub mod stage;
pub mod target;
pub mod verify;
pub mod wal;
