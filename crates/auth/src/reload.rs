//! A file-backed value re-read when the file changes, so a rotated Kubernetes
//! Secret (an htpasswd file, the robots file) takes effect without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often the file's [`Stamp`] is looked at, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);

type Parser<T> = fn(&str) -> Result<T, String>;

/// What tells a changed file: modification and status-change times, size
/// and inode. The status-change time catches what the others miss: a copy
/// that keeps the modification time (`cp -p`, `rsync -a`) of a file whose
/// size does not change (every bcrypt line is 60 characters), and a
/// `chmod`/`chown` that makes an unreadable file readable.
type Stamp = (SystemTime, i64, i64, u64, u64);

struct Loaded<T> {
    value: Arc<T>,
    stamp: Option<Stamp>,
    checked: Instant,
    /// Counts reloads, so caches derived from the value can tell they are stale.
    generation: u64,
}

pub struct Reloading<T> {
    path: PathBuf,
    parse: Parser<T>,
    loaded: RwLock<Loaded<T>>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((
        meta.modified().ok()?,
        meta.ctime(),
        meta.ctime_nsec(),
        meta.len(),
        meta.ino(),
    ))
}

fn read<T: Default>(path: &Path, parse: Parser<T>) -> Result<T, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

impl<T: Default + Send + Sync> Reloading<T> {
    /// Loads `path` now; an absent file is an empty value.
    pub fn open(path: &Path, parse: Parser<T>) -> Result<Self, String> {
        let value = read(path, parse)?;
        Ok(Reloading {
            path: path.to_owned(),
            parse,
            loaded: RwLock::new(Loaded {
                value: Arc::new(value),
                stamp: stamp(path),
                checked: Instant::now(),
                generation: 0,
            }),
        })
    }

    /// The current value and its generation, re-reading the file if it
    /// changed. A file that became invalid is reported and the last good
    /// value kept, so a bad edit does not lock everyone out.
    pub fn get(&self) -> (Arc<T>, u64) {
        self.load(false)
    }

    /// Like [`Reloading::get`], but looks at the file now: used before
    /// refusing credentials, so an account added a moment ago works at once.
    pub fn get_fresh(&self) -> (Arc<T>, u64) {
        self.load(true)
    }

    fn load(&self, now: bool) -> (Arc<T>, u64) {
        if !now {
            let loaded = self.loaded.read().expect("reload lock");
            if loaded.checked.elapsed() < CHECK_EVERY {
                return (loaded.value.clone(), loaded.generation);
            }
        }
        let mut loaded = self.loaded.write().expect("reload lock");
        if now || loaded.checked.elapsed() >= CHECK_EVERY {
            loaded.checked = Instant::now();
            let now = stamp(&self.path);
            if now != loaded.stamp {
                loaded.stamp = now;
                match read(&self.path, self.parse) {
                    Ok(value) => {
                        loaded.value = Arc::new(value);
                        loaded.generation += 1;
                        tracing::info!(file = %self.path.display(), "reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "keeping the previous contents"),
                }
            }
        }
        (loaded.value.clone(), loaded.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Result<Vec<String>, String> {
        Ok(text.lines().map(str::to_owned).collect())
    }

    #[test]
    fn a_same_size_copy_keeping_the_modification_time_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "alice:hash-one\n").unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let file = Reloading::open(&path, lines).unwrap();
        assert_eq!(*file.get_fresh().0, ["alice:hash-one"]);

        // What `cp -p` or `rsync -a` of a rotated Secret leaves: the same
        // size and modification time, new content.
        let next = dir.path().join("users.next");
        std::fs::write(&next, "alice:hash-two\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&next)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&next, &path).unwrap();
        let (value, generation) = file.get_fresh();
        assert_eq!(*value, ["alice:hash-two"]);
        assert_eq!(generation, 1);
    }
}
