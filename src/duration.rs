//! Durations written on the command line: `7d`, `36h`, `90m`, `1d12h`,
//! `2w`, `30s`.
//!
//! Units are seconds (`s`), minutes (`m`, `min`), hours (`h`), days (`d`)
//! and weeks (`w`); parts add up. Relative targets (`--to '5m ago'`) read
//! their units with the same table ([`parse_parts`]). Months and years are left out on purpose:
//! their length varies, and a retention window must mean the same thing
//! every time it is read.

use std::time::Duration;

/// Why a text is not a duration; the message names the text and the
/// accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a duration: {reason}; write a number and a unit, such as `7d`, `36h`, `90m`, `1d12h` (units s, m, h, d, w)")]
pub struct DurationError {
    pub text: String,
    pub reason: &'static str,
}

/// A unit of a written duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
}

impl Unit {
    /// Every spelling a unit may have on the command line: one table for
    /// `--keep-within 7d`, `--archive-wait 5m` and `--to '5m ago'`.
    fn from_word(word: &str) -> Option<Unit> {
        Some(match word.to_ascii_lowercase().as_str() {
            "s" | "sec" | "secs" | "second" | "seconds" => Unit::Second,
            "m" | "min" | "mins" | "minute" | "minutes" => Unit::Minute,
            "h" | "hr" | "hrs" | "hour" | "hours" => Unit::Hour,
            "d" | "day" | "days" => Unit::Day,
            "w" | "week" | "weeks" => Unit::Week,
            _ => return None,
        })
    }

    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
            Unit::Week => 604_800,
        }
    }

    /// The unit spelled out, plural, as date parsers read it.
    pub fn long_name(self) -> &'static str {
        match self {
            Unit::Second => "seconds",
            Unit::Minute => "minutes",
            Unit::Hour => "hours",
            Unit::Day => "days",
            Unit::Week => "weeks",
        }
    }
}

/// Splits `1d12h`, `5 min`, `30s` into its numbers and units, in the order
/// written. A bare zero gives no parts.
pub fn parse_parts(text: &str) -> Result<Vec<(u64, Unit)>, DurationError> {
    let error = |reason| DurationError {
        text: text.to_string(),
        reason,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(error("it is empty"));
    }
    // A bare zero needs no unit: `--archive-wait 0` means "do not wait".
    if trimmed.bytes().all(|b| b == b'0') {
        return Ok(Vec::new());
    }
    let mut parts = Vec::new();
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(error("a unit must follow a number"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| error("the number is too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = match &rest[..unit_len] {
            "" => return Err(error("the number has no unit")),
            word => Unit::from_word(word).ok_or_else(|| error("the unit is unknown"))?,
        };
        parts.push((number, unit));
        rest = rest[unit_len..].trim_start();
    }
    Ok(parts)
}

/// Parses `7d`, `36h`, `1d12h`, `0`, ... into a [`Duration`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let error = |reason| DurationError {
        text: text.to_string(),
        reason,
    };
    let mut total: u64 = 0;
    for (number, unit) in parse_parts(text)? {
        let part = number
            .checked_mul(unit.seconds())
            .ok_or_else(|| error("it is too long"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| error("it is too long"))?;
    }
    Ok(Duration::from_secs(total))
}

/// Shows a duration the way it is written on the command line (`1d12h`).
pub fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".to_string();
    }
    let mut text = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            text.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> u64 {
        parse_duration(text).unwrap().as_secs()
    }

    #[test]
    fn single_units() {
        assert_eq!(secs("30s"), 30);
        assert_eq!(secs("90m"), 5400);
        assert_eq!(secs("36h"), 36 * 3600);
        assert_eq!(secs("7d"), 7 * 86_400);
        assert_eq!(secs("2w"), 14 * 86_400);
        assert_eq!(secs("5min"), 300);
        assert_eq!(secs("3 days"), 3 * 86_400);
        assert_eq!(secs("1H"), 3600);
    }

    #[test]
    fn parts_add_up() {
        assert_eq!(secs("1d12h"), 36 * 3600);
        assert_eq!(secs("1h 30m"), 5400);
        assert_eq!(secs("1w1d"), 8 * 86_400);
    }

    #[test]
    fn zero_needs_no_unit() {
        assert_eq!(secs("0"), 0);
        assert_eq!(secs("0s"), 0);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for (text, reason) in [
            ("", "it is empty"),
            ("7", "the number has no unit"),
            ("d", "a unit must follow a number"),
            ("7y", "the unit is unknown"),
            ("7 months", "the unit is unknown"),
            ("-7d", "a unit must follow a number"),
            ("1.5h", "the number has no unit"),
            ("99999999999999999999d", "the number is too large"),
            ("999999999999999w", "it is too long"),
        ] {
            let error = parse_duration(text).unwrap_err();
            assert_eq!(error.reason, reason, "{text}");
            assert!(error.to_string().contains("such as `7d`"), "{error}");
        }
    }

    #[test]
    fn formats_back() {
        assert_eq!(format_duration(Duration::from_secs(36 * 3600)), "1d12h");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        for text in ["7d", "1d12h", "90s", "2h5m3s"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(parsed)).unwrap(), parsed);
        }
    }
}
