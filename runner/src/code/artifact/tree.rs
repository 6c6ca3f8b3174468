//! A planned tree of folders, files and symlinks, written into a folder in parallel
//! without ever following a link: what unpacking a zip and merging layers share.
//!
//! The plan is made first, from names alone, so every conflict (a name under a link, a
//! folder that is also a file, a later entry replacing an earlier one) is settled before
//! anything is written. Then each folder is created once, parents first, a level at a
//! time; then files and links are written by a small pool of threads, because on the
//! disks code lands on, creating a file costs far more than inflating it, and those
//! costs overlap across threads.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::CodeError;

/// What one path of the tree holds; `S` says where its contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node<S> {
    /// A folder.
    Dir,
    /// A regular file with its permission bits.
    File {
        /// Where its bytes come from.
        source: S,
        /// Permission bits (no setuid, setgid or sticky bit).
        mode: u32,
    },
    /// A symlink: an inert name for its target, never followed while writing.
    Link {
        /// Where its target comes from.
        source: S,
    },
}

/// Every path of a tree, each with what it holds. Invariant: every ancestor of a path
/// in the plan is a [`Node::Dir`] in the plan.
#[derive(Debug)]
pub(crate) struct Plan<S> {
    nodes: BTreeMap<PathBuf, Node<S>>,
}

impl<S> Default for Plan<S> {
    fn default() -> Self {
        Plan { nodes: BTreeMap::new() }
    }
}

impl<S> Plan<S> {
    /// Adds an entry of one archive, refusing what cannot be written without following
    /// a link or guessing: a path under a link or a file, or a folder that is also a
    /// file or link. A later file or link of the same path replaces the earlier one, as
    /// `unzip -o` does. `rel` is relative and clean (no `..`, no root).
    pub(crate) fn add(&mut self, rel: &Path, node: Node<S>) -> Result<(), &'static str> {
        for ancestor in rel.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            match self.nodes.get(ancestor) {
                // Its own ancestors are folders already (the invariant).
                Some(Node::Dir) => break,
                Some(Node::Link { .. }) => return Err("passes through a symlink in the same archive"),
                Some(Node::File { .. }) => return Err("is inside a file of the same archive"),
                None => {
                    self.nodes.insert(ancestor.to_owned(), Node::Dir);
                }
            }
        }
        match (self.nodes.get(rel), &node) {
            (Some(Node::Dir), Node::Dir) => {}
            (Some(Node::Dir), _) | (Some(_), Node::Dir) => {
                return Err("is both a folder and a file or symlink in the same archive")
            }
            _ => {
                self.nodes.insert(rel.to_owned(), node);
            }
        }
        Ok(())
    }

    /// Lays an entry of a later tree over the plan, as Lambda extracts layers into /opt
    /// one after another: the later entry replaces the earlier one whatever their kinds,
    /// and two folders merge. A folder where an earlier tree had a link becomes a real
    /// folder (so nothing is ever written through that link); a file or link where an
    /// earlier tree had a folder replaces the whole folder.
    pub(crate) fn overlay(&mut self, rel: &Path, node: Node<S>) {
        for ancestor in rel.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            match self.nodes.get(ancestor) {
                Some(Node::Dir) => break,
                // A file or link of an earlier tree: nothing is under it, so replacing
                // it keeps the invariant.
                _ => {
                    self.nodes.insert(ancestor.to_owned(), Node::Dir);
                }
            }
        }
        match (self.nodes.get(rel), &node) {
            (Some(Node::Dir), Node::Dir) => {}
            (Some(Node::Dir), _) => {
                let under: Vec<PathBuf> = self
                    .nodes
                    .range(rel.to_owned()..)
                    .map(|(path, _)| path)
                    .take_while(|path| path.starts_with(rel))
                    .cloned()
                    .collect();
                for path in under {
                    self.nodes.remove(&path);
                }
                self.nodes.insert(rel.to_owned(), node);
            }
            _ => {
                self.nodes.insert(rel.to_owned(), node);
            }
        }
    }

    /// The planned paths and what they hold, parents before children.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = (&Path, &Node<S>)> {
        self.nodes.iter().map(|(path, node)| (path.as_path(), node))
    }

    /// How many files and links the plan writes.
    pub(crate) fn leaves(&self) -> usize {
        self.nodes.values().filter(|n| !matches!(n, Node::Dir)).count()
    }
}

/// Reads the contents of planned files and links; each writing thread has its own.
pub(crate) trait Contents<S> {
    /// Writes the bytes of the file `source` to `sink`.
    fn copy(&mut self, source: &S, sink: &mut Sink<'_>) -> Result<(), CodeError>;
    /// The target of the link `source`.
    fn link(&mut self, source: &S) -> Result<OsString, CodeError>;
}

/// A file being written, with the tree's shared budget of bytes.
pub(crate) struct Sink<'a> {
    file: File,
    path: &'a Path,
    budget: &'a Budget<'a>,
    buf: &'a mut [u8],
}

impl Sink<'_> {
    /// Copies everything `from` reads into the file, counting each chunk against the
    /// budget before writing it. `read_error` says what a failed read means.
    pub(crate) fn pump(
        &mut self,
        from: &mut dyn Read,
        read_error: impl FnOnce(std::io::Error) -> CodeError,
    ) -> Result<(), CodeError> {
        loop {
            let n = match from.read(self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            self.budget.spend(n as u64)?;
            self.file
                .write_all(&self.buf[..n])
                .map_err(CodeError::io("cannot write", self.path))?;
        }
    }
}

/// Bytes written so far by every thread, and the most they may write.
struct Budget<'a> {
    written: AtomicU64,
    limit: u64,
    too_large: &'a (dyn Fn() -> CodeError + Sync),
}

impl Budget<'_> {
    fn spend(&self, n: u64) -> Result<(), CodeError> {
        let before = self.written.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.limit {
            return Err((self.too_large)());
        }
        Ok(())
    }
}

/// How the plan is written.
pub(crate) struct Writer<'a> {
    /// Threads writing files at once (1: all in the calling thread).
    pub(crate) threads: usize,
    /// The most bytes all files together may hold.
    pub(crate) limit: u64,
    /// What is being written, for error messages (the archive, or "layers").
    pub(crate) label: &'a str,
    /// The error for going past `limit`.
    pub(crate) too_large: &'a (dyn Fn() -> CodeError + Sync),
}

/// Below this many files and links, threads cost more than they save.
const PARALLEL_FROM: usize = 32;

/// Each writing thread's copy buffer.
const COPY_BUFFER: usize = 128 * 1024;

impl Writer<'_> {
    /// Writes `plan` into `dest` (an existing folder, normally empty) and returns the
    /// bytes written. `contents` makes each thread's reader.
    ///
    /// Never follows a link while writing: each folder is created with `mkdir` (which
    /// does not follow a link at its name) or, if something is there already, accepted
    /// only when it is a real folder; files are created new, without following a link
    /// at their name, in folders so checked. Afterwards every folder written into must
    /// still be a real folder, so every path of the tree resolves to itself under
    /// `dest`: links kept in the tree may point anywhere (Lambda allows that), but
    /// nothing was written through one.
    pub(crate) fn write<S: Sync, C: Contents<S>>(
        &self,
        plan: &Plan<S>,
        dest: &Path,
        contents: impl Fn() -> Result<C, CodeError> + Sync,
    ) -> Result<u64, CodeError> {
        let budget = Budget {
            written: AtomicU64::new(0),
            limit: self.limit,
            too_large: self.too_large,
        };
        let threads = if plan.leaves() < PARALLEL_FROM {
            1
        } else {
            self.threads.max(1)
        };

        // Folders a level at a time: a level's folders only need their parents.
        let mut levels: Vec<Vec<&Path>> = Vec::new();
        for (rel, node) in plan.nodes() {
            if matches!(node, Node::Dir) {
                let depth = rel.components().count();
                if levels.len() < depth {
                    levels.resize_with(depth, Vec::new);
                }
                levels[depth - 1].push(rel);
            }
        }
        for level in &levels {
            each(threads, level, || Ok(()), |_, rel| make_dir(&dest.join(rel)))?;
        }

        let leaves: Vec<(&Path, &Node<S>)> = plan.nodes().filter(|(_, n)| !matches!(n, Node::Dir)).collect();
        each(
            threads,
            &leaves,
            || Ok((contents()?, vec![0u8; COPY_BUFFER])),
            |(reader, buf), (rel, node)| {
                let path = dest.join(rel);
                match node {
                    Node::Dir => Ok(()),
                    Node::File { source, mode } => {
                        let file = create_new(&path, || {
                            OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .mode(*mode)
                                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                                .open(&path)
                        })?;
                        let mut sink = Sink {
                            file,
                            path: &path,
                            budget: &budget,
                            buf,
                        };
                        reader.copy(source, &mut sink)
                    }
                    Node::Link { source } => {
                        let target = reader.link(source)?;
                        create_new(&path, || std::os::unix::fs::symlink(&target, &path))?;
                        Ok(())
                    }
                }
            },
        )?;

        // Nothing was written through a link: every folder written into is, now that
        // all is in place, a real folder. With every folder of every path so checked,
        // each path's canonical path is its own under `dest` (one lstat per folder,
        // where resolving every path again would read each of its components).
        let dirs: Vec<&Path> = levels.iter().flatten().copied().collect();
        each(
            threads,
            &dirs,
            || Ok(()),
            |_, rel| {
                let path = dest.join(rel);
                match std::fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => Ok(()),
                    Ok(_) => Err(CodeError::UnsafeEntry {
                        archive: self.label.to_owned(),
                        entry: rel.display().to_string(),
                        why: "is no longer a folder after unpacking (something was written through a link)",
                    }),
                    Err(e) => Err(CodeError::io("cannot inspect", path)(e)),
                }
            },
        )?;
        Ok(budget.written.into_inner())
    }
}

/// Creates the folder `path` (writable by the runner alone, whatever the umask), or
/// accepts a real folder already there; never a link.
fn make_dir(path: &Path) -> Result<(), CodeError> {
    match std::fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(()),
            _ => Err(CodeError::Io {
                action: "refusing to write into",
                path: path.to_owned(),
                source: std::io::Error::other("it exists and is not a folder (a link or a file)"),
            }),
        },
        Err(e) => Err(CodeError::io("cannot create", path)(e)),
    }
}

/// Runs `create` for a name that must be new; when something other than a folder is
/// there already, removes it (never following it) and tries once more.
fn create_new<T>(path: &Path, create: impl Fn() -> std::io::Result<T>) -> Result<T, CodeError> {
    match create() {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                return Err(CodeError::io("cannot replace the folder", path)(e));
            }
            std::fs::remove_file(path).map_err(CodeError::io("cannot replace", path))?;
            create().map_err(CodeError::io("cannot create", path))
        }
        other => other.map_err(CodeError::io("cannot create", path)),
    }
}

/// Runs `work` on every item with up to `threads` threads (each with its own state from
/// `init`), taking items in order; stops everyone at the first error and returns it.
fn each<T: Sync, W>(
    threads: usize,
    items: &[T],
    init: impl Fn() -> Result<W, CodeError> + Sync,
    work: impl Fn(&mut W, &T) -> Result<(), CodeError> + Sync,
) -> Result<(), CodeError> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        if items.is_empty() {
            return Ok(());
        }
        let mut state = init()?;
        return items.iter().try_for_each(|item| work(&mut state, item));
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<CodeError>> = Mutex::new(None);
    let run = || -> Result<(), CodeError> {
        let mut state = init()?;
        while !failed.load(Ordering::Relaxed) {
            let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else {
                break;
            };
            work(&mut state, item)?;
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                if let Err(e) = run() {
                    failed.store(true, Ordering::Relaxed);
                    first_error
                        .lock()
                        .expect("no thread panics holding it")
                        .get_or_insert(e);
                }
            });
        }
    });
    match first_error.into_inner().expect("no thread panicked holding it") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Threads that write a tree: a few per core, since most of the time goes to waiting on
/// the file system's metadata rather than to the CPU.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .clamp(2, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u32) -> Node<u32> {
        Node::File { source: n, mode: 0o644 }
    }

    fn paths(plan: &Plan<u32>) -> Vec<(String, Node<u32>)> {
        plan.nodes()
            .map(|(p, n)| (p.display().to_string(), n.clone()))
            .collect()
    }

    #[test]
    fn an_archive_cannot_put_a_name_under_a_link_or_a_file() {
        let mut plan = Plan::default();
        plan.add(Path::new("lib"), Node::Link { source: 1 }).unwrap();
        assert_eq!(
            plan.add(Path::new("lib/x"), file(2)),
            Err("passes through a symlink in the same archive")
        );
        let mut plan = Plan::default();
        plan.add(Path::new("a/b"), file(1)).unwrap();
        assert!(plan.add(Path::new("a/b/c"), file(2)).is_err());
        assert!(
            plan.add(Path::new("a"), Node::Link { source: 3 }).is_err(),
            "a is a folder"
        );
        plan.add(Path::new("a/b"), file(4)).unwrap();
        assert_eq!(
            paths(&plan),
            [("a".into(), Node::Dir), ("a/b".into(), file(4))],
            "the later a/b wins"
        );
    }

    #[test]
    fn a_later_tree_replaces_what_an_earlier_one_put_there() {
        let mut plan = Plan::default();
        plan.overlay(Path::new("a"), Node::Link { source: 1 });
        plan.overlay(Path::new("d"), Node::Dir);
        plan.overlay(Path::new("d/old"), file(2));
        plan.overlay(Path::new("a/x"), file(3));
        plan.overlay(Path::new("d"), file(4));
        assert_eq!(
            paths(&plan),
            [("a".into(), Node::Dir), ("a/x".into(), file(3)), ("d".into(), file(4))]
        );
    }
}
