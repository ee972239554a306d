//! The door's record of its last good fleet sync, sealed beside the template store
//! (`<store>.sync`).
//!
//! Why it exists: a fleet door keeps deciding from its last synced store while the database
//! is unreachable (fail-operational), but not forever: a revoked person must not keep
//! entering a door that has been cut off for days. The unlock loop reads `synced_at` from
//! this file and refuses every face once it is older than the board's
//! `[fleet].max_staleness_s` ([`check_fresh`]), and also when the file is missing, corrupt
//! or dated in the future beyond [`MAX_CLOCK_SKEW`] (a clock that jumped cannot vouch for
//! freshness). It is sealed under the device key like the store, so raising `synced_at`
//! needs the key. It also holds what the sync compares (`change_no`, `digest`) to skip a
//! pull when nothing changed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::unlock::seal::{self, DeviceKey};
use crate::unlock::securefs;

/// First 8 bytes of the file.
pub const MAGIC: [u8; 8] = *b"FGTSYNCS";
/// Format version.
pub const VERSION: u32 = 1;
/// A sync time further in the future than this is not believed (the door's clock jumped).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
const MAX_FILE_BYTES: u64 = 4096;

/// `<store>.sync`
pub fn default_path(store: &Path) -> PathBuf {
    securefs::beside(store, ".sync")
}

/// What the last good sync saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncState {
    /// The database's change number at that sync.
    pub change_no: i64,
    /// The digest of the door's template set (`fleet.door_state`).
    pub digest: String,
    /// When it ended, seconds since the Unix epoch (the door's clock).
    pub synced_at: u64,
    pub people: i64,
    pub templates: i64,
    /// The generation of the store file that sync wrote: a store written since by anything
    /// else (a local enrolment) is replaced at the next round even when the database did not
    /// change. 0 in files written before it existed (one full pull then).
    #[serde(default)]
    pub store_generation: u64,
}

fn err(path: &Path, r: impl std::fmt::Display) -> Error {
    Error::Msg(format!("fleet sync state {}: {r}", path.display()))
}

/// Seconds since the epoch now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SyncState {
    /// Reads and opens the file (`Ok(None)` when it does not exist).
    pub fn load(path: &Path, key: &DeviceKey) -> Result<Option<SyncState>> {
        seal::load_json(path, key, &MAGIC, VERSION, MAX_FILE_BYTES).map_err(|r| err(path, r))
    }

    /// Seals and writes it atomically (0600).
    pub fn save(&self, path: &Path, key: &DeviceKey) -> Result<()> {
        seal::save_json(path, key, &MAGIC, VERSION, self).map_err(|r| err(path, r))
    }
}

/// Errors (one line, the reason) unless the last good sync is at most `max_staleness` old by
/// the clock `now` (seconds since the epoch).
pub fn check_fresh(
    state: Option<&SyncState>,
    max_staleness: Duration,
    now: u64,
) -> std::result::Result<(), String> {
    let Some(s) = state else {
        return Err("never synced with the fleet database: refusing everyone".into());
    };
    if s.synced_at > now + MAX_CLOCK_SKEW.as_secs() {
        return Err(format!(
            "last fleet sync is dated {} s in the future (clock jumped?): refusing everyone",
            s.synced_at - now
        ));
    }
    let age = now.saturating_sub(s.synced_at);
    if age > max_staleness.as_secs() {
        return Err(format!(
            "last fleet sync {age} s ago, more than max_staleness_s = {}: refusing everyone until the database is reached",
            max_staleness.as_secs()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(at: u64) -> SyncState {
        SyncState {
            change_no: 1,
            digest: "d".into(),
            synced_at: at,
            people: 1,
            templates: 1,
            store_generation: 1,
        }
    }

    #[test]
    fn freshness_fails_closed() {
        let max = Duration::from_secs(60);
        assert!(check_fresh(None, max, 1000).is_err());
        assert!(check_fresh(Some(&st(1000)), max, 1000).is_ok());
        assert!(check_fresh(Some(&st(940)), max, 1000).is_ok());
        assert!(check_fresh(Some(&st(939)), max, 1000)
            .unwrap_err()
            .contains("61 s ago"));
        // A door clock that went back a little (skew) is tolerated, a jump is not.
        assert!(check_fresh(Some(&st(1200)), max, 1000).is_ok());
        assert!(check_fresh(Some(&st(2000)), max, 1000)
            .unwrap_err()
            .contains("future"));
    }

    #[test]
    fn sealed_round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let p = default_path(&dir.path().join("t.fgt"));
        let key = DeviceKey::generate().unwrap();
        assert_eq!(SyncState::load(&p, &key).unwrap(), None);
        st(5).save(&p, &key).unwrap();
        assert_eq!(SyncState::load(&p, &key).unwrap(), Some(st(5)));
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 1] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let e = SyncState::load(&p, &key).unwrap_err().to_string();
        assert!(e.contains("authentication failed"), "{e}");
        let other = DeviceKey::generate().unwrap();
        st(5).save(&p, &key).unwrap();
        assert!(SyncState::load(&p, &other).is_err());
    }
}
