//! `backup_label` (inside a base backup) and backup history files
//! (`<startseg>.<offset>.backup`, in the WAL archive).
//!
//! Both are written by the server (`do_pg_backup_start`/`do_pg_backup_stop`
//! in xlog.c up to 15, `build_backup_content` in xlogbackup.c from 16), one
//! `KEY: value` per line ending in `\n`:
//!
//! ```text
//! START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
//! STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)   <- history file only
//! CHECKPOINT LOCATION: 0/2000060
//! BACKUP METHOD: streamed
//! BACKUP FROM: primary
//! START TIME: 2026-11-24 03:02:15 UTC
//! LABEL: base1
//! START TIMELINE: 1
//! STOP TIME: 2026-11-24 03:02:15 UTC                             <- history file only
//! STOP TIMELINE: 1                                               <- history file only
//! INCREMENTAL FROM LSN: 0/4000028                                <- 17+, incremental only
//! INCREMENTAL FROM TLI: 1                                        <- 17+, incremental only
//! ```
//!
//! Like the server's `read_backup_label`, the location lines are required in
//! their written order at the top of the file. The other lines may come in
//! any order; unknown lines are ignored so that a newer server's additions do
//! not break us. Every line PostgreSQL 12–18 always writes is required except
//! `BACKUP FROM` (pg_rewind writes labels without LABEL and START TIMELINE,
//! but pitr only reads pg_basebackup output).
//!
//! Times are `%Y-%m-%d %H:%M:%S %Z` in the server's `log_timezone`: `%Z` is an
//! abbreviation (`UTC`, `CET`, `IST`) or, for zones without one, a numeric
//! offset (`-03`, `+0545`). Abbreviations are ambiguous (`IST` is India,
//! Ireland or Israel), so [`LabelTime`] resolves them only when that is safe.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDateTime, Timelike};
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};

use crate::wal::segment::is_segment_name;
use crate::wal::{Lsn, SegmentSize, TimelineId, WalSegment};

/// The start of a base backup, as `backup_label` describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackupLabel {
    /// Redo LSN of the backup checkpoint: where replay starts.
    pub start_lsn: Lsn,
    /// The segment holding `start_lsn`, named with `start_timeline`.
    pub start_segment: String,
    /// The backup checkpoint record.
    pub checkpoint_lsn: Lsn,
    /// `streamed` (pg_basebackup, non-exclusive) or `pg_start_backup`
    /// (exclusive backups, 12–14).
    pub method: String,
    /// `primary` (14+), `master` (12–13) or `standby`; absent in hand-made labels.
    pub from: Option<String>,
    pub start_time: LabelTime,
    /// The user's label, verbatim (may be empty).
    pub label: String,
    pub start_timeline: TimelineId,
    /// Set for incremental backups (17+), which need `pg_combinebackup`.
    pub incremental_from: Option<Lsn>,
}

impl BackupLabel {
    /// `BACKUP FROM: standby`: taken from a standby, which writes no backup
    /// history file; its end is its pg_control's minimum recovery point.
    pub fn is_from_standby(&self) -> bool {
        self.from.as_deref() == Some("standby")
    }
}

/// A backup history file: the label plus where and when the backup stopped.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackupHistoryFile {
    /// The start fields, as in the backup's own `backup_label`.
    pub label: BackupLabel,
    /// End of the backup-end record: recovery is consistent from here on.
    pub stop_lsn: Lsn,
    pub stop_segment: String,
    pub stop_time: LabelTime,
    pub stop_timeline: TimelineId,
}

/// A time as PostgreSQL wrote it, and the instant it denotes if the zone
/// abbreviation could be resolved.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LabelTime {
    /// As written, such as `2026-11-24 04:02:21 CET`.
    pub text: String,
    /// `None` when the abbreviation is neither numeric, nor UTC/GMT, nor the
    /// abbreviation of the local zone at that wall time.
    pub instant: Option<DateTime<FixedOffset>>,
}

impl LabelTime {
    /// Reads `YYYY-MM-DD HH:MM:SS ZONE`; `None` if `text` is not of that shape.
    ///
    /// `ZONE` resolves exactly when numeric (`+05`, `-03`, `+0545`) or
    /// `UTC`/`GMT`/`UCT`/`Z`. Any other abbreviation is tried in `local`: the
    /// wall time is read in that zone and kept only if the zone's abbreviation
    /// at the resulting instant is the written one. In a DST fold this picks
    /// the right one of the two candidates (`02:30 CEST` vs `02:30 CET`), and
    /// a label written under another `log_timezone` stays unresolved rather
    /// than silently wrong.
    pub fn parse(text: &str, local: &TimeZone) -> Option<LabelTime> {
        let text = text.trim();
        // The wall time is the first 19 characters; `get` keeps a multi-byte
        // character near the cut from panicking.
        let (wall, zone) = (text.get(..19)?, text.get(19..)?);
        let zone = zone.strip_prefix(' ')?;
        let wall = NaiveDateTime::parse_from_str(wall, "%Y-%m-%d %H:%M:%S").ok()?;
        if zone.is_empty() || zone.contains(char::is_whitespace) {
            return None;
        }
        let offset_seconds = match zone {
            "UTC" | "GMT" | "UCT" | "Z" => Some(0),
            // tzdata's "local time unknown" (zone Factory).
            "-00" | "-0000" => None,
            _ if zone.starts_with(['+', '-']) => Some(numeric_offset(zone)?),
            _ => offset_in_zone(wall, zone, local),
        };
        let instant = offset_seconds
            .and_then(FixedOffset::east_opt)
            .and_then(|offset| wall.and_local_timezone(offset).single());
        Some(LabelTime {
            text: text.to_string(),
            instant,
        })
    }
}

/// `+HH`, `-HH`, `+HHMM` or `-HHMM` (tzdata's numeric abbreviations, ISO
/// sign: `-03` is three hours behind UTC) as seconds east of UTC.
fn numeric_offset(zone: &str) -> Option<i32> {
    let (sign, digits) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    if !matches!(digits.len(), 2 | 4) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits
        .get(2..)
        .filter(|m| !m.is_empty())
        .map_or(Some(0), |m| m.parse().ok())?;
    if hours > 15 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

/// The offset of `local` at wall time `wall` for which `local` itself uses
/// the abbreviation `zone`, if any.
fn offset_in_zone(wall: NaiveDateTime, zone: &str, local: &TimeZone) -> Option<i32> {
    let civil = jiff::civil::DateTime::new(
        i16::try_from(wall.year()).ok()?,
        i8::try_from(wall.month()).ok()?,
        i8::try_from(wall.day()).ok()?,
        i8::try_from(wall.hour()).ok()?,
        i8::try_from(wall.minute()).ok()?,
        i8::try_from(wall.second()).ok()?,
        0,
    )
    .ok()?;
    let candidates: Vec<Offset> = match local.to_ambiguous_timestamp(civil).offset() {
        AmbiguousOffset::Unambiguous { offset } => vec![offset],
        // In a gap the wall time does not exist; each candidate is checked
        // against the offset actually in force at its instant, so a gap time
        // resolves only if the zone really labels that instant so.
        AmbiguousOffset::Gap { before, after } | AmbiguousOffset::Fold { before, after } => {
            vec![before, after]
        }
    };
    candidates
        .into_iter()
        .find(|candidate| {
            candidate.to_timestamp(civil).is_ok_and(|instant| {
                let info = local.to_offset_info(instant);
                info.offset() == *candidate && info.abbreviation() == zone
            })
        })
        .map(|offset| offset.seconds())
}

/// Why a `backup_label` or backup history file was rejected. Line numbers
/// count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("line {line} should be `{field}: …` but is `{found}`")]
    ExpectedLine {
        line: usize,
        field: &'static str,
        found: String,
    },
    #[error("the `{field}` line is missing")]
    Missing { field: &'static str },
    #[error("line {line} repeats `{field}`, which was already given on line {first}")]
    Duplicate {
        line: usize,
        field: &'static str,
        first: usize,
    },
    #[error("line {line}: the {field} value `{value}` is invalid: expected {expected}")]
    Invalid {
        line: usize,
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("line {line}: {field} is {timeline}, but the file named on the {location_field} line, `{segment}`, is on timeline {segment_timeline}")]
    TimelineMismatch {
        line: usize,
        field: &'static str,
        timeline: u32,
        location_field: &'static str,
        segment: String,
        segment_timeline: u32,
    },
    #[error("line {line}: the {field} file `{segment}` does not hold WAL location {lsn} for any WAL segment size")]
    SegmentMismatch {
        line: usize,
        field: &'static str,
        segment: String,
        lsn: Lsn,
    },
}

const START_WAL: &str = "START WAL LOCATION";
const STOP_WAL: &str = "STOP WAL LOCATION";
const CHECKPOINT: &str = "CHECKPOINT LOCATION";
const METHOD: &str = "BACKUP METHOD";
const FROM: &str = "BACKUP FROM";
const START_TIME: &str = "START TIME";
const LABEL: &str = "LABEL";
const START_TIMELINE: &str = "START TIMELINE";
const STOP_TIME: &str = "STOP TIME";
const STOP_TIMELINE: &str = "STOP TIMELINE";
const INCREMENTAL_LSN: &str = "INCREMENTAL FROM LSN";
const INCREMENTAL_TLI: &str = "INCREMENTAL FROM TLI";

/// Parses a `backup_label`. `local` resolves zone abbreviations in START TIME
/// (see [`LabelTime::parse`]); pass the zone of the server's `log_timezone`
/// if known, else the machine's.
pub fn parse_backup_label(text: &str, local: &TimeZone) -> Result<BackupLabel, LabelError> {
    let mut lines = Lines::new(text);
    let start = lines.location(START_WAL, |timeline, lsn, size| {
        vec![WalSegment::containing(timeline, lsn, size)]
    })?;
    let checkpoint_lsn = lines.checkpoint()?;
    let fields = lines.fields(&[
        METHOD,
        FROM,
        START_TIME,
        LABEL,
        START_TIMELINE,
        INCREMENTAL_LSN,
        INCREMENTAL_TLI,
    ])?;
    build_label(start, checkpoint_lsn, &fields, local)
}

/// Parses a backup history file (`000000010000000000000002.00000028.backup`).
pub fn parse_backup_history(text: &str, local: &TimeZone) -> Result<BackupHistoryFile, LabelError> {
    let mut lines = Lines::new(text);
    let start = lines.location(START_WAL, |timeline, lsn, size| {
        vec![WalSegment::containing(timeline, lsn, size)]
    })?;
    // Up to 15 the stop file is the segment holding the byte *before* the
    // stop LSN (XLByteToPrevSeg); from 16 `build_backup_content` uses the
    // segment holding the stop LSN itself (XLByteToSeg). They differ only
    // when the stop LSN is on a segment boundary; accept either.
    let stop = lines.location(STOP_WAL, |timeline, lsn, size| {
        vec![
            WalSegment::containing(timeline, lsn, size),
            WalSegment::containing_end(timeline, lsn, size),
        ]
    })?;
    let checkpoint_lsn = lines.checkpoint()?;
    let fields = lines.fields(&[
        METHOD,
        FROM,
        START_TIME,
        LABEL,
        START_TIMELINE,
        STOP_TIME,
        STOP_TIMELINE,
        INCREMENTAL_LSN,
        INCREMENTAL_TLI,
    ])?;
    let label = build_label(start, checkpoint_lsn, &fields, local)?;
    let (stop_time_line, stop_time_text) = fields.required(STOP_TIME)?;
    let stop_time = parse_time(stop_time_line, STOP_TIME, stop_time_text, local)?;
    let stop_timeline = timeline_field(&fields, STOP_TIMELINE, STOP_WAL, &stop)?;
    Ok(BackupHistoryFile {
        label,
        stop_lsn: stop.lsn,
        stop_segment: stop.segment,
        stop_time,
        stop_timeline,
    })
}

/// Splits `000000010000000000000011.00000028.backup` into the segment name
/// and the offset of the backup start in it. Careful: the segment is named
/// with the backup's *stop* timeline (`BackupHistoryFileName`), which differs
/// from `START WAL LOCATION`'s file if a standby backup crossed a promotion.
pub fn parse_history_file_name(name: &str) -> Option<(String, u32)> {
    let stem = name.strip_suffix(".backup")?;
    let (segment, offset) = stem.split_once('.')?;
    let upper_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'));
    if !is_segment_name(segment) || offset.len() != 8 || !upper_hex(offset) {
        return None;
    }
    TimelineId::new(u32::from_str_radix(&segment[..8], 16).ok()?)?;
    Some((segment.to_string(), u32::from_str_radix(offset, 16).ok()?))
}

/// A `… WAL LOCATION: %X/%X (file <segment>)` line.
struct Location {
    lsn: Lsn,
    segment: String,
    timeline: TimelineId,
}

/// The lines of the file with their numbers, consumed from the top for the
/// fixed lines, then as a set of `KEY: value` fields.
struct Lines<'a> {
    lines: Vec<(usize, &'a str)>,
    next: usize,
}

/// The optional-order fields: for each key, its line number and value.
struct Fields<'a> {
    values: Vec<(&'static str, usize, &'a str)>,
}

impl<'a> Fields<'a> {
    fn get(&self, field: &'static str) -> Option<(usize, &'a str)> {
        self.values
            .iter()
            .find(|(key, _, _)| *key == field)
            .map(|&(_, line, value)| (line, value))
    }

    fn required(&self, field: &'static str) -> Result<(usize, &'a str), LabelError> {
        self.get(field).ok_or(LabelError::Missing { field })
    }
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        let lines = text
            .split('\n')
            .enumerate()
            .map(|(index, line)| (index + 1, line.strip_suffix('\r').unwrap_or(line)))
            .collect();
        Lines { lines, next: 0 }
    }

    /// The next line, which must be `field: value`; returns the value.
    fn fixed(&mut self, field: &'static str) -> Result<(usize, &'a str), LabelError> {
        let Some(&(line, text)) = self.lines.get(self.next) else {
            return Err(LabelError::Missing { field });
        };
        self.next += 1;
        match value_of(text, field) {
            Some(value) => Ok((line, value)),
            None if text.trim().is_empty() && self.next >= self.lines.len() => {
                Err(LabelError::Missing { field })
            }
            None => Err(LabelError::ExpectedLine {
                line,
                field,
                found: snippet(text),
            }),
        }
    }

    /// The next line, `field: <LSN> (file <segment>)`, where the segment must
    /// be one that `acceptable` names for the LSN at some segment size.
    fn location(
        &mut self,
        field: &'static str,
        acceptable: impl Fn(TimelineId, Lsn, SegmentSize) -> Vec<WalSegment>,
    ) -> Result<Location, LabelError> {
        let (line, value) = self.fixed(field)?;
        let invalid = || LabelError::Invalid {
            line,
            field,
            value: snippet(value),
            expected: "`%X/%X (file <24 hex digits>)`",
        };
        let (lsn, rest) = value.trim().split_once(' ').ok_or_else(invalid)?;
        let lsn: Lsn = lsn.parse().map_err(|_| invalid())?;
        let segment = rest
            .trim()
            .strip_prefix("(file ")
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(invalid)?;
        if !is_segment_name(segment) {
            return Err(invalid());
        }
        let timeline = u32::from_str_radix(&segment[..8], 16)
            .ok()
            .and_then(TimelineId::new)
            .ok_or_else(invalid)?;
        // The name encodes the LSN's segment number for the cluster's segment
        // size, which the label does not state: accept it if it matches for
        // some valid size. This catches a label edited by hand or pasted
        // together from two backups.
        let matches = (20..=30).any(|shift| {
            SegmentSize::new(1 << shift).is_some_and(|size| {
                acceptable(timeline, lsn, size)
                    .iter()
                    .any(|candidate| candidate.file_name() == segment)
            })
        });
        if !matches {
            return Err(LabelError::SegmentMismatch {
                line,
                field,
                segment: segment.to_string(),
                lsn,
            });
        }
        Ok(Location {
            lsn,
            segment: segment.to_string(),
            timeline,
        })
    }

    fn checkpoint(&mut self) -> Result<Lsn, LabelError> {
        let (line, value) = self.fixed(CHECKPOINT)?;
        value.trim().parse().map_err(|_| LabelError::Invalid {
            line,
            field: CHECKPOINT,
            value: snippet(value),
            expected: "a WAL location `%X/%X`",
        })
    }

    /// Collects the remaining lines whose key is in `known`; others are
    /// ignored. A known key given twice is an error: which one the server
    /// would believe depends on its fscanf order, so refuse to guess.
    fn fields(&self, known: &[&'static str]) -> Result<Fields<'a>, LabelError> {
        let mut values: Vec<(&'static str, usize, &'a str)> = Vec::new();
        for &(line, text) in &self.lines[self.next.min(self.lines.len())..] {
            let Some((field, value)) = known
                .iter()
                .find_map(|&field| value_of(text, field).map(|value| (field, value)))
            else {
                continue;
            };
            if let Some(&(_, first, _)) = values.iter().find(|(key, _, _)| *key == field) {
                return Err(LabelError::Duplicate { line, field, first });
            }
            values.push((field, line, value));
        }
        Ok(Fields { values })
    }
}

/// The value of a `FIELD: value` line. The server writes exactly one space
/// after the colon; an empty LABEL may have lost its trailing space.
fn value_of<'t>(text: &'t str, field: &str) -> Option<&'t str> {
    let rest = text.strip_prefix(field)?.strip_prefix(':')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

fn build_label(
    start: Location,
    checkpoint_lsn: Lsn,
    fields: &Fields<'_>,
    local: &TimeZone,
) -> Result<BackupLabel, LabelError> {
    let word =
        |field: &'static str, expected: &'static str| -> Result<Option<String>, LabelError> {
            let Some((line, value)) = fields.get(field) else {
                return Ok(None);
            };
            let value = value.trim();
            if value.is_empty() || value.contains(char::is_whitespace) {
                return Err(LabelError::Invalid {
                    line,
                    field,
                    value: snippet(value),
                    expected,
                });
            }
            Ok(Some(value.to_string()))
        };
    let method = word(METHOD, "one word such as `streamed`")?
        .ok_or(LabelError::Missing { field: METHOD })?;
    let from = word(FROM, "one word such as `primary` or `standby`")?;
    let (time_line, time_text) = fields.required(START_TIME)?;
    let start_time = parse_time(time_line, START_TIME, time_text, local)?;
    // Verbatim: the user chose it, leading and trailing spaces included.
    let (_, label) = fields.required(LABEL)?;
    let start_timeline = timeline_field(fields, START_TIMELINE, START_WAL, &start)?;
    let incremental_from = match fields.get(INCREMENTAL_LSN) {
        None => None,
        Some((line, value)) => Some(value.trim().parse().map_err(|_| LabelError::Invalid {
            line,
            field: INCREMENTAL_LSN,
            value: snippet(value),
            expected: "a WAL location `%X/%X`",
        })?),
    };
    if let Some((line, value)) = fields.get(INCREMENTAL_TLI) {
        // Not kept (the LSN alone marks an incremental backup), but a
        // malformed value means the file is not what we think it is.
        parse_timeline(line, INCREMENTAL_TLI, value)?;
    }
    Ok(BackupLabel {
        start_lsn: start.lsn,
        start_segment: start.segment,
        checkpoint_lsn,
        method,
        from,
        start_time,
        label: label.to_string(),
        start_timeline,
        incremental_from,
    })
}

fn parse_time(
    line: usize,
    field: &'static str,
    value: &str,
    local: &TimeZone,
) -> Result<LabelTime, LabelError> {
    LabelTime::parse(value, local).ok_or_else(|| LabelError::Invalid {
        line,
        field,
        value: snippet(value),
        expected: "`YYYY-MM-DD HH:MM:SS ZONE`",
    })
}

fn parse_timeline(line: usize, field: &'static str, value: &str) -> Result<TimelineId, LabelError> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .and_then(TimelineId::new)
        .ok_or_else(|| LabelError::Invalid {
            line,
            field,
            value: snippet(value),
            expected: "a timeline ID from 1 to 4294967295",
        })
}

/// A required timeline line that must agree with the TLI in the file name of
/// its location line, as the server checks for START TIMELINE.
fn timeline_field(
    fields: &Fields<'_>,
    field: &'static str,
    location_field: &'static str,
    location: &Location,
) -> Result<TimelineId, LabelError> {
    let (line, value) = fields.required(field)?;
    let timeline = parse_timeline(line, field, value)?;
    if timeline != location.timeline {
        return Err(LabelError::TimelineMismatch {
            line,
            field,
            timeline: timeline.value(),
            location_field,
            segment: location.segment.clone(),
            segment_timeline: location.timeline.value(),
        });
    }
    Ok(timeline)
}

/// Keeps error messages one line long whatever the input holds.
fn snippet(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// pg_basebackup 15, log_timezone = UTC.
    const LABEL_UTC: &str = include_str!("../../fixtures/backup_label/pg15_stream");
    /// pg_basebackup 15, log_timezone = Europe/Berlin.
    const LABEL_CET: &str = include_str!("../../fixtures/backup_label/pg15_cet");
    /// pg_basebackup 15, log_timezone = America/Sao_Paulo (no abbreviation: `-03`).
    const LABEL_NUMERIC: &str = include_str!("../../fixtures/backup_label/pg15_numeric_offset");
    const HISTORY_UTC: &str =
        include_str!("../../fixtures/backup_history/000000010000000000000002.00000028.backup");
    const HISTORY_CET: &str =
        include_str!("../../fixtures/backup_history/000000010000000000000004.00000028.backup");
    /// log_timezone = Asia/Kolkata: `IST`, which is also Irish and Israeli time.
    const HISTORY_IST: &str =
        include_str!("../../fixtures/backup_history/000000010000000000000007.00000028.backup");

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    fn tli(value: u32) -> TimelineId {
        TimelineId::new(value).unwrap()
    }

    fn instant(text: &str) -> Option<DateTime<FixedOffset>> {
        Some(DateTime::parse_from_rfc3339(text).unwrap())
    }

    /// Self-contained zones, so tests do not depend on the machine's tzdata.
    fn berlin() -> TimeZone {
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
    }

    fn kolkata() -> TimeZone {
        TimeZone::posix("IST-5:30").unwrap()
    }

    #[test]
    fn real_label_utc() {
        let label = parse_backup_label(LABEL_UTC, &TimeZone::UTC).unwrap();
        assert_eq!(
            label,
            BackupLabel {
                start_lsn: lsn("0/2000028"),
                start_segment: "000000010000000000000002".into(),
                checkpoint_lsn: lsn("0/2000060"),
                method: "streamed".into(),
                from: Some("primary".into()),
                start_time: LabelTime {
                    text: "2026-11-24 03:02:15 UTC".into(),
                    instant: instant("2026-11-24T03:02:15Z"),
                },
                label: "base1".into(),
                start_timeline: tli(1),
                incremental_from: None,
            }
        );
    }

    #[test]
    fn real_label_with_zone_abbreviation() {
        let label = parse_backup_label(LABEL_CET, &berlin()).unwrap();
        assert_eq!(label.label, "base two");
        assert_eq!(label.start_time.text, "2026-11-24 04:02:21 CET");
        assert_eq!(
            label.start_time.instant,
            instant("2026-11-24T04:02:21+01:00")
        );
        // Read with another local zone, CET cannot be resolved.
        let elsewhere = parse_backup_label(LABEL_CET, &kolkata()).unwrap();
        assert_eq!(elsewhere.start_time.instant, None);
        assert_eq!(
            parse_backup_label(LABEL_CET, &TimeZone::UTC)
                .unwrap()
                .start_time
                .instant,
            None
        );
    }

    #[test]
    fn real_label_with_numeric_zone() {
        // Resolved exactly, whatever the local zone.
        let label = parse_backup_label(LABEL_NUMERIC, &kolkata()).unwrap();
        assert_eq!(label.start_time.text, "2026-11-24 00:02:23 -03");
        assert_eq!(
            label.start_time.instant,
            instant("2026-11-24T00:02:23-03:00")
        );
    }

    #[test]
    fn real_history_files() {
        let history = parse_backup_history(HISTORY_UTC, &TimeZone::UTC).unwrap();
        assert_eq!(
            history.label,
            parse_backup_label(LABEL_UTC, &TimeZone::UTC).unwrap()
        );
        assert_eq!(history.stop_lsn, lsn("0/2000100"));
        assert_eq!(history.stop_segment, "000000010000000000000002");
        assert_eq!(history.stop_time.instant, instant("2026-11-24T03:02:15Z"));
        assert_eq!(history.stop_timeline, tli(1));

        let cet = parse_backup_history(HISTORY_CET, &berlin()).unwrap();
        assert_eq!(cet.label, parse_backup_label(LABEL_CET, &berlin()).unwrap());
        assert_eq!(cet.stop_time.instant, instant("2026-11-24T03:02:22Z"));

        let ist = parse_backup_history(HISTORY_IST, &kolkata()).unwrap();
        assert_eq!(ist.label.label, "base4");
        assert_eq!(ist.stop_time.instant, instant("2026-11-24T03:02:24Z"));
        // Irish Standard Time is also `IST`, at +01:00 in summer; in
        // November Dublin says GMT, so nothing matches and nothing is guessed.
        let dublin = TimeZone::posix("IST-1GMT0,M10.5.0,M3.5.0/1").unwrap();
        assert_eq!(
            parse_backup_history(HISTORY_IST, &dublin)
                .unwrap()
                .stop_time
                .instant,
            None
        );
    }

    #[test]
    fn history_file_names() {
        assert_eq!(
            parse_history_file_name("000000010000000000000011.00000028.backup"),
            Some(("000000010000000000000011".into(), 0x28))
        );
        assert_eq!(
            parse_history_file_name("0000000A00000001000000FF.00FFFFF8.backup"),
            Some(("0000000A00000001000000FF".into(), 0x00FF_FFF8))
        );
        for bad in [
            "000000010000000000000011.backup",
            "000000010000000000000011.00000028",
            "000000010000000000000011.0000028.backup",
            "000000010000000000000011.0000002g.backup",
            "000000010000000000000011.0000002a.backup",
            "00000001000000000000001.00000028.backup",
            "000000000000000000000011.00000028.backup",
            "00000002.history",
            "",
        ] {
            assert_eq!(parse_history_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn zone_abbreviations() {
        let utc = TimeZone::UTC;
        let at = |text: &str, zone: &TimeZone| LabelTime::parse(text, zone).unwrap().instant;
        assert_eq!(
            at("2026-01-02 03:04:05 GMT", &berlin()),
            instant("2026-01-02T03:04:05Z")
        );
        assert_eq!(
            at("2026-01-02 03:04:05 Z", &berlin()),
            instant("2026-01-02T03:04:05Z")
        );
        assert_eq!(
            at("2026-01-02 03:04:05 +05", &utc),
            instant("2026-01-02T03:04:05+05:00")
        );
        assert_eq!(
            at("2026-01-02 03:04:05 +0545", &utc),
            instant("2026-01-02T03:04:05+05:45")
        );
        assert_eq!(
            at("2026-01-02 03:04:05 -0930", &utc),
            instant("2026-01-02T03:04:05-09:30")
        );
        assert_eq!(
            at("2026-07-02 03:04:05 CEST", &berlin()),
            instant("2026-07-02T03:04:05+02:00")
        );
        // Wrong abbreviation for the season: CEST in January does not exist.
        assert_eq!(at("2026-01-02 03:04:05 CEST", &berlin()), None);
        // Unknown abbreviation and tzdata's "local time unknown".
        assert_eq!(at("2026-01-02 03:04:05 XYZT", &berlin()), None);
        assert_eq!(at("2026-01-02 03:04:05 -00", &utc), None);
        // Malformed: shape wrong, impossible date, bad numeric zone.
        for bad in [
            "",
            "2026-01-02 03:04:05",
            "2026-01-02 03:04:05 ",
            "2026-01-02T03:04:05 UTC",
            "2026-02-30 03:04:05 UTC",
            "2026-01-02 03:04:05 +5",
            "2026-01-02 03:04:05 +05:30",
            "2026-01-02 03:04:05 +0575",
            "2026-01-02 03:04:05 CET extra",
            "2026-01-02 03:04:0é UTC",
        ] {
            assert_eq!(LabelTime::parse(bad, &utc), None, "{bad:?}");
        }
    }

    #[test]
    fn dst_fold_picks_the_matching_abbreviation() {
        // 2026-10-25 02:30 happens twice in Berlin: first CEST, then CET.
        let zone = berlin();
        let at = |text: &str| LabelTime::parse(text, &zone).unwrap().instant;
        assert_eq!(
            at("2026-10-25 02:30:00 CEST"),
            instant("2026-10-25T02:30:00+02:00")
        );
        assert_eq!(
            at("2026-10-25 02:30:00 CET"),
            instant("2026-10-25T02:30:00+01:00")
        );
        // 2026-03-29 02:30 does not exist in Berlin.
        assert_eq!(at("2026-03-29 02:30:00 CET"), None);
        assert_eq!(at("2026-03-29 02:30:00 CEST"), None);
    }

    const HAND: &str = "START WAL LOCATION: 0/11000028 (file 000000010000000000000011)\n\
                        CHECKPOINT LOCATION: 0/11000060\n\
                        BACKUP METHOD: streamed\n\
                        BACKUP FROM: primary\n\
                        START TIME: 2026-11-24 01:21:14 UTC\n\
                        LABEL: base1\n\
                        START TIMELINE: 1\n";

    fn label(text: &str) -> Result<BackupLabel, LabelError> {
        parse_backup_label(text, &TimeZone::UTC)
    }

    #[test]
    fn optional_lines_and_unknown_lines() {
        let without_from = HAND.replace("BACKUP FROM: primary\n", "");
        assert_eq!(label(&without_from).unwrap().from, None);
        let extra = format!("{HAND}SOMETHING NEW: 42\n\n");
        assert_eq!(label(&extra).unwrap(), label(HAND).unwrap());
        // Any order after the two location lines; CRLF tolerated.
        let shuffled = HAND
            .replace("LABEL: base1\n", "")
            .replace("BACKUP METHOD", "LABEL:   spaced label \nBACKUP METHOD")
            .replace('\n', "\r\n");
        let parsed = label(&shuffled).unwrap();
        assert_eq!(parsed.label, "  spaced label ");
        assert_eq!(parsed.method, "streamed");
        // An empty label, with or without the trailing space.
        assert_eq!(
            label(&HAND.replace("LABEL: base1", "LABEL: "))
                .unwrap()
                .label,
            ""
        );
        assert_eq!(
            label(&HAND.replace("LABEL: base1", "LABEL:"))
                .unwrap()
                .label,
            ""
        );
        // No trailing newline.
        assert!(label(HAND.trim_end()).is_ok());
    }

    #[test]
    fn incremental_backup_of_17() {
        let text = format!("{HAND}INCREMENTAL FROM LSN: 0/4000028\nINCREMENTAL FROM TLI: 1\n");
        assert_eq!(
            label(&text).unwrap().incremental_from,
            Some(lsn("0/4000028"))
        );
        let bad = format!("{HAND}INCREMENTAL FROM LSN: 0/4000028\nINCREMENTAL FROM TLI: zero\n");
        assert!(matches!(
            label(&bad),
            Err(LabelError::Invalid {
                line: 9,
                field: INCREMENTAL_TLI,
                ..
            })
        ));
    }

    #[test]
    fn label_with_unknown_abbreviation_still_parses() {
        let text = HAND.replace("01:21:14 UTC", "01:21:14 WEIRD");
        let parsed = label(&text).unwrap();
        assert_eq!(parsed.start_time.text, "2026-11-24 01:21:14 WEIRD");
        assert_eq!(parsed.start_time.instant, None);
    }

    #[test]
    fn errors_name_the_field_and_line() {
        let err = |text: String| label(&text).unwrap_err();
        assert_eq!(label(""), Err(LabelError::Missing { field: START_WAL }));
        assert_eq!(
            err(HAND.replacen("START WAL LOCATION", "START WAL LOCATON", 1)),
            LabelError::ExpectedLine {
                line: 1,
                field: START_WAL,
                found: "START WAL LOCATON: 0/11000028 (file 000000010000000000000011)".into(),
            }
        );
        // Location lines are positional, as for the server.
        let swapped = HAND.replacen("LABEL: base1\n", "", 1).replacen(
            "CHECKPOINT",
            "LABEL: base1\nCHECKPOINT",
            1,
        );
        assert!(matches!(
            err(swapped),
            LabelError::ExpectedLine {
                line: 2,
                field: CHECKPOINT,
                ..
            }
        ));
        assert_eq!(
            err(HAND.lines().next().unwrap().to_string()),
            LabelError::Missing { field: CHECKPOINT }
        );
        assert!(matches!(
            err(HAND.replace("0/11000028 (file", "0/11000028(file")),
            LabelError::Invalid {
                line: 1,
                field: START_WAL,
                ..
            }
        ));
        assert!(matches!(
            err(HAND.replace(
                "(file 000000010000000000000011)",
                "(file 00000001000000000000001)"
            )),
            LabelError::Invalid {
                line: 1,
                field: START_WAL,
                ..
            }
        ));
        assert!(matches!(
            err(HAND.replace(
                "(file 000000010000000000000011)",
                "(file 000000010000000000000012)"
            )),
            LabelError::SegmentMismatch {
                line: 1,
                field: START_WAL,
                ..
            }
        ));
        assert!(matches!(
            err(HAND.replace(
                "CHECKPOINT LOCATION: 0/11000060",
                "CHECKPOINT LOCATION: 11000060"
            )),
            LabelError::Invalid {
                line: 2,
                field: CHECKPOINT,
                ..
            }
        ));
        assert_eq!(
            err(HAND.replace("START TIMELINE: 1\n", "")),
            LabelError::Missing {
                field: START_TIMELINE
            }
        );
        assert_eq!(
            err(HAND.replace("BACKUP METHOD: streamed\n", "")),
            LabelError::Missing { field: METHOD }
        );
        assert_eq!(
            err(HAND.replace("LABEL: base1\n", "")),
            LabelError::Missing { field: LABEL }
        );
        assert_eq!(
            err(HAND.replace("START TIME: 2026-11-24 01:21:14 UTC\n", "")),
            LabelError::Missing { field: START_TIME }
        );
        assert!(matches!(
            err(HAND.replace("01:21:14 UTC", "yesterday")),
            LabelError::Invalid {
                line: 5,
                field: START_TIME,
                ..
            }
        ));
        assert!(matches!(
            err(HAND.replace("BACKUP METHOD: streamed", "BACKUP METHOD: ")),
            LabelError::Invalid {
                line: 3,
                field: METHOD,
                ..
            }
        ));
        assert!(matches!(
            err(HAND.replace("START TIMELINE: 1", "START TIMELINE: 0")),
            LabelError::Invalid {
                line: 7,
                field: START_TIMELINE,
                ..
            }
        ));
        assert_eq!(
            err(format!("{HAND}LABEL: again\n")),
            LabelError::Duplicate {
                line: 8,
                field: LABEL,
                first: 6
            }
        );
        let mismatch = err(HAND.replace("START TIMELINE: 1", "START TIMELINE: 2"));
        assert_eq!(
            mismatch.to_string(),
            "line 7: START TIMELINE is 2, but the file named on the START WAL LOCATION line, `000000010000000000000011`, is on timeline 1"
        );
    }

    #[test]
    fn history_file_errors() {
        let history = |text: String| parse_backup_history(&text, &TimeZone::UTC);
        assert!(matches!(
            history(HISTORY_UTC.replace("STOP TIMELINE: 1", "STOP TIMELINE: 2")),
            Err(LabelError::TimelineMismatch {
                line: 10,
                field: STOP_TIMELINE,
                ..
            })
        ));
        assert_eq!(
            history(HISTORY_UTC.replace("STOP TIME: 2026-11-24 03:02:15 UTC\n", "")),
            Err(LabelError::Missing { field: STOP_TIME })
        );
        // A backup_label is not a history file: line 2 is not STOP WAL LOCATION.
        assert!(matches!(
            history(LABEL_UTC.to_string()),
            Err(LabelError::ExpectedLine {
                line: 2,
                field: STOP_WAL,
                ..
            })
        ));
        // And a history file is not a backup_label.
        assert!(matches!(
            label(HISTORY_UTC),
            Err(LabelError::ExpectedLine {
                line: 2,
                field: CHECKPOINT,
                ..
            })
        ));
    }

    #[test]
    fn stop_file_on_a_segment_boundary() {
        // Stop LSN exactly at the start of segment 3: PostgreSQL ≤ 15 names
        // segment 2 (the byte before), 16+ names segment 3.
        let base = HISTORY_UTC.replace(
            "STOP WAL LOCATION: 0/2000100",
            "STOP WAL LOCATION: 0/3000000",
        );
        let old = parse_backup_history(&base, &TimeZone::UTC).unwrap();
        assert_eq!(old.stop_segment, "000000010000000000000002");
        let new = base.replace(
            "(file 000000010000000000000002)\nCHECKPOINT",
            "(file 000000010000000000000003)\nCHECKPOINT",
        );
        assert_eq!(
            parse_backup_history(&new, &TimeZone::UTC)
                .unwrap()
                .stop_segment,
            "000000010000000000000003"
        );
        let wrong = base.replace(
            "(file 000000010000000000000002)\nCHECKPOINT",
            "(file 000000010000000000000004)\nCHECKPOINT",
        );
        assert!(matches!(
            parse_backup_history(&wrong, &TimeZone::UTC),
            Err(LabelError::SegmentMismatch {
                line: 2,
                field: STOP_WAL,
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in "(?s).{0,400}") {
            let _ = parse_backup_label(&text, &berlin());
            let _ = parse_backup_history(&text, &berlin());
            let _ = parse_history_file_name(&text);
            let _ = LabelTime::parse(&text, &berlin());
        }

        #[test]
        fn never_panics_on_mutated_labels(
            cut in 0usize..400,
            insert in "(?s).{0,12}",
            history in any::<bool>(),
        ) {
            let base = if history { HISTORY_CET } else { LABEL_CET };
            let mut text = base.to_string();
            let mut at = cut.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(at, &insert);
            let _ = parse_backup_label(&text, &berlin());
            let _ = parse_backup_history(&text, &berlin());
        }

        #[test]
        fn never_panics_on_time_like_text(text in "[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} [A-Z+-0-9]{0,6}") {
            let _ = LabelTime::parse(&text, &berlin());
        }
    }
}
