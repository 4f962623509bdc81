//! `--to` parsing never panics, and what it accepts is a usable target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr::target::{parse_target, postgres_timestamp, Target};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now: jiff::Zoned = "2026-11-24T03:00:00+01:00[Europe/Berlin]".parse().unwrap();
    if let Ok(Target::Time(time)) = parse_target(text, &now) {
        let written = postgres_timestamp(&time);
        assert!(!written.contains('Z'), "PostgreSQL rejects Z: {written}");
    }
});
