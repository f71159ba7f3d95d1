//! Arbitrary request frames through the broker's decoder: errors are fine, panics and
//! unbounded allocations are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The frame layer first, as the connection does, then the body.
    let _ = keel_protocol::frame_length(data, 1 << 20);
    let _ = keel_protocol::decode_request(bytes::Bytes::copy_from_slice(data));
});
