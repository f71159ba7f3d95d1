//! Producer ids: handed out from blocks that the active controller allocates and records in the
//! metadata log (Kafka's AllocateProducerIds and `ProducerIdsRecord`), so an id is never given
//! twice, by two brokers or across restarts.
//!
//! Taking a block waits for the metadata log no longer than the controller's deadline; when the
//! log does not commit in time (its disk is full) InitProducerId answers
//! COORDINATOR_LOAD_IN_PROGRESS, as Kafka's broker does while its next block is not there yet, and
//! clients retry. A block whose proposal commits after that is simply never handed out.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use tokio::sync::Mutex;

use crate::broker::Broker;
use crate::controller::default_deadline;
use crate::error::ApiError;

/// The block this broker is handing out: `next..end`.
#[derive(Default)]
pub struct ProducerIds {
    block: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// A fresh producer id, taking a new block from the metadata log when this one is used up.
    pub async fn next(&self, broker: &Arc<Broker>) -> Result<i64, ApiError> {
        let deadline = default_deadline();
        let mut block = tokio::time::timeout_at(deadline, self.block.lock())
            .await
            .map_err(|_| not_loaded("another request is still taking a producer id block"))?;
        if block.0 >= block.1 {
            *block = broker.allocate_producer_ids(deadline).await.map_err(|e| retriable(&e))?;
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}

fn not_loaded(why: &str) -> ApiError {
    ApiError::with(ResponseError::CoordinatorLoadInProgress, format!("no producer id block yet: {why}"))
}

/// The error InitProducerId gives when no block could be taken: retriable either way.
fn retriable(error: &ApiError) -> ApiError {
    let why = error.message.as_deref().unwrap_or("the metadata log did not answer");
    match error.code {
        ResponseError::RequestTimedOut => not_loaded(why),
        _ => ApiError::with(ResponseError::CoordinatorNotAvailable, format!("metadata log: {why}")),
    }
}
