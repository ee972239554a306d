//! The door's audit outbox: each decision worth recording, appended to a local file before the
//! lock acts on it, until `facegate sync` has delivered it to the fleet database.
//!
//! Why it is shaped so:
//! * **A file first, the network later.** The unlock service has no network
//!   (`PrivateNetwork=yes`), and a database outage must lose nothing. The loop appends and
//!   fsyncs one line per event; the sync service reads, inserts, and only then removes what the
//!   database acknowledged ([`remove_delivered`]). A crash between the two sends the same lines
//!   again, and the audit table's unique `(door, event_key)` makes the second insert a no-op:
//!   delivered at least once, stored exactly once.
//! * **An unlock that cannot be recorded does not happen.** The loop turns a failed append
//!   of an unlock into an error decision (`session::run_loop_live`), as it does for the policy
//!   state. Other decisions open nothing, so a failed append of theirs is only logged.
//! * **Events, not frames.** A door sees ~10 frames a second; recording "no face" or every
//!   frame of a stranger standing there would fill the card. [`AuditFilter`] records a
//!   decision when its kind (or person, or error) differs from the previous frame's: each
//!   unlock, each spoof verdict, the first frame of a stranger, of a lockout, of an error.
//! * **Torn lines are detected, not trusted.** Each line carries a checksum of its JSON; a
//!   power cut mid-append leaves a line without its newline, which the next writer
//!   terminates (so it cannot merge with the next event) and the reader drops as torn.
//!   Never an image or an embedding: who, when, how sure, why.
//! * **Appends and the sync's rewrite share one `flock`** (`securefs::FileLock`), held only
//!   for local file work, never across the network.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::unlock::policy::Decision;
use crate::unlock::securefs::{self, FileLock};

/// Beyond this size the outbox refuses more events (an unlock then fails closed): about a
/// million events, months of database outage for a busy door.
pub const MAX_OUTBOX_BYTES: u64 = 256 << 20;

/// A line longer than this is corrupt (a real one is under 1 KB: the reason is capped).
const MAX_LINE: usize = 4096;

/// The longest reason kept (the audit table's limit).
const MAX_REASON: usize = 500;

/// `<store>.audit`: the outbox beside the door's template store.
pub fn default_path(store: &Path) -> PathBuf {
    securefs::beside(store, ".audit")
}

/// One recorded decision, as it travels to `fleet.audit`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Unique per door: a per-process random prefix and a counter.
    pub key: String,
    /// The door's wall clock, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The person the decision is about (`None` when nobody was recognised).
    pub person: Option<String>,
    /// `unlock`, `spoof`, `frozen`, `no_match`, `locked_out` or `error`.
    pub decision: String,
    /// The recognition score, when there was one.
    pub score: Option<f32>,
    /// The anti-spoofing network's live score, when it ran.
    pub live: Option<f32>,
    pub reason: String,
}

/// Decides which frames' decisions become events (see the module doc): a decision is recorded
/// when it differs in kind, person or error text from the previous frame's.
#[derive(Debug, Default)]
pub struct AuditFilter {
    last: Option<(&'static str, Option<String>, String)>,
}

impl AuditFilter {
    /// The event for this frame's decision, or `None` when it is not recorded. `live` is the
    /// frame's live score.
    pub fn event(&mut self, decision: &Decision, live: Option<f32>) -> Option<Draft> {
        let (kind, person, score, reason): (&'static str, Option<&str>, Option<f32>, String) =
            match decision {
                Decision::Unlock { user, score } => ("unlock", Some(user), Some(*score), "".into()),
                Decision::Spoof {
                    user, score, kind, ..
                } => {
                    let k = match kind {
                        crate::unlock::policy::SpoofKind::Spoof => "spoof",
                        crate::unlock::policy::SpoofKind::Frozen => "frozen",
                    };
                    (k, Some(user), Some(*score), "".into())
                }
                Decision::NoMatch { best_score } => ("no_match", None, *best_score, "".into()),
                Decision::LockedOut { remaining } => (
                    "locked_out",
                    None,
                    None,
                    format!("{} s left", remaining.as_secs()),
                ),
                Decision::Error(e) => ("error", None, None, e.clone()),
                Decision::Pending { .. } | Decision::NoFace | Decision::Cooldown { .. } => {
                    ("", None, None, String::new())
                }
            };
        // A lockout's remaining time changes every frame; it is the same event.
        let same_as = (
            kind,
            person.map(str::to_string),
            match kind {
                "locked_out" => String::new(),
                _ => reason.clone(),
            },
        );
        let repeat = self.last.as_ref() == Some(&same_as);
        // Every unlock is its own event (the cooldown separates them anyway).
        let recorded = !kind.is_empty() && (kind == "unlock" || !repeat);
        self.last = Some(same_as);
        recorded.then(|| Draft {
            person: person.map(str::to_string),
            decision: kind.to_string(),
            score,
            live: match decision {
                Decision::Spoof { live, .. } => *live,
                _ => live,
            },
            reason: truncate(&reason, MAX_REASON),
        })
    }
}

/// An event before it has its key and time ([`Outbox::append`] gives them).
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub person: Option<String>,
    pub decision: String,
    pub score: Option<f32>,
    pub live: Option<f32>,
    pub reason: String,
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// The loop's side: which decisions are events, and where they go.
#[derive(Debug)]
pub struct AuditTrail {
    filter: AuditFilter,
    outbox: Outbox,
}

impl AuditTrail {
    pub fn new(path: &Path) -> Result<Self> {
        Ok(AuditTrail {
            filter: AuditFilter::default(),
            outbox: Outbox::new(path)?,
        })
    }

    /// Appends this frame's decision if it is an event; `live` is the frame's live score.
    pub fn record(&mut self, decision: &Decision, live: Option<f32>) -> Result<()> {
        match self.filter.event(decision, live) {
            Some(d) => self.outbox.append(d).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// The writer: gives each event its key and time and appends it.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    prefix: String,
    counter: u64,
}

impl Outbox {
    /// The outbox at `path`, created (0600) on the first append. Each process draws a fresh
    /// random key prefix, so keys never repeat across restarts.
    pub fn new(path: &Path) -> Result<Self> {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r)
            .map_err(|e| Error::Msg(format!("audit outbox: no random source: {e}")))?;
        Ok(Outbox {
            path: path.to_path_buf(),
            prefix: r.iter().map(|b| format!("{b:02x}")).collect(),
            counter: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `draft` as an event decided now, fsynced before returning.
    pub fn append(&mut self, draft: Draft) -> Result<AuditEvent> {
        self.counter += 1;
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let ev = AuditEvent {
            key: format!("{}-{}", self.prefix, self.counter),
            at_ms,
            person: draft.person,
            decision: draft.decision,
            score: draft.score.filter(|s| s.is_finite()),
            live: draft.live.filter(|s| s.is_finite()),
            reason: draft.reason,
        };
        append_line(&self.path, &encode(&ev)).map_err(|r| outbox_error(&self.path, r))?;
        Ok(ev)
    }
}

fn outbox_error(path: &Path, reason: String) -> Error {
    Error::Msg(format!("audit outbox {}: {reason}", path.display()))
}

/// `<checksum> <json>\n`: the first 16 hex digits of the JSON's sha256.
fn encode(ev: &AuditEvent) -> Vec<u8> {
    let json = serde_json::to_string(ev).expect("an event always serialises");
    let mut line = format!("{} {json}\n", checksum(json.as_bytes())).into_bytes();
    line.shrink_to_fit();
    line
}

fn checksum(json: &[u8]) -> String {
    Sha256::digest(json)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode(line: &[u8]) -> std::result::Result<AuditEvent, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let (sum, json) = text.split_once(' ').ok_or("no checksum")?;
    if sum != checksum(json.as_bytes()) {
        return Err("checksum mismatch (torn or altered)".into());
    }
    serde_json::from_str(json).map_err(|e| format!("bad event: {e}"))
}

/// Appends one line under the outbox lock, fsynced. A previous line left without its newline
/// by a power cut is terminated first, so it stays a torn line of its own.
fn append_line(path: &Path, line: &[u8]) -> securefs::Reason<()> {
    let _lock = FileLock::exclusive(path)?;
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open for appending: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    securefs::check_private(&meta)?;
    if meta.len() + line.len() as u64 > MAX_OUTBOX_BYTES {
        return Err(format!(
            "holds {} bytes, the most it keeps is {MAX_OUTBOX_BYTES}: deliver it (`facegate sync`) before more decisions can be recorded",
            meta.len()
        ));
    }
    let mut buf = Vec::with_capacity(line.len() + 1);
    if meta.len() > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(meta.len() - 1))
            .and_then(|_| f.read_exact(&mut last))
            .map_err(|e| format!("cannot read: {e}"))?;
        if last[0] != b'\n' {
            buf.push(b'\n');
        }
    }
    buf.extend_from_slice(line);
    f.write_all(&buf)
        .and_then(|_| f.sync_data())
        .map_err(|e| format!("cannot append: {e}"))
}

/// What [`read_pending`] found at the head of the outbox.
#[derive(Debug, Default)]
pub struct Pending {
    pub events: Vec<AuditEvent>,
    /// The byte after the last line read (the `from` given when none was): where the next
    /// read starts, and what [`remove_delivered`] removes once everything before is delivered.
    pub end: u64,
    /// Lines dropped as torn or corrupt, with their byte offsets and reasons.
    pub bad: Vec<String>,
}

/// Reads up to `max_events` complete lines of the outbox from byte `from` (a previous
/// [`Pending::end`], or 0; none when the file does not exist). A last line without its
/// newline is left alone: it is torn, or being written.
pub fn read_pending(path: &Path, from: u64, max_events: usize) -> Result<Pending> {
    let _lock = FileLock::exclusive(path).map_err(|r| outbox_error(path, r))?;
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && from == 0 => {
            return Ok(Pending::default())
        }
        Err(e) => return Err(outbox_error(path, format!("cannot open: {e}"))),
    };
    let meta = f
        .metadata()
        .map_err(|e| outbox_error(path, e.to_string()))?;
    securefs::check_private(&meta).map_err(|r| outbox_error(path, r))?;
    if meta.len() < from {
        return Err(outbox_error(
            path,
            format!(
                "is {} bytes, shorter than the {from} already read: changed by someone else",
                meta.len()
            ),
        ));
    }
    f.seek(SeekFrom::Start(from))
        .map_err(|e| outbox_error(path, format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    f.take((max_events.max(1).saturating_mul(MAX_LINE) as u64).min(MAX_OUTBOX_BYTES))
        .read_to_end(&mut bytes)
        .map_err(|e| outbox_error(path, format!("cannot read: {e}")))?;
    let mut p = Pending {
        end: from,
        ..Pending::default()
    };
    let mut start = 0usize;
    while p.events.len() < max_events {
        let at = from + start as u64;
        let Some(nl) = bytes[start..].iter().position(|&b| b == b'\n') else {
            if bytes.len() - start > MAX_LINE {
                return Err(outbox_error(
                    path,
                    format!("the line at byte {at} is longer than {MAX_LINE} bytes: the file is corrupt"),
                ));
            }
            break;
        };
        match decode(&bytes[start..start + nl]) {
            Ok(ev) => p.events.push(ev),
            Err(r) => p.bad.push(format!("the line at byte {at}: {r}")),
        }
        start += nl + 1;
        p.end = from + start as u64;
    }
    Ok(p)
}

/// Removes the first `end` bytes (delivered events) from the outbox, keeping what was
/// appended since: the rest is rewritten atomically under the outbox lock.
pub fn remove_delivered(path: &Path, end: u64) -> Result<()> {
    if end == 0 {
        return Ok(());
    }
    let _lock = FileLock::exclusive(path).map_err(|r| outbox_error(path, r))?;
    let (bytes, _) =
        securefs::read_private(path, MAX_OUTBOX_BYTES).map_err(|r| outbox_error(path, r))?;
    // Only this function shortens the file, under the lock; appends only grow it.
    if (bytes.len() as u64) < end {
        return Err(outbox_error(
            path,
            format!(
                "is {} bytes, shorter than the {end} delivered: changed by someone else",
                bytes.len()
            ),
        ));
    }
    securefs::atomic_write(path, &bytes[end as usize..], &mut |_| Ok(()))
        .map_err(|r| outbox_error(path, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unlock::policy::SpoofKind;
    use std::time::Duration;

    fn unlock(u: &str) -> Decision {
        Decision::Unlock {
            user: u.into(),
            score: 0.7,
        }
    }

    #[test]
    fn filter_records_each_event_once_not_each_frame() {
        let mut f = AuditFilter::default();
        let frames = [
            Decision::NoFace,
            Decision::NoMatch {
                best_score: Some(0.2),
            },
            Decision::NoMatch {
                best_score: Some(0.25),
            },
            Decision::Pending {
                user: "ann".into(),
                hits: 1,
                needed: 3,
            },
            unlock("ann"),
            Decision::Cooldown {
                remaining: Duration::from_secs(2),
            },
            Decision::Spoof {
                user: "ann".into(),
                score: 0.6,
                live: Some(0.1),
                kind: SpoofKind::Spoof,
            },
            Decision::LockedOut {
                remaining: Duration::from_secs(30),
            },
            Decision::LockedOut {
                remaining: Duration::from_secs(29),
            },
            Decision::Error("camera: gone".into()),
            Decision::Error("camera: gone".into()),
            Decision::Error("detector: bad".into()),
            Decision::NoMatch { best_score: None },
        ];
        let got: Vec<String> = frames
            .iter()
            .filter_map(|d| f.event(d, Some(0.9)))
            .map(|e| format!("{}:{}", e.decision, e.person.unwrap_or_default()))
            .collect();
        assert_eq!(
            got,
            [
                "no_match:",
                "unlock:ann",
                "spoof:ann",
                "locked_out:",
                "error:",
                "error:",
                "no_match:"
            ]
        );
    }

    #[test]
    fn spoof_events_carry_the_spoof_verdicts_live_score() {
        let mut f = AuditFilter::default();
        let d = Decision::Spoof {
            user: "ann".into(),
            score: 0.6,
            live: Some(0.12),
            kind: SpoofKind::Spoof,
        };
        let e = f.event(&d, None).unwrap();
        assert_eq!((e.score, e.live), (Some(0.6), Some(0.12)));
    }

    fn draft(i: usize) -> Draft {
        Draft {
            person: Some(format!("p{i}")),
            decision: "unlock".into(),
            score: Some(0.5),
            live: None,
            reason: String::new(),
        }
    }

    #[test]
    fn appended_events_read_back_in_order_and_delivered_ones_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.fgt.audit");
        let mut o = Outbox::new(&p).unwrap();
        let written: Vec<AuditEvent> = (0..5).map(|i| o.append(draft(i)).unwrap()).collect();
        let head = read_pending(&p, 0, 3).unwrap();
        assert_eq!(head.events, written[..3]);
        assert!(head.bad.is_empty());
        let next = read_pending(&p, head.end, 10).unwrap();
        assert_eq!(next.events, written[3..]);
        // More arrive while the head is being delivered; removing the head keeps them.
        let late = o.append(draft(5)).unwrap();
        remove_delivered(&p, head.end).unwrap();
        let rest = read_pending(&p, 0, 100).unwrap();
        assert_eq!(rest.events, [&written[3..], &[late][..]].concat());
        let mut keys: Vec<_> = written.iter().map(|e| e.key.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 5, "keys are unique");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_torn_line_is_dropped_and_never_swallows_the_next_event() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.fgt.audit");
        let mut o = Outbox::new(&p).unwrap();
        let first = o.append(draft(0)).unwrap();
        // A power cut in the middle of the second append.
        let torn = encode(&o.append(draft(1)).unwrap());
        let whole = std::fs::read(&p).unwrap();
        std::fs::write(&p, &whole[..whole.len() - torn.len() / 2]).unwrap();
        // While torn, the reader leaves the unfinished line alone.
        let r = read_pending(&p, 0, 10).unwrap();
        assert_eq!(r.events, std::slice::from_ref(&first));
        let third = o.append(draft(2)).unwrap();
        let second = encode(&first).len();
        let r = read_pending(&p, 0, 10).unwrap();
        assert_eq!(r.events, [first, third]);
        assert_eq!(r.bad.len(), 1, "{:?}", r.bad);
        assert!(
            r.bad[0].starts_with(&format!("the line at byte {second}: ")),
            "{:?}",
            r.bad
        );
    }

    #[test]
    fn an_altered_line_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.fgt.audit");
        let mut o = Outbox::new(&p).unwrap();
        o.append(draft(0)).unwrap();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"unlock\"", "\"no_match\"");
        std::fs::write(&p, text).unwrap();
        let r = read_pending(&p, 0, 10).unwrap();
        assert!(r.events.is_empty());
        assert!(r.bad[0].contains("checksum"), "{:?}", r.bad);
    }

    #[test]
    fn a_world_readable_outbox_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.fgt.audit");
        let mut o = Outbox::new(&p).unwrap();
        o.append(draft(0)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = o.append(draft(1)).unwrap_err().to_string();
        assert!(e.contains("t.fgt.audit") && e.contains("0644"), "{e}");
        assert!(read_pending(&p, 0, 1).is_err());
    }
}
