//! The container stage: the runner image, built from the project's own Dockerfile on a
//! stand-in base, run as Fargate runs a task's container (see `container`): the entry
//! point as PID 1, the image's USER, Fargate's default capabilities, the local AWS
//! emulator over the host's network. What the image does is proven here.

use std::path::Path;
use std::time::Duration;

use aws_sdk_lambda::types::Runtime;
use aws_sdk_sqs::types::QueueAttributeName;
use immortal_tests::container::{Container, Image};
use immortal_tests::ecs::{task_env, Cluster};
use immortal_tests::emulator::Emulator;
use immortal_tests::image_user::assert_function_user;
use immortal_tests::lambda::{context_for, deploy, deploy_as, deploy_with_role, uuid_like};
use immortal_tests::queue::{timeout_record, Queue, EMULATOR_SENDER};
use immortal_tests::runner::{fixture, Ran};
use immortal_tests::zips::{bootstrap_zip_bytes, folder_zip};
use serde_json::{json, Value};

/// Where the image shows the function its code, as Lambda does.
const TASK_ROOT: &str = "/var/task";

async fn run(container: Container) -> Ran {
    tokio::task::spawn_blocking(move || container.run()).await.unwrap()
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A folder the container's users may read and write (the test's files, the
/// fixtures' pid files and markers).
fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// A function `name` (a fixture's zip) with a dead-letter queue bound to it, relaunched
/// by the forwarder into `cluster`; returns the started task's environment overrides.
async fn relaunched(cluster: &Cluster, name: &str, event: &Value, request_id: &str) -> Vec<(String, String)> {
    let sdk = Emulator::shared().sdk_config().await;
    let dlq = Queue::create(&sdk, &format!("{name}-dlq"), &[("immortal:function", name)], &[]).await;
    dlq.send_dead_letter(&event.to_string(), request_id, "Task timed out after 3.00 seconds")
        .await;
    let messages = dlq.receive(10, 2).await;
    assert_eq!(messages.len(), 1);
    cluster.forward_all(&dlq, &messages, &[]).await;
    let tasks = cluster.tasks().await;
    assert_eq!(tasks.len(), 1, "one task");
    task_env(&tasks[0]).into_iter().collect()
}

/// The runner container as the stack's task definition sets it up, plus a task's
/// overrides.
fn task_container(image: Image, cluster: &Cluster, overrides: Vec<(String, String)>) -> Container {
    Container::new(image)
        .envs(Emulator::shared().env())
        .env("IMMORTAL_PAYLOAD_BUCKET", &cluster.payload_bucket)
        .envs(overrides)
}

/// A drain worker of the custom-runtime image on `queue`, its outcomes to `outcomes`,
/// done after 3 idle seconds.
fn drain_worker(queue: &Queue, outcomes: &Queue) -> Container {
    Container::new(Image::Provided)
        .envs(Emulator::shared().env())
        .env("IMMORTAL_FUNCTION_LOGS", "stderr")
        .env("IMMORTAL_QUEUE_URL", &queue.url)
        .env("IMMORTAL_ON_SUCCESS", &outcomes.url)
        .env("IMMORTAL_TRUSTED_SENDERS", EMULATOR_SENDER)
        .env("IMMORTAL_IDLE_TIMEOUT", "3")
}

/// The function's own log lines in CloudWatch Logs.
async fn log_lines(sdk: &aws_config::SdkConfig, group: &str) -> Vec<String> {
    let page = aws_sdk_cloudwatchlogs::Client::new(sdk)
        .filter_log_events()
        .log_group_name(group)
        .send()
        .await
        .expect("the function's own log group exists");
    page.events()
        .iter()
        .filter_map(|e| e.message().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn local_code_runs_in_the_image_as_a_function_user_in_var_task() {
    let work = shared_dir();
    std::fs::write(
        work.path().join("inspect.zip"),
        bootstrap_zip_bytes(&fixture("inspect")),
    )
    .unwrap();
    let ran = run(Container::new(Image::Provided)
        .envs(Emulator::shared().env())
        .env("IMMORTAL_FUNCTION_LOGS", "stderr")
        // Local code has no configuration to name a role: run as the caller, as documented.
        .env("IMMORTAL_FUNCTION_ROLE", "inherit")
        .mount(work.path(), "/work")
        .args(["--artifact", "/work/inspect.zip", "--event", "{}"])
        .args(["--context", &context_for("inspect", "req-local-image")]))
    .await;
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["request_id"], "req-local-image");
    assert_function_user(&seen);
    assert_eq!(seen["env"]["LAMBDA_TASK_ROOT"], TASK_ROOT);
    assert_eq!(
        seen["cwd"], TASK_ROOT,
        "the working directory is the task root, as in Lambda"
    );
    assert!(
        seen["task_root_write"].as_str().unwrap().starts_with("refused"),
        "the code is read-only to the function: {}",
        seen["task_root_write"]
    );
}

#[tokio::test]
async fn a_relaunched_task_runs_its_function_as_itself_and_records_the_outcome() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config().await;
    let id = uuid_like();
    let (name, role_name) = (format!("img-self-{id}"), format!("img-role-{id}"));
    let zip = bootstrap_zip_bytes(&fixture("inspect"));
    deploy_with_role(&sdk, &name, &zip, &[("FROM_CONFIG", "yes")], &role_name).await;
    let cluster = Cluster::create(&sdk, &format!("img-{id}")).await;
    let success = Queue::create(&sdk, &format!("img-ok-{id}"), &[], &[]).await;
    let overrides = relaunched(&cluster, &name, &json!({"whoami": true}), "req-img-task").await;
    assert!(
        overrides.iter().any(|(k, _)| k == "IMMORTAL_ENVELOPE_URL"),
        "the envelope's location, never the event: {overrides:?}"
    );

    let ran = run(task_container(Image::Provided, &cluster, overrides).env("IMMORTAL_ON_SUCCESS", &success.url)).await;
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["request_id"], "req-img-task", "the original request id");
    assert_function_user(&seen);
    let arn = seen["whoami"]["first"]["arn"].as_str().unwrap_or_default();
    assert!(
        arn.contains(&format!(":assumed-role/{role_name}/")),
        "its own role, assumed and served: {}",
        seen["whoami"]
    );
    let env = &seen["env"];
    assert_eq!(env["FROM_CONFIG"], "yes", "its own configuration");
    assert_eq!(env["LAMBDA_TASK_ROOT"], TASK_ROOT);
    assert_eq!(seen["cwd"], TASK_ROOT);
    assert!(env.get("AWS_ACCESS_KEY_ID").is_none(), "no runner keys: {env}");

    let entry = cluster.ledger_entry("req-img-task").await.expect("a ledger entry");
    assert_eq!(entry["state"], "succeeded", "{entry}");
    let records = success.take_all().await;
    assert_eq!(records.len(), 1, "one success record");
    assert_eq!(records[0]["requestContext"]["requestId"], "req-img-task");
    assert_eq!(records[0]["requestPayload"], json!({"whoami": true}));

    let lines = log_lines(&sdk, &format!("/aws/lambda/{name}")).await;
    assert!(
        lines
            .iter()
            .any(|l| l == "START RequestId: req-img-task Version: $LATEST"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "END RequestId: req-img-task"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("REPORT RequestId: req-img-task\t")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_python_function_runs_through_the_runtime_interface_client_in_the_python_image() {
    let sdk = Emulator::shared().sdk_config().await;
    let name = format!("img-py-{}", uuid_like());
    let zip = folder_zip(
        &fixtures().join("functions/python"),
        &["lambda_function.py", "helper.py"],
    );
    deploy_as(
        &sdk,
        &name,
        &zip,
        &[("GREETING", "hello from config")],
        Runtime::Python312,
        "lambda_function.lambda_handler",
    )
    .await;
    let ran = run(Container::new(Image::Python)
        .envs(Emulator::shared().env())
        .env("IMMORTAL_FUNCTION_LOGS", "stderr")
        .args(["--event", r#"{"from":"the python image"}"#])
        .args(["--context", &context_for(&name, "req-img-py")]))
    .await;
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["request_id"], "req-img-py");
    assert_eq!(seen["event"], json!({"from": "the python image"}));
    assert_eq!(
        seen["helper"], "beside the handler",
        "its own modules import from the task root"
    );
    assert_eq!(seen["env"]["GREETING"], "hello from config");
    assert_eq!(seen["env"]["LAMBDA_TASK_ROOT"], TASK_ROOT);
    assert_eq!(seen["env"]["_HANDLER"], "lambda_function.lambda_handler");
    assert_eq!(seen["cwd"], TASK_ROOT);
    assert_eq!(
        seen["file"],
        format!("{TASK_ROOT}/lambda_function.py"),
        "as in Lambda's tracebacks"
    );
    assert_eq!(seen["task_root_listing"], json!(["helper.py", "lambda_function.py"]));
}

#[tokio::test]
async fn a_drain_worker_in_the_image_runs_two_functions_one_after_the_other() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let (a, b) = (format!("img-drain-a-{id}"), format!("img-drain-b-{id}"));
    let echo = deploy(&sdk, &a, &bootstrap_zip_bytes(&fixture("echo")), &[("WHO", "a")]).await;
    let inspect = deploy(&sdk, &b, &bootstrap_zip_bytes(&fixture("inspect")), &[("WHO", "b")]).await;
    let queue = Queue::create(
        &sdk,
        &format!("img-drain-{id}"),
        &[],
        &[(QueueAttributeName::VisibilityTimeout, "30")],
    )
    .await;
    let outcomes = Queue::create(&sdk, &format!("img-drain-out-{id}"), &[], &[]).await;
    for (request_id, function) in [("req-drain-a", &echo.arn), ("req-drain-b", &inspect.arn)] {
        let record = timeout_record(request_id, function, &json!({"for": request_id}));
        queue.send(&record).await;
    }
    let ran = run(drain_worker(&queue, &outcomes)).await;
    ran.expect_code(0);
    assert!(ran.stderr.contains("drain worker done"), "{}", ran.stderr);
    let mut by_request = std::collections::BTreeMap::new();
    for record in outcomes.take_all().await {
        let id = record["requestContext"]["requestId"].as_str().unwrap().to_owned();
        assert!(
            by_request.insert(id, record["responsePayload"].clone()).is_none(),
            "once each"
        );
    }
    let (ra, rb) = (&by_request["req-drain-a"], &by_request["req-drain-b"]);
    // Each ran its own code (echo answers with a pid, inspect with a uid), with its own
    // configuration, from /var/task.
    assert!(ra["pid"].is_u64() && ra["uid"].is_null(), "echo's code: {ra}");
    assert_eq!(ra["env"]["WHO"], "a");
    assert_eq!(ra["cwd"], TASK_ROOT);
    assert_function_user(rb);
    assert_eq!(rb["env"]["WHO"], "b");
    assert_eq!(rb["cwd"], TASK_ROOT);
    assert_eq!(queue.depth().await, 0, "both messages deleted");
}

/// The isolation claims of a drain worker, in the image as Fargate runs it: a planter
/// leaves a closed folder in /tmp, files in /var/tmp and /dev/shm; the next function
/// (the same function user, one run after the other) finds none of them, and can
/// neither list the code cache nor change its own code.
#[tokio::test]
async fn in_the_image_a_function_finds_nothing_its_predecessor_left_and_no_other_code() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let zip = bootstrap_zip_bytes(&fixture("inspect"));
    let (planter, looker) = (format!("img-plant-{id}"), format!("img-look-{id}"));
    let planted = deploy(&sdk, &planter, &zip, &[]).await;
    let looking = deploy(&sdk, &looker, &zip, &[]).await;
    let queue = Queue::create(&sdk, &format!("img-plant-{id}"), &[], &[]).await;
    let outcomes = Queue::create(&sdk, &format!("img-plant-out-{id}"), &[], &[]).await;
    let marker = format!("marker-{id}");
    queue
        .send(&timeout_record(
            "req-plant",
            &planted.arn,
            &json!({"write_marker": marker}),
        ))
        .await;
    let look = json!({"look_for": marker, "read_path": "/var/cache/immortal/code", "rewrite": "bootstrap"});
    queue.send(&timeout_record("req-look", &looking.arn, &look)).await;
    let ran = run(drain_worker(&queue, &outcomes)).await;
    ran.expect_code(0);
    let mut by_request = std::collections::BTreeMap::new();
    for record in outcomes.take_all().await {
        let id = record["requestContext"]["requestId"].as_str().unwrap().to_owned();
        by_request.insert(id, record["responsePayload"].clone());
    }
    let (planted, seen) = (&by_request["req-plant"], &by_request["req-look"]);
    assert_eq!(planted["uid"], seen["uid"], "one user, one run after the other");
    for place in ["in_tmp", "closed_in_tmp", "in_var_tmp", "in_dev_shm"] {
        assert_eq!(seen["look_for"][place], false, "{place}: {seen}");
    }
    for attempt in ["read_path", "rewrite"] {
        assert!(
            seen[attempt].as_str().unwrap().starts_with("refused"),
            "{attempt}: {seen}"
        );
    }
}

#[tokio::test]
async fn a_stop_as_ecs_gives_it_lets_the_function_have_its_grace_and_marks_the_attempt_interrupted() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let name = format!("img-stop-{id}");
    deploy(&sdk, &name, &bootstrap_zip_bytes(&fixture("sleep")), &[]).await;
    let cluster = Cluster::create(&sdk, &format!("img-stop-{id}")).await;
    let shared = shared_dir();
    let event = json!({"seconds": 600, "pid_file": "/shared/pid", "marker": "/shared/term"});
    let overrides = relaunched(&cluster, &name, &event, "req-img-stop").await;
    let stop_timeout = Duration::from_secs(10);
    let container = task_container(Image::Provided, &cluster, overrides)
        .env("IMMORTAL_STOP_TIMEOUT", stop_timeout.as_secs().to_string())
        .env("IMMORTAL_FUNCTION_LOGS", "stderr")
        .mount_rw(shared.path(), "/shared");
    let running = container.spawn();
    let pid_file = shared.path().join("pid");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !pid_file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pid_file.exists(), "the function started");
    let init = running.exec(&["cat", "/proc/1/cmdline"]);
    let expected_init = if immortal_tests::container::stack_init_process_enabled() {
        "init"
    } else {
        "/usr/local/bin/runner"
    };
    assert!(
        init.split('\0').next().unwrap_or_default().contains(expected_init),
        "PID 1 is {init:?}, as the stack's task definition makes it"
    );
    // The runner as Fargate runs it: the image's user, no effective capabilities, and
    // Docker's default set (Fargate's) as the bound: CHOWN DAC_OVERRIDE FOWNER FSETID
    // KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE
    // SETFCAP = 0xa80425fb.
    let status = running.exec(&["cat", "/proc/1/status"]);
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    if !immortal_tests::container::stack_init_process_enabled() {
        assert_eq!(field("Uid:")[0], "10001", "{status}");
        assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
        assert_eq!(field("CapAmb:"), ["0000000000000000"], "{status}");
        assert_eq!(field("CapBnd:"), ["00000000a80425fb"], "{status}");
    }
    let stopper = {
        let name = running.name().to_owned();
        std::thread::spawn(move || {
            let out = immortal_tests::container::podman()
                .args(["stop", "--time", &stop_timeout.as_secs().to_string(), &name])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        })
    };
    let ran = tokio::task::spawn_blocking(move || running.wait(Duration::from_secs(60)))
        .await
        .unwrap();
    stopper.join().unwrap();
    ran.expect_code(143);
    assert_eq!(
        std::fs::read_to_string(shared.path().join("term")).unwrap_or_default(),
        "SIGTERM",
        "the function had its grace:\n{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("attempt interrupted"), "{}", ran.stderr);
    let entry = cluster.ledger_entry("req-img-stop").await.expect("a ledger entry");
    assert_eq!(entry["state"], "interrupted", "{entry}");
}

/// A stand-in "function image" built here: AWS-base-image-like (the stand-in base), the
/// function's code in /var/task, its own ENTRYPOINT, CMD and WORKDIR. Its tag.
fn function_image(dir: &Path) -> String {
    std::fs::copy(fixture("inspect"), dir.join("entry")).unwrap();
    std::fs::write(
        dir.join("Containerfile"),
        "FROM immortal-standin:provided\nCOPY entry /var/task/entry\nWORKDIR /var/task\nENV FROM_THE_IMAGE=yes\nENTRYPOINT [\"/var/task/entry\"]\nCMD [\"image.handler\"]\n",
    )
    .unwrap();
    let tag = format!("immortal-test-function:{}", uuid_like());
    immortal_tests::container::succeeded(
        immortal_tests::container::podman()
            .args(["build", "--quiet", "--pull=never", "-t", &tag, "-f"])
            .arg(dir.join("Containerfile"))
            .arg(dir),
        "podman build (the function's image)",
    );
    tag
}

/// The image's configuration as its registry serves it (the `config` of `podman image
/// inspect` is the image configuration's `config` object).
fn image_configuration(tag: &str) -> Vec<u8> {
    let out = immortal_tests::container::succeeded(
        immortal_tests::container::podman().args(["image", "inspect", "--format", "{{json .Config}}", tag]),
        "podman image inspect",
    );
    let config: Value = serde_json::from_str(out.trim()).unwrap();
    json!({"architecture": "amd64", "os": "linux", "config": config})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn an_image_function_runs_in_its_own_image_as_its_task_definition_starts_it() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let build = tempfile::tempdir().unwrap();
    let tag = tokio::task::spawn_blocking({
        let dir = build.path().to_owned();
        move || function_image(&dir)
    })
    .await
    .unwrap();
    // The function: no ImageConfig, so what runs is the image's own ENTRYPOINT, CMD and
    // WORKDIR, read as the runner reads them in AWS (ECR's API, played by a stand-in
    // that serves this image's real configuration).
    let name = format!("img-fn-{id}");
    let image_uri = format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/{name}:v1");
    immortal_tests::lambda::deploy_image(
        &sdk,
        &name,
        &image_uri,
        None,
        &[("FROM_CONFIG", "yes")],
        aws_sdk_lambda::types::Architecture::X8664,
    )
    .await;
    let configuration = image_configuration(&tag);
    let registry = immortal_tests::registry::Registry::serving(&name, configuration);
    let cluster = Cluster::create(&sdk, &format!("imgfn-{id}")).await;
    let overrides = relaunched(&cluster, &name, &json!({"n": 1}), "req-image-fn").await;
    let task = &cluster.tasks().await[0];
    let definition = cluster
        .ecs
        .describe_task_definition()
        .task_definition(task.task_definition_arn().unwrap())
        .send()
        .await
        .unwrap()
        .task_definition
        .unwrap();
    let containers = definition.container_definitions();
    let init = containers.iter().find(|c| c.essential() == Some(false)).unwrap();
    let function = containers.iter().find(|c| c.name() == Some("runner")).unwrap();
    let volumes = format!("immortal-test-{id}");

    // As ECS starts the task: the init container (the runner image) to its end, then
    // the function's image with the runner from the shared volume.
    let copied = run(Container::from_definition(init, Image::Provided.tag(), &volumes)).await;
    copied.expect_code(0);
    let ran = run(Container::from_definition(function, &tag, &volumes)
        .envs(Emulator::shared().env())
        .env("IMMORTAL_PAYLOAD_BUCKET", &cluster.payload_bucket)
        .env("AWS_ENDPOINT_URL_ECR", registry.url())
        .envs(overrides))
    .await;
    let _ = immortal_tests::container::podman()
        .args(["volume", "rm", "--force", &format!("{volumes}-immortal-runner")])
        .output();
    let _ = immortal_tests::container::podman()
        .args(["rmi", "--force", &tag])
        .output();
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["request_id"], "req-image-fn", "the original request id");
    assert_eq!(seen["event"], json!({"n": 1}), "the original event");
    assert_eq!(
        seen["argv"],
        json!(["/var/task/entry", "image.handler"]),
        "its ENTRYPOINT and CMD"
    );
    assert_eq!(seen["env"]["_HANDLER"], "image.handler");
    assert_eq!(seen["cwd"], "/var/task", "its WORKDIR");
    assert_eq!(seen["env"]["LAMBDA_TASK_ROOT"], TASK_ROOT);
    assert_eq!(seen["env"]["FROM_THE_IMAGE"], "yes", "the image's ENV");
    assert_eq!(seen["env"]["FROM_CONFIG"], "yes", "the function's environment");
    assert!(
        seen["env"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("IMMORTAL_")
                || k == "IMMORTAL_RUNNER"
                || k == "IMMORTAL_NO_DEADLINE"
                || k == "IMMORTAL_OVERFLOW"),
        "no runner setting reaches the function: {}",
        seen["env"]
    );
    assert_function_user(&seen);
}
