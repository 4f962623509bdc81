//! `--to` parsing never panics, and what it accepts is a usable target:
//! not in the future, microsecond-precise, written so PostgreSQL reads it back.
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
        // Never in the future, to the microsecond (PostgreSQL's precision),
        // and what is written for PostgreSQL reads back as the same instant.
        assert!(time.timestamp() <= now.timestamp().as_second(), "{text}: {time} is in the future");
        assert_eq!(time.timestamp_subsec_nanos() % 1_000, 0, "{text}: {time}");
        let reread = chrono::DateTime::parse_from_str(&written, "%Y-%m-%d %H:%M:%S%.f%:z");
        assert_eq!(reread, Ok(time), "{text}: {written}");
    }
});
