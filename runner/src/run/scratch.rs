//! The function's scratch folder (`TMPDIR`), one per run, named for the runner that made
//! it (`immortal-fn-<pid>-...`), so that the folders of a runner that died without
//! cleaning up (`kill -9`, out of memory) are found and removed when the next runner
//! starts.

use std::path::{Path, PathBuf};

use crate::emulator::bootstrap::SandboxUser;
use crate::error::RunnerError;

/// Every runner-made scratch folder's name starts so.
const PREFIX: &str = "immortal-fn-";

/// The function's private scratch folder: made by the runner (removed when the returned
/// guard drops), or, sandboxed, a name the function's user makes for itself (and the
/// sweep of its user removes).
pub(crate) fn folder(sandbox: Option<&SandboxUser>) -> Result<(PathBuf, Option<tempfile::TempDir>), RunnerError> {
    if let Some(user) = sandbox {
        let name = format!("immortal-{}-{}", user.uid, uuid::Uuid::new_v4().simple());
        return Ok((std::env::temp_dir().join(name), None));
    }
    let own = tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| RunnerError::Start(format!("cannot create the function's scratch folder: {e}")))?;
    Ok((own.path().to_owned(), Some(own)))
}

/// Removes the scratch folders in `dir` whose runner is no longer running; how many.
/// Only where `/proc` says which processes run (elsewhere nothing is removed), and only
/// what this user may remove (`/tmp` is sticky).
pub(crate) fn remove_stale(dir: &Path) -> usize {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = runner_of(&name.to_string_lossy()) else {
            continue;
        };
        if pid == std::process::id() || proc.join(pid.to_string()).exists() {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed the scratch folders of runners that died");
    }
    removed
}

/// The runner's pid in a scratch folder's name (`immortal-fn-<pid>-<random>`).
fn runner_of(name: &str) -> Option<u32> {
    let (pid, _) = name.strip_prefix(PREFIX)?.split_once('-')?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_runners_folders_go_and_a_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that ran and ended: a child that exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let make = |name: String| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.join("left")).unwrap();
            std::fs::write(path.join("left/file"), "x").unwrap();
            path
        };
        let stale = make(format!("{PREFIX}{dead}-abc123"));
        let ours = make(format!("{PREFIX}{}-def456", std::process::id()));
        let other = make(format!("{PREFIX}1-ghi789")); // init: always running
        let unrelated = make("immortal-fn-notapid".to_owned());
        assert_eq!(remove_stale(dir.path()), 1);
        assert!(!stale.exists(), "the dead runner's folder is gone");
        assert!(ours.exists() && other.exists() && unrelated.exists());
        assert_eq!(runner_of("immortal-fn-42-x"), Some(42));
        assert_eq!(runner_of("immortal-fn-x"), None);
    }
}
