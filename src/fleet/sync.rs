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
//!   pulls the whole set in the same snapshot. The digest also moves when a grant's validity
//!   starts or ends, which no statement marks. Pulling the set rather than a delta keeps the
//!   store equal to the database's view by construction; its cost is measured, not assumed
//!   (README, Fleet).
//! * **Fail closed on corruption, fail operational on network loss.** Every pulled template is
//!   checked (model, dimension, finite, unit length) before anything is written; a bad one
//!   fails the round and the old store stays. An unreachable database fails the round too,
//!   the old store stays and the loop keeps deciding from it, until `[fleet].max_staleness_s`
//!   after the last good sync, when the loop refuses everyone (`unlock::sync_state`).

use std::time::{Duration, Instant};

use postgres::{Client, IsolationLevel};

use crate::error::{Error, Result};
use crate::fleet::admin::embedding_from_bytes;
use crate::fleet::db::db_err;
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
    /// Embedding bytes pulled (0 when nothing changed).
    pub bytes: u64,
    pub elapsed: Duration,
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
    let unchanged = store_exists && last.as_ref().is_some_and(|l| l.digest == digest);
    if unchanged {
        tx.commit().map_err(|e| db_err("sync", &e))?;
        let last = last.expect("checked");
        let due = now_secs().saturating_sub(last.synced_at) >= REFRESH_STATE_EVERY.as_secs()
            || last.change_no != change_no;
        if due {
            let key = key.expect("a store and its state exist, so does the key");
            SyncState {
                change_no,
                synced_at: now_secs(),
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
    let rows = tx
        .query(
            "SELECT p.name, t.dim, t.embedding FROM fleet.templates t
             JOIN fleet.people p ON p.id = t.person_id
             WHERE t.model_id = $1 ORDER BY p.name, t.id",
            &[&model_id],
        )
        .map_err(|e| db_err("sync: pulling the templates", &e))?;
    tx.commit().map_err(|e| db_err("sync", &e))?;

    // Check everything before writing anything: a bad row fails the round, the old store stays.
    let mut store = TemplateStore::new(model_id, dim)?;
    let mut bytes = 0u64;
    let mut current: Option<(String, Vec<Vec<f32>>)> = None;
    for r in &rows {
        let name: String = r.get(0);
        let row_dim: i32 = r.get(1);
        let raw: &[u8] = r.get(2);
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
        match &mut current {
            Some((n, vs)) if *n == name => vs.push(v),
            _ => {
                if let Some((n, vs)) = current.take() {
                    store
                        .add_templates(&n, vs)
                        .map_err(|e| Error::Msg(format!("sync: {e}: nothing written")))?;
                }
                current = Some((name, vec![v]));
            }
        }
    }
    if let Some((n, vs)) = current.take() {
        store
            .add_templates(&n, vs)
            .map_err(|e| Error::Msg(format!("sync: {e}: nothing written")))?;
    }
    if store.user_count() as i64 != people || rows.len() as i64 != templates {
        return Err(Error::Msg(format!(
            "sync: pulled {} people / {} templates where the snapshot said {people} / {templates}: nothing written",
            store.user_count(),
            rows.len()
        )));
    }
    // The store first, then the record of it: a crash between the two only means the next
    // round pulls again.
    let key = app::save_store(&store, files)?;
    SyncState {
        change_no,
        digest,
        synced_at: now_secs(),
        people,
        templates,
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
