//! Transaction IDs as targets name them, and their epochs.
//!
//! PostgreSQL's WAL and its `recovery_target_xid` compare 32-bit xids
//! (`TransactionId`): the GUC's check hook reads the setting with
//! `strtou64` and casts it to `TransactionId`, so `4294968023` and `727`
//! stop at the same commit. `pg_current_xact_id()` and `txid_current()`
//! return the 64-bit form (`FullTransactionId`: the epoch, how often the
//! 32-bit counter wrapped, in the high half). Given that form, pitr can do
//! what PostgreSQL does not: find the epoch of the transaction the WAL
//! holds, from the full next xid every checkpoint record carries, and
//! refuse a value of another epoch instead of stopping at a namesake.

use std::fmt;

/// The smallest normal transaction ID: 0, 1 and 2 are PostgreSQL's invalid,
/// bootstrap and frozen xids, which no committed transaction ever carries
/// (in any epoch: the counter skips them when it wraps).
pub const FIRST_NORMAL_XID: u32 = 3;

/// A 64-bit transaction ID: the epoch in the high 32 bits, the xid in the
/// low (PostgreSQL's `FullTransactionId`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct FullXid(u64);

impl FullXid {
    pub const fn new(value: u64) -> FullXid {
        FullXid(value)
    }

    pub const fn value(self) -> u64 {
        self.0
    }

    pub const fn epoch(self) -> u32 {
        (self.0 >> 32) as u32
    }

    pub const fn xid(self) -> u32 {
        self.0 as u32
    }

    /// The full ID of the 32-bit `xid` of a transaction seen in the WAL near
    /// a checkpoint whose next full xid was `reference`. Every xid that can
    /// still appear in the WAL lies within 2³¹ of the next xid on either
    /// side (PostgreSQL's wraparound protection stops assigning xids long
    /// before), so the nearer of the candidates is the one. None if that
    /// would be before epoch 0.
    pub fn widen(reference: FullXid, xid: u32) -> Option<FullXid> {
        let offset = i64::from(xid.wrapping_sub(reference.xid()) as i32);
        let full = i64::try_from(reference.0).ok()?.checked_add(offset)?;
        u64::try_from(full).ok().map(FullXid)
    }
}

impl fmt::Display for FullXid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A transaction as a target names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Xid {
    /// A 32-bit value (as `xmin` shows it, or any value below 2³²): whatever
    /// its epoch, like PostgreSQL's `recovery_target_xid`.
    Bare(u32),
    /// A 64-bit value above 2³² (from `pg_current_xact_id()` after the
    /// first wraparound): this epoch only.
    Full(FullXid),
}

impl Xid {
    /// The 32-bit xid that the WAL and PostgreSQL compare.
    pub fn xid(self) -> u32 {
        match self {
            Xid::Bare(xid) => xid,
            Xid::Full(full) => full.xid(),
        }
    }

    /// The epoch the target insists on, if it named one.
    pub fn epoch(self) -> Option<u32> {
        match self {
            Xid::Bare(_) => None,
            Xid::Full(full) => Some(full.epoch()),
        }
    }

    /// The value as the user wrote it.
    pub fn as_given(self) -> u64 {
        match self {
            Xid::Bare(xid) => u64::from(xid),
            Xid::Full(full) => full.value(),
        }
    }

    /// True when `full` (a transaction found in the WAL) is this one.
    pub fn is(self, full: FullXid) -> bool {
        match self {
            Xid::Bare(xid) => full.xid() == xid,
            Xid::Full(wanted) => full == wanted,
        }
    }
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Xid::Bare(xid) => write!(f, "{xid}"),
            Xid::Full(full) => write!(f, "{full} (xid {} of epoch {})", full.xid(), full.epoch()),
        }
    }
}

impl std::str::FromStr for Xid {
    type Err = String;

    /// Plain digits: a 32-bit xid, or a 64-bit one with its epoch.
    fn from_str(value: &str) -> Result<Xid, String> {
        let expected = format!(
            "expected a whole number from {FIRST_NORMAL_XID} to {}: a 32-bit xid, or the 64-bit value of pg_current_xact_id() with its epoch",
            u64::MAX
        );
        // u64::from_str would accept `+5`; a transaction ID is plain digits.
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(expected);
        }
        let full = value.parse::<u64>().map_err(|_| {
            format!(
                "{value} is larger than the largest 64-bit transaction ID, {}",
                u64::MAX
            )
        })?;
        let full = FullXid(full);
        if full.xid() < FIRST_NORMAL_XID {
            return Err(match full.epoch() {
                0 => format!(
                    "transaction IDs 0, 1 and 2 are reserved by PostgreSQL and never belong to a transaction; {expected}"
                ),
                epoch => format!(
                    "{value} is xid {} of epoch {epoch}, and xids 0, 1 and 2 are reserved by PostgreSQL in every epoch: no transaction ever has this ID; {expected}",
                    full.xid()
                ),
            });
        }
        Ok(match u32::try_from(full.0) {
            Ok(xid) => Xid::Bare(xid),
            Err(_) => Xid::Full(full),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_forms() {
        assert_eq!("727".parse::<Xid>(), Ok(Xid::Bare(727)));
        assert_eq!("4294967295".parse::<Xid>(), Ok(Xid::Bare(u32::MAX)));
        let full: Xid = "4294968023".parse().unwrap();
        assert_eq!(full, Xid::Full(FullXid::new(4294968023)));
        assert_eq!((full.xid(), full.epoch()), (727, Some(1)));
        assert_eq!(full.as_given(), 4294968023);
        assert_eq!(full.to_string(), "4294968023 (xid 727 of epoch 1)");
        assert_eq!(Xid::Bare(727).epoch(), None);
        assert!(full.is(FullXid::new(4294968023)));
        assert!(!full.is(FullXid::new(727)));
        assert!(Xid::Bare(727).is(FullXid::new(4294968023)));
        assert!(Xid::Bare(727).is(FullXid::new(727)));
    }

    #[test]
    fn reserved_and_malformed() {
        for (text, words) in [
            ("0", "reserved"),
            ("2", "reserved"),
            ("4294967296", "reserved by PostgreSQL in every epoch"),
            ("4294967298", "xid 2 of epoch 1"),
            ("18446744073709551616", "larger than"),
            ("", "whole number"),
            ("+5", "whole number"),
            ("-1", "whole number"),
            ("1e9", "whole number"),
        ] {
            let error = text.parse::<Xid>().unwrap_err();
            assert!(error.contains(words), "{text}: {error}");
        }
    }

    #[test]
    fn widening_takes_the_nearest_epoch() {
        let next = FullXid::new((1 << 32) + 727);
        assert_eq!(
            FullXid::widen(next, 700),
            Some(FullXid::new((1 << 32) + 700))
        );
        assert_eq!(
            FullXid::widen(next, 900),
            Some(FullXid::new((1 << 32) + 900))
        );
        // Just before the wrap: epoch 0.
        assert_eq!(
            FullXid::widen(next, u32::MAX - 10),
            Some(FullXid::new(u64::from(u32::MAX - 10)))
        );
        // Before epoch 0 there is nothing.
        assert_eq!(FullXid::widen(FullXid::new(800), u32::MAX - 10), None);
        assert_eq!(
            FullXid::widen(FullXid::new(800), 727),
            Some(FullXid::new(727))
        );
    }
}
