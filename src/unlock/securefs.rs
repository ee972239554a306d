//! File handling for the lock's private files (template store, device key, policy state):
//! opened without following symlinks, refused when another user could read or write them,
//! written atomically, and serialised between writers with `flock`.
//!
//! Why one module: the same rules apply to all three files, and each rule closes a hole the
//! hostile test found (issue 12): a 0666 store that `nobody` rewrote with a stranger's face, a
//! symlinked store path silently replaced by a regular file, a stale `.tmp.<pid>` surviving a
//! `kill -9`, and two writers racing so one enrolment or revocation was lost; and a folder
//! other users may write, where they could swap the files without touching their modes. Every
//! function returns a one-line reason (the caller adds the file's role and path).

use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Result with a one-line reason.
pub type Reason<T> = std::result::Result<T, String>;

/// Stage of [`atomic_write`] just completed when the hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveStage {
    /// The temp file was created (empty).
    Created,
    /// All bytes were written to the temp file.
    Written,
    /// The temp file was fsynced; next is the rename over the target.
    Synced,
    /// The temp file was renamed over the target; next is the directory fsync.
    Renamed,
}

/// The folder holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `<path><suffix>`: the files kept beside the store under its name (`.key`, `.state`,
/// `.sync`, `.sync-index`, `.audit`).
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `<dir>/.<name><suffix>`: hidden companions of `path` (temp files, lock files).
fn companion(path: &Path, suffix: &str) -> Reason<PathBuf> {
    let name = path.file_name().ok_or("is not a file path")?;
    let mut n = OsString::from(".");
    n.push(name);
    n.push(suffix);
    Ok(parent_dir(path).join(n))
}

/// Refuses a file other users could read or write, or one owned by another user: the
/// templates are biometric data, and a file someone else can write can be replaced by one
/// holding their face (and a key someone else can read lets them forge such a file).
pub fn check_private(meta: &Metadata) -> Reason<()> {
    if !meta.file_type().is_file() {
        return Err("is not a regular file".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!(
            "is owned by uid {}, not by this process's uid {me}: refused",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "has mode {mode:04o}: other users can read or write it, refused (chmod 600 it)"
        ));
    }
    Ok(())
}

/// Refuses the folder of a private file when another user could write to it: they could then
/// rename or delete the files in it without any right on the files themselves — put back an
/// older store that still holds a revoked person, or remove the lockout's state — and plant
/// the temp and lock files beside them. The folder must belong to this process's user or to
/// root and be writable by its owner only (a sticky world-writable folder such as /tmp is
/// refused too: names there can be taken by anyone).
pub fn check_private_folder(path: &Path) -> Reason<()> {
    let dir = parent_dir(path);
    let meta = fs::metadata(&dir).map_err(|e| format!("its folder {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("its folder {} is not a directory", dir.display()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "its folder {} is owned by uid {}, neither this process's uid {me} nor root: refused",
            dir.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "its folder {} has mode {mode:04o}: other users could replace or delete the files in it, refused (chmod go-w {})",
            dir.display(),
            dir.display()
        ));
    }
    Ok(())
}

fn open_error(e: io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) => "is a symbolic link: refused (give the real path)".into(),
        _ if e.kind() == io::ErrorKind::NotFound => "does not exist".into(),
        _ => format!("cannot read: {e}"),
    }
}

/// Reads a private file: opened with `O_NOFOLLOW` (a symlink is refused), checked with
/// [`check_private`] on the opened descriptor (no window between check and read), at most
/// `max_len` bytes. Returns the bytes and the metadata of what was read.
pub fn read_private(path: &Path, max_len: u64) -> Reason<(Vec<u8>, Metadata)> {
    check_private_folder(path)?;
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(open_error)?;
    let meta = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    check_private(&meta)?;
    if meta.len() > max_len {
        return Err(format!(
            "is {} bytes, more than the {max_len} accepted",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    Read::by_ref(&mut f)
        .take(max_len + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max_len {
        return Err(format!("grew beyond the {max_len} bytes accepted"));
    }
    Ok((bytes, meta))
}

/// Whether anything (a file, a dangling symlink…) exists at `path`, without following it.
pub fn exists(path: &Path) -> Reason<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot stat: {e}")),
    }
}

/// Writes `bytes` to `path` atomically: a 0600 temp file `.<name>.tmp.<pid>` in the same
/// folder, written, fsynced, renamed over `path`, then the folder fsynced; `hook` is called
/// after each [`SaveStage`] (tests inject failures there). Before the rename any failure
/// removes the temp file and leaves the old `path` untouched. A `path` that is a symlink (or
/// not a regular file) is refused instead of being replaced.
pub fn atomic_write(
    path: &Path,
    bytes: &[u8],
    hook: &mut dyn FnMut(SaveStage) -> io::Result<()>,
) -> Reason<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err("is a symbolic link: refused (give the real path)".into())
        }
        Ok(m) if !m.file_type().is_file() => return Err("is not a regular file".into()),
        _ => {}
    }
    check_private_folder(path)?;
    let tmp = companion(path, &format!(".tmp.{}", std::process::id()))?;
    let dir = parent_dir(path);
    let write_tmp = |hook: &mut dyn FnMut(SaveStage) -> io::Result<()>| -> io::Result<()> {
        // A stale temp of ours (same pid after a crash) is replaced; create_new then
        // guarantees the 0600 mode applies to a file we created (and never follows a link).
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        hook(SaveStage::Created)?;
        f.write_all(bytes)?;
        hook(SaveStage::Written)?;
        f.sync_all()?;
        hook(SaveStage::Synced)?;
        fs::rename(&tmp, path)?;
        Ok(())
    };
    if let Err(e) = write_tmp(hook) {
        let _ = fs::remove_file(&tmp);
        return Err(format!("cannot write (via {}): {e}", tmp.display()));
    }
    hook(SaveStage::Renamed)
        .and_then(|_| File::open(&dir)?.sync_all())
        .map_err(|e| {
            format!(
                "written, but syncing directory {} failed: {e}",
                dir.display()
            )
        })
}

/// Creates `path` with `bytes`, mode 0600, failing if anything exists there (no symlink is
/// followed); file and folder are fsynced. For the device key, which is never replaced.
pub fn create_new_private(path: &Path, bytes: &[u8]) -> Reason<()> {
    check_private_folder(path)?;
    let r = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = r {
        // Never leave a partial key behind; but never remove what someone else put there.
        if e.kind() != io::ErrorKind::AlreadyExists {
            let _ = fs::remove_file(path);
        }
        return Err(format!("cannot create: {e}"));
    }
    File::open(parent_dir(path))
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("created, but syncing its folder failed: {e}"))
}

/// Removes the temp files `.<name>.tmp.<pid>` left beside `path` by writers that died
/// (`kill -9`, power cut). Call it only while holding the [`FileLock`] every writer of `path`
/// takes: then no live writer can own a temp file. Returns the names removed.
pub fn clean_stale_temps(path: &Path) -> Reason<Vec<PathBuf>> {
    let prefix = companion(path, ".tmp.")?;
    let prefix = prefix
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = parent_dir(path);
    let mut removed = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_temp = name
            .strip_prefix(&prefix)
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if is_temp {
            let p = entry.path();
            fs::remove_file(&p).map_err(|e| format!("cannot remove {}: {e}", p.display()))?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// An exclusive `flock` on the hidden lock file `.<name>.lock` beside a file; released on
/// drop (or when the process dies, so a `kill -9` never leaves it held).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// Blocks until the lock for `path` is ours.
    pub fn exclusive(path: &Path) -> Reason<FileLock> {
        Self::acquire(path, true)?.ok_or_else(|| "lock not taken".into())
    }

    /// Takes the lock for `path` if free; `Ok(None)` if another process holds it.
    pub fn try_exclusive(path: &Path) -> Reason<Option<FileLock>> {
        Self::acquire(path, false)
    }

    fn acquire(path: &Path, wait: bool) -> Reason<Option<FileLock>> {
        let lock_path = companion(path, ".lock")?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(|e| format!("lock file {}: {}", lock_path.display(), open_error(e)))?;
        let op = if wait {
            libc::LOCK_EX
        } else {
            libc::LOCK_EX | libc::LOCK_NB
        };
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            let r = unsafe { libc::flock(file.as_raw_fd(), op) };
            if r == 0 {
                return Ok(Some(FileLock {
                    _file: file,
                    path: lock_path,
                }));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !wait => return Ok(None),
                _ => return Err(format!("cannot lock {}: {e}", lock_path.display())),
            }
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_read_refuses_open_modes_symlinks_and_oversize() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"abc").unwrap();
        for mode in [0o644, 0o666, 0o640, 0o604, 0o601] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            let e = read_private(&p, 100).unwrap_err();
            assert!(e.contains(&format!("{mode:04o}")), "{e}");
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&p, 100).unwrap().0, b"abc");
        assert!(read_private(&p, 2).unwrap_err().contains("more than"));
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(read_private(&link, 100)
            .unwrap_err()
            .contains("symbolic link"));
        assert!(read_private(&d.path().join("none"), 100)
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn a_folder_other_users_can_write_is_refused_for_reading_and_writing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"abc").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let chmod = |m: u32| fs::set_permissions(d.path(), fs::Permissions::from_mode(m)).unwrap();
        for mode in [0o777, 0o775, 0o757, 0o1777, 0o730] {
            chmod(mode);
            let e = read_private(&p, 100).unwrap_err();
            assert!(
                e.contains(&format!("{mode:04o}")) && e.contains("folder"),
                "{e}"
            );
            let e = atomic_write(&p, b"new", &mut |_| Ok(())).unwrap_err();
            assert!(e.contains(&format!("{mode:04o}")), "{e}");
            let e = create_new_private(&d.path().join("k"), b"key").unwrap_err();
            assert!(e.contains(&format!("{mode:04o}")), "{e}");
            assert!(!d.path().join("k").exists());
        }
        for mode in [0o700, 0o755, 0o750] {
            chmod(mode);
            assert_eq!(read_private(&p, 100).unwrap().0, b"abc", "{mode:04o}");
        }
        chmod(0o700);
        atomic_write(&p, b"new", &mut |_| Ok(())).unwrap();
        assert_eq!(read_private(&p, 100).unwrap().0, b"new");
    }

    #[test]
    fn atomic_write_refuses_to_replace_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        fs::write(&target, b"old").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = atomic_write(&link, b"new", &mut |_| Ok(())).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"old");
    }

    #[test]
    fn stale_temps_are_removed_and_others_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.fgt");
        for n in [
            ".t.fgt.tmp.123",
            ".t.fgt.tmp.9",
            ".t.fgt.tmp.x",
            "t.fgt",
            ".u.fgt.tmp.1",
        ] {
            fs::write(d.path().join(n), b"").unwrap();
        }
        let mut removed = clean_stale_temps(&p).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            vec![
                d.path().join(".t.fgt.tmp.123"),
                d.path().join(".t.fgt.tmp.9")
            ]
        );
        let mut left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![".t.fgt.tmp.x", ".u.fgt.tmp.1", "t.fgt"]);
    }

    #[test]
    fn lock_is_exclusive_between_descriptors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.fgt");
        let held = FileLock::exclusive(&p).unwrap();
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        drop(held);
        assert!(FileLock::try_exclusive(&p).unwrap().is_some());
        let m = fs::metadata(d.path().join(".t.fgt.lock")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }
}
