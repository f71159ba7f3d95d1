//! Coordinator actors: one task per partition of an internal topic (`__consumer_offsets`,
//! `__transaction_state`), started on first use, each owning its partition and fed through a
//! bounded channel. A partition replaced by a recreated topic gets a new actor; the old one ends
//! when its sender is dropped. `replay_partition` is how an actor rebuilds its state from its
//! partition when it starts.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::partition::Partition;

/// Commands an actor may have queued.
const COMMANDS_MAX: usize = 1024;

struct Running<C> {
    sender: mpsc::Sender<C>,
    task: tokio::task::JoinHandle<()>,
    partition: Arc<Partition>,
}

pub struct PartitionActors<C> {
    actors: Mutex<HashMap<i32, Running<C>>>,
    stopped: AtomicBool,
}

impl<C> Default for PartitionActors<C> {
    fn default() -> Self {
        PartitionActors { actors: Mutex::new(HashMap::new()), stopped: AtomicBool::new(false) }
    }
}

impl<C: Send + 'static> PartitionActors<C> {
    /// The running actors' senders.
    pub fn all(&self) -> Vec<mpsc::Sender<C>> {
        self.lock().values().map(|running| running.sender.clone()).collect()
    }

    /// Stops every actor after the command it is running (no new ones start).
    pub async fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let running: Vec<Running<C>> = self.lock().drain().map(|(_, running)| running).collect();
        for Running { sender, task, .. } in running {
            drop(sender);
            let _ = task.await;
        }
    }

    /// The actor of partition `index`, started with `run(partition, commands)` when none runs
    /// for this very partition. `None` once stopped.
    pub fn get_or_start<F, Fut>(&self, index: i32, partition: Arc<Partition>, run: F) -> Option<mpsc::Sender<C>>
    where
        F: FnOnce(Arc<Partition>, mpsc::Receiver<C>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        let mut actors = self.lock();
        if let Some(running) =
            actors.get(&index).filter(|r| !r.sender.is_closed() && Arc::ptr_eq(&r.partition, &partition))
        {
            return Some(running.sender.clone());
        }
        let (sender, rx) = mpsc::channel(COMMANDS_MAX);
        let task = tokio::spawn(run(partition.clone(), rx));
        // A replaced actor (its partition was deleted) ends when its sender is dropped here.
        actors.insert(index, Running { sender: sender.clone(), task, partition });
        Some(sender)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Running<C>>> {
        self.actors.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Bytes read per step while replaying a partition.
const REPLAY_READ_BYTES: usize = 1 << 20;
/// The most one stored batch may inflate to while replaying.
const REPLAY_INFLATED_MAX_BYTES: usize = 128 << 20;

/// What one batch of an internal topic holds, as a coordinator replays it.
pub enum Replayed {
    /// A control batch: the commit or abort marker of its producer (`None` if unreadable).
    Marker(Option<keel_log::producer::Marker>),
    /// A data batch's keyed records.
    Records(Vec<keel_coordinator::Record>),
}

/// Walks `partition` from its log start to its end, in offset order, handing `visit` each
/// batch's header and contents. Only the broker writes internal topics; a batch it cannot read
/// is skipped (and logged), not fatal, so that one bad batch cannot take a whole coordinator
/// partition offline.
pub fn replay_partition(
    partition: &Partition,
    mut visit: impl FnMut(&keel_log::BatchHeader, Replayed),
) -> Result<(), String> {
    let log = &partition.log;
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut buf = Vec::new();
    while offset < end {
        let slice = log.read(offset, REPLAY_READ_BYTES, end, true).map_err(|e| e.to_string())?;
        if slice.len == 0 {
            break;
        }
        buf.clear();
        slice.read_into(&mut buf).map_err(|e| e.to_string())?;
        for item in keel_log::batch::batch_headers(&buf) {
            let (position, header) = item.map_err(|e| e.to_string())?;
            let batch = &buf[position..position + header.size()];
            if header.is_control() {
                visit(&header, Replayed::Marker(keel_log::batch::read_marker(batch)));
                continue;
            }
            match keel_protocol::records::decode_batch(bytes::Bytes::copy_from_slice(batch), REPLAY_INFLATED_MAX_BYTES)
            {
                Ok(set) => {
                    let records = set
                        .records
                        .into_iter()
                        .filter_map(|r| {
                            let key = r.key?;
                            Some(keel_coordinator::Record { key: key.to_vec(), value: r.value.map(|v| v.to_vec()) })
                        })
                        .collect();
                    visit(&header, Replayed::Records(records));
                }
                Err(error) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, offset = header.base_offset, %error, "skipping an unreadable batch");
                }
            }
        }
        offset = slice.last_offset + 1;
    }
    Ok(())
}
