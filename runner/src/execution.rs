//! Running one envelope with one function's code, start to end: open the envelope,
//! get the code ready, supervise the bootstrap, write the response, report the
//! outcome. Single runs and drain workers both come through here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use immortal_handler_sdk::aws;
use immortal_handler_sdk::function_ref::ContextDefaults;
use immortal_handler_sdk::{Envelope, FunctionRef};
use immortal_overflow::{Carrier, OverflowSettings};

use crate::code::{CodeOptions, CodeSource, Prepared};
use crate::error::RunnerError;
use crate::exit::Exit;
use crate::invocation::{FunctionFacts, Invocation};
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::runtime_api::ResponseSink;
use crate::signals::StopSignal;
use crate::supervisor::{self, InvokeOptions};

/// How to run any invocation.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Lambda-style limit, if any.
    pub timeout: Option<Duration>,
    /// SIGTERM → SIGKILL delay.
    pub grace: Duration,
    /// `_HANDLER` override.
    pub handler: Option<String>,
}

/// One invocation to run, as the command line asked for it.
pub struct Job {
    /// Where the code comes from.
    pub code: CodeSource,
    /// Where the envelope comes from.
    pub carrier: Carrier,
    /// Cache and limits for the code.
    pub code_options: CodeOptions,
    /// Timeout, grace period, handler.
    pub settings: RunSettings,
    /// Where the response goes (stdout when `None`).
    pub output: Option<PathBuf>,
    /// Where outcomes are reported.
    pub overflow: OverflowSettings,
}

impl Job {
    /// Runs the job with a bootstrap and returns the exit code.
    pub async fn run(self, stop: StopSignal) -> Result<Exit, RunnerError> {
        let reporter = Reporter::new(&self.overflow);
        let envelope = open(&self.carrier).await?;
        let function = function_of(&envelope)?;
        let prepared = self
            .code
            .prepare(function.as_ref(), &self.code_options, aws::shared)
            .await?;
        let sink = open_sink(self.output.as_deref()).await?;
        let (invocation, outcome) = run_envelope(
            prepared,
            &envelope,
            function.as_ref(),
            &self.settings,
            sink.clone(),
            stop,
        )
        .await?;
        write_outcome(&sink, &outcome, self.output.as_deref()).await?;
        Ok(finish(&reporter, &invocation, &outcome).await)
    }
}

/// The envelope a carrier brings (a bad one is bad input: exit 2).
pub async fn open(carrier: &Carrier) -> Result<Envelope, RunnerError> {
    carrier
        .open(|| async { aws::s3_client(aws::shared().await) })
        .await
        .map_err(|e| RunnerError::Usage(e.to_string()))
}

/// The function the envelope's context names, parsed once for everyone after.
pub fn function_of(envelope: &Envelope) -> Result<Option<FunctionRef>, RunnerError> {
    envelope
        .context
        .function_ref()
        .map_err(|e| RunnerError::Usage(e.to_string()))
}

/// Runs `envelope` with the prepared code: the invocation resolved against the
/// function, and how it ended.
pub async fn run_envelope(
    prepared: Prepared,
    envelope: &Envelope,
    function: Option<&FunctionRef>,
    settings: &RunSettings,
    sink: ResponseSink,
    stop: StopSignal,
) -> Result<(Arc<Invocation>, Outcome), RunnerError> {
    let options = InvokeOptions {
        timeout: settings.timeout,
        grace: settings.grace,
        handler: settings.handler.clone().unwrap_or(prepared.handler),
        runtime: prepared.runtime,
        logging: prepared.logging,
        function_env: prepared.env,
    };
    let invocation = Arc::new(resolve(envelope, function, &prepared.facts));
    let outcome = supervisor::invoke(&prepared.layout, invocation.clone(), &options, sink, stop).await?;
    Ok((invocation, outcome))
}

/// The invocation with every gap filled, as Lambda would have it.
pub fn resolve(envelope: &Envelope, function: Option<&FunctionRef>, facts: &FunctionFacts) -> Invocation {
    Invocation::resolve(envelope, function, facts, &ContextDefaults::from_env())
}

/// Reports the outcome to its destination and picks the exit code.
pub async fn finish(reporter: &Reporter, invocation: &Invocation, outcome: &Outcome) -> Exit {
    match reporter.deliver(invocation, outcome).await {
        Ok(()) => outcome.exit(),
        Err(exit) => exit,
    }
}

/// Where the response goes: the file, else stdout.
pub async fn open_sink(output: Option<&std::path::Path>) -> Result<ResponseSink, RunnerError> {
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
pub async fn write_outcome(
    sink: &ResponseSink,
    outcome: &Outcome,
    output: Option<&std::path::Path>,
) -> Result<(), RunnerError> {
    if matches!(outcome, Outcome::Response { streamed: true, .. }) {
        return Ok(());
    }
    sink.write(outcome.body()).await.map_err(|source| RunnerError::Output {
        path: output.map(ToOwned::to_owned).unwrap_or_else(|| "stdout".into()),
        source,
    })
}

/// `--fetch-only`: the code in the cache; prints the task root.
pub async fn fetch_only(code: CodeSource, carrier: Carrier, mut options: CodeOptions) -> Result<Exit, RunnerError> {
    // Nothing runs: the code stays in the cache, not presented at the task root.
    options.runtime.task_root = None;
    let envelope = open(&carrier).await?;
    let function = function_of(&envelope)?;
    let prepared = code.prepare(function.as_ref(), &options, aws::shared).await?;
    println!("{}", prepared.layout.task_root.display());
    Ok(Exit::Success)
}
