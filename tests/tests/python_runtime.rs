//! A non-Rust runtime client: Python's `awslambdaric` (from PyPI) against the runner.

use std::path::PathBuf;

use immortal_tests::runner::RunnerCmd;
use serde_json::json;

fn python_function() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/python")
}

#[test]
fn awslambdaric_gets_the_event_and_context_and_its_response_comes_back() {
    let ran = RunnerCmd::new()
        .args(["--artifact".as_ref(), python_function().as_os_str()])
        .args(["--handler", "handler.ok", "--event", r#"{"video":"a.mp4"}"#])
        .args([
            "--context",
            r#"{"request_id":"py-1","invoked_function_arn":"arn:aws:lambda:us-east-1:123456789012:function:py:3"}"#,
        ])
        .run();
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["event"], json!({"video": "a.mp4"}));
    assert_eq!(seen["request_id"], "py-1");
    assert_eq!(
        seen["invoked_function_arn"],
        "arn:aws:lambda:us-east-1:123456789012:function:py:3"
    );
    assert_eq!(seen["function_name"], "py");
    assert_eq!(seen["memory_limit_in_mb"], "128");
    assert!(seen["remaining_ms"].as_i64().unwrap() > 20 * 24 * 3600 * 1000);
}

#[test]
fn an_awslambdaric_exception_is_a_function_error() {
    let ran = RunnerCmd::new()
        .args(["--artifact".as_ref(), python_function().as_os_str()])
        .args(["--handler", "handler.fail", "--event", r#"{"why":"no key"}"#])
        .run();
    ran.expect_code(1);
    let error = ran.json();
    assert_eq!(error["errorType"], "ValueError");
    assert_eq!(error["errorMessage"], "bad input: no key");
    assert!(error["stackTrace"].is_array(), "{error}");
}

#[test]
fn an_awslambdaric_import_error_is_an_init_error() {
    let ran = RunnerCmd::new()
        .args(["--artifact".as_ref(), python_function().as_os_str()])
        .args(["--handler", "no_such_module.fn", "--event", "{}"])
        .run();
    ran.expect_code(4);
    let error = ran.json();
    assert_eq!(error["errorType"], "Runtime.ImportModuleError");
    assert!(
        error["errorMessage"].as_str().unwrap().contains("no_such_module"),
        "{error}"
    );
}

/// awslambdaric joins the lines of an error record with a bare `\r` (for CloudWatch, one
/// record per event); on a terminal the runner shows them as lines, so a traceback does
/// not draw over itself. Through a pipe the record stays as the client wrote it.
#[test]
fn a_runtime_clients_multi_line_record_reads_as_lines_on_a_terminal() {
    let text = immortal_tests::runner::on_a_terminal(&format!(
        "--artifact {} --handler handler.fail --event '{{\"why\":\"no key\"}}' >/dev/null",
        python_function().display()
    ));
    assert!(text.contains("[ERROR] ValueError: bad input: no key"), "{text:?}");
    assert!(
        text.contains("\r\nTraceback (most recent call last):") && !text.contains("\rTraceback"),
        "each line of the record on a line of its own: {text:?}"
    );
    let piped = RunnerCmd::new()
        .args(["--artifact".as_ref(), python_function().as_os_str()])
        .args(["--handler", "handler.fail", "--event", r#"{"why":"no key"}"#])
        .run();
    assert!(
        piped.stderr.contains("\rTraceback (most recent call last):"),
        "{}",
        piped.stderr
    );
}
