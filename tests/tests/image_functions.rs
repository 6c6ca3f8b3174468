//! Container-image functions (`PackageType: Image`) against the emulator, which stores an
//! image function's `ImageUri` and `ImageConfig` and answers them in GetFunction:
//! the forwarder launches a task of the function's own image (a task definition
//! registered per image, reused), and the runner starts what Lambda would start in it.
//! ECR's GetDownloadUrlForLayer, which the emulator lacks, is played by a stand-in in
//! front of it that serves the image's configuration blob.

use aws_sdk_lambda::types::{Architecture, ImageConfig};
use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use immortal_tests::ecs::{task_env, Cluster};
use immortal_tests::emulator::Emulator;
use immortal_tests::hand_off::drained_to_hand_off;
use immortal_tests::lambda::{deploy_image, uuid_like};
use immortal_tests::queue::Queue;
use immortal_tests::registry::{manifest_for, Registry};
use immortal_tests::runner::{fixture, Ran, RunnerCmd};
use serde_json::{json, Value};

/// Where an image function's runner lives in its task (the forwarder's contract).
const RUNNER_IN_IMAGE: &str = "/immortal/runner";

async fn run(cmd: RunnerCmd) -> Ran {
    tokio::task::spawn_blocking(move || cmd.run()).await.unwrap()
}

fn image_uri(repository: &str) -> String {
    format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/{repository}:v1")
}

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| (*s).to_owned()).collect())
}

/// The runner on `arn` (its context names the function) with event `{"n":1}`.
fn invoke(arn: &str, request_id: &str, cache: &std::path::Path) -> RunnerCmd {
    let context = json!({"request_id": request_id, "invoked_function_arn": arn});
    RunnerCmd::new().cache(cache).envs(Emulator::shared().env()).args([
        "--event",
        r#"{"n":1}"#,
        "--context",
        &context.to_string(),
    ])
}

#[tokio::test]
async fn an_image_function_overflows_into_a_task_of_its_own_image_with_the_runner_inside() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("c-{id}")).await;
    let name = format!("img-{id}");
    let image = image_uri(&name);
    let config = ImageConfig::builder().set_command(strings(&["app.handler"])).build();
    deploy_image(&sdk, &name, &image, Some(config), &[], Architecture::X8664).await;
    let queue = Queue::create(
        &sdk,
        &format!("dlq-{id}"),
        &[("immortal:function", &name)],
        &[(QueueAttributeName::VisibilityTimeout, "1")],
    )
    .await;
    for n in 1..=2 {
        queue
            .send_dead_letter(
                &format!(r#"{{"n":{n}}}"#),
                &format!("req-img-{n}"),
                "Task timed out after 3.00 seconds",
            )
            .await;
    }
    let messages = queue.receive(10, 2).await;
    assert_eq!(messages.len(), 2);
    cluster.forward_all(&queue, &messages, &[]).await;

    let tasks = cluster.tasks().await;
    assert_eq!(tasks.len(), 2, "one task per invocation");
    let definitions: std::collections::BTreeSet<&str> = tasks.iter().filter_map(|t| t.task_definition_arn()).collect();
    assert_eq!(
        definitions.len(),
        1,
        "one task definition per image, reused: {definitions:?}"
    );
    let definition = cluster
        .ecs
        .describe_task_definition()
        .task_definition(*definitions.first().unwrap())
        .send()
        .await
        .unwrap()
        .task_definition
        .unwrap();
    let template = cluster
        .ecs
        .describe_task_definition()
        .task_definition(&cluster.task_definition)
        .send()
        .await
        .unwrap()
        .task_definition
        .unwrap();
    assert!(
        definition
            .family()
            .unwrap()
            .starts_with(&format!("{}-image-", cluster.task_definition)),
        "{definition:?}"
    );
    let containers = definition.container_definitions();
    let function = containers
        .iter()
        .find(|c| c.name() == Some("runner"))
        .expect("the runner's container");
    let init = containers
        .iter()
        .find(|c| c.name() != Some("runner"))
        .expect("an init container");
    let resolved = aws_sdk_lambda::Client::new(&sdk)
        .get_function()
        .function_name(&name)
        .send()
        .await
        .unwrap()
        .code
        .unwrap()
        .resolved_image_uri
        .unwrap();
    assert!(
        resolved.starts_with(&format!("{}@sha256:", image.trim_end_matches(":v1"))),
        "{resolved}"
    );
    assert_eq!(
        function.image(),
        Some(resolved.as_str()),
        "the task runs the function's own image, by digest"
    );
    assert_eq!(function.entry_point(), [RUNNER_IN_IMAGE], "started by the runner");
    let dependency = &function.depends_on()[0];
    assert_eq!(dependency.container_name(), init.name().unwrap());
    assert_eq!(dependency.condition().as_str(), "SUCCESS");
    assert_eq!(
        init.image(),
        template.container_definitions()[0].image(),
        "the runner comes from the runner image"
    );
    assert_eq!(init.essential(), Some(false));
    assert!(init.command()[0].contains(RUNNER_IN_IMAGE.trim_end_matches("/runner")));
    assert_eq!(definition.task_role_arn(), template.task_role_arn());
    for task in &tasks {
        let env = task_env(task);
        assert!(
            env.contains_key("IMMORTAL_ENVELOPE_URL"),
            "the overrides reach the runner in the function's image: {env:?}"
        );
        let envelope = cluster.task_envelope(task).await;
        let request_id = envelope["context"]["request_id"].as_str().unwrap().to_owned();
        assert!(request_id.starts_with("req-img-"), "{envelope}");
    }
}

#[tokio::test]
async fn the_runner_starts_the_image_functions_entry_point_with_its_command_handler_and_working_directory() {
    let sdk = Emulator::shared().sdk_config().await;
    let name = format!("img-run-{}", uuid_like());
    let workdir = tempfile::tempdir().unwrap();
    let entry = fixture("inspect").display().to_string();
    let config = ImageConfig::builder()
        .set_entry_point(strings(&[&entry]))
        .set_command(strings(&["app.handler", "--flag"]))
        .working_directory(workdir.path().display().to_string())
        .build();
    let arn = deploy_image(
        &sdk,
        &name,
        &image_uri(&name),
        Some(config),
        &[("GREETING", "from the function's configuration")],
        Architecture::X8664,
    )
    .await;
    let cache = tempfile::tempdir().unwrap();
    let ran = run(invoke(&arn, "req-image", cache.path())).await;
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["request_id"], "req-image");
    assert_eq!(seen["event"], json!({"n": 1}), "the original event");
    assert_eq!(
        seen["argv"],
        json!([entry, "app.handler", "--flag"]),
        "entry point then command"
    );
    assert_eq!(seen["cwd"], workdir.path().display().to_string());
    assert_eq!(seen["env"]["_HANDLER"], "app.handler", "the command's first element");
    assert_eq!(seen["env"]["LAMBDA_TASK_ROOT"], "/var/task");
    assert_eq!(seen["env"]["GREETING"], "from the function's configuration");
    assert_eq!(seen["env"]["AWS_LAMBDA_FUNCTION_NAME"], name.as_str());
    assert!(ran.stderr.contains("nothing to download"), "{}", ran.stderr);
    assert!(!ran.stderr.contains(r#""message":"downloaded""#), "{}", ran.stderr);
}

#[tokio::test]
async fn without_an_image_config_the_runner_reads_the_images_own_entrypoint_cmd_and_workdir_from_ecr() {
    let sdk = Emulator::shared().sdk_config().await;
    let name = format!("img-own-{}", uuid_like());
    let workdir = tempfile::tempdir().unwrap();
    let entry = fixture("inspect").display().to_string();
    // The shape of an image configuration (OCI image spec, config.md).
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": [entry], "Cmd": ["own.handler"], "WorkingDir": workdir.path().display().to_string(), "Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": []},
    })
    .to_string();
    let (manifest, digest) = manifest_for(config.as_bytes());
    let registry = Registry::start(vec![(name.clone(), manifest)], vec![(digest, Bytes::from(config))]);
    let arn = deploy_image(&sdk, &name, &image_uri(&name), None, &[], Architecture::X8664).await;
    let overridden = format!("{name}-cmd");
    let only_command = ImageConfig::builder()
        .set_command(strings(&["override.handler"]))
        .build();
    let overridden_arn = deploy_image(
        &sdk,
        &overridden,
        &image_uri(&name),
        Some(only_command),
        &[],
        Architecture::X8664,
    )
    .await;
    let cache = tempfile::tempdir().unwrap();

    let ran = run(invoke(&arn, "req-own", cache.path()).env("AWS_ENDPOINT_URL_ECR", registry.url())).await;
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["argv"], json!([entry, "own.handler"]), "{}", ran.stderr);
    assert_eq!(seen["env"]["_HANDLER"], "own.handler");
    assert_eq!(seen["cwd"], workdir.path().display().to_string());
    assert!(
        registry.requests().iter().any(|r| r.path.starts_with("/blobs/sha256:")),
        "the configuration came from the registry"
    );

    let ran =
        run(invoke(&overridden_arn, "req-override", cache.path()).env("AWS_ENDPOINT_URL_ECR", registry.url())).await;
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(
        seen["argv"],
        json!([entry, "override.handler"]),
        "the function's Command over the image's CMD, the image's ENTRYPOINT kept"
    );
    assert_eq!(seen["env"]["_HANDLER"], "override.handler");
    assert_eq!(seen["cwd"], workdir.path().display().to_string());
}

#[tokio::test]
async fn an_image_function_the_runner_cannot_start_ends_with_a_record_naming_why() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let failures = Queue::create(&sdk, &format!("img-failures-{id}"), &[], &[]).await;
    let cache = tempfile::tempdir().unwrap();
    // Three shapes that cannot run: an image whose settings cannot be read (not in the
    // registry), an entry point this container does not have, and a configuration blob
    // that is not the one its manifest names.
    let unknown = format!("img-unknown-{id}");
    let unknown_arn = deploy_image(&sdk, &unknown, &image_uri(&unknown), None, &[], Architecture::X8664).await;
    let missing = format!("img-missing-{id}");
    let no_such_entry = ImageConfig::builder()
        .set_entry_point(strings(&["/nonexistent/entry"]))
        .set_command(strings(&["h"]))
        .working_directory("/")
        .build();
    let missing_arn = deploy_image(
        &sdk,
        &missing,
        &image_uri(&missing),
        Some(no_such_entry),
        &[],
        Architecture::X8664,
    )
    .await;
    let tampered = format!("img-tampered-{id}");
    let (manifest, digest) = manifest_for(br#"{"config":{"Cmd":["h"]}}"#);
    let registry = Registry::start(
        vec![(tampered.clone(), manifest)],
        vec![(digest, Bytes::from_static(br#"{"config":{"Cmd":["evil"]}}"#))],
    );
    let tampered_arn = deploy_image(&sdk, &tampered, &image_uri(&tampered), None, &[], Architecture::X8664).await;

    for (arn, request_id, error_type, why) in [
        (
            &unknown_arn,
            "req-unknown",
            "Immortal.CodeUnavailable",
            "ecr:BatchGetImage",
        ),
        (
            &missing_arn,
            "req-missing",
            "Immortal.RuntimeUnavailable",
            "/nonexistent/entry",
        ),
        (
            &tampered_arn,
            "req-tampered",
            "Immortal.CodeUnavailable",
            "does not match its digest",
        ),
    ] {
        let ran = run(invoke(arn, request_id, cache.path())
            .env("AWS_ENDPOINT_URL_ECR", registry.url())
            .args(["--on-failure", &failures.url]))
        .await;
        ran.expect_code(3);
        assert!(ran.stderr.contains(why), "{request_id}: {}", ran.stderr);
        let records: Vec<Value> = failures
            .receive(10, 2)
            .await
            .iter()
            .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
            .collect();
        assert_eq!(records.len(), 1, "{request_id}: one record");
        let record = &records[0];
        assert_eq!(record["requestContext"]["requestId"], request_id);
        assert_eq!(record["responsePayload"]["errorType"], error_type, "{record}");
        let message = record["responsePayload"]["errorMessage"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
    }

    // In a runner image (which declares its runtime), an image function is not run at
    // all: it runs in its own image.
    let ran = run(invoke(&missing_arn, "req-runner-image", cache.path())
        .env("IMMORTAL_IMAGE_RUNTIME", "provided.al2023")
        .args(["--on-failure", &failures.url]))
    .await;
    ran.expect_code(3);
    assert!(ran.stderr.contains("runs in its own image"), "{}", ran.stderr);
}

/// A drain worker runs in a runner image, never in a function's image: given an image
/// function's record it hands it on (the message as it came) to the hand-off queue and
/// deletes it only then, with no failure record; the forwarder launches it from there in
/// a task of the function's own image.
#[tokio::test]
async fn a_drain_worker_hands_an_image_functions_record_to_a_task_of_its_own_image() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("c-{id}")).await;
    let name = format!("img-drain-{id}");
    let config = ImageConfig::builder().set_command(strings(&["app.handler"])).build();
    deploy_image(&sdk, &name, &image_uri(&name), Some(config), &[], Architecture::X8664).await;
    let queue = Queue::create(
        &sdk,
        &format!("dlq-{id}"),
        &[("immortal:function", &name)],
        &[(QueueAttributeName::VisibilityTimeout, "5")],
    )
    .await;
    let (hand_off, messages) = drained_to_hand_off(&queue, "req-img-hand").await;
    cluster.forward_all(&hand_off, &messages, &[]).await;
    let tasks = cluster.tasks().await;
    assert_eq!(tasks.len(), 1, "one task");
    assert!(
        tasks[0]
            .task_definition_arn()
            .unwrap()
            .contains(&format!("{}-image-", cluster.task_definition)),
        "on the image's task definition: {:?}",
        tasks[0].task_definition_arn()
    );
    let envelope = cluster.task_envelope(&tasks[0]).await;
    assert_eq!(envelope["context"]["request_id"], "req-img-hand");
    assert_eq!(envelope["event"], json!({"name": "handed"}));
}
