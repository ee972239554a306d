//! The device key and the sealed-file container: the template store and the policy state are
//! encrypted and authenticated with ChaCha20-Poly1305 under a 256-bit key only this device
//! (its root user) holds.
//!
//! Why: a sha256 over the store is a checksum, not a seal — anyone who could write the file
//! could also recompute it (issue 12, finding 7: a stranger's embedding planted in a 0666
//! store let the stranger in), and the templates, which are biometric data, lay in clear.
//! With an AEAD under a private key a store (or policy state) can only be produced by
//! someone who can read the key, and reading the templates needs the key too.
//!
//! # Key file
//! `FGTKEY01` followed by 32 random bytes from the OS (`getrandom`), mode 0600, owned by the
//! user running facegate, created at the first enrolment (never replaced: a lost key means
//! re-enrolling). Its path is `[store].key` in the board profile, by default beside the store
//! (`<store>.key`). A key file that others can read or write, a symlink, or one of another
//! size is refused.
//!
//! **Backing it by a TPM.** On a board with a TPM 2.0 (or a firmware TPM), keep the key sealed
//! by the TPM instead of on the SD card: seal the 40-byte key file once
//! (`systemd-creds encrypt --with-key=tpm2 store.key store.key.cred`, or `tpm2_create` +
//! `tpm2_unseal` with tpm2-tools, optionally bound to PCRs so a modified boot chain cannot
//! unseal it), delete the clear copy, and have the service unseal it at start into a tmpfs
//! (`LoadCredentialEncrypted=` in the systemd unit puts it under `$CREDENTIALS_DIRECTORY`,
//! mode 0400, owned by the service user) and point `[store].key` there. An SD card pulled
//! from the board then holds only ciphertext.
//!
//! # Container (all integers little-endian)
//! ```text
//! offset size  field
//!      0    8  magic (b"FGTSTORE" or b"FGTSTATE")
//!      8    4  version u32
//!     12    8  generation u64 (bumped at every write; readers can refuse a rollback)
//!     20   12  nonce (random per write)
//!     32    8  ciphertext length u64 (plaintext + 16-byte tag)
//!     40    …  ciphertext
//! ```
//! The 40 header bytes are the AEAD's associated data, so every byte of the file is
//! authenticated: a flip anywhere is refused, and the magic keeps a state file from being
//! passed off as a store.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::error::{Error, Result};
use crate::unlock::securefs;

/// First 8 bytes of a key file.
pub const KEY_MAGIC: [u8; 8] = *b"FGTKEY01";
const KEY_LEN: usize = 32;
/// Header length of a sealed file (the associated data).
pub const HEADER_LEN: usize = 8 + 4 + 8 + 12 + 8;
const TAG_LEN: usize = 16;

/// Reads a sealed file holding one JSON value (`Ok(None)` when nothing is at `path`): the
/// small records kept beside the store (the fleet sync state and index). At most `max_len`
/// bytes; the file must be private (`securefs::read_private`).
pub fn load_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    key: &DeviceKey,
    magic: &[u8; 8],
    version: u32,
    max_len: u64,
) -> securefs::Reason<Option<T>> {
    if !securefs::exists(path)? {
        return Ok(None);
    }
    let (bytes, _) = securefs::read_private(path, max_len)?;
    let (_, pt) = key.open(&bytes, magic, version, &|_| None)?;
    serde_json::from_slice(&pt)
        .map(Some)
        .map_err(|e| format!("unreadable: {e}"))
}

/// Seals `value` as JSON and writes it atomically (0600): the other half of [`load_json`].
pub fn save_json<T: serde::Serialize>(
    path: &Path,
    key: &DeviceKey,
    magic: &[u8; 8],
    version: u32,
    value: &T,
) -> securefs::Reason<()> {
    let pt = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let bytes = key
        .seal(magic, version, 0, &pt)
        .map_err(|e| e.to_string())?;
    securefs::atomic_write(path, &bytes, &mut |_| Ok(()))
}

/// The default key path for a store: `<store>.key` beside it.
pub fn default_key_path(store: &Path) -> PathBuf {
    securefs::beside(store, ".key")
}

fn key_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Msg(format!("device key {}: {reason}", path.display()))
}

/// The 256-bit device key. Wiped from memory on drop.
pub struct DeviceKey {
    bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

impl Clone for DeviceKey {
    fn clone(&self) -> Self {
        DeviceKey { bytes: self.bytes }
    }
}

impl Drop for DeviceKey {
    fn drop(&mut self) {
        for b in self.bytes.iter_mut() {
            // SAFETY: a valid, aligned &mut u8; volatile so the wipe is not optimised away.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl DeviceKey {
    /// A fresh random key from the OS.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Msg(format!("no randomness from the OS for a key: {e}")))?;
        Ok(DeviceKey { bytes })
    }

    /// Reads the key file at `path` (see the module doc for what is refused).
    pub fn load(path: &Path) -> Result<Self> {
        let (b, _) = securefs::read_private(path, 64).map_err(|r| key_err(path, r))?;
        if b.len() != KEY_MAGIC.len() + KEY_LEN || b[..8] != KEY_MAGIC {
            return Err(key_err(
                path,
                format!(
                    "not a facegate key file ({} bytes; {} bytes starting FGTKEY01 expected)",
                    b.len(),
                    KEY_MAGIC.len() + KEY_LEN
                ),
            ));
        }
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&b[8..]);
        Ok(DeviceKey { bytes })
    }

    /// Creates a new random key file at `path` (mode 0600); fails if anything is there.
    pub fn create(path: &Path) -> Result<Self> {
        let key = Self::generate()?;
        let mut b = Vec::with_capacity(40);
        b.extend_from_slice(&KEY_MAGIC);
        b.extend_from_slice(&key.bytes);
        let r = securefs::create_new_private(path, &b);
        b.iter_mut().for_each(|x| *x = 0);
        r.map_err(|e| key_err(path, e))?;
        Ok(key)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.bytes))
    }

    /// Seals `plaintext` into a container with `magic`, `version` and `generation`.
    pub fn seal(
        &self,
        magic: &[u8; 8],
        version: u32,
        generation: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce)
            .map_err(|e| Error::Msg(format!("no randomness from the OS for a nonce: {e}")))?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(magic);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&generation.to_le_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&((plaintext.len() + TAG_LEN) as u64).to_le_bytes());
        let ct = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &out,
                },
            )
            .map_err(|_| Error::Msg("sealing failed".into()))?;
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a container sealed with [`DeviceKey::seal`]: checks the magic, then the version
    /// (`version_hint` turns a known-but-refused version into a specific message), the
    /// length, and the tag. Returns the generation and the plaintext.
    pub fn open(
        &self,
        bytes: &[u8],
        magic: &[u8; 8],
        version: u32,
        version_hint: &dyn Fn(u32) -> Option<String>,
    ) -> std::result::Result<(u64, Vec<u8>), String> {
        if bytes.len() < 12 {
            return Err(format!(
                "truncated: {} bytes, shorter than the header",
                bytes.len()
            ));
        }
        if bytes[..8] != magic[..] {
            return Err("bad magic (not a facegate file of this kind)".into());
        }
        let v = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if v != version {
            return Err(version_hint(v)
                .unwrap_or_else(|| format!("version {v}, this build reads version {version}")));
        }
        if bytes.len() < HEADER_LEN {
            return Err(format!(
                "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            ));
        }
        let generation = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes"));
        let have = (bytes.len() - HEADER_LEN) as u64;
        if len != have {
            return Err(if have < len {
                format!("truncated: header says {len} sealed bytes, file holds {have}")
            } else {
                format!("{} trailing bytes after the sealed data", have - len)
            });
        }
        let pt = self
            .cipher()
            .decrypt(
                Nonce::from_slice(&bytes[20..32]),
                Payload {
                    msg: &bytes[HEADER_LEN..],
                    aad: &bytes[..HEADER_LEN],
                },
            )
            .map_err(|_| {
                "authentication failed: modified, corrupt, or sealed under another device key"
                    .to_string()
            })?;
        Ok((generation, pt))
    }
}

/// The generation field of a sealed file, read without authenticating it (only to choose a
/// larger number for the next write).
pub fn peek_generation(bytes: &[u8]) -> Option<u64> {
    bytes
        .get(12..20)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const M: [u8; 8] = *b"FGTTEST_";
    fn no_hint(_: u32) -> Option<String> {
        None
    }

    #[test]
    fn every_single_byte_flip_is_refused_and_other_keys_cannot_open() {
        let k = DeviceKey::generate().unwrap();
        let sealed = k.seal(&M, 3, 7, b"templates go here").unwrap();
        assert_eq!(sealed.len(), HEADER_LEN + 17 + TAG_LEN);
        assert_eq!(
            k.open(&sealed, &M, 3, &no_hint).unwrap(),
            (7, b"templates go here".to_vec())
        );
        // The plaintext does not appear in the file.
        assert!(!sealed.windows(9).any(|w| w == b"templates"));
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = sealed.clone();
                b[i] ^= bit;
                assert!(
                    k.open(&b, &M, 3, &no_hint).is_err(),
                    "byte {i} bit {bit:#x}"
                );
            }
        }
        let other = DeviceKey::generate().unwrap();
        let e = other.open(&sealed, &M, 3, &no_hint).unwrap_err();
        assert!(e.contains("another device key"), "{e}");
        assert!(k.open(&sealed, b"FGTOTHER", 3, &no_hint).is_err());
        assert!(k
            .open(&sealed[..sealed.len() - 1], &M, 3, &no_hint)
            .is_err());
    }

    #[test]
    fn key_file_is_created_private_once_and_refused_when_open_or_wrong() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("store.fgt.key");
        let k = DeviceKey::create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 40);
        let back = DeviceKey::load(&p).unwrap();
        let s = k.seal(&M, 1, 0, b"x").unwrap();
        assert!(back.open(&s, &M, 1, &no_hint).is_ok());
        // Never replaced.
        assert!(DeviceKey::create(&p).is_err());
        assert!(DeviceKey::load(&p).is_ok());
        for mode in [0o644, 0o640, 0o666] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = DeviceKey::load(&p).unwrap_err().to_string();
            assert!(
                e.contains(&p.display().to_string()) && e.contains(&format!("{mode:04o}")),
                "{e}"
            );
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = d.path().join("link.key");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(DeviceKey::load(&link)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        let short = d.path().join("short.key");
        securefs::create_new_private(&short, b"FGTKEY01abc").unwrap();
        assert!(DeviceKey::load(&short).is_err());
    }
}
