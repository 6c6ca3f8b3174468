//! # immortal-runner
//!
//! Runs an AWS Lambda function's own `bootstrap` with its original event and context,
//! with no time limit: the container entry point of immortal and a local CLI.
//!
//! The binary (`main.rs`) only parses arguments; everything lives in these modules:
//! [`runtime_api`] (the local Lambda Runtime API), [`bootstrap`] (the child process),
//! [`invoke`] (one invocation, supervised), [`artifact`] (code: fetch, verify, unpack,
//! cache), [`invocation`] (context resolution), [`outcome`] and [`exit`].
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

pub mod artifact;
pub mod bootstrap;
pub mod cli;
pub mod error;
pub mod exit;
pub mod input;
pub mod invocation;
pub mod invoke;
pub mod logging;
pub mod outcome;
pub mod runtime_api;
pub mod signals;

use std::sync::Arc;
use std::time::Duration;

use immortal_handler_sdk::Envelope;

use crate::bootstrap::CodeLayout;
use crate::cli::Cli;
use crate::error::RunnerError;
use crate::exit::Exit;
use crate::input::Source;
use crate::invocation::{FunctionFacts, Invocation};
use crate::invoke::{InvokeOptions, StopSignal};
use crate::outcome::Outcome;
use crate::runtime_api::ResponseSink;

/// Runs the command line to the end and returns the exit code. Errors are logged.
pub async fn run(cli: Cli, stop: StopSignal) -> Exit {
    match run_once(&cli, stop).await {
        Ok(exit) => exit,
        Err(err) => {
            tracing::error!("{err}");
            err.exit()
        }
    }
}

async fn run_once(cli: &Cli, stop: StopSignal) -> Result<Exit, RunnerError> {
    let envelope = load_envelope(cli).await?;
    let cache = artifact::Cache::new(cli.cache_dir.clone().unwrap_or_else(artifact::Cache::default_root));
    let region = default_region();

    let (layout, facts, mut options) = match &cli.artifact {
        Some(path) => {
            let limit = cli.max_unpacked_size;
            let (path, cache2) = (path.clone(), cache.clone());
            let task_root = tokio::task::spawn_blocking(move || artifact::local(&path, &cache2, limit))
                .await
                .map_err(|e| RunnerError::Start(format!("unpacking panicked: {e}")))??;
            let facts = FunctionFacts {
                name: cli.artifact.as_deref().map(artifact_name),
                ..Default::default()
            };
            let layout = CodeLayout {
                task_root,
                opt_dir: cli.opt_dir.clone(),
            };
            let options = InvokeOptions {
                timeout: None,
                grace: Duration::ZERO,
                handler: "bootstrap".to_owned(),
                runtime: "provided.al2023".to_owned(),
                function_env: Default::default(),
            };
            (layout, facts, options)
        }
        None => {
            return Err(RunnerError::Usage(
                "no --artifact given and fetching the function from Lambda is not available in this build".into(),
            ))
        }
    };
    options.timeout = cli.timeout.map(Duration::from_secs_f64);
    options.grace = Duration::from_secs_f64(cli.grace_period);
    if let Some(handler) = &cli.handler {
        options.handler = handler.clone();
    }

    let invocation = Arc::new(Invocation::resolve(&envelope, &facts, &region));
    let sink = open_sink(cli).await?;
    let outcome = invoke::invoke(&layout, invocation, &options, sink.clone(), stop).await?;
    write_outcome(&sink, &outcome, cli).await?;
    Ok(outcome.exit())
}

/// The envelope from --envelope, or from --event and --context.
async fn load_envelope(cli: &Cli) -> Result<Envelope, RunnerError> {
    if let Some(location) = &cli.envelope {
        let text = match location.strip_prefix('@') {
            Some(_) => Source::parse(location).read("envelope")?,
            None => {
                return Err(RunnerError::Usage(format!(
                    "cannot read the envelope at {location}: only @FILE is supported in this build"
                )))
            }
        };
        return Envelope::from_json(&text).map_err(|e| RunnerError::Usage(e.to_string()));
    }
    let Some(event) = &cli.event else {
        return Err(RunnerError::Usage(
            "no event given: pass --event JSON|@FILE|- (or set IMMORTAL_EVENT, or IMMORTAL_ENVELOPE_URL)".into(),
        ));
    };
    let event_source = Source::parse(event);
    let context_source = cli.context.as_deref().map(Source::parse);
    if event_source == Source::Stdin && context_source == Some(Source::Stdin) {
        return Err(RunnerError::Usage(
            "--event and --context cannot both read stdin (-); put one in a file".into(),
        ));
    }
    let event = event_source.read("event")?;
    let context = match context_source {
        Some(source) => source.read("context")?,
        None => String::new(),
    };
    Envelope::from_parts(&event, &context).map_err(|e| RunnerError::Usage(e.to_string()))
}

/// The function name a local artifact suggests: `thumb.zip` → `thumb`; for cargo lambda's
/// `target/lambda/thumb/bootstrap.zip`, the folder's name.
fn artifact_name(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem == "bootstrap" || stem.is_empty() {
        if let Some(parent) = path
            .canonicalize()
            .ok()
            .as_deref()
            .and_then(|p| p.parent())
            .and_then(|p| p.file_name())
        {
            return parent.to_string_lossy().into_owned();
        }
    }
    if stem.is_empty() {
        "function".to_owned()
    } else {
        stem
    }
}

/// The region from the standard variables, else us-east-1.
pub fn default_region() -> String {
    std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".to_owned())
}

async fn open_sink(cli: &Cli) -> Result<ResponseSink, RunnerError> {
    Ok(match &cli.output {
        Some(path) => ResponseSink::new(
            tokio::fs::File::create(path)
                .await
                .map_err(|source| RunnerError::Output {
                    path: path.clone(),
                    source,
                })?,
        ),
        None => ResponseSink::new(tokio::io::stdout()),
    })
}

/// Streamed responses are already out; everything else is written now.
async fn write_outcome(sink: &ResponseSink, outcome: &Outcome, cli: &Cli) -> Result<(), RunnerError> {
    if matches!(outcome, Outcome::Response { streamed: true, .. }) {
        return Ok(());
    }
    sink.write(outcome.body()).await.map_err(|source| RunnerError::Output {
        path: cli.output.clone().unwrap_or_else(|| "stdout".into()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names() {
        assert_eq!(artifact_name(std::path::Path::new("/x/thumb.zip")), "thumb");
        assert_eq!(artifact_name(std::path::Path::new("fn-dir")), "fn-dir");
    }
}
