//! Fault injection: a proxy of our own in front of the emulator throttles and breaks
//! calls, and nothing is lost or duplicated.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use immortal_tests::ecs::Cluster;
use immortal_tests::emulator::{aws_env, Emulator};
use immortal_tests::fargate::{no_capacity, throttled, EcsProxy};
use immortal_tests::lambda::{deploy, uuid_like};
use immortal_tests::queue::Queue;
use immortal_tests::runner::{fixture, Ran, RunnerCmd};
use immortal_tests::server::{Reply, Seen, TestServer};
use immortal_tests::zips::bootstrap_zip_bytes;
use serde_json::{json, Value};

async fn run(cmd: RunnerCmd) -> Ran {
    tokio::task::spawn_blocking(move || cmd.run()).await.unwrap()
}

/// The forwarder, as Lambda runs it, on one batch, through `proxy`.
async fn forward(
    queue: &Queue,
    messages: &[aws_sdk_sqs::types::Message],
    cluster: &Cluster,
    proxy: &str,
    attempts: u32,
) -> Value {
    let cmd = RunnerCmd::lambda("dlq-forwarder", &queue.lambda_event(messages).to_string())
        .envs(aws_env(proxy))
        .envs(cluster.forwarder_env())
        .env("AWS_MAX_ATTEMPTS", attempts.to_string());
    let ran = run(cmd).await;
    ran.expect_code(0);
    ran.json()
}

fn failed_ids(response: &Value) -> BTreeSet<String> {
    response["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn throttled_and_capacity_failed_records_alone_are_retried_and_each_ends_with_one_task() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("c-{id}")).await;
    let queue = Queue::create(
        &sdk,
        &format!("dlq-{id}"),
        &[("immortal:function", "thumbnail")],
        &[(QueueAttributeName::VisibilityTimeout, "1")],
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(
            queue
                .send_dead_letter(
                    &format!(r#"{{"n":{n}}}"#),
                    &format!("req-{n}"),
                    "Task timed out after 3.00 seconds",
                )
                .await,
        );
    }
    // RunTask's client token is the invocation's attempt: `<request id>/<attempt>`.
    let token = |n: usize| format!("req-{n}/1");
    let (throttle, starve): (BTreeSet<String>, BTreeSet<String>) =
        ((0..3).map(token).collect(), (3..5).map(token).collect());
    let faults_on = Arc::new(Mutex::new(true));
    let on = faults_on.clone();
    let (t, s) = (throttle.clone(), starve.clone());
    let proxy = EcsProxy::start(move |token| {
        if !*on.lock().unwrap() {
            return None;
        }
        if t.contains(token) {
            Some(throttled())
        } else if s.contains(token) {
            Some(no_capacity())
        } else {
            None
        }
    });

    let mut messages = queue.receive(10, 1).await;
    while messages.len() < 10 {
        messages.extend(queue.receive(10 - messages.len() as i32, 1).await);
    }
    let response = forward(&queue, &messages, &cluster, proxy.url(), 2).await;
    let expected: BTreeSet<String> = ids[0..5].iter().cloned().collect();
    assert_eq!(
        failed_ids(&response),
        expected,
        "exactly the throttled and capacity-failed records are retried"
    );
    queue.settle(&messages, &response).await;
    assert_eq!(cluster.tasks().await.len(), 5);

    // ECS recovers; SQS delivers the five again.
    *faults_on.lock().unwrap() = false;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = queue.receive(10, 2).await;
    let redelivered: BTreeSet<String> = again.iter().map(|m| m.message_id.clone().unwrap()).collect();
    assert_eq!(redelivered, expected);
    let response = forward(&queue, &again, &cluster, proxy.url(), 2).await;
    assert!(failed_ids(&response).is_empty());
    queue.settle(&again, &response).await;

    let launched = proxy.launched.lock().unwrap().clone();
    assert_eq!(
        launched.keys().cloned().collect::<BTreeSet<_>>(),
        (0..10).map(token).collect(),
        "every invocation launched"
    );
    assert!(
        launched.values().all(|n| *n == 1),
        "no invocation launched twice: {launched:?}"
    );
    assert_eq!(cluster.tasks().await.len(), 10);
    assert_eq!(queue.depth().await, 0);
}

#[tokio::test]
async fn getfunction_throttling_and_s3_errors_are_retried_with_backoff() {
    let sdk = Emulator::shared().sdk_config().await;
    let name = format!("flaky-{}", uuid_like());
    deploy(&sdk, &name, &bootstrap_zip_bytes(&fixture("echo")), &[]).await;
    let failures = Arc::new(Mutex::new((0, 0)));
    let counts = failures.clone();
    let proxy = TestServer::start(Some(Emulator::shared().url.clone()), move |req: &Seen| {
        let mut counts = counts.lock().unwrap();
        if req.method == "GET" && req.path.starts_with("/2015-03-31/functions/") && counts.0 < 2 {
            counts.0 += 1;
            return Reply::Full {
                status: 429,
                headers: vec![
                    ("x-amzn-errortype".into(), "TooManyRequestsException".into()),
                    ("content-type".into(), "application/json".into()),
                ],
                body: Bytes::from_static(br#"{"Type":"User","message":"Rate exceeded"}"#),
            };
        }
        if req.method == "GET" && req.path.starts_with("/awslambda-us-east-1-tasks/") && counts.1 < 2 {
            counts.1 += 1;
            return Reply::Full {
                status: 500,
                headers: vec![],
                body: Bytes::from_static(b"<Error><Code>InternalError</Code></Error>"),
            };
        }
        Reply::Forward
    });
    let ran =
        run(RunnerCmd::new()
            .envs(aws_env(&proxy.url))
            .args(["--event", r#"{"flaky":true}"#, "--function", &name]))
        .await;
    ran.expect_code(0);
    assert_eq!(ran.json()["event"], json!({"flaky": true}));
    let requests = proxy.requests();
    let get_function: Vec<&Seen> = requests
        .iter()
        .filter(|r| r.path.starts_with("/2015-03-31/functions/"))
        .collect();
    assert_eq!(get_function.len(), 3, "two throttled calls, then success");
    let downloads: Vec<&Seen> = requests
        .iter()
        .filter(|r| r.path.starts_with("/awslambda-us-east-1-tasks/"))
        .collect();
    assert_eq!(downloads.len(), 3, "two server errors, then success");
    let (first, second) = (downloads[1].at - downloads[0].at, downloads[2].at - downloads[1].at);
    // Lower bounds only (a loaded machine makes waits longer, never shorter): the fetcher
    // backs off 200 ms, then 400 ms (a little slack for timer granularity).
    assert!(
        first >= Duration::from_millis(180) && second >= Duration::from_millis(380),
        "backoff grows: {first:?} then {second:?}"
    );
}

#[tokio::test]
async fn no_spot_capacity_falls_back_to_fargate_on_demand_once() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("spot-{id}")).await;
    let queue = Queue::create(&sdk, &format!("spot-{id}"), &[("immortal:function", "thumbnail")], &[]).await;
    queue
        .send_dead_letter(r#"{"k":1}"#, "req-spot", "Task timed out after 3.00 seconds")
        .await;
    // Spot has no capacity: every call with the attempt's own token (the strategy call)
    // fails; the on-demand retry carries a token of its own.
    let proxy = EcsProxy::start(|token| (!token.ends_with("/od")).then(no_capacity));
    let messages = queue.receive(10, 1).await;
    let ran = run(
        RunnerCmd::lambda("dlq-forwarder", &queue.lambda_event(&messages).to_string())
            .envs(aws_env(proxy.url()))
            .envs(cluster.forwarder_env())
            .env("IMMORTAL_CAPACITY_PROVIDERS", "FARGATE_SPOT:1"),
    )
    .await;
    assert_eq!(ran.json(), json!({"batchItemFailures": []}), "{}", ran.stderr);
    let calls: Vec<Value> = proxy
        .server
        .requests()
        .iter()
        .filter(|r| r.target() == Some("RunTask"))
        .map(|r| r.json())
        .collect();
    assert_eq!(calls.len(), 2, "Spot once, then on demand once");
    assert_eq!(
        calls[0]["capacityProviderStrategy"][0]["capacityProvider"],
        "FARGATE_SPOT"
    );
    assert!(
        calls[0].get("launchType").is_none(),
        "a strategy and a launch type never go together"
    );
    assert_eq!(calls[1]["launchType"], "FARGATE");
    assert_eq!(
        proxy.launched.lock().unwrap().keys().cloned().collect::<Vec<_>>(),
        ["req-spot/1/od"]
    );
    assert_eq!(cluster.tasks().await.len(), 1);
}

/// STS throttling the runner's AssumeRole of the function's role past the SDK's retries
/// is "not now", not "never": exit 8, and the record (a local run has no ledger to
/// relaunch from) says `Immortal.AwsUnavailable`, not that the role refused the runner.
#[tokio::test]
async fn a_throttled_assume_role_is_not_the_invocations_failure() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let name = format!("sts-throttled-{id}");
    immortal_tests::lambda::deploy_with_role(
        &sdk,
        &name,
        &bootstrap_zip_bytes(&fixture("echo")),
        &[],
        &format!("sts-role-{id}"),
    )
    .await;
    let failures = Queue::create(&sdk, &format!("sts-failures-{id}"), &[], &[]).await;
    // STS's query protocol: the action is in the form body; a throttle is a 400 with the
    // code `Throttling`, as STS answers it.
    let sts = TestServer::start(Some(Emulator::shared().url.clone()), |req: &Seen| {
        if String::from_utf8_lossy(&req.body).contains("Action=AssumeRole") {
            return Reply::Full {
                status: 400,
                headers: vec![("content-type".into(), "text/xml".into())],
                body: Bytes::from_static(
                    b"<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>",
                ),
            };
        }
        Reply::Forward
    });
    let ran = run(RunnerCmd::new()
        .envs(Emulator::shared().env())
        .env("AWS_ENDPOINT_URL_STS", &sts.url)
        .env("AWS_MAX_ATTEMPTS", "2")
        .env("IMMORTAL_FUNCTION_ROLE", "assume")
        .args(["--event", "{}", "--on-failure", &failures.url])
        .args(["--context", &immortal_tests::lambda::context_for(&name, "req-sts")]))
    .await;
    ran.expect_code(8);
    assert!(
        ran.stderr.contains("for now") && ran.stderr.contains("Throttling"),
        "{}",
        ran.stderr
    );
    let records = failures.take_all().await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["responsePayload"]["errorType"], "Immortal.AwsUnavailable");
}

/// The task's envelope in S3, with S3 failing (503 SlowDown) past the SDK's retries: not
/// bad input (exit 2) but "not now" (exit 8), so the attempt is relaunched rather than
/// taken for a broken envelope; a missing envelope stays bad input.
#[tokio::test]
async fn an_envelope_s3_cannot_serve_for_now_is_not_bad_input() {
    let sdk = Emulator::shared().sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    let bucket = format!("envelopes-{}", uuid_like());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let envelope = json!({"event": {"k": 1}, "context": {"aws_request_id": "req-slow"}});
    s3.put_object()
        .bucket(&bucket)
        .key("envelopes/req-slow.json")
        .body(envelope.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let proxy = TestServer::start(Some(Emulator::shared().url.clone()), |req: &Seen| {
        if req.method == "GET" && req.path.contains("/envelopes/") {
            return Reply::Full {
                status: 503,
                headers: vec![("content-type".into(), "application/xml".into())],
                body: Bytes::from_static(
                    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                ),
            };
        }
        Reply::Forward
    });
    let task = |key: &str| {
        RunnerCmd::new()
            .envs(aws_env(&proxy.url))
            .env("AWS_MAX_ATTEMPTS", "2")
            .env("IMMORTAL_ENVELOPE_URL", format!("s3://{bucket}/{key}"))
            .args(["--artifact", fixture("echo").to_str().unwrap()])
    };
    let slow = run(task("envelopes/req-slow.json")).await;
    slow.expect_code(8);
    assert!(
        slow.stderr.contains("SlowDown") && slow.stderr.contains("for now"),
        "{}",
        slow.stderr
    );
    let reads = proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/envelopes/"))
        .count();
    assert_eq!(reads, 2, "the SDK's tries, then no more");
    let missing = run(task("missing/req-none.json")).await;
    missing.expect_code(2);
}
