//! The runner as the image runs it: as the image's unprivileged user, each function
//! started as a user of its own through a setuid-root `immortal-sandbox`, the code cache
//! (private), `/opt` and the task root the runner's own, `/tmp` emptied between functions.
//!
//! The tests run as root (as this project's machines do), install the sandbox the way
//! the Dockerfile does (owned by root, group of the runner, mode 4750) and start the
//! runner with `setpriv` as that user.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;

use crate::runner::{workspace_artifact, RunnerCmd};

/// The image's user and group.
pub const RUNNER_UID: u32 = 10_001;

/// A place the image's user owns, with the sandbox installed.
pub struct ImageUser {
    root: tempfile::TempDir,
    /// The installed sandbox.
    pub sandbox: PathBuf,
    // One at a time: the function users (20000 and up) are the host's, and a sandbox
    // clears up every process of its user when its function ends. In the image each
    // runner has a container of its own; tests running at once would not.
    _alone: std::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Default for ImageUser {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageUser {
    /// Installs the sandbox and makes the runner's folders.
    pub fn new() -> ImageUser {
        let alone = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        assert_eq!(
            // SAFETY: a plain id query.
            unsafe { libc::geteuid() },
            0,
            "these tests install a setuid program and switch users: run them as root, as scripts/test does on this project's machines"
        );
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let sandbox = root.path().join("immortal-sandbox");
        std::fs::copy(workspace_artifact("immortal-sandbox"), &sandbox).unwrap();
        chown(&sandbox, Some(0), Some(RUNNER_UID)).unwrap();
        std::fs::set_permissions(&sandbox, std::fs::Permissions::from_mode(0o4750)).unwrap();
        for owned in ["cache", "opt", "task", "work"] {
            let dir = root.path().join(owned);
            std::fs::create_dir(&dir).unwrap();
            chown(&dir, Some(RUNNER_UID), Some(RUNNER_UID)).unwrap();
        }
        ImageUser {
            root,
            sandbox,
            _alone: alone,
        }
    }

    /// A folder everyone may read, for the test's zips and files.
    pub fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    /// The runner, started as the image's user with the image's settings, and the most
    /// permissive umask (000): nothing of the runner's may depend on a kind one.
    pub fn runner(&self) -> RunnerCmd {
        let mut command = Command::new("sh");
        command
            .args(["-c", "umask 000 && exec \"$@\"", "sh", "setpriv"])
            .args(["--reuid", &RUNNER_UID.to_string(), "--regid", &RUNNER_UID.to_string()])
            .args(["--clear-groups", "--"])
            .arg(workspace_artifact("runner"));
        RunnerCmd::with_command(command)
            .cache(&self.root.path().join("cache"))
            .env("IMMORTAL_SANDBOX", &self.sandbox)
            .env("IMMORTAL_OPT_DIR", self.root.path().join("opt"))
            .env("IMMORTAL_TASK_ROOT", self.root.path().join("task"))
            .env("IMMORTAL_OWN_TMP", "true")
    }

    /// Writes `bytes` to `name` in the work folder, readable by everyone.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.work().join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }
}

/// That a function's report (`uid`, as the inspect fixture writes it) shows a user of
/// its own: a function user, neither root nor the runner's.
pub fn assert_function_user(seen: &serde_json::Value) {
    let uid = seen["uid"].as_u64().expect("a uid") as u32;
    assert!(
        (20_000..30_000).contains(&uid) && uid != RUNNER_UID && uid != 0,
        "a function user of its own: {uid}"
    );
}
