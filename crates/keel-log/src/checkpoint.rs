//! Kafka's text checkpoint files and atomic file replacement.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, LogError};
use crate::storage::{remove_if_exists, Storage};

/// Checkpoint format version Kafka writes and Keel understands.
const CHECKPOINT_VERSION: &str = "0";

/// fsyncs a directory so that creations, renames and deletions in it survive a crash.
pub(crate) fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
    storage.sync_dir(dir).ctx(dir)
}

/// Replaces `path` with `contents` atomically: write `<path>.tmp`, fsync, rename, fsync dir.
pub(crate) fn write_atomic(storage: &dyn Storage, path: &Path, contents: &[u8]) -> Result<(), LogError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let written =
        storage.open(&tmp, true).and_then(|file| file.write_all_at(contents, 0).and_then(|()| file.sync_data()));
    if let Err(e) = written {
        // A full disk must not keep the half-written copy taking space; `path` is untouched.
        let _ = remove_if_exists(storage, &tmp);
        return Err(e).ctx(&tmp);
    }
    storage.rename(&tmp, path).ctx(path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(storage, dir),
        _ => Ok(()),
    }
}

/// `0\n<count>\n<line>\n...`
pub(crate) fn format_checkpoint(lines: &[String]) -> String {
    let mut out = format!("{CHECKPOINT_VERSION}\n{}\n", lines.len());
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Reads a checkpoint's entry lines; `Ok(None)` when the file does not exist.
pub(crate) fn read_checkpoint(storage: &dyn Storage, path: &Path) -> Result<Option<Vec<String>>, LogError> {
    let text = match storage.read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| LogError::Corrupt { path: path.to_path_buf(), reason: "not UTF-8".to_string() })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx(path),
    };
    let corrupt = |reason: &str| LogError::Corrupt { path: path.to_path_buf(), reason: reason.to_string() };
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(CHECKPOINT_VERSION) {
        return Err(corrupt("unknown checkpoint version"));
    }
    let count: usize =
        lines.next().and_then(|l| l.trim().parse().ok()).ok_or_else(|| corrupt("missing entry count"))?;
    let entries: Vec<String> = lines.filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    if entries.len() != count {
        return Err(corrupt("entry count does not match the entries"));
    }
    Ok(Some(entries))
}

/// `((topic, partition), offset)` entries of a partition checkpoint.
pub(crate) type PartitionOffsets = Vec<((String, i32), i64)>;

/// Parses `<topic> <partition> <offset>` lines.
pub(crate) fn parse_partition_offsets(path: &Path, lines: &[String]) -> Result<PartitionOffsets, LogError> {
    lines
        .iter()
        .map(|line| {
            let mut parts = line.split_whitespace();
            let parsed = (|| {
                let topic = parts.next()?.to_string();
                let partition = parts.next()?.parse().ok()?;
                let offset = parts.next()?.parse().ok()?;
                parts.next().is_none().then_some(((topic, partition), offset))
            })();
            parsed.ok_or_else(|| LogError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("bad checkpoint line {line:?}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::storage::OsStorage;

    #[test]
    fn round_trips_partition_offsets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("recovery-point-offset-checkpoint");
        let lines = vec!["orders 0 42".to_string(), "my-topic 3 7".to_string()];
        write_atomic(&OsStorage, &path, format_checkpoint(&lines).as_bytes()).expect("write");
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text, "0\n2\norders 0 42\nmy-topic 3 7\n");
        let read = read_checkpoint(&OsStorage, &path).expect("read").expect("exists");
        let parsed = parse_partition_offsets(&path, &read).expect("parse");
        assert_eq!(parsed[1], (("my-topic".to_string(), 3), 7));
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn missing_is_none_and_garbage_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cp");
        assert!(read_checkpoint(&OsStorage, &path).expect("ok").is_none());
        fs::write(&path, "0\n3\na 1 2\n").expect("write");
        assert!(matches!(read_checkpoint(&OsStorage, &path), Err(LogError::Corrupt { .. })));
        fs::write(&path, "0\n1\na x 2\n").expect("write");
        let lines = read_checkpoint(&OsStorage, &path).expect("ok").expect("some");
        assert!(parse_partition_offsets(&path, &lines).is_err());
    }
}
