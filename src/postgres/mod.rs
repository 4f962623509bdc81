//! Driving PostgreSQL: finding its programs, the OS user it runs as, the
//! recovery settings, and following a recovering server.

// The server's own files (its data directory, logs, configuration) are
// local by nature: this module and its children use the file system
// directly (clippy.toml refuses it elsewhere).
#![allow(clippy::disallowed_methods)]

pub mod archiving;
pub mod auto_conf;
pub mod basebackup;
pub mod binaries;
pub mod cluster;
pub mod commands;
pub mod conf_file;
pub mod configure;
pub mod handover;
pub mod live;
pub mod log;
pub mod pg_wal;
pub mod pushed_ahead;
/// The OS account lives on the ground floor (the repository and staging
/// use it too); re-exported here for the paths that name it this way.
pub use crate::os_user;
pub mod recovery;
pub mod scratch;
pub mod server;
pub mod settings;
pub mod transfer;
