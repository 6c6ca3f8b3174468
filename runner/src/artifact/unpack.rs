//! Unpacking untrusted code zips: modes kept, nothing written outside the target
//! folder, and a cap on the unpacked size so a zip bomb stops early.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use crate::error::CodeError;

/// Lambda's limit on a function's unpacked code and layers: 250 MB.
pub const LAMBDA_UNPACKED_LIMIT: u64 = 250 * 1024 * 1024;

/// Unpacks `archive` into `dest` (which must exist) and returns the bytes written.
///
/// Refuses, before writing the offending entry: absolute names, `..` components, names
/// that pass through a symlink from the same archive, symlinks whose target leaves
/// `dest`, and anything past `limit` unpacked bytes (counted as written, not as declared).
pub fn unpack(archive: &Path, dest: &Path, limit: u64) -> Result<u64, CodeError> {
    let label = archive.display().to_string();
    let file = File::open(archive).map_err(CodeError::io("cannot open", archive))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| CodeError::NotAZip {
        path: archive.to_owned(),
        reason: e.to_string(),
    })?;
    let unsafe_entry = |entry: &str, why| CodeError::UnsafeEntry {
        archive: label.clone(),
        entry: entry.to_owned(),
        why,
    };
    let too_large = || CodeError::TooLarge {
        archive: label.clone(),
        limit,
    };

    // Declared sizes can lie, but when they already add up past the limit, stop before writing anything.
    let mut declared: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|e| CodeError::NotAZip {
            path: archive.to_owned(),
            reason: e.to_string(),
        })?;
        declared = declared.saturating_add(entry.size());
    }
    if declared > limit {
        return Err(too_large());
    }

    let mut written: u64 = 0;
    let mut links: HashSet<PathBuf> = HashSet::new();
    let mut buf = vec![0u8; 256 * 1024];
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| CodeError::NotAZip {
            path: archive.to_owned(),
            reason: e.to_string(),
        })?;
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(entry.name_raw()).into_owned());
        let rel = safe_relative(&name).map_err(|why| unsafe_entry(&name, why))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        if rel.ancestors().skip(1).any(|a| links.contains(a)) {
            return Err(unsafe_entry(&name, "passes through a symlink in the same archive"));
        }
        let target = dest.join(&rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(CodeError::io("cannot create", parent))?;
        }
        if entry.is_dir() {
            fs::create_dir_all(&target).map_err(CodeError::io("cannot create", &target))?;
            continue;
        }
        // A later entry of the same name replaces the earlier one (never writes through it).
        if fs::symlink_metadata(&target).is_ok() {
            fs::remove_file(&target).map_err(CodeError::io("cannot replace", &target))?;
        }
        if entry.is_symlink() {
            let mut link = String::new();
            entry
                .read_to_string(&mut link)
                .map_err(CodeError::io("cannot read a symlink from", archive))?;
            check_link(&rel, &link).map_err(|why| unsafe_entry(&name, why))?;
            std::os::unix::fs::symlink(&link, &target).map_err(CodeError::io("cannot create", &target))?;
            links.insert(rel);
            continue;
        }
        // Permission bits only: no setuid/setgid/sticky from untrusted input.
        let mode = entry
            .unix_mode()
            .map(|m| m & 0o777)
            .filter(|m| *m != 0)
            .unwrap_or(0o644);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&target)
            .map_err(CodeError::io("cannot create", &target))?;
        loop {
            let n = entry.read(&mut buf).map_err(|e| CodeError::NotAZip {
                path: archive.to_owned(),
                reason: format!("entry `{name}`: {e}"),
            })?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > limit {
                return Err(too_large());
            }
            out.write_all(&buf[..n])
                .map_err(CodeError::io("cannot write", &target))?;
        }
    }
    // Links that are each inside on paper can still leave when chained (a -> "b/..",
    // b -> "."): resolve every one for real now that all of them exist.
    let root = dest.canonicalize().map_err(CodeError::io("cannot resolve", dest))?;
    for rel in &links {
        if let Ok(real) = dest.join(rel).canonicalize() {
            if !real.starts_with(&root) {
                return Err(unsafe_entry(
                    &rel.display().to_string(),
                    "is a symlink that resolves outside the folder",
                ));
            }
        }
    }
    Ok(written)
}

/// The entry name as a relative path with no way out of the folder.
fn safe_relative(name: &str) -> Result<PathBuf, &'static str> {
    if name.contains('\0') {
        return Err("has a NUL byte in its name");
    }
    let path = Path::new(name);
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("has a `..` component (path traversal)"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(rel)
}

/// A symlink at `rel` pointing to `link` must stay inside the folder.
fn check_link(rel: &Path, link: &str) -> Result<(), &'static str> {
    let target = Path::new(link);
    if target.is_absolute() {
        return Err("is a symlink to an absolute path");
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err("is a symlink pointing outside the folder");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(safe_relative("a/./b").unwrap(), PathBuf::from("a/b"));
        assert!(safe_relative("../x").is_err());
        assert!(safe_relative("a/../../x").is_err());
        assert!(safe_relative("/etc/passwd").is_err());
    }

    #[test]
    fn links() {
        assert!(check_link(Path::new("lib/a.so"), "b.so").is_ok());
        assert!(check_link(Path::new("lib/a.so"), "../bin/x").is_ok());
        assert!(check_link(Path::new("lib/a.so"), "../../x").is_err());
        assert!(check_link(Path::new("a"), "/etc").is_err());
        assert!(check_link(Path::new("a"), "..").is_err());
    }
}
