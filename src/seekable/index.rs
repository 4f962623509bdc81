//! The index of a seekable tar: for each member its path, kind, mode,
//! size, SHA-256, frames and page checksums.
//!
//! Binary, not JSON lines: a 4.4 GiB cluster has about 580,000 pages, and
//! their checksums are 4.6 MB as 8-byte integers against twice that as hex
//! text, parsed without allocating a string per page. The format is
//! versioned (a magic and a version number first) and ends with the SHA-256
//! of everything before it, as `backup_manifest` ends with its own checksum:
//! a damaged or edited index is refused, never trusted for a restore. It
//! also records the SHA-256 of the backup's `backup_manifest`, which ties it
//! to that backup (pg_basebackup's manifest cannot list a file pitr adds).
//!
//! All integers are little-endian. Layout, version 1:
//!
//! ```text
//! magic "PITRSKIX" | version u16 | page_bytes u32 | frame_bytes u32
//! manifest_sha256 [32] (zeros: none) | tar_bytes u64 | stored_bytes u64
//! member_count u32, then per member:
//!   path_len u16 | path | typeflag u8 | mode u32 | size u64
//!   header_offset u64 | data_offset u64 | sha256 [32]
//!   frame_count u32, frame_count × frame | page_count u32, page_count × u64
//! end frame (the end-of-archive blocks)
//! sha256 of all the above [32]
//! frame = stored_offset u64 | stored_len u64 | offset u64 | len u64
//! ```

use std::io;

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"PITRSKIX";
const VERSION: u16 = 1;

/// One zstd frame: where it is in the compressed object (`stored_*`) and
/// which bytes of the tar it holds once decompressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub stored_offset: u64,
    pub stored_len: u64,
    pub offset: u64,
    pub len: u64,
}

impl Frame {
    /// The compressed bytes of this frame, for `StoreRead::open_range`.
    pub fn stored_range(&self) -> std::ops::Range<u64> {
        self.stored_offset..self.stored_offset + self.stored_len
    }
}

/// One member of the tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub path: String,
    /// The tar type flag (`b'0'` a file, `b'5'` a directory, ...).
    pub typeflag: u8,
    pub mode: u32,
    /// Bytes of data (0 for directories and links).
    pub size: u64,
    /// Where its first header block (or extension header) is in the tar.
    pub header_offset: u64,
    /// Where its data begins in the tar.
    pub data_offset: u64,
    /// SHA-256 of its data.
    pub sha256: [u8; 32],
    /// The frames holding its headers, data and padding, in order; the
    /// first begins at `header_offset`.
    pub frames: Vec<Frame>,
    /// One checksum per [`super::PAGE_BYTES`] of data (the last page may
    /// be short), see [`super::page_checksum`].
    pub pages: Vec<u64>,
}

impl Member {
    pub fn is_file(&self) -> bool {
        matches!(self.typeflag, b'0' | b'\0' | b'7')
    }
}

/// The index of one seekable tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    pub page_bytes: u32,
    pub frame_bytes: u32,
    /// SHA-256 of the backup's `backup_manifest` when it has one.
    pub manifest_sha256: Option<[u8; 32]>,
    /// Size of the tar, uncompressed.
    pub tar_bytes: u64,
    /// Size of the compressed object.
    pub stored_bytes: u64,
    pub members: Vec<Member>,
    /// The frame of the end-of-archive blocks.
    pub end: Frame,
}

impl Index {
    /// The index in its stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Out(Vec::with_capacity(
            128 + self
                .members
                .iter()
                .map(|m| 120 + m.path.len() + 32 * m.frames.len() + 8 * m.pages.len())
                .sum::<usize>(),
        ));
        out.bytes(MAGIC);
        out.u16(VERSION);
        out.u32(self.page_bytes);
        out.u32(self.frame_bytes);
        out.bytes(&self.manifest_sha256.unwrap_or([0; 32]));
        out.u64(self.tar_bytes);
        out.u64(self.stored_bytes);
        out.u32(self.members.len() as u32);
        for member in &self.members {
            out.u16(member.path.len() as u16);
            out.bytes(member.path.as_bytes());
            out.0.push(member.typeflag);
            out.u32(member.mode);
            out.u64(member.size);
            out.u64(member.header_offset);
            out.u64(member.data_offset);
            out.bytes(&member.sha256);
            out.u32(member.frames.len() as u32);
            for frame in &member.frames {
                out.frame(frame);
            }
            out.u32(member.pages.len() as u32);
            for page in &member.pages {
                out.u64(*page);
            }
        }
        out.frame(&self.end);
        let digest: [u8; 32] = Sha256::digest(&out.0).into();
        out.bytes(&digest);
        out.0
    }

    /// Reads a stored index, refusing one that is damaged, of another
    /// version, or not an index at all.
    pub fn parse(bytes: &[u8]) -> io::Result<Index> {
        let Some((body, digest)) = bytes.split_last_chunk::<32>() else {
            return Err(invalid("it is too short to be a pitr index"));
        };
        let mut input = In { bytes: body, at: 0 };
        if input.take(8)? != MAGIC {
            return Err(invalid("it is not a pitr index (wrong magic)"));
        }
        let version = input.u16()?;
        if version != VERSION {
            return Err(invalid(&format!(
                "it is index version {version}, and this pitr reads version {VERSION}: use a newer pitr"
            )));
        }
        let actual: [u8; 32] = Sha256::digest(body).into();
        if &actual != digest {
            return Err(invalid(
                "its SHA-256 does not match its contents: it is damaged",
            ));
        }
        let page_bytes = input.u32()?;
        let frame_bytes = input.u32()?;
        let manifest: [u8; 32] = input.array()?;
        let tar_bytes = input.u64()?;
        let stored_bytes = input.u64()?;
        let count = input.u32()?;
        let mut members = Vec::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let path_len = input.u16()? as usize;
            let path = String::from_utf8(input.take(path_len)?.to_vec())
                .map_err(|_| invalid("a member path is not UTF-8"))?;
            let typeflag = input.take(1)?[0];
            let mode = input.u32()?;
            let size = input.u64()?;
            let header_offset = input.u64()?;
            let data_offset = input.u64()?;
            let sha256 = input.array()?;
            let frames = (0..input.u32()?)
                .map(|_| input.frame())
                .collect::<io::Result<Vec<_>>>()?;
            let pages = (0..input.u32()?)
                .map(|_| input.u64())
                .collect::<io::Result<Vec<_>>>()?;
            members.push(Member {
                path,
                typeflag,
                mode,
                size,
                header_offset,
                data_offset,
                sha256,
                frames,
                pages,
            });
        }
        let end = input.frame()?;
        if input.at != body.len() {
            return Err(invalid("it has bytes after its end"));
        }
        Ok(Index {
            page_bytes,
            frame_bytes,
            manifest_sha256: (manifest != [0; 32]).then_some(manifest),
            tar_bytes,
            stored_bytes,
            members,
            end,
        })
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

struct Out(Vec<u8>);

impl Out {
    fn bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    fn u16(&mut self, value: u16) {
        self.bytes(&value.to_le_bytes());
    }
    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }
    fn frame(&mut self, frame: &Frame) {
        self.u64(frame.stored_offset);
        self.u64(frame.stored_len);
        self.u64(frame.offset);
        self.u64(frame.len);
    }
}

struct In<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl In<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| invalid("it ends in the middle of an entry"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }
    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }
    fn u16(&mut self) -> io::Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn frame(&mut self) -> io::Result<Frame> {
        Ok(Frame {
            stored_offset: self.u64()?,
            stored_len: self.u64()?,
            offset: self.u64()?,
            len: self.u64()?,
        })
    }
}
