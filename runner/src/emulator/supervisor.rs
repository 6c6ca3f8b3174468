//! Runs one invocation: starts the Runtime API and the bootstrap, watches both, and
//! turns whatever happens (a response, an error, an exit, a deadline, a signal) into
//! an [`Outcome`].

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use immortal_handler_sdk::arn::Arn;
use serde_json::json;
use tokio::time::Instant;

use crate::code::function::LogSettings;
use crate::code::runtime::Runtime;
use crate::emulator::bootstrap::{
    describe_exit, environment, Bootstrap, CodeLayout, LaunchConfig, Passthrough, Role, SandboxUser,
};
use crate::emulator::extensions::telemetry::Kind;
use crate::emulator::extensions::{self, ExtensionFailure, Extensions, FunctionInfo};
use crate::emulator::function_logs::{round2, tree_peak_rss_mb, FunctionLog, Report, Status};
use crate::emulator::invocation::Invocation;
use crate::emulator::outcome::{timeout_message, Failure, Outcome};
use crate::emulator::peer::Admission;
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
}

/// Runs `invocation` with the bootstrap found in `layout`; its output and the platform's
/// START/END/REPORT lines go to `log`.
pub(crate) async fn invoke(
    layout: &CodeLayout,
    invocation: Arc<Invocation>,
    options: &InvokeOptions,
    log: &mut FunctionLog,
    sink: ResponseSink,
    mut stop: StopSignal,
) -> Result<Outcome, RunnerError> {
    let (program, origin) = layout.bootstrap(options.runtime.as_ref())?;
    let extensions = Extensions::new(FunctionInfo {
        name: invocation.function_name.clone(),
        version: invocation.function_version.clone(),
        handler: options.handler.clone(),
        account_id: Arn::parse(&invocation.invoked_function_arn).map(|arn| arn.account.to_owned()),
    });
    let telemetry = extensions.telemetry.clone();
    let admission = match &options.sandbox {
        Some(user) => Admission::User(user.uid),
        None => Admission::Anyone,
    };
    let mut api = RuntimeApi::start(invocation.clone(), options.timeout, sink, extensions.clone(), admission)
        .await
        .map_err(|e| RunnerError::Start(format!("cannot serve the Runtime API on 127.0.0.1: {e}")))?;
    let runtime_api = api.address();
    let env = environment(&LaunchConfig {
        invocation: &invocation,
        layout,
        handler: &options.handler,
        runtime: options.runtime.as_ref(),
        logging: &options.logging,
        runtime_api: &runtime_api,
        function_env: &options.function_env,
        unlimited: options.timeout.is_none(),
        passthrough: options.passthrough,
        credentials: &options.credentials,
        scratch: &options.scratch,
    });
    let started = Instant::now();
    telemetry.platform(
        "platform.initStart",
        json!({"initializationType": "on-demand", "phase": "init", "functionName": invocation.function_name,
               "functionVersion": invocation.function_version,
               "runtimeVersion": options.runtime.as_ref().map(Runtime::id).unwrap_or("provided")}),
    );

    // Extensions first, as Lambda starts them: by name, each registered and waiting for
    // its first event before the runtime starts.
    let programs = match (&layout.opt_dir, options.extensions) {
        (Some(opt), true) => extensions::executables(opt),
        _ => Vec::new(),
    };
    let mut processes = extensions::Processes::default();
    if !programs.is_empty() {
        log.tap(telemetry.clone());
        let ext_env = extensions::environment(&env);
        processes = extensions::Processes::start(
            &extensions,
            &programs,
            &layout.task_root,
            &ext_env,
            options.sandbox.as_ref(),
            &options.scratch,
            || log.output_as(Kind::Extension),
        )
        .map_err(|e| RunnerError::Start(e.to_string()))?;
        if let Err(failure) = processes.wait_init(&extensions, extensions::INIT_LIMIT).await {
            processes
                .shut_down(&extensions, "failure", extensions::SHUTDOWN_LIMIT)
                .await;
            return Ok(extension_failure(&invocation, &failure, Failure::Init));
        }
        for (name, events) in extensions.registered() {
            log.extension_ready(&name, &events);
            telemetry.platform(
                "platform.extension",
                json!({"name": name, "state": "Ready", "events": events}),
            );
        }
    }

    let output = log
        .output()
        .map_err(|e| RunnerError::Start(format!("cannot open a pipe for the function's logs: {e}")))?;
    let mut child = Bootstrap::spawn(
        Role::Runtime,
        &program,
        &layout.task_root,
        &env,
        options.sandbox.as_ref(),
        &options.scratch,
        output,
    )
    .map_err(|e| RunnerError::Start(format!("cannot start {}: {e}", program.display())))?;
    tracing::info!(
        bootstrap = %program.display(),
        pid = child.pid(),
        user = options.sandbox.as_ref().map(|s| s.uid),
        from = ?origin,
        runtime = options.runtime.as_ref().map(Runtime::id).unwrap_or("custom"),
        runtime_api = %runtime_api,
        request_id = %invocation.request_id,
        function = %invocation.function_name,
        "bootstrap started"
    );

    let request_id = invocation.request_id.clone();
    let mut deadline: Option<Instant> = None;
    let mut delivered = false;
    let mut delivered_at = started;
    let mut watch_extensions = extensions.subscribe();
    let mut report = Report::default();
    // Lambda reports the peak memory: sampled while the bootstrap lives.
    let mut memory = tokio::time::interval(Duration::from_secs(1));

    // Phase 1: until a result, an exit, the deadline or a stop request.
    let outcome = loop {
        tokio::select! {
            event = api.events.recv() => match event {
                Some(ApiEvent::Delivered) => {
                    delivered = true;
                    delivered_at = Instant::now();
                    report.init = Some(started.elapsed());
                    deadline = options.timeout.map(|t| Instant::now() + t);
                    log.start(&invocation);
                    let init_ms = started.elapsed().as_secs_f64() * 1000.0;
                    telemetry.platform("platform.initRuntimeDone", json!({"initializationType": "on-demand", "phase": "init", "status": "success"}));
                    telemetry.platform("platform.initReport", json!({"initializationType": "on-demand", "phase": "init", "status": "success", "metrics": {"durationMs": round2(init_ms)}}));
                    let mut start = json!({"requestId": invocation.request_id, "version": invocation.function_version});
                    if let Some(trace) = invocation.trace_id.as_deref().filter(|t| !t.is_empty()) {
                        start["tracing"] = json!({"type": "X-Amzn-Trace-Id", "value": trace});
                    }
                    telemetry.platform("platform.start", start);
                    tracing::info!(init_ms = init_ms as u64, "event delivered");
                }
                Some(ApiEvent::Finished(outcome)) => break outcome,
                Some(ApiEvent::InitError(body)) => break Outcome::Failed { kind: Failure::Init, body },
                Some(ApiEvent::Abandoned) => break Outcome::failed(
                    Failure::Function,
                    "Runtime.InvalidState",
                    &format!("RequestId: {request_id} Error: the runtime asked for the next event without answering this one"),
                ),
                Some(ApiEvent::Idle) | None => {}
            },
            _ = watch_extensions.changed(), if !processes.is_empty() || extensions.any() => {
                let failure = extensions.failure().or_else(|| processes.exited().map(|(name, how)| extensions::crash(&name, &how, "during the invocation")));
                if let Some(failure) = failure {
                    tracing::error!(error_type = %failure.error_type, "{}", failure.message);
                    let _ = child.kill().await;
                    break extension_failure(&invocation, &failure, if delivered { Failure::Function } else { Failure::Init });
                }
            }
            _ = memory.tick() => {
                if !processes.is_empty() {
                    if let Some((name, how)) = processes.exited() {
                        extensions.failed(extensions::crash(&name, &how, if delivered { "during the invocation" } else { "during init" }));
                    }
                }
                report.max_memory_mb = report.max_memory_mb.max(tree_peak_rss_mb(child.pid()));
            }
            status = child.wait() => {
                let status = status.map_err(|e| RunnerError::Start(format!("cannot wait for the bootstrap: {e}")))?;
                // A report may have raced the exit: it wins.
                if let Some(outcome) = drain_result(&mut api) {
                    break outcome;
                }
                break exited(&request_id, status, delivered);
            }
            _ = sleep_until(deadline) => {
                let seconds = options.timeout.unwrap_or_default().as_secs_f64();
                tracing::warn!(seconds, "invocation timed out; killing the bootstrap");
                let _ = child.kill().await;
                break Outcome::failed(Failure::Timeout, immortal_handler_sdk::container::TIMEOUT_ERROR_TYPE, &timeout_message(&request_id, seconds));
            }
            Some(signal) = stop_requested(&mut stop) => {
                tracing::warn!(signal, "stop requested; forwarding the signal to the bootstrap");
                child.signal(signal);
                let grace = tokio::time::sleep(options.grace);
                tokio::pin!(grace);
                let status = tokio::select! {
                    status = child.wait() => status.ok(),
                    _ = &mut grace => None,
                };
                if status.is_none() {
                    tracing::warn!(grace_ms = options.grace.as_millis() as u64, "bootstrap still running after the grace period; SIGKILL");
                }
                let status = match status { Some(s) => s, None => child.kill().await.unwrap_or_else(|_| std::process::ExitStatus::from_raw(9)) };
                if let Some(outcome) = drain_result(&mut api) {
                    break outcome;
                }
                break Outcome::failed(
                    Failure::Signal(signal),
                    "Runtime.ExitError",
                    &format!("RequestId: {request_id} Error: Runtime exited with error: {} (the runner was stopped by {})", describe_exit(status), crate::emulator::outcome::signal_name(signal)),
                );
            }
        }
    };
    log_outcome(&outcome, started);
    let runtime_ms = delivered_at.elapsed().as_secs_f64() * 1000.0;
    if delivered {
        telemetry.platform(
            "platform.runtimeDone",
            json!({"requestId": request_id, "status": report_status(&outcome, false).0.as_str(),
                   "metrics": {"durationMs": round2(runtime_ms), "producedBytes": outcome.body().len()}}),
        );
    }
    // The invocation is complete when every extension registered for INVOKE has asked
    // for its next event too (an extension that never does holds it open, as in Lambda,
    // until the timeout when there is one). Not after an extension failed the run: its
    // Extensions API answers errors from then on, so none would ever ask again.
    let mut extensions_timed_out = false;
    if delivered
        && extensions.any()
        && extensions.failure().is_none()
        && !matches!(
            outcome,
            Outcome::Failed {
                kind: Failure::Timeout | Failure::Signal(_),
                ..
            }
        )
    {
        let mut changes = extensions.subscribe();
        loop {
            let gone = processes.gone();
            if extensions.invoke_done(&gone) {
                break;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = sleep_until(deadline) => {
                    tracing::warn!("extensions did not finish the invocation (ask for their next event) before the timeout");
                    extensions_timed_out = true;
                    break;
                }
                Some(_) = stop_requested(&mut stop) => break,
            }
        }
    }
    if delivered {
        report.max_memory_mb = report.max_memory_mb.max(tree_peak_rss_mb(child.pid()));
        report.duration = delivered_at.elapsed();
        report.request_id = request_id.clone();
        report.memory_mb = invocation.memory_mb.into();
        (report.status, report.error_type) = report_status(&outcome, extensions_timed_out);
        // One record, two renderings: they cannot disagree.
        log.end(&report);
        telemetry.platform("platform.report", report.record());
    }

    // Phase 2: let the runtime settle (ask for the next event, or exit), then the
    // Shutdown phase. Without extensions it lasts 0 ms: the runtime gets SIGKILL. With
    // them, they get SHUTDOWN first (2 s; the runtime is idle, waiting for its next
    // event; in Lambda it is stopped first, but its sandbox ends its extensions with it),
    // then the runtime SIGTERM and 300 ms (500 with an internal extension).
    if child.exited().is_none() {
        let settle = async {
            loop {
                tokio::select! {
                    event = api.events.recv() => if matches!(event, Some(ApiEvent::Idle) | None) { break },
                    _ = child.wait() => break,
                }
            }
        };
        let _ = tokio::time::timeout(options.grace, settle).await;
    }
    if extensions.any() || !processes.is_empty() {
        // What the subscribers have not had yet (the report) goes out before SHUTDOWN.
        telemetry.flush(Duration::from_secs(1)).await;
        let stopped = stop.borrow().is_some();
        let reason = match &outcome {
            Outcome::Failed {
                kind: Failure::Timeout, ..
            } => "timeout",
            // Stopped from outside (the task is stopping): the environment spins down.
            _ if stopped => "spindown",
            Outcome::Failed {
                kind: Failure::Function | Failure::Signal(_) | Failure::Init,
                ..
            } if child.exited().is_some() => "failure",
            _ => "spindown",
        };
        processes
            .shut_down(&extensions, reason, extensions::SHUTDOWN_LIMIT)
            .await;
        if child.exited().is_none() {
            let grace = if extensions.internal() {
                extensions::RUNTIME_SHUTDOWN_INTERNAL
            } else {
                extensions::RUNTIME_SHUTDOWN
            };
            let _ = child.stop(grace).await;
        }
    } else if child.exited().is_none() {
        let _ = child.kill().await;
    }
    Ok(outcome)
}

/// The report's status, and the error type its text line names (only for an end the
/// runtime did not choose: a timeout, an exit).
fn report_status(outcome: &Outcome, extensions_timed_out: bool) -> (Status, Option<&'static str>) {
    match outcome {
        Outcome::Failed {
            kind: Failure::Timeout, ..
        } => (
            Status::Timeout,
            Some(immortal_handler_sdk::container::TIMEOUT_ERROR_TYPE),
        ),
        Outcome::Failed {
            kind: Failure::Signal(_),
            ..
        } => (Status::Error, Some("Runtime.ExitError")),
        _ if extensions_timed_out => (
            Status::Timeout,
            Some(immortal_handler_sdk::container::TIMEOUT_ERROR_TYPE),
        ),
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
                crate::emulator::outcome::signal_name(signal)
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
            let record = report.record();
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
