//! Event-log files for `replay`: JSON lines, or length-delimited protobuf
//! (each record prefixed by its length as a varint, as `prost::encode_length_delimited`).

use crate::codec::Format;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read input {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot tell the format of {0} from its extension (.jsonl/.ndjson/.json or .pb/.binpb/.ldpb): pass --format json|protobuf")]
    UnknownFormat(PathBuf),
}

pub fn format_of(path: &Path) -> Result<Format, FileError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson" | "json") => Ok(Format::Json),
        Some("pb" | "binpb" | "ldpb" | "protobuf") => Ok(Format::Protobuf),
        _ => Err(FileError::UnknownFormat(path.to_path_buf())),
    }
}

/// One framing problem: the record could not even be cut out of the file.
pub enum Frame<'a> {
    Record(&'a [u8]),
    /// A length prefix larger than the record limit: skipped without reading it whole.
    Oversized,
    /// The file ends inside a record (truncated write): nothing after it is readable.
    Truncated,
}

pub struct RecordReader {
    format: Format,
    reader: BufReader<File>,
    buf: Vec<u8>,
    max_bytes: usize,
    path: PathBuf,
}

impl RecordReader {
    pub fn open(path: &Path, format: Format, max_bytes: usize) -> Result<Self, FileError> {
        let f = File::open(path).map_err(|source| FileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            format,
            reader: BufReader::with_capacity(1 << 16, f),
            buf: Vec::with_capacity(1024),
            max_bytes,
            path: path.to_path_buf(),
        })
    }

    fn io(&self, source: io::Error) -> FileError {
        FileError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The next record, or `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FileError> {
        match self.format {
            Format::Json => loop {
                self.buf.clear();
                let n = self
                    .reader
                    .read_until(b'\n', &mut self.buf)
                    .map_err(|e| self.io(e))?;
                if n == 0 {
                    return Ok(None);
                }
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                while self.buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    self.buf.pop();
                }
                return Ok(Some(Frame::Record(&self.buf)));
            },
            Format::Protobuf => {
                let mut len: u64 = 0;
                let mut shift = 0;
                let mut byte = [0u8; 1];
                loop {
                    match self.reader.read(&mut byte) {
                        Ok(0) if shift == 0 => return Ok(None),
                        Ok(0) => return Ok(Some(Frame::Truncated)),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(self.io(e)),
                    }
                    len |= u64::from(byte[0] & 0x7f) << shift;
                    if byte[0] & 0x80 == 0 {
                        break;
                    }
                    shift += 7;
                    if shift > 63 {
                        return Ok(Some(Frame::Truncated));
                    }
                }
                if len > self.max_bytes as u64 {
                    let skipped = io::copy(&mut (&mut self.reader).take(len), &mut io::sink())
                        .map_err(|e| self.io(e))?;
                    return Ok(Some(if skipped < len {
                        Frame::Truncated
                    } else {
                        Frame::Oversized
                    }));
                }
                self.buf.resize(len as usize, 0);
                match self.reader.read_exact(&mut self.buf) {
                    Ok(()) => Ok(Some(Frame::Record(&self.buf))),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        Ok(Some(Frame::Truncated))
                    }
                    Err(e) => Err(self.io(e)),
                }
            }
        }
    }
}
