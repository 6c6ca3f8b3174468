//! A content-addressed cache of unpacked code: one folder per SHA-256, published by
//! rename so concurrent runners never see a half-written entry.

use std::path::{Path, PathBuf};

use crate::error::CodeError;

/// The cache root and its entries.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// A cache under `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    /// The default root: `$XDG_CACHE_HOME/immortal` (or `~/.cache/immortal`), else a temp folder.
    pub fn default_root() -> PathBuf {
        dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("immortal")
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder for `key` (e.g. `code/<sha256 hex>`), if it is complete.
    pub fn get(&self, key: &str) -> Option<PathBuf> {
        let path = self.root.join(key);
        path.is_dir().then_some(path)
    }

    /// Returns the entry for `key`, filling it with `fill` first if it is missing.
    /// `fill` writes into a fresh temporary folder that is renamed into place when it
    /// succeeds and removed when it fails.
    pub fn get_or_fill(
        &self,
        key: &str,
        fill: impl FnOnce(&Path) -> Result<(), CodeError>,
    ) -> Result<(PathBuf, bool), CodeError> {
        if let Some(path) = self.get(key) {
            return Ok((path, true));
        }
        let final_path = self.root.join(key);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
