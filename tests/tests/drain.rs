//! Drain workers (`runner drain`) as local processes with the environment a task would
//! get, against the emulator; and the forwarder's scaling mode.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use immortal_tests::ecs::{task_env, Cluster};
use immortal_tests::emulator::Emulator;
use immortal_tests::lambda::{deploy, uuid_like, TASKS_BUCKET};
use immortal_tests::queue::{timeout_record, Queue, EMULATOR_SENDER};
use immortal_tests::runner::{fixture, Ran, RunnerCmd, Running};
use immortal_tests::server::{Reply, Seen, TestServer};
use immortal_tests::zips::bootstrap_zip_bytes;
use serde_json::{json, Value};

/// A drain worker with a code cache of its own (so each worker's downloads can be counted).
fn worker(queue: &Queue, outcomes: &Queue, cache: &Path, idle: &str) -> Running {
    worker_cmd(queue, outcomes, cache, idle).spawn()
}

fn worker_cmd(queue: &Queue, outcomes: &Queue, cache: &Path, idle: &str) -> RunnerCmd {
    RunnerCmd::new()
        .cache(cache)
        .envs(Emulator::shared().env())
        .env("IMMORTAL_QUEUE_URL", &queue.url)
        .env("IMMORTAL_ON_SUCCESS", &outcomes.url)
        .env("IMMORTAL_TRUSTED_SENDERS", EMULATOR_SENDER)
        .args(["--idle-timeout", idle])
}

async fn wait(running: Running, limit: Duration) -> Ran {
    tokio::task::spawn_blocking(move || running.wait(limit)).await.unwrap()
}

/// Every outcome record on `queue`, by request id (how many of each).
async fn outcomes_by_request(queue: &Queue) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for record in queue.take_all().await {
        *seen
            .entry(record["requestContext"]["requestId"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    seen
}

/// Sends `count` dead letters of timed-out invocations (`{prefix}-0`...); their request ids.
async fn timed_out(queue: &Queue, prefix: &str, count: usize) -> BTreeSet<String> {
    let mut sent = BTreeSet::new();
    for n in 0..count {
        let request_id = format!("{prefix}-{n}");
        queue
            .send_dead_letter(
                &format!(r#"{{"n":{n}}}"#),
                &request_id,
                "Task timed out after 3.00 seconds",
            )
            .await;
        sent.insert(request_id);
    }
    sent
}

fn log_count(stderr: &str, message: &str, field: &str, value: &str) -> usize {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message && v[field].as_str().is_some_and(|f| f.contains(value)))
        .count()
}

#[tokio::test]
async fn three_workers_drain_200_messages_for_two_functions_each_exactly_once() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let zip = bootstrap_zip_bytes(&fixture("echo"));
    let (a, b) = (format!("drain-a-{id}"), format!("drain-b-{id}"));
    let functions = [
        deploy(&sdk, &a, &zip, &[("WHO", "a")]).await,
        deploy(&sdk, &b, &zip, &[("WHO", "b")]).await,
    ];
    let queue = Queue::create(
        &sdk,
        &format!("drain-{id}"),
        &[],
        &[(QueueAttributeName::VisibilityTimeout, "30")],
    )
    .await;
    let outcomes = Queue::create(&sdk, &format!("drain-out-{id}"), &[], &[]).await;
    let mut sent = BTreeSet::new();
    for batch in 0..20 {
        let mut request = queue.sqs.send_message_batch().queue_url(&queue.url);
        for n in 0..10 {
            let request_id = format!("req-{batch}-{n}");
            let function = &functions[n % 2].arn;
            let body = timeout_record(&request_id, function, &json!({"batch": batch, "n": n}));
            request = request.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("e{n}"))
                    .message_body(body)
                    .build()
                    .unwrap(),
            );
            sent.insert(request_id);
        }
        request.send().await.unwrap();
    }

    let caches: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let workers: Vec<Running> = caches
        .iter()
        .map(|c| worker(&queue, &outcomes, c.path(), "3"))
        .collect();
    let mut ran = Vec::new();
    for w in workers {
        ran.push(wait(w, Duration::from_secs(240)).await);
    }
    for r in &ran {
        r.expect_code(0);
        assert!(
            r.stderr.contains("drain worker done"),
            "exited after the idle time:\n{}",
            r.stderr
        );
        for function in [&a, &b] {
            let downloads = log_count(&r.stderr, "downloaded", "what", function);
            assert!(downloads <= 1, "{function} fetched {downloads} times by one worker");
        }
    }
    let worked: usize = ran
        .iter()
        .filter(|r| log_count(&r.stderr, "message ran", "request_id", "req-") > 0)
        .count();
    assert!(worked >= 2, "the work was shared");
    let records = outcomes_by_request(&outcomes).await;
    assert_eq!(
        records.keys().cloned().collect::<BTreeSet<_>>(),
        sent,
        "every message ran"
    );
    assert!(records.values().all(|n| *n == 1), "each exactly once: {records:?}");
    assert_eq!(queue.depth().await, 0, "all deleted");
}

#[tokio::test]
async fn two_messages_for_one_function_at_once_download_its_code_once() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let function = deploy(&sdk, &format!("once-{id}"), &bootstrap_zip_bytes(&fixture("echo")), &[]).await;
    let queue = Queue::create(&sdk, &format!("once-{id}"), &[], &[]).await;
    let outcomes = Queue::create(&sdk, &format!("once-out-{id}"), &[], &[]).await;
    for n in 0..2 {
        queue
            .send(&timeout_record(
                &format!("req-once-{n}"),
                &function.arn,
                &json!({"n": n}),
            ))
            .await;
    }
    // S3 through a proxy that counts the code's GETs and answers them slowly, so the
    // second message asks while the first one's download is still under way.
    let s3 = TestServer::start(Some(Emulator::shared().url.clone()), |req: &Seen| {
        if req.method == "GET" && req.path.starts_with(&format!("/{TASKS_BUCKET}/")) {
            Reply::After(Duration::from_millis(1500), Box::new(Reply::Forward))
        } else {
            Reply::Forward
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let running = worker_cmd(&queue, &outcomes, cache.path(), "2")
        .env("AWS_ENDPOINT_URL_S3", &s3.url)
        .args(["--concurrency", "2"])
        .spawn();
    let ran = wait(running, Duration::from_secs(60)).await;
    ran.expect_code(0);
    let gets = s3
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with(&format!("/{TASKS_BUCKET}/")))
        .count();
    assert_eq!(gets, 1, "one download for both messages:\n{}", ran.stderr);
    assert_eq!(
        log_count(&ran.stderr, "downloaded", "what", "once-"),
        1,
        "{}",
        ran.stderr
    );
    assert_eq!(
        log_count(&ran.stderr, "message ran", "request_id", "req-once-"),
        2,
        "{}",
        ran.stderr
    );
    let waited = ran
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "code ready" && v["waited"] == true)
        .count();
    assert_eq!(
        waited, 1,
        "the second message waited for the first one's download:\n{}",
        ran.stderr
    );
    assert_eq!(outcomes_by_request(&outcomes).await.len(), 2);
}

async fn sleepy_function(id: &str) -> (aws_config::SdkConfig, String) {
    let sdk = Emulator::shared().sdk_config().await;
    let name = format!("sleepy-{id}");
    let function = deploy(&sdk, &name, &bootstrap_zip_bytes(&fixture("sleep")), &[]).await;
    (sdk, function.arn)
}

#[tokio::test]
async fn a_run_longer_than_the_visibility_timeout_is_not_delivered_to_a_second_worker() {
    let id = uuid_like();
    let (sdk, arn) = sleepy_function(&id).await;
    let queue = Queue::create(
        &sdk,
        &format!("short-{id}"),
        &[],
        &[(QueueAttributeName::VisibilityTimeout, "2")],
    )
    .await;
    let outcomes = Queue::create(&sdk, &format!("short-out-{id}"), &[], &[]).await;
    queue
        .send(&timeout_record("req-long", &arn, &json!({"seconds": 6})))
        .await;
    let caches: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = worker(&queue, &outcomes, caches[0].path(), "3");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = worker(&queue, &outcomes, caches[1].path(), "3");
    let (first, second) = (
        wait(first, Duration::from_secs(60)).await,
        wait(second, Duration::from_secs(60)).await,
    );
    first.expect_code(0);
    second.expect_code(0);
    let runs = log_count(&first.stderr, "message ran", "request_id", "req-long")
        + log_count(&second.stderr, "message ran", "request_id", "req-long");
    assert_eq!(
        runs, 1,
        "one run in all\nfirst:\n{}\nsecond:\n{}",
        first.stderr, second.stderr
    );
    assert_eq!(
        outcomes_by_request(&outcomes).await,
        BTreeMap::from([("req-long".to_owned(), 1)])
    );
    assert_eq!(queue.depth().await, 0);
}

#[tokio::test]
async fn sigterm_mid_run_releases_the_message_and_another_worker_runs_it() {
    let id = uuid_like();
    let (sdk, arn) = sleepy_function(&id).await;
    let queue = Queue::create(
        &sdk,
        &format!("term-{id}"),
        &[],
        &[(QueueAttributeName::VisibilityTimeout, "30")],
    )
    .await;
    let outcomes = Queue::create(&sdk, &format!("term-out-{id}"), &[], &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    queue
        .send(&timeout_record(
            "req-term",
            &arn,
            &json!({"seconds": 3, "pid_file": pid_file}),
        ))
        .await;
    let cache = tempfile::tempdir().unwrap();
    let first = worker(&queue, &outcomes, cache.path(), "30");
    for _ in 0..600 {
        if pid_file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pid_file.exists(), "the first worker started the run");
    first.signal(libc::SIGTERM);
    let first = wait(first, Duration::from_secs(30)).await;
    first.expect_code(143);
    assert!(first.stderr.contains("released for another worker"), "{}", first.stderr);
    assert_eq!(
        outcomes_by_request(&outcomes).await.len(),
        0,
        "no outcome from the stopped run"
    );

    let second = wait(worker(&queue, &outcomes, cache.path(), "2"), Duration::from_secs(60)).await;
    second.expect_code(0);
    assert_eq!(
        log_count(&second.stderr, "message ran", "request_id", "req-term"),
        1,
        "{}",
        second.stderr
    );
    assert_eq!(
        outcomes_by_request(&outcomes).await,
        BTreeMap::from([("req-term".to_owned(), 1)])
    );
    assert_eq!(queue.depth().await, 0, "none lost, none left");
}

#[tokio::test]
async fn drain_mode_over_both_overflow_queues_scales_on_their_depth_and_drains_both() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("scale-{id}")).await;
    // The two example queues: a function's dead-letter queue, and the failures queue
    // several functions' destinations share.
    let name = format!("scaled-{id}");
    let function = deploy(&sdk, &name, &bootstrap_zip_bytes(&fixture("echo")), &[]).await;
    let dlq = Queue::create(&sdk, &format!("scale-dlq-{id}"), &[("immortal:function", &name)], &[]).await;
    let failures = Queue::create(&sdk, &format!("scale-failures-{id}"), &[], &[]).await;
    let mut sent = timed_out(&dlq, "req-dlq", 15).await;
    for n in 0..10 {
        let request_id = format!("req-failures-{n}");
        failures
            .send(&timeout_record(&request_id, &function.arn, &json!({"n": n})))
            .await;
        sent.insert(request_id);
    }
    let both = format!("{},{}", dlq.url, failures.url);
    // The configured queues only: the attached ones are the next test's (tests run at
    // once, against one emulator).
    let tick = |event_id: &str| scaler_tick(&cluster, &both, event_id).env("IMMORTAL_DRAIN_ATTACHED", "false");
    let first = tokio::task::spawn_blocking({
        let cmd = tick("tick-1");
        move || cmd.run()
    })
    .await
    .unwrap();
    first.expect_code(0);
    let result = &first.json()["tick"];
    assert_eq!(
        (
            result["depth"].as_u64(),
            result["running"].as_u64(),
            result["started"].as_u64()
        ),
        (Some(25), Some(0), Some(3)),
        "the depth of both queues: {result}"
    );
    let tasks = cluster.tasks().await;
    assert_eq!(tasks.len(), 3);
    for task in &tasks {
        assert_eq!(task.started_by(), Some("immortal-drain"));
        assert_eq!(task_env(task)["IMMORTAL_QUEUE_URL"], both, "every worker drains both");
        assert_eq!(task_env(task)["IMMORTAL_DRAIN_ATTACHED"], "false");
    }

    // One of those workers, as its task runs it: both queues drained, each run once.
    let outcomes = Queue::create(&sdk, &format!("scale-out-{id}"), &[], &[]).await;
    let cache = tempfile::tempdir().unwrap();
    let env = task_env(&tasks[0]);
    let worker = RunnerCmd::new()
        .cache(cache.path())
        .envs(Emulator::shared().env())
        .env("IMMORTAL_QUEUE_URL", &env["IMMORTAL_QUEUE_URL"])
        .env("IMMORTAL_TRUSTED_SENDERS", EMULATOR_SENDER)
        .env("IMMORTAL_ON_SUCCESS", &outcomes.url)
        .args(["--idle-timeout", "3", "--concurrency", "4"])
        .spawn();
    let ran = wait(worker, Duration::from_secs(180)).await;
    ran.expect_code(0);
    let seen = outcomes_by_request(&outcomes).await;
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        sent,
        "both queues drained"
    );
    assert!(seen.values().all(|n| *n == 1), "each run once: {seen:?}");
    assert_eq!((dlq.depth().await, failures.depth().await), (0, 0));

    // More work arrives; three workers already run (as far as ECS knows), the cap is five.
    for n in 0..60 {
        failures.send(&format!(r#"{{"more":{n}}}"#)).await;
    }
    let second = tokio::task::spawn_blocking({
        let cmd = tick("tick-2");
        move || cmd.run()
    })
    .await
    .unwrap();
    let result = &second.json()["tick"];
    assert_eq!(
        (
            result["depth"].as_u64(),
            result["running"].as_u64(),
            result["started"].as_u64()
        ),
        (Some(60), Some(3), Some(2)),
        "{result}"
    );
    assert_eq!(cluster.tasks().await.len(), 5);
}

/// The scaler's scheduled tick, over the `configured` queues.
fn scaler_tick(cluster: &Cluster, configured: &str, event_id: &str) -> RunnerCmd {
    let event = json!({"version": "0", "id": event_id, "detail-type": "Scheduled Event", "source": "aws.events",
                       "account": "123456789012", "time": "2026-11-22T10:00:00Z", "region": "us-east-1",
                       "resources": ["arn:aws:events:us-east-1:123456789012:rule/immortal-scaler"], "detail": {}});
    RunnerCmd::lambda("dlq-forwarder", &event.to_string())
        .envs(Emulator::shared().env())
        .envs(cluster.forwarder_env())
        .env("IMMORTAL_MODE", "drain")
        .env("IMMORTAL_DRAIN_QUEUE_URL", configured)
        .env("IMMORTAL_MAX_WORKERS", "5")
        .env("IMMORTAL_STARTED_BY", "immortal-drain")
}

/// serverless-immortal's `via: deadLetter` gives a function a dead-letter queue of its
/// own, tagged with its name and `immortal:enabled=true` (`deadLetterResources` in
/// serverless-immortal/lib/attach.js), which the stack's configuration does not list.
#[tokio::test]
async fn drain_mode_counts_and_drains_the_attached_functions_own_dead_letter_queues() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("attached-{id}")).await;
    let name = format!("attached-{id}");
    deploy(&sdk, &name, &bootstrap_zip_bytes(&fixture("echo")), &[]).await;
    let configured = Queue::create(&sdk, &format!("attached-failures-{id}"), &[], &[]).await;
    let own = Queue::create(
        &sdk,
        &format!("attached-dlq-{id}"),
        &[("immortal:function", &name), ("immortal:enabled", "true")],
        &[],
    )
    .await;
    let sent = timed_out(&own, "req-attached", 12).await;

    let ticked = tokio::task::spawn_blocking({
        let cmd = scaler_tick(&cluster, &configured.url, "tick-attached");
        move || cmd.run()
    })
    .await
    .unwrap();
    ticked.expect_code(0);
    let result = &ticked.json()["tick"];
    assert_eq!(
        result["queues"],
        json!([configured.url, own.url]),
        "found by its tags: {result}"
    );
    assert_eq!(
        (result["depth"].as_u64(), result["started"].as_u64()),
        (Some(12), Some(2)),
        "counted: {result}"
    );
    let tasks = cluster.tasks().await;
    assert_eq!(tasks.len(), 2);
    let env = task_env(&tasks[0]);
    assert_eq!(
        env["IMMORTAL_QUEUE_URL"], configured.url,
        "the configured queues, named"
    );
    assert_eq!(
        env["IMMORTAL_DRAIN_ATTACHED"], "true",
        "the attached ones, found by the worker"
    );

    // One worker, as its task runs it: the function's own queue drained, each run once.
    let outcomes = Queue::create(&sdk, &format!("attached-out-{id}"), &[], &[]).await;
    let cache = tempfile::tempdir().unwrap();
    let worker = RunnerCmd::new()
        .cache(cache.path())
        .envs(Emulator::shared().env())
        .env("IMMORTAL_QUEUE_URL", &env["IMMORTAL_QUEUE_URL"])
        .env("IMMORTAL_DRAIN_ATTACHED", &env["IMMORTAL_DRAIN_ATTACHED"])
        .env("IMMORTAL_TRUSTED_SENDERS", EMULATOR_SENDER)
        .env("IMMORTAL_ON_SUCCESS", &outcomes.url)
        .args(["--idle-timeout", "3", "--concurrency", "4"])
        .spawn();
    let ran = wait(worker, Duration::from_secs(180)).await;
    ran.expect_code(0);
    assert_eq!(
        log_count(
            &ran.stderr,
            "an attached function's dead-letter queue: draining it too",
            "queue",
            &own.url
        ),
        1,
        "{}",
        ran.stderr
    );
    let seen = outcomes_by_request(&outcomes).await;
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), sent, "its queue drained");
    assert!(seen.values().all(|n| *n == 1), "each run once: {seen:?}");
    assert_eq!(own.depth().await, 0);
}

#[tokio::test]
async fn a_run_nearing_sqs_visibility_limit_is_handed_to_the_ledger_and_runs_once() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("handover-{id}")).await;
    let name = format!("long-{id}");
    deploy(&sdk, &name, &bootstrap_zip_bytes(&fixture("sleep")), &[]).await;
    let queue = Queue::create(
        &sdk,
        &format!("handover-{id}"),
        &[("immortal:function", &name)],
        &[(QueueAttributeName::VisibilityTimeout, "30")],
    )
    .await;
    let outcomes = Queue::create(&sdk, &format!("handover-out-{id}"), &[], &[]).await;
    queue
        .send_dead_letter(r#"{"seconds": 4}"#, "req-long", "Task timed out after 3.00 seconds")
        .await;
    let cache = tempfile::tempdir().unwrap();
    // SQS's 12 hours, shrunk to one second.
    let worker = worker_cmd(&queue, &outcomes, cache.path(), "2")
        .env("IMMORTAL_PAYLOAD_BUCKET", &cluster.payload_bucket)
        .env("IMMORTAL_HANDOVER_AFTER", "1")
        .spawn();

    let mut handed = None;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(entry) = cluster.ledger_entry("req-long").await {
            handed = Some(entry);
            break;
        }
    }
    let handed = handed.expect("the run was handed to the ledger");
    assert_eq!(handed["state"], "running", "{handed}");
    assert_eq!(handed["attempt"], 1);
    // No task to ask ECS about (not on ECS here): the worker holds the attempt by a
    // lease it renews, so that the sweep relaunches it if the worker dies.
    assert!(handed["task"].is_null(), "{handed}");
    let lease = handed["lease_until_ms"].as_u64().unwrap();
    assert!(
        lease > immortal_overflow::ledger::now_ms(),
        "a lease in force: {handed}"
    );
    assert_eq!(
        queue.depth().await,
        0,
        "its message left the queue: SQS will not deliver it again"
    );

    let ran = wait(worker, Duration::from_secs(60)).await;
    ran.expect_code(0);
    assert!(ran.stderr.contains("handed to the ledger"), "{}", ran.stderr);
    assert_eq!(
        outcomes_by_request(&outcomes).await,
        BTreeMap::from([("req-long".to_owned(), 1)]),
        "one outcome"
    );
    let ended = cluster.ledger_entry("req-long").await.unwrap();
    assert_eq!(ended["state"], "succeeded", "the ledger records how it ended: {ended}");
}

#[tokio::test]
async fn a_message_whose_run_cannot_start_is_reported_with_its_cause_and_leaves_the_queue() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let bare = deploy(
        &sdk,
        &format!("bare-{id}"),
        &immortal_tests::zips::zip_bytes(&[immortal_tests::zips::Entry::File("README", b"no bootstrap", 0o644)]),
        &[],
    )
    .await;
    let queue = Queue::create(&sdk, &format!("unrunnable-{id}"), &[], &[]).await;
    let outcomes = Queue::create(&sdk, &format!("unrunnable-ok-{id}"), &[], &[]).await;
    let failures = Queue::create(&sdk, &format!("unrunnable-failed-{id}"), &[], &[]).await;
    queue
        .send(&timeout_record("req-unrunnable", &bare.arn, &json!({"keep": "me"})))
        .await;
    let cache = tempfile::tempdir().unwrap();
    let worker = worker_cmd(&queue, &outcomes, cache.path(), "2")
        .env("IMMORTAL_ON_FAILURE", &failures.url)
        .spawn();
    let ran = wait(worker, Duration::from_secs(60)).await;
    ran.expect_code(0);
    let records = failures.receive(10, 2).await;
    assert_eq!(records.len(), 1, "{}", ran.stderr);
    let record: Value = serde_json::from_str(records[0].body().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["requestId"], "req-unrunnable");
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["responsePayload"]["errorType"], "Immortal.RuntimeUnavailable");
    assert_eq!(record["requestPayload"], json!({"keep": "me"}), "the event, kept");
    assert_eq!(queue.depth().await, 0, "reported, so it leaves the queue");
}

/// A drain worker checks senders as the forwarder does: with no operator trusted, a
/// record that the function's own role did not send (here moto's one sender for every
/// message) never runs; it stays queued, for the parking queue, and the log says who
/// sent it.
#[tokio::test]
async fn a_drain_worker_runs_no_record_its_functions_role_did_not_send() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let name = format!("unsent-{id}");
    let echo = deploy(&sdk, &name, &bootstrap_zip_bytes(&fixture("echo")), &[]).await;
    let queue = Queue::create(
        &sdk,
        &format!("unsent-{id}"),
        &[],
        &[(QueueAttributeName::VisibilityTimeout, "60")],
    )
    .await;
    let outcomes = Queue::create(&sdk, &format!("unsent-ok-{id}"), &[], &[]).await;
    queue
        .send(&timeout_record("req-unsent", &echo.arn, &json!({"secret": "event"})))
        .await;
    let cache = tempfile::tempdir().unwrap();
    let worker = worker_cmd(&queue, &outcomes, cache.path(), "2")
        .env("IMMORTAL_TRUSTED_SENDERS", "")
        .spawn();
    let ran = wait(worker, Duration::from_secs(60)).await;
    ran.expect_code(0);
    assert!(
        outcomes.receive(10, 1).await.is_empty(),
        "it did not run: {}",
        ran.stderr
    );
    assert_eq!(queue.depth().await, 1, "it stays queued, for the parking queue");
    let line = ran
        .stderr
        .lines()
        .find(|l| l.contains(r#""decision":"unauthenticated""#))
        .unwrap_or_else(|| panic!("no refusal logged:\n{}", ran.stderr));
    assert!(line.contains(EMULATOR_SENDER) && line.contains(&name), "{line}");
    assert!(!ran.stderr.contains("secret"), "no event in the log");
}
