//! `LogManager`: a data directory's partition logs and the broker-wide checkpoint files.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::checkpoint::{format_checkpoint, parse_partition_offsets, read_checkpoint, sync_dir, write_atomic};
use crate::cleaner::{OffsetMap, RecordsCodec};
use crate::error::{IoContext, LogError};
use crate::log::{CleanReport, Log, LogConfig, RecoveryReport};
use crate::storage::{OsStorage, Storage};

pub const RECOVERY_POINT_CHECKPOINT_FILE: &str = "recovery-point-offset-checkpoint";
pub const LOG_START_OFFSET_CHECKPOINT_FILE: &str = "log-start-offset-checkpoint";
/// Kafka's `cleaner-offset-checkpoint`: per compacted log, the first offset not yet cleaned.
pub const CLEANER_OFFSET_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
pub const CLEAN_SHUTDOWN_FILE: &str = ".keel-clean-shutdown";
const DELETE_SUFFIX: &str = "-delete";

type PartitionKey = (String, i32);

/// What opening one partition found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecovery {
    pub topic: String,
    pub partition: i32,
    pub report: RecoveryReport,
}

/// What `LogManager::open` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagerRecoveryReport {
    pub clean_shutdown: bool,
    pub partitions: Vec<PartitionRecovery>,
    /// Entries of the data directory that were skipped, with the reason.
    pub errors: Vec<(String, String)>,
}

/// Names in the data dir that are not partition logs: Keel's cluster metadata log lives in
/// `__cluster_metadata`, as Kafka's KRaft log lives in `__cluster_metadata-0`.
pub const RESERVED_PREFIX: &str = "__cluster_metadata";

/// Splits `<topic>-<partition>` at the last '-'.
pub fn parse_partition_dir(name: &str) -> Option<(String, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    if topic.is_empty() || partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic.to_string(), partition.parse().ok()?))
}

fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// Owns the data directory: one `Log` per `<topic>-<partition>` directory.
pub struct LogManager {
    storage: Arc<dyn Storage>,
    data_dir: PathBuf,
    default_config: LogConfig,
    logs: RwLock<BTreeMap<PartitionKey, Arc<Log>>>,
    /// Serializes writers of the checkpoint files.
    checkpoint_lock: Mutex<()>,
    report: ManagerRecoveryReport,
}

fn read_offsets(storage: &dyn Storage, path: &Path) -> Result<BTreeMap<PartitionKey, i64>, LogError> {
    let lines = read_checkpoint(storage, path)?.unwrap_or_default();
    Ok(parse_partition_offsets(path, &lines)?.into_iter().collect())
}

impl LogManager {
    /// Opens every partition log in `data_dir` (creating the directory), recovering after an
    /// unclean shutdown from the checkpointed recovery points.
    pub fn open(data_dir: &Path, default_config: LogConfig, now_ms: i64) -> Result<LogManager, LogError> {
        LogManager::open_in(OsStorage::shared(), data_dir, default_config, now_ms)
    }

    /// `open` on `storage` instead of the operating system's file system.
    pub fn open_in(
        storage: Arc<dyn Storage>,
        data_dir: &Path,
        default_config: LogConfig,
        now_ms: i64,
    ) -> Result<LogManager, LogError> {
        let fs = storage.as_ref();
        fs.create_dir_all(data_dir).ctx(data_dir)?;
        let marker = data_dir.join(CLEAN_SHUTDOWN_FILE);
        let clean_shutdown = fs.exists(&marker);
        let mut report = ManagerRecoveryReport { clean_shutdown, ..ManagerRecoveryReport::default() };
        // A checkpoint that cannot be read only costs a longer recovery, never data.
        let recovery_points = read_offsets(fs, &data_dir.join(RECOVERY_POINT_CHECKPOINT_FILE)).unwrap_or_else(|e| {
            report.errors.push((RECOVERY_POINT_CHECKPOINT_FILE.to_string(), e.to_string()));
            BTreeMap::new()
        });
        let log_starts = read_offsets(fs, &data_dir.join(LOG_START_OFFSET_CHECKPOINT_FILE)).unwrap_or_else(|e| {
            report.errors.push((LOG_START_OFFSET_CHECKPOINT_FILE.to_string(), e.to_string()));
            BTreeMap::new()
        });
        let cleaner_offsets = read_offsets(fs, &data_dir.join(CLEANER_OFFSET_CHECKPOINT_FILE)).unwrap_or_else(|e| {
            report.errors.push((CLEANER_OFFSET_CHECKPOINT_FILE.to_string(), e.to_string()));
            BTreeMap::new()
        });
        let mut logs = BTreeMap::new();
        let mut entries = fs.list_dir(data_dir).ctx(data_dir)?;
        entries.sort();
        for (name, is_dir) in entries {
            let path = data_dir.join(&name);
            if !is_dir {
                continue;
            }
            // Directories of other components (the cluster metadata log) share the data dir.
            if name.starts_with(RESERVED_PREFIX) {
                continue;
            }
            if name.ends_with(DELETE_SUFFIX) {
                // A delete interrupted by a crash; finish it.
                fs.remove_dir_all(&path).ctx(&path)?;
                continue;
            }
            let Some(key) = parse_partition_dir(&name) else {
                report.errors.push((name, "not a <topic>-<partition> directory".to_string()));
                continue;
            };
            let recovery_point =
                if clean_shutdown { i64::MAX } else { recovery_points.get(&key).copied().unwrap_or(0) };
            let log_start_offset = log_starts.get(&key).copied().unwrap_or(0);
            let log = Log::open_in(
                Arc::clone(&storage),
                &path,
                "",
                default_config,
                recovery_point,
                log_start_offset,
                now_ms,
            )?;
            log.set_cleaner_checkpoint(cleaner_offsets.get(&key).copied());
            report.partitions.push(PartitionRecovery {
                topic: key.0.clone(),
                partition: key.1,
                report: log.recovery_report(),
            });
            logs.insert(key, Arc::new(log));
        }
        if clean_shutdown {
            // From here on a crash is unclean again.
            fs.remove_file(&marker).ctx(&marker)?;
        }
        // Also the partition directories the previous process created: it may have died
        // before fsyncing the data directory.
        sync_dir(fs, data_dir)?;
        Ok(LogManager {
            storage,
            data_dir: data_dir.to_path_buf(),
            default_config,
            logs: RwLock::new(logs),
            checkpoint_lock: Mutex::new(()),
            report,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn default_config(&self) -> LogConfig {
        self.default_config
    }

    pub fn recovery_report(&self) -> &ManagerRecoveryReport {
        &self.report
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Log>> {
        let logs = self.logs.read().unwrap_or_else(PoisonError::into_inner);
        logs.get(&(topic.to_string(), partition)).cloned()
    }

    /// The log of `topic`/`partition`, created empty if it does not exist.
    pub fn get_or_create(
        &self,
        topic: &str,
        partition: i32,
        topic_id: &str,
        config: LogConfig,
    ) -> Result<Arc<Log>, LogError> {
        if let Some(log) = self.get(topic, partition) {
            return Ok(log);
        }
        let name = partition_dir_name(topic, partition);
        if topic.is_empty() || partition < 0 || parse_partition_dir(&name).is_none() {
            return Err(LogError::Corrupt {
                path: self.data_dir.join(name),
                reason: "invalid topic name or partition".to_string(),
            });
        }
        let mut logs = self.logs.write().unwrap_or_else(PoisonError::into_inner);
        let key = (topic.to_string(), partition);
        if let Some(log) = logs.get(&key) {
            return Ok(Arc::clone(log));
        }
        // The API takes no clock; a new log's segment age only needs wall time.
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let path = self.data_dir.join(name);
        let log = Arc::new(Log::open_in(Arc::clone(&self.storage), &path, topic_id, config, 0, 0, now_ms)?);
        sync_dir(self.storage.as_ref(), &self.data_dir)?;
        logs.insert(key, Arc::clone(&log));
        Ok(log)
    }

    /// Deletes a partition's log: renamed to `<dir>.<nanos>-delete` first so a crash midway
    /// leaves something `open` recognises and finishes.
    pub fn delete(&self, topic: &str, partition: i32) -> Result<(), LogError> {
        let removed = {
            let mut logs = self.logs.write().unwrap_or_else(PoisonError::into_inner);
            logs.remove(&(topic.to_string(), partition))
        };
        if let Some(log) = &removed {
            log.mark_deleted();
        }
        let name = partition_dir_name(topic, partition);
        let path = self.data_dir.join(&name);
        if removed.is_none() && !self.storage.exists(&path) {
            return Ok(());
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        // Like Kafka's `logDeleteDirName`: a long topic name is cut so that the name stays
        // within the 255 bytes a file name may have.
        let suffix = format!("-{partition}.{nanos}{DELETE_SUFFIX}");
        let mut prefix_len = topic.len().min(255usize.saturating_sub(suffix.len()));
        while !topic.is_char_boundary(prefix_len) {
            prefix_len -= 1;
        }
        let doomed = self.data_dir.join(format!("{}{suffix}", &topic[..prefix_len]));
        match self.storage.rename(&path, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).ctx(&path),
        }
        sync_dir(self.storage.as_ref(), &self.data_dir)?;
        self.storage.remove_dir_all(&doomed).ctx(&doomed)
    }

    pub fn all(&self) -> Vec<((String, i32), Arc<Log>)> {
        let logs = self.logs.read().unwrap_or_else(PoisonError::into_inner);
        logs.iter().map(|(key, log)| (key.clone(), Arc::clone(log))).collect()
    }

    /// Writes both checkpoint files: recovery point = each log's durable offset.
    pub fn checkpoint(&self) -> Result<(), LogError> {
        let _guard = self.checkpoint_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let logs = self.all();
        let recovery: Vec<String> = logs
            .iter()
            .map(|((topic, partition), log)| format!("{topic} {partition} {}", log.durable_offset()))
            .collect();
        let starts: Vec<String> = logs
            .iter()
            .map(|((topic, partition), log)| format!("{topic} {partition} {}", log.log_start_offset()))
            .collect();
        write_atomic(
            self.storage.as_ref(),
            &self.data_dir.join(RECOVERY_POINT_CHECKPOINT_FILE),
            format_checkpoint(&recovery).as_bytes(),
        )?;
        write_atomic(
            self.storage.as_ref(),
            &self.data_dir.join(LOG_START_OFFSET_CHECKPOINT_FILE),
            format_checkpoint(&starts).as_bytes(),
        )?;
        self.write_cleaner_checkpoint(&logs)
    }

    /// Writes `cleaner-offset-checkpoint`; the caller holds `checkpoint_lock`.
    fn write_cleaner_checkpoint(&self, logs: &[((String, i32), Arc<Log>)]) -> Result<(), LogError> {
        let cleaned: Vec<String> = logs
            .iter()
            .filter_map(|((topic, partition), log)| {
                log.cleaner_checkpoint().map(|offset| format!("{topic} {partition} {offset}"))
            })
            .collect();
        write_atomic(
            self.storage.as_ref(),
            &self.data_dir.join(CLEANER_OFFSET_CHECKPOINT_FILE),
            format_checkpoint(&cleaned).as_bytes(),
        )
    }

    /// One cleaning pass over the compacted log that needs it most (Kafka's
    /// `grabFilthiestCompactedLog`), skipping logs another cleaner thread holds. Returns the
    /// log and what the pass did, `Ok(None)` when no log needs cleaning. A pass that fails
    /// marks its log uncleanable until restart and returns the error with the log's name.
    #[allow(clippy::type_complexity)]
    pub fn clean_dirtiest(
        &self,
        map: &mut OffsetMap,
        codec: Option<&dyn RecordsCodec>,
        now_ms: i64,
    ) -> Result<Option<((String, i32), CleanReport)>, ((String, i32), LogError)> {
        let mut best: Option<(f64, (String, i32), Arc<Log>)> = None;
        for (key, log) in self.all() {
            // Logs another cleaner thread holds, or that failed a pass, are skipped.
            if !log.is_available_to_clean() {
                continue;
            }
            match log.cleaning_priority(now_ms) {
                Ok(Some(priority)) if best.as_ref().is_none_or(|(p, _, _)| priority > *p) => {
                    best = Some((priority, key, log));
                }
                Ok(_) => {}
                Err(e) => return Err((key, e)),
            }
        }
        let Some((_, key, log)) = best else {
            return Ok(None);
        };
        if !log.begin_cleaning() {
            return Ok(None);
        }
        let result = log.clean(map, codec, now_ms);
        log.end_cleaning(result.is_err());
        match result {
            Ok(Some(report)) => {
                // Kafka updates the checkpoint after every pass.
                let _guard = self.checkpoint_lock.lock().unwrap_or_else(PoisonError::into_inner);
                self.write_cleaner_checkpoint(&self.all()).map_err(|e| (key.clone(), e))?;
                Ok(Some((key, report)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err((key, e)),
        }
    }

    /// Flushes every log, checkpoints, then writes the clean-shutdown marker (last, so that its
    /// presence proves everything before it is on disk). A log that cannot close (a full disk
    /// refusing its producer snapshot, a failed fsync) does not keep the others from being
    /// flushed and checkpointed; the marker is then not written, the next open recovers from
    /// the checkpoint, and the first error is returned.
    pub fn shutdown(&self) -> Result<(), LogError> {
        let mut first_error = None;
        for (_, log) in self.all() {
            if let Err(error) = log.close() {
                first_error.get_or_insert(error);
            }
        }
        if let Err(error) = self.checkpoint() {
            first_error.get_or_insert(error);
        }
        match first_error {
            Some(error) => Err(error),
            None => write_atomic(self.storage.as_ref(), &self.data_dir.join(CLEAN_SHUTDOWN_FILE), b""),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::testing::test_batch;

    #[test]
    fn parses_partition_dir_names() {
        assert_eq!(parse_partition_dir("orders-3"), Some(("orders".into(), 3)));
        assert_eq!(parse_partition_dir("my-topic-12"), Some(("my-topic".into(), 12)));
        assert_eq!(parse_partition_dir("orders"), None);
        assert_eq!(parse_partition_dir("-1"), None);
        assert_eq!(parse_partition_dir("orders-x"), None);
        // Kafka allows a topic to end in '-'.
        assert_eq!(parse_partition_dir("orders--1"), Some(("orders-".into(), 1)));
    }

    #[test]
    fn open_create_checkpoint_shutdown_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager = LogManager::open(dir.path(), LogConfig::default(), 0).expect("open");
        let log = manager.get_or_create("orders", 0, "id-1", LogConfig::default()).expect("create");
        let again = manager.get_or_create("orders", 0, "id-1", LogConfig::default()).expect("get");
        assert!(Arc::ptr_eq(&log, &again));
        log.append(&mut test_batch(3, 10, 5), 0, 0).expect("append");
        log.delete_records_before(1).expect("delete records");
        manager.shutdown().expect("shutdown");
        assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        let text = fs::read_to_string(dir.path().join(RECOVERY_POINT_CHECKPOINT_FILE)).expect("checkpoint");
        assert_eq!(text, "0\n1\norders 0 3\n");
        drop((log, again, manager));

        fs::create_dir(dir.path().join("not_a_partition")).expect("mkdir");
        fs::create_dir(dir.path().join("old-0.123-delete")).expect("mkdir");
        let manager = LogManager::open(dir.path(), LogConfig::default(), 0).expect("reopen");
        let report = manager.recovery_report();
        assert!(report.clean_shutdown);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.partitions[0].report.segments_recovered, 0);
        assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        assert!(!dir.path().join("old-0.123-delete").exists());
        let log = manager.get("orders", 0).expect("log");
        assert_eq!(log.topic_id(), "id-1");
        assert_eq!(log.log_end_offset(), 3);
        assert_eq!(log.log_start_offset(), 1);
        assert_eq!(manager.all().len(), 1);
    }

    #[test]
    fn the_dirtiest_compacted_log_is_cleaned_and_its_checkpoint_survives_a_reopen() {
        use crate::builder::build_batch;
        use crate::cleaner::{CompactionPolicy, OffsetMap};
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let manager = LogManager::open(dir.path(), LogConfig::default(), now).expect("open");
        let compacted = LogConfig {
            segment_bytes: 300,
            compaction: CompactionPolicy { compact: true, ..CompactionPolicy::default() },
            ..LogConfig::default()
        };
        let plain = LogConfig { segment_bytes: 300, ..LogConfig::default() };
        for (topic, config) in [("profiles", compacted), ("orders", plain)] {
            let log = manager.get_or_create(topic, 0, "id", config).expect("create");
            for i in 0..30u8 {
                let mut batch = build_batch([(Some(&b"key"[..]), Some(&[i; 20][..]))], now).expect("batch");
                log.append(&mut batch, 0, now).expect("append");
            }
        }
        let mut map = OffsetMap::new(1 << 20);
        let ((topic, _), report) =
            manager.clean_dirtiest(&mut map, None, now).expect("clean").expect("a log needs cleaning");
        assert_eq!(topic, "profiles");
        assert!(report.records_removed > 0);
        // Nothing else: the other log is not compacted.
        assert!(manager.clean_dirtiest(&mut map, None, now).expect("clean").is_none());
        let text = fs::read_to_string(dir.path().join(CLEANER_OFFSET_CHECKPOINT_FILE)).expect("checkpoint");
        assert_eq!(text, format!("0\n1\nprofiles 0 {}\n", report.end_offset));
        manager.shutdown().expect("shutdown");
        drop(manager);
        let manager = LogManager::open(dir.path(), compacted, now).expect("reopen");
        let log = manager.get("profiles", 0).expect("log");
        assert_eq!(log.cleaner_checkpoint(), Some(report.end_offset));
    }

    #[test]
    fn unclean_open_revalidates_from_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let manager = LogManager::open(dir.path(), LogConfig::default(), 0).expect("open");
            let log = manager.get_or_create("t", 1, "id", LogConfig::default()).expect("create");
            log.append(&mut test_batch(2, 0, 5), 0, 0).expect("append");
            log.flush_to(2).expect("flush");
            manager.checkpoint().expect("checkpoint");
            log.append(&mut test_batch(2, 0, 5), 0, 0).expect("append");
        }
        let manager = LogManager::open(dir.path(), LogConfig::default(), 0).expect("reopen");
        let report = manager.recovery_report();
        assert!(!report.clean_shutdown);
        assert_eq!(report.partitions[0].report.segments_recovered, 1);
        let log = manager.get("t", 1).expect("log");
        assert_eq!(log.log_end_offset(), 4);
        assert_eq!(log.durable_offset(), 2);
    }

    #[test]
    fn delete_removes_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager = LogManager::open(dir.path(), LogConfig::default(), 0).expect("open");
        manager.get_or_create("gone", 0, "id", LogConfig::default()).expect("create");
        manager.delete("gone", 0).expect("delete");
        assert!(manager.get("gone", 0).is_none());
        assert!(!dir.path().join("gone-0").exists());
        manager.delete("gone", 0).expect("idempotent");
    }

    #[test]
    fn delete_handles_the_longest_topic_names_and_fences_old_handles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager = LogManager::open(dir.path(), LogConfig::default(), 0).expect("open");
        let topic = "t".repeat(249);
        let log = manager.get_or_create(&topic, 12, "id", LogConfig::default()).expect("create");
        manager.delete(&topic, 12).expect("a 249-character topic can be deleted");
        assert!(!dir.path().join(format!("{topic}-12")).exists());
        // A handle still held elsewhere no longer writes.
        let mut batch = crate::testing::test_batch(1, 0, 10);
        assert!(log.append(&mut batch, 0, 0).is_err());
    }
}
