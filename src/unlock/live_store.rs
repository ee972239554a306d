//! The template store as the running loop sees it: reloaded as soon as the file changes, so a
//! revocation takes effect from the next frame on.
//!
//! Why: the loop used to read the store once at start, so `users remove lin` while it ran did
//! nothing until a restart — lin unlocked twice after being removed (issue 12, finding 3).
//! Before every match [`LiveStore::current`] compares the file's identity (device, inode,
//! size, mtime, ctime — one `lstat`, no read) with that of the file it loaded. Every writer
//! replaces the store by renaming a new file over it, and the new file was created while the
//! old one still existed, so its inode differs: a change is always seen. A changed store is
//! reloaded through the same fail-closed loader as at start; if that fails (missing,
//! symlinked, not private, corrupt, foreign key or model), or its generation went backwards
//! (an older copy put back), the match is an error — never a match against the stale
//! templates — until a good store is in place again.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::unlock::seal::DeviceKey;
use crate::unlock::store::TemplateStore;
use crate::unlock::sync_state::{check_fresh, now_secs, SyncState};

/// Identity of a store file version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &Metadata) -> Self {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
struct Watch {
    path: PathBuf,
    key: DeviceKey,
    model_id: String,
    dim: usize,
    stamp: Stamp,
    /// Highest generation loaded so far.
    generation: u64,
}

/// The fleet freshness guard (a door whose store is synced from the fleet database): the
/// sealed sync state beside the store, re-read when it changes, and the staleness bound.
#[derive(Debug)]
struct Freshness {
    path: PathBuf,
    key: DeviceKey,
    max: std::time::Duration,
    stamp: Option<Stamp>,
    state: std::result::Result<Option<SyncState>, String>,
}

/// The store the loop matches against; see the module doc.
#[derive(Debug)]
pub struct LiveStore {
    /// `None` after a failed reload: matching is an error until a good store loads.
    store: std::result::Result<TemplateStore, String>,
    watch: Option<Watch>,
    reloads: u64,
    fresh: Option<Freshness>,
}

impl LiveStore {
    /// A store that is never reloaded (tests, the demo's in-memory replays).
    pub fn fixed(store: TemplateStore) -> Self {
        LiveStore {
            store: Ok(store),
            watch: None,
            reloads: 0,
            fresh: None,
        }
    }

    /// Loads the store at `path` for `model_id`/`dim` (failing closed, as at start) and
    /// watches it.
    pub fn watch(path: &Path, key: &DeviceKey, model_id: &str, dim: usize) -> Result<Self> {
        let (store, meta) = TemplateStore::load_with_meta(path, key)?;
        store.check_model(path, model_id, dim)?;
        Ok(LiveStore {
            watch: Some(Watch {
                path: path.to_path_buf(),
                key: key.clone(),
                model_id: model_id.to_string(),
                dim,
                stamp: Stamp::of(&meta),
                generation: store.generation(),
            }),
            store: Ok(store),
            reloads: 0,
            fresh: None,
        })
    }

    /// Makes every match an error once the last good fleet sync recorded at `sync_state` is
    /// older than `max` (or missing, corrupt, or dated in the future): a door cut off from
    /// the database keeps deciding from its last store only for that long (see
    /// `unlock::sync_state`).
    pub fn require_fresh(
        mut self,
        sync_state: &Path,
        key: &DeviceKey,
        max: std::time::Duration,
    ) -> Self {
        self.fresh = Some(Freshness {
            path: sync_state.to_path_buf(),
            key: key.clone(),
            max,
            stamp: None,
            state: Ok(None),
        });
        self
    }

    /// How many times the store was reloaded after a change.
    pub fn reloads(&self) -> u64 {
        self.reloads
    }

    /// The store as of now: reloaded first if the file changed. An error means the store in
    /// place cannot be used (the frame's decision must be an error).
    pub fn current(&mut self) -> std::result::Result<&TemplateStore, String> {
        if let Some(w) = &mut self.watch {
            let now = std::fs::symlink_metadata(&w.path).map(|m| Stamp::of(&m));
            let changed = match &now {
                Ok(s) => *s != w.stamp,
                Err(_) => true,
            };
            if changed {
                self.reloads += 1;
                self.store = reload(w);
                match &self.store {
                    Ok(s) => log::info!(
                        "template store {} changed: reloaded, generation {}, {} user(s)",
                        w.path.display(),
                        s.generation(),
                        s.user_count()
                    ),
                    Err(e) => log::error!("{e}"),
                }
            }
        }
        if let Some(f) = &mut self.fresh {
            let now = std::fs::symlink_metadata(&f.path)
                .ok()
                .map(|m| Stamp::of(&m));
            if now.is_none() || now != f.stamp {
                f.stamp = now;
                f.state = SyncState::load(&f.path, &f.key).map_err(|e| e.to_string());
            }
            let state = f.state.as_ref().map_err(Clone::clone)?;
            check_fresh(state.as_ref(), f.max, now_secs())
                .map_err(|r| format!("template store: {r} ({})", f.path.display()))?;
        }
        self.store.as_ref().map_err(Clone::clone)
    }
}

/// Reloads a watched store, updating its stamp to the file that was read (or to what is in
/// place when nothing could be read, so a broken file is not re-read every frame).
fn reload(w: &mut Watch) -> std::result::Result<TemplateStore, String> {
    match TemplateStore::load_with_meta(&w.path, &w.key) {
        Ok((store, meta)) => {
            w.stamp = Stamp::of(&meta);
            store
                .check_model(&w.path, &w.model_id, w.dim)
                .map_err(|e| e.to_string())?;
            if store.generation() < w.generation {
                return Err(format!(
                    "template store {}: generation {} is older than the {} already loaded \
                     (an old copy was put back?): refused",
                    w.path.display(),
                    store.generation(),
                    w.generation
                ));
            }
            w.generation = store.generation();
            Ok(store)
        }
        Err(e) => {
            if let Ok(m) = std::fs::symlink_metadata(&w.path) {
                w.stamp = Stamp::of(&m);
            }
            Err(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; 4];
        v[i] = 1.0;
        v
    }

    #[test]
    fn a_change_is_seen_at_the_next_call_and_a_bad_store_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("t.fgt");
        let k = DeviceKey::generate().unwrap();
        let mut s = TemplateStore::new("m", 4).unwrap();
        s.add_templates("alice", vec![e(0)]).unwrap();
        s.add_templates("bob", vec![e(1)]).unwrap();
        s.set_generation(1);
        s.save(&path, &k).unwrap();
        let mut live = LiveStore::watch(&path, &k, "m", 4).unwrap();
        assert_eq!(
            live.current()
                .unwrap()
                .best_match(&e(1), crate::unlock::rule::Rule::Best)
                .unwrap()
                .unwrap()
                .0,
            "bob"
        );
        assert_eq!(live.reloads(), 0);
        // Remove bob (same size class of change): seen at once.
        s.remove_user("bob").unwrap();
        s.set_generation(2);
        s.save(&path, &k).unwrap();
        let best = live
            .current()
            .unwrap()
            .best_match(&e(1), crate::unlock::rule::Rule::Best)
            .unwrap()
            .unwrap();
        assert_eq!(best, ("alice", 0.0));
        assert_eq!(live.reloads(), 1);
        // An older copy put back: refused.
        let mut old = s.clone();
        old.add_templates("bob", vec![e(1)]).unwrap();
        old.set_generation(1);
        old.save(&path, &k).unwrap();
        assert!(live.current().unwrap_err().contains("older"));
        // A corrupt store: error, not the previous templates; and it stays an error.
        std::fs::write(&path, b"junk").unwrap();
        assert!(live.current().is_err());
        assert!(live.current().is_err());
        // Removed: error.
        std::fs::remove_file(&path).unwrap();
        assert!(live.current().is_err());
        // A good store again: used.
        s.set_generation(3);
        s.save(&path, &k).unwrap();
        assert!(live.current().is_ok());
        // A store sealed under another key: error.
        s.set_generation(4);
        s.save(&path, &DeviceKey::generate().unwrap()).unwrap();
        assert!(live.current().unwrap_err().contains("another device key"));
    }
}
