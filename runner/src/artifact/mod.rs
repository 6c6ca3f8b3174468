//! The function's code: fetched, verified, unpacked and cached.
//!
//! [`unpack`] is the guard for untrusted zips, [`cache`] the content-addressed store,
//! [`fetch`] the streamed, resumable download.

pub mod cache;
pub mod fetch;
pub mod unpack;

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use cache::Cache;

use crate::error::CodeError;

/// The task root for a local `--artifact`: the folder itself, or the zip unpacked into
/// the cache (keyed by the zip's SHA-256, so an unchanged zip is unpacked once).
pub fn local(artifact: &Path, cache: &Cache, limit: u64) -> Result<PathBuf, CodeError> {
    let meta = std::fs::metadata(artifact).map_err(|_| CodeError::MissingArtifact {
        path: artifact.to_owned(),
    })?;
    if meta.is_dir() {
        return artifact
            .canonicalize()
            .map_err(CodeError::io("cannot resolve", artifact));
    }
    let digest = sha256_file(artifact)?;
    let key = code_key(&digest);
    let (dir, hit) = cache.get_or_fill(&key, |dir| unpack::unpack(artifact, dir, limit).map(|_| ()))?;
    tracing::info!(artifact = %artifact.display(), cache = %dir.display(), cache_hit = hit, "code ready");
    Ok(dir)
}

/// The cache key for code with this SHA-256.
pub fn code_key(digest: &[u8]) -> String {
    format!("code/{}", hex(digest))
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<Vec<u8>, CodeError> {
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
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
