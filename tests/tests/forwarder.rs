//! The dlq-forwarder as a real Lambda bootstrap (run by our own runner) against the
//! emulator: real queues with tags, a real cluster and task definition.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::QueueAttributeName;
use immortal_tests::ecs::{task_env, task_tag, Cluster};
use immortal_tests::emulator::Emulator;
use immortal_tests::lambda::{deploy, deploy_with_role, role_id, uuid_like};
use immortal_tests::queue::{timeout_record, Queue};
use immortal_tests::runner::{fixture, Ran, RunnerCmd};
use immortal_tests::zips::bootstrap_zip_bytes;
use serde_json::{json, Value};

const S3_EVENT: &str = include_str!("../../handler-sdk/fixtures/s3-put.json");

/// Runs the forwarder once on `event` (an SQS event), with `extra` settings.
async fn forward(event: &Value, cluster: &Cluster, extra: &[(&'static str, String)]) -> Ran {
    let cmd = RunnerCmd::lambda("dlq-forwarder", &event.to_string())
        .envs(Emulator::shared().env())
        .envs(cluster.forwarder_env())
        .envs(extra.iter().cloned());
    let ran = tokio::task::spawn_blocking(move || cmd.run()).await.unwrap();
    ran
}

async fn setup(tags: &[(&str, &str)]) -> (aws_config::SdkConfig, Cluster, Queue) {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("c-{id}")).await;
    let queue = Queue::create(
        &sdk,
        &format!("dlq-{id}"),
        tags,
        &[(QueueAttributeName::VisibilityTimeout, "1")],
    )
    .await;
    (sdk, cluster, queue)
}

#[tokio::test]
async fn a_timeout_in_a_tagged_dead_letter_queue_becomes_one_task_carrying_the_exact_envelope() {
    let (_sdk, cluster, queue) = setup(&[("immortal:function", "thumbnail")]).await;
    let message_id = queue
        .send_dead_letter(
            S3_EVENT,
            "req-dlq-1",
            "RequestId: req-dlq-1 Error: Task timed out after 900.00 seconds",
        )
        .await;
    let messages = queue.receive(10, 1).await;
    let ran = forward(&queue.lambda_event(&messages), &cluster, &[]).await;
    ran.expect_code(0);
    assert_eq!(ran.json(), json!({"batchItemFailures": []}));
    queue.settle(&messages, &ran.json()).await;
    assert_eq!(
        queue.depth().await,
        0,
        "the message left the queue once the task was accepted"
    );

    let tasks = cluster.tasks().await;
    assert_eq!(tasks.len(), 1);
    let env = task_env(&tasks[0]);
    assert_eq!(
        env.keys().collect::<Vec<_>>(),
        ["IMMORTAL_ENVELOPE_DIGEST", "IMMORTAL_ENVELOPE_URL"],
        "the overrides carry the envelope's location and digest, never the event"
    );
    let envelope = cluster.task_envelope(&tasks[0]).await;
    let event = envelope["event"].clone();
    assert_eq!(
        event,
        serde_json::from_str::<Value>(S3_EVENT).unwrap(),
        "the event, unchanged"
    );
    let context = envelope["context"].clone();
    assert_eq!(context["request_id"], "req-dlq-1");
    assert_eq!(
        context["invoked_function_arn"],
        "arn:aws:lambda:us-east-1:123456789012:function:thumbnail"
    );
    assert_eq!(context["overflow"]["source"], "dlq");
    assert_eq!(context["overflow"]["error_type"], "Sandbox.Timedout");
    assert_eq!(task_tag(&tasks[0], "immortal:request-id").as_deref(), Some("req-dlq-1"));
    assert_eq!(tasks[0].started_by(), Some("immortal-forwarder"));
    assert!(
        ran.stderr.contains(r#""decision":"launched""#) && ran.stderr.contains(&message_id),
        "{}",
        ran.stderr
    );
}

#[tokio::test]
async fn a_destination_record_on_a_shared_queue_names_its_own_function() {
    let (_sdk, cluster, queue) = setup(&[]).await;
    let record = include_str!("../../handler-sdk/fixtures/destination-retries-exhausted-timeout.json");
    queue.send(record).await;
    let messages = queue.receive(10, 1).await;
    let ran = forward(&queue.lambda_event(&messages), &cluster, &[]).await;
    ran.expect_code(0);
    assert_eq!(ran.json(), json!({"batchItemFailures": []}));
    let tasks = cluster.tasks().await;
    assert_eq!(tasks.len(), 1);
    let context = cluster.task_envelope(&tasks[0]).await["context"].clone();
    assert_eq!(
        context["invoked_function_arn"],
        "arn:aws:lambda:us-east-1:123456789012:function:thumbnail:$LATEST"
    );
    assert_eq!(context["overflow"]["attempt"], 2);
    assert_eq!(context["overflow"]["source"], "destination");
}

#[tokio::test]
async fn a_runtask_failure_is_a_batch_item_failure_and_the_message_stays_queued() {
    let (_sdk, cluster, queue) = setup(&[("immortal:function", "thumbnail")]).await;
    let message_id = queue
        .send_dead_letter("{}", "req-fail", "Task timed out after 3.00 seconds")
        .await;
    let messages = queue.receive(10, 1).await;
    let ran = forward(
        &queue.lambda_event(&messages),
        &cluster,
        &[("IMMORTAL_TASK_DEFINITION", "no-such-task-definition".into())],
    )
    .await;
    ran.expect_code(0);
    assert_eq!(
        ran.json(),
        json!({"batchItemFailures": [{"itemIdentifier": message_id}]})
    );
    assert!(
        ran.stderr.contains("RunTask failed"),
        "the log carries ECS's reason:\n{}",
        ran.stderr
    );
    queue.settle(&messages, &ran.json()).await;
    assert!(cluster.tasks().await.is_empty());
    let again = queue.receive(10, 3).await;
    assert_eq!(
        again.iter().map(|m| m.message_id.clone().unwrap()).collect::<Vec<_>>(),
        [message_id],
        "still queued"
    );
}

#[tokio::test]
async fn untagged_dead_letter_queues_unknown_formats_and_declined_errors_are_never_dropped() {
    let (_sdk, cluster, queue) = setup(&[]).await;
    let untagged = queue
        .send_dead_letter("{}", "req-untagged", "Task timed out after 3.00 seconds")
        .await;
    let junk = queue.send("hello, not an overflow record").await;
    let messages = queue.receive(10, 1).await;
    assert_eq!(messages.len(), 2);
    let ran = forward(&queue.lambda_event(&messages), &cluster, &[]).await;
    ran.expect_code(0);
    let mut failed: Vec<String> = ran.json()["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect();
    failed.sort();
    let mut expected = vec![untagged, junk];
    expected.sort();
    assert_eq!(failed, expected);
    assert!(ran.stderr.contains("tag the queue"), "{}", ran.stderr);
    assert!(ran.stderr.contains("neither a dead-letter message"), "{}", ran.stderr);

    let (_sdk, cluster, queue) = setup(&[("immortal:function", "thumbnail")]).await;
    let error = queue
        .send_dead_letter("{}", "req-err", "Cannot read properties of undefined")
        .await;
    let messages = queue.receive(10, 1).await;
    let ran = forward(&queue.lambda_event(&messages), &cluster, &[]).await;
    assert_eq!(ran.json(), json!({"batchItemFailures": [{"itemIdentifier": error}]}));
    assert!(ran.stderr.contains(r#""decision":"declined""#), "{}", ran.stderr);
    assert!(cluster.tasks().await.is_empty());
}

#[tokio::test]
async fn a_missing_setting_fails_init_naming_it() {
    let (_sdk, cluster, _queue) = setup(&[]).await;
    let ran = forward(
        &json!({"Records": []}),
        &cluster,
        &[("IMMORTAL_CLUSTER", String::new())],
    )
    .await;
    ran.expect_code(4);
    let error = ran.json();
    assert_eq!(error["errorType"], "Immortal.Config");
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("IMMORTAL_CLUSTER is not set"),
        "{error}"
    );
}

#[tokio::test]
async fn the_runner_reads_the_stored_envelope_back_and_refuses_one_that_changed() {
    let emulator = Emulator::shared();
    let (sdk, cluster, _) = setup(&[]).await;
    let id = uuid_like();
    let function = format!("echo-{id}");
    deploy(&sdk, &function, &bootstrap_zip_bytes(&fixture("echo")), &[]).await;
    let queue = Queue::create(&sdk, &format!("big-{id}"), &[("immortal:function", &function)], &[]).await;

    let event = json!({"blob": "x".repeat(10_000), "unicode": "é→✓"});
    queue
        .send_dead_letter(&event.to_string(), "req-big", "Task timed out after 3.00 seconds")
        .await;
    let messages = queue.receive(10, 1).await;
    let ran = forward(&queue.lambda_event(&messages), &cluster, &[]).await;
    assert_eq!(ran.json(), json!({"batchItemFailures": []}), "{}", ran.stderr);
    let tasks = cluster.tasks().await;
    let env: BTreeMap<String, String> = task_env(&tasks[0]);
    let url = env["IMMORTAL_ENVELOPE_URL"].clone();
    assert_eq!(
        url,
        format!("s3://{}/envelopes/req-big/attempt-1.json", cluster.payload_bucket)
    );
    assert!(
        !format!("{tasks:?}").contains("xxxxxxxx"),
        "the event is nowhere in the task"
    );

    // The runner, as the task runs it: the task's environment and the payload bucket.
    let run = |env: BTreeMap<String, String>| {
        let cmd = RunnerCmd::new()
            .envs(emulator.env())
            .envs(env.into_iter().map(|(k, v)| (&*k.leak(), v)))
            .envs([("IMMORTAL_PAYLOAD_BUCKET", cluster.payload_bucket.clone())]);
        tokio::task::spawn_blocking(move || cmd.run())
    };
    let key = url
        .rsplit_once(&format!("{}/", cluster.payload_bucket))
        .unwrap()
        .1
        .to_owned();
    let stored = immortal_tests::s3::read(&cluster.s3, &url).await;
    let put = |bytes: Vec<u8>| {
        cluster
            .s3
            .put_object()
            .bucket(&cluster.payload_bucket)
            .key(&key)
            .body(bytes.into())
            .send()
    };
    let tampered = String::from_utf8(stored.to_vec()).unwrap().replace("é→✓", "evil");
    put(tampered.into_bytes()).await.unwrap();
    let refused = run(env.clone()).await.unwrap();
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("IMMORTAL_ENVELOPE_DIGEST") && refused.stderr.contains("refusing to run it"),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty(), "nothing ran");

    put(stored.to_vec()).await.unwrap();
    let ran = run(env).await.unwrap();
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["event"], event);
    assert_eq!(seen["request_id"], "req-big");
    assert_eq!(seen["function_name"], function);
    let entry = cluster.ledger_entry("req-big").await.expect("a ledger entry");
    assert_eq!(entry["state"], "succeeded", "{entry}");
    assert_eq!(entry["attempt"], 1);
}

#[tokio::test]
async fn without_a_payload_bucket_the_forwarder_fails_init_naming_it() {
    let (_sdk, cluster, _queue) = setup(&[]).await;
    let ran = forward(
        &json!({"Records": []}),
        &cluster,
        &[("IMMORTAL_PAYLOAD_BUCKET", String::new())],
    )
    .await;
    ran.expect_code(4);
    let error = ran.json();
    assert_eq!(error["errorType"], "Immortal.Config");
    let message = error["errorMessage"].as_str().unwrap();
    assert!(message.starts_with("IMMORTAL_PAYLOAD_BUCKET is not set"), "{error}");
    assert!(message.contains("ledger"), "{error}");
}

#[tokio::test]
async fn each_task_is_sized_from_its_functions_memory() {
    let (sdk, cluster, _) = setup(&[]).await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let mut sizes = Vec::new();
    for memory in [128, 10240] {
        let name = format!("mem{memory}-{}", uuid_like());
        deploy(&sdk, &name, &bootstrap_zip_bytes(&fixture("echo")), &[]).await;
        lambda
            .update_function_configuration()
            .function_name(&name)
            .memory_size(memory)
            .send()
            .await
            .unwrap();
        let queue = Queue::create(
            &sdk,
            &format!("dlq-{}", uuid_like()),
            &[("immortal:function", &name)],
            &[],
        )
        .await;
        queue
            .send_dead_letter("{}", &format!("req-{memory}"), "Task timed out after 3.00 seconds")
            .await;
        let messages = queue.receive(10, 1).await;
        let ran = forward(&queue.lambda_event(&messages), &cluster, &[]).await;
        assert_eq!(ran.json(), json!({"batchItemFailures": []}), "{}", ran.stderr);
        let task = cluster
            .tasks()
            .await
            .into_iter()
            .find(|t| task_tag(t, "immortal:request-id").as_deref() == Some(&format!("req-{memory}")))
            .expect("its task");
        let overrides = task.overrides().expect("overrides");
        let cpu: u32 = overrides.cpu().expect("a CPU override").parse().unwrap();
        let mem: u32 = overrides.memory().expect("a memory override").parse().unwrap();
        sizes.push((cpu, mem));
    }
    assert_eq!(sizes[0], (256, 512), "128 MB gets the smallest task");
    let (cpu, mem) = sizes[1];
    assert!(
        mem >= 10240 && cpu >= 6 * 1024,
        "10 GB and six vCPUs at least: {cpu}/{mem}"
    );
}

/// The attack on a shared overflow queue: code running as function A may send to it
/// (every attached function's role may, for Lambda to send its records), and names
/// function B. Lambda sends a function's records as a session of its own role
/// (`ROLE_ID:awslambda_...`), so only that may have B run: A's record starts no task
/// and stays for the parking queue, the log naming its sender and the function it
/// claimed; B's own record runs. (moto stamps every message with one sender, so the
/// senders are set in the SQS event, as Lambda's event source mapping hands them over.)
#[tokio::test]
async fn a_record_runs_a_function_only_when_that_functions_own_role_sent_it() {
    let (sdk, cluster, queue) = setup(&[]).await;
    let id = uuid_like();
    let zip = bootstrap_zip_bytes(&fixture("echo"));
    let (a, b) = (format!("sender-a-{id}"), format!("sender-b-{id}"));
    deploy_with_role(&sdk, &a, &zip, &[], &format!("role-a-{id}")).await;
    deploy_with_role(&sdk, &b, &zip, &[], &format!("role-b-{id}")).await;
    // A's code, in its role's session; Lambda sending B's record, in its own session of
    // B's role.
    let (a_sender, b_sender) = (
        format!("{}:{a}", role_id(&sdk, &format!("role-a-{id}")).await),
        format!(
            "{}:awslambda_123_20261207101532123",
            role_id(&sdk, &format!("role-b-{id}")).await
        ),
    );
    let b_arn = format!("arn:aws:lambda:us-east-1:123456789012:function:{b}");
    for request in ["req-forged", "req-own", "req-no-sender"] {
        queue
            .send(&timeout_record(request, &b_arn, &json!({"for": request})))
            .await;
    }
    let messages = queue.receive(10, 1).await;
    assert_eq!(messages.len(), 3);
    let mut event = queue.lambda_event(&messages);
    let mut ids = BTreeMap::new();
    for record in event["Records"].as_array_mut().unwrap() {
        let body = record["body"].as_str().unwrap().to_owned();
        let request = ["req-forged", "req-own", "req-no-sender"]
            .into_iter()
            .find(|r| body.contains(r))
            .unwrap();
        ids.insert(request, record["messageId"].as_str().unwrap().to_owned());
        match request {
            "req-forged" => record["attributes"]["SenderId"] = json!(a_sender),
            "req-own" => record["attributes"]["SenderId"] = json!(b_sender),
            _ => {
                record["attributes"].as_object_mut().unwrap().remove("SenderId");
            }
        }
    }
    // No operator is trusted here: only each function's own role.
    let ran = forward(&event, &cluster, &[("IMMORTAL_TRUSTED_SENDERS", String::new())]).await;
    ran.expect_code(0);
    let mut failed: Vec<String> = ran.json()["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect();
    failed.sort();
    let mut refused = vec![ids["req-forged"].clone(), ids["req-no-sender"].clone()];
    refused.sort();
    assert_eq!(
        failed, refused,
        "both stay queued, for the parking queue: {}",
        ran.stderr
    );
    let tasks = cluster.tasks().await;
    assert_eq!(tasks.len(), 1, "{}", ran.stderr);
    assert_eq!(
        cluster.task_envelope(&tasks[0]).await["context"]["request_id"],
        "req-own",
        "B's own record ran"
    );
    let line = ran
        .stderr
        .lines()
        .find(|l| l.contains(r#""decision":"unauthenticated""#) && l.contains(&ids["req-forged"]))
        .unwrap_or_else(|| panic!("no refusal logged:\n{}", ran.stderr));
    assert!(line.contains(&a_sender) && line.contains(&b), "{line}");
    assert!(!ran.stderr.contains(r#""for":"req-forged""#), "no event in the log");
}

/// Hand-written pointer records (`immortal.recordLocation`, which immortal writes when a
/// record is too large for its queue): one leads outside the payload bucket's
/// `outcomes/`, one to a stored record of another function than it names. Neither is
/// followed nor run; both stay queued, for the parking queue.
#[tokio::test]
async fn a_pointer_record_leads_only_to_a_record_immortal_stored_for_the_same_function() {
    let (sdk, cluster, queue) = setup(&[]).await;
    let s3 = immortal_handler_sdk::aws::s3_client(&sdk);
    let stored: Value = serde_json::from_str(include_str!(
        "../../handler-sdk/fixtures/destination-retries-exhausted-timeout.json"
    ))
    .unwrap();
    let bucket = &cluster.payload_bucket;
    for key in ["outcomes/req-ptr/stored.json", "elsewhere/req-ptr.json"] {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(stored.to_string().into_bytes().into())
            .send()
            .await
            .unwrap();
    }
    let pointer = |function_arn: &str, location: String| {
        let mut record = stored.clone();
        record["requestContext"]["functionArn"] = json!(function_arn);
        record["requestPayload"] = Value::Null;
        record["immortal"] = json!({"source": "runner", "version": "0", "recordLocation": location});
        record.to_string()
    };
    // The stored record is the thumbnail's.
    let other = "arn:aws:lambda:us-east-1:123456789012:function:echo:$LATEST";
    let same = stored["requestContext"]["functionArn"].as_str().unwrap();
    queue
        .send(&pointer(other, format!("s3://{bucket}/outcomes/req-ptr/stored.json")))
        .await;
    queue
        .send(&pointer(same, format!("s3://{bucket}/elsewhere/req-ptr.json")))
        .await;
    let messages = queue.receive(10, 1).await;
    assert_eq!(messages.len(), 2);
    let ran = forward(&queue.lambda_event(&messages), &cluster, &[]).await;
    ran.expect_code(0);
    assert_eq!(
        ran.json()["batchItemFailures"].as_array().unwrap().len(),
        2,
        "both stay queued: {}",
        ran.stderr
    );
    assert!(cluster.tasks().await.is_empty(), "nothing ran");
    assert!(
        ran.stderr.contains("not in the payload bucket's outcomes/"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr
            .contains("not for arn:aws:lambda:us-east-1:123456789012:function:echo"),
        "{}",
        ran.stderr
    );
}

/// A function's own relaunch setting (the tag `immortal:relaunch`, as serverless-immortal
/// writes it) wins over the stack's `IMMORTAL_RELAUNCH` (here the default,
/// `timeout,overflow`): an error is relaunched for a function that asks for errors, and a
/// timeout is not for one that asks only for handler overflows.
#[tokio::test]
async fn a_functions_own_relaunch_tag_wins_over_the_stacks_setting() {
    let sdk = Emulator::shared().sdk_config().await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let mut outcomes = Vec::new();
    for (own, error_message) in [
        ("timeout+error", "Cannot read properties of undefined"),
        ("overflow", "Task timed out after 3.00 seconds"),
    ] {
        let name = format!("own-relaunch-{}", uuid_like());
        let function = deploy(&sdk, &name, &bootstrap_zip_bytes(&fixture("echo")), &[]).await;
        lambda
            .tag_resource()
            .resource(&function.arn)
            .tags("immortal:relaunch", own)
            .send()
            .await
            .unwrap();
        let (_sdk, cluster, queue) = setup(&[("immortal:function", &name)]).await;
        let message_id = queue
            .send_dead_letter("{}", &format!("req-{name}"), error_message)
            .await;
        let messages = queue.receive(10, 1).await;
        let ran = forward(&queue.lambda_event(&messages), &cluster, &[]).await;
        ran.expect_code(0);
        outcomes.push((own, message_id, ran, cluster.tasks().await.len()));
    }
    let (_, _, relaunched, tasks) = &outcomes[0];
    assert_eq!(
        relaunched.json(),
        json!({"batchItemFailures": []}),
        "{}",
        relaunched.stderr
    );
    assert_eq!(*tasks, 1, "an error, relaunched by the function's own setting");
    let (_, message_id, declined, tasks) = &outcomes[1];
    assert_eq!(
        declined.json(),
        json!({"batchItemFailures": [{"itemIdentifier": message_id}]})
    );
    assert!(
        declined.stderr.contains(r#""decision":"declined""#),
        "{}",
        declined.stderr
    );
    assert_eq!(
        *tasks, 0,
        "a timeout, not relaunched for a function that asks only for overflows"
    );
}
