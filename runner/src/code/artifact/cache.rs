//! A content-addressed cache of unpacked code: one folder per SHA-256, published by
//! rename so concurrent runners never see a half-written entry, and filled once: in a
//! process, concurrent fills of one key wait for the first ([`Cache::turn`]); across
//! processes, a lock file per key ([`Cache::lock`]) makes the second find the entry
//! the first published instead of downloading and unpacking it again.
//!
//! A runner holds a shared lock on the lock file of every entry it uses until it exits
//! ([`Cache::in_use`]), and marks the entry used; [`Cache::prune`] removes only entries
//! it can lock exclusively, so never the code of a run under way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use crate::error::CodeError;

/// The cache root and its entries.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    root: PathBuf,
}

/// The right to fill one key: held by one thread of one process at a time (an
/// exclusive `flock` on the key's lock file, released when dropped or when the process
/// dies, so a crashed runner never leaves the key locked).
#[derive(Debug)]
pub(crate) struct FillLock {
    key: String,
    _file: Option<std::fs::File>,
}

/// In this process, one gate per entry being filled (weak: a gate lives as long as
/// someone waits on it).
type Gates = Mutex<HashMap<PathBuf, Weak<tokio::sync::Mutex<()>>>>;

/// The entries this process uses, each with its lock file held shared until it exits.
fn held() -> &'static Mutex<HashMap<PathBuf, std::fs::File>> {
    static HELD: OnceLock<Mutex<HashMap<PathBuf, std::fs::File>>> = OnceLock::new();
    HELD.get_or_init(Default::default)
}

fn gates() -> &'static Gates {
    static GATES: OnceLock<Gates> = OnceLock::new();
    GATES.get_or_init(Default::default)
}

impl Cache {
    /// A cache under `root` (created when first written).
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    /// The default root: `$XDG_CACHE_HOME/immortal` (or `~/.cache/immortal`), else a temp folder.
    pub(crate) fn default_root() -> PathBuf {
        dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("immortal")
    }

    /// Makes the root the runner's alone (created when missing, mode 0700): what it
    /// holds is reached by functions only through the task root's and the layers root's
    /// hard links.
    pub(crate) fn make_private(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&self.root)?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
    }

    /// The root folder.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The folder for `key` (e.g. `code/<sha256 hex>`), if it is complete.
    pub(crate) fn get(&self, key: &str) -> Option<PathBuf> {
        let path = self.root.join(key);
        path.is_dir().then_some(path)
    }

    /// Waits until no other task of this process is filling `key`, and returns the
    /// turn (hold it while checking [`Cache::get`] again and filling). Tasks wait here
    /// without tying up a thread, unlike [`Cache::lock`].
    pub(crate) async fn turn(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let gate = {
            let mut gates = gates().lock().expect("no thread panics holding the gates");
            gates.retain(|_, gate| gate.strong_count() > 0);
            let path = self.root.join(key);
            match gates.get(&path).and_then(Weak::upgrade) {
                Some(gate) => gate,
                None => {
                    let gate = Arc::new(tokio::sync::Mutex::new(()));
                    gates.insert(path, Arc::downgrade(&gate));
                    gate
                }
            }
        };
        gate.lock_owned().await
    }

    /// Where the lock file of `key` is.
    fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join(".locks").join(format!("{}.lock", key.replace('/', "-")))
    }

    /// The lock file of `key`, opened (and created, with its folder, when missing).
    fn lock_file(&self, key: &str) -> Result<std::fs::File, CodeError> {
        let path = self.lock_path(key);
        let dir = self.root.join(".locks");
        std::fs::create_dir_all(&dir).map_err(CodeError::io("cannot create the cache folder", &dir))?;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(CodeError::io("cannot open the lock file", &path))
    }

    /// Marks the entry `key` in use by this process until it exits (a shared lock on its
    /// lock file, which [`Cache::prune`] respects) and as used now (its folder's time).
    /// Whether the entry is there: a prune may have removed it just before, and then
    /// the caller fills it again. Call it when holding no fill lock of `key`.
    pub(crate) fn in_use(&self, key: &str) -> bool {
        let entry = self.root.join(key);
        let mut held = held().lock().expect("no thread panics holding it");
        if !held.contains_key(&entry) {
            match self.lock_file(key).map(|file| file.lock_shared().map(|()| file)) {
                Ok(Ok(file)) => {
                    held.insert(entry.clone(), file);
                }
                // No locks here: the entry is used unprotected, as fills are.
                Ok(Err(e)) => tracing::debug!(key, error = %e, "cannot lock the cache entry shared"),
                Err(e) => tracing::debug!(key, error = %e, "cannot open the cache entry's lock"),
            }
        }
        let there = entry.is_dir();
        if there {
            // Last used now: `prune --keep` and `--older-than` go by it.
            let _ = std::fs::File::open(&entry).and_then(|dir| dir.set_modified(SystemTime::now()));
        }
        there
    }

    /// Removes the entries `rule` names that no runner is using; what it removed (or,
    /// with `dry_run`, would remove) and what it left because it is in use.
    pub(crate) fn prune(&self, rule: &PruneRule) -> Result<Pruned, CodeError> {
        let mut pruned = Pruned::default();
        let now = SystemTime::now();
        for kind in KINDS {
            let dir = self.root.join(kind);
            let Ok(listing) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut entries: Vec<(String, SystemTime)> = listing
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.'))
                .filter_map(|name| {
                    let used = std::fs::metadata(dir.join(&name)).and_then(|m| m.modified()).ok()?;
                    Some((name, used))
                })
                .collect();
            // The most recently used first.
            entries.sort_by_key(|(_, used)| std::cmp::Reverse(*used));
            for (rank, (name, used)) in entries.into_iter().enumerate() {
                let age = now.duration_since(used).unwrap_or_default();
                let over = rule.keep.is_some_and(|keep| rank >= keep);
                let old = rule.older_than.is_some_and(|limit| age >= limit);
                if !over && !old {
                    pruned.kept += 1;
                    continue;
                }
                let key = format!("{kind}/{name}");
                let lock = self.lock_file(&key)?;
                if lock.try_lock().is_err() {
                    pruned.in_use.push(key);
                    continue;
                }
                let path = dir.join(&name);
                let bytes = size_of(&path);
                if !rule.dry_run {
                    // Out of sight first: a runner never finds half an entry.
                    let gone = dir.join(format!(".pruned-{name}"));
                    std::fs::rename(&path, &gone).map_err(CodeError::io("cannot remove", &path))?;
                    std::fs::remove_dir_all(&gone).map_err(CodeError::io("cannot remove", &gone))?;
                }
                pruned.removed.push((key, bytes, age));
            }
        }
        Ok(pruned)
    }

    /// Blocks until this thread holds the fill lock of `key`, across processes sharing
    /// the cache. On a file system without locks, fills are not collapsed but stay
    /// safe (each publishes atomically).
    pub(crate) fn lock(&self, key: &str) -> Result<FillLock, CodeError> {
        // This process's own shared hold would block its exclusive lock (another open
        // file): released; whoever uses the entry after the fill holds it again.
        held()
            .lock()
            .expect("no thread panics holding it")
            .remove(&self.root.join(key));
        let file = self.lock_file(key)?;
        let file = match file.lock() {
            Ok(()) => Some(file),
            Err(e) => {
                tracing::warn!(lock = %self.lock_path(key).display(), error = %e, "cannot lock the cache entry; filling it without a lock");
                None
            }
        };
        Ok(FillLock {
            key: key.to_owned(),
            _file: file,
        })
    }

    /// [`Cache::get_or_fill`], then held [`Cache::in_use`]: filled again if a prune
    /// removed it in between.
    pub(crate) fn use_or_fill(
        &self,
        key: &str,
        fill: impl Fn(&Path) -> Result<(), CodeError>,
    ) -> Result<(PathBuf, bool), CodeError> {
        loop {
            let got = self.get_or_fill(key, &fill)?;
            if self.in_use(key) {
                return Ok(got);
            }
        }
    }

    /// Returns the entry for `key`, filling it with `fill` first if it is missing (and
    /// no other thread or process filled it while this one waited for the lock).
    pub(crate) fn get_or_fill(
        &self,
        key: &str,
        fill: impl FnOnce(&Path) -> Result<(), CodeError>,
    ) -> Result<(PathBuf, bool), CodeError> {
        if let Some(path) = self.get(key) {
            return Ok((path, true));
        }
        let lock = self.lock(key)?;
        if let Some(path) = self.get(key) {
            return Ok((path, true));
        }
        self.fill(&lock, fill)
    }

    /// Fills the entry `lock` is for: `fill` writes into a fresh temporary folder that
    /// is renamed into place when it succeeds and removed when it fails. Returns the
    /// entry and whether another runner (one not taking the lock) published it first.
    pub(crate) fn fill(
        &self,
        lock: &FillLock,
        fill: impl FnOnce(&Path) -> Result<(), CodeError>,
    ) -> Result<(PathBuf, bool), CodeError> {
        let final_path = self.root.join(&lock.key);
        let parent = final_path.parent().expect("a key has a parent folder");
        std::fs::create_dir_all(parent).map_err(CodeError::io("cannot create the cache folder", parent))?;
        let tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempdir_in(parent)
            .map_err(CodeError::io("cannot create a temporary folder in", parent))?;
        fill(tmp.path())?;
        let tmp_path = tmp.keep();
        match std::fs::rename(&tmp_path, &final_path) {
            Ok(()) => Ok((final_path, false)),
            // Another runner published the same content first: use theirs.
            Err(_) if final_path.is_dir() => {
                let _ = std::fs::remove_dir_all(&tmp_path);
                Ok((final_path, true))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp_path);
                Err(CodeError::Io {
                    action: "cannot publish the cache entry",
                    path: final_path,
                    source: e,
                })
            }
        }
    }
}

/// The folders of the cache root that hold entries: unpacked code, layers, merged layer
/// sets, bare bootstraps.
pub(crate) const KINDS: [&str; 4] = ["code", "layer", "opt", "exe"];

/// Which entries `runner cache prune` removes: those beyond the `keep` most recently
/// used of each kind, and those not used for `older_than`.
#[derive(Debug, Clone, Default)]
pub(crate) struct PruneRule {
    /// Keep this many of each kind.
    pub(crate) keep: Option<usize>,
    /// Remove what was not used for this long.
    pub(crate) older_than: Option<Duration>,
    /// Say what would go; remove nothing.
    pub(crate) dry_run: bool,
}

/// What a prune did.
#[derive(Debug, Default)]
pub(crate) struct Pruned {
    /// Removed (or would be): key, bytes, time since last used.
    pub(crate) removed: Vec<(String, u64, Duration)>,
    /// Left because a runner is using them.
    pub(crate) in_use: Vec<String>,
    /// Entries the rule keeps.
    pub(crate) kept: usize,
}

/// The bytes of the files under `path` (links not followed).
fn size_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| size_of(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn fills_once_and_cleans_up_failures() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::new(root.path());
        let err = cache
            .get_or_fill("code/aa", |dir| {
                std::fs::write(dir.join("half"), "x").unwrap();
                Err(CodeError::TooLarge {
                    archive: "a".into(),
                    limit: 1,
                })
            })
            .unwrap_err();
        assert!(matches!(err, CodeError::TooLarge { .. }));
        assert_eq!(
            std::fs::read_dir(root.path().join("code")).unwrap().count(),
            0,
            "no partial entry left"
        );
        let (path, hit) = cache
            .get_or_fill("code/aa", |dir| {
                std::fs::write(dir.join("f"), "1").unwrap();
                Ok(())
            })
            .unwrap();
        assert!(!hit);
        assert!(path.join("f").is_file());
        let (_, hit) = cache.get_or_fill("code/aa", |_| panic!("must not refill")).unwrap();
        assert!(hit);
    }

    #[test]
    fn threads_filling_one_key_at_once_fill_it_once() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::new(root.path());
        let fills = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let (path, _) = cache
                        .get_or_fill("code/bb", |dir| {
                            fills.fetch_add(1, Ordering::SeqCst);
                            // Long enough for every other thread to be waiting.
                            std::thread::sleep(Duration::from_millis(200));
                            std::fs::write(dir.join("f"), "1").map_err(CodeError::io("write", dir))
                        })
                        .unwrap();
                    assert!(path.join("f").is_file());
                });
            }
        });
        assert_eq!(fills.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tasks_take_turns_per_key() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::new(root.path());
        let first = cache.turn("code/cc").await;
        let other_key = tokio::time::timeout(Duration::from_millis(50), cache.turn("code/dd")).await;
        assert!(other_key.is_ok(), "another key is not held up");
        let same_key = tokio::time::timeout(Duration::from_millis(50), cache.turn("code/cc")).await;
        assert!(same_key.is_err(), "the same key waits");
        drop(first);
        let again = tokio::time::timeout(Duration::from_millis(50), cache.turn("code/cc")).await;
        assert!(again.is_ok(), "and gets its turn once the first is done");
    }
}
