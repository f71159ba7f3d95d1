//! Helpers shared by the metadata store's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use keel_cluster::{MetadataImage, MetadataRecord, MetadataStore, NodeId, StoreOptions};

/// Opens a store on its own runtime, commits `proposals`, then drops the runtime without
/// `shutdown`: every task dies where it stands, as under kill -9 (the page cache survives,
/// which a real crash may not, but acknowledged entries were fsynced before the
/// acknowledgement anyway). Returns the image as of the last acknowledged proposal.
pub fn crash_after_proposing(
    dir: &Path,
    node: NodeId,
    options: StoreOptions,
    proposals: Vec<Vec<MetadataRecord>>,
) -> MetadataImage {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let image = runtime.block_on(async {
            let store = MetadataStore::open_with(&dir, node, options).await.expect("open");
            for records in proposals {
                store.propose(records).await.expect("propose");
            }
            store.image()
        });
        runtime.shutdown_background();
        Arc::unwrap_or_clone(image)
    })
    .join()
    .expect("crash thread")
}
