//! `scripts/rehearse`: the whole overflow path for a function zip of yours, in one
//! command, against a local AWS emulator started for it (see `immortal_tests::rehearsal`).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use immortal_tests::emulator::Emulator;
use immortal_tests::rehearsal::{rehearse, Spec, Stages};

/// Rehearse the overflow of a Lambda function on this machine: it is created in a local
/// AWS emulator from ZIP, its invocation of EVENT times out in (emulated) Lambda, is
/// dead-lettered, forwarded to an ECS task, and finishes in the task's runner; the
/// response, the destination record and the ledger entry are printed.
#[derive(Debug, Parser)]
#[command(
    name = "scripts/rehearse",
    after_help = "Examples:\n  scripts/rehearse target/lambda/thumbnail/bootstrap.zip --event @event.json\n  scripts/rehearse fn.zip --runtime python3.11 --handler lambda_function.lambda_handler --event '{\"n\": 3}'\n\nExit codes: 0 the function succeeded in the task, 1 it returned an error there (its record went to the failure destination), 2 bad usage, 3 the rehearsal could not get that far (the reason is printed)."
)]
struct Args {
    /// The function's code zip.
    #[arg(value_name = "ZIP")]
    zip: PathBuf,

    /// The event: JSON, or @FILE.
    #[arg(long, value_name = "JSON|@FILE")]
    event: String,

    /// The function's runtime (python3.11, nodejs20.x...). Default: provided.al2023 (the
    /// zip holds its bootstrap).
    #[arg(long, value_name = "RUNTIME")]
    runtime: Option<String>,

    /// The function's handler (lambda_function.lambda_handler, index.handler...).
    #[arg(long, value_name = "HANDLER")]
    handler: Option<String>,

    /// A runtime folder for a managed runtime. Default: `runner runtime install RUNTIME`
    /// makes one.
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,

    /// A variable of the function's environment (repeat it).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = name_value)]
    env: Vec<(String, String)>,

    /// The function's name in the emulator.
    #[arg(long, default_value = "rehearsed")]
    name: String,

    /// Lambda's limit for the first invocation, in seconds: small, so that it times out.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.5)]
    lambda_timeout: f64,
}

fn name_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rehearse: {e:#}");
            std::process::ExitCode::from(3)
        }
    }
}

async fn run(args: Args) -> Result<std::process::ExitCode> {
    let event = match args.event.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("read the event file {path}"))?,
        None => args.event.clone(),
    };
    serde_json::from_str::<serde_json::Value>(&event).context("the event is not JSON")?;
    // Beside the build (caches, the forwarder's zip, runtime folders), reused next time.
    let work = immortal_tests::runner::profile_dir().join("rehearsals");
    let mut stages = Stages::default();
    println!("rehearsing the overflow of {} on this machine\n", args.zip.display());
    let emulator = Emulator::start();
    stages.say(&format!("local AWS emulator (moto) listening at {}", emulator.url));
    let spec = Spec {
        name: args.name,
        zip: std::path::absolute(&args.zip)?,
        event,
        runtime: args.runtime,
        handler: args.handler,
        runtime_dir: args.runtime_dir.map(std::path::absolute).transpose()?,
        env: args.env,
        lambda_timeout: args.lambda_timeout,
        work,
    };
    let done = rehearse(&spec, &emulator.url, &mut stages).await?;
    stages.say(&format!(
        "the function's answer in the task: {}",
        done.task.stdout_text().trim()
    ));
    let mut shown = done.record.clone();
    shown["requestPayload"] = serde_json::json!("(the event, unchanged)");
    stages.say(&format!(
        "the destination record (Lambda's format): {}",
        serde_json::to_string(&shown)?
    ));
    stages.say(&format!(
        "the ledger (s3://{}/ledger/{}.json): state {}, attempt {}",
        done.payload_bucket, done.request_id, done.entry["state"], done.entry["attempt"]
    ));
    Ok(std::process::ExitCode::from(if done.task.code == Some(0) {
        0
    } else {
        1
    }))
}
