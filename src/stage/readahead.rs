//! Decompression on the second core.
//!
//! Staging a compressed tar is two jobs of about equal weight: inflating the
//! stream, and parsing the tar, checksumming and writing the files. On one
//! thread they take turns; here a thread reads and decompresses the archive
//! into chunks, a bounded number ahead of the thread that writes, so both
//! cores work at once. Chunks are handed back for reuse, so memory stays at
//! `DEPTH` chunks whatever the size of the backup, and no page is faulted in
//! twice.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::compression::Compression;
use crate::interrupt;
use crate::repo::store::ObjectReader;

/// Bytes per chunk: large enough that the channel costs nothing per byte.
const CHUNK: usize = 1 << 20;
/// Chunks decompressed ahead of the writer.
const DEPTH: usize = 8;

/// The decompressed contents of an archive, read on another thread.
pub struct ReadAhead {
    chunks: Receiver<io::Result<Vec<u8>>>,
    spare: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
    /// Compressed bytes read so far, for the progress bar.
    consumed: Arc<AtomicU64>,
    finished: bool,
    handle: Option<JoinHandle<()>>,
}

/// Why a read failed on the decompressing thread.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Upstream(String);

impl ReadAhead {
    /// Starts reading and decompressing the stored stream `file` (an
    /// object opened through the store) on its own thread.
    pub fn new(file: ObjectReader, compression: Compression) -> io::Result<ReadAhead> {
        let (chunk_sender, chunks) = sync_channel::<io::Result<Vec<u8>>>(DEPTH);
        let (spare, spares) = sync_channel::<Vec<u8>>(DEPTH + 2);
        let consumed = Arc::new(AtomicU64::new(0));
        let counter = consumed.clone();
        let handle = std::thread::Builder::new()
            .name("decompress".into())
            .spawn(move || {
                let counting = Counting {
                    inner: file,
                    consumed: counter,
                };
                let mut decoder = match compression.decoder(counting) {
                    Ok(decoder) => decoder,
                    Err(error) => {
                        let _ = chunk_sender.send(Err(error));
                        return;
                    }
                };
                loop {
                    let mut chunk = spares
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                    match fill(&mut decoder, &mut chunk) {
                        Ok(0) => return,
                        Ok(_) => {
                            if chunk_sender.send(Ok(chunk)).is_err() {
                                return; // the writer stopped
                            }
                        }
                        Err(error) => {
                            let _ = chunk_sender.send(Err(error));
                            return;
                        }
                    }
                }
            })?;
        Ok(ReadAhead {
            chunks,
            spare,
            current: Vec::new(),
            position: 0,
            consumed,
            finished: false,
            handle: Some(handle),
        })
    }

    /// The count of compressed bytes consumed so far, for the progress bar
    /// (readable after the reader is handed to the tar parser).
    pub fn consumed(&self) -> Arc<AtomicU64> {
        self.consumed.clone()
    }
}

/// Reads until `chunk` holds `CHUNK` bytes or the stream ends. A reused
/// chunk keeps its length, so only a new one is zeroed (zeroing every
/// chunk took a fifth of this thread's time).
fn fill(reader: &mut dyn Read, chunk: &mut Vec<u8>) -> io::Result<usize> {
    chunk.resize(CHUNK, 0);
    let mut filled = 0;
    while filled < CHUNK {
        match reader.read(&mut chunk[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted && !interrupt::requested() => {
            }
            Err(error) => return Err(error),
        }
    }
    chunk.truncate(filled);
    Ok(filled)
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if interrupt::requested() {
            return Err(io::Error::other(super::Interrupted));
        }
        while self.position == self.current.len() {
            if self.finished {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.current, chunk);
                    self.position = 0;
                    if used.capacity() > 0 {
                        let _ = self.spare.try_send(used);
                    }
                }
                Ok(Err(error)) => {
                    self.finished = true;
                    // An io::Error cannot be cloned: keep its text and kind.
                    return Err(io::Error::new(error.kind(), Upstream(error.to_string())));
                }
                // The thread ended after the last chunk.
                Err(_) => self.finished = true,
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Dropping the receiver makes the thread's next send fail: it stops.
        let (_, empty) = sync_channel(0);
        drop(std::mem::replace(&mut self.chunks, empty));
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Counts compressed bytes and stops reading on Ctrl-C.
struct Counting {
    inner: ObjectReader,
    consumed: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if interrupt::requested() {
            return Err(io::Error::other(super::Interrupted));
        }
        let n = self.inner.read(buf)?;
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;
    use std::path::Path;

    impl ReadAhead {
        fn open(path: &Path, compression: Compression) -> io::Result<ReadAhead> {
            ReadAhead::new(Box::new(File::open(path)?), compression)
        }
    }

    fn round_trip(compression: Compression, data: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("data{}", compression.suffix()));
        let mut encoder = compression
            .encoder(File::create(&path).unwrap(), None)
            .unwrap();
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap();
        let mut reader = ReadAhead::open(&path, compression).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(
            reader.consumed().load(Ordering::Relaxed),
            std::fs::metadata(&path).unwrap().len()
        );
        out
    }

    #[test]
    fn reads_everything_in_order_across_chunks() {
        // Several chunks and a ragged end, with a pattern that shows any
        // reordering or repeated chunk.
        let data: Vec<u8> = (0..(3 * CHUNK + 12_345) as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(round_trip(compression, &data), data, "{compression:?}");
        }
        assert!(round_trip(Compression::Gzip, b"").is_empty());
    }

    #[test]
    fn a_damaged_stream_is_an_error_not_an_early_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.gz");
        let mut encoder = Compression::Gzip
            .encoder(File::create(&path).unwrap(), None)
            .unwrap();
        encoder.write_all(&vec![7u8; 2 * CHUNK]).unwrap();
        encoder.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let mut reader = ReadAhead::open(&path, Compression::Gzip).unwrap();
        let mut out = Vec::new();
        assert!(reader.read_to_end(&mut out).is_err());
    }

    #[test]
    fn dropping_early_stops_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, vec![1u8; 20 * CHUNK]).unwrap();
        let mut reader = ReadAhead::open(&path, Compression::None).unwrap();
        let mut first = [0u8; 10];
        reader.read_exact(&mut first).unwrap();
        // The decompressing thread holds a clone of this counter until it
        // ends: ours, the reader's and the thread's.
        let consumed = reader.consumed();
        assert_eq!(Arc::strong_count(&consumed), 3);
        // Dropped on another thread, so that a hang fails this test after
        // a while instead of stalling the whole run (libtest has no
        // per-test timeout).
        let (done, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(reader);
            let _ = done.send(());
        });
        dropped
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("dropping the reader must stop its thread, not hang");
        // Drop returned only after the thread had ended (joined, not
        // leaked): its clone of the counter is gone.
        assert_eq!(
            Arc::strong_count(&consumed),
            1,
            "the thread outlived the reader"
        );
    }
}
