//! Runs the real `runner` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace's target profile folder (`target/debug`), from this executable's path.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // target/debug/deps/<test> (a test) or target/debug/<bin> (the demo) → target/debug
    let dir = exe.parent().expect("target/<profile>");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>").to_owned()
    } else {
        dir.to_owned()
    }
}

/// Builds the workspace's binaries and libraries once per test process (a no-op when
/// `scripts/test` already did; the same command, so the same feature set) and returns
/// the path of `artifact` (a binary such as `runner`, or a library file name).
pub fn workspace_artifact(artifact: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = profile_dir();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // From any folder (the rehearsal runs where its user is).
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        cmd.args(["build", "--quiet", "--workspace", "--manifest-path"])
            .arg(manifest);
        without_cargo_test_env(&mut cmd);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo build");
        assert!(status.success(), "cargo build --workspace failed");
    });
    let path = dir.join(artifact);
    assert!(
        path.is_file(),
        "{} missing after cargo build --workspace",
        path.display()
    );
    path
}

/// Removes the variables cargo set for this test process from `cmd`'s environment: to
/// build scripts (ring's, via cc) they would look like a changed build environment and
/// force a rebuild of everything a cargo command run from a test builds.
pub fn without_cargo_test_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars() {
        let keep = ["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&key.as_str()) || key.starts_with("CARGO_BUILD_");
        if (key.starts_with("CARGO_") && !keep) || key == "OUT_DIR" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The `runner` binary.
pub fn runner_bin() -> PathBuf {
    workspace_artifact("runner")
}

/// What a finished runner did.
#[derive(Debug)]
pub struct Ran {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Everything on stdout (the response).
    pub stdout: Vec<u8>,
    /// Everything on stderr (logs).
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl Ran {
    /// Runs `cmd` to its end (stdin empty), as it was set up.
    pub fn of(mut cmd: Command) -> std::io::Result<Ran> {
        let started = Instant::now();
        let out = cmd.stdin(Stdio::null()).output()?;
        Ok(Ran {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        })
    }

    /// stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr:\n{}",
                self.stdout_text(),
                self.stderr
            )
        })
    }

    /// Panics with the logs unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\nstdout: {}\nstderr:\n{}",
            self.stdout_text(),
            self.stderr
        );
        self
    }
}

/// A runner command line under construction.
pub struct RunnerCmd {
    cmd: Command,
    cache: Option<tempfile::TempDir>,
}

impl Default for RunnerCmd {
    fn default() -> Self {
        Self::new()
    }
}

impl RunnerCmd {
    /// `runner` with a private cache folder and no inherited IMMORTAL_* variables.
    pub fn new() -> Self {
        Self::with_command(Command::new(runner_bin()))
    }

    /// `runner` started by `cmd` (e.g. `setpriv ... runner`), as [`RunnerCmd::new`].
    pub fn with_command(mut cmd: Command) -> Self {
        for (key, _) in std::env::vars() {
            if key.starts_with("IMMORTAL_") {
                cmd.env_remove(key);
            }
        }
        let cache = tempfile::tempdir().expect("cache dir");
        cmd.env("IMMORTAL_CACHE_DIR", cache.path());
        RunnerCmd {
            cmd,
            cache: Some(cache),
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Runs it in `dir` (where relative paths on its command line start).
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Uses `dir` as the cache (shared across runs), instead of a private one.
    pub fn cache(mut self, dir: &Path) -> Self {
        self.cmd.env("IMMORTAL_CACHE_DIR", dir);
        self.cache = None;
        self
    }

    /// Starts it with piped stdout/stderr.
    pub fn spawn(mut self) -> Running {
        let started = Instant::now();
        let child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runner");
        Running::new(child, started, self.cache)
    }

    /// Runs it to the end (at most `limit`).
    pub fn run(self) -> Ran {
        self.spawn().wait(Duration::from_secs(120))
    }

    /// Runs it with `input` on stdin.
    pub fn run_with_stdin(mut self, input: &[u8]) -> Ran {
        use std::io::Write;
        let started = Instant::now();
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runner");
        child.stdin.take().unwrap().write_all(input).unwrap();
        Running::new(child, started, self.cache).wait(Duration::from_secs(120))
    }
}

/// A runner still running. Its output is read as it comes (a full pipe would block it).
pub struct Running {
    /// The process.
    pub child: std::process::Child,
    started: Instant,
    output: Option<(Reader, Reader)>,
    _cache: Option<tempfile::TempDir>,
}

/// A thread reading one of a child's pipes to the end.
type Reader = std::thread::JoinHandle<Vec<u8>>;

fn drain_pipe(mut pipe: impl std::io::Read + Send + 'static) -> Reader {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

impl Running {
    /// A process started elsewhere (stdout and stderr piped) at `started`.
    pub fn from_child(child: std::process::Child, started: Instant) -> Running {
        Running::new(child, started, None)
    }

    fn new(mut child: std::process::Child, started: Instant, cache: Option<tempfile::TempDir>) -> Running {
        let stdout = drain_pipe(child.stdout.take().expect("piped stdout"));
        let stderr = drain_pipe(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            started,
            output: Some((stdout, stderr)),
            _cache: cache,
        }
    }
}

impl Running {
    /// Sends a signal to the runner.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits for the end, killing it after `limit`.
    pub fn wait(self, limit: Duration) -> Ran {
        self.wait_then(limit, || {})
    }

    /// Waits for the end; after `limit`, calls `on_timeout` (e.g. to kill what the
    /// process stands for, a container) and kills it.
    pub fn wait_then(mut self, limit: Duration, on_timeout: impl FnOnce()) -> Ran {
        let deadline = Instant::now() + limit;
        loop {
            if self.child.try_wait().expect("try_wait").is_some() {
                break;
            }
            if Instant::now() > deadline {
                on_timeout();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("runner status");
        let elapsed = self.started.elapsed();
        let (stdout, stderr) = self.output.take().expect("output readers");
        Ran {
            code: status.code(),
            stdout: stdout.join().expect("stdout reader"),
            stderr: String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned(),
            elapsed,
        }
    }
}

/// A fixture bootstrap built in this workspace (`fixture-echo`, `fixture-sleep`...).
pub fn fixture(name: &str) -> PathBuf {
    workspace_artifact(&format!("fixture-{name}"))
}

impl RunnerCmd {
    /// Sets several environment variables.
    pub fn envs(mut self, vars: impl IntoIterator<Item = (&'static str, String)>) -> Self {
        for (k, v) in vars {
            self.cmd.env(k, v);
        }
        self
    }
}

/// A workspace binary packaged as a Lambda zip (`bootstrap` inside), in `dir`.
pub fn lambda_zip(binary: &str, dir: &Path) -> PathBuf {
    let zip = dir.join(format!("{binary}.zip"));
    crate::zips::bootstrap_zip(&workspace_artifact(binary), &zip);
    zip
}

/// A workspace binary packaged as a Lambda zip once per build (zipping a debug binary
/// takes a while), and a code cache shared by its runs (safe for concurrent runners by
/// design). Both live in the build folder, named for the binary's build, so that test
/// processes reuse them and leave nothing in the temp folder; a new build replaces the
/// previous zip and empties the cache.
pub fn shared_lambda_zip(binary: &str) -> (PathBuf, PathBuf) {
    static ZIPS: OnceLock<std::sync::Mutex<std::collections::BTreeMap<String, PathBuf>>> = OnceLock::new();
    let dir = profile_dir().join("test-lambda-zips");
    let cache = dir.join("cache");
    let mut zips = ZIPS.get_or_init(Default::default).lock().unwrap();
    let zip = zips
        .entry(binary.to_owned())
        .or_insert_with(|| {
            let built = std::fs::metadata(workspace_artifact(binary)).expect("the built binary");
            let stamp = built
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let zip = dir.join(format!("{binary}-{}-{stamp}.zip", built.len()));
            if !zip.is_file() {
                std::fs::create_dir_all(&dir).expect("the zips' folder");
                for old in std::fs::read_dir(&dir).expect("the zips' folder").flatten() {
                    if old.file_name().to_string_lossy().starts_with(&format!("{binary}-")) {
                        let _ = std::fs::remove_file(old.path());
                    }
                }
                let _ = std::fs::remove_dir_all(&cache);
                // Made aside and renamed: another test process may be making it too.
                let part = tempfile::tempdir_in(&dir).expect("a scratch folder beside the zips");
                std::fs::rename(lambda_zip(binary, part.path()), &zip).expect("publish the zip");
            }
            zip
        })
        .clone();
    (zip, cache)
}

impl RunnerCmd {
    /// The runner running a workspace binary as a Lambda function (`--artifact` its zip,
    /// built once per process, and a code cache shared by the process) on `event`.
    pub fn lambda(binary: &str, event: &str) -> RunnerCmd {
        let (zip, cache) = shared_lambda_zip(binary);
        RunnerCmd::new().cache(&cache).args([
            "--artifact".as_ref(),
            zip.as_os_str(),
            "--event".as_ref(),
            event.as_ref(),
        ])
    }
}

/// What a person sees on a terminal: `runner ARGS` (a shell command line's arguments,
/// with any redirection) run under script(1), which gives it a terminal, with a private
/// code cache; the terminal's text (line ends as `\r\n`).
pub fn on_a_terminal(args: &str) -> String {
    let cache = tempfile::tempdir().expect("cache dir");
    let line = format!("{} {args}", workspace_artifact("runner").display());
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("IMMORTAL_CACHE_DIR", cache.path())
        .output()
        .expect("script (util-linux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
