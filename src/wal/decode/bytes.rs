//! Bounds-checked little-endian reading of record payloads.
//!
//! Every parser in this module reads through [`Bytes`], so a length field that
//! points past the end of its record turns into `None` (and then an error),
//! never into an out-of-bounds index.

/// A forward-only reader over a byte slice.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Bytes<'a> {
        Bytes { rest: bytes }
    }

    /// The bytes not read yet.
    pub(super) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(super) fn len(&self) -> usize {
        self.rest.len()
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(super) fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    pub(super) fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    /// A C string: the bytes up to the first NUL, which is consumed too.
    pub(super) fn c_string(&mut self) -> Option<&'a [u8]> {
        let len = self.rest.iter().position(|&b| b == 0)?;
        let text = self.take(len)?;
        self.take(1)?;
        Some(text)
    }
}

/// The little-endian `u32` at `at`, if the slice is long enough.
#[inline]
pub(super) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    Some(u32::from_le_bytes(bytes.get(at..end)?.try_into().ok()?))
}

/// The little-endian `u16` at `at`, if the slice is long enough.
#[inline]
pub(super) fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    Some(u16::from_le_bytes(bytes.get(at..end)?.try_into().ok()?))
}

/// The little-endian `u64` at `at`, if the slice is long enough.
#[inline]
pub(super) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(8)?;
    Some(u64::from_le_bytes(bytes.get(at..end)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_stops_at_the_end() {
        let data = [1, 0, 2, 0, 0, 0, b'a', b'b', 0, 9];
        let mut bytes = Bytes::new(&data);
        assert_eq!(bytes.u16(), Some(1));
        assert_eq!(bytes.u32(), Some(2));
        assert_eq!(bytes.c_string(), Some(&b"ab"[..]));
        assert_eq!(bytes.len(), 1);
        assert_eq!(bytes.u16(), None);
        assert_eq!(bytes.u8(), Some(9));
        assert_eq!(bytes.u8(), None);
        assert_eq!(u32_at(&data, 7), None);
        assert_eq!(u32_at(&data, usize::MAX), None);
        assert_eq!(u16_at(&data, 2), Some(2));
    }

    #[test]
    fn c_string_needs_its_nul() {
        assert_eq!(Bytes::new(b"abc").c_string(), None);
    }
}
