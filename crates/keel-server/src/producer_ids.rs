//! Producer ids: handed out from blocks that the controller records in the metadata log
//! (Kafka's `ProducerIdsRecord`), so an id is never given twice, across restarts too.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use keel_cluster::{MetadataRecord, PRODUCER_ID_BLOCK_SIZE};
use tokio::sync::Mutex;

use crate::broker::Broker;
use crate::error::ApiError;

/// The block this broker is handing out: `next..end`.
#[derive(Default)]
pub struct ProducerIds {
    block: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// A fresh producer id, taking a new block from the metadata log when this one is used up.
    pub async fn next(&self, broker: &Arc<Broker>) -> Result<i64, ApiError> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let _controller = broker.controller.lock().await;
            let start = broker.image().next_producer_id;
            let end = start.checked_add(PRODUCER_ID_BLOCK_SIZE).ok_or_else(|| {
                ApiError::with(ResponseError::UnknownServerError, "the producer id space is exhausted")
            })?;
            broker
                .metadata
                .propose(vec![MetadataRecord::ProducerIds { node_id: broker.node_id, next_producer_id: end }])
                .await
                .map_err(|e| ApiError::with(ResponseError::CoordinatorNotAvailable, format!("metadata log: {e}")))?;
            *block = (start, end);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}
