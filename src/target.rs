//! The recovery target: what the user means by `--to`, and how to hand it to
//! PostgreSQL.
//!
//! A target is one of PostgreSQL's `recovery_target*` settings: a time, a WAL
//! location, a transaction, a named restore point, the end of the archive
//! (`latest`) or the end of the backup (`immediate`). Times may be written
//! the way people say them (`5 minutes ago`, `yesterday 14:00`), so parsing
//! is anchored to a `now` that the caller passes in, never to the clock, and
//! the result is always resolved to one absolute instant before PostgreSQL
//! sees it: PostgreSQL would otherwise interpret a bare local time in the
//! server's `timezone` setting, which need not be the operator's.
//!
//! A time written without an offset is wall-clock time in the zone of `now`.
//! When that wall-clock time falls in a daylight-saving change, the choice is
//! jiff's "compatible" one, made by `parse_datetime`:
//! - in a gap (clocks jump forward, e.g. 02:30 on 2026-03-29 in
//!   Europe/Berlin does not exist) the time moves forward by the length of
//!   the gap (03:30 CEST);
//! - in an overlap (clocks go back, e.g. 02:30 on 2026-10-25 in Berlin
//!   happens twice) the earlier instant wins (02:30 CEST, not CET).
//!
//! [`Target::describe`] shows the instant with its zone abbreviation so the
//! operator can see which one was chosen, and [`postgres_timestamp`] writes a
//! numeric offset so that PostgreSQL cannot choose differently.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, FixedOffset, Timelike, Utc};
use jiff::tz::TimeZone;
use jiff::Zoned;

use crate::duration::Unit;
use crate::wal::xid::Xid;
use crate::wal::Lsn;

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// An absolute instant, to the microsecond. The offset is the one the
    /// user wrote, or else the local zone's offset at that instant; it only
    /// matters for display, never for which instant is meant.
    Time(DateTime<FixedOffset>),
    Lsn(Lsn),
    Xid(Xid),
    Name(String),
    Latest,
    Immediate,
}

/// The forms listed in every error, so that a mistyped target always tells
/// the user what would have worked.
const ACCEPTED: &str =
    "accepted forms: a time (`2026-11-23 14:05:00`, `2026-11-23T14:05:00+01:00`, \
`5 minutes ago`, `yesterday 14:00`), `latest`, `immediate`, `lsn:0/3000060`, `xid:1234`, \
`name:<restore point>`";

/// PostgreSQL truncates restore point names to `NAMEDATALEN - 1` bytes when
/// it creates them, so a longer name given as a target could never match.
pub const MAX_RESTORE_POINT_NAME: usize = 63;

/// Why a `--to` argument is not a usable target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("the target is empty\n  {accepted}", accepted = ACCEPTED)]
    Empty,

    #[error("cannot understand the target `{text}`\n  {accepted}", accepted = ACCEPTED)]
    Unrecognized { text: String },

    /// A bare number is refused because people type `1234` meaning a
    /// transaction, while the time parser would read it as 12:34 today.
    #[error(
        "the target `{text}` is ambiguous: write `xid:{text}` for a transaction, \
         or a time with a date or a colon (such as `today 12:34`)\n  {accepted}",
        accepted = ACCEPTED
    )]
    BareNumber { text: String },

    #[error(
        "the target `{text}` is not a valid WAL location: expected two hexadecimal numbers \
         separated by `/`, such as `lsn:0/3000060`\n  {accepted}",
        accepted = ACCEPTED
    )]
    BadLsn {
        text: String,
        #[source]
        source: crate::wal::lsn::LsnParseError,
    },

    #[error("the target `{text}` is not a valid transaction ID: {reason}\n  {accepted}", accepted = ACCEPTED)]
    BadXid { text: String, reason: String },

    #[error("the target `{text}` is not a valid restore point name: {reason}\n  {accepted}", accepted = ACCEPTED)]
    BadName { text: String, reason: String },

    #[error(
        "the target `{text}` means {when}, which is in the future; to replay everything in \
         the archive, use `latest`\n  {accepted}",
        accepted = ACCEPTED
    )]
    Future { text: String, when: String },

    #[error("the target `{text}` is outside the years 1 to 9999\n  {accepted}", accepted = ACCEPTED)]
    OutOfRange { text: String },
}

/// Parses a `--to` argument. `now` anchors relative times and its zone is
/// the local zone for times written without an offset.
pub fn parse_target(text: &str, now: &Zoned) -> Result<Target, TargetError> {
    let text = text.trim();
    if text.is_empty() {
        // parse_datetime reads the empty string as "now", which is never
        // what an empty `--to` means.
        return Err(TargetError::Empty);
    }
    if text.eq_ignore_ascii_case("latest") {
        return Ok(Target::Latest);
    }
    if text.eq_ignore_ascii_case("immediate") {
        return Ok(Target::Immediate);
    }
    if let Some(value) = strip_prefix_ignore_case(text, "lsn:") {
        return value
            .trim()
            .parse::<Lsn>()
            .map(Target::Lsn)
            .map_err(|source| TargetError::BadLsn {
                text: text.to_string(),
                source,
            });
    }
    if let Some(value) = strip_prefix_ignore_case(text, "xid:") {
        return parse_xid(value.trim())
            .map(Target::Xid)
            .map_err(|reason| TargetError::BadXid {
                text: text.to_string(),
                reason,
            });
    }
    if let Some(value) = strip_prefix_ignore_case(text, "name:") {
        // Not trimmed: surrounding spaces are part of a restore point's name
        // and PostgreSQL compares names exactly.
        return check_name(value)
            .map(|()| Target::Name(value.to_string()))
            .map_err(|reason| TargetError::BadName {
                text: text.to_string(),
                reason,
            });
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::BareNumber {
            text: text.to_string(),
        });
    }
    parse_time(text, now).map(Target::Time)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn parse_xid(value: &str) -> Result<Xid, String> {
    value.parse()
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name after `name:` is empty".to_string());
    }
    if name.contains('\0') {
        return Err("the name contains a NUL character".to_string());
    }
    if name.len() > MAX_RESTORE_POINT_NAME {
        return Err(format!(
            "it is {} bytes long, but PostgreSQL keeps only the first {MAX_RESTORE_POINT_NAME} \
             bytes of a restore point's name, so it could never match",
            name.len()
        ));
    }
    Ok(())
}

fn parse_time(text: &str, now: &Zoned) -> Result<DateTime<FixedOffset>, TargetError> {
    let unrecognized = || TargetError::Unrecognized {
        text: text.to_string(),
    };
    let out_of_range = || TargetError::OutOfRange {
        text: text.to_string(),
    };
    let zoned = match counted_back(text, now) {
        Some(Some(zoned)) => zoned,
        Some(None) => return Err(out_of_range()),
        None => match parse_datetime::parse_datetime_at_date(now.clone(), text) {
            Ok(parse_datetime::ParsedDateTime::InRange(zoned)) => zoned,
            // Years past 9999: neither jiff nor PostgreSQL's input syntax we
            // use can carry them, and they are in the future anyway.
            Ok(parse_datetime::ParsedDateTime::Extended(_)) => return Err(out_of_range()),
            Err(_) => return Err(unrecognized()),
        },
    };

    let instant = zoned.timestamp();
    // parse_datetime keeps now's zone for times written without an offset,
    // and gives a zone of its own (a fixed offset, UTC, or a `TZ="..."`
    // rule) when the user wrote one. `@seconds` is the exception: it comes
    // back in a fixed zone holding now's *current* offset, which is wrong
    // for an instant on the other side of a DST change, so it counts as
    // local too.
    let user_zone = zoned.time_zone() != now.time_zone() && !text.starts_with('@');
    let offset = if user_zone {
        zoned.offset()
    } else {
        now.time_zone().to_offset(instant)
    };

    if instant > now.timestamp() {
        let when = describe_instant(instant, &zoned.offset().to_time_zone(), now.time_zone());
        return Err(TargetError::Future {
            text: text.to_string(),
            when,
        });
    }

    let time = to_chrono(instant, offset.seconds()).ok_or_else(out_of_range)?;
    // Below year 1, `YYYY` cannot be written without PostgreSQL's `BC`.
    if !(1..=9999).contains(&time.year()) || !(1..=9999).contains(&time.with_timezone(&Utc).year())
    {
        return Err(out_of_range());
    }
    Ok(time)
}

/// `5 minutes ago`, `5m ago`, `1d12h ago`, `30s ago`: counted back from
/// `now` here, with the unit table `--keep-within` uses, so that every
/// relative time pitr reads accepts the same abbreviations. Not left to the
/// date parser, which reads a count that looks like a date as one
/// (`10201 seconds ago` came back as 0001-01-31). Seconds, minutes and hours
/// are exact time; days and weeks are calendar days (jiff's arithmetic on a
/// zoned time), so `1d ago` is the same clock time yesterday across a
/// daylight-saving change. `None` when the text is not `<duration> ago`;
/// `Some(None)` when it is, but lies before anything a time can carry.
fn counted_back(text: &str, now: &Zoned) -> Option<Option<Zoned>> {
    let lower = text.to_ascii_lowercase();
    let amount = lower.strip_suffix("ago")?;
    let parts = crate::duration::parse_parts(amount).ok()?;
    Some(parts.iter().try_fold(now.clone(), |at, &(number, unit)| {
        let number = i64::try_from(number).ok()?;
        let span = match unit {
            Unit::Second => jiff::Span::new().try_seconds(number),
            Unit::Minute => jiff::Span::new().try_minutes(number),
            Unit::Hour => jiff::Span::new().try_hours(number),
            Unit::Day => jiff::Span::new().try_days(number),
            Unit::Week => jiff::Span::new().try_weeks(number),
        }
        .ok()?;
        at.checked_sub(span).ok()
    }))
}

/// Seconds and nanoseconds since the epoch with the nanoseconds in
/// `0..1_000_000_000`, as chrono wants them; jiff gives negative nanoseconds
/// before 1970.
fn split_timestamp(instant: jiff::Timestamp) -> (i64, u32) {
    let mut seconds = instant.as_second();
    let mut nanos = instant.subsec_nanosecond();
    if nanos < 0 {
        seconds -= 1;
        nanos += 1_000_000_000;
    }
    (seconds, nanos.unsigned_abs())
}

/// Truncated to microseconds because that is all PostgreSQL keeps: a target
/// with more digits would be rounded by the server, possibly past the
/// instant the user meant.
fn to_chrono(instant: jiff::Timestamp, offset_seconds: i32) -> Option<DateTime<FixedOffset>> {
    let (seconds, nanos) = split_timestamp(instant);
    let utc = DateTime::from_timestamp(seconds, nanos - nanos % 1_000)?;
    let offset = FixedOffset::east_opt(offset_seconds)?;
    Some(utc.with_timezone(&offset))
}

fn to_jiff(time: &DateTime<FixedOffset>) -> Option<jiff::Timestamp> {
    // chrono stores a leap second as nanoseconds past 1e9; jiff has none.
    let nanos = time.timestamp_subsec_nanos() % 1_000_000_000;
    jiff::Timestamp::new(time.timestamp(), i32::try_from(nanos).ok()?).ok()
}

/// `.ffffff` when there are microseconds, `.fffffffff` when there are finer
/// digits (which parse_target never produces), nothing for whole seconds.
fn fraction(nanos: u32) -> String {
    let nanos = nanos % 1_000_000_000;
    if nanos == 0 {
        String::new()
    } else if nanos % 1_000 == 0 {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    }
}

/// `2026-11-23 13:05:00 UTC (14:05:00 CET, local)`, with the local date too
/// when it differs from the UTC date.
fn describe_instant(instant: jiff::Timestamp, given: &TimeZone, local: &TimeZone) -> String {
    let (_, nanos) = split_timestamp(instant);
    let frac = fraction(nanos);
    let utc = instant.to_zoned(TimeZone::UTC);
    let mut out = format!("{}{frac} UTC", utc.strftime("%Y-%m-%d %H:%M:%S"));

    let wall = |zoned: &Zoned| {
        if zoned.date() == utc.date() {
            format!("{}{frac}", zoned.strftime("%H:%M:%S"))
        } else {
            format!("{}{frac}", zoned.strftime("%Y-%m-%d %H:%M:%S"))
        }
    };
    let local_zoned = instant.to_zoned(local.clone());
    let given_zoned = instant.to_zoned(given.clone());
    let mut notes = Vec::new();
    // Only worth showing when it differs from both UTC and local time.
    if given_zoned.offset() != jiff::tz::Offset::UTC && given_zoned.offset() != local_zoned.offset()
    {
        notes.push(format!(
            "{} {}, as given",
            wall(&given_zoned),
            given_zoned.strftime("%:z")
        ));
    }
    // When local time is UTC the line already says it: no note.
    if local_zoned.offset() != jiff::tz::Offset::UTC {
        notes.push(format!(
            "{} {}, local",
            wall(&local_zoned),
            local_zoned.strftime("%Z")
        ));
    }
    if !notes.is_empty() {
        let _ = write!(out, " ({})", notes.join("; "));
    }
    out
}

impl Target {
    /// One line for humans, e.g. `2026-11-23 13:05:00 UTC (14:05:00 CET,
    /// local)`, `LSN 0/3000060`, `transaction 1234`, `restore point
    /// "before_migration"`.
    pub fn describe(&self, local: &TimeZone) -> String {
        match self {
            Target::Time(time) => {
                let given = jiff::tz::Offset::from_seconds(time.offset().local_minus_utc())
                    .map(|offset| offset.to_time_zone())
                    .unwrap_or(TimeZone::UTC);
                match to_jiff(time) {
                    Some(instant) => describe_instant(instant, &given, local),
                    // Outside jiff's range: still say something truthful.
                    None => postgres_timestamp(time),
                }
            }
            Target::Lsn(lsn) => format!("LSN {lsn}"),
            Target::Xid(xid) => format!("transaction {xid}"),
            // Debug quoting makes stray control characters visible.
            Target::Name(name) => format!("restore point {name:?}"),
            Target::Latest => "the end of the archive (latest)".to_string(),
            Target::Immediate => "the first consistent point of the backup (immediate)".to_string(),
        }
    }
}

/// What the server does at the target (`--action`): the one decision that
/// the command line takes, the recovery settings write
/// (`recovery_target_action`) and the log judge checks the server against.
///
/// `promote` at a target point is done by pitr: PostgreSQL pauses there and
/// pitr promotes it (no end-of-recovery checkpoint is waited for). With
/// `--to latest` there is no target point: PostgreSQL replays the whole
/// archive and promotes by itself, so only `promote` makes sense
/// ([`Action::check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// End recovery at the target and accept writes
    Promote,
    /// Stay read-only at the target, to inspect before promoting
    Pause,
    /// Stop the server at the target
    Shutdown,
}

/// An `--action` that the target cannot have.
#[derive(Debug, thiserror::Error)]
#[error(
    "`--to latest` replays the whole archive and then promotes; --action pause and shutdown \
     need a target point (a time, lsn:, xid: or name:)"
)]
pub struct ActionNeedsTargetPoint;

impl Action {
    /// Refuses pausing or shutting down at `latest`, which has no point to
    /// pause or shut down at.
    pub fn check(self, target: &Target) -> Result<Action, ActionNeedsTargetPoint> {
        match (self, target) {
            (Action::Pause | Action::Shutdown, Target::Latest) => Err(ActionNeedsTargetPoint),
            _ => Ok(self),
        }
    }
}

/// The value for `recovery_target_time`: `YYYY-MM-DD HH:MM:SS[.ffffff]+HH:MM`.
///
/// The offset is numeric because PostgreSQL rejects `Z` and reads zone
/// abbreviations its own way. An offset with a seconds part (old local mean
/// times) cannot be written as `+HH:MM`, so such a time is written in UTC
/// instead: the instant is what matters. Fractions finer than a microsecond
/// are written with nine digits so that the text still names the exact
/// instant; [`parse_target`] never produces them. Expects a year from 1 to
/// 9999, as [`parse_target`] guarantees.
pub fn postgres_timestamp(t: &DateTime<FixedOffset>) -> String {
    let t = if t.offset().local_minus_utc() % 60 == 0 {
        *t
    } else {
        t.with_timezone(&Utc).fixed_offset()
    };
    let offset = t.offset().local_minus_utc();
    let sign = if offset < 0 { '-' } else { '+' };
    let minutes = offset.unsigned_abs() / 60;
    format!(
        "{}{}{sign}{:02}:{:02}",
        t.format("%Y-%m-%d %H:%M:%S"),
        fraction(t.nanosecond()),
        minutes / 60,
        minutes % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PG_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f%:z";

    /// 2026-11-23 14:30:00.123456789 in the given zone: sub-microsecond
    /// digits so truncation is visible.
    fn now_in(zone: &str) -> Zoned {
        format!("2026-11-23T14:30:00.123456789[{zone}]")
            .parse()
            .unwrap()
    }

    fn berlin() -> Zoned {
        now_in("Europe/Berlin")
    }

    /// A `--to` time and the instant it means at [`berlin`]'s now
    /// (2026-11-23 14:30:00.123456789 +01:00), or None when that instant
    /// is in the future. The instant is computed here with chrono from the
    /// generated parts, independently of parse_datetime.
    fn generated_time_text() -> impl Strategy<Value = (String, Option<DateTime<FixedOffset>>)> {
        use chrono::{NaiveDate, TimeZone};
        let now = FixedOffset::east_opt(3600)
            .unwrap()
            .with_ymd_and_hms(2026, 11, 23, 14, 30, 0)
            .unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        let micros = |t: DateTime<FixedOffset>| {
            t - chrono::Duration::nanoseconds(i64::from(t.nanosecond() % 1_000))
        };
        // A past date and time with a numeric offset, 0 to 6 fraction digits.
        let absolute = (
            1971i32..2026,
            1u32..=12,
            1u32..=28,
            0u32..24,
            0u32..60,
            0u32..60,
            0usize..=6,
            0u32..1_000_000,
            -14i32 * 4..=14 * 4,
            any::<bool>(),
        )
            .prop_map(|(year, month, day, hour, minute, second, digits, micro, quarters, t_sep)| {
                let fraction = micro / 10u32.pow(6 - digits as u32);
                let fraction_text = if digits == 0 {
                    String::new()
                } else {
                    format!(".{fraction:0digits$}")
                };
                let offset_seconds = quarters * 15 * 60;
                let sign = if offset_seconds < 0 { '-' } else { '+' };
                let text = format!(
                    "{year:04}-{month:02}-{day:02}{}{hour:02}:{minute:02}:{second:02}{fraction_text}{sign}{:02}:{:02}",
                    if t_sep { "T" } else { " " },
                    offset_seconds.abs() / 3600,
                    offset_seconds.abs() % 3600 / 60
                );
                let nanos = fraction * 10u32.pow(9 - digits as u32);
                let want = FixedOffset::east_opt(offset_seconds)
                    .unwrap()
                    .from_local_datetime(
                        &NaiveDate::from_ymd_opt(year, month, day)
                            .unwrap()
                            .and_hms_nano_opt(hour, minute, second, nanos)
                            .unwrap(),
                    )
                    .unwrap();
                (text, Some(want))
            });
        // A clock time today in the local zone (Berlin, +01:00 in November):
        // before now it is today's, after now it is refused.
        let clock = (0u32..24, 0u32..60, 0u32..60).prop_map(move |(hour, minute, second)| {
            let want = FixedOffset::east_opt(3600)
                .unwrap()
                .with_ymd_and_hms(2026, 11, 23, hour, minute, second)
                .unwrap();
            (
                format!("{hour:02}:{minute:02}:{second:02}"),
                (want <= now).then_some(want),
            )
        });
        // Relative to now (seconds to hours reach back across the DST
        // change of 2026-10-25); days stay after it, as a day back is a
        // calendar day (tested across DST on its own).
        // All within 2026 (up to 7,000 hours back), whose DST rule is below.
        // Counts of any size up to each unit's bound: this property found
        // that five-digit counts looking like dates were read as dates
        // ("10201 seconds ago" was 0001-01-31 23:59:59) while relative
        // times went through the date parser; they are counted back by
        // pitr now (`counted_back`).
        let relative = (
            1i64..10_000_000,
            prop::sample::select(vec![
                ("seconds", 1i64, 9_999_999),
                ("minutes", 60, 499_999),
                ("hours", 3600, 7_000),
                ("days", 86_400, 28),
            ]),
        )
            .prop_map(move |(count, (unit, seconds, most))| {
                let count = count % most + 1;
                let instant = micros(now - chrono::Duration::seconds(count * seconds));
                // Written in Berlin's offset of that instant: summer time
                // (+02:00) from 2026-03-29 to 2026-10-25, 01:00 UTC each.
                let summer_start = chrono::Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap();
                let summer_end = chrono::Utc.with_ymd_and_hms(2026, 10, 25, 1, 0, 0).unwrap();
                let summer = instant >= summer_start && instant < summer_end;
                let offset = if summer { 7200 } else { 3600 };
                let want = instant.with_timezone(&FixedOffset::east_opt(offset).unwrap());
                (format!("{count} {unit} ago"), Some(want))
            });
        prop_oneof![absolute, clock, relative]
    }

    fn time(text: &str, now: &Zoned) -> DateTime<FixedOffset> {
        match parse_target(text, now) {
            Ok(Target::Time(t)) => t,
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    fn rfc(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    /// Same instant and same offset.
    fn assert_time(text: &str, now: &Zoned, expected: &str) {
        let got = time(text, now);
        let want = rfc(expected);
        assert_eq!(got, want, "{text:?}");
        assert_eq!(got.offset(), want.offset(), "{text:?}");
    }

    fn error(text: &str, now: &Zoned) -> String {
        match parse_target(text, now) {
            Err(e) => e.to_string(),
            Ok(t) => panic!("{text:?} should be refused, gave {t:?}"),
        }
    }

    #[test]
    fn relative_times() {
        let now = berlin();
        assert_time("5 minutes ago", &now, "2026-11-23T14:25:00.123456+01:00");
        assert_time("90 seconds ago", &now, "2026-11-23T14:28:30.123456+01:00");
        assert_time("2 hours ago", &now, "2026-11-23T12:30:00.123456+01:00");
        assert_time("yesterday 14:00", &now, "2026-11-22T14:00:00+01:00");
        assert_time("today 09:30", &now, "2026-11-23T09:30:00+01:00");
        assert_time("now", &now, "2026-11-23T14:30:00.123456+01:00");
        assert_time("Yesterday 14:00", &now, "2026-11-22T14:00:00+01:00");
        assert_time(
            "  5 minutes ago\n",
            &now,
            "2026-11-23T14:25:00.123456+01:00",
        );
    }

    #[test]
    fn relative_times_with_short_units() {
        let now = berlin();
        for (text, expected) in [
            ("5m ago", "2026-11-23T14:25:00.123456+01:00"),
            ("5 min ago", "2026-11-23T14:25:00.123456+01:00"),
            ("5min ago", "2026-11-23T14:25:00.123456+01:00"),
            ("2h ago", "2026-11-23T12:30:00.123456+01:00"),
            ("1d ago", "2026-11-22T14:30:00.123456+01:00"),
            ("30s ago", "2026-11-23T14:29:30.123456+01:00"),
            ("1h30m ago", "2026-11-23T13:00:00.123456+01:00"),
            ("90 sec ago", "2026-11-23T14:28:30.123456+01:00"),
            ("1w ago", "2026-11-16T14:30:00.123456+01:00"),
            ("5M AGO", "2026-11-23T14:25:00.123456+01:00"),
        ] {
            assert_time(text, &now, expected);
        }
        // A short day is a calendar day across a DST change, as `1 day ago` is.
        let after_dst: Zoned = "2026-10-26T12:00:00[Europe/Berlin]".parse().unwrap();
        assert_eq!(time("1d ago", &after_dst), time("1 day ago", &after_dst));
        // An unknown unit is still refused.
        assert!(error("5y ago", &now).contains("cannot understand"));
    }

    #[test]
    fn a_day_back_is_a_calendar_day_and_hours_are_exact() {
        // Berlin left summer time at 03:00 on 2026-10-25, so the day before
        // noon of the 25th was 25 hours long.
        let noon: Zoned = "2026-10-25T12:00:00[Europe/Berlin]".parse().unwrap();
        assert_time("1d ago", &noon, "2026-10-24T12:00:00+02:00");
        assert_time("1 day ago", &noon, "2026-10-24T12:00:00+02:00");
        assert_time("24h ago", &noon, "2026-10-24T13:00:00+02:00");
        assert_time("1w ago", &noon, "2026-10-18T12:00:00+02:00");
    }

    #[test]
    fn large_counts_are_counted_back_not_read_as_dates() {
        // The date parser read these counts as dates (year 1, 1985).
        let now = berlin();
        assert_time(
            "10201 seconds ago",
            &now,
            "2026-11-23T11:39:59.123456+01:00",
        );
        assert_time(
            "850601 seconds ago",
            &now,
            "2026-11-13T18:13:19.123456+01:00",
        );
        assert_time(
            "10101 seconds ago",
            &now,
            "2026-11-23T11:41:39.123456+01:00",
        );
        assert_time(
            "100000 minutes ago",
            &now,
            "2026-09-15T04:50:00.123456+02:00",
        );
    }

    #[test]
    fn relative_times_in_other_zones() {
        let utc = now_in("UTC");
        assert_time("yesterday 14:00", &utc, "2026-11-22T14:00:00+00:00");
        assert_time("5 minutes ago", &utc, "2026-11-23T14:25:00.123456+00:00");
        let ny = now_in("America/New_York");
        assert_time("today 09:30", &ny, "2026-11-23T09:30:00-05:00");
    }

    #[test]
    fn relative_days_are_calendar_days_across_dst() {
        // The day after Berlin's clocks went back: "yesterday 14:00" is 14:00
        // summer time, 25 hours earlier, not 24.
        let now: Zoned = "2026-10-26T10:00:00[Europe/Berlin]".parse().unwrap();
        assert_time("yesterday 14:00", &now, "2026-10-25T14:00:00+01:00");
        let now: Zoned = "2026-03-30T10:00:00[Europe/Berlin]".parse().unwrap();
        assert_time("yesterday 01:00", &now, "2026-03-29T01:00:00+01:00");
        assert_time("yesterday 14:00", &now, "2026-03-29T14:00:00+02:00");
    }

    #[test]
    fn absolute_local_times() {
        let now = berlin();
        assert_time("2026-11-23 14:05:00", &now, "2026-11-23T14:05:00+01:00");
        assert_time("2026-11-23T14:05:00", &now, "2026-11-23T14:05:00+01:00");
        assert_time(
            "2026-11-23 14:05:00.123456",
            &now,
            "2026-11-23T14:05:00.123456+01:00",
        );
        // Local offset is the one at that instant, not now's.
        assert_time("2026-07-01 12:00:00", &now, "2026-07-01T12:00:00+02:00");

        let utc = now_in("UTC");
        assert_time("2026-11-23 14:05:00", &utc, "2026-11-23T14:05:00+00:00");
        assert_time("2026-07-01 12:00:00", &utc, "2026-07-01T12:00:00+00:00");

        let ny = now_in("America/New_York");
        assert_time("2026-11-23 14:05:00", &ny, "2026-11-23T14:05:00-05:00");
        assert_time("2026-07-01T12:00:00", &ny, "2026-07-01T12:00:00-04:00");
    }

    #[test]
    fn absolute_times_with_offsets() {
        let now = berlin();
        assert_time(
            "2026-11-23 14:05:00+01:00",
            &now,
            "2026-11-23T14:05:00+01:00",
        );
        assert_time(
            "2026-11-23T14:05:00+01:00",
            &now,
            "2026-11-23T14:05:00+01:00",
        );
        assert_time("2026-11-23 14:05:00+01", &now, "2026-11-23T14:05:00+01:00");
        assert_time(
            "2026-11-23 08:05:00-0500",
            &now,
            "2026-11-23T08:05:00-05:00",
        );
        assert_time(
            "2026-11-23 14:05:00.5+05:30",
            &now,
            "2026-11-23T14:05:00.5+05:30",
        );
        assert_time("2026-11-23 13:05:00Z", &now, "2026-11-23T13:05:00+00:00");
        assert_time("2026-11-23T13:05:00Z", &now, "2026-11-23T13:05:00+00:00");
        assert_time("2026-11-23 13:05:00 UTC", &now, "2026-11-23T13:05:00+00:00");
        // The user's offset is kept even when local time is elsewhere.
        let ny = now_in("America/New_York");
        assert_time(
            "2026-11-23 14:05:00+01:00",
            &ny,
            "2026-11-23T14:05:00+01:00",
        );
    }

    #[test]
    fn epoch_seconds_take_the_local_offset_at_that_instant() {
        // parse_datetime would give now's winter offset to a summer instant.
        let now = berlin();
        let t = time("@1782907200", &now); // 2026-07-01 12:00:00 UTC
        assert_eq!(t, rfc("2026-07-01T14:00:00+02:00"));
        assert_eq!(t.offset().local_minus_utc(), 7200);
    }

    #[test]
    fn dst_gap_moves_forward_and_overlap_takes_the_earlier_instant() {
        let now = berlin();
        assert_time("2026-03-29 02:30:00", &now, "2026-03-29T03:30:00+02:00");
        assert_time("2026-10-25 02:30:00", &now, "2026-10-25T02:30:00+02:00");
        // An explicit offset picks the other occurrence.
        assert_time(
            "2026-10-25 02:30:00+01:00",
            &now,
            "2026-10-25T02:30:00+01:00",
        );

        let ny = now_in("America/New_York");
        assert_time("2026-03-08 02:30", &ny, "2026-03-08T03:30:00-04:00");
        assert_time("2026-11-01 01:30", &ny, "2026-11-01T01:30:00-04:00");
    }

    #[test]
    fn precision_is_truncated_to_microseconds() {
        let now = berlin();
        let t = time("2026-11-23 14:05:00.1234569", &now);
        assert_eq!(t.nanosecond(), 123_456_000);
        assert_eq!(postgres_timestamp(&t), "2026-11-23 14:05:00.123456+01:00");
    }

    #[test]
    fn keywords() {
        let now = berlin();
        for text in ["latest", "LATEST", " Latest "] {
            assert_eq!(parse_target(text, &now).unwrap(), Target::Latest);
        }
        for text in ["immediate", "IMMEDIATE", "Immediate\t"] {
            assert_eq!(parse_target(text, &now).unwrap(), Target::Immediate);
        }
    }

    #[test]
    fn lsn_xid_and_name() {
        let now = berlin();
        assert_eq!(
            parse_target("lsn:0/3000060", &now).unwrap(),
            Target::Lsn(Lsn::new(0x0300_0060))
        );
        assert_eq!(
            parse_target("LSN:1F/A", &now).unwrap(),
            Target::Lsn(Lsn::new((0x1F << 32) | 0xA))
        );
        assert_eq!(
            parse_target("xid:1234", &now).unwrap(),
            Target::Xid(Xid::Bare(1234))
        );
        assert_eq!(
            parse_target("xid:3", &now).unwrap(),
            Target::Xid(Xid::Bare(3))
        );
        // pg_current_xact_id() after the first wraparound: epoch 1.
        assert_eq!(
            parse_target("xid:4294968023", &now).unwrap(),
            Target::Xid(Xid::Full(crate::wal::xid::FullXid::new(4294968023)))
        );
        assert_eq!(
            parse_target("xid:4294967295", &now).unwrap(),
            Target::Xid(Xid::Bare(u32::MAX))
        );
        assert_eq!(
            parse_target(" name:before_migration ", &now).unwrap(),
            Target::Name("before_migration".to_string())
        );
        assert_eq!(
            parse_target("name:with space", &now).unwrap(),
            Target::Name("with space".to_string())
        );
        let longest = "n".repeat(63);
        assert_eq!(
            parse_target(&format!("name:{longest}"), &now).unwrap(),
            Target::Name(longest)
        );
    }

    #[test]
    fn bad_lsn_xid_and_name() {
        let now = berlin();
        let cases = [
            ("lsn:zz", "not a valid WAL location"),
            ("lsn:", "not a valid WAL location"),
            ("xid:-1", "whole number"),
            ("xid:abc", "whole number"),
            ("xid:+5", "whole number"),
            ("xid:", "whole number"),
            ("xid:0", "reserved"),
            ("xid:2", "reserved"),
            ("xid:4294967296", "reserved"),
            ("xid:18446744073709551616", "larger than"),
            ("name:", "empty"),
            ("name:a\0b", "NUL"),
        ];
        for (text, reason) in cases {
            let message = error(text, &now);
            assert!(message.contains(&format!("`{text}`")), "{message}");
            assert!(message.contains(reason), "{message}");
            assert!(message.contains("accepted forms:"), "{message}");
        }
        let long = format!("name:{}", "n".repeat(64));
        let message = error(&long, &now);
        assert!(
            message.contains("64 bytes") && message.contains("63"),
            "{message}"
        );
        // Bytes, not characters: 32 two-byte characters are 64 bytes.
        let message = error(&format!("name:{}", "é".repeat(32)), &now);
        assert!(message.contains("64 bytes"), "{message}");
    }

    #[test]
    fn unrecognized_inputs_name_the_input_and_list_the_forms() {
        let now = berlin();
        for text in [
            "5 minuts ago",
            "banana",
            "2026-13-01 00:00",
            "lsn 0/1",
            "last tuesdayy",
        ] {
            let message = error(text, &now);
            assert_eq!(
                message,
                format!("cannot understand the target `{text}`\n  {ACCEPTED}")
            );
        }
        assert_eq!(
            error("banana", &now),
            "cannot understand the target `banana`\n  accepted forms: a time (`2026-11-23 14:05:00`, \
             `2026-11-23T14:05:00+01:00`, `5 minutes ago`, `yesterday 14:00`), `latest`, \
             `immediate`, `lsn:0/3000060`, `xid:1234`, `name:<restore point>`"
        );
    }

    #[test]
    fn empty_is_refused() {
        let now = berlin();
        for text in ["", "   ", "\n"] {
            assert!(matches!(parse_target(text, &now), Err(TargetError::Empty)));
        }
        assert!(error("", &now).contains("accepted forms:"));
    }

    #[test]
    fn bare_numbers_are_ambiguous() {
        let now = berlin();
        let message = error("1234", &now);
        assert!(
            message.contains("`1234`") && message.contains("xid:1234"),
            "{message}"
        );
        assert!(matches!(
            parse_target("7", &now),
            Err(TargetError::BareNumber { .. })
        ));
    }

    #[test]
    fn future_times_are_refused_with_a_hint() {
        let now = berlin();
        for text in [
            "tomorrow",
            "2026-11-23 14:31:00",
            "5 minutes hence",
            "2027-01-01",
            "+1 second",
        ] {
            let message = error(text, &now);
            assert!(message.contains(&format!("`{text}`")), "{message}");
            assert!(
                message.contains("future") && message.contains("`latest`"),
                "{message}"
            );
            assert!(message.contains("accepted forms:"), "{message}");
        }
        assert!(matches!(
            parse_target("10000-01-01", &now),
            Err(TargetError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_target("0000-06-01 00:00:00Z", &now),
            Err(TargetError::OutOfRange { .. })
        ));
    }

    #[test]
    fn postgres_timestamp_uses_numeric_offsets() {
        let now = berlin();
        let pg = |text: &str| postgres_timestamp(&time(text, &now));
        assert_eq!(pg("2026-11-23 14:05:00"), "2026-11-23 14:05:00+01:00");
        assert_eq!(
            pg("2026-11-23 14:05:00.123456"),
            "2026-11-23 14:05:00.123456+01:00"
        );
        assert_eq!(
            pg("2026-11-23 14:05:00.5"),
            "2026-11-23 14:05:00.500000+01:00"
        );
        assert_eq!(pg("2026-11-23 13:05:00Z"), "2026-11-23 13:05:00+00:00");
        assert_eq!(pg("2026-11-23 08:05:00-0500"), "2026-11-23 08:05:00-05:00");
        assert_eq!(pg("2026-11-23 14:05:00+05:30"), "2026-11-23 14:05:00+05:30");
        assert_eq!(pg("2026-11-23 12:05:00-00:30"), "2026-11-23 12:05:00-00:30");
        assert_eq!(
            postgres_timestamp(&rfc("2026-11-23T14:05:00.000000001+01:00")),
            "2026-11-23 14:05:00.000000001+01:00"
        );
    }

    #[test]
    fn postgres_timestamp_writes_second_offsets_in_utc() {
        // Berlin's local mean time before 1893 was +00:53:28.
        let now = berlin();
        let t = time("1890-01-01 12:00:00", &now);
        assert_eq!(t.offset().local_minus_utc(), 53 * 60 + 28);
        assert_eq!(postgres_timestamp(&t), "1890-01-01 11:06:32+00:00");
    }

    #[test]
    fn describe_times() {
        let now = berlin();
        let local = now.time_zone();
        let d = |text: &str| parse_target(text, &now).unwrap().describe(local);
        assert_eq!(
            d("2026-11-23 14:05:00"),
            "2026-11-23 13:05:00 UTC (14:05:00 CET, local)"
        );
        assert_eq!(
            d("2026-11-23 13:05:00Z"),
            "2026-11-23 13:05:00 UTC (14:05:00 CET, local)"
        );
        assert_eq!(
            d("2026-10-25 02:30:00"),
            "2026-10-25 00:30:00 UTC (02:30:00 CEST, local)"
        );
        assert_eq!(
            d("2026-11-23 00:30:00.25"),
            "2026-11-22 23:30:00.250000 UTC (2026-11-23 00:30:00.250000 CET, local)"
        );
        assert_eq!(
            d("2026-11-23 08:05:00-05:00"),
            "2026-11-23 13:05:00 UTC (08:05:00 -05:00, as given; 14:05:00 CET, local)"
        );
        assert_eq!(
            d("2026-11-23 14:05:00").replace("CET", "x"),
            parse_target("2026-11-23 13:05:00Z", &now)
                .unwrap()
                .describe(local)
                .replace("CET", "x")
        );
        let utc = now_in("UTC");
        assert_eq!(
            parse_target("2026-11-23 13:05:00", &utc)
                .unwrap()
                .describe(utc.time_zone()),
            "2026-11-23 13:05:00 UTC"
        );
    }

    #[test]
    fn describe_others() {
        let tz = TimeZone::UTC;
        assert_eq!(
            Target::Lsn(Lsn::new(0x0300_0060)).describe(&tz),
            "LSN 0/3000060"
        );
        assert_eq!(
            Target::Xid(Xid::Bare(1234)).describe(&tz),
            "transaction 1234"
        );
        assert_eq!(
            Target::Xid("4294968023".parse().unwrap()).describe(&tz),
            "transaction 4294968023 (xid 727 of epoch 1)"
        );
        assert_eq!(
            Target::Name("before_migration".into()).describe(&tz),
            "restore point \"before_migration\""
        );
        assert_eq!(
            Target::Latest.describe(&tz),
            "the end of the archive (latest)"
        );
        assert_eq!(
            Target::Immediate.describe(&tz),
            "the first consistent point of the backup (immediate)"
        );
    }

    // Years 1..=9999 in every offset: a day of margin on each side.
    const MIN_SECONDS: i64 = -62_135_596_800 + 86_400;
    const MAX_SECONDS: i64 = 253_402_300_799 - 86_400;

    #[test]
    fn pausing_or_shutting_down_needs_a_target_point() {
        let now = Zoned::now();
        let latest = parse_target(" LATEST ", &now).unwrap();
        for action in [Action::Pause, Action::Shutdown] {
            assert!(action.check(&latest).is_err(), "{action:?}");
        }
        assert_eq!(Action::Promote.check(&latest).unwrap(), Action::Promote);
        for text in [
            "immediate",
            "lsn:0/3000060",
            "xid:1234",
            "name:before",
            "5 minutes ago",
        ] {
            let target = parse_target(text, &now).unwrap();
            for action in [Action::Promote, Action::Pause, Action::Shutdown] {
                assert_eq!(action.check(&target).unwrap(), action, "{text}");
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in ".*") {
            let _ = parse_target(&text, &berlin());
        }

        #[test]
        fn never_panics_with_prefixes(prefix in "(?i)(lsn|xid|name):", rest in ".{0,80}") {
            let _ = parse_target(&format!("{prefix}{rest}"), &berlin());
        }

        #[test]
        fn never_panics_on_time_like_words(
            words in prop::collection::vec(
                prop::sample::select(vec![
                    "ago", "yesterday", "today", "now", "tomorrow", "next", "last", "monday",
                    "minutes", "hours", "days", "years", "months", "UTC", "Z", "CET", "@", "+",
                    "-", ":", "2026-11-23", "14:05:00", "T", ".", "999999999", "-9999", "9999",
                    "0", "1", "TZ=\"Europe/Berlin\"", "am", "pm", "j", "fortnight",
                ]),
                0..8,
            ),
            zone in prop::sample::select(vec!["Europe/Berlin", "UTC", "America/New_York", "Australia/Lord_Howe"]),
        ) {
            let _ = parse_target(&words.join(" "), &now_in(zone));
            let _ = parse_target(&words.concat(), &now_in(zone));
        }

        #[test]
        fn times_are_never_in_the_future_and_are_microsecond_precise(text in "[0-9a-z :.+-]{0,30}") {
            let now = berlin();
            if let Ok(Target::Time(t)) = parse_target(&text, &now) {
                prop_assert!(t.timestamp() <= now.timestamp().as_second());
                prop_assert_eq!(t.nanosecond() % 1_000, 0);
                let reparsed = DateTime::parse_from_str(&postgres_timestamp(&t), PG_FORMAT);
                prop_assert_eq!(reparsed, Ok(t));
            }
        }

        /// Real dates with an offset, clock times of today and relative
        /// times, each with its instant worked out from the generated parts
        /// (chrono arithmetic, not the parser): every case parses, to exactly
        /// that instant, to the microsecond, or is refused as in the future.
        #[test]
        fn generated_dates_clock_times_and_relative_times_mean_what_they_say(
            case in generated_time_text(),
        ) {
            let now = berlin();
            let (text, expected) = case;
            let now_chrono = DateTime::from_timestamp(
                now.timestamp().as_second(),
                now.timestamp().subsec_nanosecond() as u32,
            )
            .unwrap();
            match (parse_target(&text, &now), expected) {
                (Ok(Target::Time(t)), Some(want)) => {
                    prop_assert_eq!(t, want, "{}", text);
                    prop_assert_eq!(t.offset(), want.offset(), "{}", text);
                    prop_assert!(t <= now_chrono, "{}", text);
                    prop_assert_eq!(t.nanosecond() % 1_000, 0, "{}", text);
                    let reparsed = DateTime::parse_from_str(&postgres_timestamp(&t), PG_FORMAT);
                    prop_assert_eq!(reparsed, Ok(t));
                }
                (Err(TargetError::Future { .. }), None) => {}
                (outcome, want) => prop_assert!(false, "{text}: {outcome:?}, expected {want:?}"),
            }
        }

        #[test]
        fn postgres_timestamp_round_trips(
            seconds in MIN_SECONDS..MAX_SECONDS,
            nanos in prop_oneof![Just(0u32), (0u32..1_000_000).prop_map(|u| u * 1_000), 0u32..1_000_000_000],
            offset in prop_oneof![(-1439i32..1440).prop_map(|m| m * 60), -86_399i32..86_400],
        ) {
            let t = DateTime::from_timestamp(seconds, nanos)
                .unwrap()
                .with_timezone(&FixedOffset::east_opt(offset).unwrap());
            let text = postgres_timestamp(&t);
            let reparsed = DateTime::parse_from_str(&text, PG_FORMAT).unwrap();
            prop_assert_eq!(reparsed, t, "{}", text);
            if offset % 60 == 0 {
                prop_assert_eq!(reparsed.offset(), t.offset());
            }
        }
    }
}
