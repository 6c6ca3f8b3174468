//! The task root: the function's code shown at a fixed path (`/var/task` in the image),
//! as Lambda shows it.
//!
//! In Lambda `/var/task` is a real folder holding the code, so the working directory,
//! `os.getcwd()`, `__file__`, `__dirname` and stack traces all read `/var/task/...`. A
//! link to the cache would not do: the kernel resolves it, and `getcwd()` answers the
//! cache's path. Without privileges to mount (Fargate has no `CAP_SYS_ADMIN`), the runner
//! fills a folder it owns with the code's tree: real folders, hard links to the cached
//! files (a copy where the cache is on another file system), and the code's own links as
//! they are. Filling costs one `link` per file; nothing is read or written twice. The
//! folder is the runner's, so the function can read it and not change it, as in Lambda.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::CodeError;

/// Which code each task root holds now (filled by this process): a second run of the
/// same code finds it in place.
static PRESENTED: Mutex<BTreeMap<PathBuf, PathBuf>> = Mutex::new(BTreeMap::new());

/// Shows the code unpacked at `code` at `root` (a folder the runner owns; created when
/// missing) and returns `root`: what the function sees as its task root.
pub(crate) fn present(root: &Path, code: &Path) -> Result<PathBuf, CodeError> {
    let mut presented = PRESENTED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if presented.get(root).is_some_and(|held| held == code) {
        return Ok(root.to_owned());
    }
    presented.remove(root);
    match std::fs::symlink_metadata(root) {
        Ok(meta) if meta.is_dir() => empty(root)?,
        Ok(_) => {
            return Err(CodeError::Io {
                action: "cannot present the function's code at",
                path: root.to_owned(),
                source: std::io::Error::other(
                    "it is a file or a link, not a folder the runner can fill with the code (--task-root)",
                ),
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => std::fs::DirBuilder::new()
            .mode(0o755)
            .create(root)
            .map_err(CodeError::io("cannot create the task root", root))?,
        Err(e) => return Err(CodeError::io("cannot inspect", root)(e)),
    }
    // Readable by the function's user, whatever the runner's umask.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
        .map_err(CodeError::io("cannot set the mode of", root))?;
    fill(code, root)?;
    presented.insert(root.to_owned(), code.to_owned());
    Ok(root.to_owned())
}

/// Removes everything inside `dir`, never following a link.
fn empty(dir: &Path) -> Result<(), CodeError> {
    for entry in std::fs::read_dir(dir).map_err(CodeError::io("cannot list", dir))? {
        let entry = entry.map_err(CodeError::io("cannot list", dir))?;
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let removed = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(CodeError::io("cannot clear the task root of", &path))?;
    }
    Ok(())
}

/// Lays the tree under `from` into `to` (an empty folder): folders made with their
/// modes, files hard-linked (copied across file systems), links recreated as they are.
fn fill(from: &Path, to: &Path) -> Result<(), CodeError> {
    for entry in std::fs::read_dir(from).map_err(CodeError::io("cannot list", from))? {
        let entry = entry.map_err(CodeError::io("cannot list", from))?;
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(CodeError::io("cannot inspect", &source))?;
        if kind.is_dir() {
            let mode = entry
                .metadata()
                .map_err(CodeError::io("cannot inspect", &source))?
                .permissions()
                .mode();
            // Never writable by anyone but the runner, whatever the cached mode.
            std::fs::DirBuilder::new()
                .mode(mode & 0o755)
                .create(&dest)
                .map_err(CodeError::io("cannot create", &dest))?;
            fill(&source, &dest)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&source).map_err(CodeError::io("cannot read", &source))?;
            std::os::unix::fs::symlink(&target, &dest).map_err(CodeError::io("cannot create", &dest))?;
        } else if kind.is_file() {
            match std::fs::hard_link(&source, &dest) {
                Ok(()) => {}
                // Another file system (a cache on another disk): a copy keeps the mode.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EPERM)) => {
                    std::fs::copy(&source, &dest).map_err(CodeError::io("cannot copy into", &dest))?;
                }
                Err(e) => return Err(CodeError::io("cannot link into", &dest)(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn code(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
        for (name, body) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        dir.to_owned()
    }

    #[test]
    fn the_root_holds_the_code_as_real_folders_and_the_same_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = code(&dir.path().join("a"), &[("handler.py", "a"), ("lib/util.py", "u")]);
        std::os::unix::fs::symlink("lib/util.py", a.join("link.py")).unwrap();
        let root = dir.path().join("task");
        assert_eq!(present(&root, &a).unwrap(), root);
        assert!(std::fs::symlink_metadata(root.join("lib")).unwrap().is_dir());
        assert_eq!(std::fs::read_to_string(root.join("lib/util.py")).unwrap(), "u");
        assert_eq!(
            std::fs::metadata(root.join("handler.py")).unwrap().ino(),
            std::fs::metadata(a.join("handler.py")).unwrap().ino(),
            "a hard link, not a copy"
        );
        assert_eq!(
            std::fs::read_link(root.join("link.py")).unwrap(),
            Path::new("lib/util.py")
        );
        // getcwd() in the root answers the root, not the cache.
        assert_eq!(
            root.canonicalize().unwrap(),
            dir.path().canonicalize().unwrap().join("task")
        );

        // Another function's code replaces it entirely.
        let b = code(&dir.path().join("b"), &[("index.js", "b")]);
        present(&root, &b).unwrap();
        let names: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["index.js"]);
        assert!(
            a.join("handler.py").is_file(),
            "the cache keeps the first function's code"
        );
    }

    #[test]
    fn a_link_or_file_at_the_root_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = code(&dir.path().join("a"), &[("bootstrap", "x")]);
        let link = dir.path().join("task");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let err = present(&link, &a).unwrap_err().to_string();
        assert!(err.contains("not a folder the runner can fill"), "{err}");
    }
}
