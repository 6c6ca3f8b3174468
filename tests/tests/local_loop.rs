//! The runner as a developer's local tool: runtime folders made by `runner runtime
//! install` (the runtime interface client, the runtime's SDK, the layers' import paths),
//! functions shaped like AWS's public samples, and the README's recipe as written.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use immortal_tests::emulator::Emulator;
use immortal_tests::queue::Queue;
use immortal_tests::runner::{profile_dir, workspace_artifact, RunnerCmd};
use immortal_tests::zips::{write_zip, Entry};
use serde_json::json;

/// The machine's Python (Debian 12's, and the version Lambda's python3.11 runs).
const PYTHON: &str = "python3.11";
/// The machine's Node.js.
const NODE: &str = "nodejs20.x";
/// The SDK package the Node.js sample imports (as the README's recipe installs it).
const SQS_CLIENT: &str = "@aws-sdk/client-sqs";

/// The code cache the runtime folders live in (their default place), one per build:
/// `runner runtime install` finds them already there after the first test process.
fn shared_cache() -> PathBuf {
    profile_dir().join("local-loop-cache")
}

/// `runner runtime install RUNTIME --with ...` into the shared cache, once per process;
/// the folder.
fn runtime_folder(runtime: &str, with: &[&str]) -> PathBuf {
    static MADE: OnceLock<Mutex<()>> = OnceLock::new();
    let _one_at_a_time = MADE.get_or_init(|| Mutex::new(())).lock().unwrap();
    let mut cmd = Command::new(workspace_artifact("runner"));
    cmd.args(["runtime", "install", runtime])
        .env("IMMORTAL_CACHE_DIR", shared_cache());
    for package in with {
        cmd.args(["--with", package]);
    }
    let out = cmd.output().expect("runner runtime install");
    assert!(
        out.status.success(),
        "runner runtime install {runtime}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(dir, shared_cache().join("runtimes").join(runtime));
    assert!(dir.join("bootstrap").is_file() && dir.join("immortal-runtime.json").is_file());
    dir
}

fn python_folder() -> PathBuf {
    runtime_folder(PYTHON, &[])
}

fn node_folder() -> PathBuf {
    runtime_folder(NODE, &[SQS_CLIENT])
}

/// A function whose dependency is in a layer (both of Lambda's Python layer paths),
/// which writes to S3 with the runtime's boto3, and reports what it ran on.
fn python_sample(dir: &Path) -> (PathBuf, PathBuf) {
    let code = dir.join("fn.zip");
    write_zip(
        &code,
        &[Entry::File(
            "lambda_function.py",
            br#"import os
import boto3
import greeting
import shout

def lambda_handler(event, context):
    text = shout.loud(greeting.TEXT)
    boto3.client("s3").put_object(Bucket=event["bucket"], Key="greeting.txt", Body=text.encode())
    return {
        "text": text,
        "boto3": boto3.__version__,
        "boto3_from": boto3.__file__,
        "greeting_from": greeting.__file__,
        "execution_env": os.environ.get("AWS_EXECUTION_ENV"),
        "wrapped": os.environ.get("WRAPPED_BY"),
    }
"#,
            0o644,
        )],
    );
    let layer = dir.join("deps-layer.zip");
    write_zip(
        &layer,
        &[
            Entry::File("python/greeting.py", b"TEXT = 'hello from a layer'\n", 0o644),
            Entry::File(
                "python/lib/python3.11/site-packages/shout.py",
                b"def loud(s):\n    return s.upper()\n",
                0o644,
            ),
        ],
    );
    (code, layer)
}

#[tokio::test]
async fn a_python_function_gets_its_layers_dependency_and_the_runtimes_boto3() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config().await;
    let bucket = format!("local-loop-{}", immortal_tests::lambda::uuid_like());
    let s3 = immortal_handler_sdk::aws::s3_client(&sdk);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let runtime = python_folder();
    let dir = tempfile::tempdir().unwrap();
    let (code, layer) = python_sample(dir.path());
    // Lambda's wrapper script, as observability layers use it: it gets the runtime's
    // command line and starts it.
    let wrapper = dir.path().join("wrapper");
    std::fs::write(&wrapper, "#!/bin/sh\nexport WRAPPED_BY=wrapper\nexec \"$@\"\n").unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ran = tokio::task::spawn_blocking({
        let (code, layer, wrapper, runtime, bucket) = (
            code.clone(),
            layer.clone(),
            wrapper.clone(),
            runtime.clone(),
            bucket.clone(),
        );
        move || {
            RunnerCmd::new()
                .envs(Emulator::shared().env())
                .args(["--artifact".as_ref(), code.as_os_str()])
                .args(["--layer".as_ref(), layer.as_os_str()])
                .args(["--runtime-dir".as_ref(), runtime.as_os_str()])
                .args(["--handler", "lambda_function.lambda_handler"])
                .args([
                    "--env".to_owned(),
                    format!("AWS_LAMBDA_EXEC_WRAPPER={}", wrapper.display()),
                ])
                .args(["--event", &json!({"bucket": bucket}).to_string()])
                .run()
        }
    })
    .await
    .unwrap();
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["text"], "HELLO FROM A LAYER");
    assert_eq!(
        seen["execution_env"], "AWS_Lambda_python3.11",
        "the folder's runtime, without --runtime"
    );
    assert_eq!(seen["boto3"], "1.43.11", "the runtime folder's pinned boto3");
    assert!(
        seen["boto3_from"]
            .as_str()
            .unwrap()
            .starts_with(runtime.to_str().unwrap()),
        "{seen}"
    );
    assert!(
        seen["greeting_from"].as_str().unwrap().ends_with("/python/greeting.py"),
        "{seen}"
    );
    assert_eq!(
        seen["wrapped"], "wrapper",
        "AWS_LAMBDA_EXEC_WRAPPER started the runtime"
    );
    assert!(
        ran.stderr.contains("INIT_START Runtime Version: python:3.11"),
        "Lambda's first line of an init: {}",
        ran.stderr
    );
    let written = s3
        .get_object()
        .bucket(&bucket)
        .key("greeting.txt")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .to_vec();
    assert_eq!(written, b"HELLO FROM A LAYER");
}

#[tokio::test]
async fn a_nodejs_function_sends_with_the_sdk_from_its_runtime_folder() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config().await;
    let queue = Queue::create(
        &sdk,
        &format!("local-loop-{}", immortal_tests::lambda::uuid_like()),
        &[],
        &[],
    )
    .await;
    let runtime = node_folder();
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("fn.zip");
    // The shape of AWS's SQS sample: the v3 client, which Lambda's nodejs runtimes ship.
    write_zip(
        &code,
        &[Entry::File(
            "index.js",
            br#"const { SQSClient, SendMessageCommand } = require("@aws-sdk/client-sqs");
const sqs = new SQSClient({});
exports.handler = async (event) => {
  const sent = await sqs.send(new SendMessageCommand({ QueueUrl: event.queue, MessageBody: event.body }));
  return { messageId: sent.MessageId, executionEnv: process.env.AWS_EXECUTION_ENV };
};
"#,
            0o644,
        )],
    );
    let ran = tokio::task::spawn_blocking({
        let (code, runtime, url) = (code.clone(), runtime.clone(), queue.url.clone());
        move || {
            RunnerCmd::new()
                .envs(Emulator::shared().env())
                .args(["--artifact".as_ref(), code.as_os_str()])
                .args(["--runtime-dir".as_ref(), runtime.as_os_str()])
                .args(["--handler", "index.handler"])
                .args(["--event", &json!({"queue": url, "body": "sent from node"}).to_string()])
                .run()
        }
    })
    .await
    .unwrap();
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["executionEnv"], "AWS_Lambda_nodejs20.x");
    let received = queue.receive(1, 2).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body(), Some("sent from node"));
    assert_eq!(received[0].message_id(), seen["messageId"].as_str());
}

/// A runtime folder made for one runtime refuses a function of another, naming the
/// command that makes the right one; so does an interpreter that is not the runtime's.
#[test]
fn a_runtime_the_folder_or_the_interpreter_does_not_hold_is_named() {
    let runtime = python_folder();
    let dir = tempfile::tempdir().unwrap();
    let (code, _) = python_sample(dir.path());
    let ran = RunnerCmd::new()
        .args(["--artifact".as_ref(), code.as_os_str()])
        .args(["--runtime-dir".as_ref(), runtime.as_os_str()])
        .args(["--runtime", "python3.14", "--handler", "lambda_function.lambda_handler"])
        .args(["--event", "{}"])
        .run();
    ran.expect_code(3);
    assert!(
        ran.stderr.contains("was made for python3.11") && ran.stderr.contains("`runner runtime install python3.14`"),
        "{}",
        ran.stderr
    );
    // An interpreter of another version: named, with how to get the right one.
    let python3 = which("python3");
    let rt39 = dir.path().join("rt39");
    let ran = RunnerCmd::new()
        .args([
            "runtime".as_ref(),
            "install".as_ref(),
            "python3.9".as_ref(),
            "--dir".as_ref(),
            rt39.as_os_str(),
        ])
        .args(["--interpreter".as_ref(), python3.as_os_str()])
        .run();
    ran.expect_code(3);
    assert!(
        ran.stderr.contains("python3.9 needs Python 3.9") && ran.stderr.contains("is 3.11"),
        "{}",
        ran.stderr
    );
    assert!(!rt39.exists(), "nothing half-made");
    // A runtime it does not make.
    let ran = RunnerCmd::new().args(["runtime", "install", "java21"]).run();
    ran.expect_code(2);
    assert!(ran.stderr.contains("public.ecr.aws/lambda/java:21"), "{}", ran.stderr);
}

fn which(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The recipe block of the README, between `<!-- recipe: local -->` and its fence's end.
fn readme_recipe() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let start = readme
        .find("<!-- recipe: local -->")
        .expect("the README marks its local recipe");
    let block = &readme[start..];
    let body = block.split_once("```sh\n").expect("a sh block").1;
    body.split_once("\n```").expect("its end").0.to_owned()
}

/// The README's local recipe, run as written, in order, with `runner` on PATH: a Python
/// and a Node.js function from nothing to their responses.
#[test]
fn the_readmes_local_recipe_runs_as_written() {
    // The folders it makes, made first so that its installs find them (the same
    // commands, so the same folders).
    python_folder();
    node_folder();
    let recipe = readme_recipe();
    let dir = tempfile::tempdir().unwrap();
    let bin = workspace_artifact("runner");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .args(["-ec", &recipe])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("IMMORTAL_CACHE_DIR", shared_cache())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the recipe failed:\n{recipe}\n{stdout}\n{stderr}");
    // Through a pipe a response ends without a newline (the runner writes it as the
    // function returned it), so the next command's output may follow on its line.
    let responses: Vec<serde_json::Value> = stdout
        .match_indices("{\"hello\"")
        .filter_map(|(at, _)| {
            serde_json::Deserializer::from_str(&stdout[at..])
                .into_iter::<serde_json::Value>()
                .next()?
                .ok()
        })
        .collect();
    assert_eq!(responses.len(), 2, "one response per function: {stdout}");
    assert_eq!(responses[0]["hello"], "world", "{stdout}");
    assert_eq!(responses[0]["boto3"], "1.43.11", "{stdout}");
    assert_eq!(responses[1]["hello"], "world", "{stdout}");
    assert_eq!(responses[1]["sdk"], "function", "{stdout}");
}

/// One command for the whole overflow path of a zip: `scripts/rehearse`'s binary, as a
/// developer runs it, on a Python function that outlives the rehearsal's Lambda limit.
#[test]
fn a_zip_is_rehearsed_through_the_whole_overflow_path_with_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("slow.zip");
    write_zip(
        &code,
        &[Entry::File(
            "lambda_function.py",
            b"import time\n\ndef lambda_handler(event, context):\n    time.sleep(1.5)\n    return {\"sum\": sum(event[\"numbers\"])}\n",
            0o644,
        )],
    );
    // Where its user is, with the zip's path as they would type it.
    let out = Command::new(workspace_artifact("rehearse"))
        .current_dir(dir.path())
        .arg("slow.zip")
        .args(["--runtime", PYTHON, "--handler", "lambda_function.lambda_handler"])
        .args(["--event", r#"{"numbers": [1, 2, 3]}"#, "--name", "rehearsed-sum"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for stage in [
        "timed out",
        "dead-letter message",
        "called ecs:RunTask",
        "ran it without a time limit (exit 0)",
        r#"the function's answer in the task: {"sum": 6}"#,
        r#""responsePayload":{"sum":6}"#,
        r#"state "succeeded", attempt 1"#,
    ] {
        assert!(stdout.contains(stage), "no `{stage}` in:\n{stdout}");
    }
}

/// `Max Memory Used` is the peak of the runtime's processes even when the run ends
/// sooner than the once-a-second sample: the runtime is measured as it answers.
#[test]
fn max_memory_used_is_the_runs_peak_however_short_the_run() {
    let runtime = python_folder();
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("fn.zip");
    write_zip(
        &code,
        &[Entry::File(
            "lambda_function.py",
            b"def lambda_handler(event, context):\n    block = b'x' * (150 * 1024 * 1024)\n    return len(block)\n",
            0o644,
        )],
    );
    let ran = RunnerCmd::new()
        .args(["--artifact".as_ref(), code.as_os_str()])
        .args(["--runtime-dir".as_ref(), runtime.as_os_str()])
        .args(["--handler", "lambda_function.lambda_handler", "--event", "{}"])
        .run();
    ran.expect_code(0);
    let used: u64 = ran
        .stderr
        .split("Max Memory Used: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a REPORT line: {}", ran.stderr));
    assert!(used >= 150, "the 150 MB block counts: {used} MB");
}
