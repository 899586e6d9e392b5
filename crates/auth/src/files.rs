//! The files berth keeps secrets in (the htpasswd file, robots, signing and
//! CA keys, the admin password): written whole and atomically, readable only
//! by their owner, and changed by one writer at a time.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

/// Replaces `path` with `content`, readable only by its owner: written to a
/// fresh temporary file in the same directory (a unique name created with
/// mode 0600, never an existing file or a planted link; `tempfile` does
/// exactly this), synced, renamed over `path`, and the directory synced.
pub fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".berth-")
        .tempfile_in(dir)?;
    file.write_all(content.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// An exclusive lock on `<path>.lock`, held until dropped, so that two
/// commands editing the same file (`berth user add` and `berth user del`
/// run at once) never lose each other's change.
pub fn lock_for_update(path: &Path) -> std::io::Result<File> {
    let file = update_lock_file(path)?;
    file.lock()?;
    Ok(file)
}

/// [`lock_for_update`] if nobody holds it now, without waiting.
pub fn try_lock_for_update(path: &Path) -> std::io::Result<Option<File>> {
    let file = update_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn update_lock_file(path: &Path) -> std::io::Result<File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    File::create(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn private_atomic_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_private(&path, "one").unwrap();
        write_private(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A link where the old fixed temporary name was is left alone.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "untouched").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("secret.tmp")).unwrap();
        write_private(&path, "three").unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "untouched");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".berth-"))
            .collect();
        assert!(names.is_empty(), "temporary files left: {names:?}");
    }

    #[test]
    fn one_updater_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let held = lock_for_update(&path).unwrap();
        let second = File::create(dir.path().join("htpasswd.lock")).unwrap();
        assert!(
            second.try_lock().is_err(),
            "a second lock while one is held"
        );
        drop(held);
        assert!(second.try_lock().is_ok());
    }
}
