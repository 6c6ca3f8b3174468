//! Running one envelope with one function's code, start to end: open the envelope,
//! get the code ready, supervise the bootstrap, write the response, report the
//! outcome. Single runs and drain workers both come through here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use immortal_handler_sdk::aws;
use immortal_handler_sdk::function_ref::ContextDefaults;
use immortal_handler_sdk::{Envelope, FunctionRef};
use immortal_overflow::metrics::{self, Metric};
use immortal_overflow::{Carrier, OverflowSettings};

use immortal_handler_sdk::container::{FUNCTION_ROLE_VAR, INTERRUPTED_ERROR_TYPE};
use immortal_sandbox::FUNCTION_UIDS;

use crate::code::{CodeOptions, CodeSource, Prepared};
use crate::emulator::bootstrap::{Passthrough, SandboxUser, Swept};
use crate::emulator::credentials::{FunctionCredentials, FunctionRole};
use crate::emulator::function_logs::{FunctionLog, LogDestination};
use crate::emulator::invocation::{FunctionFacts, Invocation};
use crate::emulator::outcome::{signal_name, Failure, Outcome};
use crate::emulator::runtime_api::ResponseSink;
use crate::emulator::supervisor::{self, InvokeOptions};
use crate::error::RunnerError;
use crate::exit::Exit;
use crate::run::attempt::{Attempt, Go};
use crate::run::report::Reporter;
use crate::run::scratch;
use crate::run::settlement::End;
use crate::signals::StopSignal;

/// How to run any invocation.
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
    /// Lambda-style limit, if any.
    pub(crate) timeout: Option<Duration>,
    /// SIGTERM → SIGKILL delay.
    pub(crate) grace: Duration,
    /// `_HANDLER` override.
    pub(crate) handler: Option<String>,
    /// Whose credentials the function gets.
    pub(crate) function_role: FunctionRole,
    /// Renew served credentials after this long (default: the session's hour).
    pub(crate) credentials_lifetime: Option<Duration>,
    /// `immortal-sandbox`, to run each function as a user of its own.
    pub(crate) sandbox: Option<PathBuf>,
    /// `/tmp` is this runner's alone: empty what a function leaves there.
    pub(crate) own_tmp: bool,
    /// `--env` and `--env-file`: variables layered over the function's own.
    pub(crate) env: BTreeMap<String, String>,
    /// Where the function's output goes.
    pub(crate) function_logs: LogDestination,
    /// Start the extensions the layers bring.
    pub(crate) extensions: bool,
    /// How often a long run says it is still running.
    pub(crate) heartbeat: Option<Duration>,
}

/// Where this run's function stands among those a worker runs at once: its user id
/// (`FUNCTION_UIDS` start + slot) when sandboxed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Slot(pub(crate) u32);

/// One invocation to run, as the command line asked for it.
pub(crate) struct Job {
    /// Where the code comes from.
    pub(crate) code: CodeSource,
    /// Where the envelope comes from.
    pub(crate) carrier: Carrier,
    /// Cache and limits for the code.
    pub(crate) code_options: CodeOptions,
    /// Timeout, grace period, handler.
    pub(crate) settings: RunSettings,
    /// Where the response goes (stdout when `None`).
    pub(crate) output: Option<PathBuf>,
    /// Where outcomes are reported.
    pub(crate) overflow: OverflowSettings,
}

impl Job {
    /// Runs the job with a bootstrap and returns the exit code. A failure before the
    /// bootstrap runs is reported as the invocation's outcome too, never only logged.
    /// When the envelope is an attempt the ledger holds, the ledger hears how it went.
    pub(crate) async fn run(self, stop: StopSignal) -> Result<Exit, RunnerError> {
        let reporter = Reporter::new(&self.overflow);
        let envelope = open(&self.carrier).await?;
        let function = function_of(&envelope)?;
        let attempt = Attempt::of(&self.carrier, self.overflow.payload_bucket.as_deref()).await;
        if let Some(attempt) = &attempt {
            if let Go::Superseded(why) = attempt.start().await {
                tracing::warn!(request_id = %attempt.request_id, attempt = attempt.number, why = %why, "not run: another attempt holds this invocation, or it ended");
                return Ok(Exit::Success);
            }
        }
        let stopping = stop.clone();
        let ran = async {
            let prepared = self
                .code
                .prepare(function.as_ref(), &self.code_options, aws::shared)
                .await?;
            let sink = open_sink(self.output.as_deref()).await?;
            let ran = run_envelope(
                prepared,
                &envelope,
                function.as_ref(),
                &self.settings,
                (Slot::default(), attempt.as_ref()),
                sink.clone(),
                stop,
            )
            .await?;
            // A stopped run's outcome is the stop's, not the function's.
            if attempt.is_some() && stopping.borrow().is_none() {
                ran.emit_metrics();
            }
            let Ran {
                invocation, outcome, ..
            } = ran;
            match (&attempt, *stopping.borrow()) {
                // The same answer as the ledger's: interrupted, to be relaunched (the
                // bootstrap's own end under the signal is not the invocation's).
                (Some(attempt), Some(signal)) => {
                    let message = format!(
                        "RequestId: {} Error: the runner was stopped ({}); attempt {} is interrupted and the reconciler relaunches it",
                        invocation.request_id,
                        signal_name(signal),
                        attempt.number
                    );
                    let answer = Outcome::failed(Failure::Function, INTERRUPTED_ERROR_TYPE, &message);
                    write_outcome(&sink, &answer, self.output.as_deref()).await?;
                }
                _ => write_outcome(&sink, &outcome, self.output.as_deref()).await?,
            }
            Ok::<_, RunnerError>((invocation, outcome))
        }
        .await;
        let (invocation, outcome) = match ran {
            Ok(done) => done,
            Err(err) => {
                if let (Some(attempt), true) = (&attempt, err.is_transient()) {
                    // Not the invocation's end: the reconciler relaunches the attempt.
                    tracing::warn!(request_id = %attempt.request_id, attempt = attempt.number, error = %err, "the run could not start for now; the attempt is relaunched");
                    attempt.settle(End::Unavailable(&err)).await;
                    return Err(err);
                }
                let delivered = report_unrun(&reporter, &envelope, function.as_ref(), &err).await;
                if let Some(attempt) = &attempt {
                    attempt.settle(End::Unrun { err: &err, delivered }).await;
                }
                return Err(err);
            }
        };
        let stopped_by = *stopping.borrow();
        if let (Some(attempt), Some(signal)) = (&attempt, stopped_by) {
            // Stopped from outside (Spot, scale-in): nothing about the invocation failed.
            // Said in the log first, before any call that could hang past SIGKILL.
            tracing::warn!(request_id = %invocation.request_id, attempt = attempt.number, signal, "attempt interrupted; the reconciler relaunches it");
            attempt.settle(End::Stopped(signal)).await;
            return Ok(outcome.exit());
        }
        let exit = finish(&reporter, &invocation, &outcome).await;
        if let Some(attempt) = &attempt {
            let delivered = exit != Exit::Undelivered;
            attempt
                .settle(End::Ran {
                    outcome: &outcome,
                    delivered,
                })
                .await;
        }
        Ok(exit)
    }
}

/// Reports an invocation that never reached its bootstrap as a failure record
/// (`RetriesExhausted`, errorType naming the cause), so that no end goes unrecorded.
/// Returns whether a record went out.
pub(crate) async fn report_unrun(
    reporter: &Reporter,
    envelope: &Envelope,
    function: Option<&FunctionRef>,
    err: &RunnerError,
) -> bool {
    let Some(error_type) = err.error_type() else {
        return false;
    };
    let invocation = resolve(envelope, function, &FunctionFacts::default());
    let message = format!("RequestId: {} Error: {err}", invocation.request_id);
    let outcome = Outcome::failed(Failure::Init, error_type, &message);
    // Undeliverable, the record is in the log in full; the run's own exit code stands.
    reporter.deliver(&invocation, &outcome).await.is_ok()
}

/// The envelope a carrier brings (a bad one is bad input: exit 2; S3 not answering for
/// now is not: exit 8, and the task's attempt is relaunched).
pub(crate) async fn open(carrier: &Carrier) -> Result<Envelope, RunnerError> {
    carrier
        .open(|| async { aws::s3_client(aws::shared().await) })
        .await
        .map_err(|e| match e.is_transient() {
            true => RunnerError::Unavailable(format!(
                "{e}; S3 did not answer for now, after {} tries",
                aws::DEFAULT_MAX_ATTEMPTS
            )),
            false => RunnerError::Usage(e.to_string()),
        })
}

/// The function the envelope's context names, parsed once for everyone after.
pub(crate) fn function_of(envelope: &Envelope) -> Result<Option<FunctionRef>, RunnerError> {
    envelope
        .context
        .function_ref()
        .map_err(|e| RunnerError::Usage(e.to_string()))
}

/// Runs `envelope` with the prepared code, as the function itself: its role, its
/// user, its own scratch folder and environment. Returns the invocation resolved
/// against the function, and how it ended.
pub(crate) async fn run_envelope(
    prepared: Prepared,
    envelope: &Envelope,
    function: Option<&FunctionRef>,
    settings: &RunSettings,
    (slot, attempt): (Slot, Option<&Attempt>),
    sink: ResponseSink,
    stop: StopSignal,
) -> Result<Ran, RunnerError> {
    let invocation = Arc::new(resolve(envelope, function, &prepared.facts));
    let credentials = function_credentials(settings, &prepared, &invocation).await?;
    let passthrough = if prepared.local || credentials.is_none() {
        Passthrough::Shell
    } else if prepared.layout.image.is_some() {
        Passthrough::Image
    } else {
        Passthrough::Region
    };
    let sandbox = settings.sandbox.as_ref().map(|program| SandboxUser {
        program: program.clone(),
        uid: FUNCTION_UIDS.start() + slot.0,
    });
    let (scratch, _own_scratch) = scratch::folder(sandbox.as_ref())?;
    let handler = match &settings.handler {
        Some(handler) => handler.clone(),
        None => default_handler(&prepared)?,
    };
    let mut function_env = prepared.env;
    function_env.extend(settings.env.clone());
    let options = InvokeOptions {
        timeout: settings.timeout,
        grace: settings.grace,
        handler,
        runtime: prepared.runtime,
        logging: prepared.logging,
        function_env,
        passthrough,
        credentials: credentials
            .as_ref()
            .map(FunctionCredentials::environment)
            .unwrap_or_default(),
        sandbox: sandbox.clone(),
        scratch: scratch.clone(),
        extensions: settings.extensions,
        heartbeat: settings.heartbeat,
    };
    let json = options.logging.format.as_deref() == Some("JSON");
    let mut log = function_log(settings.function_logs, json, &invocation, credentials.as_ref()).await;
    if let (Some(attempt), Some(stream)) = (attempt, log.stream()) {
        // For `immortal logs`: while it runs, not only once it ended.
        attempt.logs_at(&invocation.log_group, stream);
    }
    let began = std::time::Instant::now();
    let outcome = supervisor::invoke(&prepared.layout, invocation.clone(), &options, &mut log, sink, stop).await;
    let took = began.elapsed();
    log.close().await;
    let swept = match &sandbox {
        Some(user) => {
            let mut dirs = vec![scratch];
            if settings.own_tmp {
                // Every place the function's user could write in the container.
                dirs.extend([std::env::temp_dir(), "/var/tmp".into(), "/dev/shm".into()]);
            }
            user.sweep(&dirs).await
        }
        None => Swept::Clean,
    };
    Ok(Ran {
        invocation,
        outcome: outcome?,
        swept,
        took,
    })
}

/// A finished run.
pub(crate) struct Ran {
    /// The invocation, resolved against the function.
    pub(crate) invocation: Arc<Invocation>,
    /// How it ended.
    pub(crate) outcome: Outcome,
    /// Whether the function's user was left with nothing.
    pub(crate) swept: Swept,
    /// From the bootstrap's start to the outcome.
    pub(crate) took: Duration,
}

impl Ran {
    /// The run's metrics (EMF): how it ended and how long it took.
    pub(crate) fn emit_metrics(&self) {
        let ended = match self.outcome {
            Outcome::Response { .. } => Metric::Succeeded,
            _ => Metric::Failed,
        };
        metrics::emit(
            &self.invocation.function_name,
            &[(ended, 1.0), (Metric::RunDuration, self.took.as_millis() as f64)],
        );
    }
}

/// The function's own credentials, when it runs as a role (`--function-role`):
/// assumed for this invocation and renewed for as long as it runs.
async fn function_credentials(
    settings: &RunSettings,
    prepared: &Prepared,
    invocation: &Invocation,
) -> Result<Option<FunctionCredentials>, RunnerError> {
    let role = match &settings.function_role {
        FunctionRole::Inherit => return Ok(None),
        FunctionRole::Arn(arn) => arn.clone(),
        FunctionRole::Assume => prepared.role.clone().ok_or_else(|| {
            RunnerError::Usage(format!(
                "--function-role assume needs the function's configuration, which local code has not: fetch it from Lambda (no --artifact), or name the role (--function-role ARN), or run as yourself ({FUNCTION_ROLE_VAR}=inherit)"
            ))
        })?,
    };
    let credentials = FunctionCredentials::assume(
        aws::shared().await,
        &role,
        &session_name(&invocation.request_id),
        settings.credentials_lifetime,
    )
    .await?;
    Ok(Some(credentials))
}

/// Where the function's output goes: the runner's stderr, or its own log group written
/// as the function (its role may write there).
async fn function_log(
    destination: LogDestination,
    json: bool,
    invocation: &Invocation,
    credentials: Option<&FunctionCredentials>,
) -> FunctionLog {
    match destination {
        LogDestination::Stderr => FunctionLog::stderr(json),
        LogDestination::CloudWatch => {
            let mut config = aws_sdk_cloudwatchlogs::config::Builder::from(aws::shared().await);
            if let Some(credentials) = credentials {
                config = config.credentials_provider(credentials.provider());
            }
            let stream = FunctionLog::stream_name(invocation);
            tracing::info!(group = %invocation.log_group, stream = %stream, "the function's logs go to its log group");
            FunctionLog::cloudwatch(
                aws_sdk_cloudwatchlogs::Client::from_conf(config.build()),
                invocation.log_group.clone(),
                stream,
                json,
            )
        }
    }
}

/// The handler when `--handler` names none: the function's own (from Lambda), else
/// `bootstrap`, which only a custom runtime's bootstrap ignores. Local code on a managed
/// runtime that brings no bootstrap of its own would only fail inside the runtime
/// client (`Bad handler 'bootstrap'`): refused here, naming the flag and an example.
fn default_handler(prepared: &Prepared) -> Result<String, RunnerError> {
    let bootstrap_in = |dir: &std::path::Path| dir.join(crate::emulator::bootstrap::BOOTSTRAP).is_file();
    let own_bootstrap = std::iter::once(&prepared.layout.task_root)
        .chain(prepared.layout.opt_dir.as_ref())
        .any(|dir| bootstrap_in(dir));
    // The runtime's bootstrap is what would read the handler (without one, the missing
    // runtime folder is the error to report).
    let runtime_bootstrap = prepared
        .layout
        .runtime_dir
        .as_ref()
        .is_some_and(|rt| bootstrap_in(&rt.path));
    match &prepared.runtime {
        Some(runtime) if prepared.local && !runtime.is_custom() && !own_bootstrap && runtime_bootstrap => Err(RunnerError::Usage(format!(
            "--runtime {runtime} runs a handler the function names: give --handler (e.g. --handler {}, the Lambda console's default); without it the runner passes `bootstrap`, which only custom runtimes (provided.*) read",
            runtime.handler_example()
        ))),
        _ => Ok(prepared.handler.clone()),
    }
}

/// `immortal-<request id>`, within STS's 64 characters and alphabet.
fn session_name(request_id: &str) -> String {
    let id: String = request_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+=,.@-".contains(*c))
        .take(55)
        .collect();
    format!("immortal-{id}")
}

/// The invocation with every gap filled, as Lambda would have it.
pub(crate) fn resolve(envelope: &Envelope, function: Option<&FunctionRef>, facts: &FunctionFacts) -> Invocation {
    Invocation::resolve(envelope, function, facts, &ContextDefaults::from_env())
}

/// Reports the outcome to its destination and picks the exit code.
pub(crate) async fn finish(reporter: &Reporter, invocation: &Invocation, outcome: &Outcome) -> Exit {
    match reporter.deliver(invocation, outcome).await {
        Ok(()) => outcome.exit(),
        Err(exit) => exit,
    }
}

/// Where the response goes: the file, else stdout.
pub(crate) async fn open_sink(output: Option<&std::path::Path>) -> Result<ResponseSink, RunnerError> {
    Ok(match output {
        Some(path) => ResponseSink::new(
            tokio::fs::File::create(path)
                .await
                .map_err(|source| RunnerError::Output {
                    path: path.to_owned(),
                    source,
                })?,
        ),
        None => ResponseSink::new(tokio::io::stdout()),
    })
}

/// Streamed responses are already out; everything else is written now.
pub(crate) async fn write_outcome(
    sink: &ResponseSink,
    outcome: &Outcome,
    output: Option<&std::path::Path>,
) -> Result<(), RunnerError> {
    if matches!(outcome, Outcome::Response { streamed: true, .. }) {
        return Ok(());
    }
    let failed = |source| RunnerError::Output {
        path: output.map(ToOwned::to_owned).unwrap_or_else(|| "stdout".into()),
        source,
    };
    let body = outcome.body();
    sink.write(body).await.map_err(failed)?;
    // On a terminal, the prompt on a line of its own; a pipe or a file gets the bytes as
    // the function returned them.
    if output.is_none() && !body.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        sink.write(b"\n").await.map_err(failed)?;
    }
    Ok(())
}

/// `--fetch-only`: the code in the cache; prints the task root.
pub(crate) async fn fetch_only(
    code: CodeSource,
    carrier: Carrier,
    mut options: CodeOptions,
) -> Result<Exit, RunnerError> {
    // Nothing runs: the code stays in the cache, not presented at the task root.
    options.runtime.task_root = None;
    let envelope = open(&carrier).await?;
    let function = function_of(&envelope)?;
    let prepared = code.prepare(function.as_ref(), &options, aws::shared).await?;
    println!("{}", prepared.layout.task_root.display());
    Ok(Exit::Success)
}
