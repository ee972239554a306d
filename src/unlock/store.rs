//! The template store: every enrolled user's face embeddings, in one file.
//!
//! Why it is shaped so:
//! * **One file, refused when in doubt.** The unlock loop compares each face against these
//!   templates, so a store that is missing, truncated, corrupt, of another version or made by
//!   another recognition model must stop the loop (fail closed), never silently become "no
//!   users" or "garbage users". [`TemplateStore::load`] therefore errors on all of those with a
//!   one-line message naming the path and the problem; only enrolment may start from nothing,
//!   via [`TemplateStore::load_or_empty_for_enrol`].
//! * **Bound to the model.** Embeddings of two models live in unrelated spaces; the store
//!   records the embedding dimension and the model identity (the converted model's sha256 or
//!   another stable id) and [`TemplateStore::check_model`] refuses a mismatch.
//! * **Sealed and encrypted.** The file is a [`crate::unlock::seal`] container: the payload is
//!   encrypted and authenticated with ChaCha20-Poly1305 under the device key, so a template can
//!   only be planted by someone who can read the key, every single-byte change anywhere in the
//!   file is refused, and the templates (biometric data) are not readable without the key. A
//!   store sealed under another device's key is refused like a corrupt one.
//! * **Private files only.** [`TemplateStore::load`] opens the file without following symlinks
//!   and refuses one that other users can read or write, or that another user owns
//!   ([`crate::unlock::securefs::read_private`]); the message names the file and its mode.
//! * **Atomic writes, one writer.** A power cut during enrolment must leave the old store or
//!   the new one, never half of one: [`TemplateStore::save`] writes a 0600 temp file in the same
//!   directory, fsyncs it, renames it over the target and fsyncs the directory
//!   ([`crate::unlock::securefs::atomic_write`]; a symlinked target is refused, not replaced).
//!   [`TemplateStore::save_with_hook`] calls a hook between the stages so tests can inject a
//!   failure and prove the old store survives and no temp file is left. Read-modify-write of
//!   the store happens under an exclusive `flock` (see `unlock::app::update_store`), so two
//!   enrolments or an enrolment and a removal never lose each other's change.
//! * **Generation.** Every write carries a generation one above the last; the unlock loop
//!   reloads the store when it changes and refuses one whose generation went backwards.
//!
//! # File format (version 2)
//! The [`crate::unlock::seal`] container with magic `b"FGTSTORE"` and version 2, whose
//! plaintext payload is (integers little-endian):
//! ```text
//! dim u32 | model_id_len u16 | model_id (UTF-8) | user_count u32 |
//! per user: name_len u16 | name (UTF-8) | template_count u32 | template_count × dim × f32
//! ```
//! Version 1 (the same payload in clear behind a sha256) is refused with a message saying to
//! re-enrol. It is not migrated: a clear store could have been rewritten by anyone who could
//! write it (a 0644/0666 file, finding 7 of issue 12), and sealing it under the device key
//! would certify whatever face was planted there.
//!
//! A simple binary payload rather than JSON: f32 bits round-trip exactly with no
//! float-to-text question, a 512-d template is 2 KiB instead of ~5–10 KiB, and the reader is
//! a bounds-checked cursor that can reject every malformed length without allocating from it.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::unlock::rule::{self, Rule, Scorer};
use crate::unlock::seal::DeviceKey;
use crate::unlock::securefs;
pub use crate::unlock::securefs::SaveStage;

/// First 8 bytes of every store file.
pub const MAGIC: [u8; 8] = *b"FGTSTORE";
/// The format version this build reads and writes.
pub const VERSION: u32 = 2;
/// Largest store file read (1000 users of 1000 512-d templates would be 2 GB; a board holds a
/// handful of users, so 64 MiB is far above any real store and bounds a hostile file).
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Largest embedding dimension accepted (MobileFaceNet uses 128 or 512).
pub const MAX_DIM: usize = 4096;
/// Longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Most templates kept per user.
pub const MAX_TEMPLATES_PER_USER: usize = 1000;
const MAX_MODEL_ID_BYTES: usize = 256;
/// Tolerance on `|‖v‖² − 1|` for an embedding to count as L2-normalised.
pub const NORM_TOLERANCE: f32 = 1e-3;

/// All users' templates for one recognition model.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    model_id: String,
    dim: usize,
    /// User name → templates (and their mean's length, for [`Rule::Mean`]).
    users: BTreeMap<String, User>,
    /// Write counter of the file this was loaded from (0 for a new store); see the module doc.
    generation: u64,
}

/// One user's templates.
#[derive(Debug, Clone, PartialEq)]
struct User {
    /// Flattened (`count × dim` floats) so matching walks memory once.
    flat: Vec<f32>,
    /// The length of the mean of the templates ([`rule::mean_norm`]), kept with them because
    /// the loop would otherwise need a `dim`-float buffer per frame to compute it. Derived
    /// from `flat` by [`User::new`], the only way a user is made, so it is never stale.
    mean_norm: f32,
}

impl User {
    fn new(flat: Vec<f32>, dim: usize) -> Self {
        let mut sum = vec![0.0f32; dim];
        for t in flat.chunks_exact(dim) {
            sum.iter_mut().zip(t).for_each(|(s, v)| *s += v);
        }
        let mean_norm = rule::mean_norm(&sum, flat.len() / dim);
        User { flat, mean_norm }
    }
}

/// Equal content (model, dimension, users and templates); the generation is not content.
impl PartialEq for TemplateStore {
    fn eq(&self, other: &Self) -> bool {
        self.model_id == other.model_id && self.dim == other.dim && self.users == other.users
    }
}

fn store_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Store {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Whether anything is at the store path (a symlink counts: it is refused when read).
pub fn exists(path: &Path) -> Result<bool> {
    securefs::exists(path).map_err(|r| store_err(path, r))
}

/// The error for a store that is not there.
pub fn missing(path: &Path) -> Error {
    store_err(path, "does not exist (no user is enrolled)")
}

/// The message for a store of format version 1 (templates in clear), which is refused.
const V1_REFUSED: &str = "format version 1 holds the templates in clear and is no longer \
                          accepted: move it away and re-enrol every user with `facegate enroll`";

/// Errors with the re-enrol message if the store at `path` is of format version 1 (used when
/// its device key is missing, so that an old store is not reported as a missing key).
pub fn refuse_legacy(path: &Path) -> Result<()> {
    let (bytes, _) =
        securefs::read_private(path, MAX_FILE_BYTES).map_err(|r| store_err(path, r))?;
    if bytes.len() >= 12 && bytes[..8] == MAGIC && bytes[8..12] == 1u32.to_le_bytes() {
        return Err(store_err(path, V1_REFUSED));
    }
    Ok(())
}

/// Checks a user name: 1..=64 characters, the first alphanumeric, the rest alphanumeric or
/// `_ - .` — so names are safe in logs, file names and command lines (no path separators,
/// no `..`, no whitespace or control characters).
pub fn validate_user_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Msg(format!("user name {name:?}: {why}")));
    let count = name.chars().count();
    if count == 0 {
        return bad("is empty");
    }
    if count > MAX_NAME_CHARS {
        return bad(&format!("is longer than {MAX_NAME_CHARS} characters"));
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(char::is_alphanumeric) {
        return bad("must start with a letter or digit");
    }
    if let Some(c) = chars.find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return bad(&format!(
            "character {c:?} is not allowed (letters, digits, '_', '-', '.')"
        ));
    }
    Ok(())
}

/// Checks one embedding: right dimension, finite, L2-normalised.
fn validate_embedding(v: &[f32], dim: usize, what: &str) -> Result<()> {
    if v.len() != dim {
        return Err(Error::Shape {
            what: what.to_string(),
            expected: format!("{dim} floats"),
            got: format!("{} floats", v.len()),
        });
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Msg(format!(
            "{what}: element {i} is not finite ({})",
            v[i]
        )));
    }
    let norm2: f32 = v.iter().map(|x| x * x).sum();
    if (norm2 - 1.0).abs() > NORM_TOLERANCE {
        return Err(Error::Msg(format!(
            "{what}: not L2-normalised (squared norm {norm2})"
        )));
    }
    Ok(())
}

fn validate_model(model_id: &str, dim: usize) -> std::result::Result<(), String> {
    if model_id.is_empty() || model_id.len() > MAX_MODEL_ID_BYTES {
        return Err(format!(
            "model id must be 1..={MAX_MODEL_ID_BYTES} bytes, got {}",
            model_id.len()
        ));
    }
    if model_id.chars().any(char::is_control) {
        return Err(format!("model id {model_id:?} contains control characters"));
    }
    if dim == 0 || dim > MAX_DIM {
        return Err(format!("embedding dimension {dim} is not in 1..={MAX_DIM}"));
    }
    Ok(())
}

impl TemplateStore {
    /// An empty store for the model `model_id` producing `dim`-float embeddings.
    pub fn new(model_id: impl Into<String>, dim: usize) -> Result<Self> {
        let model_id = model_id.into();
        validate_model(&model_id, dim).map_err(|r| Error::Msg(format!("template store: {r}")))?;
        Ok(TemplateStore {
            model_id,
            dim,
            users: BTreeMap::new(),
            generation: 0,
        })
    }

    /// The identity of the model the templates were made with.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The generation of the file this store was loaded from (0 for a new store).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Sets the generation the next [`TemplateStore::save`] writes.
    pub fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// True when no user is enrolled.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Number of enrolled users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Enrolled users and their template counts, in name order.
    pub fn users(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.users
            .iter()
            .map(move |(name, u)| (name.as_str(), u.flat.len() / self.dim))
    }

    /// The templates of `user`, in the order they were added (`None` for no such user).
    pub fn templates(&self, user: &str) -> Option<std::slice::ChunksExact<'_, f32>> {
        self.users.get(user).map(|u| u.flat.chunks_exact(self.dim))
    }

    /// Adds templates to `user` (creating the user). Every template is validated first; on
    /// any error nothing is added.
    pub fn add_templates(&mut self, user: &str, templates: Vec<Vec<f32>>) -> Result<()> {
        validate_user_name(user)?;
        if templates.is_empty() {
            return Err(Error::Msg(format!("user {user:?}: no templates to add")));
        }
        for (i, t) in templates.iter().enumerate() {
            validate_embedding(t, self.dim, &format!("user {user:?} template {i}"))?;
        }
        let existing = self.users.get(user).map_or(0, |u| u.flat.len() / self.dim);
        if existing + templates.len() > MAX_TEMPLATES_PER_USER {
            return Err(Error::Msg(format!(
                "user {user:?}: {existing} + {} templates exceeds the limit of {MAX_TEMPLATES_PER_USER}",
                templates.len()
            )));
        }
        let mut flat = self.users.remove(user).map(|u| u.flat).unwrap_or_default();
        flat.reserve(templates.len() * self.dim);
        for t in templates {
            flat.extend_from_slice(&t);
        }
        self.users
            .insert(user.to_string(), User::new(flat, self.dim));
        Ok(())
    }

    /// Removes `name` and all its templates; `Ok(false)` if there was no such user.
    pub fn remove_user(&mut self, name: &str) -> Result<bool> {
        validate_user_name(name)?;
        Ok(self.users.remove(name).is_some())
    }

    /// The user who scores highest against `query` under `rule`, and that score: each user's
    /// score is [`rule::rule_score`] of the cosines of `query` with their templates (templates
    /// and query are L2-normalised, so cosine = dot product). `Ok(None)` when no user is
    /// enrolled. Errors on a query of the wrong dimension, non-finite or not normalised — an
    /// un-normalised query could score above any threshold, so it is refused rather than
    /// matched. Ties go to the first name in order. Allocates nothing (the cosines are fed to
    /// a [`Scorer`] one by one, and the means' lengths were computed when the users were
    /// added or loaded).
    pub fn best_match(&self, query: &[f32], rule: Rule) -> Result<Option<(&str, f32)>> {
        validate_embedding(query, self.dim, "query embedding")?;
        let mut best: Option<(&str, f32)> = None;
        for (name, u) in &self.users {
            let mut scorer = Scorer::new(rule);
            for t in u.flat.chunks_exact(self.dim) {
                scorer.push(t.iter().zip(query).map(|(a, b)| a * b).sum());
            }
            let s = scorer.finish(u.mean_norm);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((name.as_str(), s));
            }
        }
        Ok(best)
    }

    /// Refuses a store made for another model or dimension; `path` is named in the message.
    pub fn check_model(&self, path: &Path, model_id: &str, dim: usize) -> Result<()> {
        if self.model_id != model_id {
            return Err(store_err(
                path,
                format!(
                    "made with model {:?}, but the running model is {:?}: re-enrol",
                    self.model_id, model_id
                ),
            ));
        }
        if self.dim != dim {
            return Err(store_err(
                path,
                format!(
                    "holds {}-d embeddings, but the model produces {dim}-d: re-enrol",
                    self.dim
                ),
            ));
        }
        Ok(())
    }

    /// The clear payload (see the module doc).
    fn payload(&self) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&(self.dim as u32).to_le_bytes());
        p.extend_from_slice(&(self.model_id.len() as u16).to_le_bytes());
        p.extend_from_slice(self.model_id.as_bytes());
        p.extend_from_slice(&(self.users.len() as u32).to_le_bytes());
        for (name, u) in &self.users {
            p.extend_from_slice(&(name.len() as u16).to_le_bytes());
            p.extend_from_slice(name.as_bytes());
            p.extend_from_slice(&((u.flat.len() / self.dim) as u32).to_le_bytes());
            for x in &u.flat {
                p.extend_from_slice(&x.to_le_bytes());
            }
        }
        p
    }

    /// Serialises and seals the store under `key` with its generation (see the module doc).
    pub fn to_bytes(&self, key: &DeviceKey) -> Result<Vec<u8>> {
        key.seal(&MAGIC, VERSION, self.generation, &self.payload())
    }

    /// Opens and parses a sealed store; `path` is only used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path, key: &DeviceKey) -> Result<Self> {
        let err = |r: String| store_err(path, r);
        let hint = |v: u32| (v == 1).then(|| V1_REFUSED.to_string());
        let (generation, payload) = key.open(bytes, &MAGIC, VERSION, &hint).map_err(err)?;
        let mut store =
            Self::parse_payload(&payload).map_err(|r| err(format!("corrupt payload: {r}")))?;
        store.generation = generation;
        Ok(store)
    }

    fn parse_payload(payload: &[u8]) -> std::result::Result<Self, String> {
        let mut c = Cursor { buf: payload };
        let dim = c.u32()? as usize;
        let id_len = c.u16()? as usize;
        let model_id = std::str::from_utf8(c.take(id_len)?)
            .map_err(|_| "model id is not UTF-8".to_string())?
            .to_string();
        validate_model(&model_id, dim)?;
        let user_count = c.u32()?;
        let mut users = BTreeMap::new();
        for _ in 0..user_count {
            let name_len = c.u16()? as usize;
            let name = std::str::from_utf8(c.take(name_len)?)
                .map_err(|_| "user name is not UTF-8".to_string())?
                .to_string();
            validate_user_name(&name).map_err(|e| e.to_string())?;
            let count = c.u32()? as usize;
            if count == 0 || count > MAX_TEMPLATES_PER_USER {
                return Err(format!("user {name:?}: template count {count}"));
            }
            // The byte length is checked by `take` before anything is allocated from it.
            let raw = c.take(count * dim * 4)?;
            let flat: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect();
            for (i, t) in flat.chunks_exact(dim).enumerate() {
                validate_embedding(t, dim, &format!("user {name:?} template {i}"))
                    .map_err(|e| e.to_string())?;
            }
            if users.insert(name.clone(), User::new(flat, dim)).is_some() {
                return Err(format!("user {name:?} appears twice"));
            }
        }
        if !c.buf.is_empty() {
            return Err(format!(
                "{} unexpected bytes after the last user",
                c.buf.len()
            ));
        }
        Ok(TemplateStore {
            model_id,
            dim,
            users,
            generation: 0,
        })
    }

    /// Loads the store at `path` for the unlock loop. A missing, unreadable, symlinked,
    /// non-private, truncated, corrupt, foreign-key or wrong-version file is an error (fail
    /// closed).
    pub fn load(path: &Path, key: &DeviceKey) -> Result<Self> {
        Ok(Self::load_with_meta(path, key)?.0)
    }

    /// [`TemplateStore::load`], also returning the metadata of the file that was read (the
    /// loop watches it to notice a new store).
    pub fn load_with_meta(path: &Path, key: &DeviceKey) -> Result<(Self, std::fs::Metadata)> {
        let (bytes, meta) = securefs::read_private(path, MAX_FILE_BYTES).map_err(|r| {
            if r == "does not exist" {
                missing(path)
            } else {
                store_err(path, r)
            }
        })?;
        Ok((Self::from_bytes(&bytes, path, key)?, meta))
    }

    /// [`TemplateStore::load`] followed by [`TemplateStore::check_model`].
    pub fn load_for_model(
        path: &Path,
        key: &DeviceKey,
        model_id: &str,
        dim: usize,
    ) -> Result<Self> {
        let store = Self::load(path, key)?;
        store.check_model(path, model_id, dim)?;
        Ok(store)
    }

    /// For enrolment only: a missing file gives an empty store for the model; an existing
    /// file must load cleanly and belong to the same model (it is never overwritten blindly).
    pub fn load_or_empty_for_enrol(
        path: &Path,
        key: &DeviceKey,
        model_id: &str,
        dim: usize,
    ) -> Result<Self> {
        match securefs::exists(path).map_err(|r| store_err(path, r))? {
            false => Self::new(model_id, dim),
            true => Self::load_for_model(path, key, model_id, dim),
        }
    }

    /// Writes the store sealed under `key` atomically to `path` (see the module doc).
    pub fn save(&self, path: &Path, key: &DeviceKey) -> Result<()> {
        self.save_with_hook(path, key, |_| Ok(()))
    }

    /// [`TemplateStore::save`], calling `hook` after each [`SaveStage`]. A hook error is
    /// treated like an I/O failure at that point: before the rename the temp file is removed
    /// and the old store is untouched.
    pub fn save_with_hook(
        &self,
        path: &Path,
        key: &DeviceKey,
        mut hook: impl FnMut(SaveStage) -> io::Result<()>,
    ) -> Result<()> {
        let bytes = self.to_bytes(key)?;
        securefs::atomic_write(path, &bytes, &mut hook).map_err(|r| store_err(path, r))
    }
}

/// A bounds-checked reader over the payload.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!(
                "needs {n} more bytes, only {} left",
                self.buf.len()
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn key() -> DeviceKey {
        DeviceKey::generate().unwrap()
    }

    /// Writes `bytes` as a private (0600) file, as the store's own writer would.
    fn write_private(path: &Path, bytes: &[u8]) {
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "fgt-store-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            // private, whatever the umask: a folder others may write is refused
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
            TempDir(p)
        }
        fn entries(&self) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Unit vector along axis `i` of a 4-d space.
    fn e(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; 4];
        v[i] = 1.0;
        v
    }

    fn sample() -> TemplateStore {
        let mut s = TemplateStore::new("sha256:abc", 4).unwrap();
        s.add_templates("alice", vec![e(0), e(1)]).unwrap();
        // (0.6, 0.8, 0, 0): squared norm 0.36 + 0.64 = 1.
        s.add_templates("bob", vec![vec![0.6, 0.8, 0.0, 0.0]])
            .unwrap();
        s
    }

    fn msg(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn best_match_is_max_cosine_over_all_templates() {
        let s = sample();
        // Query e(0): alice 1.0 (template e0), bob 0.6 -> alice, 1.0.
        assert_eq!(
            s.best_match(&e(0), Rule::Best).unwrap(),
            Some(("alice", 1.0))
        );
        // Query (0.8, 0.6, 0, 0): alice max(0.8, 0.6) = 0.8; bob 0.48 + 0.48 = 0.96 -> bob.
        let (u, sc) = s
            .best_match(&[0.8, 0.6, 0.0, 0.0], Rule::Best)
            .unwrap()
            .unwrap();
        assert_eq!(u, "bob");
        assert!((sc - 0.96).abs() < 1e-6, "{sc}");
        // Query e(2): all scores 0 -> tie, first name in order.
        assert_eq!(
            s.best_match(&e(2), Rule::Best).unwrap(),
            Some(("alice", 0.0))
        );
        // Query -e(0): alice max(-1, 0) = 0; bob -0.6 -> alice 0.
        let q: Vec<f32> = e(0).iter().map(|x| -x).collect();
        assert_eq!(s.best_match(&q, Rule::Best).unwrap(), Some(("alice", 0.0)));
    }

    #[test]
    fn each_rule_picks_by_its_own_score() {
        // alice: e0, e1 (mean (0.5, 0.5, 0, 0), of length √0.5); bob: (0.6, 0.8, 0, 0) alone.
        let s = sample();
        let close = |got: Option<(&str, f32)>, user: &str, score: f32| {
            let (u, sc) = got.unwrap();
            assert_eq!(u, user, "{sc}");
            assert!((sc - score).abs() < 1e-6, "{user}: {sc} vs {score}");
        };
        // Query (0.8, 0.6, 0, 0): cosines alice 0.8 and 0.6, bob 0.96.
        let q = [0.8, 0.6, 0.0, 0.0];
        // best: alice 0.8 < bob 0.96.
        close(s.best_match(&q, Rule::Best).unwrap(), "bob", 0.96);
        // mean: alice (0.8 + 0.6) / 2 / √0.5 = 0.7·√2 = 0.989949 > bob 0.96.
        close(s.best_match(&q, Rule::Mean).unwrap(), "alice", 0.989_949_5);
        // top2: alice (0.8 + 0.6) / 2 = 0.7 < bob 0.96 (one template: its cosine).
        close(s.best_match(&q, Rule::Top2).unwrap(), "bob", 0.96);
        // Query e0: cosines alice 1 and 0, bob 0.6.
        let q = e(0);
        close(s.best_match(&q, Rule::Best).unwrap(), "alice", 1.0);
        // mean: 0.5 / √0.5 = √0.5 = 0.707107 > 0.6.
        close(
            s.best_match(&q, Rule::Mean).unwrap(),
            "alice",
            std::f32::consts::FRAC_1_SQRT_2,
        );
        // top2: 0.5 < 0.6.
        close(s.best_match(&q, Rule::Top2).unwrap(), "bob", 0.6);
    }

    #[test]
    fn a_one_template_user_scores_that_cosine_under_every_rule() {
        let mut s = TemplateStore::new("m", 4).unwrap();
        s.add_templates("bob", vec![vec![0.6, 0.8, 0.0, 0.0]])
            .unwrap();
        for rule in Rule::ALL {
            let (u, sc) = s.best_match(&[0.8, 0.6, 0.0, 0.0], rule).unwrap().unwrap();
            assert_eq!(u, "bob");
            assert!((sc - 0.96).abs() < 1e-6, "{rule}: {sc}");
        }
    }

    #[test]
    fn ties_go_to_the_first_name_under_every_rule() {
        // amy and zed hold the same templates, zed added first: amy still wins every tie.
        let mut s = TemplateStore::new("m", 4).unwrap();
        s.add_templates("zed", vec![e(0), e(1)]).unwrap();
        s.add_templates("amy", vec![e(1), e(0)]).unwrap();
        for rule in Rule::ALL {
            for q in [e(0), e(2), vec![0.8, 0.6, 0.0, 0.0]] {
                let (u, _) = s.best_match(&q, rule).unwrap().unwrap();
                assert_eq!(u, "amy", "{rule} {q:?}");
            }
        }
        // A lower score never wins by coming first: amy (e2 only) 0 < zed.
        let mut s = TemplateStore::new("m", 4).unwrap();
        s.add_templates("amy", vec![e(2)]).unwrap();
        s.add_templates("zed", vec![e(0), e(1)]).unwrap();
        for rule in Rule::ALL {
            assert_eq!(
                s.best_match(&e(0), rule).unwrap().unwrap().0,
                "zed",
                "{rule}"
            );
        }
    }

    #[test]
    fn the_mean_is_of_all_templates_however_they_were_added_and_survives_a_reload() {
        // alice enrolled twice, one template each time: the mean is of both (a stale length
        // of the first template alone, 1, would give (0.8 + 0.6) / 2 = 0.7).
        let mut s = TemplateStore::new("sha256:abc", 4).unwrap();
        s.add_templates("alice", vec![e(0)]).unwrap();
        s.add_templates("alice", vec![e(1)]).unwrap();
        let q = [0.8, 0.6, 0.0, 0.0];
        let (_, sc) = s.best_match(&q, Rule::Mean).unwrap().unwrap();
        assert!((sc - 0.989_949_5).abs() < 1e-6, "{sc}");
        // The length is not in the file: the loaded store computes it again.
        let d = TempDir::new("mean");
        let path = d.0.join("t.fgt");
        let k = key();
        s.save(&path, &k).unwrap();
        let loaded = TemplateStore::load(&path, &k).unwrap();
        assert_eq!(loaded, s);
        let (_, sc) = loaded.best_match(&q, Rule::Mean).unwrap().unwrap();
        assert!((sc - 0.989_949_5).abs() < 1e-6, "{sc}");
    }

    #[test]
    fn templates_that_cancel_out_never_match_under_mean() {
        // e0 and -e0: the mean has no direction. Under mean that user scores -1 and bob,
        // the only other user, wins; under best the user still matches e0 exactly.
        let mut s = TemplateStore::new("m", 4).unwrap();
        s.add_templates("alice", vec![e(0), e(0).iter().map(|x| -x).collect()])
            .unwrap();
        s.add_templates("bob", vec![vec![0.6, 0.8, 0.0, 0.0]])
            .unwrap();
        let (u, sc) = s.best_match(&e(0), Rule::Mean).unwrap().unwrap();
        assert!(u == "bob" && (sc - 0.6).abs() < 1e-6, "{u} {sc}");
        assert_eq!(
            s.best_match(&e(0), Rule::Best).unwrap(),
            Some(("alice", 1.0))
        );
    }

    #[test]
    fn best_match_on_empty_store_is_none_and_bad_queries_error() {
        let s = TemplateStore::new("m", 4).unwrap();
        let full = sample();
        for rule in Rule::ALL {
            assert_eq!(s.best_match(&e(1), rule).unwrap(), None);
            assert!(matches!(
                full.best_match(&[1.0, 0.0], rule),
                Err(Error::Shape { .. })
            ));
            assert!(full.best_match(&[f32::NAN, 0.0, 0.0, 0.0], rule).is_err());
            // Norm 10: would score 10 against alice if it were accepted.
            assert!(full.best_match(&[10.0, 0.0, 0.0, 0.0], rule).is_err());
        }
    }

    #[test]
    fn users_add_remove_and_validation() {
        let mut s = sample();
        let users: Vec<(&str, usize)> = s.users().collect();
        assert_eq!(users, vec![("alice", 2), ("bob", 1)]);
        s.add_templates("alice", vec![e(3)]).unwrap();
        assert_eq!(s.users().next(), Some(("alice", 3)));
        assert!(s.remove_user("bob").unwrap());
        assert!(!s.remove_user("bob").unwrap());
        assert_eq!(s.user_count(), 1);

        for bad in [
            "",
            "../etc",
            "a/b",
            ".hidden",
            "a b",
            "tab\t",
            &"x".repeat(65),
        ] {
            assert!(s.add_templates(bad, vec![e(0)]).is_err(), "{bad:?}");
            assert!(s.remove_user(bad).is_err(), "{bad:?}");
        }
        assert!(s.add_templates("José_2.b-c", vec![e(0)]).is_ok());
        // Wrong dim, not normalised, non-finite, empty: refused and nothing added.
        let before = s.clone();
        assert!(matches!(
            s.add_templates("carol", vec![e(0), vec![1.0; 3]]),
            Err(Error::Shape { .. })
        ));
        assert!(s
            .add_templates("carol", vec![vec![0.5; 4], vec![0.9; 4]])
            .is_err());
        assert!(s
            .add_templates("carol", vec![vec![f32::INFINITY, 0.0, 0.0, 0.0]])
            .is_err());
        assert!(s.add_templates("carol", vec![]).is_err());
        assert_eq!(s, before);
        // (0.5, 0.5, 0.5, 0.5) has squared norm exactly 1: accepted.
        assert!(s.add_templates("carol", vec![vec![0.5; 4]]).is_ok());
    }

    #[test]
    fn new_refuses_bad_model_identity() {
        assert!(TemplateStore::new("", 4).is_err());
        assert!(TemplateStore::new("m", 0).is_err());
        assert!(TemplateStore::new("m", MAX_DIM + 1).is_err());
        assert!(TemplateStore::new("a\nb", 4).is_err());
    }

    #[test]
    fn bytes_layout_matches_the_documented_format() {
        let mut s = TemplateStore::new("m1", 2).unwrap();
        s.add_templates("a", vec![vec![1.0, 0.0]]).unwrap();
        s.set_generation(5);
        let p = s.payload();
        // Payload: dim(4) + id_len(2) + "m1"(2) + users(4) + name_len(2) + "a"(1)
        //          + count(4) + 2 floats(8) = 27 bytes.
        assert_eq!(p.len(), 27);
        assert_eq!(&p[0..4], &[2, 0, 0, 0]);
        assert_eq!(&p[4..6], &[2, 0]);
        assert_eq!(&p[6..8], b"m1");
        assert_eq!(&p[8..12], &[1, 0, 0, 0]);
        assert_eq!(&p[12..14], &[1, 0]);
        assert_eq!(&p[14..15], b"a");
        assert_eq!(&p[15..19], &[1, 0, 0, 0]);
        // 1.0f32 = 0x3F800000, little-endian.
        assert_eq!(&p[19..23], &[0x00, 0x00, 0x80, 0x3F]);
        assert_eq!(&p[23..27], &[0, 0, 0, 0]);
        // Container: 40-byte header, then 27 + 16 (tag) sealed bytes.
        let b = s.to_bytes(&key()).unwrap();
        assert_eq!(b.len(), 40 + 27 + 16);
        assert_eq!(&b[0..8], b"FGTSTORE");
        assert_eq!(&b[8..12], &[2, 0, 0, 0]);
        assert_eq!(&b[12..20], &[5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[32..40], &[43, 0, 0, 0, 0, 0, 0, 0]);
        // The templates are not in clear: the payload's name-and-count run is absent.
        assert!(!b.windows(7).any(|w| w == &p[12..19]));
    }

    #[test]
    fn save_load_round_trip_is_exact_and_mode_0600() {
        let d = TempDir::new("rt");
        let path = d.0.join("templates.fgt");
        let mut s = sample();
        // A value whose f32 bits must survive exactly.
        let x = 0.1f32;
        let y = (1.0 - x * x).sqrt();
        s.add_templates("carol", vec![vec![x, y, 0.0, 0.0]])
            .unwrap();
        let k = key();
        s.set_generation(3);
        s.save(&path, &k).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = TemplateStore::load(&path, &k).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.generation(), 3);
        assert_eq!(d.entries(), vec!["templates.fgt"]);
        // Saving again replaces the file.
        s.remove_user("carol").unwrap();
        s.save(&path, &k).unwrap();
        assert_eq!(TemplateStore::load(&path, &k).unwrap(), s);
        assert_eq!(d.entries(), vec!["templates.fgt"]);
    }

    #[test]
    fn injected_failure_before_rename_keeps_old_store_and_no_temp() {
        for stage in [SaveStage::Created, SaveStage::Written, SaveStage::Synced] {
            let d = TempDir::new("fail");
            let path = d.0.join("templates.fgt");
            let old = sample();
            let k = key();
            old.save(&path, &k).unwrap();
            let mut new = old.clone();
            new.add_templates("mallory", vec![e(3)]).unwrap();
            let mut seen = Vec::new();
            let r = new.save_with_hook(&path, &k, |s| {
                seen.push(s);
                if s == stage {
                    Err(io::Error::other("injected"))
                } else {
                    Ok(())
                }
            });
            let m = msg(r.unwrap_err());
            assert!(m.contains("injected") && m.contains("templates.fgt"), "{m}");
            assert_eq!(seen.last(), Some(&stage));
            assert_eq!(TemplateStore::load(&path, &k).unwrap(), old, "{stage:?}");
            assert_eq!(d.entries(), vec!["templates.fgt"], "{stage:?}");
        }
    }

    #[test]
    fn injected_failure_after_rename_reports_but_new_store_is_in_place() {
        let d = TempDir::new("after");
        let path = d.0.join("t.fgt");
        let s = sample();
        let k = key();
        let r = s.save_with_hook(&path, &k, |st| {
            if st == SaveStage::Renamed {
                Err(io::Error::other("dir sync"))
            } else {
                Ok(())
            }
        });
        assert!(r.is_err());
        assert_eq!(TemplateStore::load(&path, &k).unwrap(), s);
        assert_eq!(d.entries(), vec!["t.fgt"]);
    }

    #[test]
    fn failed_first_save_leaves_nothing() {
        let d = TempDir::new("first");
        let path = d.0.join("t.fgt");
        let k = key();
        let r = sample().save_with_hook(&path, &k, |st| {
            if st == SaveStage::Written {
                Err(io::Error::other("disk full"))
            } else {
                Ok(())
            }
        });
        assert!(r.is_err());
        assert!(d.entries().is_empty());
        assert!(msg(TemplateStore::load(&path, &k).unwrap_err()).contains("does not exist"));
    }

    #[test]
    fn load_refuses_missing_corrupt_truncated_wrong_version() {
        let d = TempDir::new("bad");
        let path = d.0.join("t.fgt");
        let name = path.display().to_string();
        let k = key();
        let good = sample().to_bytes(&k).unwrap();
        let check = |bytes: &[u8], needle: &str| {
            write_private(&path, bytes);
            let m = msg(TemplateStore::load(&path, &k).unwrap_err());
            assert!(m.contains(&name) && m.contains(needle), "{m}");
            assert!(!m.contains('\n'), "one line: {m}");
        };
        // Missing.
        let m = msg(TemplateStore::load(&d.0.join("nope.fgt"), &k).unwrap_err());
        assert!(
            m.contains("nope.fgt") && m.contains("does not exist"),
            "{m}"
        );
        // Empty and short.
        check(&[], "truncated");
        check(&good[..30], "truncated");
        // Truncated sealed data.
        check(&good[..good.len() - 1], "truncated");
        // Extra bytes.
        let mut longer = good.clone();
        longer.push(0);
        check(&longer, "trailing bytes");
        // Bad magic.
        let mut b = good.clone();
        b[0] = b'X';
        check(&b, "bad magic");
        // Version 3.
        let mut b = good.clone();
        b[8] = 3;
        check(&b, "version 3");
        // One flipped bit in the ciphertext, in the nonce, in the generation.
        for i in [good.len() - 1, 50, 25, 12] {
            let mut b = good.clone();
            b[i] ^= 0x01;
            check(&b, "authentication failed");
        }
        // Sealed under another device's key.
        check(&sample().to_bytes(&key()).unwrap(), "another device key");
        // A directory is not a store (one inside the private folder: the system temp folder
        // itself, being world-writable, is refused before its entries are looked at).
        let sub = d.0.join("sub");
        fs::create_dir(&sub).unwrap();
        let m = msg(TemplateStore::load(&sub, &k).unwrap_err());
        assert!(m.contains("not a regular file"), "{m}");
    }

    #[test]
    fn every_single_byte_change_of_a_store_is_refused() {
        let d = TempDir::new("flip");
        let path = d.0.join("t.fgt");
        let k = key();
        let good = sample().to_bytes(&k).unwrap();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] = b[i].wrapping_add(1 + (i % 255) as u8);
            write_private(&path, &b);
            assert!(TemplateStore::load(&path, &k).is_err(), "byte {i}");
        }
        write_private(&path, &good);
        assert_eq!(TemplateStore::load(&path, &k).unwrap(), sample());
    }

    #[test]
    fn version_1_clear_stores_are_refused_with_a_re_enrol_message() {
        use sha2::{Digest, Sha256};
        let d = TempDir::new("v1");
        let path = d.0.join("t.fgt");
        let p = sample().payload();
        let mut b = Vec::new();
        b.extend_from_slice(b"FGTSTORE");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&(p.len() as u64).to_le_bytes());
        b.extend_from_slice(&Sha256::digest(&p));
        b.extend_from_slice(&p);
        write_private(&path, &b);
        let m = msg(TemplateStore::load(&path, &key()).unwrap_err());
        assert!(m.contains("version 1") && m.contains("re-enrol"), "{m}");
    }

    #[test]
    fn open_modes_and_symlinks_are_refused() {
        let d = TempDir::new("mode");
        let path = d.0.join("t.fgt");
        let k = key();
        sample().save(&path, &k).unwrap();
        for mode in [0o644, 0o666, 0o660, 0o604] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let m = msg(TemplateStore::load(&path, &k).unwrap_err());
            assert!(
                m.contains("t.fgt") && m.contains(&format!("{mode:04o}")),
                "{m}"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(TemplateStore::load(&path, &k).is_ok());
        // A symlinked store path: refused for reading, and never replaced by a regular file.
        let link = d.0.join("link.fgt");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let m = msg(TemplateStore::load(&link, &k).unwrap_err());
        assert!(m.contains("link.fgt") && m.contains("symbolic link"), "{m}");
        let mut s = sample();
        s.add_templates("mallory", vec![e(3)]).unwrap();
        let m = msg(s.save(&link, &k).unwrap_err());
        assert!(m.contains("symbolic link"), "{m}");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(TemplateStore::load(&path, &k).unwrap(), sample());
    }

    /// Seals an arbitrary payload as a store.
    fn wrap(payload: &[u8], k: &DeviceKey) -> Vec<u8> {
        k.seal(&MAGIC, VERSION, 0, payload).unwrap()
    }

    #[test]
    fn sealed_but_malformed_payloads_are_refused_without_panic() {
        let p = Path::new("x.fgt");
        let k = key();
        let mut base = Vec::new();
        base.extend_from_slice(&4u32.to_le_bytes());
        base.extend_from_slice(&1u16.to_le_bytes());
        base.push(b'm');
        // Huge user count with no data behind it.
        let mut a = base.clone();
        a.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            msg(TemplateStore::from_bytes(&wrap(&a, &k), p, &k).unwrap_err()).contains("corrupt")
        );
        // One user claiming 1000 templates but holding none.
        let mut b = base.clone();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.push(b'a');
        b.extend_from_slice(&1000u32.to_le_bytes());
        assert!(TemplateStore::from_bytes(&wrap(&b, &k), p, &k).is_err());
        // A user name with a path separator.
        let mut c = base.clone();
        c.extend_from_slice(&1u32.to_le_bytes());
        c.extend_from_slice(&3u16.to_le_bytes());
        c.extend_from_slice(b"a/b");
        c.extend_from_slice(&1u32.to_le_bytes());
        for x in [1.0f32, 0.0, 0.0, 0.0] {
            c.extend_from_slice(&x.to_le_bytes());
        }
        assert!(TemplateStore::from_bytes(&wrap(&c, &k), p, &k).is_err());
        // The same with a good name loads.
        let mut g = base.clone();
        g.extend_from_slice(&1u32.to_le_bytes());
        g.extend_from_slice(&1u16.to_le_bytes());
        g.push(b'a');
        g.extend_from_slice(&1u32.to_le_bytes());
        for x in [1.0f32, 0.0, 0.0, 0.0] {
            g.extend_from_slice(&x.to_le_bytes());
        }
        let s = TemplateStore::from_bytes(&wrap(&g, &k), p, &k).unwrap();
        assert_eq!(s.users().collect::<Vec<_>>(), vec![("a", 1)]);
        // Dimension 0.
        let mut z = g.clone();
        z[0..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(TemplateStore::from_bytes(&wrap(&z, &k), p, &k).is_err());
        // Every truncation of a valid payload, re-checksummed, errors instead of panicking.
        for n in 0..g.len() {
            assert!(
                TemplateStore::from_bytes(&wrap(&g[..n], &k), p, &k).is_err(),
                "n = {n}"
            );
        }
    }

    #[test]
    fn model_binding_and_enrol_loading() {
        let d = TempDir::new("model");
        let path = d.0.join("t.fgt");
        // Enrol: missing file -> empty store for the model.
        let k = key();
        let mut s = TemplateStore::load_or_empty_for_enrol(&path, &k, "sha256:abc", 4).unwrap();
        assert!(s.is_empty());
        s.add_templates("alice", vec![e(0)]).unwrap();
        s.save(&path, &k).unwrap();
        // Same model loads; another model or dim is refused, for unlock and enrol alike.
        assert!(TemplateStore::load_for_model(&path, &k, "sha256:abc", 4).is_ok());
        let m = msg(TemplateStore::load_for_model(&path, &k, "sha256:def", 4).unwrap_err());
        assert!(m.contains("sha256:def") && m.contains("t.fgt"), "{m}");
        assert!(TemplateStore::load_for_model(&path, &k, "sha256:abc", 8).is_err());
        assert!(TemplateStore::load_or_empty_for_enrol(&path, &k, "sha256:def", 4).is_err());
        // Enrol never overwrites a corrupt store with an empty one.
        write_private(&path, b"garbage");
        assert!(TemplateStore::load_or_empty_for_enrol(&path, &k, "sha256:abc", 4).is_err());
    }
}
