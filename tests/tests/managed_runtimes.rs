//! Functions on managed runtimes (Python, Node.js) run unmodified: no bootstrap in their
//! zip, the runtime's own from a runtime directory (made, as in AWS's base images, from
//! the real runtime interface clients: `awslambdaric` and `aws-lambda-ric`).

use std::path::{Path, PathBuf};

use aws_sdk_lambda::types::Runtime;
use immortal_tests::ecs::{task_env, Cluster};
use immortal_tests::emulator::Emulator;
use immortal_tests::hand_off::drained_to_hand_off;
use immortal_tests::lambda::{deploy_as, uuid_like};
use immortal_tests::queue::Queue;
use immortal_tests::runner::{Ran, RunnerCmd};
use immortal_tests::zips::folder_zip;
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The runtime directory for `family` (`python` or `nodejs`).
fn runtime_dir(family: &str) -> PathBuf {
    fixtures().join("runtimes").join(family)
}

/// A zip of `files` from the fixture function `name`, written into `dir`.
fn function_zip(dir: &Path, name: &str, files: &[&str]) -> PathBuf {
    let zip = dir.join(format!("{name}.zip"));
    std::fs::write(&zip, folder_zip(&fixtures().join("functions").join(name), files)).unwrap();
    zip
}

const CONTEXT: &str =
    r#"{"request_id":"rt-1","invoked_function_arn":"arn:aws:lambda:us-east-1:123456789012:function:managed:4"}"#;
const TWENTY_DAYS_MS: i64 = 20 * 24 * 3600 * 1000;

/// The runner on local code with a runtime directory.
fn local(zip: &Path, family: &str, runtime: &str, handler: &str) -> RunnerCmd {
    RunnerCmd::new()
        .args(["--artifact".as_ref(), zip.as_os_str()])
        .args(["--runtime-dir".as_ref(), runtime_dir(family).as_os_str()])
        .args(["--runtime", runtime, "--handler", handler])
        .args(["--event", r#"{"name":"world"}"#, "--context", CONTEXT])
}

async fn run(cmd: RunnerCmd) -> Ran {
    tokio::task::spawn_blocking(move || cmd.run()).await.unwrap()
}

#[test]
fn a_python_handler_alone_in_its_zip_runs_on_the_runtimes_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let zip = function_zip(dir.path(), "python", &["lambda_function.py"]);
    let ran = local(&zip, "python", "python3.12", "lambda_function.lambda_handler")
        .env("GREETING", "hi")
        .run();
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["event"], json!({"name": "world"}));
    assert_eq!(seen["request_id"], "rt-1", "the original request id");
    assert_eq!(seen["function_name"], "managed");
    assert_eq!(
        seen["invoked_function_arn"],
        "arn:aws:lambda:us-east-1:123456789012:function:managed:4"
    );
    assert!(seen["remaining_ms"].as_i64().unwrap() > TWENTY_DAYS_MS, "{seen}");
    assert_eq!(seen["helper"], Value::Null);
    let env = &seen["env"];
    assert_eq!(env["GREETING"], "hi", "its own variables");
    assert_eq!(env["AWS_EXECUTION_ENV"], "AWS_Lambda_python3.12");
    assert_eq!(env["_HANDLER"], "lambda_function.lambda_handler");
    assert_eq!(env["LAMBDA_RUNTIME_DIR"], runtime_dir("python").display().to_string());
    assert_ne!(env["LAMBDA_TASK_ROOT"], env["LAMBDA_RUNTIME_DIR"]);
    assert_eq!(seen["task_root_listing"], json!(["lambda_function.py"]));
    assert!(
        ran.stderr.contains("handling rt-1"),
        "the handler's print reaches the logs"
    );

    let zip = function_zip(dir.path(), "python", &["lambda_function.py", "helper.py"]);
    let ran = local(&zip, "python", "python3.12", "lambda_function.lambda_handler").run();
    ran.expect_code(0);
    assert_eq!(
        ran.json()["helper"],
        "beside the handler",
        "imports a module packaged beside it"
    );
}

#[test]
fn relative_paths_on_the_command_line_are_the_callers_not_the_task_roots() {
    // The bootstrap runs in the task root: a relative runtime directory or cache handed
    // on as given would name something else there.
    let dir = tempfile::tempdir().unwrap();
    let zip = function_zip(dir.path(), "python", &["lambda_function.py"]);
    std::os::unix::fs::symlink(runtime_dir("python"), dir.path().join("rt")).unwrap();
    let ran = RunnerCmd::new()
        .current_dir(dir.path())
        .args(["--artifact".as_ref(), zip.file_name().unwrap()])
        .args(["--runtime-dir", "rt", "--cache-dir", "cache"])
        .args(["--runtime", "python3.12", "--handler", "lambda_function.lambda_handler"])
        .args(["--event", r#"{"name":"world"}"#, "--context", CONTEXT])
        .run();
    ran.expect_code(0);
    let env = &ran.json()["env"];
    assert_eq!(env["LAMBDA_RUNTIME_DIR"], dir.path().join("rt").display().to_string());
    let task_root = env["LAMBDA_TASK_ROOT"].as_str().unwrap();
    assert!(
        task_root.starts_with(&dir.path().join("cache").display().to_string()),
        "{task_root}"
    );
}

#[test]
fn node_handlers_commonjs_es_modules_and_bundles_run_on_the_runtimes_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], &str); 3] = [
        ("node-cjs", &["index.js", "lib/greeting.js"], "commonjs-callback"),
        ("node-esm", &["index.mjs", "greeting.mjs"], "esm-async"),
        ("node-bundle", &["index.js"], "bundle"),
    ];
    for (name, files, style) in cases {
        let zip = function_zip(dir.path(), name, files);
        let ran = local(&zip, "nodejs", "nodejs20.x", "index.handler")
            .env("GREETING", "hi")
            .run();
        ran.expect_code(0);
        let seen = ran.json();
        assert_eq!(seen["style"], style, "{name}");
        assert_eq!(seen["request_id"], "rt-1", "{name}");
        assert!(
            seen["remaining_ms"].as_i64().unwrap() > TWENTY_DAYS_MS,
            "{name}: {seen}"
        );
        let greeting = seen["greeting"].as_str().unwrap().to_ascii_lowercase();
        assert!(greeting.starts_with("hello, world"), "{name}: {seen}");
        if name == "node-cjs" {
            assert_eq!(seen["function_name"], "managed");
            assert_eq!(seen["greeting_env"], "hi");
            assert_eq!(seen["execution_env"], "AWS_Lambda_nodejs20.x");
        }
    }
}

#[test]
fn the_task_root_is_a_real_folder_at_a_fixed_path_as_var_task_is_in_lambda() {
    let dir = tempfile::tempdir().unwrap();
    let zip = function_zip(dir.path(), "python", &["lambda_function.py", "helper.py"]);
    // As in the image: /var/task, a folder the runner owns (created here when missing).
    let task = dir.path().join("var-task");
    let ran = local(&zip, "python", "python3.12", "lambda_function.lambda_handler")
        .args(["--task-root".as_ref(), task.as_os_str()])
        .run();
    ran.expect_code(0);
    let seen = ran.json();
    let task_path = task.display().to_string();
    assert_eq!(seen["env"]["LAMBDA_TASK_ROOT"], task_path);
    assert_eq!(seen["task_root_listing"], json!(["helper.py", "lambda_function.py"]));
    // getcwd() and __file__ answer the task root, not the cache (a link would not do).
    assert_eq!(seen["cwd"], task_path);
    assert_eq!(seen["file"], format!("{task_path}/lambda_function.py"));

    // Another function's code replaces the first one's entirely.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let zip = function_zip(&other, "python", &["lambda_function.py"]);
    let ran = local(&zip, "python", "python3.12", "lambda_function.lambda_handler")
        .args(["--task-root".as_ref(), task.as_os_str()])
        .run();
    ran.expect_code(0);
    assert_eq!(ran.json()["task_root_listing"], json!(["lambda_function.py"]));

    let link = dir.path().join("a-link");
    std::os::unix::fs::symlink(&task, &link).unwrap();
    let ran = local(&zip, "python", "python3.12", "lambda_function.lambda_handler")
        .args(["--task-root".as_ref(), link.as_os_str()])
        .run();
    ran.expect_code(3);
    assert!(
        ran.stderr.contains("not a folder the runner can fill"),
        "{}",
        ran.stderr
    );
}

#[test]
fn code_without_a_bootstrap_and_no_runtime_directory_is_exit_3_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let zip = function_zip(dir.path(), "python", &["lambda_function.py"]);
    let ran = RunnerCmd::new()
        .args(["--artifact".as_ref(), zip.as_os_str()])
        .args(["--runtime-dir".as_ref(), dir.path().join("no-runtime").as_os_str()])
        .args(["--runtime", "python3.12", "--event", "{}"])
        .run();
    ran.expect_code(3);
    assert!(ran.stdout.is_empty());
    for needle in [
        "no `bootstrap` in",
        "python3.12",
        "public.ecr.aws/lambda/python:3.12",
        "--runtime-dir",
    ] {
        assert!(ran.stderr.contains(needle), "{needle}: {}", ran.stderr);
    }
}

/// A Python function in the emulator, its dead-letter queue, and a cluster with a
/// runner task definition for python3.12 besides the custom-runtime one.
struct PythonSetup {
    cluster: Cluster,
    queue: Queue,
    function: String,
    python_task_definition: String,
}

async fn python_setup(runtime: Runtime) -> PythonSetup {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let function = format!("py-{id}");
    let zip = folder_zip(
        &fixtures().join("functions/python"),
        &["lambda_function.py", "helper.py"],
    );
    deploy_as(
        &sdk,
        &function,
        &zip,
        &[("GREETING", "from its configuration")],
        runtime,
        "lambda_function.lambda_handler",
    )
    .await;
    let cluster = Cluster::create(&sdk, &format!("c-{id}")).await;
    let python_task_definition = format!("c-{id}-python312");
    cluster.register_task_definition(&python_task_definition).await;
    let queue = Queue::create(&sdk, &format!("dlq-{id}"), &[("immortal:function", &function)], &[]).await;
    PythonSetup {
        cluster,
        queue,
        function,
        python_task_definition,
    }
}

/// The forwarder on the queue's messages, with the Python task definition mapped.
async fn forward(setup: &PythonSetup, extra: &[(&'static str, String)]) -> Ran {
    let messages = setup.queue.receive(10, 1).await;
    let cmd = RunnerCmd::lambda("dlq-forwarder", &setup.queue.lambda_event(&messages).to_string())
        .envs(Emulator::shared().env())
        .envs(setup.cluster.forwarder_env())
        .env(
            "IMMORTAL_TASK_DEFINITIONS",
            format!("python3.12={}", setup.python_task_definition),
        )
        .envs(extra.iter().cloned());
    let ran = run(cmd).await;
    // As Lambda's event source mapping: delete what succeeded; what failed is seen again
    // (at once here, instead of after the visibility timeout).
    let failed = setup.queue.settle(&messages, &ran.json()).await;
    setup.queue.release(&messages, &failed).await;
    ran
}

#[tokio::test]
async fn a_python312_function_overflows_end_to_end_on_the_python_task_definition() {
    let setup = python_setup(Runtime::Python312).await;
    setup
        .queue
        .send_dead_letter(r#"{"name":"world"}"#, "req-py", "Task timed out after 3.00 seconds")
        .await;
    let ran = forward(&setup, &[]).await;
    assert_eq!(ran.json(), json!({"batchItemFailures": []}), "{}", ran.stderr);
    let tasks = setup.cluster.tasks().await;
    assert_eq!(tasks.len(), 1);
    let definition = tasks[0].task_definition_arn().unwrap();
    assert!(
        definition.contains(&format!(":task-definition/{}:", setup.python_task_definition)),
        "the Python runner was started: {definition}"
    );

    // The runner as that task runs it: the task's environment, the image's settings.
    let sdk = Emulator::shared().sdk_config().await;
    let success = Queue::create(&sdk, &format!("success-{}", uuid_like()), &[], &[]).await;
    let cmd = RunnerCmd::new()
        .envs(Emulator::shared().env())
        .envs(task_env(&tasks[0]).into_iter().map(|(k, v)| (leak(k), v)))
        .env("IMMORTAL_RUNTIME_DIR", runtime_dir("python"))
        .env("IMMORTAL_IMAGE_RUNTIME", "python3.12")
        .env("IMMORTAL_ON_SUCCESS", &success.url);
    let ran = run(cmd).await;
    ran.expect_code(0);
    let messages = success.receive(10, 2).await;
    assert_eq!(messages.len(), 1, "one success record");
    let record: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["requestId"], "req-py");
    assert_eq!(record["requestContext"]["condition"], "Success");
    let response = &record["responsePayload"];
    assert_eq!(response["request_id"], "req-py");
    assert_eq!(response["function_name"], setup.function);
    assert_eq!(response["helper"], "beside the handler");
    assert_eq!(response["env"]["GREETING"], "from its configuration");
    assert_eq!(response["env"]["AWS_EXECUTION_ENV"], "AWS_Lambda_python3.12");
    assert_eq!(response["env"]["_HANDLER"], "lambda_function.lambda_handler");
}

#[tokio::test]
async fn a_runtime_without_a_task_definition_is_passed_on_with_the_reason_or_kept() {
    let setup = python_setup(Runtime::Python313).await;
    let message_id = setup
        .queue
        .send_dead_letter("{}", "req-313", "Task timed out after 3.00 seconds")
        .await;
    // No failure destination: the message stays queued (and is parked in time).
    let ran = forward(&setup, &[]).await;
    assert_eq!(
        ran.json(),
        json!({"batchItemFailures": [{"itemIdentifier": message_id}]}),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("no runner task definition runs python3.13"),
        "{}",
        ran.stderr
    );
    assert!(
        setup.cluster.tasks().await.is_empty(),
        "not launched where it cannot run"
    );

    // With one, the record goes there with the reason and the message leaves.
    let sdk = Emulator::shared().sdk_config().await;
    let failures = Queue::create(&sdk, &format!("failures-{}", uuid_like()), &[], &[]).await;
    let again = forward(&setup, &[("IMMORTAL_ON_FAILURE", failures.url.clone())]).await;
    assert_eq!(again.json(), json!({"batchItemFailures": []}), "{}", again.stderr);
    let records = failures.receive(10, 2).await;
    assert_eq!(records.len(), 1);
    let record: Value = serde_json::from_str(records[0].body().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["requestId"], "req-313");
    let reason = record["immortal"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("python3.13") && reason.contains("IMMORTAL_TASK_DEFINITIONS"),
        "{reason}"
    );
    assert!(setup.cluster.tasks().await.is_empty());
}

#[tokio::test]
async fn a_function_of_another_runtime_than_the_image_is_exit_3_naming_the_image() {
    let setup = python_setup(Runtime::Python313).await;
    let context = json!({"request_id": "req-wrong", "invoked_function_arn": format!("arn:aws:lambda:us-east-1:123456789012:function:{}", setup.function)});
    let cmd = RunnerCmd::new()
        .envs(Emulator::shared().env())
        .args(["--event", "{}", "--context", &context.to_string()])
        .env("IMMORTAL_RUNTIME_DIR", runtime_dir("python"))
        .env("IMMORTAL_IMAGE_RUNTIME", "python3.12");
    let ran = run(cmd).await;
    ran.expect_code(3);
    for needle in ["python3.13", "python3.12", "public.ecr.aws/lambda/python:3.13"] {
        assert!(ran.stderr.contains(needle), "{needle}: {}", ran.stderr);
    }
}

/// Task environment names as the `'static` keys `RunnerCmd::envs` takes.
fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

/// A drain worker runs the runtime of its image only. Given the record of a Python
/// function on a custom-runtime worker, it hands the record on (the message as it came,
/// naming its function) to the hand-off queue instead of failing it, and deletes it only
/// then; the forwarder launches it from there on the Python task definition, one task,
/// with the original event and request id.
#[tokio::test]
async fn a_drain_worker_hands_a_record_its_image_cannot_run_to_a_task_of_the_right_image() {
    let setup = python_setup(Runtime::Python312).await;
    let (hand_off, messages) = drained_to_hand_off(&setup.queue, "req-hand").await;
    let named = messages[0].message_attributes().unwrap()["ImmortalFunction"]
        .string_value()
        .unwrap()
        .to_owned();
    assert!(named.ends_with(&format!(":function:{}", setup.function)), "{named}");
    let definitions = format!("python3.12={}", setup.python_task_definition);
    setup
        .cluster
        .forward_all(&hand_off, &messages, &[("IMMORTAL_TASK_DEFINITIONS", definitions)])
        .await;
    let tasks = setup.cluster.tasks().await;
    assert_eq!(tasks.len(), 1, "one task");
    assert!(
        tasks[0]
            .task_definition_arn()
            .unwrap()
            .contains(&setup.python_task_definition),
        "on the Python task definition"
    );
    let envelope = setup.cluster.task_envelope(&tasks[0]).await;
    assert_eq!(envelope["context"]["request_id"], "req-hand");
    assert_eq!(envelope["event"], json!({"name": "handed"}));
}

/// Mistakes a developer makes locally, named instead of failing somewhere deeper: a
/// managed runtime without --handler (the runtime client would say `Bad handler
/// 'bootstrap'`), and context fields spelt as another tool spells them.
#[test]
fn a_missing_handler_and_misspelt_context_fields_are_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, family, runtime, files, example) in [
        (
            "python",
            "python",
            "python3.12",
            ["lambda_function.py"],
            "--handler lambda_function.lambda_handler",
        ),
        (
            "node-esm",
            "nodejs",
            "nodejs22.x",
            ["index.mjs"],
            "--handler index.handler",
        ),
    ] {
        let zip = function_zip(dir.path(), fixture, &files);
        let ran = RunnerCmd::new()
            .args(["--artifact".as_ref(), zip.as_os_str()])
            .args(["--runtime-dir".as_ref(), runtime_dir(family).as_os_str()])
            .args(["--runtime", runtime, "--event", "{}"])
            .run();
        ran.expect_code(2);
        assert!(
            ran.stderr.contains(&format!("--runtime {runtime} runs a handler")) && ran.stderr.contains(example),
            "{}",
            ran.stderr
        );
    }
    let zip = function_zip(dir.path(), "python", &["lambda_function.py"]);
    let ran = RunnerCmd::new()
        .args(["--artifact".as_ref(), zip.as_os_str()])
        .args(["--runtime-dir".as_ref(), runtime_dir("python").as_os_str()])
        .args(["--runtime", "python3.12", "--handler", "lambda_function.lambda_handler"])
        .args([
            "--event",
            "{}",
            "--context",
            r#"{"aws_request_id":"ctx-1","functionName":"f","colour":"blue"}"#,
        ])
        .run();
    ran.expect_code(0);
    for needle in [
        "`aws_request_id` is not one the runner reads: did you mean `request_id`?",
        "`functionName` is not one the runner reads: did you mean `function_name`?",
        "`colour` is not one the runner reads (it is passed on unread); it reads request_id,",
    ] {
        assert!(ran.stderr.contains(needle), "{needle}: {}", ran.stderr);
    }
}
