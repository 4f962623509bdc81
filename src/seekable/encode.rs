//! Re-encoding a tar stream as independent zstd frames, and building its
//! index on the way: one pass over the tar, one over each frame's bytes.
//!
//! The tar is walked block by block rather than through the `tar` crate's
//! reader, because the output must hold every input byte exactly where it
//! was (headers, padding, the end-of-archive blocks and whatever follows
//! them), and the frames must begin exactly at each member's first header.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::index::{Frame, Index, Member};
use super::{page_checksum, FRAME_BYTES, PAGE_BYTES};

const BLOCK: usize = 512;

/// zstd's level for seekable backups: pg_basebackup's default (`zstd` is
/// level 3 there too), so a seekable backup is about the size of a
/// `--compress=zstd` one.
pub const LEVEL: i32 = 3;

/// Reads the tar `input` to its end, writes it to `output` as zstd frames,
/// and returns its index. `manifest_sha256` is recorded in the index.
pub fn encode(
    input: &mut dyn Read,
    output: &mut dyn Write,
    manifest_sha256: Option<[u8; 32]>,
) -> io::Result<Index> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    std::thread::scope(|scope| {
        let mut frames = FrameWriter::start(scope, output, workers);
        walk(input, &mut frames, manifest_sha256)
    })
}

/// Walks the tar, cutting it into frames.
fn walk(
    input: &mut dyn Read,
    frames: &mut FrameWriter<'_>,
    manifest_sha256: Option<[u8; 32]>,
) -> io::Result<Index> {
    let mut members = Vec::new();
    let mut offset = 0u64;
    // Extension headers (GNU long names, pax) that precede a member's own
    // header: they go into its first frame.
    let mut pending = Vec::new();
    let mut long_name: Option<String> = None;
    loop {
        if crate::interrupt::requested() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        let mut block = [0u8; BLOCK];
        if !read_block(input, &mut block)? {
            // No end-of-archive blocks: end the stream where the tar ends.
            if !pending.is_empty() {
                return Err(damaged("it ends after an extension header"));
            }
            let end = frames.frame(&[], offset)?;
            return frames.index(members, end, manifest_sha256, offset);
        }
        if block.iter().all(|b| *b == 0) {
            // The end of the archive: these blocks and anything after them
            // (pg_basebackup pads nothing, other writers do) in one frame.
            let mut rest = block.to_vec();
            input.read_to_end(&mut rest)?;
            if !pending.is_empty() {
                return Err(damaged("it ends after an extension header"));
            }
            let end = frames.frame(&rest, offset)?;
            offset += rest.len() as u64;
            return frames.index(members, end, manifest_sha256, offset);
        }
        let header = tar::Header::from_byte_slice(&block);
        let size = header
            .entry_size()
            .map_err(|_| damaged("a header has an unreadable size"))?;
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let typeflag = block[156];
        if matches!(typeflag, b'L' | b'K' | b'x' | b'g') {
            // Small by nature; their data names the next member.
            let mut data =
                vec![0u8; usize::try_from(padded).map_err(|_| damaged("huge extension header"))?];
            input.read_exact(&mut data).map_err(truncated)?;
            let text = &data[..size as usize];
            match typeflag {
                b'L' => long_name = Some(c_string(text)),
                b'x' => {
                    if let Some(path) = pax_path(text) {
                        long_name = Some(path);
                    }
                }
                _ => {}
            }
            pending.extend_from_slice(&block);
            pending.extend_from_slice(&data);
            offset += (BLOCK + data.len()) as u64;
            continue;
        }
        let header_offset = offset - pending.len() as u64;
        let path = match long_name.take() {
            Some(name) => name,
            None => String::from_utf8(header.path_bytes().into_owned())
                .map_err(|_| damaged("a member path is not UTF-8"))?,
        };
        if path.len() > u16::MAX as usize {
            return Err(damaged("a member path is longer than 65535 bytes"));
        }
        let mode = header.mode().unwrap_or(0);
        offset += BLOCK as u64;
        let data_offset = offset;
        pending.extend_from_slice(&block);

        // Data in chunks of FRAME_BYTES; the first shares the header's
        // frame, the padding goes with the last.
        let mut hasher = Sha256::new();
        let mut pages = Vec::with_capacity(size.div_ceil(PAGE_BYTES) as usize);
        let mut member_frames = Vec::new();
        let mut left = size;
        // The headers began the first frame.
        let mut frame_start = header_offset;
        let mut chunk = std::mem::take(&mut pending);
        loop {
            let take = left.min(FRAME_BYTES) as usize;
            let start = chunk.len();
            chunk.resize(start + take, 0);
            input.read_exact(&mut chunk[start..]).map_err(truncated)?;
            let data = &chunk[start..];
            hasher.update(data);
            pages.extend(data.chunks(PAGE_BYTES as usize).map(page_checksum));
            left -= take as u64;
            if left == 0 {
                let start = chunk.len();
                chunk.resize(start + (padded - size) as usize, 0);
                input.read_exact(&mut chunk[start..]).map_err(truncated)?;
            }
            member_frames.push(frames.frame(&chunk, frame_start)?);
            frame_start += chunk.len() as u64;
            chunk.clear();
            if left == 0 {
                break;
            }
        }
        offset = frame_start;
        members.push(Member {
            path,
            typeflag,
            mode,
            size,
            header_offset,
            data_offset,
            sha256: hasher.finalize().into(),
            frames: member_frames,
            pages,
        });
    }
}

/// Compresses frames on every core and writes them in order, each an
/// independent frame with its content size and checksum (as the zstd tool
/// writes them), remembering where each one lands. At most `limit` frames
/// (about 1 MiB each) are in flight, whatever the size of the tar.
///
/// Until [`FrameWriter::index`], the frames handed out are placeholders
/// whose `stored_offset` is their sequence number: where a frame lands is
/// known only once the frames before it are written.
struct FrameWriter<'a> {
    output: &'a mut dyn Write,
    jobs: Option<SyncSender<(usize, Vec<u8>)>>,
    results: Receiver<(usize, io::Result<Vec<u8>>)>,
    /// Compressed frames that arrived before their turn.
    ready: BTreeMap<usize, Vec<u8>>,
    /// Every frame by sequence number, completed as it is written.
    frames: Vec<Frame>,
    written: usize,
    stored: u64,
    limit: usize,
}

impl<'a> FrameWriter<'a> {
    fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        output: &'a mut dyn Write,
        workers: usize,
    ) -> FrameWriter<'a> {
        let limit = 2 * workers.max(1);
        let (jobs, queue) = sync_channel::<(usize, Vec<u8>)>(limit);
        let (done, results) = channel();
        let queue = std::sync::Arc::new(Mutex::new(queue));
        for _ in 0..workers.max(1) {
            let (queue, done) = (queue.clone(), done.clone());
            scope.spawn(move || {
                let mut compressor = zstd::bulk::Compressor::new(LEVEL).and_then(|mut c| {
                    c.include_checksum(true)?;
                    c.include_contentsize(true)?;
                    Ok(c)
                });
                loop {
                    // The lock is held only to take the next job.
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, bytes)) = job else {
                        return; // no more frames
                    };
                    let result = match &mut compressor {
                        Ok(compressor) => compressor.compress(&bytes),
                        Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
                    };
                    if done.send((seq, result)).is_err() {
                        return;
                    }
                }
            });
        }
        FrameWriter {
            output,
            jobs: Some(jobs),
            results,
            ready: BTreeMap::new(),
            frames: Vec::new(),
            written: 0,
            stored: 0,
            limit,
        }
    }

    /// Queues `bytes` (which begin at `offset` in the tar) as one frame.
    fn frame(&mut self, bytes: &[u8], offset: u64) -> io::Result<Frame> {
        let seq = self.frames.len();
        let frame = Frame {
            stored_offset: seq as u64,
            stored_len: 0,
            offset,
            len: bytes.len() as u64,
        };
        self.frames.push(frame);
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send((seq, bytes.to_vec())).map_err(|_| stopped())?;
        while self.frames.len() - self.written > self.limit {
            self.receive()?;
        }
        Ok(frame)
    }

    /// Takes one compressed frame, and writes every frame whose turn came.
    fn receive(&mut self) -> io::Result<()> {
        let (seq, result) = self.results.recv().map_err(|_| stopped())?;
        self.ready.insert(seq, result?);
        while let Some(compressed) = self.ready.remove(&self.written) {
            self.output.write_all(&compressed)?;
            let frame = &mut self.frames[self.written];
            frame.stored_offset = self.stored;
            frame.stored_len = compressed.len() as u64;
            self.stored += compressed.len() as u64;
            self.written += 1;
        }
        Ok(())
    }

    /// Writes the frames still in flight and returns the index, with every
    /// placeholder replaced by where its frame landed.
    fn index(
        &mut self,
        mut members: Vec<Member>,
        end: Frame,
        manifest_sha256: Option<[u8; 32]>,
        tar_bytes: u64,
    ) -> io::Result<Index> {
        self.jobs = None;
        while self.written < self.frames.len() {
            self.receive()?;
        }
        let placed = |frame: &Frame| self.frames[frame.stored_offset as usize];
        for member in &mut members {
            for frame in &mut member.frames {
                *frame = placed(frame);
            }
        }
        Ok(Index {
            page_bytes: PAGE_BYTES as u32,
            frame_bytes: FRAME_BYTES as u32,
            manifest_sha256,
            tar_bytes,
            stored_bytes: self.stored,
            members,
            end: placed(&end),
        })
    }
}

fn stopped() -> io::Error {
    io::Error::other("the compressing threads stopped")
}

/// Reads one block; `false` at a clean end of the stream.
fn read_block(input: &mut dyn Read, block: &mut [u8; BLOCK]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < BLOCK {
        match input.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(damaged("it ends in the middle of a header")),
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(true)
}

fn damaged(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the tar is damaged: {why}"),
    )
}

fn truncated(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        damaged("it ends in the middle of a member")
    } else {
        error
    }
}

/// A NUL-terminated name.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The `path` record of a pax extended header (`<len> path=<value>\n`).
fn pax_path(text: &[u8]) -> Option<String> {
    text.split(|b| *b == b'\n').find_map(|record| {
        let (_, rest) = record.split_at(record.iter().position(|b| *b == b' ')? + 1);
        let value = rest.strip_prefix(b"path=")?;
        String::from_utf8(value.to_vec()).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with small files, a directory, a file of several frames with
    /// a ragged end, an empty file and a long name (a GNU extension header).
    fn sample_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], mode: u32, kind: tar::EntryType| {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_entry_type(kind);
            builder.append_data(&mut header, path, data).unwrap();
        };
        add("PG_VERSION", b"15\n", 0o600, tar::EntryType::Regular);
        add("base", b"", 0o700, tar::EntryType::Directory);
        let big: Vec<u8> = (0..(2 * FRAME_BYTES + 3 * PAGE_BYTES + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        add("base/16384", &big, 0o600, tar::EntryType::Regular);
        add("empty", b"", 0o640, tar::EntryType::Regular);
        add(
            &format!("{}/file", "d".repeat(120)),
            b"long",
            0o600,
            tar::EntryType::Regular,
        );
        builder.into_inner().unwrap()
    }

    #[test]
    fn the_frames_decompress_to_the_tar_as_one_stream_and_each_alone() {
        let tar = sample_tar();
        let mut stored = Vec::new();
        let index = encode(&mut tar.as_slice(), &mut stored, Some([7; 32])).unwrap();
        // One standard zstd stream, byte for byte the tar.
        assert_eq!(zstd::stream::decode_all(stored.as_slice()).unwrap(), tar);
        assert_eq!(index.tar_bytes, tar.len() as u64);
        assert_eq!(index.stored_bytes, stored.len() as u64);
        let paths: Vec<&str> = index.members.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths[..4], ["PG_VERSION", "base", "base/16384", "empty"]);
        assert_eq!(paths[4], format!("{}/file", "d".repeat(120)));
        // Frames tile the tar with no gap, each decompressing alone.
        let mut next = 0;
        let mut frames: Vec<Frame> = index
            .members
            .iter()
            .flat_map(|m| m.frames.clone())
            .collect();
        frames.push(index.end);
        for frame in &frames {
            assert_eq!(frame.offset, next);
            let range = frame.stored_range();
            let alone = zstd::stream::decode_all(&stored[range.start as usize..range.end as usize])
                .unwrap();
            assert_eq!(
                alone,
                tar[frame.offset as usize..(frame.offset + frame.len) as usize]
            );
            next += frame.len;
        }
        assert_eq!(next, tar.len() as u64);
        for member in &index.members {
            assert_eq!(member.frames[0].offset, member.header_offset);
            let data =
                &tar[member.data_offset as usize..(member.data_offset + member.size) as usize];
            let digest: [u8; 32] = Sha256::digest(data).into();
            assert_eq!(member.sha256, digest, "{}", member.path);
            let pages: Vec<u64> = data
                .chunks(PAGE_BYTES as usize)
                .map(page_checksum)
                .collect();
            assert_eq!(member.pages, pages);
        }
        let big = &index.members[2];
        assert_eq!(big.frames.len(), 3, "2 MiB + a bit: three frames");
        assert_eq!(big.pages.len(), 2 * 128 + 4);
        // The long name came from an extension header, in the member's frame.
        assert!(index.members[4].data_offset - index.members[4].header_offset > 512);
    }

    #[test]
    fn the_index_round_trips_and_a_damaged_one_is_refused() {
        let tar = sample_tar();
        let index = encode(&mut tar.as_slice(), &mut Vec::new(), None).unwrap();
        let bytes = index.to_bytes();
        assert_eq!(Index::parse(&bytes).unwrap(), index);
        let mut damaged = bytes.clone();
        damaged[40] ^= 1;
        let error = Index::parse(&damaged).unwrap_err().to_string();
        assert!(error.contains("damaged"), "{error}");
        assert!(Index::parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(Index::parse(b"not an index at all, but long enough to have a digest").is_err());
    }

    #[test]
    fn a_truncated_tar_is_an_error() {
        let tar = sample_tar();
        let error = encode(&mut &tar[..2000], &mut Vec::new(), None).unwrap_err();
        assert!(error.to_string().contains("damaged"), "{error}");
    }
}
