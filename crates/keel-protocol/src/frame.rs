//! Request framing: a big-endian i32 length, then that many bytes of request.
//!
//! The length comes from the peer, so it is checked against the configured maximum before a
//! single byte of the frame is allocated (Kafka's CVE-2022-34917 was an allocation sized by an
//! unchecked length).

/// Bytes of the length prefix in front of every request and response.
pub const FRAME_LENGTH_BYTES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {length} is not positive")]
    NotPositive { length: i32 },
    #[error("frame length {length} exceeds socket.request.max.bytes ({max_bytes})")]
    TooLarge { length: i32, max_bytes: usize },
}

/// Reads the length prefix at the start of `buf`. `Ok(None)` means fewer than four bytes are
/// buffered; `Ok(Some(n))` is a frame body length in `1..=max_bytes`.
pub fn frame_length(buf: &[u8], max_bytes: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..FRAME_LENGTH_BYTES) else {
        return Ok(None);
    };
    let length = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if length <= 0 {
        return Err(FrameError::NotPositive { length });
    }
    if length as usize > max_bytes {
        return Err(FrameError::TooLarge { length, max_bytes });
    }
    Ok(Some(length as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(frame_length(&[0, 0, 0], 100), Ok(None));
        assert_eq!(frame_length(&[0, 0, 0, 5, 1], 100), Ok(Some(5)));
        assert_eq!(frame_length(&[0, 0, 0, 0], 100), Err(FrameError::NotPositive { length: 0 }));
        assert_eq!(frame_length(&(-1i32).to_be_bytes(), 100), Err(FrameError::NotPositive { length: -1 }));
        assert_eq!(frame_length(&101i32.to_be_bytes(), 100), Err(FrameError::TooLarge { length: 101, max_bytes: 100 }));
    }
}
