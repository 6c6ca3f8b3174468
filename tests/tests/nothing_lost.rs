//! Nothing lost after launch: every relaunched invocation has a durable record (the
//! ledger in the payload bucket), tasks that stop without an outcome are relaunched as
//! the next attempt, and one invocation never runs twice at once. ECS's "Task State
//! Change" events are built in the documented format by a Fargate stand-in of the
//! tests' own (the emulator neither runs tasks nor emits events).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use immortal_dlq_forwarder::config::Config;
use immortal_dlq_forwarder::forward::Forwarder;
use immortal_dlq_forwarder::reconcile::{Reconciled, StoppedTask};
use immortal_handler_sdk::record::SqsBatch;
use immortal_overflow::ledger::Ledger;
use immortal_overflow::Lookup;
use immortal_tests::ecs::Cluster;
use immortal_tests::emulator::{aws_env, Emulator};
use immortal_tests::fake_lambda::{FakeFunction, FakeLambda};
use immortal_tests::fargate::{run_task, task_request, Dice, EcsProxy, Fate, TaskRun, When};
use immortal_tests::lambda::{deploy, uuid_like};
use immortal_tests::queue::Queue;
use immortal_tests::runner::{fixture, Ran, RunnerCmd};
use immortal_tests::server::{Reply, Seen, TestServer};
use immortal_tests::zips::{bootstrap_zip_bytes, zip_bytes, Entry};
use serde_json::{json, Value};

/// The task definition's stop timeout, in these tests.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A cluster behind the Fargate stand-in, a function's dead-letter queue, and where
/// outcome records go.
struct Setup {
    cluster: Cluster,
    proxy: EcsProxy,
    dlq: Queue,
    success: Queue,
    failure: Queue,
    function: String,
    /// Where the fixture writes its pid files and holds its locks.
    scratch: tempfile::TempDir,
    cache: tempfile::TempDir,
    max_attempts: u32,
}

impl Setup {
    /// `bootstrap`'s function (a fixture zip) and its dead-letter queue.
    async fn new(bootstrap: &str, max_attempts: u32) -> Setup {
        let sdk = Emulator::shared().sdk_config().await;
        let id = uuid_like();
        let cluster = Cluster::create(&sdk, &format!("lost-{id}")).await;
        let function = format!("lost-{id}");
        deploy(&sdk, &function, &bootstrap_zip_bytes(&fixture(bootstrap)), &[]).await;
        let dlq = Queue::create(
            &sdk,
            &format!("lost-dlq-{id}"),
            &[("immortal:function", &function)],
            &[],
        )
        .await;
        let success = Queue::create(&sdk, &format!("lost-ok-{id}"), &[], &[]).await;
        let failure = Queue::create(&sdk, &format!("lost-failed-{id}"), &[], &[]).await;
        Setup {
            cluster,
            proxy: EcsProxy::start(|_| None),
            dlq,
            success,
            failure,
            function,
            scratch: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
            max_attempts,
        }
    }

    /// The forwarder as Lambda runs it on `event` (any of its triggers), with ECS behind
    /// the stand-in.
    async fn forwarder(&self, event: &Value) -> Ran {
        let cmd = RunnerCmd::lambda("dlq-forwarder", &event.to_string())
            .envs(aws_env(self.proxy.url()))
            .envs(self.cluster.forwarder_env())
            .env("IMMORTAL_ON_FAILURE", &self.failure.url)
            .env("IMMORTAL_MAX_ATTEMPTS", self.max_attempts.to_string());
        tokio::task::spawn_blocking(move || cmd.run()).await.unwrap()
    }

    /// The runner container as the task definition sets it up.
    fn runner(&self) -> RunnerCmd {
        RunnerCmd::new()
            .cache(self.cache.path())
            .envs(Emulator::shared().env())
            .env("IMMORTAL_PAYLOAD_BUCKET", &self.cluster.payload_bucket)
            .env("IMMORTAL_ON_SUCCESS", &self.success.url)
            .env("IMMORTAL_ON_FAILURE", &self.failure.url)
            .env("IMMORTAL_STOP_TIMEOUT", STOP_TIMEOUT.as_secs().to_string())
    }

    /// Runs `task` to `fate`.
    async fn execute(&self, task: Value, fate: Fate) -> TaskRun {
        let runner = self.runner();
        tokio::task::spawn_blocking(move || run_task(task, runner, fate, STOP_TIMEOUT))
            .await
            .unwrap()
    }

    /// The `n` tasks started next, by request id.
    fn started(&self, n: usize) -> BTreeMap<String, Value> {
        let tasks = self.proxy.wait_started(n, Duration::from_secs(30));
        assert_eq!(tasks.len(), n, "{n} tasks started");
        tasks
            .into_iter()
            .map(|t| (task_request(&t).expect("a runner task").0, t))
            .collect()
    }

    /// A file under the scratch folder.
    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// Every record on `queue`, by request id.
    async fn records(queue: &Queue) -> BTreeMap<String, Vec<Value>> {
        let mut seen: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for record in queue.take_all().await {
            let id = record["requestContext"]["requestId"].as_str().unwrap().to_owned();
            seen.entry(id).or_default().push(record);
        }
        seen
    }

    /// Reads a stored envelope named by a task's overrides.
    async fn envelope(&self, task: &Value) -> Value {
        let url = immortal_tests::fargate::overrides(task)
            .into_iter()
            .find(|(k, _)| k == "IMMORTAL_ENVELOPE_URL")
            .unwrap()
            .1;
        let bytes = immortal_tests::s3::read(&self.cluster.s3, &url).await;
        serde_json::from_slice(&bytes).unwrap()
    }
}

fn no_failures(ran: &Ran) {
    assert_eq!(ran.json(), json!({"batchItemFailures": []}), "{}", ran.stderr);
}

#[tokio::test]
async fn tasks_that_stop_without_an_outcome_are_relaunched_once_as_the_next_attempt() {
    let s = Setup::new("sleep", 3).await;
    let pid = |id: &str| s.path(&format!("{id}.pid"));
    let fates = [
        ("req-never-started", Fate::FailToStart),
        ("req-killed", Fate::Kill(When::Exists(pid("req-killed")))),
        ("req-interrupted", Fate::Interrupt(When::Exists(pid("req-interrupted")))),
    ];
    let mut events = BTreeMap::new();
    for (id, _) in &fates {
        let event = json!({"seconds": 1, "pid_file": pid(id), "marker": s.path(&format!("{id}.term"))});
        s.dlq
            .send_dead_letter(&event.to_string(), id, "Task timed out after 3.00 seconds")
            .await;
        events.insert(id.to_string(), event);
    }
    let mut messages = s.dlq.receive(10, 1).await;
    while messages.len() < 3 {
        messages.extend(s.dlq.receive(10, 1).await);
    }
    no_failures(&s.forwarder(&s.dlq.lambda_event(&messages)).await);
    let first = s.started(3);

    // Each ends its own way, all at once.
    let runs = futures_util::future::join_all(
        fates
            .iter()
            .map(|(id, fate)| s.execute(first[*id].clone(), fate.clone())),
    )
    .await;
    let interrupted = &runs[2];
    let stderr = &interrupted.ran.as_ref().unwrap().stderr;
    assert!(stderr.contains("attempt interrupted"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(s.path("req-interrupted.term")).unwrap(),
        "SIGTERM",
        "the function had its grace"
    );
    let entry = s.cluster.ledger_entry("req-interrupted").await.unwrap();
    assert_eq!(entry["state"], "interrupted", "{entry}");
    // One answer: stdout says what the ledger says, not the bootstrap's end under the signal.
    let said = interrupted.ran.as_ref().unwrap().json();
    assert_eq!(said["errorType"], "Immortal.Interrupted", "{said}");
    assert!(
        said["errorMessage"]
            .as_str()
            .unwrap()
            .contains("the runner was stopped (terminated); attempt 1 is interrupted"),
        "{said}"
    );
    assert_eq!(s.cluster.ledger_entry("req-killed").await.unwrap()["state"], "running");

    // EventBridge delivers each stop to the forwarder: each relaunched once, as attempt 2.
    for run in &runs {
        let ran = s.forwarder(&run.stopped).await;
        ran.expect_code(0);
        let done = ran.json();
        assert_eq!(done["decision"], "relaunched", "{done}\n{}", ran.stderr);
        assert_eq!(done["attempt"], 2);
    }
    let second = s.started(3);
    for (id, task) in &second {
        assert_eq!(task_request(task), Some((id.clone(), 2)));
        let (before, after) = (s.envelope(&first[id]).await, s.envelope(task).await);
        assert_eq!(after["event"], events[id], "the same event");
        assert_eq!(after["context"]["request_id"], id.as_str(), "the same request id");
        let attempt = |e: &Value| e["context"]["overflow"]["attempt"].as_u64().unwrap();
        assert_eq!(attempt(&after), attempt(&before) + 1, "one attempt on");
        let (mut a, mut b) = (before["context"].clone(), after["context"].clone());
        a["overflow"]["attempt"] = json!(0);
        b["overflow"]["attempt"] = json!(0);
        assert_eq!(a, b, "otherwise the same context");
    }

    // The same events again (EventBridge delivers at least once): nothing more starts.
    for run in &runs {
        let ran = s.forwarder(&run.stopped).await;
        assert_eq!(ran.json()["decision"], "nothing", "{}", ran.stderr);
    }
    assert!(s.proxy.started().is_empty(), "no task for a repeated event");

    // The second attempts run to their end: one success each; their stops start nothing.
    let runs = futures_util::future::join_all(second.values().map(|t| s.execute(t.clone(), Fate::Run))).await;
    for run in &runs {
        run.ran.as_ref().unwrap().expect_code(0);
        let ran = s.forwarder(&run.stopped).await;
        let done = ran.json();
        assert_eq!(done["decision"], "nothing", "{done}");
        assert!(done["why"].as_str().unwrap().contains("ended"), "{done}");
    }
    assert!(
        s.proxy.started().is_empty(),
        "a task that ended with an outcome is not relaunched"
    );
    let successes = Setup::records(&s.success).await;
    assert_eq!(
        successes.keys().cloned().collect::<BTreeSet<_>>(),
        events.keys().cloned().collect()
    );
    assert!(successes.values().all(|r| r.len() == 1), "one success each");
    for (id, why) in [
        ("req-never-started", "TaskFailedToStart"),
        ("req-killed", "exit code 137"),
        ("req-interrupted", "SpotInterruption"),
    ] {
        let entry = s.cluster.ledger_entry(id).await.unwrap();
        assert_eq!(
            (entry["state"].as_str(), entry["attempt"].as_u64()),
            (Some("succeeded"), Some(2))
        );
        let reason = entry["history"][0]["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{id}: {reason}");
    }
    assert!(Setup::records(&s.failure).await.is_empty());
}

#[tokio::test]
async fn after_the_last_attempt_the_failure_record_names_the_stop_reason() {
    let s = Setup::new("sleep", 2).await;
    let event = json!({"seconds": 1, "pid_file": s.path("a.pid")});
    s.dlq
        .send_dead_letter(&event.to_string(), "req-doomed", "Task timed out after 3.00 seconds")
        .await;
    let messages = s.dlq.receive(10, 1).await;
    no_failures(&s.forwarder(&s.dlq.lambda_event(&messages)).await);

    let first = s
        .execute(s.started(1).remove("req-doomed").unwrap(), Fate::FailToStart)
        .await;
    assert_eq!(s.forwarder(&first.stopped).await.json()["decision"], "relaunched");
    let second = s.started(1).remove("req-doomed").unwrap();
    let killed = s.execute(second, Fate::Kill(When::Exists(s.path("a.pid")))).await;
    let ran = s.forwarder(&killed.stopped).await;
    let done = ran.json();
    assert_eq!(done["decision"], "exhausted", "{done}\n{}", ran.stderr);
    assert!(s.proxy.started().is_empty(), "no third attempt");

    let failures = Setup::records(&s.failure).await;
    let record = &failures["req-doomed"][0];
    assert_eq!(failures["req-doomed"].len(), 1);
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(
        record["requestPayload"], event,
        "the event, for whoever takes it from here"
    );
    assert_eq!(record["responsePayload"]["errorType"], "Immortal.AttemptsExhausted");
    let message = record["responsePayload"]["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("2 container attempts")
            && message.contains("EssentialContainerExited")
            && message.contains("exit code 137"),
        "{message}"
    );
    let entry = s.cluster.ledger_entry("req-doomed").await.unwrap();
    assert_eq!(entry["state"], "exhausted");
    assert!(entry["history"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("CannotPullContainerError"));
}

#[tokio::test]
async fn a_stop_whose_event_was_missed_is_found_by_the_sweep() {
    let s = Setup::new("sleep", 3).await;
    s.dlq
        .send_dead_letter(r#"{"seconds": 1}"#, "req-missed", "Task timed out after 3.00 seconds")
        .await;
    let messages = s.dlq.receive(10, 1).await;
    no_failures(&s.forwarder(&s.dlq.lambda_event(&messages)).await);
    let task = s.started(1).remove("req-missed").unwrap();
    let sweep = json!({"version": "0", "id": uuid_like(), "detail-type": "Scheduled Event", "source": "aws.events",
                       "account": "123456789012", "time": "2026-11-23T10:00:00Z", "region": "us-east-1",
                       "resources": ["arn:aws:events:us-east-1:123456789012:rule/immortal-sweep"], "detail": {}});
    let ran = s.forwarder(&sweep).await;
    assert_eq!(
        ran.json()["swept"],
        json!([]),
        "a running task is left alone: {}",
        ran.stderr
    );

    // It never started, and its event was lost; ECS still knows it stopped.
    s.execute(task.clone(), Fate::FailToStart).await;
    s.cluster
        .ecs
        .stop_task()
        .cluster(&s.cluster.name)
        .task(task["taskArn"].as_str().unwrap())
        .reason("CannotPullContainerError: image not found")
        .send()
        .await
        .unwrap();
    let ran = s.forwarder(&sweep).await;
    let swept = ran.json()["swept"].clone();
    assert_eq!(swept[0]["decision"], "relaunched", "{swept}\n{}", ran.stderr);
    assert_eq!(task_request(&s.started(1).remove("req-missed").unwrap()).unwrap().1, 2);
}

#[tokio::test]
async fn failures_before_the_bootstrap_runs_are_reported_with_their_cause() {
    let sdk = Emulator::shared().sdk_config().await;
    // A function whose zip has no bootstrap.
    let s = Setup::new("echo", 3).await;
    let bare = format!("bare-{}", uuid_like());
    deploy(
        &sdk,
        &bare,
        &zip_bytes(&[Entry::File("README", b"no bootstrap here", 0o644)]),
        &[],
    )
    .await;
    let bare_dlq = Queue::create(
        &sdk,
        &format!("bare-{}", uuid_like()),
        &[("immortal:function", &bare)],
        &[],
    )
    .await;
    bare_dlq
        .send_dead_letter("{}", "req-no-bootstrap", "Task timed out after 3.00 seconds")
        .await;
    let messages = bare_dlq.receive(10, 1).await;
    no_failures(&s.forwarder(&bare_dlq.lambda_event(&messages)).await);
    // And one whose code does not match its CodeSha256 (served by a Lambda API of the
    // tests' own: the emulator computes the hash itself).
    s.dlq
        .send_dead_letter("{}", "req-bad-hash", "Task timed out after 3.00 seconds")
        .await;
    let messages = s.dlq.receive(10, 1).await;
    no_failures(&s.forwarder(&s.dlq.lambda_event(&messages)).await);
    let tasks = s.started(2);
    let fake = FakeLambda::start(
        vec![FakeFunction {
            name: s.function.clone(),
            code: Bytes::from(bootstrap_zip_bytes(&fixture("echo"))),
            configuration: json!({"CodeSha256": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}),
            ..Default::default()
        }],
        Some(Emulator::shared().url.clone()),
    );

    let no_bootstrap = s.execute(tasks["req-no-bootstrap"].clone(), Fate::Run).await;
    let runner = s.runner().env("AWS_ENDPOINT_URL_LAMBDA", &fake.server.url);
    let task = tasks["req-bad-hash"].clone();
    let bad_hash = tokio::task::spawn_blocking(move || run_task(task, runner, Fate::Run, STOP_TIMEOUT))
        .await
        .unwrap();
    let failures = Setup::records(&s.failure).await;
    for (id, run, error_type, cause) in [
        (
            "req-no-bootstrap",
            &no_bootstrap,
            "Immortal.RuntimeUnavailable",
            "bootstrap",
        ),
        (
            "req-bad-hash",
            &bad_hash,
            "Immortal.CodeUnavailable",
            "does not match its CodeSha256",
        ),
    ] {
        let ran = run.ran.as_ref().unwrap();
        assert_ne!(ran.code, Some(0), "{}", ran.stderr);
        let record = &failures
            .get(id)
            .unwrap_or_else(|| panic!("a record for {id}: {}", ran.stderr))[0];
        assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(record["responsePayload"]["errorType"], error_type, "{record}");
        let message = record["responsePayload"]["errorMessage"].as_str().unwrap();
        assert!(message.contains(cause), "{message}");
        let entry = s.cluster.ledger_entry(id).await.unwrap();
        assert_eq!(entry["state"], "failed", "{entry}");
        // The task's stop starts nothing: the invocation ended.
        assert_eq!(s.forwarder(&run.stopped).await.json()["decision"], "nothing");
    }
    assert!(s.proxy.started().is_empty());
}

#[tokio::test]
async fn the_same_dead_letter_message_delivered_three_times_at_once_starts_one_task() {
    let s = Setup::new("echo", 3).await;
    s.dlq
        .send_dead_letter(r#"{"once": true}"#, "req-thrice", "Task timed out after 3.00 seconds")
        .await;
    let messages = s.dlq.receive(10, 1).await;
    let event = s.dlq.lambda_event(&messages);
    let deliveries = futures_util::future::join_all((0..3).map(|_| s.forwarder(&event))).await;
    let launched = deliveries
        .iter()
        .filter(|r| r.json() == json!({"batchItemFailures": []}))
        .count();
    assert!(launched >= 1, "at least one delivery went through");
    assert_eq!(s.started(1).len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(s.proxy.started().is_empty(), "one task, whoever got there first");
    assert_eq!(s.proxy.launched.lock().unwrap().values().sum::<usize>(), 1);

    // A delivery kept for later finds it held by the ledger.
    let later = s.forwarder(&event).await;
    no_failures(&later);
    assert!(later.stderr.contains(r#""decision":"held""#), "{}", later.stderr);
    assert!(s.proxy.started().is_empty());
    assert_eq!(s.cluster.tasks().await.len(), 1);
}

/// What the storm saw.
#[derive(Default, Debug)]
struct StormCounts {
    tasks: AtomicUsize,
    never_started: AtomicUsize,
    killed: AtomicUsize,
    ran_to_end: AtomicUsize,
    relaunched: AtomicUsize,
    reconcile_retries: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_with_tasks_killed_and_runtask_throttled_ends_with_one_success_per_invocation() {
    const INVOCATIONS: usize = 1000;
    const FUNCTIONS: usize = 4;
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("storm-{id}")).await;
    let parking = Queue::create(&sdk, &format!("storm-parking-{id}"), &[], &[]).await;
    let success = Queue::create(&sdk, &format!("storm-ok-{id}"), &[], &[]).await;
    let failure = Queue::create(&sdk, &format!("storm-failed-{id}"), &[], &[]).await;
    let redrive = json!({"deadLetterTargetArn": parking.arn, "maxReceiveCount": "10"}).to_string();
    let zip = bootstrap_zip_bytes(&fixture("sleep"));
    let mut queues = Vec::new();
    for q in 0..FUNCTIONS {
        let function = format!("storm-{id}-{q}");
        deploy(&sdk, &function, &zip, &[]).await;
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
    let locks = tempfile::tempdir().unwrap();
    let event = json!({"seconds": 0.3, "lock_dir": locks.path()}).to_string();
    let mut sent = BTreeSet::new();
    for batch in 0..INVOCATIONS / 10 {
        let queue = &queues[batch % FUNCTIONS];
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
                    .message_body(&event)
                    .message_attributes("RequestID", attr("String", &request_id))
                    .message_attributes("ErrorCode", attr("Number", "200"))
                    .message_attributes("ErrorMessage", attr("String", "Task timed out after 900.00 seconds"))
                    .build()
                    .unwrap(),
            );
            sent.insert(request_id);
        }
        request.send().await.unwrap();
    }

    // One RunTask call in five is throttled, whichever attempt it carries.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let proxy = Arc::new(EcsProxy::start(move |_| {
        (counted.fetch_add(1, Ordering::SeqCst) % 5 == 4).then(immortal_tests::fargate::throttled)
    }));

    // The forwarder's library, as its Lambda binary runs it, one attempt per AWS call: a
    // throttled RunTask fails its record (SQS delivers it again) or its stop event
    // (EventBridge delivers it again).
    let forwarder_sdk = immortal_tests::emulator::sdk_config(proxy.url())
        .await
        .to_builder()
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .build();
    let mut vars: HashMap<String, String> = cluster
        .forwarder_env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    vars.insert("IMMORTAL_ON_FAILURE".into(), failure.url.clone());
    vars.insert("IMMORTAL_MAX_ATTEMPTS".into(), "10".into());
    let config = Config::read(&Lookup::new(|k| vars.get(k).cloned())).unwrap();
    let forwarder = Arc::new(Forwarder::new(config, &forwarder_sdk));

    // Lambda's event source mappings: a poller per queue.
    let mut pollers = Vec::new();
    for queue in queues.clone() {
        let forwarder = forwarder.clone();
        pollers.push(tokio::spawn(async move {
            loop {
                let messages = queue.receive(10, 1).await;
                if messages.is_empty() {
                    if queue.depth().await == 0 {
                        return;
                    }
                    continue;
                }
                let batch: SqsBatch = serde_json::from_value(queue.lambda_event(&messages)).unwrap();
                let response = serde_json::to_value(forwarder.handle(batch).await).unwrap();
                let failed = queue.settle(&messages, &response).await;
                // Retried at once rather than after the visibility timeout.
                queue.release(&messages, &failed).await;
            }
        }));
    }

    // Fargate: every started task runs (four at once); one in five is killed at a random
    // point (a quarter of those never start), and each stop reaches the forwarder.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("storm seed {seed}");
    let dice = Arc::new(Mutex::new(Dice::new(seed)));
    let counts = Arc::new(StormCounts::default());
    let slots = Arc::new(tokio::sync::Semaphore::new(4));
    let cache = tempfile::tempdir().unwrap();
    let runner = {
        let (bucket, ok, failed, cache) = (
            cluster.payload_bucket.clone(),
            success.url.clone(),
            failure.url.clone(),
            cache.path().to_owned(),
        );
        move || {
            RunnerCmd::new()
                .cache(&cache)
                .envs(Emulator::shared().env())
                .env("IMMORTAL_PAYLOAD_BUCKET", &bucket)
                .env("IMMORTAL_ON_SUCCESS", &ok)
                .env("IMMORTAL_ON_FAILURE", &failed)
                .env("IMMORTAL_STOP_TIMEOUT", "10")
        }
    };
    let mut successes: BTreeMap<String, usize> = BTreeMap::new();
    let mut running = tokio::task::JoinSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(900);
    while successes.len() < INVOCATIONS && std::time::Instant::now() < deadline {
        for task in proxy.started() {
            counts.tasks.fetch_add(1, Ordering::SeqCst);
            let fate = {
                let mut dice = dice.lock().unwrap();
                match dice.below(20) {
                    0 => Fate::FailToStart,
                    1..=3 => Fate::Kill(When::After(Duration::from_millis(dice.below(300)))),
                    _ => Fate::Run,
                }
            };
            let (forwarder, counts, slots, cmd) = (forwarder.clone(), counts.clone(), slots.clone(), runner());
            running.spawn(async move {
                let permit = slots.acquire_owned().await.unwrap();
                let counter = match fate {
                    Fate::FailToStart => &counts.never_started,
                    Fate::Kill(_) => &counts.killed,
                    _ => &counts.ran_to_end,
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let run = tokio::task::spawn_blocking(move || run_task(task, cmd, fate, Duration::from_secs(10)))
                    .await
                    .unwrap();
                drop(permit);
                let stopped = StoppedTask::from_event(&run.stopped).expect("a runner task's stop");
                for _ in 0..100 {
                    match forwarder.reconcile(&stopped).await {
                        Reconciled::Failed { .. } => {
                            counts.reconcile_retries.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Reconciled::Relaunched { .. } => {
                            counts.relaunched.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        _ => return,
                    }
                }
                panic!("the stop of {} was never reconciled", stopped.task_arn);
            });
        }
        while let Some(done) = running.try_join_next() {
            done.expect("a task's run");
        }
        for (id, n) in Setup::records(&success).await.into_iter().map(|(id, r)| (id, r.len())) {
            *successes.entry(id).or_default() += n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while let Some(done) = running.join_next().await {
        done.expect("a task's run");
    }
    for poller in pollers {
        poller.await.unwrap();
    }
    // Whatever is still live after every stop was reconciled is a loss.
    let swept = forwarder.sweep(None).await.outcomes;
    for (id, n) in Setup::records(&success).await.into_iter().map(|(id, r)| (id, r.len())) {
        *successes.entry(id).or_default() += n;
    }

    let concurrent = std::fs::read_to_string(locks.path().join("concurrent.log")).unwrap_or_default();
    let twice: Vec<_> = successes.iter().filter(|(_, n)| **n != 1).collect();
    println!(
        "storm: {INVOCATIONS} invocations, {} RunTask calls ({} throttled), {} tasks: {} ran to their end, {} killed mid-run, {} never started; {} relaunched, {} stop events retried; {} success records for {} invocations, {} more than once, {} run concurrently twice",
        calls.load(Ordering::SeqCst),
        calls.load(Ordering::SeqCst) / 5,
        counts.tasks.load(Ordering::SeqCst),
        counts.ran_to_end.load(Ordering::SeqCst),
        counts.killed.load(Ordering::SeqCst),
        counts.never_started.load(Ordering::SeqCst),
        counts.relaunched.load(Ordering::SeqCst),
        counts.reconcile_retries.load(Ordering::SeqCst),
        successes.values().sum::<usize>(),
        successes.len(),
        twice.len(),
        concurrent.lines().count(),
    );
    assert_eq!(
        successes.keys().cloned().collect::<BTreeSet<_>>(),
        sent,
        "no invocation lost"
    );
    assert!(twice.is_empty(), "exactly one success each: {twice:?}");
    let launched = proxy.launched.lock().unwrap().clone();
    assert!(
        launched.values().all(|n| *n == 1),
        "one task per attempt: {:?}",
        launched.iter().filter(|(_, n)| **n != 1).collect::<Vec<_>>()
    );
    // The detector was armed: every invocation's runs took its lock (an empty log means
    // "never twice at once", not "never looked").
    let armed = std::fs::read_dir(locks.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".lock"))
        .count();
    assert_eq!(armed, INVOCATIONS, "every invocation ran under its lock");
    assert!(concurrent.is_empty(), "run concurrently twice: {concurrent}");
    assert!(swept.is_empty(), "nothing left for the sweep: {swept:?}");
    assert!(counts.killed.load(Ordering::SeqCst) + counts.never_started.load(Ordering::SeqCst) > 0);
    assert_eq!(parking.depth().await, 0, "nothing parked");
    assert!(Setup::records(&failure).await.is_empty(), "no failure records");
    let ledger = Ledger::new(cluster.s3.clone(), cluster.payload_bucket.clone());
    assert!(
        ledger.live().await.unwrap().is_empty(),
        "every invocation ended in the ledger"
    );
}

/// A Lambda endpoint in front of the emulator that throttles the first `times`
/// GetFunction calls (429 TooManyRequestsException, as Lambda answers), then passes them
/// on. Returns it and the number of GetFunction calls it saw.
fn throttling_lambda(times: usize) -> (TestServer, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    let server = TestServer::start(Some(Emulator::shared().url.clone()), move |req: &Seen| {
        let get_function = req.method == "GET"
            && req.path.starts_with("/2015-03-31/functions/")
            && !req.path.ends_with("/configuration");
        if !get_function {
            return Reply::Forward;
        }
        if counted.fetch_add(1, Ordering::SeqCst) < times {
            return Reply::Full {
                status: 429,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-amzn-errortype".into(), "TooManyRequestsException".into()),
                ],
                body: Bytes::from_static(
                    br#"{"Type":"User","message":"Rate Exceeded.","Reason":"CallerRateLimitExceeded"}"#,
                ),
            };
        }
        Reply::Forward
    });
    (server, seen)
}

/// Lambda throttling the runner's GetFunction is retried within the run; when it
/// persists past the retries, the attempt ends `interrupted` (exit 8) with no failure
/// record, and the reconciler relaunches it: a throttle is not the invocation's failure.
#[tokio::test]
async fn a_throttled_get_function_is_retried_and_if_it_persists_the_attempt_is_relaunched_not_failed() {
    let s = Setup::new("echo", 3).await;
    s.dlq
        .send_dead_letter(r#"{"n":1}"#, "req-throttled", "Task timed out after 3.00 seconds")
        .await;
    let messages = s.dlq.receive(10, 1).await;
    no_failures(&s.forwarder(&s.dlq.lambda_event(&messages)).await);
    let first = s.started(1).remove("req-throttled").unwrap();

    let (always, _) = throttling_lambda(usize::MAX);
    let runner = s.runner().env("AWS_ENDPOINT_URL_LAMBDA", &always.url);
    let run = tokio::task::spawn_blocking(move || run_task(first, runner, Fate::Run, STOP_TIMEOUT))
        .await
        .unwrap();
    let ran = run.ran.as_ref().unwrap();
    ran.expect_code(8);
    assert!(ran.stderr.contains("TooManyRequestsException"), "{}", ran.stderr);
    let entry = s.cluster.ledger_entry("req-throttled").await.unwrap();
    assert_eq!(entry["state"], "interrupted", "{entry}");
    assert!(Setup::records(&s.failure).await.is_empty(), "no failure record");
    let relaunched = s.forwarder(&run.stopped).await;
    assert_eq!(relaunched.json()["decision"], "relaunched", "{}", relaunched.stderr);
    let second = s.started(1).remove("req-throttled").unwrap();
    assert_eq!(task_request(&second).unwrap().1, 2);

    let (twice, calls) = throttling_lambda(2);
    let runner = s.runner().env("AWS_ENDPOINT_URL_LAMBDA", &twice.url);
    let run = tokio::task::spawn_blocking(move || run_task(second, runner, Fate::Run, STOP_TIMEOUT))
        .await
        .unwrap();
    run.ran.as_ref().unwrap().expect_code(0);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "throttled twice, answered the third time"
    );
    let successes = Setup::records(&s.success).await;
    assert_eq!(successes["req-throttled"].len(), 1);
    assert_eq!(
        s.cluster.ledger_entry("req-throttled").await.unwrap()["state"],
        "succeeded"
    );
}
