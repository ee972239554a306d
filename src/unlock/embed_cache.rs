//! Embeddings of labelled photos cached on disk, keyed by the models' digests and each photo's
//! content, so `facegate threshold` embeds the 9,029 evaluation photos once per model pair.
//!
//! Why a file of our own: the cache is a measurement aid (under the git-ignored
//! `models/cache/`), never read by the lock. It is still checked: a file with another key,
//! a bad checksum or a malformed record is ignored whole (everything is embedded again), and a
//! photo whose bytes changed is embedded again, so a stale or damaged cache cannot move a
//! threshold.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"FGEMB01\n";

/// What the models made of one photo.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The most central face's embedding.
    Embedded(Vec<f32>),
    /// The detector found no face with keypoints.
    NoFace,
}

/// The cache of one (detector, recogniser, detector size) key, loaded in memory.
#[derive(Debug)]
pub struct EmbedCache {
    path: PathBuf,
    key: String,
    dim: usize,
    entries: HashMap<String, ([u8; 32], Outcome)>,
    dirty: bool,
}

/// The cache key of a model pair at a detector size: every command that embeds the
/// evaluation photos (`threshold`, `attempts`) uses this one, so they share one cache file.
pub fn cache_key(detector_id: &str, recognizer_id: &str, det_size: (u32, u32)) -> String {
    format!(
        "det={detector_id} rec={recognizer_id} size={}x{}",
        det_size.0, det_size.1
    )
}

/// sha256 of a photo's bytes.
pub fn photo_digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl EmbedCache {
    /// The cache file for `key` in `dir`: `embeddings-<first 16 hex digits of sha256(key)>.bin`.
    pub fn path_for(dir: &Path, key: &str) -> PathBuf {
        let h = crate::onnx::hex(&Sha256::digest(key.as_bytes()));
        dir.join(format!("embeddings-{}.bin", &h[..16]))
    }

    /// Opens the cache of `key` in `dir` (empty when there is none or it is unusable; the
    /// reason is logged).
    pub fn open(dir: &Path, key: &str, dim: usize) -> EmbedCache {
        let path = Self::path_for(dir, key);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => match parse(&bytes, key, dim) {
                Ok(e) => e,
                Err(why) => {
                    log::warn!("{}: ignored ({why}); embedding again", path.display());
                    HashMap::new()
                }
            },
            Err(_) => HashMap::new(),
        };
        EmbedCache {
            path,
            key: key.to_string(),
            dim,
            entries,
            dirty: false,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached outcome for the photo `name` if its bytes still have `digest`.
    pub fn get(&self, name: &str, digest: &[u8; 32]) -> Option<&Outcome> {
        self.entries
            .get(name)
            .filter(|(d, _)| d == digest)
            .map(|(_, o)| o)
    }

    pub fn insert(&mut self, name: &str, digest: [u8; 32], outcome: Outcome) -> Result<()> {
        if let Outcome::Embedded(e) = &outcome {
            if e.len() != self.dim {
                return Err(Error::Msg(format!(
                    "embedding cache: {name}: {} values, the cache holds {}-d",
                    e.len(),
                    self.dim
                )));
            }
        }
        self.entries.insert(name.to_string(), (digest, outcome));
        self.dirty = true;
        Ok(())
    }

    /// Writes the cache if anything was added (temporary file + rename: never half-written).
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut body = Vec::with_capacity(self.entries.len() * (self.dim * 4 + 80));
        body.extend_from_slice(MAGIC);
        put_bytes(&mut body, self.key.as_bytes());
        body.extend_from_slice(&(self.dim as u32).to_le_bytes());
        body.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        let mut names: Vec<&String> = self.entries.keys().collect();
        names.sort();
        for name in names {
            let (digest, outcome) = &self.entries[name];
            put_bytes(&mut body, name.as_bytes());
            body.extend_from_slice(digest);
            match outcome {
                Outcome::Embedded(e) => {
                    body.push(0);
                    for v in e {
                        body.extend_from_slice(&v.to_le_bytes());
                    }
                }
                Outcome::NoFace => body.push(1),
            }
        }
        let sum: [u8; 32] = Sha256::digest(&body).into();
        body.extend_from_slice(&sum);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let tmp = self.path.with_extension("bin.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&body)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.dirty = false;
        Ok(())
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

type Entries = HashMap<String, ([u8; 32], Outcome)>;

fn parse(bytes: &[u8], key: &str, dim: usize) -> std::result::Result<Entries, String> {
    if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not an embedding cache".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader {
        b: body,
        at: MAGIC.len(),
    };
    if r.bytes()? != key.as_bytes() {
        return Err("made with other models".into());
    }
    if r.u32()? as usize != dim {
        return Err("another embedding size".into());
    }
    let count = r.u32()? as usize;
    let mut out = HashMap::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let name = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| "a name is not UTF-8")?;
        let digest: [u8; 32] = r.take(32)?.try_into().expect("32 bytes");
        let outcome = match r.take(1)?[0] {
            0 => Outcome::Embedded(
                r.take(dim * 4)?
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            1 => Outcome::NoFace,
            t => return Err(format!("unknown record type {t}")),
        };
        out.insert(name, (digest, outcome));
    }
    if r.at != body.len() {
        return Err("trailing bytes".into());
    }
    Ok(out)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("truncated")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn bytes(&mut self) -> std::result::Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let d1 = photo_digest(b"photo one");
        let d2 = photo_digest(b"photo two");
        let mut c = EmbedCache::open(dir.path(), "k", 3);
        assert!(c.is_empty());
        c.insert("a.jpg", d1, Outcome::Embedded(vec![0.5, -1.0, 2.0]))
            .unwrap();
        c.insert("b.jpg", d2, Outcome::NoFace).unwrap();
        assert!(c.insert("c.jpg", d2, Outcome::Embedded(vec![1.0])).is_err());
        c.save().unwrap();
        let c = EmbedCache::open(dir.path(), "k", 3);
        assert_eq!(
            c.get("a.jpg", &d1),
            Some(&Outcome::Embedded(vec![0.5, -1.0, 2.0]))
        );
        assert_eq!(c.get("b.jpg", &d2), Some(&Outcome::NoFace));
        // Changed photo bytes: not served.
        assert_eq!(c.get("a.jpg", &d2), None);
        // Another key (other models) or dimension: a fresh cache.
        assert!(EmbedCache::open(dir.path(), "other", 3).is_empty());
        // One flipped byte: the whole file is ignored.
        let p = EmbedCache::path_for(dir.path(), "k");
        let mut b = std::fs::read(&p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(EmbedCache::open(dir.path(), "k", 3).is_empty());
    }
}
