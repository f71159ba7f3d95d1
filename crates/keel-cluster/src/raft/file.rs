//! The on-disk primitives of the metadata log: CRC-32C-checked frames and atomically replaced files.
//!
//! Every byte the metadata log writes is a frame:
//!
//! ```text
//! length: u32 big-endian   bytes in `payload` (1..=FRAME_BYTES_MAX)
//! crc:    u32 big-endian   CRC-32C (Castagnoli) of `payload`
//! payload: `length` bytes  UTF-8 JSON
//! ```
//!
//! See the "Cluster metadata log" section of `docs/storage-format.md` for how the files use them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes of a frame header: length and CRC.
pub(crate) const FRAME_HEADER_BYTES: usize = 8;

/// Largest payload a frame may carry. A length field above it is treated as a torn write (in the
/// log) or corruption (in a state file), never as an allocation size.
pub(crate) const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Suffix of the temporary file an atomic replace writes before renaming it into place.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// An error of the metadata log's files, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

impl FileError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        FileError::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> Self {
        FileError::Corrupt { path: path.to_path_buf(), detail: detail.into() }
    }
}

/// Serializes `value` as one frame.
pub(crate) fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let payload = serde_json::to_vec(value)?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    // A payload never exceeds u32: callers bound it far below FRAME_BYTES_MAX.
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// What [`decode_frame`] found at the start of a buffer.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    /// A whole frame whose CRC matches; `bytes` is its full length including the header.
    Complete { payload: &'a [u8], bytes: usize },
    /// The buffer ends inside the frame, or the header cannot be a frame this code wrote (zero or
    /// oversized length), or the CRC does not match: what a write cut short by a crash leaves.
    Torn { reason: String },
}

/// Reads the frame at the start of `buf` without trusting its length field.
pub(crate) fn decode_frame(buf: &[u8]) -> Frame<'_> {
    let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
        return Frame::Torn { reason: format!("{} bytes left, shorter than a frame header", buf.len()) };
    };
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if length == 0 || length > FRAME_BYTES_MAX {
        return Frame::Torn { reason: format!("frame length {length} out of range") };
    }
    let Some(payload) = buf.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + length) else {
        return Frame::Torn {
            reason: format!("frame of {length} bytes but only {} left", buf.len() - FRAME_HEADER_BYTES),
        };
    };
    if crc32c::crc32c(payload) != crc {
        return Frame::Torn { reason: "frame crc mismatch".to_string() };
    }
    Frame::Complete { payload, bytes: FRAME_HEADER_BYTES + length }
}

/// Replaces `path` with a file holding `value` as one frame, so that after a crash the path holds
/// either the old or the new value: write `<path>.tmp`, fsync it, rename it over `path`, fsync the
/// directory.
pub(crate) fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), FileError> {
    let frame = encode_frame(value).map_err(|e| FileError::corrupt(path, format!("encode: {e}")))?;
    write_bytes_atomic(path, &frame)
}

/// [`write_atomic`] for raw bytes.
///
/// A failed replace removes its tmp file (best effort), so it neither holds space on a full disk
/// nor lingers; `path` still holds the old value, or the new one if only the final directory
/// fsync failed. Calling it again redoes every step.
pub(crate) fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = tmp_path(path);
    let written = replace_with(path, &tmp, bytes);
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn replace_with(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let mut file =
        OpenOptions::new().write(true).create(true).truncate(true).open(tmp).map_err(|e| FileError::io(tmp, e))?;
    file.write_all(bytes).map_err(|e| FileError::io(tmp, e))?;
    file.sync_all().map_err(|e| FileError::io(tmp, e))?;
    drop(file);
    fs::rename(tmp, path).map_err(|e| FileError::io(path, e))?;
    sync_dir(path)
}

/// Reads a file written by [`write_atomic`]; `None` when it does not exist.
pub(crate) fn read_atomic<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, FileError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileError::io(path, e)),
    };
    match decode_frame(&bytes) {
        Frame::Complete { payload, bytes: used } if used == bytes.len() => {
            let value = serde_json::from_slice(payload)
                .map_err(|e| FileError::corrupt(path, format!("undecodable content: {e}")))?;
            Ok(Some(value))
        }
        Frame::Complete { bytes: used, .. } => {
            Err(FileError::corrupt(path, format!("{} trailing bytes after the frame", bytes.len() - used)))
        }
        // A file replaced by rename is never torn: a bad frame here is damage, not a crash.
        Frame::Torn { reason } => Err(FileError::corrupt(path, reason)),
    }
}

/// Fsyncs the directory holding `path`, making a create or rename of `path` durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| FileError::io(dir, e))
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Removes a leftover `<path>.tmp` from a replace that a crash interrupted.
pub(crate) fn remove_stale_tmp(path: &Path) -> Result<(), FileError> {
    let tmp = tmp_path(path);
    match fs::remove_file(&tmp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileError::io(&tmp, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let frame = encode_frame(&vec![1u32, 2, 3]).expect("encode");
        match decode_frame(&frame) {
            Frame::Complete { payload, bytes } => {
                assert_eq!(bytes, frame.len());
                let value: Vec<u32> = serde_json::from_slice(payload).expect("decode");
                assert_eq!(value, vec![1, 2, 3]);
            }
            Frame::Torn { reason } => panic!("torn: {reason}"),
        }
    }

    #[test]
    fn every_prefix_and_bit_flip_is_torn() {
        let frame = encode_frame(&"metadata").expect("encode");
        for len in 0..frame.len() {
            assert!(matches!(decode_frame(&frame[..len]), Frame::Torn { .. }), "prefix {len}");
        }
        for i in FRAME_HEADER_BYTES..frame.len() {
            let mut flipped = frame.clone();
            flipped[i] ^= 0x01;
            assert!(matches!(decode_frame(&flipped), Frame::Torn { .. }), "flip at {i}");
        }
    }

    #[test]
    fn zeroed_tail_is_torn_not_an_empty_frame() {
        assert!(matches!(decode_frame(&[0u8; 64]), Frame::Torn { .. }));
    }

    #[test]
    fn oversized_length_is_not_trusted() {
        let mut buf = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        buf.extend_from_slice(b"x");
        assert!(matches!(decode_frame(&buf), Frame::Torn { .. }));
    }

    #[test]
    fn atomic_file_round_trip_and_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vote");
        assert_eq!(read_atomic::<u64>(&path).expect("read missing"), None);
        write_atomic(&path, &7u64).expect("write");
        write_atomic(&path, &8u64).expect("overwrite");
        assert_eq!(read_atomic::<u64>(&path).expect("read"), Some(8));
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn damaged_atomic_file_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("committed");
        write_atomic(&path, &7u64).expect("write");
        let mut bytes = fs::read(&path).expect("read bytes");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        fs::write(&path, bytes).expect("damage");
        assert!(matches!(read_atomic::<u64>(&path), Err(FileError::Corrupt { .. })));
    }
}
