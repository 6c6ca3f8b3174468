//! Every run reports its outcome durably, in Lambda's destination-record format.

use aws_sdk_sqs::types::QueueAttributeName;
use immortal_handler_sdk::destination::DestinationRecord;
use immortal_handler_sdk::record::{self, QueueMessage};
use immortal_overflow::FailureClass;
use immortal_tests::ecs::Cluster;
use immortal_tests::emulator::Emulator;
use immortal_tests::lambda::uuid_like;
use immortal_tests::queue::Queue;
use immortal_tests::runner::{fixture, Ran, RunnerCmd};
use serde_json::{json, Value};

async fn run(cmd: RunnerCmd) -> Ran {
    tokio::task::spawn_blocking(move || cmd.run()).await.unwrap()
}

fn runner(bootstrap: &str, event: &Value, context: &Value) -> RunnerCmd {
    RunnerCmd::new().envs(Emulator::shared().env()).args([
        "--artifact".as_ref(),
        fixture(bootstrap).as_os_str(),
        "--event".as_ref(),
        event.to_string().as_ref(),
        "--context".as_ref(),
        context.to_string().as_ref(),
    ])
}

async fn queue(name: &str, attributes: &[(QueueAttributeName, &str)]) -> Queue {
    let sdk = Emulator::shared().sdk_config().await;
    Queue::create(&sdk, &format!("{name}-{}", uuid_like()), &[], attributes).await
}

/// The one message on `queue`, as a destination record, with its message attributes.
async fn only_record(queue: &Queue) -> (Value, aws_sdk_sqs::types::Message) {
    let messages = queue.receive(10, 2).await;
    assert_eq!(messages.len(), 1, "exactly one record");
    let body: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    (body, messages[0].clone())
}

fn overflow_context(request_id: &str) -> Value {
    json!({"request_id": request_id, "invoked_function_arn": "arn:aws:lambda:us-east-1:123456789012:function:echo",
           "overflow": {"attempt": 2, "error_type": "Sandbox.Timedout", "error_message": "Task timed out after 3.00 seconds", "source": "dlq"}})
}

#[tokio::test]
async fn a_successful_overflow_run_puts_one_success_record_with_the_exact_payloads() {
    let success = queue("success", &[]).await;
    let event = json!({"video": "a.mp4", "n": [1, 2.5], "nested": {"ü": "✓"}});
    let ran = run(runner("echo", &event, &overflow_context("req-ok")).env("IMMORTAL_ON_SUCCESS", &success.url)).await;
    ran.expect_code(0);
    let (record, message) = only_record(&success).await;
    assert_eq!(record["version"], "1.0");
    assert_eq!(record["requestContext"]["requestId"], "req-ok");
    assert_eq!(
        record["requestContext"]["functionArn"],
        "arn:aws:lambda:us-east-1:123456789012:function:echo:$LATEST"
    );
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(
        record["requestContext"]["approximateInvokeCount"], 2,
        "Lambda's attempts plus this one"
    );
    assert_eq!(record["requestPayload"], event, "the original event");
    assert_eq!(record["responsePayload"], ran.json(), "the function's response");
    assert_eq!(
        record["responseContext"],
        json!({"statusCode": 200, "executedVersion": "$LATEST"})
    );
    assert_eq!(record["immortal"]["source"], "runner");
    let attributes = message.message_attributes.unwrap();
    assert_eq!(attributes["immortal-source"].string_value(), Some("runner"));
    let typed: DestinationRecord = serde_json::from_value(record).unwrap();
    assert_eq!(typed.request_context.request_id, "req-ok");
    assert!(ran.stderr.contains("outcome record delivered"), "{}", ran.stderr);
}

#[tokio::test]
async fn a_failing_run_puts_one_retries_exhausted_record_with_the_error_json() {
    let (success, failure) = (queue("success", &[]).await, queue("failure", &[]).await);
    let ran = run(
        runner("fail", &json!({"reason": "disk full"}), &overflow_context("req-fail"))
            .env("IMMORTAL_ON_SUCCESS", &success.url)
            .env("IMMORTAL_ON_FAILURE", &failure.arn),
    )
    .await;
    ran.expect_code(1);
    let (record, _) = only_record(&failure).await;
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(
        record["responsePayload"],
        json!({"errorType": "Fixture.Failed", "errorMessage": "disk full"})
    );
    assert_eq!(success.depth().await, 0, "nothing on the success queue");
}

#[tokio::test]
async fn a_record_larger_than_the_queue_allows_arrives_as_a_pointer_to_the_full_record() {
    let small = queue("small", &[(QueueAttributeName::MaximumMessageSize, "1024")]).await;
    let sdk = Emulator::shared().sdk_config().await;
    let s3 = immortal_handler_sdk::aws::s3_client(&sdk);
    let bucket = format!("payloads-{}", uuid_like());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let event = json!({"blob": "x".repeat(3000)});
    let ran = run(runner("echo", &event, &overflow_context("req-big"))
        .env("IMMORTAL_ON_SUCCESS", &small.url)
        .env("IMMORTAL_PAYLOAD_BUCKET", &bucket))
    .await;
    ran.expect_code(0);
    let (pointer, _) = only_record(&small).await;
    let location = pointer["immortal"]["recordLocation"]
        .as_str()
        .expect("a pointer")
        .to_owned();
    assert!(
        location.starts_with(&format!("s3://{bucket}/outcomes/req-big/Success-")),
        "{location}"
    );
    assert_eq!(pointer["requestContext"]["requestId"], "req-big");
    let full = immortal_tests::s3::read(&s3, &location).await;
    let full: Value = serde_json::from_slice(&full).unwrap();
    assert_eq!(full["requestPayload"], event);
    assert_eq!(full["responsePayload"], ran.json());
}

/// An undelivered run: exit 6, `secret` in no log line, and where the record is kept.
fn kept_without(ran: &Ran, secret: &str) -> String {
    ran.expect_code(6);
    assert!(!ran.stderr.contains(secret), "the event is in the log:\n{}", ran.stderr);
    let line = ran
        .stderr
        .lines()
        .find(|l| l.contains("could not be delivered"))
        .expect("an error line");
    let logged: Value = serde_json::from_str(line).unwrap();
    logged["kept"].as_str().expect("where the record is kept").to_owned()
}

#[tokio::test]
async fn an_unreachable_destination_gives_exit_6_and_the_record_kept_whole_with_no_event_in_the_log() {
    let sdk = Emulator::shared().sdk_config().await;
    let s3 = immortal_handler_sdk::aws::s3_client(&sdk);
    let bucket = format!("payloads-{}", uuid_like());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    // The event carries a secret: it must reach no log line.
    let secret = format!("secret-{}", uuid_like());
    let event = json!({"keep": "me", "token": secret});
    let unreachable = |cmd: RunnerCmd| {
        cmd.env(
            "IMMORTAL_ON_SUCCESS",
            "https://sqs.us-east-1.amazonaws.com/123456789012/outcomes",
        )
        .env("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:1")
        .env("AWS_MAX_ATTEMPTS", "2")
    };
    let ran =
        run(unreachable(runner("echo", &event, &overflow_context("req-lost"))).env("IMMORTAL_PAYLOAD_BUCKET", &bucket))
            .await;
    let kept = kept_without(&ran, &secret);
    let kept = kept.as_str();
    assert!(
        kept.starts_with(&format!("s3://{bucket}/undelivered/req-lost/Success-")),
        "{kept}"
    );
    let record: Value = serde_json::from_slice(&immortal_tests::s3::read(&s3, kept).await).unwrap();
    assert_eq!(record["requestContext"]["requestId"], "req-lost");
    assert_eq!(record["requestPayload"], event);
    assert_eq!(record["responsePayload"], ran.json(), "the response is in the record");

    // Without a payload bucket (a local run): a file only the runner's user may read.
    let ran = run(unreachable(runner("echo", &event, &overflow_context("req-lost-local")))).await;
    let path = std::path::PathBuf::from(kept_without(&ran, &secret));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(record["requestPayload"], event);
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn records_reach_sns_subscribers_and_parse_with_the_forwarders_parser() {
    let sdk = Emulator::shared().sdk_config().await;
    let sns = aws_sdk_sns::Client::new(&sdk);
    let topic = sns
        .create_topic()
        .name(format!("outcomes-{}", uuid_like()))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let subscriber = queue("subscriber", &[]).await;
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&subscriber.arn)
        .send()
        .await
        .unwrap();
    let ran = run(
        runner("fail", &json!({"reason": "bad frame"}), &overflow_context("req-sns"))
            .env("IMMORTAL_ON_FAILURE", &topic),
    )
    .await;
    ran.expect_code(1);
    let messages = subscriber.receive(10, 2).await;
    assert_eq!(messages.len(), 1);
    let message = QueueMessage {
        message_id: "m".into(),
        body: messages[0].body().unwrap().to_owned(),
        ..Default::default()
    };
    let parsed = record::parse(&message).expect("the SNS-wrapped record parses");
    assert_eq!(parsed.request_id(), "req-sns");
    assert_eq!(
        FailureClass::of(&parsed),
        FailureClass::Redriven,
        "a runner's record put back on the queue is relaunched"
    );
}

#[tokio::test]
async fn a_failed_runs_record_redriven_by_a_person_is_relaunched_by_the_forwarder() {
    let failure = queue("failure", &[]).await;
    let event = json!({"try": "again"});
    run(runner("fail", &event, &overflow_context("req-redrive")).env("IMMORTAL_ON_FAILURE", &failure.url))
        .await
        .expect_code(1);
    let (record, _) = only_record(&failure).await;

    // A person moves it onto the overflow queue.
    let sdk = Emulator::shared().sdk_config().await;
    let cluster = Cluster::create(&sdk, &format!("c-{}", uuid_like())).await;
    let overflow = queue("overflow", &[]).await;
    overflow.send(&record.to_string()).await;
    let messages = overflow.receive(10, 1).await;
    let ran = run(
        RunnerCmd::lambda("dlq-forwarder", &overflow.lambda_event(&messages).to_string())
            .envs(Emulator::shared().env())
            .envs(cluster.forwarder_env()),
    )
    .await;
    assert_eq!(ran.json(), json!({"batchItemFailures": []}), "{}", ran.stderr);
    let tasks = cluster.tasks().await;
    assert_eq!(tasks.len(), 1);
    let envelope = cluster.task_envelope(&tasks[0]).await;
    assert_eq!(envelope["event"], event);
    let context = &envelope["context"];
    assert_eq!(context["request_id"], "req-redrive");
    assert_eq!(context["overflow"]["source"], "manual");
    assert_eq!(context["overflow"]["attempt"], 3);
}

#[tokio::test]
async fn the_forwarder_passes_records_it_will_not_relaunch_to_on_failure() {
    let sdk = Emulator::shared().sdk_config().await;
    let cluster = Cluster::create(&sdk, &format!("c-{}", uuid_like())).await;
    let dlq = Queue::create(
        &sdk,
        &format!("dlq-{}", uuid_like()),
        &[("immortal:function", "thumbnail")],
        &[],
    )
    .await;
    let watched = queue("watched", &[]).await;
    dlq.send_dead_letter(r#"{"k":"v"}"#, "req-declined", "Cannot read properties of undefined")
        .await;
    let messages = dlq.receive(10, 1).await;
    let ran = run(
        RunnerCmd::lambda("dlq-forwarder", &dlq.lambda_event(&messages).to_string())
            .envs(Emulator::shared().env())
            .envs(cluster.forwarder_env())
            .env("IMMORTAL_ON_FAILURE", &watched.url),
    )
    .await;
    assert_eq!(
        ran.json(),
        json!({"batchItemFailures": []}),
        "passed on, so it may leave the queue: {}",
        ran.stderr
    );
    assert!(cluster.tasks().await.is_empty(), "not relaunched");
    let (record, _) = only_record(&watched).await;
    assert_eq!(record["requestContext"]["requestId"], "req-declined");
    assert_eq!(
        record["requestContext"]["functionArn"],
        "arn:aws:lambda:us-east-1:123456789012:function:thumbnail:$LATEST"
    );
    assert_eq!(record["requestPayload"], json!({"k": "v"}));
    assert_eq!(
        record["responsePayload"]["errorMessage"],
        "Cannot read properties of undefined"
    );
    assert_eq!(record["immortal"]["source"], "forwarder");
}

#[tokio::test]
async fn records_reach_eventbridge_as_lambda_sends_them() {
    let sdk = Emulator::shared().sdk_config().await;
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let id = uuid_like();
    let bus = events
        .create_event_bus()
        .name(format!("outcomes-{id}"))
        .send()
        .await
        .unwrap()
        .event_bus_arn
        .unwrap();
    let target = queue("bridge", &[]).await;
    let rule = format!("immortal-{id}");
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .event_pattern(r#"{"source":["lambda"],"detail-type":["Lambda Function Invocation Result - Success"]}"#)
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(&target.arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let event = json!({"to": "eventbridge"});
    let ran = run(runner("echo", &event, &overflow_context("req-bridge")).env("IMMORTAL_ON_SUCCESS", &bus)).await;
    ran.expect_code(0);
    let messages = target.receive(10, 2).await;
    assert_eq!(messages.len(), 1, "{}", ran.stderr);
    let delivered: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(delivered["source"], "lambda");
    assert_eq!(delivered["detail-type"], "Lambda Function Invocation Result - Success");
    assert_eq!(delivered["detail"]["requestContext"]["requestId"], "req-bridge");
    assert_eq!(delivered["detail"]["requestPayload"], event);
    let message = QueueMessage {
        message_id: "m".into(),
        body: messages[0].body().unwrap().to_owned(),
        ..Default::default()
    };
    assert_eq!(
        record::parse(&message)
            .expect("the EventBridge-wrapped record parses")
            .request_id(),
        "req-bridge"
    );
}
