//! Unpacking untrusted code zips: modes kept, nothing written outside the target
//! folder or through a link, and a cap on the unpacked size so a zip bomb stops early.
//!
//! The whole archive is planned from its central directory first (names, kinds,
//! declared sizes: no entry is read), then written by [`tree::Writer`]: folders once
//! each, files by a few threads, each reading the archive through its own buffer.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use zip::read::ZipFileEntry;
use zip::ZipArchive;

use super::tree::{self, Contents, Node, Plan, Sink};
use crate::error::CodeError;

/// Lambda's limit on a function's unpacked code and layers: 250 MB.
pub(crate) const LAMBDA_UNPACKED_LIMIT: u64 = 250 * 1024 * 1024;

/// The longest symlink target Linux stores (PATH_MAX less the NUL).
const MAX_LINK_TARGET: u64 = 4095;

/// Unpacks `archive` into `dest` (an existing, empty folder) and returns the bytes
/// written, with [`tree::default_threads`] threads.
///
/// Refuses, before writing anything: absolute names, `..` components, names under a
/// symlink or a file of the same archive, names that are both a folder and a file, and
/// declared sizes adding up past `limit`; while writing, anything past `limit` unpacked
/// bytes (counted as written, not as declared). Symlinks are kept as they are, wherever
/// they point (Lambda allows links to `/usr/bin/python3` or `/opt/...`): they are never
/// followed while writing. Setuid, setgid and sticky bits are dropped.
pub fn unpack(archive: &Path, dest: &Path, limit: u64) -> Result<u64, CodeError> {
    unpack_with(archive, dest, limit, tree::default_threads())
}

/// [`unpack`] with `threads` writing threads (1: sequential, in the calling thread).
pub fn unpack_with(archive: &Path, dest: &Path, limit: u64, threads: usize) -> Result<u64, CodeError> {
    let label = archive.display().to_string();
    let not_a_zip = |reason: String| CodeError::NotAZip {
        path: archive.to_owned(),
        reason,
    };
    let too_large = || CodeError::TooLarge {
        archive: label.clone(),
        limit,
    };
    let file = File::open(archive).map_err(CodeError::io("cannot open", archive))?;
    let mut zip = ZipArchive::new(At::new(file).map_err(CodeError::io("cannot read", archive))?)
        .map_err(|e| not_a_zip(e.to_string()))?;

    let mut plan = Plan::default();
    // Link targets, read and checked while planning; written from here.
    let mut links: std::collections::HashMap<usize, OsString> = std::collections::HashMap::new();
    // Declared sizes can lie, but when they already add up past the limit, stop before writing anything.
    let mut declared: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip.by_index_data(i).map_err(|e| not_a_zip(e.to_string()))?;
        declared = declared.saturating_add(entry.size());
        let name = entry_name(&entry);
        let unsafe_entry = |why| CodeError::UnsafeEntry {
            archive: label.clone(),
            entry: name.clone(),
            why,
        };
        let rel = safe_relative(&name).map_err(unsafe_entry)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let node = if entry.is_dir() {
            Node::Dir
        } else if entry.is_symlink() {
            // Checked now, not only when written: an archive with a link Linux cannot
            // store is refused whole, even if a later entry of the same name replaces it.
            drop(entry);
            let mut target = Vec::new();
            zip.by_index(i)
                .map_err(|e| not_a_zip(format!("entry `{name}`: {e}")))?
                .take(MAX_LINK_TARGET + 1)
                .read_to_end(&mut target)
                .map_err(|e| not_a_zip(format!("entry `{name}`: {e}")))?;
            check_link_target(&target).map_err(unsafe_entry)?;
            links.insert(i, OsString::from_vec(target));
            Node::Link { source: i }
        } else {
            // Permission bits only: no setuid/setgid/sticky from untrusted input, and
            // writable by the runner alone (functions read the cached inodes through
            // their task root's hard links), whatever the zip says.
            let mode = entry
                .unix_mode()
                .map(|m| m & 0o755)
                .filter(|m| *m != 0)
                .unwrap_or(0o644);
            Node::File { source: i, mode }
        };
        plan.add(&rel, node).map_err(unsafe_entry)?;
    }
    if declared > limit {
        return Err(too_large());
    }

    let writer = tree::Writer {
        threads,
        limit,
        label: &label,
        too_large: &too_large,
    };
    writer.write(&plan, dest, || {
        Ok(Entries {
            zip: zip.clone(),
            archive,
            links: &links,
        })
    })
}

/// One thread's view of the archive: its own reader over the shared file.
struct Entries<'a> {
    zip: ZipArchive<At>,
    archive: &'a Path,
    links: &'a std::collections::HashMap<usize, OsString>,
}

impl Entries<'_> {
    fn name(&self, index: usize) -> String {
        self.zip
            .by_index_data(index)
            .map(|e| entry_name(&e))
            .unwrap_or_default()
    }
}

impl Contents<usize> for Entries<'_> {
    fn copy(&mut self, index: &usize, sink: &mut Sink<'_>) -> Result<(), CodeError> {
        let name = self.name(*index);
        let archive = self.archive;
        let mut entry = self.zip.by_index(*index).map_err(|e| CodeError::NotAZip {
            path: archive.to_owned(),
            reason: format!("entry `{name}`: {e}"),
        })?;
        sink.pump(&mut entry, |e| CodeError::NotAZip {
            path: archive.to_owned(),
            reason: format!("entry `{name}`: {e}"),
        })
    }

    fn link(&mut self, index: &usize) -> Result<OsString, CodeError> {
        // Read and checked once, while planning.
        Ok(self.links.get(index).cloned().expect("every planned link was read"))
    }
}

/// A symlink may point anywhere, but its target must be one Linux can store.
fn check_link_target(target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("is a symlink with an empty target");
    }
    if target.contains(&0) {
        return Err("is a symlink whose target has a NUL byte");
    }
    if target.len() as u64 > MAX_LINK_TARGET {
        return Err("is a symlink whose target is longer than 4095 bytes");
    }
    Ok(())
}

/// The entry's name as text: UTF-8, or CP437 for names without the UTF-8 flag (as the
/// zip crate decodes them), else the raw bytes read leniently.
fn entry_name(entry: &ZipFileEntry<'_>) -> String {
    entry
        .name()
        .map(|name| name.into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(entry.name_raw()).into_owned())
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

/// How much each reader of the archive buffers: most entries of a code zip (and their
/// local headers) fit in one read.
const READ_BUFFER: usize = 64 * 1024;

/// A buffered reader of a shared file by offset (`pread`): clones share the open file
/// but not the position or the buffer, so threads read one archive at once, with no
/// seek calls and few reads.
#[derive(Debug)]
struct At {
    file: Arc<File>,
    len: u64,
    pos: u64,
    buf: Vec<u8>,
    /// The file offset of `buf[0]`, and how much of `buf` holds data.
    buf_at: u64,
    filled: usize,
}

impl At {
    fn new(file: File) -> std::io::Result<At> {
        let len = file.metadata()?.len();
        Ok(At {
            file: Arc::new(file),
            len,
            pos: 0,
            buf: Vec::new(),
            buf_at: 0,
            filled: 0,
        })
    }
}

impl Clone for At {
    fn clone(&self) -> At {
        At {
            file: self.file.clone(),
            len: self.len,
            pos: self.pos,
            buf: Vec::new(),
            buf_at: 0,
            filled: 0,
        }
    }
}

impl Read for At {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let in_buffer = self.pos >= self.buf_at && self.pos < self.buf_at + self.filled as u64;
        if !in_buffer {
            if out.len() >= READ_BUFFER {
                let n = self.file.read_at(out, self.pos)?;
                self.pos += n as u64;
                return Ok(n);
            }
            if self.buf.is_empty() {
                self.buf = vec![0; READ_BUFFER];
            }
            self.filled = self.file.read_at(&mut self.buf, self.pos)?;
            self.buf_at = self.pos;
            if self.filled == 0 {
                return Ok(0);
            }
        }
        let from = (self.pos - self.buf_at) as usize;
        let n = out.len().min(self.filled - from);
        out[..n].copy_from_slice(&self.buf[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for At {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
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
    fn link_targets_may_point_anywhere_linux_can_store() {
        assert!(check_link_target(b"/usr/bin/python3").is_ok());
        assert!(check_link_target(b"../../x").is_ok());
        assert!(check_link_target(b"").is_err());
        assert!(check_link_target(b"a\0b").is_err());
        assert!(check_link_target(&[b'a'; 4096]).is_err());
    }

    #[test]
    fn names_without_the_utf8_flag_are_cp437() {
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("legacy.zip");
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file("cafX.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut zip, b"x").unwrap();
        let mut bytes = zip.finish().unwrap().into_inner();
        // An ASCII name carries no UTF-8 flag; 0x82 is `é` in CP437 (and not UTF-8).
        for at in 0..bytes.len() - 8 {
            if &bytes[at..at + 8] == b"cafX.txt" {
                bytes[at + 3] = 0x82;
            }
        }
        std::fs::write(&zip_path, bytes).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        unpack(&zip_path, &dest, 1 << 20).unwrap();
        assert_eq!(std::fs::read(dest.join("caf\u{e9}.txt")).unwrap(), b"x");
    }

    #[test]
    fn clones_read_by_offset_through_their_own_buffer() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::io::Write::write_all(&mut tmp, &data).unwrap();
        let mut a = At::new(File::open(tmp.path()).unwrap()).unwrap();
        let mut b = a.clone();
        let mut small = [0u8; 10];
        a.seek(SeekFrom::Start(70_000)).unwrap();
        a.read_exact(&mut small).unwrap();
        assert_eq!(small[..], data[70_000..70_010]);
        b.seek(SeekFrom::End(-5)).unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).unwrap();
        assert_eq!(rest[..], data[data.len() - 5..]);
        a.seek(SeekFrom::Current(-10)).unwrap();
        let mut all = Vec::new();
        a.read_to_end(&mut all).unwrap();
        assert_eq!(all[..], data[70_000..]);
        assert!(a.seek(SeekFrom::Current(-1_000_000)).is_err());
    }
}
