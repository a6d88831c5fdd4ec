//! Feeds arbitrary bytes to the guard's classify-request decoder (JSON, base64 PNG, float
//! arrays). Any outcome is fine except a panic or a crash.
#![no_main]
use gibbon::guard::decode::{decode_request, DecodeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits { input_shape: vec![1, 28, 28], max_inputs: 8 };
    let _ = decode_request(data, &limits);
});
