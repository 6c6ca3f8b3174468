//! Runs one invocation: starts the Runtime API and the bootstrap, watches both, and
//! turns whatever happens (a response, an error, an exit, a deadline, a signal) into
//! an [`Outcome`].

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use immortal_handler_sdk::arn::Arn;
use immortal_handler_sdk::container::TIMEOUT_ERROR_TYPE;
use tokio::time::Instant;

use crate::code::function::LogSettings;
use crate::code::runtime::Runtime;
use crate::emulator::bootstrap::{
    describe_exit, environment, Bootstrap, CodeLayout, LaunchConfig, Passthrough, Role, SandboxUser,
};
use crate::emulator::extensions::telemetry::Kind;
use crate::emulator::extensions::{self, ExtensionFailure, Extensions, FunctionInfo};
use crate::emulator::function_logs::{tree_peak_rss_mb, FunctionLog};
use crate::emulator::invocation::Invocation;
use crate::emulator::outcome::{signal_name, timeout_message, Failure, Outcome};
use crate::emulator::peer::Admission;
use crate::emulator::platform::{Platform, Report, Status};
use crate::emulator::runtime_api::{ApiEvent, ResponseSink, RuntimeApi};
use crate::error::RunnerError;
use crate::signals::{stop_requested, StopSignal};

/// How to run the invocation.
#[derive(Debug, Clone)]
pub(crate) struct InvokeOptions {
    /// Lambda-style limit; `None` for no limit (the point of the runner).
    pub(crate) timeout: Option<Duration>,
    /// How long the bootstrap gets between SIGTERM and SIGKILL.
    pub(crate) grace: Duration,
    /// `_HANDLER`.
    pub(crate) handler: String,
    /// The function's runtime, when known.
    pub(crate) runtime: Option<Runtime>,
    /// Its `LoggingConfig`.
    pub(crate) logging: LogSettings,
    /// The function's own environment variables.
    pub(crate) function_env: BTreeMap<String, String>,
    /// What of the runner's environment reaches it.
    pub(crate) passthrough: Passthrough,
    /// The credentials endpoint's variables, when it has its own role.
    pub(crate) credentials: Vec<(String, String)>,
    /// Its own user, when sandboxed.
    pub(crate) sandbox: Option<SandboxUser>,
    /// Its private scratch folder (`TMPDIR`).
    pub(crate) scratch: PathBuf,
    /// Start the extensions in the layers root (`--no-extensions` turns them off).
    pub(crate) extensions: bool,
    /// How often a long run says it is still running (`--heartbeat`).
    pub(crate) heartbeat: Option<Duration>,
}

/// Runs `invocation` with the bootstrap found in `layout`; its output and the platform's
/// START/END/REPORT lines go to `log`. The phases, as Lambda's: init (extensions, then
/// the runtime), invoke (until an outcome), the invocation's end (extensions finish,
/// the report), shutdown.
pub(crate) async fn invoke(
    layout: &CodeLayout,
    invocation: Arc<Invocation>,
    options: &InvokeOptions,
    log: &mut FunctionLog,
    sink: ResponseSink,
    stop: StopSignal,
) -> Result<Outcome, RunnerError> {
    let start = layout.start(options.runtime.as_ref())?;
    let extensions = Extensions::new(FunctionInfo {
        name: invocation.function_name.clone(),
        version: invocation.function_version.clone(),
        handler: options.handler.clone(),
        account_id: Arn::parse(&invocation.invoked_function_arn).map(|arn| arn.account.to_owned()),
    });
    let admission = match &options.sandbox {
        Some(user) => Admission::User(user.uid),
        None => Admission::Anyone,
    };
    let api = RuntimeApi::start(invocation.clone(), options.timeout, sink, extensions.clone(), admission)
        .await
        .map_err(|e| RunnerError::Start(format!("cannot serve the Runtime API on 127.0.0.1: {e}")))?;
    let env = environment(&LaunchConfig {
        invocation: &invocation,
        layout,
        handler: &options.handler,
        runtime: options.runtime.as_ref(),
        logging: &options.logging,
        runtime_api: &api.address(),
        function_env: &options.function_env,
        unlimited: options.timeout.is_none(),
        passthrough: options.passthrough,
        credentials: &options.credentials,
        scratch: &options.scratch,
    });
    let started = Instant::now();
    // With a time limit, the extensions' init ends within Lambda's: they register, then
    // ask for their first event, in time.
    let init_deadline = options.timeout.map(|_| started + extensions::INIT_LIMIT);
    let runtime_version = options
        .runtime
        .as_ref()
        .map(Runtime::version_label)
        .unwrap_or_else(|| "provided".to_owned());
    let init_start = Platform::InitStart {
        function_name: &invocation.function_name,
        function_version: &invocation.function_version,
        runtime_version: &runtime_version,
    };
    // Lambda writes INIT_START for functions on a runtime it manages, not for images.
    if layout.image.is_none() {
        platform(log, &extensions, &init_start);
    } else {
        extensions.telemetry.platform_event(&init_start);
    }
    let processes = match start_extensions(layout, options, &extensions, &env, init_deadline, log).await? {
        Ok(processes) => processes,
        Err(failure) => return Ok(extension_failure(&invocation, &failure, Failure::Init)),
    };
    let output = log
        .output()
        .map_err(|e| RunnerError::Start(format!("cannot open a pipe for the function's logs: {e}")))?;
    let role = if processes.is_empty() {
        Role::Runtime
    } else {
        Role::RuntimeWithExtensions
    };
    let child = Bootstrap::spawn(
        role,
        &start.argv,
        &start.cwd,
        &env,
        options.sandbox.as_ref(),
        &options.scratch,
        output,
    )
    .map_err(|e| RunnerError::Start(format!("cannot start {}: {e}", start.argv[0])))?;
    tracing::info!(
        bootstrap = %start.argv[0],
        pid = child.pid(),
        user = options.sandbox.as_ref().map(|s| s.uid),
        from = ?start.origin,
        runtime = options.runtime.as_ref().map(Runtime::id).unwrap_or("custom"),
        runtime_api = %api.address(),
        request_id = %invocation.request_id,
        function = %invocation.function_name,
        "bootstrap started"
    );
    let mut run = Supervised {
        invocation,
        options,
        api,
        extensions,
        processes,
        child,
        stop,
        started,
        delivered_at: None,
        deadline: None,
        init_deadline,
        report: Report::default(),
        said_alive: None,
    };
    let outcome = run.until_outcome(log).await?;
    log_outcome(&outcome, started);
    let extensions_timed_out = run.end_invocation(&outcome).await;
    run.report(log, &outcome, extensions_timed_out);
    run.shut_down(&outcome).await;
    Ok(outcome)
}

/// Starts the layers' extensions, as Lambda does, before the runtime: by name, each
/// registered and waiting for its first event. `Err(failure)` when one failed init
/// (then every extension has had SHUTDOWN).
async fn start_extensions(
    layout: &CodeLayout,
    options: &InvokeOptions,
    extensions: &Arc<Extensions>,
    env: &BTreeMap<String, String>,
    init_deadline: Option<Instant>,
    log: &mut FunctionLog,
) -> Result<Result<extensions::Processes, ExtensionFailure>, RunnerError> {
    let programs = match (&layout.opt_dir, options.extensions) {
        (Some(opt), true) => extensions::executables(opt),
        _ => Vec::new(),
    };
    // The function's output goes to the Telemetry API's subscribers, internal
    // extensions' included (they register from inside the runtime, unannounced).
    if options.extensions {
        log.tap(extensions.telemetry.clone());
    }
    if programs.is_empty() {
        return Ok(Ok(extensions::Processes::default()));
    }
    let mut processes = extensions::Processes::start(
        extensions,
        &programs,
        &layout.task_root,
        &extensions::environment(env),
        options.sandbox.as_ref(),
        &options.scratch,
        || log.output_as(Kind::Extension),
    )
    .map_err(|e| RunnerError::Start(e.to_string()))?;
    if let Err(failure) = processes.wait_init(extensions, init_deadline).await {
        processes
            .shut_down(extensions, "failure", extensions::SHUTDOWN_LIMIT)
            .await;
        return Ok(Err(failure));
    }
    Ok(Ok(processes))
}

/// One platform event, to the function's log and the Telemetry API alike.
fn platform(log: &FunctionLog, extensions: &Extensions, event: &Platform<'_>) {
    log.platform(event);
    extensions.telemetry.platform_event(event);
}

/// An invocation under way: the bootstrap, its extensions, the APIs they talk to.
struct Supervised<'a> {
    invocation: Arc<Invocation>,
    options: &'a InvokeOptions,
    api: RuntimeApi,
    extensions: Arc<Extensions>,
    processes: extensions::Processes,
    child: Bootstrap,
    stop: StopSignal,
    /// When the bootstrap started.
    started: Instant,
    /// When the runtime took the event (`None`: it never did).
    delivered_at: Option<Instant>,
    /// When the extensions' init must be done, with `--timeout` (until the event goes out).
    init_deadline: Option<Instant>,
    /// The invocation's deadline, with `--timeout`.
    deadline: Option<Instant>,
    report: Report,
    /// When the last "still running" line was written.
    said_alive: Option<Instant>,
}

impl Supervised<'_> {
    /// Until a result, an exit, the deadline or a stop request.
    async fn until_outcome(&mut self, log: &FunctionLog) -> Result<Outcome, RunnerError> {
        let mut watch_extensions = self.extensions.subscribe();
        // Lambda reports the peak memory: sampled while the bootstrap lives.
        let mut memory = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                event = self.api.events.recv() => match event {
                    Some(ApiEvent::Delivered) => {
                        self.memory_peak();
                        self.delivered(log);
                    }
                    // The runtime is still alive when it answers: its peak so far is the
                    // run's, even when that came sooner than the next sample.
                    Some(ApiEvent::Finished(outcome)) => {
                        self.memory_peak();
                        return Ok(outcome);
                    }
                    Some(ApiEvent::InitError(body)) => {
                        self.memory_peak();
                        return Ok(Outcome::Failed { kind: Failure::Init, body });
                    }
                    Some(ApiEvent::Abandoned) => return Ok(Outcome::failed(
                        Failure::Function,
                        "Runtime.InvalidState",
                        &format!("RequestId: {} Error: the runtime asked for the next event without answering this one", self.invocation.request_id),
                    )),
                    Some(ApiEvent::Idle) | None => {}
                },
                // Checked each turn: an internal extension registers while the runtime runs.
                _ = watch_extensions.changed(), if !self.processes.is_empty() || self.extensions.any() => {
                    if let Some(outcome) = self.extension_failed().await {
                        return Ok(outcome);
                    }
                }
                _ = memory.tick() => self.sample(),
                status = self.child.wait() => {
                    let status = status.map_err(|e| RunnerError::Start(format!("cannot wait for the bootstrap: {e}")))?;
                    // A report may have raced the exit: it wins.
                    return Ok(drain_result(&mut self.api)
                        .unwrap_or_else(|| exited(&self.invocation.request_id, status, self.delivered_at.is_some())));
                }
                _ = sleep_until(self.deadline) => return Ok(self.timed_out().await),
                _ = sleep_until(self.init_deadline), if self.delivered_at.is_none() => {
                    self.init_deadline = None;
                    if let Some(outcome) = self.extensions_late().await {
                        return Ok(outcome);
                    }
                }
                Some(signal) = stop_requested(&mut self.stop) => return Ok(self.stopped(signal).await),
            }
        }
    }

    /// The runtime took the event: init is over, the invocation begins.
    fn delivered(&mut self, log: &FunctionLog) {
        let init = self.started.elapsed();
        self.delivered_at = Some(Instant::now());
        self.report.init = Some(init);
        self.deadline = self.options.timeout.map(|t| Instant::now() + t);
        let telemetry = &self.extensions.telemetry;
        // Lambda takes no subscription after the init.
        telemetry.close_subscriptions();
        telemetry.platform_event(&Platform::InitRuntimeDone);
        // Each extension's state, once the init is done (as the Runtime Interface
        // Emulator writes it, between runtimeDone and initReport), internal ones too.
        for (name, events) in self.extensions.registered() {
            platform(
                log,
                &self.extensions,
                &Platform::Extension {
                    name: &name,
                    events: &events,
                },
            );
        }
        telemetry.platform_event(&Platform::InitReport { duration: init });
        platform(
            log,
            &self.extensions,
            &Platform::Start {
                request_id: &self.invocation.request_id,
                version: &self.invocation.function_version,
                trace: self.invocation.trace_id.as_deref(),
            },
        );
        tracing::info!(init_ms = init.as_millis() as u64, "event delivered");
    }

    /// Lambda's init limit passed: an extension that registered but has not asked for
    /// its first event fails the init (the runtime's own init is not bounded here).
    async fn extensions_late(&mut self) -> Option<Outcome> {
        let waiting = self.extensions.not_ready();
        if waiting.is_empty() {
            return None;
        }
        let failure = extensions::init_timeout("ask for their first event", &waiting);
        tracing::error!(error_type = %failure.error_type, "{}", failure.message);
        let _ = self.child.kill().await;
        Some(extension_failure(&self.invocation, &failure, Failure::Init))
    }

    /// An extension failed the run (reported an error, or exited): the outcome, with the
    /// bootstrap killed.
    async fn extension_failed(&mut self) -> Option<Outcome> {
        let failure = self.extensions.failure().or_else(|| {
            self.processes
                .exited()
                .map(|(name, how)| extensions::crash(&name, &how, "during the invocation"))
        })?;
        tracing::error!(error_type = %failure.error_type, "{}", failure.message);
        let _ = self.child.kill().await;
        let kind = if self.delivered_at.is_some() {
            Failure::Function
        } else {
            Failure::Init
        };
        Some(extension_failure(&self.invocation, &failure, kind))
    }

    /// The peak memory of the runtime's process tree (each process's high-water mark).
    fn memory_peak(&mut self) {
        self.report.max_memory_mb = self.report.max_memory_mb.max(tree_peak_rss_mb(self.child.pid()));
    }

    /// Once a second: the peak memory, and whether an extension died.
    fn sample(&mut self) {
        if !self.processes.is_empty() {
            if let Some((name, how)) = self.processes.exited() {
                let when = if self.delivered_at.is_some() {
                    "during the invocation"
                } else {
                    "during init"
                };
                self.extensions.failed(extensions::crash(&name, &how, when));
            }
        }
        self.memory_peak();
        if let (Some(every), Some(delivered)) = (self.options.heartbeat, self.delivered_at) {
            let since = self.said_alive.unwrap_or(delivered);
            // Sampled once a second: half a tick early is on time.
            if since.elapsed() + Duration::from_millis(500) >= every {
                self.said_alive = Some(Instant::now());
                tracing::info!(
                    elapsed_s = delivered.elapsed().as_secs(),
                    max_memory_mb = self.report.max_memory_mb,
                    request_id = %self.invocation.request_id,
                    "still running"
                );
            }
        }
    }

    /// The deadline passed: the bootstrap is killed, Lambda's timeout error.
    async fn timed_out(&mut self) -> Outcome {
        let seconds = self.options.timeout.unwrap_or_default().as_secs_f64();
        tracing::warn!(seconds, "invocation timed out; killing the bootstrap");
        let _ = self.child.kill().await;
        Outcome::failed(
            Failure::Timeout,
            TIMEOUT_ERROR_TYPE,
            &timeout_message(&self.invocation.request_id, seconds),
        )
    }

    /// The runner was asked to stop: the signal goes to the bootstrap, which gets the
    /// grace period, then SIGKILL. A result reported meanwhile wins.
    async fn stopped(&mut self, signal: i32) -> Outcome {
        tracing::warn!(signal, "stop requested; forwarding the signal to the bootstrap");
        self.child.signal(signal);
        let grace = self.options.grace;
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => status,
            _ => {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "bootstrap still running after the grace period; SIGKILL"
                );
                self.child
                    .kill()
                    .await
                    .unwrap_or_else(|_| std::process::ExitStatus::from_raw(9))
            }
        };
        if let Some(outcome) = drain_result(&mut self.api) {
            return outcome;
        }
        Outcome::failed(
            Failure::Signal(signal),
            "Runtime.ExitError",
            &format!(
                "RequestId: {} Error: Runtime exited with error: {} (the runner was stopped by {})",
                self.invocation.request_id,
                describe_exit(status),
                signal_name(signal)
            ),
        )
    }

    /// `platform.runtimeDone`, then the invocation is complete when every extension
    /// registered for INVOKE has asked for its next event too (an extension that never
    /// does holds it open, as in Lambda, until the timeout when there is one). Not after
    /// an extension failed the run: its Extensions API answers errors from then on, so
    /// none would ever ask again. Whether extensions held it past the timeout.
    async fn end_invocation(&mut self, outcome: &Outcome) -> bool {
        let Some(delivered_at) = self.delivered_at else {
            return false;
        };
        self.extensions.telemetry.platform_event(&Platform::RuntimeDone {
            request_id: &self.invocation.request_id,
            status: report_status(outcome, false).0,
            duration: delivered_at.elapsed(),
            produced_bytes: outcome.body().len(),
        });
        let ended_by_platform = matches!(
            outcome,
            Outcome::Failed {
                kind: Failure::Timeout | Failure::Signal(_),
                ..
            }
        );
        if !self.extensions.any() || self.extensions.failure().is_some() || ended_by_platform {
            return false;
        }
        let mut changes = self.extensions.subscribe();
        loop {
            let gone = self.processes.gone();
            if self.extensions.invoke_done(&gone) {
                return false;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = sleep_until(self.deadline) => {
                    tracing::warn!("extensions did not finish the invocation (ask for their next event) before the timeout");
                    return true;
                }
                Some(_) = stop_requested(&mut self.stop) => return false,
            }
        }
    }

    /// END and REPORT: one record, for the log and the Telemetry API alike.
    fn report(&mut self, log: &FunctionLog, outcome: &Outcome, extensions_timed_out: bool) {
        let Some(delivered_at) = self.delivered_at else {
            return;
        };
        let report = &mut self.report;
        report.max_memory_mb = report.max_memory_mb.max(tree_peak_rss_mb(self.child.pid()));
        report.duration = delivered_at.elapsed();
        report.request_id = self.invocation.request_id.clone();
        report.memory_mb = self.invocation.memory_mb.into();
        (report.status, report.error_type) = report_status(outcome, extensions_timed_out);
        platform(log, &self.extensions, &Platform::Report(&self.report));
    }

    /// Let the runtime settle (ask for the next event, or exit), then the Shutdown
    /// phase. Without extensions it lasts 0 ms: the runtime gets SIGKILL. With them, they
    /// get SHUTDOWN first (2 s; the runtime is idle, waiting for its next event; in
    /// Lambda it is stopped first, but its sandbox ends its extensions with it), then the
    /// runtime SIGTERM and 300 ms (500 with an internal extension).
    async fn shut_down(&mut self, outcome: &Outcome) {
        if self.child.exited().is_none() {
            let settle = async {
                loop {
                    tokio::select! {
                        event = self.api.events.recv() => if matches!(event, Some(ApiEvent::Idle) | None) { break },
                        _ = self.child.wait() => break,
                    }
                }
            };
            let _ = tokio::time::timeout(self.options.grace, settle).await;
        }
        if !self.extensions.any() && self.processes.is_empty() {
            if self.child.exited().is_none() {
                let _ = self.child.kill().await;
            }
            return;
        }
        // What the subscribers have not had yet (the report) goes out before SHUTDOWN.
        self.extensions.telemetry.flush(Duration::from_secs(1)).await;
        let stopped = self.stop.borrow().is_some();
        let reason = match outcome {
            Outcome::Failed {
                kind: Failure::Timeout, ..
            } => "timeout",
            // Stopped from outside (the task is stopping): the environment spins down.
            _ if stopped => "spindown",
            Outcome::Failed {
                kind: Failure::Function | Failure::Signal(_) | Failure::Init,
                ..
            } if self.child.exited().is_some() => "failure",
            _ => "spindown",
        };
        self.processes
            .shut_down(&self.extensions, reason, extensions::SHUTDOWN_LIMIT)
            .await;
        if self.child.exited().is_none() {
            let grace = if self.extensions.internal() {
                extensions::RUNTIME_SHUTDOWN_INTERNAL
            } else {
                extensions::RUNTIME_SHUTDOWN
            };
            let _ = self.child.stop(grace).await;
        }
    }
}

/// The report's status, and the error type its text line names (only for an end the
/// runtime did not choose: a timeout, an exit).
fn report_status(outcome: &Outcome, extensions_timed_out: bool) -> (Status, Option<&'static str>) {
    match outcome {
        Outcome::Failed {
            kind: Failure::Timeout, ..
        } => (Status::Timeout, Some(TIMEOUT_ERROR_TYPE)),
        Outcome::Failed {
            kind: Failure::Signal(_),
            ..
        } => (Status::Error, Some("Runtime.ExitError")),
        _ if extensions_timed_out => (Status::Timeout, Some(TIMEOUT_ERROR_TYPE)),
        // A function error is the function's own answer: `error`, with no error type on
        // the line (the error document says it).
        Outcome::Failed {
            kind: Failure::Function,
            ..
        } => (Status::Error, None),
        Outcome::Failed { .. } => (Status::Failure, None),
        Outcome::Response { .. } => (Status::Success, None),
    }
}

/// The run's outcome when an extension failed it: Lambda's error document.
fn extension_failure(invocation: &Invocation, failure: &ExtensionFailure, kind: Failure) -> Outcome {
    let message = format!("RequestId: {} Error: {}", invocation.request_id, failure.message);
    Outcome::failed(kind, &failure.error_type, &message)
}

/// A result reported just before the bootstrap exited, if any.
fn drain_result(api: &mut RuntimeApi) -> Option<Outcome> {
    while let Ok(event) = api.events.try_recv() {
        match event {
            ApiEvent::Finished(outcome) => return Some(outcome),
            ApiEvent::InitError(body) => {
                return Some(Outcome::Failed {
                    kind: Failure::Init,
                    body,
                })
            }
            _ => {}
        }
    }
    None
}

/// The bootstrap exited without reporting a result.
fn exited(request_id: &str, status: std::process::ExitStatus, delivered: bool) -> Outcome {
    let how = describe_exit(status);
    let message = format!("RequestId: {request_id} Error: Runtime exited with error: {how}");
    match status.signal() {
        Some(signal) => {
            tracing::error!(
                signal,
                "the bootstrap was ended by signal {signal} ({})",
                signal_name(signal)
            );
            Outcome::failed(Failure::Signal(signal), "Runtime.ExitError", &message)
        }
        None if !delivered => {
            tracing::error!("the bootstrap exited ({how}) before asking for the event: it failed to initialise");
            Outcome::failed(Failure::Init, "Runtime.ExitError", &message)
        }
        None => {
            tracing::error!("the bootstrap exited ({how}) without answering the event");
            Outcome::failed(Failure::Function, "Runtime.ExitError", &message)
        }
    }
}

fn log_outcome(outcome: &Outcome, started: Instant) {
    let ms = started.elapsed().as_millis() as u64;
    match outcome {
        Outcome::Response { body, streamed } => {
            tracing::info!(duration_ms = ms, bytes = body.len(), streamed, "response received")
        }
        Outcome::Failed { kind, .. } => {
            tracing::warn!(duration_ms = ms, kind = ?kind, error_type = outcome.error_type().unwrap_or_default(), "invocation failed")
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// The function log (text or JSON) and the Telemetry API render one record: the
    /// status of each end is the Telemetry API schema's (success, error, failure,
    /// timeout), the same in both.
    #[test]
    fn each_end_has_one_status_for_the_log_and_the_telemetry_api() {
        let cases = [
            (
                Outcome::Response {
                    body: Bytes::new(),
                    streamed: false,
                },
                "success",
                None,
            ),
            // The function's own error: `error`, as Lambda reports it; the text line
            // names no error type (the error document does).
            (Outcome::failed(Failure::Function, "KeyError", "boom"), "error", None),
            (
                Outcome::failed(Failure::Signal(9), "Runtime.ExitError", "killed"),
                "error",
                Some("Runtime.ExitError"),
            ),
            (
                Outcome::failed(Failure::Timeout, "Sandbox.Timedout", "late"),
                "timeout",
                Some("Sandbox.Timedout"),
            ),
            (
                Outcome::failed(Failure::Init, "Runtime.ExitError", "no init"),
                "failure",
                None,
            ),
        ];
        for (outcome, status, error_type) in cases {
            let (got, got_type) = report_status(&outcome, false);
            assert_eq!((got.as_str(), got_type), (status, error_type), "{outcome:?}");
            let report = Report {
                request_id: "r".into(),
                status: got,
                error_type: got_type,
                ..Default::default()
            };
            let record = Platform::Report(&report).record();
            assert_eq!(record["status"], status);
            assert_eq!(record["errorType"].as_str(), error_type);
        }
        let held_open = report_status(
            &Outcome::Response {
                body: Bytes::new(),
                streamed: false,
            },
            true,
        );
        assert_eq!(
            held_open,
            (Status::Timeout, Some("Sandbox.Timedout")),
            "an extension held it past the timeout"
        );
    }
}
