//! Which fleet template (database id) each template of the door's store is, sealed beside the
//! store (`<store>.sync-index`), so a sync pulls only the embeddings it does not hold yet.
//!
//! Why a file of its own: the store holds embeddings per person, not database ids, and the
//! sync state (`<store>.sync`) is small and rewritten every minute for the staleness bound;
//! the index (one id per template, ~25,000 on a large site) changes only when the store does.
//! It records the store generation it describes: a store written by anyone else (a crash
//! between the two writes, a local enrolment) no longer matches, and the next sync pulls
//! everything instead of trusting it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::unlock::seal::{self, DeviceKey};
use crate::unlock::securefs;
use crate::unlock::store::TemplateStore;

const MAGIC: [u8; 8] = *b"FGTSYNCI";
const VERSION: u32 = 1;
/// ~40 bytes per template: room for 400,000.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// `<store>.sync-index`
pub fn default_path(store: &Path) -> PathBuf {
    securefs::beside(store, ".sync-index")
}

/// Person → the database ids of their templates, in the store's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncIndex {
    /// The generation of the store file this index describes.
    pub generation: u64,
    pub ids: BTreeMap<String, Vec<i64>>,
}

fn err(path: &Path, r: impl std::fmt::Display) -> Error {
    Error::Msg(format!("fleet sync index {}: {r}", path.display()))
}

impl SyncIndex {
    /// Reads and opens the file (`Ok(None)` when it does not exist).
    pub fn load(path: &Path, key: &DeviceKey) -> Result<Option<SyncIndex>> {
        seal::load_json(path, key, &MAGIC, VERSION, MAX_FILE_BYTES).map_err(|r| err(path, r))
    }

    /// Seals and writes it atomically (0600).
    pub fn save(&self, path: &Path, key: &DeviceKey) -> Result<()> {
        seal::save_json(path, key, &MAGIC, VERSION, self).map_err(|r| err(path, r))
    }

    /// Database id → embedding for every template of `store`, when this index describes it
    /// (same generation, same people, same counts); `None` otherwise.
    pub fn embeddings<'s>(&self, store: &'s TemplateStore) -> Option<BTreeMap<i64, &'s [f32]>> {
        if self.generation != store.generation() || self.ids.len() != store.user_count() {
            return None;
        }
        let mut map = BTreeMap::new();
        for (name, count) in store.users() {
            let ids = self.ids.get(name)?;
            if ids.len() != count {
                return None;
            }
            for (id, t) in ids.iter().zip(store.templates(name)?) {
                map.insert(*id, t);
            }
        }
        Some(map)
    }
}
