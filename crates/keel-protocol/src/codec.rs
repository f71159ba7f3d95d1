//! Decoding request frames and encoding response frames.
//!
//! A frame body is an untrusted byte string: every path here returns an error instead of
//! panicking, and nothing is allocated from a length field that the remaining bytes cannot back
//! (the vendored `kafka-protocol` checks array counts; see vendor/kafka-protocol/KEEL-PATCH.md).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::versions;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub body: RequestKind,
}

impl Request {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// Why a frame could not be decoded. Kafka answers only an unsupported ApiVersions version
/// (KIP-511); for every other case it closes the connection, and so does Keel.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request of {length} bytes is shorter than a request header")]
    Truncated { length: usize },
    #[error("unknown api key {api_key}")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("{api_key:?} v{version} is not supported")]
    UnsupportedVersion { api_key: ApiKey, version: i16, correlation_id: i32 },
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed { api_key: ApiKey, version: i16, correlation_id: i32, reason: String },
}

/// Bytes of api key, api version and correlation id at the start of every request header.
const HEADER_PREFIX_BYTES: usize = 8;

/// Decodes one request frame body (without its length prefix).
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < HEADER_PREFIX_BYTES {
        return Err(DecodeError::Truncated { length: frame.len() });
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key =
        ApiKey::try_from(raw_key).map_err(|()| DecodeError::UnknownApiKey { api_key: raw_key, correlation_id })?;
    let Some(range) = versions::lookup(api_key) else {
        return Err(DecodeError::UnknownApiKey { api_key: raw_key, correlation_id });
    };
    if version < range.min_served_version || version > range.max_version {
        return Err(DecodeError::UnsupportedVersion { api_key, version, correlation_id });
    }
    let malformed =
        |reason: anyhow::Error| DecodeError::Malformed { api_key, version, correlation_id, reason: reason.to_string() };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version)).map_err(malformed)?;
    let body = RequestKind::decode(api_key, &mut frame, version).map_err(malformed)?;
    Ok(Request { api_key, header, body })
}

/// Appends one response frame (length prefix, header, body) to `out`.
pub fn encode_response(
    out: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<()> {
    let start = out.len();
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(out, api_key.response_header_version(version))?;
    body.encode(out, version)?;
    let length = i32::try_from(out.len() - start - 4)?;
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn frame(api_key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        header.encode(&mut buf, api_key.request_header_version(version)).expect("header");
        body.encode(&mut buf, version).expect("body");
        buf.freeze()
    }

    #[test]
    fn decodes_a_request() {
        let request = decode_request(frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())).expect("decodes");
        assert_eq!(request.api_key, ApiKey::ApiVersions);
        assert_eq!(request.correlation_id(), 7);
        assert!(matches!(request.body, RequestKind::ApiVersions(_)));
    }

    #[test]
    fn rejects_bad_frames_without_panicking() {
        assert!(matches!(decode_request(Bytes::from_static(&[0, 3, 0])), Err(DecodeError::Truncated { .. })));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0x7f, 0, 0, 0, 0, 0, 0, 1])),
            Err(DecodeError::UnknownApiKey { api_key: 0x7f00, correlation_id: 1 })
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 18, 0, 99, 0, 0, 0, 2])),
            Err(DecodeError::UnsupportedVersion { version: 99, correlation_id: 2, .. })
        ));
        // Produce v0-v2 is advertised (for old librdkafka) but not served.
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0, 3])),
            Err(DecodeError::UnsupportedVersion { version: 2, .. })
        ));
    }

    #[test]
    fn a_lying_array_count_is_malformed_not_an_allocation() {
        // Metadata v0 whose topic array claims 54 million entries in five bytes.
        let mut raw = frame(ApiKey::Metadata, 0, &MetadataRequest::default()).to_vec();
        raw.truncate(raw.len() - 4);
        raw.extend_from_slice(&[0x03, 0x3c, 0x0c, 0x00, 0xb6]);
        assert!(matches!(decode_request(Bytes::from(raw)), Err(DecodeError::Malformed { .. })));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_request(Bytes::from(raw));
        }

        #[test]
        fn arbitrary_bodies_never_panic(
            key in proptest::sample::select(vec![0i16, 1, 2, 3, 18, 19, 20, 21, 32, 33, 35, 37, 44, 60]),
            version in 0i16..20,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            let mut raw = Vec::with_capacity(body.len() + 8);
            raw.extend_from_slice(&key.to_be_bytes());
            raw.extend_from_slice(&version.to_be_bytes());
            raw.extend_from_slice(&9i32.to_be_bytes());
            raw.extend_from_slice(&body);
            let _ = decode_request(Bytes::from(raw));
        }
    }
}
