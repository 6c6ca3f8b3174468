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
pub mod code;
pub mod drain;
pub mod error;
pub mod exit;
pub mod function;
pub mod inproc;
pub mod input;
pub mod invocation;
pub mod invoke;
pub mod outcome;
pub mod report;
pub mod runtime_api;
pub mod signals;

use std::sync::Arc;
use std::time::Duration;

use immortal_handler_sdk::envelope::S3Location;
use immortal_handler_sdk::record::RelaunchPolicy;
use immortal_handler_sdk::{aws, container, Envelope};

use crate::cli::Cli;
use crate::code::CodeOptions;
use crate::error::RunnerError;
use crate::exit::Exit;
use crate::input::Source;
use crate::invocation::Invocation;
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
    let destinations = report::Destinations::parse(
        cli.on_success.as_deref(),
        cli.on_failure.as_deref(),
        cli.payload_bucket.as_deref(),
    )?;
    let reporter = report::Reporter::new(destinations);
    if let Some(queue_url) = &cli.queue {
        return drain::drain(
            drain::DrainOptions {
                queue_url: queue_url.clone(),
                concurrency: cli.concurrency.max(1),
                idle: Duration::from_secs_f64(cli.idle_timeout),
                visibility: cli.visibility_timeout,
                policy: match &cli.relaunch {
                    Some(text) => RelaunchPolicy::parse(text)
                        .map_err(|e| RunnerError::Usage(format!("IMMORTAL_RELAUNCH: {e}")))?,
                    None => RelaunchPolicy::default(),
                },
                function_map: cli.function_map.clone().unwrap_or_default(),
                code: code_options(cli),
                settings: settings(cli),
                reporter,
            },
            stop,
        )
        .await;
    }
    let envelope = if cli.fetch_only && cli.event.is_none() && cli.envelope.is_none() {
        Envelope::from_parts("{}", cli.context.as_deref().unwrap_or(""))
            .map_err(|e| RunnerError::Usage(e.to_string()))?
    } else {
        load_envelope(cli).await?
    };
    let code_options = code_options(cli);
    if let Some(lib) = &cli.lib {
        return run_in_process(cli, lib, &envelope, &reporter, stop).await;
    }
    let prepared = match &cli.artifact {
        Some(path) => code::local(path, &code_options).await?,
        None => {
            let function = code::function_ref(cli.function.as_deref(), cli.qualifier.as_deref(), &envelope)?;
            code::remote(&function, &code_options, aws::shared().await).await?
        }
    };
    if cli.fetch_only {
        println!("{}", prepared.layout.task_root.display());
        return Ok(Exit::Success);
    }
    let sink = open_sink(cli).await?;
    let (invocation, outcome) = run_prepared(prepared, &envelope, &settings(cli), sink.clone(), stop).await?;
    write_outcome(&sink, &outcome, cli).await?;
    finish(&reporter, &invocation, &outcome).await
}

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

fn settings(cli: &Cli) -> RunSettings {
    RunSettings {
        timeout: cli.timeout.map(Duration::from_secs_f64),
        grace: Duration::from_secs_f64(cli.grace_period),
        handler: cli.handler.clone(),
    }
}

/// Runs `envelope` with the prepared code: the invocation resolved against the function,
/// and how it ended.
pub async fn run_prepared(
    prepared: code::Prepared,
    envelope: &Envelope,
    settings: &RunSettings,
    sink: ResponseSink,
    stop: StopSignal,
) -> Result<(Arc<Invocation>, Outcome), RunnerError> {
    let options = InvokeOptions {
        timeout: settings.timeout,
        grace: settings.grace,
        handler: settings.handler.clone().unwrap_or(prepared.handler),
        runtime: prepared.runtime,
        function_env: prepared.env,
    };
    let invocation = Arc::new(Invocation::resolve(envelope, &prepared.facts, &default_region()));
    let outcome = invoke::invoke(&prepared.layout, invocation.clone(), &options, sink, stop).await?;
    Ok((invocation, outcome))
}

/// Reports the outcome to its destination and picks the exit code.
async fn finish(reporter: &report::Reporter, invocation: &Invocation, outcome: &Outcome) -> Result<Exit, RunnerError> {
    Ok(match reporter.deliver(invocation, outcome).await {
        Ok(()) => outcome.exit(),
        Err(exit) => exit,
    })
}

fn code_options(cli: &Cli) -> CodeOptions {
    CodeOptions {
        cache: artifact::Cache::new(cli.cache_dir.clone().unwrap_or_else(artifact::Cache::default_root)),
        opt_dir: cli.opt_dir.clone(),
        max_unpacked: cli.max_unpacked_size,
    }
}

/// `--lib`: the handler library in-process, with Lambda's environment set in this process.
async fn run_in_process(
    cli: &Cli,
    lib: &std::path::Path,
    envelope: &Envelope,
    reporter: &report::Reporter,
    stop: StopSignal,
) -> Result<Exit, RunnerError> {
    let library = Arc::new(inproc::HandlerLibrary::load(lib)?);
    let facts = invocation::FunctionFacts {
        name: Some(code::artifact_name(lib).trim_start_matches("lib").to_owned()),
        ..Default::default()
    };
    let invocation = Invocation::resolve(envelope, &facts, &default_region());
    let layout = bootstrap::CodeLayout {
        task_root: lib.parent().map(|p| p.to_owned()).unwrap_or_else(|| ".".into()),
        opt_dir: cli.opt_dir.clone(),
    };
    let env = bootstrap::environment(&bootstrap::LaunchConfig {
        invocation: &invocation,
        layout: &layout,
        handler: cli.handler.as_deref().unwrap_or("bootstrap"),
        runtime: "provided.al2023",
        runtime_api: "",
        function_env: &Default::default(),
        unlimited: cli.timeout.is_none(),
    });
    for (key, value) in env.iter().filter(|(k, _)| k.as_str() != "AWS_LAMBDA_RUNTIME_API") {
        // The handler reads its configuration from the process environment, as in Lambda;
        // nothing else runs yet that could read it concurrently.
        std::env::set_var(key, value);
    }
    let resolved = Envelope {
        event: envelope.event.clone(),
        context: invocation.to_context(),
    };
    tracing::info!(library = %lib.display(), request_id = %invocation.request_id, "invoking in-process");
    let sink = open_sink(cli).await?;
    let outcome = inproc::invoke(
        library,
        resolved.to_json().into_bytes(),
        &invocation.request_id,
        cli.timeout.map(Duration::from_secs_f64),
        stop,
    )
    .await;
    write_outcome(&sink, &outcome, cli).await?;
    finish(reporter, &invocation, &outcome).await
}

/// The envelope from --envelope, or from --event and --context.
async fn load_envelope(cli: &Cli) -> Result<Envelope, RunnerError> {
    if let Some(location) = &cli.envelope {
        let text = if location.starts_with('@') || location == "-" {
            Source::parse(location).read("envelope")?
        } else {
            read_s3_envelope(location).await?
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

/// Reads an envelope the forwarder stored because it was too large for the task overrides.
async fn read_s3_envelope(location: &str) -> Result<String, RunnerError> {
    let at = S3Location::parse(location)
        .map_err(|e| RunnerError::Usage(format!("{e} (from {})", container::ENVELOPE_URL_VAR)))?;
    let s3 = aws::s3_client(aws::shared().await);
    let unreadable = |reason: String| RunnerError::Usage(format!("cannot read the envelope at {at}: {reason}"));
    let bytes = aws::get_bytes(&s3, &at).await.map_err(unreadable)?;
    tracing::info!(envelope = %at, bytes = bytes.len(), "envelope read from S3");
    String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8 text".into()))
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
