//! A handler written with immortal-handler-sdk, in both homes: under a clock (as in
//! Lambda) and without one (the runner).

use immortal_tests::runner::{fixture, RunnerCmd};
use serde_json::json;

fn sdk(event: &str) -> RunnerCmd {
    RunnerCmd::new().args([
        "--artifact".as_ref(),
        fixture("sdk").as_os_str(),
        "--event".as_ref(),
        event.as_ref(),
    ])
}

#[test]
fn in_the_runner_there_is_no_clock_and_the_overflow_details_are_visible() {
    let context = json!({"request_id": "req-o", "overflow": {"attempt": 3, "error_type": "Sandbox.Timedout",
        "error_message": "RequestId: req-o Error: Task timed out after 900.00 seconds", "source": "destination"}});
    let ran = sdk(r#"{"overflow_now":"big"}"#)
        .args(["--context", &context.to_string()])
        .run();
    ran.expect_code(0);
    let seen = ran.json();
    assert_eq!(seen["remaining_ms"], json!(null), "remaining() is None without a limit");
    assert_eq!(seen["in_runner"], true);
    assert_eq!(seen["is_overflow"], true);
    assert_eq!(seen["overflow"], context["overflow"]);
    assert_eq!(seen["request_id"], "req-o");
}

#[test]
fn under_a_clock_remaining_counts_down_and_overflow_now_ends_the_invocation() {
    let ran = sdk("{}").args(["--timeout", "30"]).run();
    ran.expect_code(0);
    let remaining = ran.json()["remaining_ms"].as_u64().unwrap();
    assert!(remaining > 25_000 && remaining <= 30_000, "{remaining}");
    assert_eq!(ran.json()["is_overflow"], false);

    let ran = sdk(r#"{"overflow_now":"the object is 4 GB"}"#)
        .args(["--timeout", "30"])
        .run();
    ran.expect_code(1);
    assert_eq!(
        ran.json(),
        json!({"errorType": "Immortal.Overflow", "errorMessage": "Immortal.Overflow: the object is 4 GB"})
    );
}

#[test]
fn the_guard_hands_off_before_the_deadline_instead_of_timing_out() {
    let ran = sdk(r#"{"seconds":30}"#)
        .env("OVERFLOW_MARGIN_MS", "2000")
        .args(["--timeout", "3"])
        .run();
    ran.expect_code(1);
    let error = ran.json();
    assert_eq!(error["errorType"], "Immortal.Overflow");
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .contains("less than 2 s of Lambda's time limit remained"),
        "{error}"
    );
    // "Before the deadline" is what the error above says; this only guards against a
    // hang (a timing bound this tight belongs in bench/, not in a test).
    assert!(ran.elapsed < std::time::Duration::from_secs(60), "{:?}", ran.elapsed);
}
