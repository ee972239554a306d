//! Door sync: the door's view of the fleet database into its local sealed template store.
//!
//! Why it is shaped so:
//! * **A separate process writes the file the loop already watches.** `facegate sync` replaces
//!   the store atomically (`app::save_store`: temp file, fsync, rename, under the writer lock,
//!   generation + 1) and the unlock loop's `LiveStore` reloads it at the next frame. So the
//!   unlock service itself keeps `PrivateNetwork=yes`; only the sync service talks to the
//!   network (dist/facegate-sync.service).
//! * **Compare, then pull in one snapshot.** Each round opens a REPEATABLE READ, READ ONLY
//!   transaction, reads `fleet.door_state` (the change number and a digest of exactly the set
//!   this door may read now) and, only when the digest differs from the last good sync's,
//!   lists the set in the same snapshot (template ids and names, a few bytes each). The digest
//!   also moves when a grant's validity starts or ends, which no statement marks.
//! * **Pull only what the door lacks.** The door's index (`sync_index`: database id of each
//!   template in its store) says which listed templates it already holds; only the others'
//!   embeddings are pulled, and people no longer listed are simply not carried over. The new
//!   store is rebuilt from the list, so it equals the database's view by construction, as a
//!   full pull would; a revocation costs the list, not the site's embeddings (README, Fleet).
//! * **Fail closed on corruption, fail operational on network loss.** Every pulled template is
//!   checked (model, dimension, finite, unit length) before anything is written; a bad one
//!   fails the round and the old store stays. An unreachable database fails the round too,
//!   the old store stays and the loop keeps deciding from it, until `[fleet].max_staleness_s`
//!   after the last good sync, when the loop refuses everyone (`unlock::sync_state`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use postgres::{Client, IsolationLevel};

use crate::error::{Error, Result};
use crate::fleet::admin::embedding_from_bytes;
use crate::fleet::db::db_err;
use crate::fleet::sync_index::{self, SyncIndex};
use crate::unlock::app::{self, StoreFiles};
use crate::unlock::store::TemplateStore;
use crate::unlock::sync_state::{self, now_secs, SyncState};

/// The sync state is rewritten when nothing changed only this often (a door syncing every
/// 10 s would otherwise write its SD card 8,640 times a day for nothing); the staleness bound
/// is far coarser than this.
pub const REFRESH_STATE_EVERY: Duration = Duration::from_secs(60);

/// What one round did.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncOutcome {
    /// The store was rewritten.
    pub changed: bool,
    pub change_no: i64,
    pub people: i64,
    pub templates: i64,
    /// Embedding bytes pulled: only the templates the door did not hold (0 when nothing
    /// changed).
    pub bytes: u64,
    pub elapsed: Duration,
}

/// The generation in the store file's header, unauthenticated: only compared with the one
/// this sync wrote, to notice another writer (loading the store verifies it).
fn store_generation(path: &std::path::Path) -> Option<u64> {
    use std::io::Read;
    let mut head = [0u8; 20];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    crate::unlock::seal::peek_generation(&head)
}

/// One sync round for the door logged in on `client`, into `files` for the recogniser
/// `model_id` (`dim` floats).
pub fn sync_once(
    client: &mut Client,
    files: &StoreFiles,
    model_id: &str,
    dim: usize,
) -> Result<SyncOutcome> {
    let t0 = Instant::now();
    let state_path = sync_state::default_path(&files.store);
    // The last good sync, if it can be read (a key not made yet or a broken state file only
    // means a full pull).
    let key = app::store_key(files).ok();
    let last = key
        .as_ref()
        .and_then(|k| SyncState::load(&state_path, k).ok().flatten());
    let store_exists = crate::unlock::store::exists(&files.store)?;

    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(|e| db_err("sync: starting the snapshot", &e))?;
    let row = tx
        .query_one("SELECT * FROM fleet.door_state($1)", &[&model_id])
        .map_err(|e| db_err("sync: reading the door's state", &e))?;
    let (change_no, digest, people, templates): (i64, String, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let on_disk = store_generation(&files.store);
    let unchanged = store_exists
        && last
            .as_ref()
            .is_some_and(|l| l.digest == digest && Some(l.store_generation) == on_disk);
    if unchanged {
        tx.commit().map_err(|e| db_err("sync", &e))?;
        let last = last.expect("checked");
        let now = now_secs();
        // A record dated in the future (the clock was set back) is rewritten at once: the
        // loop refuses everyone while it stands.
        let due = last.synced_at > now
            || now - last.synced_at >= REFRESH_STATE_EVERY.as_secs()
            || last.change_no != change_no;
        if due {
            let key = key.expect("a store and its state exist, so does the key");
            SyncState {
                change_no,
                synced_at: now,
                ..last
            }
            .save(&state_path, &key)?;
        }
        return Ok(SyncOutcome {
            changed: false,
            change_no,
            people,
            templates,
            bytes: 0,
            elapsed: t0.elapsed(),
        });
    }
    // What the door may hold now, as ids and names (a few bytes per template), then only the
    // embeddings it does not hold yet, in the same snapshot.
    let listed: Vec<(i64, String)> = tx
        .query(
            "SELECT t.id, p.name FROM fleet.templates t
             JOIN fleet.people p ON p.id = t.person_id
             WHERE t.model_id = $1 ORDER BY p.name, t.id",
            &[&model_id],
        )
        .map_err(|e| db_err("sync: listing the templates", &e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let index_path = sync_index::default_path(&files.store);
    // The index first: only one made for the store on disk is worth decrypting the store for.
    let index = key
        .as_ref()
        .and_then(|k| SyncIndex::load(&index_path, k).ok().flatten())
        .filter(|i| Some(i.generation) == on_disk);
    let old_store = match (&key, &index) {
        (Some(k), Some(_)) => TemplateStore::load(&files.store, k).ok(),
        _ => None,
    };
    let held = match (&old_store, &index) {
        (Some(s), Some(i)) if s.model_id() == model_id && s.dim() == dim => {
            i.embeddings(s).unwrap_or_default()
        }
        _ => BTreeMap::new(),
    };
    let missing: Vec<i64> = listed
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !held.contains_key(id))
        .collect();
    let rows = if missing.is_empty() {
        Vec::new()
    } else {
        tx.query(
            "SELECT t.id, t.dim, t.embedding FROM fleet.templates t
             WHERE t.model_id = $1 AND t.id = ANY($2)",
            &[&model_id, &missing],
        )
        .map_err(|e| db_err("sync: pulling the templates", &e))?
    };
    tx.commit().map_err(|e| db_err("sync", &e))?;

    // Check everything before writing anything: a bad row fails the round, the old store stays.
    let names: BTreeMap<i64, &str> = listed.iter().map(|(id, n)| (*id, n.as_str())).collect();
    let mut pulled: BTreeMap<i64, Vec<f32>> = BTreeMap::new();
    let mut bytes = 0u64;
    for r in &rows {
        let id: i64 = r.get(0);
        let row_dim: i32 = r.get(1);
        let raw: &[u8] = r.get(2);
        let name = names.get(&id).copied().unwrap_or("?");
        bytes += raw.len() as u64;
        if row_dim as usize != dim {
            return Err(Error::Msg(format!(
                "sync: a template of {name:?} is {row_dim}-d for model {model_id}, this board's recogniser is {dim}-d: nothing written"
            )));
        }
        let v = embedding_from_bytes(raw, dim).ok_or_else(|| {
            Error::Msg(format!(
                "sync: a template of {name:?} is {} bytes, not {}: nothing written",
                raw.len(),
                4 * dim
            ))
        })?;
        pulled.insert(id, v);
    }
    let mut store = TemplateStore::new(model_id, dim)?;
    let mut ids: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut by_person: BTreeMap<&str, Vec<Vec<f32>>> = BTreeMap::new();
    for (id, name) in &listed {
        let v = match (pulled.remove(id), held.get(id)) {
            (Some(v), _) => v,
            (None, Some(t)) => t.to_vec(),
            (None, None) => {
                return Err(Error::Msg(format!(
                    "sync: template {id} of {name:?} was listed but not pulled: nothing written"
                )))
            }
        };
        by_person.entry(name).or_default().push(v);
        ids.entry(name.clone()).or_default().push(*id);
    }
    for (name, vs) in by_person {
        store
            .add_templates(name, vs)
            .map_err(|e| Error::Msg(format!("sync: {e}: nothing written")))?;
    }
    if store.user_count() as i64 != people || listed.len() as i64 != templates {
        return Err(Error::Msg(format!(
            "sync: pulled {} people / {} templates where the snapshot said {people} / {templates}: nothing written",
            store.user_count(),
            listed.len()
        )));
    }
    // The store first, then its index, then the record of the sync: a crash between any two
    // only means the next round pulls again (an index of another generation is not trusted).
    let (key, generation) = app::save_store_generation(&store, files)?;
    SyncIndex { generation, ids }.save(&index_path, &key)?;
    SyncState {
        change_no,
        digest,
        synced_at: now_secs(),
        people,
        templates,
        store_generation: generation,
    }
    .save(&state_path, &key)?;
    Ok(SyncOutcome {
        changed: true,
        change_no,
        people,
        templates,
        bytes,
        elapsed: t0.elapsed(),
    })
}
