//! Operating the overflow with the `immortal` CLI, end to end against the emulator:
//! invocations launched by the forwarder (as its Lambda binary runs), one run to
//! success by the runner as its task runs it, then every command (`ls`, `show`, `logs`,
//! `stop` on a running one, `replay` of an ended one, `stats`), with the settings from
//! the environment and from the overflow stack; and the metrics both write, parsed as
//! CloudWatch's embedded metric format.

use std::collections::BTreeMap;
use std::process::Command;

use immortal_tests::ecs::{task_env, Cluster};
use immortal_tests::emulator::Emulator;
use immortal_tests::lambda::{deploy, uuid_like};
use immortal_tests::queue::Queue;
use immortal_tests::runner::{fixture, workspace_artifact, Ran, RunnerCmd};
use immortal_tests::zips::bootstrap_zip_bytes;
use serde_json::{json, Value};

/// `immortal ARGS` with `env` (and nothing else of IMMORTAL_*).
async fn immortal(env: &[(&'static str, String)], args: &[&str]) -> Ran {
    let cmd = RunnerCmd::with_command(Command::new(workspace_artifact("immortal")))
        .envs(Emulator::shared().env())
        .envs(env.iter().cloned())
        .args(args);
    tokio::task::spawn_blocking(move || cmd.run()).await.unwrap()
}

/// The EMF documents among `stderr`'s lines, checked against the format's rules: each
/// declares namespace `immortal`, the dimension `function`, and every metric it names
/// is a number member of the document.
fn emf(stderr: &str) -> Vec<Value> {
    let docs: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    for doc in &docs {
        let aws = &doc["_aws"];
        assert!(aws["Timestamp"].as_u64().is_some(), "{doc}");
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "immortal", "{doc}");
        assert_eq!(directive["Dimensions"], json!([["function"]]), "{doc}");
        assert!(doc["function"].is_string(), "the dimension's value: {doc}");
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(doc[name].is_number(), "{name} has a value: {doc}");
            assert!(
                ["Count", "Milliseconds"].contains(&metric["Unit"].as_str().unwrap()),
                "{doc}"
            );
        }
    }
    docs
}

/// The value of `metric` in each of `docs` that has it, for `function`.
fn values(docs: &[Value], metric: &str, function: &str) -> Vec<f64> {
    docs.iter()
        .filter(|d| d["function"] == function)
        .filter_map(|d| d[metric].as_f64())
        .collect()
}

#[tokio::test]
async fn an_operator_lists_shows_reads_stops_replays_and_counts_relaunched_invocations() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("operate-{id}")).await;
    let function = format!("operated-{id}");
    deploy(&sdk, &function, &bootstrap_zip_bytes(&fixture("echo")), &[]).await;
    let dlq = Queue::create(
        &sdk,
        &format!("operate-dlq-{id}"),
        &[("immortal:function", &function)],
        &[],
    )
    .await;
    let failures = Queue::create(&sdk, &format!("operate-failures-{id}"), &[], &[]).await;
    let successes = Queue::create(&sdk, &format!("operate-successes-{id}"), &[], &[]).await;
    for request_id in ["req-done", "req-runaway"] {
        dlq.send_dead_letter(r#"{"n":1}"#, request_id, "Task timed out after 3.00 seconds")
            .await;
    }
    let mut messages = dlq.receive(10, 1).await;
    while messages.len() < 2 {
        messages.extend(dlq.receive(10, 1).await);
    }
    let outcomes = [
        ("IMMORTAL_ON_FAILURE", failures.url.clone()),
        ("IMMORTAL_ON_SUCCESS", successes.url.clone()),
    ];
    let forwarded = cluster.forward_all(&dlq, &messages, &outcomes).await;
    let docs = emf(&forwarded.stderr);
    assert_eq!(
        values(&docs, "relaunched", &function),
        [1.0, 1.0],
        "{}",
        forwarded.stderr
    );

    // req-done runs to success as its task runs it.
    let tasks: BTreeMap<String, BTreeMap<String, String>> = cluster
        .tasks()
        .await
        .iter()
        .map(|t| {
            let env = task_env(t);
            let request_id = env["IMMORTAL_ENVELOPE_URL"].split('/').rev().nth(1).unwrap().to_owned();
            (request_id, env)
        })
        .collect();
    let task = tasks["req-done"].clone();
    let run = RunnerCmd::new()
        .envs(Emulator::shared().env())
        .envs(task.into_iter().map(|(k, v)| (&*k.leak(), v)))
        .env("IMMORTAL_PAYLOAD_BUCKET", &cluster.payload_bucket)
        .env("IMMORTAL_ON_SUCCESS", &successes.url)
        .env("IMMORTAL_FUNCTION_LOGS", "cloudwatch");
    let ran = tokio::task::spawn_blocking(move || run.run()).await.unwrap();
    ran.expect_code(0);
    let docs = emf(&ran.stderr);
    assert_eq!(values(&docs, "succeeded", &function), [1.0], "{}", ran.stderr);
    assert_eq!(values(&docs, "run_duration", &function).len(), 1);
    let waited = values(&docs, "time_to_start", &function);
    assert!(
        waited.len() == 1 && waited[0] >= 0.0,
        "from the dead letter's SentTimestamp: {waited:?}"
    );

    let mut env = cluster.forwarder_env();
    env.extend(outcomes.iter().cloned());

    // ls: both, as a table and as JSON; filtered by state.
    let listed = immortal(&env, &["ls"]).await;
    listed.expect_code(0);
    let table = listed.stdout_text();
    assert!(table.starts_with("REQUEST ID"), "{table}");
    assert!(
        table.contains("req-done") && table.contains("succeeded") && table.contains("took "),
        "{table}"
    );
    assert!(table.contains("req-runaway"), "{table}");
    let rows = immortal(&env, &["ls", "--json"]).await.json();
    let rows: BTreeMap<String, Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap().to_owned(), r.clone()))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let done = &rows["req-done"];
    assert_eq!(
        (done["state"].as_str(), done["attempt"].as_u64(), done["live"].as_bool()),
        (Some("succeeded"), Some(1), Some(false))
    );
    assert!(
        done["duration_ms"].as_u64().is_some()
            && done["ended_ms"].as_u64() > done["started_ms"].as_u64().map(|s| s - 1),
        "{done}"
    );
    assert_eq!(rows["req-runaway"]["live"], true);
    assert!(rows["req-runaway"]["task"].as_str().unwrap().contains(":task/"));
    let succeeded = immortal(&env, &["ls", "--state", "succeeded", "--function", &function, "--json"])
        .await
        .json();
    assert_eq!(succeeded.as_array().unwrap().len(), 1, "{succeeded}");

    // show: every attempt with its times, its log stream, the envelope, the destinations.
    let shown = immortal(&env, &["show", "req-done", "--json"]).await.json();
    let attempt = &shown["attempts"][0];
    assert!(
        attempt["launched_ms"].as_u64().unwrap() <= attempt["started_ms"].as_u64().unwrap(),
        "{shown}"
    );
    assert!(
        attempt["started_ms"].as_u64().unwrap() <= attempt["ended_ms"].as_u64().unwrap(),
        "{shown}"
    );
    assert_eq!(attempt["log_group"], format!("/aws/lambda/{function}"), "{shown}");
    assert!(attempt["log_stream"].as_str().unwrap().contains("immortal-"), "{shown}");
    assert!(
        attempt["cpu"].as_u64().is_some() && attempt["memory_mb"].as_u64().is_some(),
        "{shown}"
    );
    assert_eq!(
        shown["envelope"]["location"],
        format!("s3://{}/envelopes/req-done/attempt-1.json", cluster.payload_bucket)
    );
    assert_eq!(shown["outcome_destination"]["on_failure"], failures.url);
    let text = immortal(&env, &["show", "req-done"]).await;
    text.expect_code(0);
    assert!(text.stdout_text().contains("HOW IT ENDED"), "{}", text.stdout_text());

    // logs: the function's own lines of that invocation, from its log group.
    let logs = immortal(&env, &["logs", "req-done"]).await;
    logs.expect_code(0);
    let lines = logs.stdout_text();
    assert!(
        lines.contains("START RequestId: req-done") && lines.contains("REPORT RequestId: req-done"),
        "{lines}\n{}",
        logs.stderr
    );

    // stop: the runaway ends in the ledger, its task is stopped, its record goes out.
    let stopped = immortal(&env, &["stop", "req-runaway", "--json"]).await;
    stopped.expect_code(0);
    let stopped = stopped.json();
    assert_eq!(stopped["record_sent_to"], failures.url);
    let task_arn = stopped["task"].as_str().unwrap().to_owned();
    let described = cluster
        .ecs
        .describe_tasks()
        .cluster(&cluster.name)
        .tasks(&task_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.tasks()[0].desired_status(),
        Some("STOPPED"),
        "ECS was told to stop it"
    );
    let records = failures.take_all().await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["requestContext"]["requestId"], "req-runaway");
    assert_eq!(records[0]["responsePayload"]["errorType"], "Immortal.Stopped");
    assert_eq!(cluster.ledger_entry("req-runaway").await.unwrap()["state"], "stopped");
    // Nothing relaunches it: not the sweep, not a second stop.
    let sweep = json!({"version": "0", "id": uuid_like(), "detail-type": "Scheduled Event", "source": "aws.events",
                       "account": "123456789012", "time": "2026-12-07T10:00:00Z", "region": "us-east-1",
                       "resources": [], "detail": {}});
    let swept = RunnerCmd::lambda("dlq-forwarder", &sweep.to_string())
        .envs(Emulator::shared().env())
        .envs(env.iter().cloned());
    let swept = tokio::task::spawn_blocking(move || swept.run()).await.unwrap();
    assert_eq!(swept.json()["swept"], json!([]), "{}", swept.stderr);
    assert_eq!(cluster.tasks().await.len(), 2, "no task started");
    let again = immortal(&env, &["stop", "req-runaway"]).await;
    again.expect_code(5);
    assert!(again.stderr.contains("ended already (stopped)"), "{}", again.stderr);

    // replay: a stopped one runs again as one new attempt; a succeeded one only with --force.
    let refused = immortal(&env, &["replay", "req-done"]).await;
    refused.expect_code(5);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    let replayed = immortal(&env, &["replay", "req-runaway", "--json"]).await;
    replayed.expect_code(0);
    let replayed = replayed.json();
    assert_eq!(replayed["attempt"], 2);
    let entry = cluster.ledger_entry("req-runaway").await.unwrap();
    assert_eq!(
        (entry["state"].as_str(), entry["attempt"].as_u64()),
        (Some("running"), Some(2)),
        "{entry}"
    );
    assert_eq!(entry["task"], replayed["task"]);
    assert_eq!(entry["counted_from"], 2, "a replay starts a new count of attempts");
    let new: Vec<_> = cluster
        .tasks()
        .await
        .into_iter()
        .filter(|t| t.task_arn() == replayed["task"].as_str())
        .collect();
    assert_eq!(new.len(), 1, "one task for the replay");
    assert!(task_env(&new[0])["IMMORTAL_ENVELOPE_URL"].ends_with("/req-runaway/attempt-2.json"));
    assert_eq!(cluster.tasks().await.len(), 3);
    immortal(&env, &["replay", "req-runaway"]).await.expect_code(5);

    // stats: counts, durations, attempts and the cost of what ran.
    let stats = immortal(&env, &["stats", "--json"]).await.json();
    assert_eq!(stats["invocations"], 2, "{stats}");
    assert_eq!(stats["by_state"]["succeeded"], 1, "{stats}");
    assert_eq!(stats["by_state"]["running"], 1, "{stats}");
    assert_eq!(stats["attempts"], 3, "{stats}");
    assert_eq!(stats["durations"]["count"], 1, "{stats}");
    assert!(stats["cost_usd"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(stats["prices"].as_str().unwrap().contains("fargate/pricing"), "{stats}");
    let text = immortal(&env, &["stats"]).await;
    assert!(text.stdout_text().contains("p50"), "{}", text.stdout_text());

    // Mistakes: an unknown request id, a bucket that is not there, no settings at all.
    let unknown = immortal(&env, &["show", "req-nope"]).await;
    unknown.expect_code(3);
    assert!(unknown.stderr.contains("no invocation req-nope"), "{}", unknown.stderr);
    let mut wrong = env.clone();
    wrong.push(("IMMORTAL_PAYLOAD_BUCKET", format!("no-such-bucket-{id}")));
    let missing = immortal(&wrong, &["ls"]).await;
    missing.expect_code(4);
    assert!(
        missing.stderr.contains("payload bucket does not exist"),
        "{}",
        missing.stderr
    );
    let unset = immortal(&[], &["ls"]).await;
    unset.expect_code(2);
    assert!(
        unset.stderr.contains("IMMORTAL_PAYLOAD_BUCKET is not set"),
        "{}",
        unset.stderr
    );

    // --stack: the same answers with the settings read from the stack's forwarder.
    let forwarder_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let forwarder = deploy(
        &sdk,
        &format!("forwarder-{id}"),
        &bootstrap_zip_bytes(&fixture("echo")),
        &forwarder_env,
    )
    .await;
    let stack = format!("immortal-{id}");
    let template = json!({
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"ForwarderArn": {"Value": forwarder.arn}},
    });
    aws_sdk_cloudformation::Client::new(&sdk)
        .create_stack()
        .stack_name(&stack)
        .template_body(template.to_string())
        .send()
        .await
        .unwrap();
    let by_stack = immortal(&[], &["--stack", &stack, "ls", "--json"]).await;
    by_stack.expect_code(0);
    assert_eq!(by_stack.json().as_array().unwrap().len(), 2, "{}", by_stack.stderr);
    let no_stack = immortal(&[], &["--stack", &format!("nope-{id}"), "ls"]).await;
    no_stack.expect_code(4);
}

/// `immortal logs --follow` on an invocation that is running: its lines as they come,
/// and the command ends once the invocation has ended and its last lines are out.
#[tokio::test]
async fn logs_follow_a_running_invocation_to_its_end() {
    let sdk = Emulator::shared().sdk_config().await;
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("follow-{id}")).await;
    let function = format!("followed-{id}");
    deploy(&sdk, &function, &bootstrap_zip_bytes(&fixture("sleep")), &[]).await;
    let dlq = Queue::create(
        &sdk,
        &format!("follow-dlq-{id}"),
        &[("immortal:function", &function)],
        &[],
    )
    .await;
    dlq.send_dead_letter(r#"{"seconds": 4}"#, "req-follow", "Task timed out after 3.00 seconds")
        .await;
    let messages = dlq.receive(10, 1).await;
    cluster.forward_all(&dlq, &messages, &[]).await;
    let task = task_env(&cluster.tasks().await[0]);
    let runner = RunnerCmd::new()
        .envs(Emulator::shared().env())
        .envs(task.into_iter().map(|(k, v)| (&*k.leak(), v)))
        .env("IMMORTAL_PAYLOAD_BUCKET", &cluster.payload_bucket)
        .env("IMMORTAL_FUNCTION_LOGS", "cloudwatch")
        .spawn();
    // Following from before the first line: it waits for the attempt's stream.
    let follow = RunnerCmd::with_command(Command::new(workspace_artifact("immortal")))
        .envs(Emulator::shared().env())
        .envs(cluster.forwarder_env())
        .args(["logs", "req-follow", "--follow"])
        .spawn();
    let ran = tokio::task::spawn_blocking(move || runner.wait(std::time::Duration::from_secs(60)))
        .await
        .unwrap();
    ran.expect_code(0);
    let followed = tokio::task::spawn_blocking(move || follow.wait(std::time::Duration::from_secs(60)))
        .await
        .unwrap();
    followed.expect_code(0);
    let lines = followed.stdout_text();
    assert!(
        lines.contains("START RequestId: req-follow") && lines.contains("REPORT RequestId: req-follow"),
        "every line, to the last:\n{lines}\n{}",
        followed.stderr
    );
    assert!(followed.stderr.contains("== attempt 1"), "{}", followed.stderr);
}
