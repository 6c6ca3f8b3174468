//! Fault injection: a proxy of our own in front of the emulator throttles and breaks
//! calls, and nothing is lost or duplicated.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use immortal_tests::ecs::Cluster;
use immortal_tests::emulator::{aws_env, Emulator};
use immortal_tests::lambda::{deploy, ensure_functions, uuid_like};
use immortal_tests::queue::Queue;
use immortal_tests::runner::{fixture, Ran, RunnerCmd};
use immortal_tests::server::{Reply, Seen, TestServer};
use immortal_tests::zips::bootstrap_zip_bytes;
use serde_json::{json, Value};

async fn run(cmd: RunnerCmd) -> Ran {
    tokio::task::spawn_blocking(move || cmd.run()).await.unwrap()
}

fn throttled() -> Reply {
    Reply::Full {
        status: 400,
        headers: vec![("content-type".into(), "application/x-amz-json-1.1".into())],
        body: Bytes::from_static(br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#),
    }
}

fn no_capacity() -> Reply {
    Reply::json(
        200,
        &json!({"tasks": [], "failures": [{"reason": "Capacity is unavailable at this time. Please try again later or in a different availability zone"}]}),
    )
}

/// Tasks started, by clientToken.
type Launched = Arc<Mutex<BTreeMap<String, usize>>>;

/// A proxy in front of the emulator that answers RunTask with `fault(token)` when it
/// returns one, and otherwise plays ECS's clientToken idempotency (which the emulator
/// lacks): a token that already started a task gets that task back, not a second one.
/// Counts the tasks each token started.
fn ecs_proxy(fault: impl Fn(&str) -> Option<Reply> + Send + Sync + 'static) -> (TestServer, Launched) {
    let launched: Launched = Arc::default();
    let counted = launched.clone();
    let started: Arc<Mutex<BTreeMap<String, Bytes>>> = Arc::default();
    let server = TestServer::start(Some(Emulator::shared().url.clone()), move |req: &Seen| {
        if req.target() != Some("RunTask") {
            return Reply::Forward;
        }
        let token = req.json()["clientToken"].as_str().unwrap_or_default().to_owned();
        if let Some(reply) = fault(&token) {
            return reply;
        }
        if let Some(earlier) = started.lock().unwrap().get(&token) {
            return Reply::Full {
                status: 200,
                headers: vec![],
                body: earlier.clone(),
            };
        }
        let (started, counted) = (started.clone(), counted.clone());
        Reply::ForwardThen(Box::new(move |status, body| {
            let ok = status == 200
                && serde_json::from_slice::<Value>(body)
                    .is_ok_and(|v| v["tasks"].as_array().is_some_and(|t| !t.is_empty()));
            if ok {
                started.lock().unwrap().insert(token.clone(), body.clone());
                *counted.lock().unwrap().entry(token).or_default() += 1;
            }
        }))
    });
    (server, launched)
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
    let (proxy, launched) = ecs_proxy(move |token| {
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
    let response = forward(&queue, &messages, &cluster, &proxy.url, 2).await;
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
    let response = forward(&queue, &again, &cluster, &proxy.url, 2).await;
    assert!(failed_ids(&response).is_empty());
    queue.settle(&again, &response).await;

    let launched = launched.lock().unwrap().clone();
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
    assert!(
        first >= Duration::from_millis(150) && second >= first + Duration::from_millis(100),
        "backoff grows: {first:?} then {second:?}"
    );
}

#[tokio::test]
async fn a_storm_of_1000_timeouts_with_20_percent_throttling_ends_with_exactly_one_task_each() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("storm-{id}")).await;
    let parking = Queue::create(&sdk, &format!("parking-{id}"), &[], &[]).await;
    let redrive = json!({"deadLetterTargetArn": parking.arn, "maxReceiveCount": "10"}).to_string();
    // Four functions' dead-letter queues, 250 timeouts each (the emulator's receive slows
    // down with queue length; four queues keep the test quick without changing what it tests).
    let mut queues = Vec::new();
    ensure_functions(&sdk, &["thumbnail-0", "thumbnail-1", "thumbnail-2", "thumbnail-3"]).await;
    for q in 0..4 {
        let function = format!("thumbnail-{q}");
        let attributes = [
            (QueueAttributeName::VisibilityTimeout, "30"),
            (QueueAttributeName::RedrivePolicy, redrive.as_str()),
        ];
        queues.push(
            Queue::create(
                &sdk,
                &format!("storm-{id}-{q}"),
                &[("immortal:function", function.as_str())],
                &attributes,
            )
            .await,
        );
    }
    let mut sent = BTreeSet::new();
    for batch in 0..100 {
        let queue = &queues[batch % 4];
        let mut request = queue.sqs.send_message_batch().queue_url(&queue.url);
        for n in 0..10 {
            let attr = |t: &str, v: &str| {
                aws_sdk_sqs::types::MessageAttributeValue::builder()
                    .data_type(t)
                    .string_value(v)
                    .build()
                    .unwrap()
            };
            let request_id = format!("storm-{batch}-{n}");
            request = request.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("e{n}"))
                    .message_body(format!(r#"{{"video":"v{batch}-{n}.mp4"}}"#))
                    .message_attributes("RequestID", attr("String", &request_id))
                    .message_attributes("ErrorCode", attr("Number", "200"))
                    .message_attributes("ErrorMessage", attr("String", "Task timed out after 900.00 seconds"))
                    .build()
                    .unwrap(),
            );
        }
        for ok in request.send().await.unwrap().successful {
            sent.insert(ok.message_id);
        }
    }
    assert_eq!(sent.len(), 1000);

    // One RunTask call in five is throttled, whichever message it carries.
    let calls = Arc::new(Mutex::new(0u64));
    let (proxy, launched) = ecs_proxy(move |_| {
        let mut calls = calls.lock().unwrap();
        *calls += 1;
        calls.is_multiple_of(5).then(throttled)
    });

    // A poller per queue, as Lambda's event source mappings would run them. One attempt
    // per RunTask: a throttled record goes straight back to its queue.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut pollers = Vec::new();
    for queue in queues.clone() {
        let (cluster, url) = (cluster.clone(), proxy.url.clone());
        pollers.push(tokio::spawn(async move {
            while std::time::Instant::now() < deadline {
                let messages = queue.receive(10, 1).await;
                if messages.is_empty() {
                    if queue.depth().await == 0 {
                        break;
                    }
                    continue;
                }
                let response = forward(&queue, &messages, &cluster, &url, 1).await;
                let failed = queue.settle(&messages, &response).await;
                // A short visibility timeout for retries, so the test does not wait 30 s.
                queue.release(&messages, &failed).await;
            }
        }));
    }
    for poller in pollers {
        poller.await.unwrap();
    }
    let launched = launched.lock().unwrap().clone();
    assert_eq!(
        launched.keys().cloned().collect::<BTreeSet<_>>(),
        sent,
        "every message launched, none lost"
    );
    let twice: Vec<_> = launched.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "launched more than once: {twice:?}");
    assert_eq!(cluster.tasks().await.len(), 1000);
    for queue in &queues {
        assert_eq!(queue.depth().await, 0);
    }
    assert_eq!(parking.depth().await, 0, "nothing parked");
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
    let (proxy, launched) = ecs_proxy(|token| (!token.ends_with("/od")).then(no_capacity));
    let messages = queue.receive(10, 1).await;
    let ran = run(
        RunnerCmd::lambda("dlq-forwarder", &queue.lambda_event(&messages).to_string())
            .envs(aws_env(&proxy.url))
            .envs(cluster.forwarder_env())
            .env("IMMORTAL_CAPACITY_PROVIDERS", "FARGATE_SPOT:1"),
    )
    .await;
    assert_eq!(ran.json(), json!({"batchItemFailures": []}), "{}", ran.stderr);
    let calls: Vec<Value> = proxy
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
        launched.lock().unwrap().keys().cloned().collect::<Vec<_>>(),
        ["req-spot/1/od"]
    );
    assert_eq!(cluster.tasks().await.len(), 1);
}
