//! The bootstrap: finding it, the environment Lambda gives it, and the child process
//! with its signals.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use immortal_handler_sdk::container::{self, TASK_DEFINITIONS_VAR};

use crate::code::function::LogSettings;
use crate::code::image::ImageStart;
use crate::code::runtime::{Runtime, RuntimeDir};
use crate::emulator::invocation::Invocation;
use crate::error::CodeError;

/// The executable Lambda starts, and `_HANDLER` of a custom runtime.
pub(crate) const BOOTSTRAP: &str = "bootstrap";

/// Where the code lives: the task root (`/var/task` in Lambda), the layers root
/// (`/opt`) and the runtime directory (`/var/runtime`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodeLayout {
    /// The function's code, as the function sees it (`LAMBDA_TASK_ROOT`).
    pub(crate) task_root: PathBuf,
    /// The unpacked layers, when there are any.
    pub(crate) opt_dir: Option<PathBuf>,
    /// The runtime directory (`LAMBDA_RUNTIME_DIR`).
    pub(crate) runtime_dir: Option<RuntimeDir>,
    /// A container-image function's entry point, command and working directory (the
    /// runner runs inside its image): no bootstrap is looked for.
    pub(crate) image: Option<ImageStart>,
}

/// What the runtime is started as: a program, its arguments, its working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Start {
    /// The program, then its arguments.
    pub(crate) argv: Vec<String>,
    /// Where it starts (the task root, or an image's working directory).
    pub(crate) cwd: PathBuf,
    /// Where it came from.
    pub(crate) origin: Origin,
}

/// What a started process is to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The runtime (the bootstrap): when it ends, the sandbox ends whatever its user left.
    Runtime,
    /// The runtime with extensions beside it: when it ends (a crash, a timeout, a
    /// stop), the extensions live on to get SHUTDOWN, as in Lambda; the runner's sweep
    /// after the run ends what the user left.
    RuntimeWithExtensions,
    /// A process beside it, as its user (an extension).
    Beside,
}

/// Which part of the layout a bootstrap came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The function's own code (a custom runtime).
    Function,
    /// A layer (`/opt/bootstrap`).
    Layer,
    /// The managed runtime's own (`/var/runtime/bootstrap`).
    Runtime,
    /// A container image's entry point and command.
    Image,
}

impl CodeLayout {
    /// What starts the function: an image's entry point and command in its working
    /// directory, else the bootstrap, in the task root.
    pub(crate) fn start(&self, runtime: Option<&Runtime>) -> Result<Start, CodeError> {
        if let Some(image) = &self.image {
            let program = image.program(std::env::var("PATH").ok().as_deref())?;
            let mut argv = image.argv.clone();
            argv[0] = program.display().to_string();
            return Ok(Start {
                argv,
                cwd: image.working_dir.clone(),
                origin: Origin::Image,
            });
        }
        let (program, origin) = self.bootstrap(runtime)?;
        Ok(Start {
            argv: vec![program.display().to_string()],
            cwd: self.task_root.clone(),
            origin,
        })
    }

    /// Finds the executable `bootstrap` where the Runtime Interface Emulator looks: the
    /// task root, the layers root, then (for a managed runtime) the runtime directory.
    pub(crate) fn bootstrap(&self, runtime: Option<&Runtime>) -> Result<(PathBuf, Origin), CodeError> {
        let mut searched = vec![self.task_root.display().to_string()];
        let candidates = std::iter::once((self.task_root.join(BOOTSTRAP), Origin::Function))
            .chain(self.opt_dir.as_ref().map(|opt| (opt.join(BOOTSTRAP), Origin::Layer)));
        for (path, origin) in candidates {
            if let Some(found) = executable(&path)? {
                return Ok((found, origin));
            }
        }
        if let Some(opt) = &self.opt_dir {
            searched.push(opt.display().to_string());
        }
        let no_bootstrap = |searched: Vec<String>, hint: String| CodeError::NoBootstrap {
            searched: searched.join(", nor in "),
            hint,
        };
        let custom_hint =
            "a custom-runtime function needs an executable file named bootstrap at the root of its zip (or in a layer)";
        if runtime.is_some_and(Runtime::is_custom) {
            return Err(no_bootstrap(searched, custom_hint.to_owned()));
        }
        let Some(dir) = &self.runtime_dir else {
            return Err(no_bootstrap(searched, custom_hint.to_owned()));
        };
        if !dir.serves(runtime) {
            let wanted = runtime.expect("served unless named");
            let Some(image) = dir.image_runtime.as_ref() else {
                let made_for = dir.installed_runtime.as_ref().expect("served unless declared");
                return Err(CodeError::WrongRuntimeFolder {
                    runtime: wanted.to_string(),
                    folder: dir.path.clone(),
                    made_for: made_for.to_string(),
                });
            };
            return Err(CodeError::WrongRuntime {
                runtime: wanted.to_string(),
                image_runtime: image.to_string(),
                base_image: wanted
                    .base_image()
                    .unwrap_or_else(|| format!("AWS's base image for {wanted}")),
            });
        }
        if let Some(found) = executable(&dir.bootstrap())? {
            return Ok((found, Origin::Runtime));
        }
        searched.push(dir.path.display().to_string());
        let hint = match runtime {
            Some(runtime) => format!(
                "a {runtime} function runs on its runtime's own bootstrap: run it on the runner image built on {} (the task definition {TASK_DEFINITIONS_VAR} maps {runtime} to), or pass --runtime-dir DIR holding {runtime}'s bootstrap",
                runtime.base_image().unwrap_or_else(|| "AWS's base image for it".to_owned()),
            ),
            None => format!("{custom_hint}; for a managed runtime (python, nodejs...) pass --runtime-dir DIR holding the runtime's bootstrap, and --runtime (e.g. python3.12)"),
        };
        Err(no_bootstrap(searched, hint))
    }
}

/// `path` when it is a file with an executable bit; an error when it is a file without.
fn executable(path: &Path) -> Result<Option<PathBuf>, CodeError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(CodeError::NotExecutable {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(Some(path.to_owned()))
}

/// Everything the bootstrap's environment is made of.
#[derive(Debug, Clone)]
pub(crate) struct LaunchConfig<'a> {
    /// The resolved invocation.
    pub(crate) invocation: &'a Invocation,
    /// Where the code is.
    pub(crate) layout: &'a CodeLayout,
    /// `_HANDLER`.
    pub(crate) handler: &'a str,
    /// The function's runtime, when known (`AWS_EXECUTION_ENV`).
    pub(crate) runtime: Option<&'a Runtime>,
    /// Its `LoggingConfig` (`AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL`).
    pub(crate) logging: &'a LogSettings,
    /// `host:port` of the local Runtime API.
    pub(crate) runtime_api: &'a str,
    /// The function's own variables (`Environment.Variables`, then `--env`).
    pub(crate) function_env: &'a BTreeMap<String, String>,
    /// True when the invocation has no time limit.
    pub(crate) unlimited: bool,
    /// What of the runner's own environment reaches the function.
    pub(crate) passthrough: Passthrough,
    /// How the function gets its credentials (the container credentials endpoint).
    pub(crate) credentials: &'a [(String, String)],
    /// Its private scratch folder (`TMPDIR`).
    pub(crate) scratch: &'a Path,
}

/// What of the runner's own environment reaches the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Passthrough {
    /// Everything but the envelope's own variables: a local run, where the variables a
    /// user sets are meant for the function (as with cargo-lambda and SAM), including
    /// `IMMORTAL_*` settings of a function that reads them (the forwarder, run locally).
    Shell,
    /// Only the region, `LANG` and the SDK's endpoint overrides: the function runs as
    /// itself, and the runner's credentials, settings and ECS URIs are not its business.
    Region,
    /// As `Region`, plus the container image's own environment (its `ENV`, which Lambda
    /// gives an image function): everything but the runner's settings, the task's
    /// credentials and ECS's variables.
    Image,
}

impl Passthrough {
    /// Whether the runner's variable `name` reaches the function.
    pub(crate) fn passes(self, name: &str) -> bool {
        match self {
            Passthrough::Shell => !ENVELOPE_VARS.contains(&name),
            Passthrough::Region => {
                ["AWS_REGION", "AWS_DEFAULT_REGION", "LANG"].contains(&name) || name.starts_with("AWS_ENDPOINT_URL")
            }
            Passthrough::Image => {
                !ENVELOPE_VARS.contains(&name)
                    && !STATIC_CREDENTIALS.contains(&name)
                    && name != EXECUTION_ENV
                    && !["IMMORTAL_", "ECS_", "AWS_CONTAINER_"]
                        .iter()
                        .any(|prefix| name.starts_with(prefix))
            }
        }
    }
}

/// The envelope's variables: the runner's input, never the function's.
const ENVELOPE_VARS: &[&str] = &[
    container::EVENT_VAR,
    container::CONTEXT_VAR,
    container::ENVELOPE_URL_VAR,
];

/// Credentials an SDK takes before the container credentials endpoint.
const STATIC_CREDENTIALS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
];

/// `AWS_Lambda_<runtime>`, for managed runtimes only.
const EXECUTION_ENV: &str = "AWS_EXECUTION_ENV";
/// `JSON` or `Text`, from the function's `LoggingConfig`.
const LOG_FORMAT: &str = "AWS_LAMBDA_LOG_FORMAT";
/// The application log level, from the function's `LoggingConfig`.
const LOG_LEVEL: &str = "AWS_LAMBDA_LOG_LEVEL";

/// Lambda's default PATH for `provided` runtimes, used when the runner has none.
pub(crate) const LAMBDA_PATH: &str = "/usr/local/bin:/usr/bin/:/bin";

/// Where `program` would be in each folder of `path_var` (a PATH value), in order.
pub(crate) fn on_path<'a>(path_var: &'a str, program: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(move |d| Path::new(d).join(program))
}

/// The bootstrap's environment: what passes through of the runner's own, then the
/// function's variables, then Lambda's reserved ones, which a function cannot override
/// in Lambda either. Nothing else: no runner setting, no ECS URI, no runner credential.
pub(crate) fn environment(cfg: &LaunchConfig<'_>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| cfg.passthrough.passes(k)).collect();
    env.extend(cfg.function_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if !cfg.credentials.is_empty() {
        // Served credentials: static keys from anywhere would win over them in every SDK.
        for key in STATIC_CREDENTIALS {
            env.remove(*key);
        }
        env.extend(cfg.credentials.iter().cloned());
    }

    let inv = cfg.invocation;
    let task_root = cfg.layout.task_root.display().to_string();
    let SearchPaths {
        runtime_dir,
        path,
        ld_path,
    } = search_paths(cfg.layout);
    let reserved = [
        ("AWS_LAMBDA_RUNTIME_API", cfg.runtime_api.to_owned()),
        ("LAMBDA_TASK_ROOT", task_root.clone()),
        ("LAMBDA_RUNTIME_DIR", runtime_dir),
        ("_HANDLER", cfg.handler.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", inv.function_name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", inv.function_version.clone()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", inv.memory_mb.to_string()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", inv.log_group.clone()),
        ("AWS_LAMBDA_LOG_STREAM_NAME", inv.log_stream.clone()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_REGION", inv.region.clone()),
        ("AWS_DEFAULT_REGION", inv.region.clone()),
        ("TZ", ":UTC".to_owned()),
        ("TMPDIR", cfg.scratch.display().to_string()),
        ("PATH", path),
        ("LD_LIBRARY_PATH", ld_path),
        (container::RUNNER_VAR, env!("CARGO_PKG_VERSION").to_owned()),
    ];
    env.extend(reserved.into_iter().map(|(k, v)| (k.to_owned(), v)));
    // Reserved, and set only when Lambda would set them.
    let optional = [
        (EXECUTION_ENV, cfg.runtime.and_then(Runtime::execution_env)),
        (LOG_FORMAT, cfg.logging.format.clone()),
        (LOG_LEVEL, cfg.logging.application_level.clone()),
    ];
    for (name, value) in optional {
        match value {
            Some(value) => env.insert(name.to_owned(), value),
            None => env.remove(name),
        };
    }
    env.entry("LANG".to_owned()).or_insert_with(|| "en_US.UTF-8".to_owned());
    // Where the layers are when they are not at /opt (outside the image): a local
    // runtime folder's bootstrap puts their python/ and nodejs/ folders on the import
    // path from there. Only a path the function can list itself.
    env.remove(container::OPT_DIR_VAR);
    if let Some(opt) = cfg
        .layout
        .opt_dir
        .as_ref()
        .filter(|opt| *opt != Path::new(container::LAYERS_ROOT))
    {
        env.insert(container::OPT_DIR_VAR.to_owned(), opt.display().to_string());
    }
    env.remove(container::NO_DEADLINE_VAR);
    env.remove(container::OVERFLOW_VAR);
    if cfg.unlimited {
        env.insert(container::NO_DEADLINE_VAR.to_owned(), "1".to_owned());
    }
    if let Some(overflow) = &inv.overflow {
        env.insert(
            container::OVERFLOW_VAR.to_owned(),
            serde_json::to_string(overflow).unwrap_or_default(),
        );
    }
    env
}

/// `LAMBDA_RUNTIME_DIR`, `PATH` and `LD_LIBRARY_PATH` as Lambda sets them.
struct SearchPaths {
    runtime_dir: String,
    path: String,
    ld_path: String,
}

/// The search paths of a zip function: the runner's own, then (Lambda's order) the
/// runtime's, the code's and the layers'. An image function keeps its image's, as
/// its `ENV` set them (AWS's base images set all three).
fn search_paths(layout: &CodeLayout) -> SearchPaths {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut path = var("PATH").unwrap_or_else(|| LAMBDA_PATH.to_owned());
    if layout.image.is_some() {
        return SearchPaths {
            runtime_dir: var("LAMBDA_RUNTIME_DIR").unwrap_or_else(|| "/var/runtime".to_owned()),
            path,
            ld_path: var("LD_LIBRARY_PATH").unwrap_or_default(),
        };
    }
    let task_root = layout.task_root.display().to_string();
    let runtime_dir = layout
        .runtime_dir
        .as_ref()
        .map(|dir| dir.path.display().to_string())
        .unwrap_or_else(|| task_root.clone());
    let mut ld_path: Vec<String> = var("LD_LIBRARY_PATH").into_iter().collect();
    if layout.runtime_dir.is_some() {
        ld_path.push(runtime_dir.clone());
        ld_path.push(format!("{runtime_dir}/lib"));
    }
    ld_path.push(task_root.clone());
    ld_path.push(format!("{task_root}/lib"));
    if let Some(opt) = &layout.opt_dir {
        path.push_str(&format!(":{}/bin", opt.display()));
        ld_path.push(format!("{}/lib", opt.display()));
    }
    SearchPaths {
        runtime_dir,
        path,
        ld_path: ld_path.join(":"),
    }
}

/// Runs the bootstrap as a user of its own, through `immortal-sandbox` (see that crate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SandboxUser {
    /// The setuid `immortal-sandbox` program.
    pub(crate) program: PathBuf,
    /// The function's user (and group) id.
    pub(crate) uid: u32,
}

impl SandboxUser {
    /// Kills what `uid` still runs and removes what it owns in `dirs` (its scratch
    /// folder, `/tmp`, `/var/tmp`, `/dev/shm`). Whether nothing of it is left: the user
    /// id must not serve another run otherwise.
    pub(crate) async fn sweep(&self, dirs: &[PathBuf]) -> Swept {
        let result = tokio::process::Command::new(&self.program)
            .arg(immortal_sandbox::SWEEP)
            .args([self.uid.to_string(), self.uid.to_string()])
            .args(dirs)
            .env_clear()
            .stdin(Stdio::null())
            .status()
            .await;
        match result {
            Ok(status) if status.success() => Swept::Clean,
            Ok(status) if status.code() == Some(i32::from(immortal_sandbox::SWEEP_LEFTOVERS)) => {
                tracing::error!(
                    uid = self.uid,
                    ?dirs,
                    "the function's user still has processes or files after the sweep; it serves no other run"
                );
                Swept::Leftovers
            }
            other => {
                tracing::error!(uid = self.uid, ?dirs, result = ?other, "could not sweep up after the function; its user serves no other run");
                Swept::Leftovers
            }
        }
    }
}

/// Whether a function's user was left with nothing after its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Swept {
    /// Nothing of it left (or it was not sandboxed).
    Clean,
    /// Processes or files of it survived the sweep.
    Leftovers,
}

impl SandboxUser {}

/// The running bootstrap, in a process group of its own so that signals reach
/// everything it started (as stopping a Lambda sandbox would).
pub(crate) struct Bootstrap {
    child: tokio::process::Child,
    pgid: i32,
    sandboxed: bool,
    status: Option<ExitStatus>,
}

impl Bootstrap {
    /// Starts `argv` (a program and its arguments) in `cwd` with exactly `env` (as
    /// `sandbox`'s user when given).
    /// Its stdout and stderr both go to `output` (the function's log), else to the
    /// runner's stderr: the runner's stdout carries only the response.
    /// An extension starts `Beside` the runtime: as the same user, and what the user
    /// leaves running is cleared up when the runtime ends, not when it does.
    pub(crate) fn spawn(
        role: Role,
        argv: &[String],
        cwd: &Path,
        env: &BTreeMap<String, String>,
        sandbox: Option<&SandboxUser>,
        scratch: &Path,
        output: Option<std::os::fd::OwnedFd>,
    ) -> std::io::Result<Bootstrap> {
        let (stdout, stderr) = match output {
            Some(fd) => (Stdio::from(fd.try_clone()?), Stdio::from(fd)),
            None => {
                let stderr = std::io::stderr().lock();
                let copy = std::os::fd::AsFd::as_fd(&stderr).try_clone_to_owned()?;
                (Stdio::from(copy), Stdio::inherit())
            }
        };
        let mut command = match sandbox {
            None => {
                let mut command = tokio::process::Command::new(&argv[0]);
                command.args(&argv[1..]).current_dir(cwd).env_clear().envs(env);
                // A runner killed outright takes its function with it, as a container's
                // end does (the sandbox helper arranges the same for its child).
                // SAFETY: prctl in the forked child before exec; async-signal-safe.
                unsafe {
                    command.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                command
            }
            Some(user) => {
                let mut command = tokio::process::Command::new(&user.program);
                command
                    .arg(match role {
                        Role::Runtime => immortal_sandbox::EXEC,
                        Role::RuntimeWithExtensions | Role::Beside => immortal_sandbox::JOIN,
                    })
                    .args([user.uid.to_string(), user.uid.to_string()])
                    .env_clear();
                command
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        let child = match sandbox {
            None => command.spawn()?,
            Some(_) => {
                // What to run travels on a pipe the child reads once it is unprivileged.
                let spec = immortal_sandbox::Spec {
                    cwd: cwd.display().to_string(),
                    scratch: Some(scratch.display().to_string()),
                    argv: argv.to_vec(),
                    env: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                };
                let (reader, writer) = std::io::pipe()?;
                let reader_fd = std::os::fd::AsRawFd::as_raw_fd(&reader);
                // SAFETY: dup2 in the forked child before exec; async-signal-safe.
                unsafe {
                    command.pre_exec(move || {
                        if libc::dup2(reader_fd, immortal_sandbox::SPEC_FD) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                let child = command.spawn()?;
                drop(reader);
                let bytes = spec.encode();
                std::thread::spawn(move || {
                    let mut writer = writer;
                    let _ = std::io::Write::write_all(&mut writer, &bytes);
                });
                child
            }
        };
        let pgid = child.id().map(|id| id as i32).unwrap_or(0);
        Ok(Bootstrap {
            child,
            pgid,
            sandboxed: sandbox.is_some(),
            status: None,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> i32 {
        self.pgid
    }

    /// Sends `signal` to the bootstrap's whole process group (through the sandbox,
    /// which relays it to the function's session).
    pub(crate) fn signal(&self, signal: i32) {
        if self.pgid > 0 && self.status.is_none() {
            // SIGKILL would end the sandbox and orphan the function: ask it to kill.
            let (target, signal) = match (self.sandboxed, signal) {
                (true, libc::SIGKILL) => (self.pgid, immortal_sandbox::KILL_SIGNAL),
                _ => (-self.pgid, signal),
            };
            // SAFETY: kill(2) on our child or its process group; no memory is involved.
            unsafe {
                libc::kill(target, signal);
            }
        }
    }

    /// Waits for the bootstrap to exit (cancel-safe; remembers the status).
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        self.status = Some(status);
        Ok(status)
    }

    /// Whether it has exited already.
    pub(crate) fn exited(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Whether it has exited, checked now without waiting.
    pub(crate) fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
            }
        }
        self.status
    }

    /// SIGTERM, then SIGKILL after `grace` if it is still there. Returns its exit status.
    pub(crate) async fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            self.kill_group();
            return Ok(status);
        }
        self.signal(libc::SIGTERM);
        let status = match tokio::time::timeout(grace, self.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "bootstrap ignored SIGTERM; sending SIGKILL"
                );
                self.signal(libc::SIGKILL);
                self.wait().await?
            }
        };
        self.kill_group();
        Ok(status)
    }

    /// SIGKILL now (the timeout case: Lambda does not ask politely either).
    pub(crate) async fn kill(&mut self) -> std::io::Result<ExitStatus> {
        self.signal(libc::SIGKILL);
        let status = self.wait().await?;
        self.kill_group();
        Ok(status)
    }

    /// Leaves no stragglers: whatever the bootstrap started dies with it (a sandbox
    /// kills every process of the function's user itself before it exits).
    fn kill_group(&self) {
        if self.pgid > 0 && !self.sandboxed {
            // SAFETY: as in `signal`; the group may already be gone (ESRCH), which is fine.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
        }
    }
}

/// `exit status 3` / `signal: killed`, as Lambda words a runtime's end.
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal: {}", crate::emulator::outcome::signal_name(signal)),
        _ => "unknown exit".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `--help` and docs/as-itself.md say: locally the shell's variables but the
    /// envelope's; as itself, only the region, LANG and endpoint overrides.
    #[test]
    fn which_of_the_runners_variables_reach_the_function() {
        for name in [
            "HOME",
            "MY_SETTING",
            "AWS_PROFILE",
            "AWS_REGION",
            container::PAYLOAD_BUCKET_VAR,
        ] {
            assert!(Passthrough::Shell.passes(name), "{name}");
        }
        for name in [
            container::EVENT_VAR,
            container::CONTEXT_VAR,
            container::ENVELOPE_URL_VAR,
        ] {
            assert!(!Passthrough::Shell.passes(name), "{name}");
        }
        for name in ["AWS_REGION", "AWS_DEFAULT_REGION", "LANG", "AWS_ENDPOINT_URL_S3"] {
            assert!(Passthrough::Region.passes(name), "{name}");
        }
        for name in [
            "HOME",
            "AWS_ACCESS_KEY_ID",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            container::EVENT_VAR,
        ] {
            assert!(!Passthrough::Region.passes(name), "{name}");
        }
        // An image function gets its image's ENV, never what ECS or the runner add.
        for name in [
            "PATH",
            "LD_LIBRARY_PATH",
            "LAMBDA_RUNTIME_DIR",
            "MODEL_DIR",
            "HOME",
            "AWS_REGION",
        ] {
            assert!(Passthrough::Image.passes(name), "{name}");
        }
        for name in [
            container::EVENT_VAR,
            container::ENVELOPE_URL_VAR,
            container::PAYLOAD_BUCKET_VAR,
            container::SANDBOX_VAR,
            "AWS_ACCESS_KEY_ID",
            "AWS_SESSION_TOKEN",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "ECS_CONTAINER_METADATA_URI_V4",
            "AWS_EXECUTION_ENV",
        ] {
            assert!(!Passthrough::Image.passes(name), "{name}");
        }
    }

    fn layout(dir: &Path) -> CodeLayout {
        CodeLayout {
            task_root: dir.to_owned(),
            opt_dir: None,
            runtime_dir: None,
            image: None,
        }
    }

    fn executable_file(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn finds_and_checks_the_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let err = layout(dir.path()).bootstrap(None).unwrap_err();
        assert!(err.to_string().contains("no `bootstrap` in"), "{err}");
        let path = dir.path().join("bootstrap");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = layout(dir.path()).bootstrap(None).unwrap_err();
        assert!(err.to_string().contains("is not executable (mode 644)"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(layout(dir.path()).bootstrap(None).unwrap(), (path, Origin::Function));
    }

    #[test]
    fn falls_back_to_the_layers_root() {
        let task = tempfile::tempdir().unwrap();
        let opt = tempfile::tempdir().unwrap();
        let path = opt.path().join("bootstrap");
        executable_file(&path);
        let layout = CodeLayout {
            task_root: task.path().to_owned(),
            opt_dir: Some(opt.path().to_owned()),
            runtime_dir: None,
            image: None,
        };
        assert_eq!(layout.bootstrap(None).unwrap(), (path, Origin::Layer));
    }

    #[test]
    fn then_to_the_runtime_directory_of_a_managed_runtime() {
        let task = tempfile::tempdir().unwrap();
        let runtime = tempfile::tempdir().unwrap();
        let python = Runtime::new("python3.12");
        let mut layout = CodeLayout {
            task_root: task.path().to_owned(),
            opt_dir: None,
            runtime_dir: Some(RuntimeDir {
                path: runtime.path().to_owned(),
                image_runtime: Some(python.clone()),
                installed_runtime: None,
            }),
            image: None,
        };
        let err = layout.bootstrap(Some(&python)).unwrap_err().to_string();
        assert!(
            err.contains("public.ecr.aws/lambda/python:3.12"),
            "names the image: {err}"
        );
        executable_file(&runtime.path().join("bootstrap"));
        assert_eq!(
            layout.bootstrap(Some(&python)).unwrap(),
            (runtime.path().join("bootstrap"), Origin::Runtime)
        );
        let err = layout
            .bootstrap(Some(&Runtime::new("nodejs22.x")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nodejs22.x") && err.contains("python3.12") && err.contains("nodejs:22"),
            "{err}"
        );
        let err = layout
            .bootstrap(Some(&Runtime::new("provided.al2023")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("custom-runtime function needs"),
            "never a managed runtime's bootstrap: {err}"
        );
        layout.runtime_dir.as_mut().unwrap().image_runtime = None;
        assert!(
            layout.bootstrap(None).is_ok(),
            "a local runtime directory serves what it is given"
        );
    }
}
