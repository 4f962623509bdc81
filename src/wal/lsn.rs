//! Log sequence numbers: byte positions in PostgreSQL's write-ahead log.

use std::fmt;
use std::str::FromStr;

/// A position in the WAL, written by PostgreSQL as `%X/%X` (two 32-bit
/// halves in upper-case hex). `pg_waldump` pads the low half to 8 digits;
/// both forms parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    pub const fn new(value: u64) -> Lsn {
        Lsn(value)
    }

    pub const fn value(self) -> u64 {
        self.0
    }
}

/// Why a text is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a WAL location: expected two hexadecimal numbers separated by `/`, such as `0/3000060`")]
pub struct LsnParseError {
    pub text: String,
}

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(text: &str) -> Result<Lsn, LsnParseError> {
        let error = || LsnParseError {
            text: text.to_string(),
        };
        let (high, low) = text.trim().split_once('/').ok_or_else(error)?;
        let is_hex =
            |s: &str| !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex(high) || !is_hex(low) {
            return Err(error());
        }
        let high = u32::from_str_radix(high, 16).map_err(|_| error())?;
        let low = u32::from_str_radix(low, 16).map_err(|_| error())?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Lsn, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_server_and_waldump_forms() {
        assert_eq!("0/3000060".parse::<Lsn>(), Ok(Lsn(0x0300_0060)));
        assert_eq!("0/03000060".parse::<Lsn>(), Ok(Lsn(0x0300_0060)));
        assert_eq!("1F/A".parse::<Lsn>(), Ok(Lsn((0x1F << 32) | 0xA)));
        assert_eq!(
            "ff/ffffffff".parse::<Lsn>(),
            Ok(Lsn((0xFF << 32) | 0xFFFF_FFFF))
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "0",
            "/1",
            "1/",
            "0/123456789",
            "x/1",
            "0/1/2",
            "-1/0",
            "0/+1",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn displays_like_postgres() {
        assert_eq!(Lsn(0x1201_A6D8).to_string(), "0/1201A6D8");
        assert_eq!(Lsn(1 << 32).to_string(), "1/0");
    }

    proptest! {
        #[test]
        fn display_round_trips(value in any::<u64>()) {
            let lsn = Lsn(value);
            prop_assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn));
        }

        #[test]
        fn parse_never_panics(text in ".{0,24}") {
            let _ = text.parse::<Lsn>();
        }
    }
}
