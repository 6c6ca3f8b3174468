//! # immortal-runner
//!
//! Runs an AWS Lambda function's own `bootstrap` with its original event and context,
//! with no time limit: the container entry point of immortal and a local CLI.
//!
//! The binary (`main.rs`) only parses arguments; this root only dispatches the mode the
//! command line asks for. The pipeline lives in four subsystems, in the order an
//! invocation meets them (see `docs/ARCHITECTURE.md`):
//! - [`cli`]: the command line and the [`cli::mode::Mode`] it asks for;
//! - `code`: the function's code, layers, configuration and runtime, fetched from Lambda
//!   (GetFunction → download → verify → unpack) or taken from a local artifact;
//! - `emulator`: Lambda's sandbox for one invocation (Runtime, Extensions and Telemetry
//!   APIs, the bootstrap, credentials, logs, platform records);
//! - `run`: one attempt from the envelope to its settlement in the ledger and its
//!   outcome record, for a single task or each message of a drain worker.
//!
//! Shared by all: [`exit`] (the exit codes), `error`, [`signals`].
//!
//! Only what the binary and the integration tests need is public.
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod cli;
mod code;
mod emulator;
mod error;
pub mod exit;
mod run;
pub mod signals;

pub use crate::code::artifact::unpack::{unpack, unpack_with};
pub use crate::emulator::extensions::{Extensions, FunctionInfo};
pub use crate::emulator::invocation::{FunctionFacts, Invocation};
pub use crate::emulator::outcome::{Failure, Outcome};
pub use crate::emulator::peer::Admission;
pub use crate::emulator::runtime_api::{ApiEvent, ResponseSink, RuntimeApi};
pub use crate::error::CodeError;

use crate::cli::mode::Mode;
use crate::cli::Cli;
use crate::exit::Exit;
use crate::run::{drain, execution, in_process};
use crate::signals::StopSignal;

/// Runs the command line to the end and returns the exit code. Errors are logged.
pub async fn run(cli: Cli, stop: StopSignal) -> Exit {
    run::scratch::remove_stale(&std::env::temp_dir());
    let result = match Mode::from_cli(cli) {
        Ok(Mode::Run(job)) => job.run(stop).await,
        Ok(Mode::InProcess { library, job }) => in_process::run(&library, job, stop).await,
        Ok(Mode::FetchOnly { code, carrier, options }) => execution::fetch_only(code, carrier, options).await,
        Ok(Mode::Drain(options)) => drain::drain(options, stop).await,
        Ok(Mode::Prune { cache, rule }) => prune(&cache, &rule),
        Ok(Mode::RuntimeInstall(request)) => runtime_install(&request),
        Err(err) => Err(err),
    };
    result.unwrap_or_else(|err| {
        tracing::error!("{err}");
        err.exit()
    })
}

/// `runner cache prune`: one line per entry removed (or kept because a runner uses it),
/// then a summary, on stdout.
fn prune(cache: &code::artifact::Cache, rule: &code::artifact::cache::PruneRule) -> Result<Exit, error::RunnerError> {
    let pruned = cache.prune(rule)?;
    let verb = if rule.dry_run { "would remove" } else { "removed" };
    let mb = |bytes: u64| bytes as f64 / 1_048_576.0;
    for (key, bytes, age) in &pruned.removed {
        println!("{verb} {key} ({:.1} MB, last used {}s ago)", mb(*bytes), age.as_secs());
    }
    for key in &pruned.in_use {
        println!("kept {key}: a running runner uses it");
    }
    let total: u64 = pruned.removed.iter().map(|(_, bytes, _)| bytes).sum();
    println!(
        "{verb} {} entries ({:.1} MB) from {}; kept {} ({} in use)",
        pruned.removed.len(),
        mb(total),
        cache.root().display(),
        pruned.kept + pruned.in_use.len(),
        pruned.in_use.len()
    );
    Ok(Exit::Success)
}

/// `runner runtime install`: what it makes on stderr, the folder on stdout.
fn runtime_install(request: &code::runtime_folder::InstallRequest) -> Result<Exit, error::RunnerError> {
    use code::runtime_folder::{install, InstallOutcome};
    let (installed, verb) = match install(request)? {
        InstallOutcome::Made(installed) => (installed, "made"),
        InstallOutcome::AlreadyThere(installed) => (installed, "already there"),
    };
    eprintln!(
        "{verb}: {} on {} {}, with {}",
        installed.runtime,
        installed.interpreter.display(),
        installed.interpreter_version,
        installed.packages.join(", ")
    );
    println!("{}", request.dir.display());
    Ok(Exit::Success)
}
