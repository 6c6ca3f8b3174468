//! The runner in local mode (`--artifact`) with real bootstraps: every path of the
//! Runtime API as an unmodified function sees it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use immortal_tests::runner::RunnerCmd;
use immortal_tests::zips::{bootstrap_zip, write_zip, Entry};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    let path = match name {
        "echo" => env!("CARGO_BIN_EXE_fixture-echo"),
        "fail" => env!("CARGO_BIN_EXE_fixture-fail"),
        "init-panic" => env!("CARGO_BIN_EXE_fixture-init-panic"),
        "stream" => env!("CARGO_BIN_EXE_fixture-stream"),
        "sleep" => env!("CARGO_BIN_EXE_fixture-sleep"),
        "ignore-sigterm" => env!("CARGO_BIN_EXE_fixture-ignore-sigterm"),
        other => panic!("no fixture {other}"),
    };
    PathBuf::from(path)
}

/// A zip of the fixture as `bootstrap`, in `dir`.
fn zip_of(name: &str, dir: &Path) -> PathBuf {
    let zip = dir.join(format!("{name}.zip"));
    bootstrap_zip(&fixture(name), &zip);
    zip
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn an_unmodified_lambda_runtime_function_sees_lambda_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of("echo", dir.path());
    let event = json!({"bucket": "videos", "key": "clip_00-03.mp4", "n": [1, 2.5, null]});
    let context = json!({
        "request_id": "6f1c8e3a-0000-4000-8000-000000000001",
        "invoked_function_arn": "arn:aws:lambda:eu-west-1:111122223333:function:echo:live",
        "function_version": "7",
        "memory_limit_in_mb": 1024,
        "xray_trace_id": "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
        "client_context": {"client": {"installation_id": "i", "app_title": "t", "app_version_name": "n",
            "app_version_code": "c", "app_package_name": "p"}, "custom": {"k": "v"}, "environment": {}},
        "identity": {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"},
        "log_group_name": "/aws/lambda/echo",
        "log_stream_name": "2026/11/22/[7]abc"
    });
    let before = now_ms();
    let cache = tempfile::tempdir().unwrap();
    let ran = RunnerCmd::new()
        .cache(cache.path())
        .args(["--artifact".as_ref(), zip.as_os_str()])
        .args(["--event", &event.to_string(), "--context", &context.to_string()])
        .run();
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["event"], event);
    assert_eq!(seen["request_id"], context["request_id"]);
    assert_eq!(seen["invoked_function_arn"], context["invoked_function_arn"]);
    assert_eq!(seen["xray_trace_id"], context["xray_trace_id"]);
    assert_eq!(seen["client_context"]["custom"]["k"], "v");
    assert_eq!(seen["identity"]["identityId"], "id-1");
    assert_eq!(seen["identity"]["identityPoolId"], "pool-1");
    assert_eq!(seen["function_name"], "echo");
    assert_eq!(seen["memory"], 1024);
    assert_eq!(seen["version"], "7");
    // No time limit: the deadline lies weeks ahead, yet fits a 32-bit millisecond count.
    let remaining = seen["deadline_ms"].as_u64().unwrap() - before;
    assert!(remaining > 20 * 24 * 3600 * 1000, "deadline only {remaining} ms away");
    assert!(remaining < i32::MAX as u64, "remaining {remaining} ms overflows an int");

    let env = &seen["env"];
    let api = env["AWS_LAMBDA_RUNTIME_API"].as_str().unwrap();
    assert!(
        api.starts_with("127.0.0.1:") && !api.contains('/'),
        "host:port only, got {api}"
    );
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "echo");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "7");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "1024");
    assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/echo");
    assert_eq!(env["AWS_LAMBDA_LOG_STREAM_NAME"], "2026/11/22/[7]abc");
    assert_eq!(env["AWS_REGION"], "eu-west-1");
    assert_eq!(env["_HANDLER"], "bootstrap");
    assert!(
        env.get("AWS_EXECUTION_ENV").is_none(),
        "Lambda sets no AWS_EXECUTION_ENV for custom runtimes"
    );
    assert_eq!(env["IMMORTAL_NO_DEADLINE"], "1");
    let task_root = env["LAMBDA_TASK_ROOT"].as_str().unwrap();
    assert_eq!(seen["cwd"], task_root, "the bootstrap runs in the task root");
    assert!(Path::new(task_root).join("bootstrap").is_file());
    assert!(
        task_root.starts_with(cache.path().to_str().unwrap()),
        "a zip is unpacked into the cache"
    );
    assert!(env["LD_LIBRARY_PATH"]
        .as_str()
        .unwrap()
        .contains(&format!("{task_root}/lib")));
    assert!(env.get("IMMORTAL_EVENT").is_none(), "the envelope is not passed on");
}

#[test]
fn defaults_fill_a_missing_context_and_the_environment_passes_through() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of("echo", dir.path());
    let ran = RunnerCmd::new()
        .env("IMMORTAL_EVENT", r#"{"from":"env"}"#)
        .env("AWS_REGION", "ap-southeast-2")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .args(["--artifact".as_ref(), zip.as_os_str()])
        .run();
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["event"], json!({"from": "env"}));
    assert_eq!(seen["function_name"], "echo");
    assert_eq!(seen["version"], "$LATEST");
    assert_eq!(seen["memory"], 128);
    assert_eq!(
        seen["invoked_function_arn"],
        "arn:aws:lambda:ap-southeast-2:123456789012:function:echo"
    );
    assert_eq!(seen["request_id"].as_str().unwrap().len(), 36);
    assert_eq!(seen["env"]["AWS_ENDPOINT_URL"], "http://127.0.0.1:1");
}

#[test]
fn events_come_from_files_and_stdin_and_responses_go_to_files() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of("echo", dir.path());
    let event_file = dir.path().join("event.json");
    std::fs::write(&event_file, r#"{"file": true}"#).unwrap();
    let out = dir.path().join("out.json");
    let ran = RunnerCmd::new()
        .args([
            "--artifact".as_ref(),
            zip.as_os_str(),
            "--event".as_ref(),
            format!("@{}", event_file.display()).as_ref(),
        ])
        .args(["--output".as_ref(), out.as_os_str()])
        .run();
    ran.expect_code(0);
    assert!(ran.stdout.is_empty());
    let seen: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(seen["event"], json!({"file": true}));

    let ran = RunnerCmd::new()
        .args(["--artifact".as_ref(), zip.as_os_str(), "--event".as_ref(), "-".as_ref()])
        .run_with_stdin(br#"{"stdin": 1}"#);
    ran.expect_code(0);
    assert_eq!(ran.json()["event"], json!({"stdin": 1}));
}

#[test]
fn an_unpacked_folder_works_as_the_artifact() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("echo"), dir.path().join("bootstrap")).unwrap();
    let ran = RunnerCmd::new()
        .args([
            "--artifact".as_ref(),
            dir.path().as_os_str(),
            "--event".as_ref(),
            "[]".as_ref(),
        ])
        .run();
    ran.expect_code(0);
    assert_eq!(
        ran.json()["env"]["LAMBDA_TASK_ROOT"],
        dir.path().canonicalize().unwrap().display().to_string()
    );
}

#[test]
fn a_function_error_is_exit_1_with_the_error_json() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of("fail", dir.path());
    let ran = RunnerCmd::new()
        .args([
            "--artifact".as_ref(),
            zip.as_os_str(),
            "--event".as_ref(),
            r#"{"reason":"disk full"}"#.as_ref(),
        ])
        .run();
    ran.expect_code(1);
    assert_eq!(
        ran.json(),
        json!({"errorType": "Fixture.Failed", "errorMessage": "disk full"})
    );
}

#[test]
fn a_panic_during_init_is_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of("init-panic", dir.path());
    let ran = RunnerCmd::new()
        .args([
            "--artifact".as_ref(),
            zip.as_os_str(),
            "--event".as_ref(),
            "{}".as_ref(),
        ])
        .run();
    ran.expect_code(4);
    let error = ran.json();
    assert_eq!(error["errorType"], "Runtime.ExitError");
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Runtime exited with error: exit status 101"),
        "{error}"
    );
    assert!(ran.stderr.contains("before asking for the event"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("init failed: TABLE_NAME"),
        "the bootstrap's own output is on stderr"
    );
}

#[test]
fn a_streamed_response_arrives_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of("stream", dir.path());
    let ran = RunnerCmd::new()
        .args([
            "--artifact".as_ref(),
            zip.as_os_str(),
            "--event".as_ref(),
            r#"{"chunks":["one ","two ","three"]}"#.as_ref(),
        ])
        .run();
    ran.expect_code(0);
    // lambda_runtime frames a stream as Lambda expects: metadata prelude, 8 NULs, the chunks.
    let text = ran.stdout_text();
    let (prelude, body) = text.split_once("\0\0\0\0\0\0\0\0").expect("prelude separator");
    let prelude: Value = serde_json::from_str(prelude).unwrap();
    assert_eq!(prelude["statusCode"], 200);
    assert_eq!(body, "one two three");
}

#[test]
fn past_the_timeout_the_result_is_lambdas_sandbox_timedout() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of("sleep", dir.path());
    let ran = RunnerCmd::new()
        .args([
            "--artifact".as_ref(),
            zip.as_os_str(),
            "--event".as_ref(),
            r#"{"seconds":30}"#.as_ref(),
        ])
        .args(["--timeout", "1", "--context", r#"{"request_id":"req-t"}"#])
        .run();
    ran.expect_code(5);
    assert_eq!(
        ran.json(),
        json!({"errorType": "Sandbox.Timedout", "errorMessage": "RequestId: req-t Error: Task timed out after 1.00 seconds"})
    );
    assert!(ran.elapsed < Duration::from_secs(10), "took {:?}", ran.elapsed);
}

#[test]
fn with_a_timeout_the_deadline_header_is_the_real_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of("echo", dir.path());
    let before = now_ms();
    let ran = RunnerCmd::new()
        .args([
            "--artifact".as_ref(),
            zip.as_os_str(),
            "--event".as_ref(),
            "{}".as_ref(),
            "--timeout".as_ref(),
            "30".as_ref(),
        ])
        .run();
    ran.expect_code(0);
    let seen = ran.json();
    let deadline = seen["deadline_ms"].as_u64().unwrap();
    assert!(
        deadline >= before + 29_000 && deadline <= now_ms() + 30_000,
        "deadline {deadline}"
    );
    assert!(seen["env"].get("IMMORTAL_NO_DEADLINE").is_none());
}

#[test]
fn after_the_response_the_runtime_is_ended_at_once_as_lambda_does_without_extensions() {
    // Lambda's Shutdown phase lasts 0 ms for a function without extensions: the runtime
    // gets SIGKILL, not SIGTERM and a grace period (this one would ignore SIGTERM).
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of("ignore-sigterm", dir.path());
    let ran = RunnerCmd::new()
        .args([
            "--artifact".as_ref(),
            zip.as_os_str(),
            "--event".as_ref(),
            "{}".as_ref(),
            "--grace-period".as_ref(),
            "30".as_ref(),
        ])
        .run();
    ran.expect_code(0);
    let pid = ran.json()["pid"].as_u64().unwrap();
    assert!(
        ran.elapsed < Duration::from_secs(15),
        "no grace period at the end: took {:?}",
        ran.elapsed
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "bootstrap {pid} still exists"
    );
}

#[test]
fn sigterm_to_the_runner_reaches_the_bootstrap_and_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of("sleep", dir.path());
    let pid_file = dir.path().join("pid");
    let marker = dir.path().join("marker");
    let event = json!({"seconds": 60, "pid_file": pid_file, "marker": marker});
    let running = RunnerCmd::new()
        .args([
            "--artifact".as_ref(),
            zip.as_os_str(),
            "--event".as_ref(),
            event.to_string().as_ref(),
        ])
        .spawn();
    wait_for_file(&pid_file);
    running.signal(libc::SIGTERM);
    let ran = running.wait(Duration::from_secs(20));
    ran.expect_code(143);
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "SIGTERM",
        "the bootstrap got SIGTERM"
    );
}

#[test]
fn a_sigterm_ignoring_bootstrap_does_not_hold_up_a_stopped_runner() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of("ignore-sigterm", dir.path());
    let pid_file = dir.path().join("pid");
    let event = json!({"hang": true, "pid_file": pid_file});
    let running = RunnerCmd::new()
        .args([
            "--artifact".as_ref(),
            zip.as_os_str(),
            "--event".as_ref(),
            event.to_string().as_ref(),
        ])
        .args(["--grace-period", "1"])
        .spawn();
    // Once the function has its event, the runner is past its start-up (a signal before
    // its handlers are in place would end it by the default action, not as a stop).
    wait_for_file(&pid_file);
    running.signal(libc::SIGINT);
    let ran = running.wait(Duration::from_secs(20));
    ran.expect_code(130);
    assert!(ran.elapsed < Duration::from_secs(10), "took {:?}", ran.elapsed);
}

#[test]
fn a_bootstrap_killed_by_sigkill_is_exit_137_naming_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let zip = zip_of("sleep", dir.path());
    let pid_file = dir.path().join("pid");
    let event = json!({"seconds": 60, "pid_file": pid_file});
    let running = RunnerCmd::new()
        .args([
            "--artifact".as_ref(),
            zip.as_os_str(),
            "--event".as_ref(),
            event.to_string().as_ref(),
        ])
        .args(["--context", r#"{"request_id":"req-k"}"#])
        .spawn();
    let pid: i32 = wait_for_file(&pid_file).parse().unwrap();
    // SAFETY: kill(2) on the fixture's own pid, as the OOM killer would.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let ran = running.wait(Duration::from_secs(20));
    ran.expect_code(137);
    assert_eq!(
        ran.json(),
        json!({"errorType": "Runtime.ExitError", "errorMessage": "RequestId: req-k Error: Runtime exited with error: signal: killed"})
    );
    assert!(
        ran.stderr.contains("the bootstrap was ended by signal 9 (killed)"),
        "{}",
        ran.stderr
    );
}

fn wait_for_file(path: &Path) -> String {
    for _ in 0..1000 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never appeared", path.display());
}

// ---- bad input: one line naming the problem, exit 2 or 3 ----

fn one_line_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    lines[0].to_owned()
}

/// How a bad input case is set up: the arguments, given a scratch folder.
type Arrange = fn(&Path) -> Vec<String>;

/// A zip written into `dir` with `entries`, as an `--artifact` argument pair.
fn artifact_with(dir: &Path, name: &str, entries: &[Entry<'_>]) -> Vec<String> {
    let zip = dir.join(name);
    write_zip(&zip, entries);
    vec!["--artifact".into(), zip.display().to_string()]
}

#[test]
fn bad_input_is_one_line_naming_the_problem_with_its_exit_code() {
    let cases: [(&str, Arrange, i32, &str); 6] = [
        (
            "malformed event JSON",
            |dir| {
                let zip = zip_of("echo", dir);
                vec![
                    "--artifact".into(),
                    zip.display().to_string(),
                    "--event".into(),
                    "{nope".into(),
                ]
            },
            2,
            "the event is not valid JSON",
        ),
        (
            "a missing event",
            |dir| vec!["--artifact".into(), zip_of("echo", dir).display().to_string()],
            2,
            "no event given",
        ),
        (
            "a missing artifact",
            |_| {
                ["--artifact", "/nonexistent/fn.zip", "--event", "{}"]
                    .map(String::from)
                    .to_vec()
            },
            3,
            "the artifact /nonexistent/fn.zip does not exist",
        ),
        (
            "a zip without bootstrap",
            |dir| {
                let mut args = artifact_with(
                    dir,
                    "nob.zip",
                    &[Entry::File("handler.py", b"def fn(e, c): pass\n", 0o644)],
                );
                args.extend(["--event".into(), "{}".into()]);
                args
            },
            3,
            "no `bootstrap` in",
        ),
        (
            "a non-executable bootstrap",
            |dir| {
                let mut args = artifact_with(dir, "noexec.zip", &[Entry::File("bootstrap", b"#!/bin/sh\n", 0o644)]);
                args.extend(["--event".into(), "{}".into()]);
                args
            },
            3,
            "is not executable (mode 644): set its executable bit (chmod 755 bootstrap) in the function's folder, or before zipping it",
        ),
        (
            "a file that is not a zip",
            |dir| {
                let zip = dir.join("fake.zip");
                std::fs::write(&zip, "not a zip").unwrap();
                vec![
                    "--artifact".into(),
                    zip.display().to_string(),
                    "--event".into(),
                    "{}".into(),
                ]
            },
            3,
            "is not a zip archive",
        ),
    ];
    for (case, arrange, code, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let ran = RunnerCmd::new().args(arrange(dir.path())).run();
        assert_eq!(ran.code, Some(code), "{case}: exit code\n{}", ran.stderr);
        assert!(one_line_error(&ran.stderr).contains(message), "{case}: {}", ran.stderr);
    }
}

/// Output for a person: during a long run a "still running" line at a steady interval
/// (`--heartbeat`), and on a terminal the response ends its line; through a pipe the
/// response is the function's bytes, no more.
#[test]
fn a_long_run_says_it_is_alive_and_a_terminal_gets_a_whole_line() {
    let sleep = fixture("sleep");
    let ran = RunnerCmd::new()
        .args(["--artifact".as_ref(), sleep.as_os_str()])
        .args(["--event", r#"{"seconds": 3.5}"#, "--heartbeat", "1"])
        .run();
    ran.expect_code(0);
    let alive = ran.stderr.lines().filter(|l| l.contains("still running")).count();
    assert!(
        (2..=4).contains(&alive),
        "one a second, after the event: {alive}\n{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("max_memory_mb"), "{}", ran.stderr);
    assert!(!ran.stdout_text().ends_with('\n'), "a pipe gets the bytes as returned");
    let quiet = RunnerCmd::new()
        .args(["--artifact".as_ref(), sleep.as_os_str()])
        .args(["--event", r#"{"seconds": 1.5}"#, "--heartbeat", "0"])
        .run();
    quiet.expect_code(0);
    assert!(!quiet.stderr.contains("still running"), "{}", quiet.stderr);

    // On a terminal (script(1) gives the runner one): the response, then a newline.
    let text = immortal_tests::runner::on_a_terminal(&format!(
        "--artifact {} --event '{{\"seconds\": 0}}' 2>/dev/null",
        sleep.display()
    ));
    assert!(text.ends_with("}\r\n"), "the prompt starts a line of its own: {text:?}");
}

/// A runner killed with SIGKILL cannot remove its scratch folder: the next runner to
/// start does, and leaves a live runner's alone.
#[test]
fn a_dead_runners_scratch_folder_is_removed_by_the_next_runner() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = tmp.path().join(format!("immortal-fn-{dead}-abcdef"));
    let live = tmp.path().join(format!("immortal-fn-{}-abcdef", std::process::id()));
    for dir in [&stale, &live] {
        std::fs::create_dir_all(dir.join("work")).unwrap();
    }
    let ran = RunnerCmd::new()
        .env("TMPDIR", tmp.path())
        .args(["--artifact".as_ref(), fixture("echo").as_os_str()])
        .args(["--event", "{}"])
        .run();
    ran.expect_code(0);
    assert!(!stale.exists(), "{}", ran.stderr);
    assert!(live.exists());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("immortal-fn-") && !n.starts_with(&format!("immortal-fn-{}-", std::process::id())))
        .collect();
    assert!(left.is_empty(), "its own scratch folder went too: {left:?}");
}

/// `runner cache prune`: beyond the N most recently used of each kind, or unused for a
/// while; never what a running runner uses; `--dry-run` removes nothing; a pruned
/// function is unpacked again when it runs next.
#[test]
fn cache_prune_keeps_the_recent_and_what_a_running_runner_uses() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let zips: Vec<PathBuf> = ["sleep", "echo", "fail"]
        .iter()
        .map(|n| zip_of(n, dir.path()))
        .collect();
    let runner = |args: &[&str]| RunnerCmd::new().cache(&cache).args(args);
    let code_entries = || -> Vec<String> {
        let Ok(listing) = std::fs::read_dir(cache.join("code")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = listing
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    };
    // The first, used longest ago, runs on while the cache is pruned.
    let running = runner(&["--artifact", zips[0].to_str().unwrap(), "--event", r#"{"seconds": 8}"#]).spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while code_entries().is_empty() {
        assert!(std::time::Instant::now() < deadline, "its entry never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    for zip in &zips[1..] {
        runner(&["--artifact", zip.to_str().unwrap(), "--event", "{}"]).run();
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = code_entries();
    assert_eq!(all.len(), 3);

    let dry = runner(&["cache", "prune", "--older-than", "0s", "--dry-run"]).run();
    dry.expect_code(0);
    let said = dry.stdout_text();
    assert!(said.contains("would remove 2 entries"), "{said}");
    assert!(said.contains("a running runner uses it"), "{said}");
    assert_eq!(code_entries(), all, "a dry run removes nothing");

    let kept_one = runner(&["cache", "prune", "--keep", "1"]).run();
    kept_one.expect_code(0);
    assert!(
        kept_one.stdout_text().contains("removed 1 entries"),
        "{}",
        kept_one.stdout_text()
    );
    assert_eq!(code_entries().len(), 2, "the most recent, and the oldest, in use");
    let everything = runner(&["cache", "prune", "--older-than", "0s"]).run();
    everything.expect_code(0);
    assert_eq!(
        code_entries().len(),
        1,
        "only the running one: {}",
        everything.stdout_text()
    );
    let ran = running.wait(Duration::from_secs(30));
    ran.expect_code(0);
    runner(&["cache", "prune", "--older-than", "0s"]).run().expect_code(0);
    assert!(code_entries().is_empty(), "nothing uses it any more");

    // Pruned code is unpacked again, and runs.
    runner(&["--artifact", zips[1].to_str().unwrap(), "--event", r#"{"again": true}"#])
        .run()
        .expect_code(0);
    assert_eq!(code_entries().len(), 1);
    let bad = runner(&["cache", "prune"]).run();
    bad.expect_code(2);
}

/// `--layer`, repeated, for local code: zips and folders merged in order as Lambda
/// merges layers into /opt (a later layer's file over an earlier one's), so a bootstrap
/// a layer brings runs code that has none; an edited folder layer is seen at once.
#[test]
fn local_layers_merge_in_order_and_a_layers_bootstrap_runs_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let echo = std::fs::read(fixture("echo")).unwrap();
    let fail = std::fs::read(fixture("fail")).unwrap();
    let layer = |name: &str, bootstrap: &[u8]| {
        let zip = dir.path().join(name);
        write_zip(&zip, &[Entry::File("bootstrap", bootstrap, 0o755)]);
        zip
    };
    let (echo_layer, fail_layer) = (layer("echo-layer.zip", &echo), layer("fail-layer.zip", &fail));
    let code = dir.path().join("code.zip");
    write_zip(&code, &[Entry::File("README", b"no bootstrap here\n", 0o644)]);
    let cache = tempfile::tempdir().unwrap();
    let run = |layers: &[&Path]| {
        let mut cmd = RunnerCmd::new()
            .cache(cache.path())
            .args(["--artifact".as_ref(), code.as_os_str()])
            .args(["--event", r#"{"layered":true}"#]);
        for layer in layers {
            cmd = cmd.args(["--layer".as_ref(), layer.as_os_str()]);
        }
        cmd.run()
    };
    // The later layer's bootstrap wins.
    let echoed = run(&[&fail_layer, &echo_layer]);
    echoed.expect_code(0);
    assert_eq!(echoed.json()["event"], json!({"layered": true}), "{}", echoed.stderr);
    run(&[&echo_layer, &fail_layer]).expect_code(1);

    // A folder layer, edited between runs.
    let folder = dir.path().join("folder-layer");
    std::fs::create_dir(&folder).unwrap();
    let bootstrap = folder.join("bootstrap");
    std::fs::write(&bootstrap, &fail).unwrap();
    std::fs::set_permissions(&bootstrap, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    run(&[&echo_layer, &folder]).expect_code(1);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::remove_file(&bootstrap).unwrap();
    std::fs::write(&bootstrap, &echo).unwrap();
    std::fs::set_permissions(&bootstrap, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    run(&[&fail_layer, &folder]).expect_code(0);

    // A layer version ARN: GetLayerVersion, then its zip, as a function's layers are
    // fetched (the tests' own Lambda API serves it: the emulator cannot).
    let fake = immortal_tests::fake_lambda::FakeLambda::start(
        vec![immortal_tests::fake_lambda::FakeFunction {
            name: "published".into(),
            code: std::fs::read(&code).unwrap().into(),
            layers: vec![std::fs::read(&echo_layer).unwrap().into()],
            ..Default::default()
        }],
        None,
    );
    let arn = "arn:aws:lambda:us-east-1:123456789012:layer:published-layers:1";
    // A cache of its own: the same zip unpacked before would be found by its SHA-256.
    let fresh = tempfile::tempdir().unwrap();
    let fetched = RunnerCmd::new()
        .cache(fresh.path())
        .envs(immortal_tests::emulator::aws_env(&fake.server.url))
        .args(["--artifact".as_ref(), code.as_os_str()])
        .args(["--layer".as_ref(), fail_layer.as_os_str()])
        .args(["--layer", arn, "--event", "{}"])
        .run();
    fetched.expect_code(0);
    assert_eq!(fake.downloads("/code/published/layer-1.zip"), 1, "{}", fetched.stderr);

    let missing = run(&[&dir.path().join("no-such-layer.zip")]);
    missing.expect_code(3);
    assert!(
        missing
            .stderr
            .contains("no-such-layer.zip does not exist; pass a layer zip"),
        "{}",
        missing.stderr
    );
}
