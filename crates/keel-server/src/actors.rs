//! Coordinator actors: one task per partition of an internal topic (`__consumer_offsets`,
//! `__transaction_state`), started on first use, each owning its partition and fed through a
//! bounded channel. A partition replaced by a recreated topic gets a new actor; the old one ends
//! when its sender is dropped.

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
