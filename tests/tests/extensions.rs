//! Extensions shipped in layers, as Lambda runs them: the Extensions API, the Telemetry
//! API, their timing, and what an extension's failure does. The functions and their
//! layers come from a Lambda API of the tests' own (the emulator cannot serve layers).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use immortal_tests::emulator::{free_port, Emulator};
use immortal_tests::fake_lambda::{FakeFunction, FakeLambda};
use immortal_tests::lambda::uuid_like;
use immortal_tests::runner::{fixture, Ran, RunnerCmd};
use immortal_tests::zips::{bootstrap_zip_bytes, folder_zip, zip_bytes, Entry};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A layer with `extensions/<name>` (and nothing else).
fn extension_layer(name: &str, program: &Path) -> Bytes {
    let bytes = std::fs::read(program).unwrap();
    Bytes::from(zip_bytes(&[
        Entry::Dir("extensions/"),
        Entry::File(&format!("extensions/{name}"), &bytes, 0o755),
    ]))
}

/// The runner, with the code and layers of `function` from the fake Lambda API.
fn runner(fake: &FakeLambda, function: &str, request_id: &str) -> RunnerCmd {
    let context = json!({"request_id": request_id, "invoked_function_arn": format!("arn:aws:lambda:us-east-1:123456789012:function:{function}")});
    RunnerCmd::new()
        .envs(Emulator::shared().env())
        .env("AWS_ENDPOINT_URL_LAMBDA", &fake.server.url)
        .args(["--event", r#"{"k":1}"#, "--context", &context.to_string()])
}

/// The echo fixture with `layer`.
fn echo_with(name: &str, layer: Bytes) -> FakeLambda {
    FakeLambda::start(
        vec![FakeFunction {
            name: name.into(),
            code: Bytes::from(bootstrap_zip_bytes(&fixture("echo"))),
            layers: vec![layer],
            ..Default::default()
        }],
        Some(Emulator::shared().url.clone()),
    )
}

/// A python3.12 function from the fixture folder `folder`, with `layer`.
fn python_with(name: &str, folder: &str, layer: Bytes) -> FakeLambda {
    FakeLambda::start(
        vec![FakeFunction {
            name: name.into(),
            code: Bytes::from(folder_zip(
                &fixtures().join("functions").join(folder),
                &["lambda_function.py"],
            )),
            layers: vec![layer],
            configuration: json!({"Runtime": "python3.12", "Handler": "lambda_function.lambda_handler", "MemorySize": 256}),
        }],
        Some(Emulator::shared().url.clone()),
    )
}

async fn run(cmd: RunnerCmd) -> Ran {
    tokio::task::spawn_blocking(move || cmd.run()).await.unwrap()
}

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn an_extension_built_on_lambda_extension_gets_invoke_then_shutdown_and_the_run_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("extension.log");
    let fake = echo_with("with-ext", extension_layer("fixture-extension", &fixture("extension")));
    let ran = run(runner(&fake, "with-ext", "req-ext")
        .env("EXTENSION_LOG", &notes)
        .env("EXTENSION_DELAY_MS", "600"))
    .await;
    ran.expect_code(0);
    assert_eq!(ran.json()["request_id"], "req-ext");
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap().lines().collect::<Vec<_>>(),
        ["INVOKE req-ext", "INVOKE-DONE", "SHUTDOWN spindown"],
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains(r#""message":"extension started""#),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr
            .contains("EXTENSION\tName: fixture-extension\tState: Ready\tEvents: [INVOKE,SHUTDOWN]"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("fixture-extension starting"),
        "its output is in the function's log"
    );
    // The invocation lasted until the extension asked for its next event.
    let report = ran.stderr.lines().find(|l| l.starts_with("REPORT")).unwrap();
    let duration: f64 = report
        .split("Duration: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(duration >= 600.0, "{report}");

    // Without extensions: nothing starts, the function runs as before.
    std::fs::remove_file(&notes).unwrap();
    let ran = run(runner(&fake, "with-ext", "req-none")
        .env("EXTENSION_LOG", &notes)
        .env("IMMORTAL_EXTENSIONS", "off"))
    .await;
    ran.expect_code(0);
    assert!(!notes.exists(), "the extension never ran");
    assert!(!ran.stderr.contains("extension started"));
}

#[tokio::test]
async fn a_python_extension_on_the_raw_api_sees_the_invocation_and_its_telemetry() {
    let out = tempfile::tempdir().unwrap();
    let fake = python_with(
        "py-ext",
        "python",
        extension_layer("py-telemetry", &fixtures().join("extensions/py-telemetry")),
    );
    let ran = run(runner(&fake, "py-ext", "req-py-ext")
        .env("EXTENSION_OUT", out.path())
        .env("IMMORTAL_RUNTIME_DIR", fixtures().join("runtimes/python")))
    .await;
    ran.expect_code(0);
    assert_eq!(ran.json()["request_id"], "req-py-ext");

    let events = json_lines(&out.path().join("events.jsonl"));
    assert_eq!(events.len(), 2, "{events:?}\n{}", ran.stderr);
    assert_eq!(events[0]["eventType"], "INVOKE");
    assert_eq!(events[0]["requestId"], "req-py-ext");
    assert_eq!(
        events[0]["invokedFunctionArn"],
        "arn:aws:lambda:us-east-1:123456789012:function:py-ext"
    );
    assert!(events[0]["deadlineMs"].as_u64().unwrap() > 0);
    assert_eq!(events[1]["eventType"], "SHUTDOWN");
    assert_eq!(events[1]["shutdownReason"], "spindown");

    let telemetry = json_lines(&out.path().join("telemetry.jsonl"));
    let of = |kind: &str| telemetry.iter().filter(|r| r["type"] == kind).collect::<Vec<_>>();
    assert!(
        of("function").iter().any(|r| r["record"] == "handling req-py-ext"),
        "the function's own log line: {telemetry:?}"
    );
    let report = of("platform.report");
    assert_eq!(report.len(), 1, "{telemetry:?}");
    // Every record reads as the Telemetry API's schema, through AWS's own extension crate's
    // types (not the runner's): a field misnamed or mistyped fails here.
    for record in &telemetry {
        let typed: Result<lambda_extension::LambdaTelemetry, _> = serde_json::from_value(record.clone());
        assert!(typed.is_ok(), "{record}: {:?}", typed.err());
    }
    let typed: lambda_extension::LambdaTelemetry = serde_json::from_value(report[0].clone()).unwrap();
    let lambda_extension::LambdaTelemetryRecord::PlatformReport {
        request_id,
        status,
        metrics,
        ..
    } = typed.record
    else {
        panic!("a platform.report: {}", report[0]);
    };
    assert_eq!(request_id, "req-py-ext");
    assert_eq!(status, lambda_extension::Status::Success);
    assert!(metrics.duration_ms > 0.0, "{metrics:?}");
    // Billed: the duration rounded up to a whole millisecond (durationMs itself is
    // rounded to two decimals, so the ceiling may be one more).
    let ceiling = metrics.duration_ms.ceil() as u64;
    assert!(
        (ceiling..=ceiling + 1).contains(&metrics.billed_duration_ms) && metrics.billed_duration_ms >= 1,
        "{metrics:?}"
    );
    assert_eq!(metrics.memory_size_mb, 256, "the function's MemorySize");
    // A Python runtime's peak is several megabytes: never the 0 of an unmeasured run.
    assert!(metrics.max_memory_used_mb >= 5, "{metrics:?}");
    assert!(
        metrics.init_duration_ms.is_some_and(|d| d > 0.0),
        "a cold start: {metrics:?}"
    );
    assert_eq!(of("platform.start")[0]["record"]["requestId"], "req-py-ext");
    assert_eq!(of("platform.runtimeDone")[0]["record"]["status"], "success");
    assert_eq!(of("platform.initStart").len(), 1, "init records reach a subscriber too");
    assert!(telemetry
        .iter()
        .all(|r| r["time"].as_str().is_some_and(|t| t.ends_with('Z'))));
}

#[tokio::test]
async fn an_extension_that_crashes_during_init_fails_init_as_lambda_reports_it() {
    let fake = echo_with(
        "crashing",
        extension_layer("crasher", &fixtures().join("extensions/crasher")),
    );
    let ran = run(runner(&fake, "crashing", "req-crash")).await;
    ran.expect_code(4);
    let error = ran.json();
    assert_eq!(error["errorType"], "Extension.Crash", "{}", ran.stderr);
    let message = error["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("crasher") && message.contains("exit status 3"),
        "{message}"
    );
    assert!(!ran.stderr.contains("bootstrap started"), "the runtime never starts");
    assert!(
        ran.stderr.contains("cannot read my configuration"),
        "its output is logged"
    );
}

#[tokio::test]
async fn an_extension_that_never_asks_for_its_next_event_holds_the_invocation_until_the_timeout() {
    let fake = echo_with(
        "held",
        extension_layer("never-next", &fixtures().join("extensions/never-next")),
    );
    let ran = run(runner(&fake, "held", "req-held").args(["--timeout", "2"])).await;
    // The response was out; the invocation ended at the timeout, not never.
    ran.expect_code(0);
    assert_eq!(ran.json()["request_id"], "req-held");
    assert!(ran.elapsed < Duration::from_secs(30), "took {:?}", ran.elapsed);
    assert!(ran.stderr.contains("did not finish the invocation"), "{}", ran.stderr);
    let report = ran.stderr.lines().find(|l| l.starts_with("REPORT")).unwrap();
    assert!(report.contains("Status: timeout"), "{report}");
}

#[tokio::test]
async fn a_parameters_cache_extension_serves_the_function_during_its_init() {
    let port = free_port();
    let fake = python_with(
        "configured",
        "python-parameters",
        extension_layer("parameters-cache", &fixtures().join("extensions/parameters-cache")),
    );
    let ran = run(runner(&fake, "configured", &format!("req-{}", uuid_like()))
        .env("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", port.to_string())
        .env("IMMORTAL_RUNTIME_DIR", fixtures().join("runtimes/python")))
    .await;
    ran.expect_code(0);
    assert_eq!(
        ran.json()["greeting"],
        "hello from the parameters cache",
        "{}",
        ran.stderr
    );
}
