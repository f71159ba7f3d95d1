//! Arbitrary produce payloads through record batch validation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = keel_log::batch::validate_batches(data, 1 << 20);
});
