//! # immortal-runner
//!
//! Runs an AWS Lambda function's own `bootstrap` with its original event and context,
//! with no time limit: the container entry point of immortal and a local CLI.
//!
//! The binary (`main.rs`) only parses arguments; this root only dispatches the
//! [`mode::Mode`] the command line asks for. The work lives in these modules:
//! - [`execution`]: one envelope run with one function's code, start to end;
//! - [`supervisor`]: one invocation, supervised (Runtime API, bootstrap, deadline, signals);
//! - [`runtime_api`]: the local Lambda Runtime API; [`bootstrap`]: the child process;
//! - [`code`], [`function`], [`artifact`], [`runtime`]: the function's code,
//!   configuration and runtime;
//! - [`invocation`]: the context with every gap filled; [`outcome`], [`report`], [`exit`];
//! - [`in_process`] (`--lib`) and [`drain`] (`--queue`).
#![deny(missing_docs)]

pub mod artifact;
pub mod attempt;
pub mod bootstrap;
pub mod cli;
pub mod code;
pub mod credentials;
pub mod drain;
pub mod error;
pub mod execution;
pub mod exit;
pub mod extensions;
pub mod function;
pub mod function_logs;
pub mod in_process;
pub mod invocation;
pub mod mode;
pub mod outcome;
pub mod peer;
pub mod report;
pub mod runtime;
pub mod runtime_api;
pub mod signals;
pub mod supervisor;
pub mod task_root;

use crate::cli::Cli;
use crate::exit::Exit;
use crate::mode::Mode;
use crate::signals::StopSignal;

/// Runs the command line to the end and returns the exit code. Errors are logged.
pub async fn run(cli: Cli, stop: StopSignal) -> Exit {
    let result = match Mode::from_cli(cli) {
        Ok(Mode::Run(job)) => job.run(stop).await,
        Ok(Mode::InProcess { library, job }) => in_process::run(&library, job, stop).await,
        Ok(Mode::FetchOnly { code, carrier, options }) => execution::fetch_only(code, carrier, options).await,
        Ok(Mode::Drain(options)) => drain::drain(options, stop).await,
        Err(err) => Err(err),
    };
    result.unwrap_or_else(|err| {
        tracing::error!("{err}");
        err.exit()
    })
}
