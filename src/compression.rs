//! Compressed files, recognised by their suffix and read as streams.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// How a file in a backup or the archive is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    /// Every compression `pitr` reads, with its file suffix.
    pub const ALL: [Compression; 2] = [Compression::None, Compression::Gzip];

    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
        }
    }

    /// Splits a known compression suffix off a file name.
    pub fn split_name(name: &str) -> (&str, Compression) {
        match name.strip_suffix(".gz") {
            Some(stem) => (stem, Compression::Gzip),
            None => (name, Compression::None),
        }
    }

    /// Wraps a reader so that it yields the uncompressed bytes.
    pub fn decoder<'a, R: Read + 'a>(self, reader: R) -> Box<dyn Read + 'a> {
        match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
                BufReader::with_capacity(256 * 1024, reader),
            )),
        }
    }

    /// Opens a file and returns its uncompressed contents as a stream.
    pub fn open(self, path: &Path) -> io::Result<Box<dyn Read>> {
        let file = File::open(path)?;
        Ok(self.decoder(file))
    }
}
