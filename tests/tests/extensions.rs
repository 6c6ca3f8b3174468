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

/// As in Lambda the runtime starts once the extensions have registered, and without a
/// time limit (an overflow run) an extension may take as long as it needs to: one that
/// registers after 15 s is waited for. With `--timeout`, Lambda's 10 s init limit holds.
#[tokio::test]
async fn an_extension_that_registers_late_is_waited_for_unless_the_run_has_a_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let fake = echo_with("late-ext", extension_layer("fixture-extension", &fixture("extension")));
    let notes = dir.path().join("late.log");
    let waited = run(runner(&fake, "late-ext", "req-late")
        .env("EXTENSION_LOG", &notes)
        .env("EXTENSION_REGISTER_DELAY_MS", "15000"))
    .await;
    waited.expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap().lines().collect::<Vec<_>>(),
        ["REGISTERING", "INVOKE req-late", "INVOKE-DONE", "SHUTDOWN spindown"],
        "{}",
        waited.stderr
    );
    let limited_notes = dir.path().join("limited.log");
    let limited = run(runner(&fake, "late-ext", "req-limited")
        .env("EXTENSION_LOG", &limited_notes)
        .env("EXTENSION_REGISTER_DELAY_MS", "12000")
        .args(["--timeout", "60"]))
    .await;
    limited.expect_code(4);
    assert_eq!(
        limited.json()["errorType"],
        "Extension.InitTimeout",
        "{}",
        limited.stderr
    );
}

/// Under the sandbox (as the image always runs), an extension gets SHUTDOWN on every
/// path Lambda sends it on: after a run (`spindown`), after a timeout (`timeout`) and
/// after the runtime crashed (`failure`). The runtime's end does not take the
/// extensions with it; the runner's sweep after the run ends what the user left.
#[tokio::test]
async fn under_the_sandbox_an_extension_gets_shutdown_after_a_run_a_timeout_and_a_crash() {
    use immortal_tests::image_user::ImageUser;
    use std::os::unix::fs::PermissionsExt;
    let image = ImageUser::new();
    // The notes are the test's own files, writable by all, outside /tmp: the image's
    // runner removes what the function's user owns there when the run ends.
    let shared = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let notes_dir = shared.path().to_owned();
    for reason in ["spindown", "timeout", "failure"] {
        let notes = notes_dir.join(format!("{reason}.log"));
        std::fs::write(&notes, "").unwrap();
        std::fs::set_permissions(&notes, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let layer = extension_layer("fixture-extension", &fixture("extension"));
    let cases = [
        ("spindown", "echo", None, 0),
        ("timeout", "sleep", Some("1"), 5),
        ("failure", "init-panic", None, 4),
    ];
    let functions: Vec<FakeFunction> = cases
        .iter()
        .map(|(reason, program, _, _)| FakeFunction {
            name: format!("shutdown-{reason}"),
            code: Bytes::from(bootstrap_zip_bytes(&fixture(program))),
            layers: vec![layer.clone()],
            configuration: json!({"Environment": {"Variables": {
                "EXTENSION_LOG": notes_dir.join(format!("{reason}.log")).display().to_string()}}}),
        })
        .collect();
    let fake = FakeLambda::start(functions, Some(Emulator::shared().url.clone()));
    for (reason, _, timeout, code) in cases {
        let name = format!("shutdown-{reason}");
        let context = json!({"request_id": format!("req-{reason}"), "invoked_function_arn": format!("arn:aws:lambda:us-east-1:123456789012:function:{name}")});
        let mut cmd = image
            .runner()
            .envs(Emulator::shared().env())
            .env("AWS_ENDPOINT_URL_LAMBDA", &fake.server.url)
            .args(["--event", r#"{"seconds": 30}"#, "--context", &context.to_string()]);
        if let Some(limit) = timeout {
            cmd = cmd.args(["--timeout", limit]);
        }
        let ran = run(cmd).await;
        ran.expect_code(code);
        let notes = std::fs::read_to_string(notes_dir.join(format!("{reason}.log"))).unwrap_or_default();
        assert_eq!(
            notes.lines().last(),
            Some(format!("SHUTDOWN {reason}").as_str()),
            "{reason}: {notes}\n{}",
            ran.stderr
        );
    }
}

/// The Lambda Web Adapter's `lambda-adapter` (crates.io `lambda_web_adapter` 0.9.1,
/// installed by scripts/setup outside the clone).
fn lambda_web_adapter() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(repo.join("scripts/cache-dir"))
        .output()
        .expect("scripts/cache-dir");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        .join("tools/lambda-web-adapter-0.9.1/bin/lambda-adapter");
    assert!(
        path.is_file(),
        "{} is missing: scripts/setup test installs it",
        path.display()
    );
    path
}

/// A web app that knows nothing of Lambda (Python's standard library), started by a
/// custom runtime's bootstrap: GET answers 201 with a header of its own and the path it
/// was asked; POST (the adapter's pass-through of non-HTTP events) says how many
/// records the event had.
const WEB_APP: &str = r#"import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer

class App(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Web-App", "stdlib")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.answer(201, {"path": self.path})

    def do_POST(self):
        event = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.answer(200, {"path": self.path, "records": len(event.get("Records", []))})

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["AWS_LWA_PORT"])), App).serve_forever()
"#;

/// An API Gateway HTTP API (payload 2.0) event, the shape of the example in the API
/// Gateway developer guide ("Working with AWS Lambda proxy integrations for HTTP APIs").
fn http_api_event() -> Value {
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/hello", "rawQueryString": "name=immortal",
        "cookies": [], "headers": {"accept": "application/json", "host": "api.example.com"},
        "queryStringParameters": {"name": "immortal"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "api-id", "domainName": "api.example.com",
            "domainPrefix": "api", "http": {"method": "GET", "path": "/hello", "protocol": "HTTP/1.1",
            "sourceIp": "192.0.2.1", "userAgent": "agent"}, "requestId": "id", "routeKey": "$default",
            "stage": "$default", "time": "12/Mar/2020:19:03:58 +0000", "timeEpoch": 1583348638390_u64
        },
        "isBase64Encoded": false
    })
}

/// An SQS event as Lambda delivers one (the developer guide's example message).
fn sqs_event() -> Value {
    json!({"Records": [{
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d", "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "body": "test", "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183",
        "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1545082649185"},
        "messageAttributes": {}, "md5OfBody": "098f6bcd4621d373cade4e832627b4f6", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:my-queue", "awsRegion": "us-east-1"}]})
}

/// The Lambda Web Adapter, an extension nobody here wrote, in a layer's `extensions/`,
/// with a plain web app as the function: an HTTP API event comes back as the app
/// answered (status, headers, body) and an SQS event reaches the app's pass-through
/// path, locally and under the sandbox.
#[tokio::test]
async fn the_lambda_web_adapter_serves_an_http_api_event_and_an_sqs_event() {
    use immortal_tests::image_user::ImageUser;
    let adapter = std::fs::read(lambda_web_adapter()).unwrap();
    let layer = zip_bytes(&[
        Entry::Dir("extensions/"),
        Entry::File("extensions/lambda-adapter", &adapter, 0o755),
    ]);
    let code = zip_bytes(&[
        Entry::File("bootstrap", b"#!/bin/sh\nexec /usr/bin/python3 app.py\n", 0o755),
        Entry::File("app.py", WEB_APP.as_bytes(), 0o644),
    ]);
    for sandboxed in [false, true] {
        let image = sandboxed.then(ImageUser::new);
        let dir = tempfile::tempdir().unwrap();
        let (code_zip, layer_zip) = match &image {
            Some(image) => (image.file("web.zip", &code), image.file("lwa.zip", &layer)),
            None => {
                let (c, l) = (dir.path().join("web.zip"), dir.path().join("lwa.zip"));
                std::fs::write(&c, &code).unwrap();
                std::fs::write(&l, &layer).unwrap();
                (c, l)
            }
        };
        let port = free_port().to_string();
        for (event, label) in [(http_api_event(), "http api"), (sqs_event(), "sqs")] {
            let cmd = match &image {
                Some(image) => image.runner(),
                None => RunnerCmd::new(),
            }
            .env("AWS_LWA_PORT", &port)
            .args(["--artifact".as_ref(), code_zip.as_os_str()])
            .args(["--layer".as_ref(), layer_zip.as_os_str()])
            .args(["--event", &event.to_string()]);
            let ran = run(cmd).await;
            ran.expect_code(0);
            let answer = ran.json();
            let what = format!("{label}, sandboxed: {sandboxed}: {answer}\n{}", ran.stderr);
            if label == "http api" {
                assert_eq!(answer["statusCode"], 201, "{what}");
                assert_eq!(answer["headers"]["x-web-app"], "stdlib", "{what}");
                let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
                assert_eq!(body["path"], "/hello?name=immortal", "{what}");
            } else {
                let body = match &answer {
                    Value::String(text) => serde_json::from_str(text).unwrap(),
                    other => other.clone(),
                };
                assert_eq!(body, json!({"path": "/events", "records": 1}), "{what}");
            }
        }
    }
}

/// An internal extension (registered from inside the runtime's process, with no
/// external extension in the layers) gets the function's output as `function` records,
/// as in Lambda.
#[tokio::test]
async fn an_internal_extension_gets_the_functions_output_as_telemetry() {
    let cmd = RunnerCmd::new()
        .args([
            "--artifact".as_ref(),
            fixtures().join("functions/python-internal").as_os_str(),
        ])
        .args(["--runtime-dir".as_ref(), fixtures().join("runtimes/python").as_os_str()])
        .args(["--runtime", "python3.12", "--handler", "lambda_function.lambda_handler"])
        .args(["--event", "{}"]);
    let ran = run(cmd).await;
    ran.expect_code(0);
    assert_eq!(ran.json()["received"], true, "{}\n{}", ran.json(), ran.stderr);
    assert!(
        ran.stderr.contains("a line of "),
        "the line is in the log too: {}",
        ran.stderr
    );
}
