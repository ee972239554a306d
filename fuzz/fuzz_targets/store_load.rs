//! The template store loader. Stores are sealed (ChaCha20-Poly1305 under the device key), so a
//! random byte string never gets past the tag: with the first byte odd the rest is taken as the
//! clear *payload* and sealed here under a key of this run, which fuzzes the payload parser;
//! with the first byte even the bytes are loaded as they are, which fuzzes the container
//! checks. A store that loads must save to a file that loads to the same store.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use facegate::unlock::seal::DeviceKey;
use facegate::unlock::store::{TemplateStore, MAGIC, VERSION};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static DeviceKey {
    static KEY: OnceLock<DeviceKey> = OnceLock::new();
    KEY.get_or_init(|| DeviceKey::generate().expect("randomness for a key"))
}

/// What a store holds, for comparing two loads (the sealed bytes differ by their nonce).
fn contents(s: &TemplateStore) -> (String, usize, Vec<(String, usize)>) {
    let users = s.users().map(|(u, n)| (u.to_string(), n)).collect();
    (s.model_id().to_string(), s.dim(), users)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        key().seal(&MAGIC, VERSION, 0, rest).expect("sealing")
    } else {
        rest.to_vec()
    };
    let path = Path::new("fuzz.store");
    if let Ok(store) = TemplateStore::from_bytes(&bytes, path, key()) {
        let again = store.to_bytes(key()).expect("a loaded store saves");
        let reloaded = TemplateStore::from_bytes(&again, path, key()).expect("a saved store loads");
        assert_eq!(contents(&reloaded), contents(&store), "round trip changed the store");
    }
});
