//! Driving PostgreSQL: finding its programs, the OS user it runs as, the
//! recovery settings, and following a recovering server.

pub mod archiving;
pub mod auto_conf;
pub mod basebackup;
pub mod binaries;
pub mod cluster;
pub mod commands;
pub mod live;
pub mod log;
pub mod os_user;
pub mod recovery;
pub mod server;
pub mod settings;
