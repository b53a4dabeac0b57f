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

    /// Reads the next line into `buf`, holding at most `max_bytes` of it (plus its line
    /// end): `Some(true)` when it fits, `Some(false)` when it is longer (the rest is read
    /// past without being kept, so a huge line costs no memory), `None` at the end.
    fn next_line(&mut self) -> Result<Option<bool>, FileError> {
        self.buf.clear();
        let limit = self.max_bytes.saturating_add(2); // "\r\n"
        let (mut any, mut fits) = (false, true);
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(e)),
            };
            if chunk.is_empty() {
                break;
            }
            any = true;
            let (take, end) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if fits && self.buf.len() + take <= limit {
                self.buf.extend_from_slice(&chunk[..take]);
            } else if fits {
                fits = false;
                self.buf = Vec::with_capacity(1024);
            }
            self.reader.consume(take);
            if end {
                break;
            }
        }
        Ok(any.then_some(fits))
    }

    /// Bytes the reader holds for the current record (tests: a long line is not kept).
    pub fn held_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// The next record, or `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FileError> {
        match self.format {
            Format::Json => loop {
                match self.next_line()? {
                    None => return Ok(None),
                    Some(false) => return Ok(Some(Frame::Oversized)),
                    Some(true) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A JSON line longer than the record limit is one `Oversized` frame, read past
    /// without being held; the lines around it are intact.
    #[test]
    fn a_long_json_line_is_skipped_without_being_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.jsonl");
        let mut f = std::fs::File::create(&path).expect("create");
        writeln!(f, "{{\"a\":1}}").expect("write");
        let long = vec![b'x'; 8 << 20];
        f.write_all(&long).expect("write");
        f.write_all(b"\r\n").expect("write");
        writeln!(f, "{{\"b\":2}}").expect("write");
        f.write_all(b"{\"c\":3}").expect("write"); // no final newline
        drop(f);
        let max = 64 * 1024;
        let mut r = RecordReader::open(&path, Format::Json, max).expect("open");
        let mut seen = Vec::new();
        while let Some(frame) = r.next_frame().expect("frame") {
            seen.push(match frame {
                Frame::Record(b) => String::from_utf8_lossy(b).into_owned(),
                Frame::Oversized => "<oversized>".into(),
                Frame::Truncated => "<truncated>".into(),
            });
            assert!(r.held_bytes() <= 4 * max, "held {} bytes", r.held_bytes());
        }
        assert_eq!(seen, ["{\"a\":1}", "<oversized>", "{\"b\":2}", "{\"c\":3}"]);
    }
}
