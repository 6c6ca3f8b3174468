//! The runner image run as Fargate runs a task's container: built from the project's
//! own Dockerfile on a stand-in base (`scripts/container-images`), started by rootful
//! podman with runc, Fargate's default capabilities as the engine's defaults (not
//! `--cap-add`: see `fixtures/containers/containers.conf`), the default seccomp
//! profile, the image's USER, and the entry point as PID 1 unless the stack's task
//! definition sets `InitProcessEnabled` (then `--init`, because the stack does).
//! `--network host` reaches the local AWS emulator on 127.0.0.1.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::ContainerDefinition;

use crate::runner::{without_cargo_test_env, Ran, Running};

/// A runner image of the container stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    /// The custom-runtime image (`provided.al2023`), on the minbase stand-in.
    Provided,
    /// The `python3.12` image, on the stand-in with Python and `awslambdaric` in
    /// `/var/runtime`.
    Python,
}

impl Image {
    /// Its tag (made by `scripts/container-images`).
    pub fn tag(self) -> &'static str {
        match self {
            Image::Provided => "immortal-runner:standin-provided.al2023",
            Image::Python => "immortal-runner:standin-python3.12",
        }
    }
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

/// The engine's settings file.
fn containers_conf() -> PathBuf {
    repo().join("tests/fixtures/containers/containers.conf")
}

/// `podman` with the stage's settings.
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", containers_conf());
    cmd
}

/// Makes the images once per test process: `scripts/container-images` (quick when
/// `scripts/test` already ran it and nothing changed).
fn ensure_images() {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        succeeded(
            without_cargo_test_env(&mut Command::new(repo().join("scripts/container-images")))
                .env("CONTAINERS_CONF", containers_conf()),
            "scripts/container-images",
        );
    });
}

/// Runs `cmd` to its end and returns its stdout; fails the test with its stderr unless
/// it succeeded.
pub fn succeeded(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the stack's runner task definitions set `InitProcessEnabled: true` (then ECS
/// runs a tiny init as PID 1 and the runner under it).
pub fn stack_init_process_enabled() -> bool {
    let stack = std::fs::read_to_string(repo().join("serverless.yml")).expect("serverless.yml");
    stack
        .lines()
        .map(str::trim)
        .any(|line| line.replace(' ', "") == "InitProcessEnabled:true")
}

/// A container of a runner image under construction.
pub struct Container {
    name: String,
    image: String,
    env: Vec<(String, String)>,
    mounts: Vec<(PathBuf, String, &'static str)>,
    volumes: Vec<(String, String)>,
    entrypoint: Option<String>,
    user: Option<String>,
    args: Vec<OsString>,
}

impl Container {
    /// A container of `image`, with the image's own entry point, user and settings.
    pub fn new(image: Image) -> Container {
        ensure_images();
        Container::of(image.tag())
    }

    /// A container of any local image `tag` (made by the test).
    pub fn of(tag: &str) -> Container {
        Container {
            name: format!("immortal-test-{}", crate::lambda::uuid_like()),
            image: tag.to_owned(),
            env: Vec::new(),
            mounts: Vec::new(),
            volumes: Vec::new(),
            entrypoint: None,
            user: None,
            args: Vec::new(),
        }
    }

    /// A container as ECS starts one of a task definition's `definition` (its entry
    /// point, command, user, environment and task volumes, each volume a podman volume
    /// `{volume_prefix}-{name}`), of the local image `tag` in place of the registry's.
    pub fn from_definition(definition: &ContainerDefinition, tag: &str, volume_prefix: &str) -> Container {
        ensure_images();
        let mut container = Container::of(tag);
        let entry = definition.entry_point();
        // podman takes a whole entry point (program and arguments) as a JSON array.
        container.entrypoint = (!entry.is_empty()).then(|| serde_json::to_string(entry).unwrap());
        container.user = definition.user().map(str::to_owned);
        container.args = definition.command().iter().map(OsString::from).collect();
        for kv in definition.environment() {
            container
                .env
                .push((kv.name().unwrap().to_owned(), kv.value().unwrap_or_default().to_owned()));
        }
        for mount in definition.mount_points() {
            let volume = format!("{volume_prefix}-{}", mount.source_volume().unwrap());
            container
                .volumes
                .push((volume, mount.container_path().unwrap().to_owned()));
        }
        container
    }

    /// Its name (for `podman stop`, `exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets an environment variable of the container (as the task definition's
    /// `Environment` or the task's overrides do).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Sets several.
    pub fn envs<K: AsRef<str>>(mut self, vars: impl IntoIterator<Item = (K, String)>) -> Self {
        for (k, v) in vars {
            self.env.push((k.as_ref().to_owned(), v));
        }
        self
    }

    /// Shows the host's `dir` read-only at `at` (the test's zips and events).
    pub fn mount(mut self, dir: &Path, at: &str) -> Self {
        self.mounts.push((dir.to_owned(), at.to_owned(), "ro"));
        self
    }

    /// Shows the host's `dir` read-write at `at` (where fixtures leave pid files).
    pub fn mount_rw(mut self, dir: &Path, at: &str) -> Self {
        self.mounts.push((dir.to_owned(), at.to_owned(), "rw"));
        self
    }

    /// Arguments after the entry point (the task's `command`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The `podman run` command line.
    fn command(&self) -> Command {
        let mut cmd = podman();
        cmd.args(["run", "--rm", "--pull=never", "--network=host", "--name", &self.name]);
        if stack_init_process_enabled() {
            cmd.arg("--init");
        }
        for (k, v) in &self.env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        for (dir, at, mode) in &self.mounts {
            cmd.arg("--volume").arg(format!("{}:{at}:{mode}", dir.display()));
        }
        for (volume, at) in &self.volumes {
            // suid: the sandbox helper in a task volume keeps its setuid bit, as in a
            // Docker volume (podman's default for named volumes is nosuid).
            cmd.arg("--volume").arg(format!("{volume}:{at}:rw,suid"));
        }
        if let Some(entry) = &self.entrypoint {
            cmd.arg("--entrypoint").arg(entry);
        }
        if let Some(user) = &self.user {
            cmd.arg("--user").arg(user);
        }
        cmd.arg(&self.image).args(&self.args);
        cmd
    }

    /// Starts it; its stdout and stderr are the runner's.
    pub fn spawn(self) -> RunningContainer {
        let started = Instant::now();
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podman run");
        RunningContainer {
            running: Some(Running::from_child(child, started)),
            name: self.name,
        }
    }

    /// Runs it to the end (at most two minutes).
    pub fn run(self) -> Ran {
        self.spawn().wait(Duration::from_secs(120))
    }
}

/// A container still running. Removed, whatever happens, when dropped.
pub struct RunningContainer {
    running: Option<Running>,
    name: String,
}

impl RunningContainer {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `podman exec` in it (as root: for the test's own looks, not the function's).
    pub fn exec(&self, argv: &[&str]) -> String {
        succeeded(
            podman().args(["exec", "--user", "0", &self.name]).args(argv),
            &format!("podman exec {argv:?}"),
        )
    }

    /// Waits for its end, stopping it after `limit`.
    pub fn wait(mut self, limit: Duration) -> Ran {
        let running = self.running.take().expect("not waited yet");
        running.wait_then(limit, || {
            let _ = podman().args(["kill", &self.name]).output();
        })
    }
}

impl Drop for RunningContainer {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "0", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
