//! The main job: a timed-out thumbnail invocation overflowing into the runner, the whole
//! chain on this machine against the local AWS emulator. `scripts/demo` runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use aws_sdk_sqs::types::QueueAttributeName;
use immortal_tests::ecs::{task_env, Cluster};
use immortal_tests::emulator::{aws_env, sdk_config, Emulator, ACCOUNT, REGION};
use immortal_tests::lambda::deploy;
use immortal_tests::queue::Queue;
use immortal_tests::runner::{lambda_zip, workspace_artifact};
use immortal_tests::video::{pixels, png_size, reference_png, s3_event};
use serde_json::{json, Value};

const FUNCTION: &str = "immortal-demo-thumbnail";
const KEY: &str = "videos/holiday_00-29.mp4";

struct Stages {
    started: Instant,
    n: usize,
}

impl Stages {
    fn say(&mut self, what: &str) {
        self.n += 1;
        println!(
            "[{:>2}] {:>6.1} s  {what}",
            self.n,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// What a child process did.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(mut cmd: Command) -> Result<Ran> {
    let out = cmd.stdin(Stdio::null()).output().context("start a child process")?;
    Ok(Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The `message` fields of the runner's JSON log lines, indented.
fn log_messages(stderr: &str, keep: &[&str]) -> String {
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

fn sample_video(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("sample-1080p-longgop.mp4");
    if path.is_file() {
        return Ok(path);
    }
    // 30 s of 1080p in a single GOP: the frame at 00:29 needs seconds of decoding, far
    // more than the 1-second Lambda limit the demo sets.
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=duration=30:size=1920x1080:rate=30",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "900",
            "-keyint_min",
            "900",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&path)
        .status()
        .context("run ffmpeg")?;
    ensure!(status.success(), "ffmpeg could not make the sample video");
    Ok(path)
}

#[tokio::main]
async fn main() -> Result<()> {
    let out_dir = std::env::current_dir()?.join("target/demo");
    std::fs::create_dir_all(&out_dir)?;
    let mut stages = Stages {
        started: Instant::now(),
        n: 0,
    };
    println!("immortal demo: a Lambda invocation that times out finishes in the runner\n");

    let runner = workspace_artifact("runner");
    let zips = tempfile::tempdir()?;
    let thumbnail_zip = lambda_zip("thumbnail", zips.path());
    let forwarder_zip = lambda_zip("dlq-forwarder", zips.path());
    let video = sample_video(&out_dir)?;
    stages.say(&format!(
        "built: runner, thumbnail and forwarder bootstraps (zips); sample video {}",
        video.display()
    ));

    let emulator = Emulator::start();
    let sdk = sdk_config(&emulator.url).await;
    stages.say(&format!("local AWS emulator (moto) listening at {}", emulator.url));

    // What serverless.yml declares, created in the emulator.
    let s3 = immortal_handler_sdk::aws::s3_client(&sdk);
    let uploads = "immortal-demo-uploads";
    s3.create_bucket().bucket(uploads).send().await?;
    let parking = Queue::create(&sdk, "immortal-demo-parking", &[], &[]).await;
    let redrive = json!({"deadLetterTargetArn": parking.arn, "maxReceiveCount": "5"}).to_string();
    let dlq = Queue::create(
        &sdk,
        "immortal-demo-thumbnail-dlq",
        &[("immortal:function", FUNCTION)],
        &[
            (QueueAttributeName::RedrivePolicy, redrive.as_str()),
            (QueueAttributeName::VisibilityTimeout, "360"),
        ],
    )
    .await;
    let function = deploy(
        &sdk,
        FUNCTION,
        &std::fs::read(&thumbnail_zip)?,
        &[("THUMBNAIL_PREFIX", "thumbnails/")],
    )
    .await;
    let cluster = Cluster::create(&sdk, "immortal-demo").await;
    let outcomes = Queue::create(&sdk, "immortal-demo-thumbnail-outcomes", &[], &[]).await;
    stages.say(&format!(
        "created what serverless.yml declares: bucket {uploads}, function {FUNCTION} (from the thumbnail zip), its dead-letter queue tagged immortal:function (redrive to a parking queue), ECS cluster {} with task definition {}",
        cluster.name, cluster.task_definition
    ));

    let body = std::fs::read(&video)?;
    let size = body.len() as u64;
    s3.put_object()
        .bucket(uploads)
        .key(KEY)
        .body(body.into())
        .send()
        .await?;
    let event = s3_event(uploads, KEY, size);
    stages.say(&format!(
        "uploaded s3://{uploads}/{KEY} ({:.1} MB): the key asks for the frame at 00:29",
        size as f64 / 1e6
    ));

    // 1. Lambda: the function, with a 1-second limit, times out.
    let request_id = uuid::Uuid::new_v4().to_string();
    let context = json!({"request_id": request_id, "invoked_function_arn": format!("{}:$LATEST", function.arn)});
    let mut cmd = Command::new(&runner);
    cmd.envs(aws_env(&emulator.url))
        .env("THUMBNAIL_PREFIX", "thumbnails/")
        .env("IMMORTAL_CACHE_DIR", out_dir.join("cache"));
    cmd.args(["--artifact".as_ref(), thumbnail_zip.as_os_str()]).args([
        "--event",
        &event.to_string(),
        "--context",
        &context.to_string(),
        "--timeout",
        "1",
    ]);
    let lambda = run(cmd)?;
    if lambda.code != Some(5) {
        bail!(
            "expected the 1-second invocation to time out (exit 5), got {:?}:\n{}\n{}",
            lambda.code,
            lambda.stdout,
            lambda.stderr
        );
    }
    let timeout: Value = serde_json::from_str(&lambda.stdout)?;
    stages.say(&format!(
        "Lambda (emulated by the runner, 1 s limit) timed out: {timeout}"
    ));

    // 2. Lambda puts the event on the function's dead-letter queue.
    let message_id = dlq
        .send_dead_letter(
            &event.to_string(),
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
    cmd.envs(aws_env(&emulator.url))
        .envs(cluster.forwarder_env())
        .env("IMMORTAL_CACHE_DIR", out_dir.join("cache"));
    cmd.args([
        "--artifact".as_ref(),
        forwarder_zip.as_os_str(),
        "--event".as_ref(),
        sqs_event.to_string().as_ref(),
    ]);
    let forwarded = run(cmd)?;
    let response: Value =
        serde_json::from_str(&forwarded.stdout).with_context(|| format!("forwarder output: {}", forwarded.stderr))?;
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
        .envs(aws_env(&emulator.url))
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("IMMORTAL_CACHE_DIR", out_dir.join("task-cache"))
        // From the task definition (serverless.yml): where the outcome record goes, and
        // the bucket of the envelopes and the ledger.
        .env("IMMORTAL_ON_SUCCESS", &outcomes.url)
        .env("IMMORTAL_PAYLOAD_BUCKET", &cluster.payload_bucket);
    let task = run(cmd)?;
    if task.code != Some(0) {
        bail!(
            "the runner failed (exit {:?}):\n{}\n{}",
            task.code,
            task.stdout,
            task.stderr
        );
    }
    stages.say("ECS task: the runner fetched the function from Lambda and ran it without a time limit:");
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
                "response received"
            ]
        )
    );
    let response: Value = serde_json::from_str(&task.stdout)?;
    let written = &response["thumbnails"][0];
    let (bucket, key) = (
        written["bucket"].as_str().unwrap_or_default(),
        written["key"].as_str().unwrap_or_default(),
    );
    let png = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await?
        .body
        .collect()
        .await?
        .to_vec();
    let saved = out_dir.join("thumbnail.png");
    std::fs::write(&saved, &png)?;
    let (w, h) = png_size(&png);
    let expected = reference_png(&video, 29.0);
    ensure!(
        pixels(&png) == pixels(&expected),
        "the thumbnail is not the frame ffmpeg -ss 29 gives"
    );
    stages.say(&format!("thumbnail at s3://{bucket}/{key} ({w}x{h}, {} bytes, frame at {}), saved to {}; its pixels equal ffmpeg -ss 29's frame", png.len(), written["position"], saved.display()));
    let received = outcomes.receive(1, 2).await;
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
    let mut shown = record.clone();
    shown["requestPayload"] = json!("(the S3 event, unchanged)");
    stages.say(&format!(
        "the success record on {} (Lambda's destination format):",
        outcomes.url
    ));
    let pretty = serde_json::to_string_pretty(&shown)?;
    println!(
        "{}",
        pretty
            .lines()
            .map(|l| format!("         {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let entry = cluster
        .ledger_entry(&request_id)
        .await
        .context("no ledger entry for the invocation")?;
    ensure!(entry["state"] == "succeeded", "the ledger says {entry}");
    stages.say(&format!(
        "the ledger (s3://{}/ledger/{request_id}.json): state {}, attempt {}: nothing left to relaunch",
        cluster.payload_bucket, entry["state"], entry["attempt"]
    ));
    println!(
        "\nrequest {request_id}: timed out in Lambda, finished in the runner. Account {ACCOUNT}, region {REGION}."
    );
    Ok(())
}
