//! The one place where Keel's errors become Kafka error codes.

use kafka_protocol::error::ResponseError;
use keel_log::{BatchError, LogError};

/// A Kafka error code with an optional message for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ResponseError,
    pub message: Option<String>,
    /// Produce: the records that failed validation, by index in their batch (Produce v8+
    /// `record_errors`).
    pub record_errors: Vec<(i32, String)>,
}

impl ApiError {
    pub fn new(code: ResponseError) -> Self {
        ApiError { code, message: None, record_errors: Vec::new() }
    }

    pub fn with(code: ResponseError, message: impl Into<String>) -> Self {
        ApiError { code, message: Some(message.into()), record_errors: Vec::new() }
    }

    pub fn code(&self) -> i16 {
        self.code.code()
    }
}

impl From<ResponseError> for ApiError {
    fn from(code: ResponseError) -> Self {
        ApiError::new(code)
    }
}

impl From<&BatchError> for ApiError {
    fn from(error: &BatchError) -> Self {
        let code = match error {
            BatchError::Corrupt { .. } => ResponseError::CorruptMessage,
            BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
            BatchError::InvalidRecord { .. } | BatchError::ControlBatch { .. } => ResponseError::InvalidRecord,
        };
        ApiError::with(code, error.to_string())
    }
}

impl From<&LogError> for ApiError {
    fn from(error: &LogError) -> Self {
        match error {
            LogError::OffsetOutOfRange { .. } => ApiError::with(ResponseError::OffsetOutOfRange, error.to_string()),
            LogError::InvalidBatch(batch) => ApiError::from(batch),
            LogError::Producer(producer) => {
                use keel_log::producer::ProducerError;
                let code = match producer {
                    ProducerError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
                    ProducerError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
                    ProducerError::InvalidTxnState { .. } => ResponseError::InvalidTxnState,
                    ProducerError::CoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced,
                };
                ApiError::with(code, producer.to_string())
            }
            _ => ApiError::with(ResponseError::KafkaStorageError, error.to_string()),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(error: LogError) -> Self {
        ApiError::from(&error)
    }
}
