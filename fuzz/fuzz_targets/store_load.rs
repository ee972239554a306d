//! The template store loader. A random byte string almost never passes the sha256 in the
//! header, so the input is mostly taken as the *payload* and given a valid header here (first
//! byte odd); with the first byte even the bytes are loaded as they are. A store that loads
//! must serialise back to a file that loads to the same store.
#![no_main]

use std::path::Path;

use facegate::unlock::store::{TemplateStore, MAGIC, VERSION};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn with_header(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(52 + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(payload));
    out.extend_from_slice(payload);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        with_header(rest)
    } else {
        rest.to_vec()
    };
    let path = Path::new("fuzz.store");
    if let Ok(store) = TemplateStore::from_bytes(&bytes, path) {
        let again = store.to_bytes();
        let reloaded = TemplateStore::from_bytes(&again, path).expect("a saved store loads");
        assert_eq!(reloaded.to_bytes(), again, "round trip changed the store");
    }
});
