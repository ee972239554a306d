//! The model file loader (safetensors + metadata + layer program) on arbitrary bytes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = facegate::format::ModelFile::from_bytes(data, Path::new("fuzz.safetensors"));
});
