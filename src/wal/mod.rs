//! PostgreSQL's WAL domain: positions, timelines, segment names, page headers
//! and history files.

pub mod activity;
pub mod decode;
pub mod facts;
pub mod history;
pub mod lineage;
pub mod lsn;
pub mod page;
pub mod segment;
pub mod timelines;
pub mod xid;

pub use lsn::Lsn;
pub use segment::{SegmentSize, TimelineId, WalSegment};
