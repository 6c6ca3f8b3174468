//! Runs one invocation: starts the Runtime API and the bootstrap, watches both, and
//! turns whatever happens (a response, an error, an exit, a deadline, a signal) into
//! an [`Outcome`].

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::bootstrap::{describe_exit, environment, Bootstrap, CodeLayout, LaunchConfig, Passthrough, SandboxUser};
use crate::error::RunnerError;
use crate::function::LogSettings;
use crate::function_logs::{tree_peak_rss_mb, FunctionLog, Report};
use crate::invocation::Invocation;
use crate::outcome::{timeout_message, Failure, Outcome};
use crate::runtime::Runtime;
use crate::runtime_api::{ApiEvent, ResponseSink, RuntimeApi};
use crate::signals::{stop_requested, StopSignal};

/// How to run the invocation.
#[derive(Debug, Clone)]
pub struct InvokeOptions {
    /// Lambda-style limit; `None` for no limit (the point of the runner).
    pub timeout: Option<Duration>,
    /// How long the bootstrap gets between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// `_HANDLER`.
    pub handler: String,
    /// The function's runtime, when known.
    pub runtime: Option<Runtime>,
    /// Its `LoggingConfig`.
    pub logging: LogSettings,
    /// The function's own environment variables.
    pub function_env: BTreeMap<String, String>,
    /// What of the runner's environment reaches it.
    pub passthrough: Passthrough,
    /// The credentials endpoint's variables, when it has its own role.
    pub credentials: Vec<(String, String)>,
    /// Its own user, when sandboxed.
    pub sandbox: Option<SandboxUser>,
    /// Its private scratch folder (`TMPDIR`).
    pub scratch: PathBuf,
}

/// Runs `invocation` with the bootstrap found in `layout`; its output and the platform's
/// START/END/REPORT lines go to `log`.
pub async fn invoke(
    layout: &CodeLayout,
    invocation: Arc<Invocation>,
    options: &InvokeOptions,
    log: &mut FunctionLog,
    sink: ResponseSink,
    mut stop: StopSignal,
) -> Result<Outcome, RunnerError> {
    let (program, origin) = layout.bootstrap(options.runtime.as_ref())?;
    let mut api = RuntimeApi::start(invocation.clone(), options.timeout, sink)
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
    let output = log
        .output()
        .map_err(|e| RunnerError::Start(format!("cannot open a pipe for the function's logs: {e}")))?;
    let mut child = Bootstrap::spawn(
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
    let started = Instant::now();
    let mut delivered_at = started;
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
                    tracing::info!(init_ms = started.elapsed().as_millis() as u64, "event delivered");
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
            _ = memory.tick() => {
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
                    &format!("RequestId: {request_id} Error: Runtime exited with error: {} (the runner was stopped by {})", describe_exit(status), crate::outcome::signal_name(signal)),
                );
            }
        }
    };
    log_outcome(&outcome, started);
    if delivered {
        report.max_memory_mb = report.max_memory_mb.max(tree_peak_rss_mb(child.pid()));
        report.duration = delivered_at.elapsed();
        report.status = match &outcome {
            Outcome::Failed {
                kind: Failure::Timeout, ..
            } => Some("timeout"),
            Outcome::Failed {
                kind: Failure::Signal(_),
                ..
            } => Some("error"),
            _ => None,
        };
        report.error_type = report.status.map(|_| match &outcome {
            Outcome::Failed {
                kind: Failure::Timeout, ..
            } => immortal_handler_sdk::container::TIMEOUT_ERROR_TYPE,
            _ => "Runtime.ExitError",
        });
        log.end(&invocation, &report);
    }

    // Phase 2: let the runtime settle (ask for the next event, or exit), then end it as
    // Lambda's Shutdown phase does for a function without extensions: it lasts 0 ms, the
    // runtime gets SIGKILL.
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
        let _ = child.kill().await;
    }
    Ok(outcome)
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
                "the bootstrap was killed by {} ({how})",
                crate::outcome::signal_name(signal)
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
