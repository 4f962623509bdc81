//! The parsers of files found in backups and archives never panic:
//! backup_label, backup history files, timeline history files,
//! backup_manifest, pg_control and tablespace_map.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr::repo::{label, manifest, pg_control, tablespace};
use pitr::wal::{history, TimelineId};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let zone = jiff::tz::TimeZone::UTC;
    match selector % 6 {
        0 => {
            let _ = label::parse_backup_label(&text, &zone);
        }
        1 => {
            let _ = label::parse_backup_history(&text, &zone);
        }
        2 => {
            if let Some(timeline) = TimelineId::new(u32::from(selector) + 2) {
                if let Ok(parsed) = history::parse(timeline, &text) {
                    for entry in &parsed.entries {
                        let _ = parsed.ancestor_at(entry.switch_lsn);
                    }
                }
            }
        }
        3 => {
            let _ = manifest::parse(rest);
            let _ = manifest::verify_manifest_checksum(rest);
        }
        4 => {
            let _ = pg_control::parse(rest);
        }
        _ => {
            if let Ok(entries) = tablespace::parse_tablespace_map(&text) {
                let rendered = tablespace::render_tablespace_map(&entries);
                assert_eq!(tablespace::parse_tablespace_map(&rendered).ok(), Some(entries));
            }
        }
    }
});
