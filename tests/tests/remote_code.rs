//! The runner's remote mode: the function's own code, layers and configuration,
//! fetched from Lambda (the local emulator, or a test server playing the parts the
//! emulator cannot), verified, unpacked safely and cached.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use immortal_tests::emulator::{aws_env, Emulator};
use immortal_tests::lambda::{code_sha256, deploy, uuid_like};
use immortal_tests::runner::{fixture, Ran, RunnerCmd};
use immortal_tests::server::{Reply, Seen, TestServer};
use immortal_tests::zips::{bootstrap_zip_bytes, zip_bytes, Entry};
use serde_json::{json, Value};

async fn run(cmd: RunnerCmd) -> Ran {
    tokio::task::spawn_blocking(move || cmd.run()).await.unwrap()
}

#[tokio::test]
async fn a_function_in_the_emulator_runs_with_its_own_environment_and_is_cached() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config().await;
    let zip = bootstrap_zip_bytes(&fixture("echo"));
    let name = format!("remote-echo-{}", uuid_like());
    let function = deploy(
        &sdk,
        &name,
        &zip,
        &[("GREETING", "hello from the function's configuration")],
    )
    .await;
    assert_eq!(function.sha256, code_sha256(&zip));

    let cache = tempfile::tempdir().unwrap();
    let context = json!({"request_id": "req-remote", "invoked_function_arn": format!("{}:$LATEST", function.arn)});
    let cmd = || {
        RunnerCmd::new().cache(cache.path()).envs(emulator.env()).args([
            "--event",
            r#"{"n":1}"#,
            "--context",
            &context.to_string(),
        ])
    };
    let first = run(cmd()).await;
    first.expect_code(0);
    let seen = first.json();
    assert_eq!(seen["event"], json!({"n": 1}));
    assert_eq!(seen["request_id"], "req-remote");
    assert_eq!(seen["env"]["GREETING"], "hello from the function's configuration");
    assert_eq!(seen["function_name"], name);
    assert_eq!(seen["memory"], 512, "memory from the function's configuration");
    assert!(first.stderr.contains(r#""cache_hit":false"#), "{}", first.stderr);
    assert!(first.stderr.contains(r#""message":"downloaded""#), "{}", first.stderr);

    let second = run(cmd()).await;
    second.expect_code(0);
    assert!(second.stderr.contains(r#""cache_hit":true"#), "{}", second.stderr);
    assert!(
        !second.stderr.contains(r#""message":"downloaded""#),
        "the second run downloads nothing:\n{}",
        second.stderr
    );
}

#[tokio::test]
async fn an_unknown_function_is_exit_3_and_says_what_to_check() {
    let emulator = Emulator::shared();
    let ran = run(RunnerCmd::new()
        .envs(emulator.env())
        .args(["--event", "{}", "--function", "no-such-function"]))
    .await;
    ran.expect_code(3);
    assert!(
        ran.stderr.contains("GetFunction(no-such-function) failed"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("check --function"), "{}", ran.stderr);
}

#[tokio::test]
async fn without_artifact_or_function_it_is_a_usage_error() {
    let ran = run(RunnerCmd::new().args(["--event", "{}"])).await;
    ran.expect_code(2);
    assert!(ran.stderr.contains("no function to run"), "{}", ran.stderr);
}

/// A Lambda API of the test's own: GetFunction and GetLayerVersion answer with code
/// locations on the same server, whose downloads the test controls.
struct FakeLambda {
    server: TestServer,
}

/// The credentials a presigned code location carries (never to be seen in a log).
const SIGNED_QUERY: &str =
    "X-Amz-Security-Token=SECRET-TOKEN&X-Amz-Credential=SECRET-CREDENTIAL&X-Amz-Signature=SECRET-SIGNATURE";

#[derive(Clone, Default)]
struct FakeSpec {
    code: Bytes,
    sha256: Option<String>,
    /// Layer zips, in the function's order.
    layers: Vec<Bytes>,
    cut_first_download_at: Option<usize>,
    logging: Option<Value>,
    /// After the first download, hang up on every request for the code.
    hang_up_after_first: bool,
    /// Every download of the code waits this long before answering.
    slow_download: Option<Duration>,
}

impl FakeLambda {
    fn start(spec: FakeSpec) -> FakeLambda {
        let base = Arc::new(Mutex::new(String::new()));
        let downloads = Arc::new(Mutex::new(0));
        let (base2, spec2) = (base.clone(), spec.clone());
        let server = TestServer::start(None, move |req: &Seen| {
            let base = base2.lock().unwrap().clone();
            let spec = &spec2;
            if req.path.starts_with("/2015-03-31/functions/") {
                let layers: Vec<Value> = spec
                    .layers
                    .iter()
                    .enumerate()
                    .map(|(n, l)| json!({"Arn": format!("arn:aws:lambda:us-east-1:123456789012:layer:tools:{}", n + 1), "CodeSize": l.len()}))
                    .collect();
                let mut configuration = json!({
                    "FunctionName": "fake", "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:fake",
                    "Runtime": "provided.al2023", "Handler": "bootstrap", "Version": "$LATEST",
                    "MemorySize": 256, "Timeout": 3, "CodeSize": spec.code.len(),
                    "CodeSha256": spec.sha256.clone().unwrap_or_else(|| code_sha256(&spec.code)),
                    "Environment": {"Variables": {"FROM": "fake"}}, "Layers": layers,
                    "PackageType": "Zip", "Architectures": ["x86_64"]
                });
                if let Some(logging) = &spec.logging {
                    configuration["LoggingConfig"] = logging.clone();
                }
                return Reply::json(
                    200,
                    &json!({
                        "Configuration": configuration,
                        "Code": {"RepositoryType": "S3", "Location": format!("{base}/code/fn.zip?{SIGNED_QUERY}")}
                    }),
                );
            }
            if req.path.starts_with("/2018-10-31/layers/") {
                let version: usize = req.path.rsplit('/').next().and_then(|v| v.parse().ok()).unwrap_or(1);
                let layer = spec.layers.get(version - 1).cloned().unwrap_or_default();
                return Reply::json(
                    200,
                    &json!({"Content": {"Location": format!("{base}/code/layer-{version}.zip?{SIGNED_QUERY}"), "CodeSha256": code_sha256(&layer), "CodeSize": layer.len()},
                            "LayerArn": "arn:aws:lambda:us-east-1:123456789012:layer:tools", "Version": version}),
                );
            }
            if req.path == "/code/fn.zip" {
                let mut n = downloads.lock().unwrap();
                *n += 1;
                if *n > 1 && spec.hang_up_after_first {
                    return Reply::HangUp;
                }
                let reply = match (*n, spec.cut_first_download_at) {
                    (1, Some(cut_at)) => Reply::Cut {
                        status: 200,
                        headers: vec![],
                        body: spec.code.clone(),
                        cut_at,
                    },
                    _ => Reply::file(req, &spec.code),
                };
                return match spec.slow_download {
                    Some(pause) => Reply::After(pause, Box::new(reply)),
                    None => reply,
                };
            }
            if let Some(version) = req
                .path
                .strip_prefix("/code/layer-")
                .and_then(|v| v.strip_suffix(".zip"))
            {
                let layer = version.parse::<usize>().ok().and_then(|v| spec.layers.get(v - 1));
                return Reply::file(req, &layer.cloned().unwrap_or_default());
            }
            Reply::Full {
                status: 404,
                headers: vec![],
                body: Bytes::from_static(b"not found"),
            }
        });
        *base.lock().unwrap() = server.url.clone();
        FakeLambda { server }
    }

    fn runner(&self, event: &str) -> RunnerCmd {
        self.command(&["--event", event, "--function", "fake"])
    }

    /// `runner fetch` for the function.
    fn fetcher(&self) -> RunnerCmd {
        self.command(&["fetch", "--function", "fake"])
    }

    /// The runner with `args`, its Lambda calls going to this fake.
    fn command(&self, args: &[&str]) -> RunnerCmd {
        let mut env = aws_env("http://127.0.0.1:1");
        env.push(("AWS_ENDPOINT_URL_LAMBDA", self.server.url.clone()));
        RunnerCmd::new().envs(env).args(args)
    }

    /// The requests for the function's code.
    fn downloads(&self) -> Vec<Seen> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.path == "/code/fn.zip")
            .collect()
    }
}

/// Panics when a log names a credential of the presigned location.
fn assert_no_credentials(ran: &Ran) {
    for secret in ["SECRET-", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token"] {
        assert!(!ran.stderr.contains(secret), "`{secret}` in the log:\n{}", ran.stderr);
        assert!(!ran.stdout_text().contains(secret), "`{secret}` in the output");
    }
}

#[tokio::test]
async fn a_download_cut_midway_resumes_with_a_range_request_and_verifies() {
    let code = Bytes::from(bootstrap_zip_bytes(&fixture("echo")));
    let half = code.len() / 2;
    let fake = FakeLambda::start(FakeSpec {
        code,
        cut_first_download_at: Some(half),
        ..Default::default()
    });
    let ran = run(fake.runner("{}")).await;
    ran.expect_code(0);
    assert_eq!(ran.json()["env"]["FROM"], "fake");
    let downloads = fake.downloads();
    assert_eq!(downloads.len(), 2, "one cut download, one resumed");
    assert_eq!(downloads[1].header("range"), Some(format!("bytes={half}-").as_str()));
    assert!(ran.stderr.contains("retrying"), "{}", ran.stderr);
    assert_no_credentials(&ran);
}

#[tokio::test]
async fn a_download_that_fails_mid_body_logs_no_credentials() {
    // Cut mid-body, then the host is gone: each retry fails before any response, the
    // failure reqwest describes with the URL it was sending to.
    let code = Bytes::from(bootstrap_zip_bytes(&fixture("echo")));
    let fake = FakeLambda::start(FakeSpec {
        cut_first_download_at: Some(code.len() / 2),
        hang_up_after_first: true,
        code,
        ..Default::default()
    });
    let ran = run(fake.runner("{}")).await;
    ran.expect_code(3);
    assert!(fake.downloads().len() > 2, "retried");
    assert!(ran.stderr.contains("retrying"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("/code/fn.zip"),
        "names the location:\n{}",
        ran.stderr
    );
    assert_no_credentials(&ran);
}

#[tokio::test]
async fn two_runners_sharing_a_cache_download_the_code_once() {
    let code = Bytes::from(bootstrap_zip_bytes(&fixture("echo")));
    let fake = FakeLambda::start(FakeSpec {
        code,
        // The first download is still under way when the second runner looks.
        slow_download: Some(Duration::from_millis(1500)),
        ..Default::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let fetch = || fake.fetcher().cache(cache.path()).spawn();
    let (first, second) = (fetch(), fetch());
    let (first, second) = (
        tokio::task::spawn_blocking(move || first.wait(Duration::from_secs(60))),
        tokio::task::spawn_blocking(move || second.wait(Duration::from_secs(60))),
    );
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    first.expect_code(0);
    second.expect_code(0);
    assert_eq!(fake.downloads().len(), 1, "one download for both");
    assert_eq!(first.stdout_text(), second.stdout_text(), "the same task root");
    let waited = [&first, &second]
        .iter()
        .filter(|r| r.stderr.contains(r#""cache_hit":true"#) && r.stderr.contains(r#""waited":true"#))
        .count();
    assert_eq!(
        waited, 1,
        "one waited for the other's entry:\n{}\n{}",
        first.stderr, second.stderr
    );
}

#[tokio::test]
async fn a_wrong_hash_is_refused_with_both_hashes_and_nothing_unpacked() {
    let code = Bytes::from(bootstrap_zip_bytes(&fixture("echo")));
    let wrong = code_sha256(b"something else");
    let fake = FakeLambda::start(FakeSpec {
        code: code.clone(),
        sha256: Some(wrong.clone()),
        ..Default::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let ran = run(fake.runner("{}").cache(cache.path())).await;
    ran.expect_code(3);
    assert!(
        ran.stderr.contains(&wrong) && ran.stderr.contains(&code_sha256(&code)),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("nothing was unpacked"), "{}", ran.stderr);
    assert!(!cache.path().join("code").exists(), "no cache entry");
    assert_eq!(files_named(cache.path(), "bootstrap"), 0);
}

/// How many files called `name` exist under `root`.
fn files_named(root: &Path, name: &str) -> usize {
    let mut count = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name() == name {
                count += 1;
            }
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            }
        }
    }
    count
}

async fn refused(entries: &[Entry<'_>], extra_args: &[&str], reason: &str) {
    let fake = FakeLambda::start(FakeSpec {
        code: Bytes::from(zip_bytes(entries)),
        ..Default::default()
    });
    let outer = tempfile::tempdir().unwrap();
    let cache = outer.path().join("cache");
    // Where an absolute entry name would land if it were followed.
    let absolute = Path::new("/tmp/evil");
    let _ = std::fs::remove_file(absolute);
    let ran = run(fake.runner("{}").cache(&cache).args(extra_args)).await;
    ran.expect_code(3);
    assert!(ran.stderr.contains(reason), "expected `{reason}` in:\n{}", ran.stderr);
    assert_eq!(files_named(outer.path(), "evil"), 0, "something was written outside");
    assert!(
        !absolute.exists(),
        "an absolute entry was written at {}",
        absolute.display()
    );
    assert!(!cache
        .join("code")
        .read_dir()
        .map(|mut d| d.any(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.')))
        .unwrap_or(false));
}

#[tokio::test]
async fn zips_that_escape_their_folder_or_are_too_large_are_refused() {
    let boot: &[u8] = b"#!/bin/sh\n";
    refused(
        &[
            Entry::File("bootstrap", boot, 0o755),
            Entry::File("../evil", b"x", 0o644),
        ],
        &[],
        "path traversal",
    )
    .await;
    refused(
        &[
            Entry::File("bootstrap", boot, 0o755),
            Entry::File("/tmp/evil", b"x", 0o644),
        ],
        &[],
        "is an absolute path",
    )
    .await;
    refused(
        &[
            Entry::File("bootstrap", boot, 0o755),
            Entry::Symlink("link", "../../.."),
            Entry::File("link/evil", b"x", 0o644),
        ],
        &[],
        "passes through a symlink",
    )
    .await;
    refused(
        &[
            Entry::File("bootstrap", boot, 0o755),
            Entry::Symlink("lib", "."),
            Entry::File("lib/evil", b"x", 0o644),
        ],
        &[],
        "passes through a symlink",
    )
    .await;
    let big = vec![0u8; 2 * 1024 * 1024];
    refused(
        &[
            Entry::File("bootstrap", boot, 0o755),
            Entry::File("big.bin", &big, 0o644),
        ],
        &["--max-unpacked-size", "1000000"],
        "unpacks to more than 1000000 bytes",
    )
    .await;
}

#[tokio::test]
async fn a_layer_lands_in_the_layers_root_and_its_binary_is_on_path() {
    let code = Bytes::from(bootstrap_zip_bytes(&fixture("echo")));
    let layer = Bytes::from(zip_bytes(&[
        Entry::Dir("bin/"),
        Entry::File("bin/layer-tool", b"#!/bin/sh\necho from-the-layer\n", 0o755),
        Entry::File("lib/data.txt", b"layer data", 0o644),
    ]));
    let fake = FakeLambda::start(FakeSpec {
        code,
        layers: vec![layer],
        ..Default::default()
    });
    let opt = tempfile::tempdir().unwrap();
    let ran = run(fake
        .runner(r#"{"run":"layer-tool"}"#)
        .args(["--opt-dir".as_ref(), opt.path().as_os_str()]))
    .await;
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["run"], "from-the-layer");
    assert!(opt.path().join("bin/layer-tool").is_file());
    assert_eq!(
        std::fs::read_to_string(opt.path().join("lib/data.txt")).unwrap(),
        "layer data"
    );
    assert!(seen["env"]["LD_LIBRARY_PATH"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{}/lib", opt.path().display())));
    let layer_calls = fake
        .server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/2018-10-31/layers/"))
        .count();
    assert_eq!(layer_calls, 1, "GetLayerVersion once");
}

#[tokio::test]
async fn the_functions_logging_config_reaches_its_runtime_as_lambda_passes_it() {
    let code = Bytes::from(bootstrap_zip_bytes(&fixture("echo")));
    let json_logs = FakeLambda::start(FakeSpec {
        code: code.clone(),
        logging: Some(
            json!({"LogFormat": "JSON", "ApplicationLogLevel": "DEBUG", "SystemLogLevel": "WARN", "LogGroup": "/custom/fake"}),
        ),
        ..Default::default()
    });
    let ran = run(json_logs.runner("{}")).await;
    ran.expect_code(0);
    let env = &ran.json()["env"];
    assert_eq!(env["AWS_LAMBDA_LOG_FORMAT"], "JSON");
    assert_eq!(env["AWS_LAMBDA_LOG_LEVEL"], "DEBUG");
    assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/custom/fake", "its own log group");
    assert!(env.get("AWS_EXECUTION_ENV").is_none(), "none for a custom runtime");

    let text_logs = FakeLambda::start(FakeSpec {
        code,
        logging: Some(json!({"LogFormat": "Text", "LogGroup": "/aws/lambda/fake"})),
        ..Default::default()
    });
    let ran = run(text_logs.runner("{}")).await;
    ran.expect_code(0);
    let env = &ran.json()["env"];
    assert_eq!(env["AWS_LAMBDA_LOG_FORMAT"], "Text");
    assert!(
        env.get("AWS_LAMBDA_LOG_LEVEL").is_none(),
        "levels come with JSON logs only"
    );
}

#[tokio::test]
async fn a_later_layer_never_writes_through_an_earlier_layers_link() {
    // Layer 1: `a -> b/../escape`, dangling on its own. Layer 2: `b -> .` and a folder
    // `a/`. Merged by following links, `a` would resolve to the folder beside the layers
    // root and layer 2's file would land there. As Lambda extracts layers in order, a
    // later layer's entry replaces an earlier one's: `a` becomes a real folder in the root.
    let code = Bytes::from(bootstrap_zip_bytes(&fixture("echo")));
    let first = Bytes::from(zip_bytes(&[Entry::Symlink("a", "b/../escape")]));
    let second = Bytes::from(zip_bytes(&[
        Entry::Symlink("b", "."),
        Entry::Dir("a/"),
        Entry::File("a/evil", b"layer 2", 0o644),
    ]));
    let fake = FakeLambda::start(FakeSpec {
        code,
        layers: vec![first, second],
        ..Default::default()
    });
    let outer = tempfile::tempdir().unwrap();
    let (opt, escape) = (outer.path().join("opt"), outer.path().join("escape"));
    std::fs::create_dir(&escape).unwrap();
    let ran = run(fake.runner("{}").args(["--opt-dir".as_ref(), opt.as_os_str()])).await;
    ran.expect_code(0);
    assert_eq!(
        std::fs::read_dir(&escape).unwrap().count(),
        0,
        "nothing written outside the layers root"
    );
    assert_eq!(files_named(outer.path(), "evil"), 1);
    let a = std::fs::symlink_metadata(opt.join("a")).unwrap();
    assert!(a.is_dir(), "the later folder replaced the earlier link");
    assert_eq!(std::fs::read(opt.join("a/evil")).unwrap(), b"layer 2");
    assert_eq!(
        std::fs::read_link(opt.join("b")).unwrap(),
        Path::new("."),
        "links are kept"
    );
}

#[tokio::test]
async fn a_virtualenv_layer_keeps_its_absolute_python_link() {
    // A virtualenv's interpreter is a link to the system's: legal in Lambda, kept as it is.
    let code = Bytes::from(zip_bytes(&[
        Entry::File("bootstrap", &std::fs::read(fixture("echo")).unwrap(), 0o755),
        Entry::Symlink("bin/node", "/usr/bin/node"),
    ]));
    let layer = Bytes::from(zip_bytes(&[
        Entry::Dir("python/"),
        Entry::Dir("python/bin/"),
        Entry::Symlink("python/bin/python", "/usr/bin/python3"),
        Entry::Symlink("python/bin/python3", "python"),
        Entry::File("python/pyvenv.cfg", b"home = /usr/bin\n", 0o644),
        Entry::File("python/lib/python3.12/site-packages/tool.py", b"print('hi')\n", 0o644),
    ]));
    let fake = FakeLambda::start(FakeSpec {
        code,
        layers: vec![layer],
        ..Default::default()
    });
    let (opt, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fetched = run(fake
        .fetcher()
        .cache(cache.path())
        .args(["--opt-dir".as_ref(), opt.path().as_os_str()]))
    .await;
    fetched.expect_code(0);
    let task_root = std::path::PathBuf::from(fetched.stdout_text().trim());
    assert_eq!(
        std::fs::read_link(task_root.join("bin/node")).unwrap(),
        Path::new("/usr/bin/node"),
        "the code's absolute link is kept too"
    );
    // The same cache: it remembers which layers it put in that layers root (the root
    // itself holds the layers and nothing else).
    let ran = run(fake
        .runner("{}")
        .cache(cache.path())
        .args(["--opt-dir".as_ref(), opt.path().as_os_str()]))
    .await;
    ran.expect_code(0);
    assert_eq!(ran.json()["env"]["FROM"], "fake");
    assert_eq!(
        std::fs::read_link(opt.path().join("python/bin/python")).unwrap(),
        Path::new("/usr/bin/python3")
    );
    assert_eq!(
        std::fs::read_link(opt.path().join("python/bin/python3")).unwrap(),
        Path::new("python")
    );
    assert!(opt.path().join("python/lib/python3.12/site-packages/tool.py").is_file());
}
