//! A rehearsal of the whole overflow path for any function zip, on this machine against
//! the local AWS emulator: the function is created in the emulator from its zip (as an
//! S3 object: the only way the emulator serves its code back), its invocation times out
//! in Lambda (the runner with `--timeout`), Lambda dead-letters the event, the forwarder
//! (itself run as Lambda runs it) stores the envelope and the ledger entry and starts the
//! ECS task, and the task's runner fetches the function's code and runs it to its end
//! with only the environment the task would have. `scripts/rehearse` runs it for a zip
//! of yours; `scripts/demo` is the thumbnail's rehearsal.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use aws_sdk_lambda::types::Runtime;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{json, Value};

use crate::ecs::{task_env, Cluster};
use crate::emulator::aws_env;
use crate::lambda::deploy_as;
use crate::queue::Queue;
use crate::runner::{lambda_zip, workspace_artifact, Ran};

/// Numbered, timed lines on stdout, one per stage.
pub struct Stages {
    started: Instant,
    n: usize,
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            started: Instant::now(),
            n: 0,
        }
    }
}

impl Stages {
    /// Prints the next stage.
    pub fn say(&mut self, what: &str) {
        self.n += 1;
        println!(
            "[{:>2}] {:>6.1} s  {what}",
            self.n,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Runs `cmd` to its end.
fn run(cmd: Command) -> Result<Ran> {
    Ran::of(cmd).context("start a child process")
}

/// The `message` fields of the runner's JSON log lines that start with one of `keep`,
/// with their telling fields, indented.
pub fn log_messages(stderr: &str, keep: &[&str]) -> String {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| keep.iter().any(|k| m.starts_with(k)))
        })
        .map(|v| {
            let detail: Vec<String> = [
                "what",
                "function",
                "bytes",
                "duration_ms",
                "cache_hit",
                "request_id",
                "png",
            ]
            .iter()
            .filter_map(|k| {
                v.get(*k)
                    .map(|x| format!("{k}={}", x.as_str().map(str::to_owned).unwrap_or_else(|| x.to_string())))
            })
            .collect();
            format!(
                "         · {} {}",
                v["message"].as_str().unwrap_or_default(),
                detail.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What to rehearse.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The function's name in the emulator.
    pub name: String,
    /// Its code zip.
    pub zip: PathBuf,
    /// The event (JSON).
    pub event: String,
    /// Its runtime (`provided.al2023` when none: the zip brings its bootstrap).
    pub runtime: Option<String>,
    /// Its handler (`bootstrap` for a custom runtime).
    pub handler: Option<String>,
    /// The runtime folder for a managed runtime (the task's /var/runtime); made with
    /// `runner runtime install` in `work` when none is given.
    pub runtime_dir: Option<PathBuf>,
    /// The function's environment variables.
    pub env: Vec<(String, String)>,
    /// Lambda's limit for the first invocation, in seconds (small, so that it times out).
    pub lambda_timeout: f64,
    /// Where the caches and runtime folders go.
    pub work: PathBuf,
}

/// What a rehearsal ended with.
#[derive(Debug)]
pub struct Rehearsed {
    /// The invocation's request id.
    pub request_id: String,
    /// The task's runner.
    pub task: Ran,
    /// The destination record the task sent (success or failure).
    pub record: Value,
    /// The ledger entry at the end.
    pub entry: Value,
    /// The payload bucket (envelopes, ledger).
    pub payload_bucket: String,
}

/// `spec.runtime` as the Lambda API names it.
fn lambda_runtime(spec: &Spec) -> Runtime {
    Runtime::from(spec.runtime.as_deref().unwrap_or("provided.al2023"))
}

/// Whether the function runs on a managed runtime (needs a runtime folder).
fn managed(spec: &Spec) -> bool {
    spec.runtime.as_deref().is_some_and(|r| !r.starts_with("provided"))
}

/// The runtime folder a managed-runtime rehearsal runs on: the one given, else one
/// `runner runtime install` makes (or finds) in the work folder.
fn runtime_dir(spec: &Spec, runner: &Path) -> Result<Option<PathBuf>> {
    if !managed(spec) {
        return Ok(None);
    }
    if let Some(dir) = &spec.runtime_dir {
        return Ok(Some(dir.clone()));
    }
    let runtime = spec.runtime.as_deref().expect("managed");
    let mut cmd = Command::new(runner);
    cmd.args(["runtime", "install", runtime])
        .env("IMMORTAL_CACHE_DIR", spec.work.join("cache"));
    let ran = run(cmd)?;
    ensure!(
        ran.code == Some(0),
        "runner runtime install {runtime} failed: {}",
        ran.stderr
    );
    Ok(Some(PathBuf::from(ran.stdout_text().trim())))
}

/// The runner's code options for the function: its runtime folder, runtime and handler.
fn code_args(cmd: &mut Command, spec: &Spec, runtime_dir: Option<&Path>) {
    if let Some(dir) = runtime_dir {
        cmd.arg("--runtime-dir").arg(dir);
    }
    if let Some(runtime) = &spec.runtime {
        cmd.args(["--runtime", runtime]);
    }
    if let Some(handler) = &spec.handler {
        cmd.args(["--handler", handler]);
    }
}

/// Rehearses `spec` against the emulator at `emulator_url` (an account of its own: the
/// function, its dead-letter queue, a cluster and the destination queues are created),
/// saying each stage in `stages`.
pub async fn rehearse(spec: &Spec, emulator_url: &str, stages: &mut Stages) -> Result<Rehearsed> {
    let runner = workspace_artifact("runner");
    std::fs::create_dir_all(&spec.work)?;
    let forwarder_zip = lambda_zip("dlq-forwarder", &spec.work);
    let runtime_dir = runtime_dir(spec, &runner)?;
    let sdk = crate::emulator::sdk_config(emulator_url).await;
    let name = &spec.name;
    let handler = spec.handler.as_deref().unwrap_or("bootstrap");

    // What the function's stack declares, in the emulator.
    let parking = Queue::create(&sdk, &format!("{name}-parking"), &[], &[]).await;
    let redrive = json!({"deadLetterTargetArn": parking.arn, "maxReceiveCount": "5"}).to_string();
    let dlq = Queue::create(
        &sdk,
        &format!("{name}-dlq"),
        &[("immortal:function", name.as_str())],
        &[
            (QueueAttributeName::RedrivePolicy, redrive.as_str()),
            (QueueAttributeName::VisibilityTimeout, "360"),
        ],
    )
    .await;
    let env: Vec<(&str, &str)> = spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let zip = std::fs::read(&spec.zip).with_context(|| format!("read the function's zip {}", spec.zip.display()))?;
    let function = deploy_as(&sdk, name, &zip, &env, lambda_runtime(spec), handler).await;
    let cluster = Cluster::create(&sdk, name).await;
    let outcomes = Queue::create(&sdk, &format!("{name}-outcomes"), &[], &[]).await;
    let failures = Queue::create(&sdk, &format!("{name}-failures"), &[], &[]).await;
    stages.say(&format!(
        "created in the emulator: function {name} ({}, handler {handler}) from {} (as an S3 object: the emulator serves the code of no other), its dead-letter queue tagged immortal:function, ECS cluster {} with task definition {}, success and failure destination queues",
        spec.runtime.as_deref().unwrap_or("provided.al2023"),
        spec.zip.display(),
        cluster.name,
        cluster.task_definition
    ));

    // 1. Lambda: the invocation, with a short limit, times out.
    let request_id = uuid::Uuid::new_v4().to_string();
    let context = json!({"request_id": request_id, "invoked_function_arn": format!("{}:$LATEST", function.arn)});
    let mut cmd = Command::new(&runner);
    cmd.envs(aws_env(emulator_url))
        .envs(spec.env.iter().cloned())
        .env("IMMORTAL_CACHE_DIR", spec.work.join("cache"));
    cmd.arg("--artifact").arg(&spec.zip);
    code_args(&mut cmd, spec, runtime_dir.as_deref());
    cmd.args(["--event", &spec.event, "--context", &context.to_string()])
        .args(["--timeout", &spec.lambda_timeout.to_string()]);
    let lambda = run(cmd)?;
    match lambda.code {
        Some(5) => {}
        Some(0 | 1) => bail!(
            "the invocation ended within Lambda's {} s (exit {:?}), so nothing overflows: rehearse with a smaller --lambda-timeout. It said:\n{}",
            spec.lambda_timeout,
            lambda.code,
            lambda.stdout_text()
        ),
        other => bail!(
            "the function could not run locally (exit {other:?}); fix that first (runner --artifact ... shows the same):\n{}\n{}",
            lambda.stdout_text(),
            lambda.stderr
        ),
    }
    let timeout: Value = serde_json::from_slice(&lambda.stdout)?;
    stages.say(&format!(
        "Lambda (emulated by the runner, {} s limit) timed out: {timeout}",
        spec.lambda_timeout
    ));

    // 2. Lambda puts the event on the function's dead-letter queue.
    let message_id = dlq
        .send_dead_letter(
            &spec.event,
            &request_id,
            timeout["errorMessage"].as_str().unwrap_or_default(),
        )
        .await;
    stages.say(&format!(
        "dead-letter message {message_id} on {} (body = the event; RequestID, ErrorCode, ErrorMessage attributes)",
        dlq.url
    ));

    // 3. The forwarder, as a Lambda with an SQS trigger.
    let messages = dlq.receive(10, 1).await;
    let sqs_event = dlq.lambda_event(&messages);
    let mut cmd = Command::new(&runner);
    cmd.envs(aws_env(emulator_url))
        .envs(cluster.forwarder_env())
        // Every runtime on the one task definition: the rehearsal's task runs on this
        // machine, with the runtime folder as its /var/runtime.
        .env(
            immortal_handler_sdk::container::TASK_DEFINITIONS_VAR,
            format!("*={}", cluster.task_definition),
        )
        .env("IMMORTAL_CACHE_DIR", spec.work.join("cache"));
    cmd.arg("--artifact")
        .arg(&forwarder_zip)
        .args(["--event", &sqs_event.to_string()]);
    let forwarded = run(cmd)?;
    let response: Value =
        serde_json::from_slice(&forwarded.stdout).with_context(|| format!("forwarder output: {}", forwarded.stderr))?;
    ensure!(
        response == json!({"batchItemFailures": []}),
        "the forwarder did not launch the task: {response}\n{}",
        forwarded.stderr
    );
    dlq.settle(&messages, &response).await;
    let tasks = cluster.tasks().await;
    ensure!(tasks.len() == 1, "expected one task, found {}", tasks.len());
    let overrides = task_env(&tasks[0]);
    stages.say(&format!(
        "forwarder (a Lambda, SQS batch) stored the envelope and a ledger entry in s3://{}, then called ecs:RunTask → {} with overrides {:?} (where the envelope is, never the event); the queue is empty ({} left)",
        cluster.payload_bucket,
        tasks[0].task_arn().unwrap_or_default(),
        overrides.keys().collect::<Vec<_>>(),
        dlq.depth().await
    ));

    // 4. The task: the runner with only the environment the task would have.
    let mut cmd = Command::new(&runner);
    cmd.env_clear()
        .envs(&overrides)
        .envs(aws_env(emulator_url))
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("IMMORTAL_CACHE_DIR", spec.work.join("task-cache"))
        // From the task definition (serverless.yml): where the outcome records go, and
        // the bucket of the envelopes and the ledger.
        .env("IMMORTAL_ON_SUCCESS", &outcomes.url)
        .env("IMMORTAL_ON_FAILURE", &failures.url)
        .env("IMMORTAL_PAYLOAD_BUCKET", &cluster.payload_bucket);
    if let Some(dir) = &runtime_dir {
        // The runner image's /var/runtime.
        cmd.env("IMMORTAL_RUNTIME_DIR", dir);
    }
    let task = run(cmd)?;
    ensure!(
        matches!(task.code, Some(0 | 1)),
        "the task's runner could not run the function (exit {:?}):\n{}\n{}",
        task.code,
        task.stdout_text(),
        task.stderr
    );
    stages.say(&format!(
        "ECS task: the runner fetched the function from Lambda and ran it without a time limit (exit {}):",
        task.code.map_or_else(|| "by a signal".to_owned(), |c| c.to_string())
    ));
    println!(
        "{}",
        log_messages(
            &task.stderr,
            &[
                "function found",
                "downloaded",
                "code ready",
                "event delivered",
                "thumbnail written",
                "response received",
                "error received"
            ]
        )
    );
    let destination = if task.code == Some(0) { &outcomes } else { &failures };
    let received = destination.receive(1, 2).await;
    let record: Value = serde_json::from_str(
        received
            .first()
            .and_then(|m| m.body())
            .context("no outcome record arrived")?,
    )?;
    ensure!(
        record["requestContext"]["requestId"] == request_id.as_str(),
        "the record names another request"
    );
    let entry = cluster
        .ledger_entry(&request_id)
        .await
        .context("no ledger entry for the invocation")?;
    Ok(Rehearsed {
        request_id,
        task,
        record,
        entry,
        payload_bucket: cluster.payload_bucket.clone(),
    })
}
