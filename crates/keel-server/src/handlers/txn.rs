//! Producer ids and transactions: InitProducerId.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;

/// InitProducerId without a `transactional.id` gives an idempotent producer a fresh id at
/// epoch 0, whatever id and epoch it sends (Kafka accepts the KIP-360 fields and ignores them
/// here: the new id fences nothing, since no one else uses it).
pub async fn init_producer_id(broker: &Arc<Broker>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if request.transactional_id.as_ref().is_some_and(|id| id.is_empty()) {
        response.error_code = ResponseError::InvalidRequest.code();
        return response;
    }
    if request.transactional_id.is_some() {
        // Transactional producers are served by the transaction coordinator, which this
        // broker does not run: FindCoordinator for transaction keys says so too.
        response.error_code = ResponseError::CoordinatorNotAvailable.code();
        return response;
    }
    match broker.producer_ids.next(broker).await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(error) => response.error_code = error.code(),
    }
    response
}
