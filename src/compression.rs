//! Compressed files, recognised by their suffix, read and written as streams.
//!
//! Decoders never make a temporary uncompressed copy: they wrap the file and
//! yield the uncompressed bytes as they are read. Every decoder reads
//! concatenated streams (`cat a.gz b.gz`, several zstd or lz4 frames) the way
//! the standard command-line tools do, and a truncated file is an error, never
//! a silently short result.

use std::io::{self, BufReader, Read, Write};

/// How a file in a backup or the archive is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
    Zstd,
    Gzip,
    Bzip2,
    Xz,
}

/// Buffer between the file and a decoder: large reads keep system calls few.
const READ_BUFFER: usize = 256 * 1024;

impl Compression {
    /// Every compression `pitr` reads, in order of preference when one file
    /// is stored several ways: plain first, then the fastest to decode.
    pub const ALL: [Compression; 6] = [
        Compression::None,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Xz,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Lz4 => ".lz4",
            Compression::Zstd => ".zst",
            Compression::Gzip => ".gz",
            Compression::Bzip2 => ".bz2",
            Compression::Xz => ".xz",
        }
    }

    /// The name used in messages and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
        }
    }

    /// Rank in [`Compression::ALL`]: lower is preferred.
    pub fn preference(self) -> usize {
        Compression::ALL
            .iter()
            .position(|c| *c == self)
            .unwrap_or(usize::MAX)
    }

    /// Splits a known compression suffix off a file name.
    pub fn split_name(name: &str) -> (&str, Compression) {
        for compression in Compression::ALL {
            if compression == Compression::None {
                continue;
            }
            if let Some(stem) = name.strip_suffix(compression.suffix()) {
                return (stem, compression);
            }
        }
        (name, Compression::None)
    }

    /// Wraps a reader so that it yields the uncompressed bytes.
    pub fn decoder<'a, R: Read + 'a>(self, reader: R) -> io::Result<Box<dyn Read + 'a>> {
        let buffered = || BufReader::with_capacity(READ_BUFFER, reader);
        Ok(match self {
            Compression::None => Box::new(buffered()),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered())),
            Compression::Lz4 => Box::new(Lz4Decoder::new(buffered())),
            Compression::Zstd => {
                let mut decoder = zstd::stream::read::Decoder::with_buffer(buffered())?;
                // zstd --long and pg_basebackup's `zstd:long` use windows
                // above the default limit of 128 MiB; accept what the format
                // allows instead of failing in the middle of a restore.
                decoder.window_log_max(31)?;
                Box::new(decoder)
            }
            Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered())),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(buffered())),
        })
    }

    /// Wraps a writer so that what is written to it is stored compressed.
    /// `level` is the codec's own scale (zstd 1..=22, gzip/bzip2 1..=9, xz
    /// 0..=9); `None` takes [`Compression::default_level`]. lz4 has no levels.
    /// Call [`Encoder::finish`] to write the end of the stream.
    pub fn encoder<W: Write>(self, writer: W, level: Option<i32>) -> io::Result<Encoder<W>> {
        let level = match level {
            Some(level) => {
                self.check_level(level)?;
                level
            }
            None => self.default_level(),
        };
        // Levels are checked above, so the casts cannot wrap.
        let inner = match self {
            Compression::None => EncoderInner::None(writer),
            Compression::Gzip => EncoderInner::Gzip(flate2::write::GzEncoder::new(
                writer,
                flate2::Compression::new(level as u32),
            )),
            Compression::Lz4 => {
                // The content checksum lets `lz4 -t` and every reader detect
                // a damaged file; the lz4 command-line tool writes it too.
                let info = lz4_flex::frame::FrameInfo::new()
                    .content_checksum(true)
                    .block_size(lz4_flex::frame::BlockSize::Max4MB);
                EncoderInner::Lz4(lz4_flex::frame::FrameEncoder::with_frame_info(info, writer))
            }
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(writer, level)?;
                // As the zstd command-line tool does: a damaged archive file
                // must be detected when it is read back.
                encoder.include_checksum(true)?;
                EncoderInner::Zstd(encoder)
            }
            Compression::Bzip2 => EncoderInner::Bzip2(bzip2::write::BzEncoder::new(
                writer,
                bzip2::Compression::new(level as u32),
            )),
            Compression::Xz => {
                EncoderInner::Xz(liblzma::write::XzEncoder::new(writer, level as u32))
            }
        };
        Ok(Encoder { inner })
    }

    /// The level used when none is given. For zstd and gzip it is 1, not
    /// the tools' 3 and 6: measured on WAL with `bench/wal_push.sh` (2 cores,
    /// pgbench), zstd 1 costs about a third less CPU per segment than zstd 3
    /// for files 0-14% larger, and the one archiver process must keep up
    /// with a server that uses every core. bzip2 and xz are for reading
    /// archives others wrote; their levels are the tools' defaults.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::None | Compression::Lz4 => 0,
            Compression::Zstd => 1,
            Compression::Gzip => 1,
            Compression::Bzip2 => 9,
            Compression::Xz => 6,
        }
    }

    fn check_level(self, level: i32) -> io::Result<()> {
        let range = match self {
            Compression::None | Compression::Lz4 => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} compression has no levels; leave out the level",
                        self.name()
                    ),
                ))
            }
            Compression::Zstd => 1..=22,
            Compression::Gzip | Compression::Bzip2 => 1..=9,
            Compression::Xz => 0..=9,
        };
        if range.contains(&level) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} compression level {level} is out of range: use {} to {}",
                    self.name(),
                    range.start(),
                    range.end()
                ),
            ))
        }
    }
}

/// A compressing writer made by [`Compression::encoder`].
pub struct Encoder<W: Write> {
    inner: EncoderInner<W>,
}

enum EncoderInner<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Bzip2(bzip2::write::BzEncoder<W>),
    Xz(liblzma::write::XzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// Writes the end of the compressed stream and returns the writer,
    /// flushed, so that the caller can sync it.
    pub fn finish(self) -> io::Result<W> {
        let mut writer = match self.inner {
            EncoderInner::None(writer) => writer,
            EncoderInner::Gzip(encoder) => encoder.finish()?,
            EncoderInner::Lz4(encoder) => encoder.finish().map_err(io::Error::other)?,
            EncoderInner::Zstd(encoder) => encoder.finish()?,
            EncoderInner::Bzip2(encoder) => encoder.finish()?,
            EncoderInner::Xz(encoder) => encoder.finish()?,
        };
        writer.flush()?;
        Ok(writer)
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            EncoderInner::None(writer) => writer.write(buf),
            EncoderInner::Gzip(encoder) => encoder.write(buf),
            EncoderInner::Lz4(encoder) => encoder.write(buf),
            EncoderInner::Zstd(encoder) => encoder.write(buf),
            EncoderInner::Bzip2(encoder) => encoder.write(buf),
            EncoderInner::Xz(encoder) => encoder.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            EncoderInner::None(writer) => writer.flush(),
            EncoderInner::Gzip(encoder) => encoder.flush(),
            EncoderInner::Lz4(encoder) => encoder.flush(),
            EncoderInner::Zstd(encoder) => encoder.flush(),
            EncoderInner::Bzip2(encoder) => encoder.flush(),
            EncoderInner::Xz(encoder) => encoder.flush(),
        }
    }
}

/// Counts the bytes taken from a reader.
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// lz4_flex's frame decoder returns 0 at the end of each frame, which reads
/// as the end of the file; the lz4 tool decodes concatenated frames, so this
/// goes on to the next frame until the file itself is exhausted.
struct Lz4Decoder<R: Read> {
    frames: lz4_flex::frame::FrameDecoder<CountingReader<R>>,
}

impl<R: Read> Lz4Decoder<R> {
    fn new(reader: R) -> Lz4Decoder<R> {
        Lz4Decoder {
            frames: lz4_flex::frame::FrameDecoder::new(CountingReader {
                inner: reader,
                count: 0,
            }),
        }
    }
}

impl<R: Read> Read for Lz4Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let before = self.frames.get_ref().count;
            let n = self.frames.read(buf)?;
            // Nothing produced and nothing consumed: the end of the file.
            // Nothing produced but input consumed: the end of a frame.
            if n > 0 || self.frames.get_ref().count == before {
                return Ok(n);
            }
        }
    }
}

/// Whether two streams yield the same bytes. Reads both to the end only when
/// they agree; stops at the first difference.
pub fn same_contents(a: &mut dyn Read, b: &mut dyn Read) -> io::Result<bool> {
    const CHUNK: usize = 128 * 1024;
    let mut left = vec![0u8; CHUNK];
    let mut right = vec![0u8; CHUNK];
    loop {
        let n = read_full(a, &mut left)?;
        let m = read_full(b, &mut right)?;
        if n != m || left[..n] != right[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WAL-like data: runs of zeros, repeated records and some noise, so
    /// every codec has something to compress.
    fn sample(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..len)
            .map(|i| {
                if (i / 8192) % 3 == 0 {
                    0
                } else if (i / 512) % 2 == 0 {
                    (i % 97) as u8
                } else {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                }
            })
            .collect()
    }

    fn compress(compression: Compression, data: &[u8]) -> Vec<u8> {
        let mut encoder = compression.encoder(Vec::new(), None).unwrap();
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn decompress(compression: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        compression.decoder(data)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn every_compression_round_trips() {
        for len in [0, 1, 8192, 1 << 20] {
            let data = sample(len);
            for compression in Compression::ALL {
                let packed = compress(compression, &data);
                assert_eq!(
                    decompress(compression, &packed).unwrap(),
                    data,
                    "{compression:?}, {len} bytes"
                );
                if len == 1 << 20 && compression != Compression::None {
                    assert!(packed.len() < data.len() / 2, "{compression:?} compresses");
                }
            }
        }
    }

    #[test]
    fn magic_bytes_are_the_standard_ones() {
        let data = sample(100_000);
        let magic: [(Compression, &[u8]); 5] = [
            (Compression::Gzip, &[0x1f, 0x8b]),
            (Compression::Lz4, &[0x04, 0x22, 0x4d, 0x18]),
            (Compression::Zstd, &[0x28, 0xb5, 0x2f, 0xfd]),
            (Compression::Bzip2, b"BZh"),
            (Compression::Xz, &[0xfd, b'7', b'z', b'X', b'Z', 0x00]),
        ];
        for (compression, magic) in magic {
            let packed = compress(compression, &data);
            assert!(packed.starts_with(magic), "{compression:?}");
        }
    }

    #[test]
    fn concatenated_streams_are_read_whole() {
        let a = sample(70_000);
        let b: Vec<u8> = sample(50_000).into_iter().rev().collect();
        for compression in Compression::ALL {
            let mut packed = compress(compression, &a);
            packed.extend(compress(compression, &[]));
            packed.extend(compress(compression, &b));
            let expected = [a.clone(), b.clone()].concat();
            assert_eq!(
                decompress(compression, &packed).unwrap(),
                expected,
                "{compression:?}"
            );
        }
    }

    #[test]
    fn truncated_files_are_errors_not_short_reads() {
        let data = sample(300_000);
        for compression in Compression::ALL {
            if compression == Compression::None {
                continue;
            }
            let packed = compress(compression, &data);
            for cut in [1, packed.len() / 3, packed.len() / 2, packed.len() - 1] {
                let result = decompress(compression, &packed[..cut]);
                assert!(
                    result.is_err(),
                    "{compression:?} cut at {cut} of {} gave {} bytes",
                    packed.len(),
                    result.map(|d| d.len()).unwrap_or(0)
                );
            }
        }
    }

    #[test]
    fn suffixes_split_and_rank() {
        assert_eq!(
            Compression::split_name("000000010000000000000003.zst"),
            ("000000010000000000000003", Compression::Zstd)
        );
        assert_eq!(
            Compression::split_name("base.tar.lz4"),
            ("base.tar", Compression::Lz4)
        );
        assert_eq!(
            Compression::split_name("00000002.history.xz"),
            ("00000002.history", Compression::Xz)
        );
        assert_eq!(
            Compression::split_name("000000010000000000000003.gz.partial"),
            ("000000010000000000000003.gz.partial", Compression::None)
        );
        for compression in Compression::ALL {
            let name = format!("x{}", compression.suffix());
            assert_eq!(Compression::split_name(&name), ("x", compression));
        }
        assert!(Compression::None.preference() < Compression::Lz4.preference());
        assert!(Compression::Lz4.preference() < Compression::Gzip.preference());
    }

    #[test]
    fn levels_are_checked() {
        {
            let error = Compression::Zstd
                .encoder(Vec::new(), Some(23))
                .err()
                .expect("must fail")
                .to_string();
            assert!(error.contains("level 23 is out of range"), "{error}");
        }
        {
            let error = Compression::Gzip
                .encoder(Vec::new(), Some(0))
                .err()
                .expect("must fail")
                .to_string();
            assert!(error.contains("level 0 is out of range"), "{error}");
        }
        {
            let error = Compression::Lz4
                .encoder(Vec::new(), Some(1))
                .err()
                .expect("must fail")
                .to_string();
            assert!(error.contains("has no levels"), "{error}");
        }
        assert!(Compression::Zstd.encoder(Vec::new(), Some(19)).is_ok());
    }

    #[test]
    fn comparison_of_streams() {
        let data = sample(300_000);
        let mut other = data.clone();
        other[299_999] ^= 1;
        let packed = compress(Compression::Zstd, &data);
        let mut a = Compression::Zstd.decoder(&packed[..]).unwrap();
        assert!(same_contents(&mut a, &mut &data[..]).unwrap());
        let mut a = Compression::Zstd.decoder(&packed[..]).unwrap();
        assert!(!same_contents(&mut a, &mut &other[..]).unwrap());
        let mut a = Compression::Zstd.decoder(&packed[..]).unwrap();
        assert!(!same_contents(&mut a, &mut &data[..1000]).unwrap());
    }

    /// Runs `tool args` with `input` on its stdin; `None` when the tool is
    /// not installed. The bytes go through pipes, not files.
    fn run_tool(tool: &str, args: &[&str], input: &[u8]) -> Option<std::process::Output> {
        use std::process::{Command, Stdio};
        let mut child = match Command::new(tool)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
            Err(error) => panic!("{tool}: {error}"),
        };
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        // Written from a thread: the tool's output fills its pipe meanwhile.
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        Some(output)
    }

    /// The standard tools read what `pitr` writes, and `pitr` reads what they
    /// write. Skipped for a tool that is not installed.
    #[test]
    fn standard_tools_agree() {
        let data = sample(512 * 1024);
        let tools = [
            (Compression::Gzip, "gzip"),
            (Compression::Lz4, "lz4"),
            (Compression::Zstd, "zstd"),
            (Compression::Bzip2, "bzip2"),
            (Compression::Xz, "xz"),
        ];
        for (compression, tool) in tools {
            let Some(made_by_tool) = run_tool(tool, &["-c", "-q"], &data) else {
                // Seen on the terminal (libtest captures eprintln!), and
                // a failure under PITR_TEST_STRICT=1 unless allowed, as
                // tests/common's `require` does for integration tests.
                let message = format!("SKIPPED: standard_tools_agree: `{tool}` is not installed");
                let _ = writeln!(std::io::stderr(), "{message}");
                let allowed = std::env::var("PITR_TEST_ALLOWED_SKIPS").is_ok_and(|list| {
                    list.split(|c: char| c == ',' || c.is_whitespace())
                        .any(|name| name == "standard_tools_agree")
                });
                let strict = std::env::var("PITR_TEST_STRICT").is_ok_and(|v| v == "1");
                assert!(!strict || allowed, "{message} (PITR_TEST_STRICT=1)");
                continue;
            };
            assert!(made_by_tool.status.success(), "{tool} failed");
            assert_eq!(
                decompress(compression, &made_by_tool.stdout).unwrap(),
                data,
                "{tool}"
            );

            let output =
                run_tool(tool, &["-d", "-c", "-q"], &compress(compression, &data)).unwrap();
            assert!(
                output.status.success(),
                "{tool} -d: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(output.stdout == data, "{tool} -d read other bytes");
        }
    }
}
