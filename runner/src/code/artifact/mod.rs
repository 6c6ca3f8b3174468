//! The function's code: fetched, verified, unpacked and cached.
//!
//! [`unpack`] is the guard for untrusted zips, [`tree`] the planned, parallel writer it
//! shares with the layer merge, [`cache`] the content-addressed store, [`fetch`] the
//! streamed, resumable download.

pub(crate) mod cache;
pub(crate) mod fetch;
pub(crate) mod tree;
pub(crate) mod unpack;

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub(crate) use cache::Cache;

use crate::code::function::CodeRef;
use crate::error::CodeError;
use fetch::Fetcher;

/// The task root for a local `--artifact`: the folder itself, or the zip unpacked into
/// the cache (keyed by the zip's SHA-256, so an unchanged zip is unpacked once).
pub(crate) fn local(artifact: &Path, cache: &Cache, limit: u64) -> Result<PathBuf, CodeError> {
    let meta = std::fs::metadata(artifact).map_err(|_| CodeError::MissingArtifact {
        path: artifact.to_owned(),
    })?;
    if meta.is_dir() {
        return artifact
            .canonicalize()
            .map_err(CodeError::io("cannot resolve", artifact));
    }
    if !is_zip(artifact) && meta.permissions().mode() & 0o111 != 0 {
        return bare_bootstrap(artifact, cache);
    }
    let digest = sha256_file(artifact)?;
    let key = code_key(&digest);
    let (dir, hit) = cache.use_or_fill(&key, |dir| unpack::unpack(artifact, dir, limit).map(|_| ()))?;
    tracing::info!(artifact = %artifact.display(), cache = %dir.display(), cache_hit = hit, "code ready");
    Ok(dir)
}

/// A local layer (`--layer`): a folder as it is, or a zip unpacked into the cache (by its
/// SHA-256). With what identifies its content: the zip's SHA-256, or the folder's path,
/// names, sizes and times (so an edited folder makes a new layers root).
pub(crate) fn local_layer(layer: &Path, cache: &Cache, limit: u64) -> Result<(PathBuf, String), CodeError> {
    let meta = std::fs::metadata(layer).map_err(|_| CodeError::MissingLayer { path: layer.to_owned() })?;
    if meta.is_dir() {
        let dir = layer.canonicalize().map_err(CodeError::io("cannot resolve", layer))?;
        let mut hasher = Sha256::new();
        fingerprint(&dir, &mut hasher);
        return Ok((dir, hex(&hasher.finalize())));
    }
    let digest = sha256_file(layer)?;
    let key = format!("layer/{}", hex(&digest));
    let (dir, hit) = cache.use_or_fill(&key, |dir| unpack::unpack(layer, dir, limit).map(|_| ()))?;
    tracing::info!(layer = %layer.display(), cache = %dir.display(), cache_hit = hit, "layer ready");
    Ok((dir, hex(&digest)))
}

/// Feeds each entry's path, size and time under `dir` (links not followed) to `hasher`.
fn fingerprint(dir: &Path, hasher: &mut Sha256) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        hasher.update(path.as_os_str().as_encoded_bytes());
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            hasher.update(meta.len().to_le_bytes());
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            hasher.update(modified.map(|d| d.as_nanos()).unwrap_or_default().to_le_bytes());
            if meta.is_dir() {
                fingerprint(&path, hasher);
            }
        }
    }
}

/// The folder holding `code` unpacked: from the cache when its CodeSha256 was seen
/// before (nothing is downloaded), else downloaded, verified, unpacked and cached.
/// `kind` is `code` or `layer`.
///
/// Downloaded once however many ask at once: tasks of this process wait for the first
/// one's turn, other processes for its lock file, and then find the entry it published.
pub(crate) async fn obtain(
    fetcher: &Fetcher,
    code: &CodeRef,
    cache: &Cache,
    kind: &str,
    limit: u64,
) -> Result<PathBuf, CodeError> {
    let digest = code.digest()?;
    let key = format!("{kind}/{}", hex(&digest));
    loop {
        let dir = obtain_once(fetcher, code, cache, &key, limit).await?;
        // Held for this run; one a prune removed just before is obtained again.
        if cache.in_use(&key) {
            return Ok(dir);
        }
    }
}

async fn obtain_once(
    fetcher: &Fetcher,
    code: &CodeRef,
    cache: &Cache,
    key: &str,
    limit: u64,
) -> Result<PathBuf, CodeError> {
    let key = key.to_owned();
    let hit = |dir: PathBuf, waited: bool| {
        tracing::info!(what = %code.what, cache = %dir.display(), cache_hit = true, waited, "code ready");
        Ok(dir)
    };
    if let Some(dir) = cache.get(&key) {
        return hit(dir, false);
    }
    let _turn = cache.turn(&key).await;
    if let Some(dir) = cache.get(&key) {
        return hit(dir, true);
    }
    let lock = {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::task::spawn_blocking(move || cache.lock(&key))
            .await
            .expect("locking does not panic")?
    };
    if let Some(dir) = cache.get(&key) {
        return hit(dir, true);
    }
    let downloads = cache.root().join(".downloads");
    std::fs::create_dir_all(&downloads).map_err(CodeError::io("cannot create", &downloads))?;
    let zip =
        tempfile::NamedTempFile::new_in(&downloads).map_err(CodeError::io("cannot create a file in", &downloads))?;
    let got = fetcher.download(code, zip.path()).await?;
    let cache = cache.clone();
    let (dir, _) = tokio::task::spawn_blocking(move || {
        cache.fill(&lock, |dir| unpack::unpack(zip.path(), dir, limit).map(|_| ()))
    })
    .await
    .expect("unpacking does not panic")?;
    tracing::info!(what = %code.what, cache = %dir.display(), cache_hit = false, bytes = got.bytes, requests = got.requests, "code ready");
    Ok(dir)
}

/// A function's layers, each unpacked in the cache, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layers {
    /// The unpacked layers.
    pub(crate) dirs: Vec<PathBuf>,
    /// What identifies the set: a hash of the layers' SHA-256s, in order.
    pub(crate) set_key: String,
}

/// Obtains each of `layers` (see [`obtain`]).
pub(crate) async fn obtain_layers(
    fetcher: &Fetcher,
    layers: &[CodeRef],
    cache: &Cache,
    limit: u64,
) -> Result<Layers, CodeError> {
    let mut dirs = Vec::with_capacity(layers.len());
    for layer in layers {
        dirs.push(obtain(fetcher, layer, cache, "layer", limit).await?);
    }
    let set: String = layers.iter().map(|l| l.sha256.as_str()).collect::<Vec<_>>().join(",");
    Ok(Layers {
        dirs,
        set_key: hex(&Sha256::digest(set.as_bytes())),
    })
}

/// Lambda's `/opt`: the layers unpacked in order, later ones overwriting earlier ones.
/// Without `explicit`, a cache folder per layer set; with it, that folder (rebuilt when
/// the layer set changes, refused when it holds something the runner did not put there).
pub(crate) async fn layers_root(layers: &Layers, cache: &Cache, explicit: Option<&Path>) -> Result<PathBuf, CodeError> {
    let (dirs, set_key) = (layers.dirs.clone(), layers.set_key.clone());
    let cache = cache.clone();
    let explicit = explicit.map(Path::to_owned);
    tokio::task::spawn_blocking(move || match explicit {
        None => cache
            .use_or_fill(&format!("opt/{set_key}"), |root| fill_layers(&dirs, root))
            .map(|(root, _)| root),
        Some(root) => {
            // One rebuild at a time, whoever asks (drain workers run messages at once).
            let _lock = cache.lock(&format!(
                "opt-dir/{}",
                hex(&Sha256::digest(root.as_os_str().as_encoded_bytes()))
            ))?;
            // The marker lives in the cache: the layers root holds the layers and nothing else.
            let marker = cache
                .root()
                .join(LAYERS_MARKERS)
                .join(hex(&Sha256::digest(root.as_os_str().as_encoded_bytes())));
            if std::fs::read_to_string(&marker).is_ok_and(|m| m == set_key) {
                return Ok(root);
            }
            std::fs::create_dir_all(&root).map_err(CodeError::io("cannot create", &root))?;
            let entries: Vec<_> = std::fs::read_dir(&root)
                .map_err(CodeError::io("cannot list", &root))?
                .flatten()
                .collect();
            if !entries.is_empty() && !marker.exists() {
                return Err(CodeError::Io {
                    action: "refusing to unpack layers into",
                    path: root,
                    source: std::io::Error::other(
                        "the folder is not empty and was not filled by the runner; pass an empty --opt-dir",
                    ),
                });
            }
            for entry in entries {
                let path = entry.path();
                let _ = if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
            fill_layers(&dirs, &root)?;
            let markers = marker.parent().expect("a marker has a folder");
            std::fs::create_dir_all(markers).map_err(CodeError::io("cannot create", markers))?;
            std::fs::write(&marker, &set_key).map_err(CodeError::io("cannot write", &marker))?;
            Ok(root)
        }
    })
    .await
    .expect("copying layers does not panic")
}

/// Where the cache remembers which layer set each fixed layers root holds (a root it
/// filled has a marker there).
const LAYERS_MARKERS: &str = "opt-roots";

/// Merges the unpacked layers `dirs` into `root` (empty), in order, as Lambda extracts
/// layers into /opt: a later layer's entry replaces an earlier one's ([`tree::Plan::overlay`]).
/// The merge is planned first, so a folder of a later layer where an earlier one left a
/// link becomes a real folder inside `root`: nothing is ever written through a link
/// (an earlier layer's `a -> b/../..` and a later one's `b -> .` plus `a/x` put `x`
/// in `root/a`, not outside).
fn fill_layers(dirs: &[PathBuf], root: &Path) -> Result<(), CodeError> {
    let mut plan = tree::Plan::default();
    for dir in dirs {
        plan_tree(dir, Path::new(""), &mut plan)?;
    }
    // No limit of its own: each layer was capped when it was unpacked.
    let too_large = || CodeError::TooLarge {
        archive: "layers".into(),
        limit: u64::MAX,
    };
    let writer = tree::Writer {
        threads: tree::default_threads(),
        limit: u64::MAX,
        label: "layers",
        too_large: &too_large,
    };
    writer.write(&plan, root, || Ok(CachedFiles))?;
    Ok(())
}

/// Lays the tree under `dir` (a layer in the cache) over `plan`, without following links.
fn plan_tree(dir: &Path, rel: &Path, plan: &mut tree::Plan<PathBuf>) -> Result<(), CodeError> {
    let here = dir.join(rel);
    for entry in std::fs::read_dir(&here).map_err(CodeError::io("cannot list", &here))? {
        let entry = entry.map_err(CodeError::io("cannot list", &here))?;
        let (path, name) = (entry.path(), rel.join(entry.file_name()));
        let kind = entry.file_type().map_err(CodeError::io("cannot inspect", &path))?;
        if kind.is_dir() {
            plan.overlay(&name, tree::Node::Dir);
            plan_tree(dir, &name, plan)?;
        } else if kind.is_symlink() {
            plan.overlay(&name, tree::Node::Link { source: path });
        } else if kind.is_file() {
            let mode = entry
                .metadata()
                .map_err(CodeError::io("cannot inspect", &path))?
                .permissions()
                .mode()
                & 0o777;
            plan.overlay(&name, tree::Node::File { source: path, mode });
        }
    }
    Ok(())
}

/// Reads files and links of layers unpacked in the cache.
struct CachedFiles;

impl tree::Contents<PathBuf> for CachedFiles {
    fn copy(&mut self, source: &PathBuf, sink: &mut tree::Sink<'_>) -> Result<(), CodeError> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(source)
            .map_err(CodeError::io("cannot open", source))?;
        sink.pump(&mut file, CodeError::io("cannot read", source))
    }

    fn link(&mut self, source: &PathBuf) -> Result<std::ffi::OsString, CodeError> {
        std::fs::read_link(source)
            .map(PathBuf::into_os_string)
            .map_err(CodeError::io("cannot read", source))
    }
}

/// Whether the file starts like a zip archive.
fn is_zip(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"PK\x03\x04"
}

/// A bare executable given as the artifact: a task root holding a link to it as
/// `bootstrap` (so `target/debug/my-fn` runs without zipping it first).
fn bare_bootstrap(executable: &Path, cache: &Cache) -> Result<PathBuf, CodeError> {
    let real = executable
        .canonicalize()
        .map_err(CodeError::io("cannot resolve", executable))?;
    let key = format!("exe/{}", hex(&Sha256::digest(real.as_os_str().as_encoded_bytes())));
    let (dir, _) = cache.use_or_fill(&key, |dir| {
        std::os::unix::fs::symlink(&real, dir.join("bootstrap")).map_err(CodeError::io("cannot link", dir))
    })?;
    Ok(dir)
}

/// The cache key for code with this SHA-256.
pub(crate) fn code_key(digest: &[u8]) -> String {
    format!("code/{}", hex(digest))
}

/// SHA-256 of a file, streamed.
pub(crate) fn sha256_file(path: &Path) -> Result<Vec<u8>, CodeError> {
    let mut file = std::fs::File::open(path).map_err(CodeError::io("cannot open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(CodeError::io("cannot read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_vec())
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
