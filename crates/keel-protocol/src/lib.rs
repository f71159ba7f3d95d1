//! The Kafka wire protocol as Keel speaks it: framing, request decoding, response encoding and
//! the table of API versions Keel advertises. No I/O lives here.

pub mod codec;
pub mod errors;
pub mod fetch_encoding;
pub mod frame;
pub mod read_committed;
pub mod records;
pub mod versions;

pub use codec::{decode_request, encode_response, DecodeError, Request};
pub use errors::error_name;
pub use frame::{frame_length, FrameError, FRAME_LENGTH_BYTES};
pub use kafka_protocol;
pub use versions::{advertised, ApiRange};
