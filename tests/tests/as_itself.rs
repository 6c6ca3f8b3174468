//! The function runs as itself: its own role (assumed, served, renewed), its own user,
//! scratch and layers, its own log group, only its own environment, and nothing of the
//! runner's or a neighbour's. The runner runs as the image runs it (see `image_user`).

use std::path::PathBuf;

use aws_sdk_lambda::types::Runtime;
use bytes::Bytes;
use immortal_tests::emulator::Emulator;
use immortal_tests::fake_lambda::{FakeFunction, FakeLambda};
use immortal_tests::image_user::{assert_function_user, ImageUser, RUNNER_UID};
use immortal_tests::lambda::{context_for, create_role, deploy, deploy_as, deploy_with_role, set_role, uuid_like};
use immortal_tests::queue::{timeout_record, Queue, EMULATOR_SENDER};
use immortal_tests::runner::{fixture, Ran, RunnerCmd};
use immortal_tests::server::{Reply, Seen, TestServer};
use immortal_tests::zips::{bootstrap_zip_bytes, folder_zip, zip_bytes, Entry};
use serde_json::{json, Value};

/// The runner's own key id in these tests: it must reach no function.
const RUNNER_KEY: &str = "AKIARUNNERSOWNKEY001";

async fn run(cmd: RunnerCmd) -> Ran {
    tokio::task::spawn_blocking(move || cmd.run()).await.unwrap()
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[tokio::test]
async fn a_function_runs_as_its_own_role_and_user_and_the_runners_credentials_are_out_of_reach() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config().await;
    let id = uuid_like();
    let (name, role_name) = (format!("inspect-{id}"), format!("fn-role-{id}"));
    let zip = bootstrap_zip_bytes(&fixture("inspect"));
    deploy_with_role(&sdk, &name, &zip, &[("FROM_CONFIG", "yes")], &role_name).await;

    let image = ImageUser::new();
    let cmd = image
        .runner()
        .envs(emulator.env())
        .env("AWS_ACCESS_KEY_ID", RUNNER_KEY)
        .env("IMMORTAL_FUNCTION_ROLE", "assume")
        // Test-shortened: renewed after 6 s instead of within the hour.
        .env("IMMORTAL_CREDENTIALS_LIFETIME", "6")
        .args(["--event", r#"{"whoami": true, "again_after_s": 5}"#])
        .args(["--context", &context_for(&name, "req-self")]);
    let ran = run(cmd).await;
    ran.expect_code(0);
    let seen = ran.json();
    let (first, again) = (&seen["whoami"]["first"], &seen["whoami"]["again"]);
    let assumed = format!(":assumed-role/{role_name}/");
    assert!(first["arn"].as_str().unwrap().contains(&assumed), "{first}");
    assert!(
        again["arn"].as_str().unwrap().contains(&assumed),
        "after the renewal: {again}"
    );
    assert_ne!(first["access_key_id"], RUNNER_KEY);
    assert_ne!(
        first["access_key_id"], again["access_key_id"],
        "held open past the credentials' lifetime, it called AWS with renewed ones"
    );
    assert!(
        ran.stderr.contains("the function's credentials were renewed"),
        "{}",
        ran.stderr
    );

    let env = seen["env"].as_object().unwrap();
    assert!(
        !env.values().any(|v| v.as_str().unwrap().contains(RUNNER_KEY)),
        "the runner's key is nowhere in the function's environment: {env:?}"
    );
    assert_eq!(env["FROM_CONFIG"], "yes");
    assert!(env.contains_key("AWS_CONTAINER_CREDENTIALS_FULL_URI"));
    let runner_environ = seen["runner_environ"].as_str().unwrap();
    assert!(runner_environ.starts_with("denied"), "{runner_environ}");
    assert_function_user(&seen);
    assert!(
        seen["task_root_write"].as_str().unwrap().starts_with("refused"),
        "{}",
        seen["task_root_write"]
    );
}

#[tokio::test]
async fn a_python_function_gets_its_own_role_through_boto3() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config().await;
    let id = uuid_like();
    let (name, role_name) = (format!("py-self-{id}"), format!("py-role-{id}"));
    let zip = folder_zip(&fixtures().join("functions/python-whoami"), &["lambda_function.py"]);
    deploy_as(
        &sdk,
        &name,
        &zip,
        &[],
        Runtime::Python312,
        "lambda_function.lambda_handler",
    )
    .await;
    set_role(&sdk, &name, &create_role(&sdk, &role_name).await).await;
    let cmd = RunnerCmd::new()
        .envs(emulator.env())
        .env("AWS_ACCESS_KEY_ID", RUNNER_KEY)
        .env("IMMORTAL_FUNCTION_ROLE", "assume")
        .env("IMMORTAL_RUNTIME_DIR", fixtures().join("runtimes/python"))
        .args(["--event", "{}", "--context", &context_for(&name, "req-py-self")]);
    let ran = run(cmd).await;
    ran.expect_code(0);
    let seen = ran.json();
    assert!(
        seen["arn"]
            .as_str()
            .unwrap()
            .contains(&format!(":assumed-role/{role_name}/")),
        "{seen}"
    );
    assert!(!seen["env_values"].to_string().contains(RUNNER_KEY));
}

#[tokio::test]
async fn a_role_that_refuses_the_runner_gives_exit_3_a_record_and_the_statement_to_add() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config().await;
    let id = uuid_like();
    let name = format!("refused-{id}");
    deploy(&sdk, &name, &bootstrap_zip_bytes(&fixture("inspect")), &[]).await;
    set_role(&sdk, &name, &create_role(&sdk, &format!("strict-{id}")).await).await;
    let failures = Queue::create(&sdk, &format!("failures-{id}"), &[], &[]).await;
    // The emulator grants every AssumeRole: STS here refuses it, as a role that does not
    // trust the runner makes it.
    let sts = TestServer::start(Some(emulator.url.clone()), |req: &Seen| {
        if String::from_utf8_lossy(&req.body).contains("Action=AssumeRole") {
            return Reply::Full {
                status: 403,
                headers: vec![("content-type".into(), "text/xml".into())],
                body: Bytes::from_static(b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User is not authorized to perform: sts:AssumeRole</Message></Error><RequestId>r</RequestId></ErrorResponse>"),
            };
        }
        Reply::Forward
    });
    let cmd = RunnerCmd::new()
        .envs(emulator.env())
        .env("AWS_ENDPOINT_URL_STS", &sts.url)
        .env("IMMORTAL_FUNCTION_ROLE", "assume")
        .env("IMMORTAL_ON_FAILURE", &failures.url)
        .args(["--event", "{}", "--context", &context_for(&name, "req-refused")]);
    let ran = run(cmd).await;
    ran.expect_code(3);
    assert!(
        ran.stderr.contains(r#"\"Action\":\"sts:AssumeRole\""#) || ran.stderr.contains(r#""Action":"sts:AssumeRole""#),
        "the statement to add:\n{}",
        ran.stderr
    );
    assert!(
        !ran.stderr.contains("bootstrap started"),
        "nothing ran without its role"
    );
    let records = failures.receive(10, 2).await;
    assert_eq!(records.len(), 1, "one record");
    let record: Value = serde_json::from_str(records[0].body().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["requestId"], "req-refused");
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["responsePayload"]["errorType"], "Immortal.RoleUnavailable");
    let message = record["responsePayload"]["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("trust policy") && message.contains("sts:AssumeRole"),
        "{message}"
    );
}

#[tokio::test]
async fn the_functions_logs_and_platform_lines_reach_its_own_log_group_through_throttling() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config().await;
    let id = uuid_like();
    let group = format!("/aws/lambda/logs-{id}");
    // The log service throttles the first eight deliveries: more than the SDK's own
    // retries absorb.
    let throttled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = throttled.clone();
    let logs = TestServer::start(Some(emulator.url.clone()), move |req: &Seen| {
        if req.target() == Some("PutLogEvents") && counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 8 {
            return Reply::json(
                400,
                &json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
            );
        }
        Reply::Forward
    });
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("fn.zip");
    std::fs::write(
        &zip,
        folder_zip(&fixtures().join("functions/python-logs"), &["lambda_function.py"]),
    )
    .unwrap();
    let lines = 500;
    let cmd = RunnerCmd::new()
        .envs(emulator.env())
        .env("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", &logs.url)
        .args(["--artifact".as_ref(), zip.as_os_str()])
        .args(["--runtime-dir".as_ref(), fixtures().join("runtimes/python").as_os_str()])
        .args(["--runtime", "python3.12", "--handler", "lambda_function.lambda_handler"])
        .args([
            "--function-logs",
            "cloudwatch",
            "--event",
            &json!({"lines": lines}).to_string(),
        ])
        .args([
            "--context",
            &json!({"request_id": "req-logs", "log_group_name": group}).to_string(),
        ]);
    let ran = run(cmd).await;
    ran.expect_code(0);
    assert!(
        throttled.load(std::sync::atomic::Ordering::SeqCst) > 8,
        "it was throttled"
    );
    assert!(
        !ran.stderr.contains("line 0 of request"),
        "the function's lines are not on stderr"
    );
    let client = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let mut messages = Vec::new();
    let mut next = None;
    loop {
        let page = client
            .filter_log_events()
            .log_group_name(&group)
            .set_next_token(next)
            .send()
            .await
            .expect("the function's own log group exists");
        messages.extend(page.events().iter().filter_map(|e| e.message().map(str::to_owned)));
        next = page.next_token;
        if next.is_none() {
            break;
        }
    }
    for n in 0..lines {
        let line = format!("line {n} of request req-logs");
        assert_eq!(
            messages.iter().filter(|m| **m == line).count(),
            1,
            "{line} once, none lost"
        );
    }
    assert!(
        messages
            .iter()
            .any(|m| m == "START RequestId: req-logs Version: $LATEST"),
        "{messages:?}"
    );
    assert!(messages.iter().any(|m| m == "END RequestId: req-logs"));
    let report = messages
        .iter()
        .find(|m| m.starts_with("REPORT RequestId: req-logs\t"))
        .expect("a REPORT line");
    for field in [
        "Duration: ",
        "Billed Duration: ",
        "Memory Size: 128 MB",
        "Max Memory Used: ",
        "Init Duration: ",
    ] {
        assert!(report.contains(field), "{field} in {report}");
    }
    let streams = client
        .describe_log_streams()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();
    let stream = streams.log_streams()[0].log_stream_name().unwrap();
    assert!(
        stream.contains("/[$LATEST]immortal-") && stream.len() > "2026/11/23/[$LATEST]immortal-".len(),
        "named like Lambda's: {stream}"
    );
}

#[tokio::test]
async fn environment_variables_lambda_cannot_decrypt_fail_the_run_with_a_record() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config().await;
    let failures = Queue::create(&sdk, &format!("failures-{}", uuid_like()), &[], &[]).await;
    let fake = FakeLambda::start(
        vec![FakeFunction {
            name: "sealed".into(),
            code: Bytes::from(bootstrap_zip_bytes(&fixture("inspect"))),
            configuration: json!({"Environment": {"Error": {"ErrorCode": "KMSAccessDeniedException", "Message": "Lambda was unable to decrypt the environment variables"}}}),
            ..Default::default()
        }],
        Some(emulator.url.clone()),
    );
    let cmd = RunnerCmd::new()
        .envs(emulator.env())
        .env("AWS_ENDPOINT_URL", &fake.server.url)
        .env("IMMORTAL_ON_FAILURE", &failures.url)
        .args(["--event", "{}", "--context", &context_for("sealed", "req-sealed")]);
    let ran = run(cmd).await;
    ran.expect_code(3);
    assert!(ran.stderr.contains("KMSAccessDeniedException"), "{}", ran.stderr);
    assert!(
        !ran.stderr.contains("bootstrap started"),
        "never a half-run without its variables"
    );
    let records = failures.receive(10, 2).await;
    assert_eq!(records.len(), 1);
    let record: Value = serde_json::from_str(records[0].body().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["requestId"], "req-sealed");
    assert_eq!(
        record["responsePayload"]["errorType"],
        "Immortal.ConfigurationUnsupported"
    );
}

/// A drain worker on `queue` as the image runs it, `concurrency` at once: its functions'
/// code and configuration from `fake`, each run as its own role, successes to `success`.
fn image_drain_worker(
    image: &ImageUser,
    fake: &FakeLambda,
    queue: &Queue,
    success: &Queue,
    concurrency: &str,
) -> RunnerCmd {
    image
        .runner()
        .envs(Emulator::shared().env())
        .env("AWS_ENDPOINT_URL", &fake.server.url)
        .env("AWS_ACCESS_KEY_ID", RUNNER_KEY)
        .env("IMMORTAL_FUNCTION_ROLE", "assume")
        .env("IMMORTAL_ON_SUCCESS", &success.url)
        .env("IMMORTAL_TRUSTED_SENDERS", EMULATOR_SENDER)
        .args([
            "drain",
            "--queue",
            &queue.url,
            "--concurrency",
            concurrency,
            "--idle-timeout",
            "2",
        ])
}

#[tokio::test]
async fn two_functions_in_one_drain_worker_share_nothing() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config().await;
    let id = uuid_like();
    let image = ImageUser::new();
    // Modes as a careless zip gives them: everything open to everyone.
    let inspect = std::fs::read(fixture("inspect")).unwrap();
    let code = Bytes::from(zip_bytes(&[
        Entry::File("bootstrap", &inspect, 0o777),
        Entry::File("open-to-all", b"x", 0o666),
    ]));
    let layer = Bytes::from(zip_bytes(&[Entry::File("a-layer-file", b"only for a", 0o644)]));
    let role = create_role(&sdk, &format!("neighbour-{id}")).await;
    let function = |name: &str, layers: Vec<Bytes>| FakeFunction {
        name: name.to_owned(),
        code: code.clone(),
        layers,
        configuration: json!({"Role": role}),
    };
    let (a, b) = (format!("a-{id}"), format!("b-{id}"));
    let fake = FakeLambda::start(
        vec![function(&a, vec![layer]), function(&b, vec![])],
        Some(emulator.url.clone()),
    );
    let queue = Queue::create(&sdk, &format!("drain-{id}"), &[], &[]).await;
    let success = Queue::create(&sdk, &format!("success-{id}"), &[], &[]).await;
    let opt = image.work().parent().unwrap().join("opt");
    // Where the worker caches every function's code.
    let cache = image.work().parent().unwrap().join("cache");
    for (me, other) in [(&a, &b), (&b, &a)] {
        let event = json!({"write_marker": format!("marker-{me}"), "look_for": format!("marker-{other}"), "opt": opt,
                           "read_path": cache.join("code"), "rewrite": "open-to-all"});
        queue
            .send(&timeout_record(
                &format!("req-{me}"),
                &format!("arn:aws:lambda:us-east-1:123456789012:function:{me}"),
                &event,
            ))
            .await;
    }
    let cmd = image_drain_worker(&image, &fake, &queue, &success, "1")
        // What ECS gives the runner's container, never its functions.
        .env("ECS_CONTAINER_METADATA_URI_V4", "http://169.254.170.2/v4/runner")
        .env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/runner");
    let ran = run(cmd).await;
    ran.expect_code(0);
    let mut seen = std::collections::BTreeMap::new();
    for message in success.receive(10, 2).await {
        let record: Value = serde_json::from_str(message.body().unwrap()).unwrap();
        let request = record["requestContext"]["requestId"].as_str().unwrap().to_owned();
        seen.insert(request, record["responsePayload"].clone());
    }
    assert_eq!(seen.len(), 2, "both ran: {}", ran.stderr);
    // The runner's version, the run's facts, and where its layers are (not /opt here).
    let allowed = [
        "IMMORTAL_RUNNER",
        "IMMORTAL_NO_DEADLINE",
        "IMMORTAL_OVERFLOW",
        "IMMORTAL_OPT_DIR",
    ];
    for (me, response) in &seen {
        for place in ["in_tmp", "closed_in_tmp", "in_var_tmp", "in_dev_shm"] {
            assert_eq!(
                response["look_for"][place], false,
                "{me} sees nothing its neighbour left ({place}), though both run as one user"
            );
        }
        let opt = response["opt"].as_array().unwrap();
        if me == &format!("req-{a}") {
            assert_eq!(opt, &vec![json!("a-layer-file")], "{me} has its layer");
        } else {
            assert!(
                opt.is_empty(),
                "{me} has no layers, and none of its neighbour's: {opt:?}"
            );
        }
        assert!(
            response["task_root_write"].as_str().unwrap().starts_with("refused"),
            "{me}"
        );
        for attempt in ["read_path", "rewrite"] {
            assert!(
                response[attempt].as_str().unwrap().starts_with("refused"),
                "{me} can neither list the code cache nor change its own code: {attempt} {}",
                response[attempt]
            );
        }
        let env = response["env"].as_object().unwrap();
        let immortal: Vec<&String> = env.keys().filter(|k| k.starts_with("IMMORTAL_")).collect();
        assert!(
            immortal.iter().all(|k| allowed.contains(&k.as_str())),
            "{me}: {immortal:?}"
        );
        assert!(!env.values().any(|v| v.as_str().unwrap().contains(RUNNER_KEY)), "{me}");
        for ecs in [
            "ECS_CONTAINER_METADATA_URI_V4",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ] {
            assert!(!env.contains_key(ecs), "{me}: {ecs}");
        }
        assert_ne!(response["uid"].as_u64(), Some(u64::from(RUNNER_UID)));
    }
    let leftovers: Vec<String> = ["/tmp", "/var/tmp", "/dev/shm"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap().flatten())
        .map(|e| e.path().display().to_string())
        .filter(|n| n.contains("marker-") && n.contains(&id))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the worker left /tmp as it found it: {leftovers:?}"
    );
}

/// The attack of a drain worker running two functions at once: while the victim's run
/// is under way, the attacker's record arrives and is taken. Were its code shown in the
/// shared task root and layers root then, the victim's later lookups would land in the
/// attacker's code. The attacker's run waits for the victim's to end instead.
#[tokio::test]
async fn a_concurrent_drain_run_of_another_function_never_swaps_the_victims_code() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config().await;
    let id = uuid_like();
    let image = ImageUser::new();
    let inspect = std::fs::read(fixture("inspect")).unwrap();
    let code_of = |owner: &str| {
        Bytes::from(zip_bytes(&[
            Entry::File("bootstrap", &inspect, 0o755),
            Entry::File("whose", owner.as_bytes(), 0o644),
        ]))
    };
    let role = create_role(&sdk, &format!("swap-{id}")).await;
    let (victim, attacker) = (format!("victim-{id}"), format!("attacker-{id}"));
    let function = |name: &str, layers: Vec<Bytes>| FakeFunction {
        name: name.to_owned(),
        code: code_of(name),
        layers,
        configuration: json!({"Role": role}),
    };
    let victims_layer = Bytes::from(zip_bytes(&[Entry::File("victims-layer", b"v", 0o644)]));
    let fake = FakeLambda::start(
        vec![function(&victim, vec![victims_layer]), function(&attacker, vec![])],
        Some(emulator.url.clone()),
    );
    let queue = Queue::create(&sdk, &format!("swap-{id}"), &[], &[]).await;
    let success = Queue::create(&sdk, &format!("swap-ok-{id}"), &[], &[]).await;
    let opt = image.work().parent().unwrap().join("opt");
    let record = |name: &str, event: Value| {
        timeout_record(
            &format!("req-{name}"),
            &format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
            &event,
        )
    };
    queue
        .send(&record(
            &victim,
            json!({"sleep_first_s": 4, "read_task_root": "whose", "opt": opt}),
        ))
        .await;
    let worker = image_drain_worker(&image, &fake, &queue, &success, "2").spawn();
    // The attacker's record arrives while the victim sleeps.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    queue
        .send(&record(&attacker, json!({"read_task_root": "whose", "opt": opt})))
        .await;
    let ran = tokio::task::spawn_blocking(move || worker.wait(std::time::Duration::from_secs(120)))
        .await
        .unwrap();
    ran.expect_code(0);
    let mut seen = std::collections::BTreeMap::new();
    for message in success.receive(10, 2).await {
        let record: Value = serde_json::from_str(message.body().unwrap()).unwrap();
        let request = record["requestContext"]["requestId"].as_str().unwrap().to_owned();
        seen.insert(request, record["responsePayload"].clone());
    }
    assert_eq!(seen.len(), 2, "both ran: {}", ran.stderr);
    let (victims, attackers) = (&seen[&format!("req-{victim}")], &seen[&format!("req-{attacker}")]);
    assert_eq!(
        victims["read_task_root"], victim,
        "the victim's task root held its own code to the end"
    );
    assert_eq!(
        victims["opt"],
        json!(["victims-layer"]),
        "and its layers root its layer"
    );
    assert_eq!(
        attackers["read_task_root"], attacker,
        "the attacker ran its own code, after"
    );
    assert_eq!(attackers["opt"], json!([]), "with none of the victim's layers");
}

#[tokio::test]
async fn an_extension_runs_as_its_functions_user_and_nothing_of_theirs_outlives_the_run() {
    let emulator = Emulator::shared();
    let image = ImageUser::new();
    // The notes file is the test's own, writable by all: the image's runner removes what
    // the function's user owns under /tmp when the run ends, and the checkout (with its
    // target folder) may itself be under /tmp.
    let shared = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(shared.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let notes = shared.path().join("extension.log");
    std::fs::write(&notes, "").unwrap();
    std::fs::set_permissions(&notes, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let program = std::fs::read(fixture("extension")).unwrap();
    let layer = Bytes::from(zip_bytes(&[
        Entry::Dir("extensions/"),
        Entry::File("extensions/fixture-extension", &program, 0o755),
    ]));
    let fake = FakeLambda::start(
        vec![FakeFunction {
            name: "observed".into(),
            code: Bytes::from(bootstrap_zip_bytes(&fixture("inspect"))),
            layers: vec![layer],
            configuration: json!({"Environment": {"Variables": {
                "EXTENSION_LOG": notes.display().to_string(), "EXTENSION_NOTE_UID": "1"}}}),
        }],
        Some(emulator.url.clone()),
    );
    let cmd = image
        .runner()
        .envs(emulator.env())
        .env("AWS_ENDPOINT_URL_LAMBDA", &fake.server.url)
        .args(["--event", "{}", "--context", &context_for("observed", "req-observed")]);
    let ran = run(cmd).await;
    ran.expect_code(0);
    let uid = ran.json()["uid"].as_u64().unwrap();
    assert!((20_000..30_000).contains(&uid), "{uid}");
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap().lines().collect::<Vec<_>>(),
        [
            format!("UID {uid}").as_str(),
            "INVOKE req-observed",
            "INVOKE-DONE",
            "SHUTDOWN spindown"
        ],
        "the extension ran as the function's own user, through INVOKE and SHUTDOWN: {}",
        ran.stderr
    );
    // This run's extension (other tests' functions may run as the same user meanwhile).
    let layers_root = image.work().parent().unwrap().join("opt").display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&layers_root))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "the extension outlived the run: {left:?}");
}

#[tokio::test]
async fn another_users_process_cannot_take_a_functions_event_from_its_runtime_api() {
    use std::os::unix::fs::PermissionsExt;
    let image = ImageUser::new();
    let zip = image.work().join("sleep.zip");
    std::fs::write(&zip, bootstrap_zip_bytes(&fixture("sleep"))).unwrap();
    let shared = image.work().join(format!("api-{}", uuid_like()));
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let pid_file = shared.join("pid");
    let event = json!({"seconds": 3, "pid_file": pid_file});
    let running = image
        .runner()
        .args(["--artifact".as_ref(), zip.as_os_str()])
        .args([
            "--event",
            &event.to_string(),
            "--context",
            &context_for("victim", "req-victim"),
        ])
        .spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !pid_file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = std::fs::read_to_string(&pid_file).expect("the victim started");
    let environ = std::fs::read(format!("/proc/{}/environ", pid.trim())).unwrap();
    let api = environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("AWS_LAMBDA_RUNTIME_API="))
        .expect("the victim's Runtime API")
        .to_owned();

    // The attacker: another function's user on the same host, which can see the port in
    // /proc/net/tcp, asks for the victim's next event and posts a forged response.
    let attack = |args: &[&str]| {
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid",
                "20999",
                "--regid",
                "20999",
                "--clear-groups",
                "curl",
                "-s",
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{http_code}", "--max-time", "5"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let next = attack(&[&format!("http://{api}/2018-06-01/runtime/invocation/next")]);
    let forged = attack(&[
        "--data",
        r#"{"forged":true}"#,
        &format!("http://{api}/2018-06-01/runtime/invocation/req-victim/response"),
    ]);
    assert_eq!(
        (next.as_str(), forged.as_str()),
        ("403", "403"),
        "the attacker was answered"
    );

    let ran = tokio::task::spawn_blocking(move || running.wait(std::time::Duration::from_secs(60)))
        .await
        .unwrap();
    ran.expect_code(0);
    assert_eq!(
        ran.json(),
        json!({"slept": 3.0}),
        "the victim's own answer, not a forged one"
    );
    assert!(
        ran.stderr
            .contains("refused a connection to the run's loopback APIs from another user")
            && ran.stderr.contains("\"peer_uid\":20999"),
        "{}",
        ran.stderr
    );
}

/// The attacker: a function that leaves a detached process behind (its own session, so
/// no signal to the runtime's reaches it), beside an extension. The runtime's end no
/// longer ends its user's processes when extensions run beside it (they must get
/// SHUTDOWN), so the runner's sweep after the run must: nothing of it is left.
#[tokio::test]
async fn a_process_a_function_leaves_behind_does_not_outlive_the_run_beside_an_extension() {
    let emulator = Emulator::shared();
    let image = ImageUser::new();
    let shared = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(shared.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let notes = shared.path().join("extension.log");
    std::fs::write(&notes, "").unwrap();
    std::fs::set_permissions(&notes, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let marker = format!("planted-{}", uuid_like());
    // A custom runtime in sh: plant, then answer the event through the Runtime API.
    let bootstrap = format!(
        r#"#!/bin/sh
setsid sh -c 'sleep 300; :' {marker} </dev/null >/dev/null 2>&1 &
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation"
id=$(curl -sS -D - -o /dev/null "$api/next" | tr -d '\r' | awk -F': ' 'tolower($1)=="lambda-runtime-aws-request-id" {{print $2}}')
curl -sS -X POST -d '{{"planted":true}}' "$api/$id/response" >/dev/null
curl -sS "$api/next" >/dev/null
"#
    );
    let program = std::fs::read(fixture("extension")).unwrap();
    let fake = FakeLambda::start(
        vec![FakeFunction {
            name: "planter".into(),
            code: Bytes::from(zip_bytes(&[Entry::File("bootstrap", bootstrap.as_bytes(), 0o755)])),
            layers: vec![Bytes::from(zip_bytes(&[
                Entry::Dir("extensions/"),
                Entry::File("extensions/fixture-extension", &program, 0o755),
            ]))],
            configuration: json!({"Environment": {"Variables": {"EXTENSION_LOG": notes.display().to_string()}}}),
        }],
        Some(emulator.url.clone()),
    );
    let cmd = image
        .runner()
        .envs(emulator.env())
        .env("AWS_ENDPOINT_URL_LAMBDA", &fake.server.url)
        .args(["--event", "{}", "--context", &context_for("planter", "req-planter")]);
    let ran = run(cmd).await;
    ran.expect_code(0);
    assert_eq!(ran.json(), json!({"planted": true}));
    assert!(
        std::fs::read_to_string(&notes).unwrap().contains("SHUTDOWN spindown"),
        "the extension was beside it: {}",
        ran.stderr
    );
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "the planted process outlived the run: {left:?}\n{}",
        ran.stderr
    );
}
