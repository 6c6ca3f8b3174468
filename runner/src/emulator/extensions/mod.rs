//! Lambda extensions, as Lambda runs them: every executable in the layers root's
//! `extensions/` folder is started before the runtime (by name), with the function's
//! environment and `AWS_LAMBDA_RUNTIME_API`, and served the Extensions API
//! (`/2020-01-01/extension/...`), the Telemetry API (`/2022-07-01/telemetry`) and the
//! older Logs API (`/2020-08-15/logs`) on the Runtime API's own address.
//!
//! The lifecycle follows Lambda's documentation: the runtime starts once every
//! extension has registered and asked for its next event (init, bounded as Lambda bounds
//! it); an extension that exits or reports an init error first fails init
//! (`Extension.Crash`, or its own error type). The event reaches the runtime and every
//! extension registered for `INVOKE` at once; the invocation is complete when the
//! runtime has answered and each of those extensions has asked for its next event
//! again. At the end, extensions registered for `SHUTDOWN` get it (2 s, then SIGKILL),
//! and the runtime gets 300 ms (500 with an internal extension) after SIGTERM.
//! Extensions registered from inside the runtime process (internal ones) take part in
//! the invocation but may not register for `SHUTDOWN`, as in Lambda.

pub(crate) mod api;
pub(crate) mod telemetry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use crate::emulator::bootstrap::{Bootstrap, Role, SandboxUser};
use telemetry::Telemetry;

/// The folder of the layers root Lambda starts extensions from.
pub(crate) const EXTENSIONS_DIR: &str = "extensions";
/// How long extensions may take to register and finish their init (Lambda's init
/// phase limit).
pub(crate) const INIT_LIMIT: Duration = Duration::from_secs(10);
/// The Shutdown phase's limit with extensions registered for it.
pub(crate) const SHUTDOWN_LIMIT: Duration = Duration::from_millis(2000);
/// The runtime's graceful shutdown when extensions are registered.
pub(crate) const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(300);
/// The same with an internal extension.
pub(crate) const RUNTIME_SHUTDOWN_INTERNAL: Duration = Duration::from_millis(500);

/// Variables Lambda keeps from extensions (the runtime process's own).
const RUNTIME_ONLY: &[&str] = &[
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_DAEMON_ADDRESS",
    "LAMBDA_RUNTIME_DIR",
    "LAMBDA_TASK_ROOT",
    "_AWS_XRAY_DAEMON_ADDRESS",
    "_AWS_XRAY_DAEMON_PORT",
    "_HANDLER",
];

/// What the register response tells an extension.
#[derive(Debug, Clone, Default)]
pub struct FunctionInfo {
    /// The function's name.
    pub(crate) name: String,
    /// Its version.
    pub(crate) version: String,
    /// `_HANDLER`.
    pub(crate) handler: String,
    /// The account, for extensions that ask for it.
    pub(crate) account_id: Option<String>,
}

/// Why extensions failed the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtensionFailure {
    /// Lambda's error type (`Extension.Crash`, or the extension's own).
    pub(crate) error_type: String,
    /// What happened.
    pub(crate) message: String,
}

/// One registered extension.
#[derive(Debug)]
struct Registered {
    id: String,
    name: String,
    invoke: bool,
    shutdown: bool,
    internal: bool,
    /// Its pending `event/next`, while it waits for one.
    waiting: Option<oneshot::Sender<Bytes>>,
    /// Whether it was handed the INVOKE (and the SHUTDOWN) event.
    got_invoke: bool,
    got_shutdown: bool,
}

impl Registered {
    fn ready(&self) -> bool {
        self.waiting.as_ref().is_some_and(|w| !w.is_closed())
    }
}

#[derive(Debug, Default)]
struct State {
    registered: Vec<Registered>,
    /// Registration closes when the runtime asks for its first event.
    closed: bool,
    invoke: Option<Bytes>,
    shutdown: Option<Bytes>,
    failure: Option<ExtensionFailure>,
}

/// The extensions of one run: who registered, what each waits for, and the telemetry
/// subscriptions.
pub struct Extensions {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    /// Names of the external extensions started (others registering are internal).
    external: Mutex<Vec<String>>,
    /// The register response's function facts.
    pub(crate) info: FunctionInfo,
    /// The Telemetry and Logs API subscriptions.
    pub(crate) telemetry: Arc<Telemetry>,
}

/// An API error: status and Lambda's error document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// HTTP status.
    pub(crate) status: u16,
    /// errorType.
    pub(crate) error_type: &'static str,
    /// errorMessage.
    pub(crate) message: String,
}

impl ApiError {
    fn new(status: u16, error_type: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error_type,
            message: message.into(),
        }
    }
}

impl Extensions {
    /// Nobody registered yet.
    pub fn new(info: FunctionInfo) -> Arc<Extensions> {
        Arc::new(Extensions {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            external: Mutex::new(Vec::new()),
            info,
            telemetry: Telemetry::new(),
        })
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().expect("extensions lock poisoned");
        let out = f(&mut state);
        drop(state);
        self.bump();
        out
    }

    /// A change to wait for (take it before checking the condition).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// `register`: a new extension, its id.
    pub(crate) fn register(&self, name: &str, events: &[String]) -> Result<String, ApiError> {
        if name.is_empty() {
            return Err(ApiError::new(
                400,
                "InvalidRequest",
                "the Lambda-Extension-Name header is missing: it must be the extension's file name",
            ));
        }
        let (mut invoke, mut shutdown) = (false, false);
        for event in events {
            match event.as_str() {
                "INVOKE" => invoke = true,
                "SHUTDOWN" => shutdown = true,
                other => {
                    return Err(ApiError::new(
                        400,
                        "InvalidEventType",
                        format!("{other} is not an event: INVOKE or SHUTDOWN"),
                    ))
                }
            }
        }
        let internal = !self.external.lock().expect("lock").iter().any(|n| n == name);
        if internal && shutdown {
            return Err(ApiError::new(
                400,
                "ShutdownEventNotSupportedForInternalExtension",
                format!("{name} runs inside the runtime process (it is not in /opt/extensions): internal extensions may not register for SHUTDOWN"),
            ));
        }
        self.with(|state| {
            if state.closed {
                return Err(ApiError::new(
                    403,
                    "Extension.RegistrationClosed",
                    format!("{name} registered after the runtime asked for its first event: register during init"),
                ));
            }
            if state.registered.iter().any(|r| r.name == name) {
                return Err(ApiError::new(
                    409,
                    "Extension.AlreadyRegistered",
                    format!("{name} is registered already"),
                ));
            }
            let id = uuid::Uuid::new_v4().to_string();
            state.registered.push(Registered {
                id: id.clone(),
                name: name.to_owned(),
                invoke,
                shutdown,
                internal,
                waiting: None,
                got_invoke: false,
                got_shutdown: false,
            });
            tracing::info!(extension = name, internal, invoke, shutdown, "extension registered");
            Ok(id)
        })
    }

    /// The name of the registered extension `id`.
    pub(crate) fn name_of(&self, id: &str) -> Option<String> {
        let state = self.state.lock().expect("lock");
        state.registered.iter().find(|r| r.id == id).map(|r| r.name.clone())
    }

    /// `event/next`: the extension's next event, when there is one.
    pub(crate) async fn next(&self, id: &str) -> Result<Bytes, ApiError> {
        let receiver = self.with(|state| {
            if state.failure.is_some() {
                return Err(ApiError::new(500, "Extension.Failed", "the run failed; exit"));
            }
            let (shutdown, invoke) = (state.shutdown.clone(), state.invoke.clone());
            let Some(ext) = state.registered.iter_mut().find(|r| r.id == id) else {
                return Err(unknown(id));
            };
            if let (Some(event), true, false) = (&shutdown, ext.shutdown, ext.got_shutdown) {
                ext.got_shutdown = true;
                return Ok(Err(event.clone()));
            }
            if let (Some(event), true, false) = (&invoke, ext.invoke, ext.got_invoke) {
                ext.got_invoke = true;
                return Ok(Err(event.clone()));
            }
            let (tx, rx) = oneshot::channel();
            ext.waiting = Some(tx);
            Ok(Ok(rx))
        })?;
        match receiver {
            Err(event) => Ok(event),
            // Nothing more to hand out (after SHUTDOWN): it waits until the end, as in
            // Lambda, where the environment is torn down around it.
            Ok(rx) => match rx.await {
                Ok(event) => Ok(event),
                Err(_) => std::future::pending().await,
            },
        }
    }

    /// `init/error` and `exit/error`: the extension failed; so does the run.
    pub(crate) fn fail(&self, id: &str, error_type: &str, phase: &str, detail: Option<String>) -> Result<(), ApiError> {
        self.with(|state| {
            let Some(ext) = state.registered.iter().find(|r| r.id == id) else {
                return Err(unknown(id));
            };
            let message = match detail {
                Some(detail) => format!("extension {} reported an {phase} error: {detail}", ext.name),
                None => format!("extension {} reported an {phase} error", ext.name),
            };
            tracing::error!(extension = %ext.name, error_type, phase, "{message}");
            state.failure.get_or_insert(ExtensionFailure {
                error_type: error_type.to_owned(),
                message,
            });
            Ok(())
        })
    }

    /// Records a failure found by the supervisor (an extension process that exited).
    pub(crate) fn failed(&self, failure: ExtensionFailure) {
        self.with(|state| {
            state.failure.get_or_insert(failure);
        });
    }

    /// The failure, if any.
    pub(crate) fn failure(&self) -> Option<ExtensionFailure> {
        self.state.lock().expect("lock").failure.clone()
    }

    /// Whether anyone registered.
    pub(crate) fn any(&self) -> bool {
        !self.state.lock().expect("lock").registered.is_empty()
    }

    /// Whether an internal extension registered (the runtime gets more time to stop).
    pub(crate) fn internal(&self) -> bool {
        self.state.lock().expect("lock").registered.iter().any(|r| r.internal)
    }

    /// Names and events of the registered extensions, in registration order.
    pub(crate) fn registered(&self) -> Vec<(String, Vec<&'static str>)> {
        let state = self.state.lock().expect("lock");
        state
            .registered
            .iter()
            .map(|r| {
                let mut events = Vec::new();
                if r.invoke {
                    events.push("INVOKE");
                }
                if r.shutdown {
                    events.push("SHUTDOWN");
                }
                (r.name.clone(), events)
            })
            .collect()
    }

    /// Whether every external extension started has registered: as in Lambda, the
    /// runtime starts then, while the extensions finish their init.
    pub(crate) fn externals_registered(&self) -> bool {
        let external = self.external.lock().expect("lock").clone();
        let state = self.state.lock().expect("lock");
        external
            .iter()
            .all(|name| state.registered.iter().any(|r| &r.name == name))
    }

    /// The registered extensions that have not yet asked for their first event (their
    /// init is not done).
    pub(crate) fn not_ready(&self) -> Vec<String> {
        let state = self.state.lock().expect("lock");
        state
            .registered
            .iter()
            .filter(|r| !r.ready() && !r.got_invoke && !r.got_shutdown)
            .map(|r| r.name.clone())
            .collect()
    }

    /// Whether every extension registered for INVOKE has asked for its next event since
    /// it got the INVOKE (the invocation is complete on their side).
    /// Those `gone` (their process exited) count as done.
    pub(crate) fn invoke_done(&self, gone: &[String]) -> bool {
        let state = self.state.lock().expect("lock");
        state
            .registered
            .iter()
            .filter(|r| r.invoke && !gone.contains(&r.name))
            .all(|r| r.ready())
    }

    /// The runtime asks for its first event: registration closes; once every registered
    /// extension waits for its event, INVOKE goes to those registered for it. Waits
    /// (forever, if an extension never finishes its init: the supervisor's limit ends it).
    pub(crate) async fn begin_invoke(&self, event: Bytes) {
        let mut changes = self.subscribe();
        self.with(|state| state.closed = true);
        loop {
            let all_ready = {
                let state = self.state.lock().expect("lock");
                state.failure.is_none() && state.registered.iter().all(Registered::ready)
            };
            if all_ready {
                break;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
        self.with(|state| {
            state.invoke = Some(event.clone());
            for ext in state.registered.iter_mut().filter(|r| r.invoke) {
                if let Some(waiting) = ext.waiting.take() {
                    ext.got_invoke = true;
                    let _ = waiting.send(event.clone());
                }
            }
        });
    }

    /// SHUTDOWN to the external extensions registered for it; returns whether any was.
    pub(crate) fn begin_shutdown(&self, event: Bytes) -> bool {
        self.with(|state| {
            state.shutdown = Some(event.clone());
            let mut any = false;
            for ext in state.registered.iter_mut().filter(|r| r.shutdown) {
                any = true;
                if let Some(waiting) = ext.waiting.take() {
                    ext.got_shutdown = true;
                    let _ = waiting.send(event.clone());
                }
            }
            any
        })
    }

    /// Whether every extension registered for SHUTDOWN got it and asked for more (it is
    /// done), or is `gone`.
    pub(crate) fn shutdown_done(&self, gone: &[String]) -> bool {
        let state = self.state.lock().expect("lock");
        state
            .registered
            .iter()
            .filter(|r| r.shutdown && !gone.contains(&r.name))
            .all(|r| r.got_shutdown && r.ready())
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(
        403,
        "Extension.UnknownExtensionIdentifier",
        format!("no extension registered with the identifier {id:?}"),
    )
}

/// The executables Lambda would start from `opt/extensions`, by name.
pub(crate) fn executables(opt: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(opt.join(EXTENSIONS_DIR)) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .collect();
    found.sort();
    found
}

/// An extension's environment: the runtime's, without what Lambda keeps for the runtime
/// process alone.
pub(crate) fn environment(runtime_env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    runtime_env
        .iter()
        .filter(|(k, _)| !RUNTIME_ONLY.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The external extension processes of a run.
#[derive(Default)]
pub(crate) struct Processes {
    running: Vec<(String, Bootstrap)>,
}

impl Processes {
    /// Starts each of `programs` (external extensions) beside the runtime, as its user.
    pub(crate) fn start(
        extensions: &Extensions,
        programs: &[PathBuf],
        cwd: &Path,
        env: &BTreeMap<String, String>,
        sandbox: Option<&SandboxUser>,
        scratch: &Path,
        mut output: impl FnMut() -> std::io::Result<Option<std::os::fd::OwnedFd>>,
    ) -> Result<Processes, StartError> {
        let mut processes = Processes::default();
        for program in programs {
            let name = program
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            extensions.external.lock().expect("lock").push(name.clone());
            let out = output().map_err(|source| StartError::Pipe {
                name: name.clone(),
                source,
            })?;
            let child = Bootstrap::spawn(
                Role::Beside,
                &[program.display().to_string()],
                cwd,
                env,
                sandbox,
                scratch,
                out,
            )
            .map_err(|source| StartError::Spawn {
                program: program.clone(),
                source,
            })?;
            tracing::info!(extension = %name, path = %program.display(), pid = child.pid(), "extension started");
            processes.running.push((name, child));
        }
        Ok(processes)
    }

    /// Whether any was started.
    pub(crate) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The first extension found to have exited (its name and how).
    pub(crate) fn exited(&mut self) -> Option<(String, String)> {
        for (name, child) in &mut self.running {
            if let Some(status) = child.try_exited() {
                return Some((name.clone(), crate::emulator::bootstrap::describe_exit(status)));
            }
        }
        None
    }

    /// Names of the extensions whose process is gone.
    pub(crate) fn gone(&mut self) -> Vec<String> {
        self.running
            .iter_mut()
            .filter_map(|(name, child)| child.try_exited().map(|_| name.clone()))
            .collect()
    }

    /// Waits until every external extension has registered (Lambda then starts the
    /// runtime), failed or exited; until `deadline` (the end of Lambda's init limit, with
    /// a time limit; none without one: an overflow run waits as long as it takes).
    pub(crate) async fn wait_init(
        &mut self,
        extensions: &Extensions,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), ExtensionFailure> {
        let mut changes = extensions.subscribe();
        loop {
            if let Some(failure) = extensions.failure() {
                return Err(failure);
            }
            if extensions.externals_registered() {
                return Ok(());
            }
            if let Some((name, how)) = self.exited() {
                return Err(crash(&name, &how, "during init"));
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                let waiting: Vec<String> = self
                    .running
                    .iter()
                    .map(|(n, _)| n.clone())
                    .filter(|n| !extensions.registered().iter().any(|(r, _)| r == n))
                    .collect();
                return Err(init_timeout("register", &waiting));
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    /// The Shutdown phase for extensions: SHUTDOWN (with `reason`) to those registered
    /// for it, until each is done or gone or `limit` passes; then SIGKILL to all.
    pub(crate) async fn shut_down(&mut self, extensions: &Extensions, reason: &str, limit: Duration) {
        let deadline_ms = crate::emulator::invocation::epoch_ms_after(limit);
        let event = serde_json::json!({"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline_ms});
        if extensions.begin_shutdown(Bytes::from(event.to_string())) {
            let deadline = tokio::time::Instant::now() + limit;
            let mut changes = extensions.subscribe();
            while tokio::time::Instant::now() < deadline {
                let gone = self.gone();
                if extensions.shutdown_done(&gone) {
                    break;
                }
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        }
        for (name, child) in &mut self.running {
            if child.try_exited().is_none() {
                tracing::debug!(extension = %name, "extension stopped with SIGKILL at the end of the Shutdown phase");
            }
            let _ = child.kill().await;
        }
    }
}

/// Lambda's `Extension.InitTimeout`: the extensions `waiting` did not `what` (register,
/// or ask for their first event) within its init limit.
pub(crate) fn init_timeout(what: &str, waiting: &[String]) -> ExtensionFailure {
    ExtensionFailure {
        error_type: "Extension.InitTimeout".into(),
        message: format!(
            "extensions did not {what} within Lambda's {} s init limit (it applies with --timeout): {waiting:?}",
            INIT_LIMIT.as_secs()
        ),
    }
}

/// Lambda's `Extension.Crash`.
pub(crate) fn crash(name: &str, how: &str, when: &str) -> ExtensionFailure {
    ExtensionFailure {
        error_type: "Extension.Crash".into(),
        message: format!("extension {name} exited {when} ({how})"),
    }
}

/// Why an extension could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// No pipe for its output.
    #[error("cannot open a pipe for extension {name}'s output: {source}")]
    Pipe {
        /// The extension.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Its process would not start.
    #[error("cannot start extension {}: {source}", .program.display())]
    Spawn {
        /// Its executable.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exts() -> Arc<Extensions> {
        Extensions::new(FunctionInfo::default())
    }

    #[tokio::test]
    async fn the_invoke_waits_for_every_extension_and_reaches_those_registered_for_it() {
        let e = exts();
        e.external.lock().unwrap().push("a".into());
        let a = e.register("a", &["INVOKE".into(), "SHUTDOWN".into()]).unwrap();
        let b = e.register("b", &[]).unwrap();
        // "b" was not started from /opt/extensions: an internal extension, registered
        // beside the external "a".
        assert!(e.internal(), "b is internal");
        let names: Vec<String> = e.registered().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["a", "b"]);
        let (e1, a1) = (e.clone(), a.clone());
        let first = tokio::spawn(async move { e1.next(&a1).await });
        let e2 = e.clone();
        let invoke =
            tokio::spawn(async move { e2.begin_invoke(Bytes::from_static(b"{\"eventType\":\"INVOKE\"}")).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!invoke.is_finished(), "b has not asked for its event yet");
        let e3 = e.clone();
        let second = tokio::spawn(async move { e3.next(&b).await });
        invoke.await.unwrap();
        assert_eq!(&first.await.unwrap().unwrap()[..], b"{\"eventType\":\"INVOKE\"}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "b registered for nothing: it waits");
        assert!(!e.invoke_done(&[]), "a has not asked again");
        let e4 = e.clone();
        let _again = tokio::spawn(async move { e4.next(&a).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(e.invoke_done(&[]));
        assert!(e.begin_shutdown(Bytes::from_static(b"{}")));
    }

    #[test]
    fn internal_extensions_may_not_register_for_shutdown_nor_register_late() {
        let e = exts();
        let err = e.register("otel", &["SHUTDOWN".into()]).unwrap_err();
        assert_eq!(err.error_type, "ShutdownEventNotSupportedForInternalExtension");
        assert_eq!(e.register("x", &["PING".into()]).unwrap_err().status, 400);
        e.register("otel", &["INVOKE".into()]).unwrap();
        assert_eq!(e.register("otel", &[]).unwrap_err().status, 409);
        e.with(|s| s.closed = true);
        assert_eq!(e.register("late", &[]).unwrap_err().status, 403);
        assert_eq!(e.fail("nobody", "X", "init", None).unwrap_err().status, 403);
    }

    #[test]
    fn extensions_do_not_see_the_runtimes_own_variables() {
        let env = BTreeMap::from([
            ("_HANDLER".to_owned(), "h".to_owned()),
            ("LAMBDA_TASK_ROOT".to_owned(), "/var/task".to_owned()),
            ("AWS_LAMBDA_RUNTIME_API".to_owned(), "127.0.0.1:1".to_owned()),
            ("MY_SETTING".to_owned(), "x".to_owned()),
        ]);
        let seen = environment(&env);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["AWS_LAMBDA_RUNTIME_API", "MY_SETTING"]
        );
    }
}
