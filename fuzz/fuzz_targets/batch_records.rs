//! Arbitrary bytes as a produced batch whose records a topic config needs (timestamp bounds,
//! keys on compacted topics, recompression): bounded inflation and record walking return
//! errors, never panic or allocate beyond their bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let count = data.get(57..61).map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    if let Ok(section) = keel_protocol::records::batch_records(data, 1 << 20) {
        let _ = keel_protocol::records::walk_records(&section, count);
    }
    let _ = keel_protocol::records::walk_records(data, count);
});
