//! The Runtime API's answers, status by status, as Lambda gives them.

use std::sync::Arc;

use immortal_handler_sdk::function_ref::ContextDefaults;
use immortal_handler_sdk::Envelope;
use immortal_runner::{
    Admission, ApiEvent, Extensions, Failure, FunctionFacts, FunctionInfo, Invocation, Outcome, ResponseSink,
    RuntimeApi,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// This process's user.
fn me() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The API for one invocation, admitting only this process's user (as a sandboxed run
/// admits only its function's).
async fn api() -> RuntimeApi {
    api_for(Admission::User(me())).await
}

async fn api_for(admission: Admission) -> RuntimeApi {
    let envelope = Envelope::from_parts(r#"{"k":1}"#, r#"{"request_id":"req-1"}"#).unwrap();
    let invocation = Invocation::resolve(&envelope, None, &FunctionFacts::default(), &ContextDefaults::from_env());
    let extensions = Extensions::new(FunctionInfo::default());
    RuntimeApi::start(
        Arc::new(invocation),
        None,
        ResponseSink::discard(),
        extensions,
        admission,
    )
    .await
    .unwrap()
}

fn url(api: &RuntimeApi, path: &str) -> String {
    format!("http://{}/2018-06-01/runtime{path}", api.address())
}

async fn post(api: &RuntimeApi, path: &str, body: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(url(api, path))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert!(text.ends_with('\n'), "Lambda's JSON replies end with a newline");
    (status, serde_json::from_str(&text).unwrap())
}

/// The next event must be a function error; its document.
async fn function_error(api: &mut RuntimeApi) -> Value {
    match api.events.recv().await {
        Some(ApiEvent::Finished(Outcome::Failed {
            kind: Failure::Function,
            body,
        })) => serde_json::from_slice(&body).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

async fn next(api: &RuntimeApi) -> reqwest::Response {
    reqwest::get(url(api, "/invocation/next")).await.unwrap()
}

#[tokio::test]
async fn another_users_process_gets_neither_the_event_nor_a_say_in_the_result() {
    // The attacker: a process of another user than the run's (here the run admits only
    // a user this test is not). It cannot take the event, nor post a result.
    let api = api_for(Admission::User(me() + 1)).await;
    let res = next(&api).await;
    assert_eq!(res.status(), 403);
    let body: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(body["errorType"], "AccessDenied", "{body}");
    let (status, _) = post(&api, "/invocation/req-1/response", r#"{"forged":true}"#).await;
    assert_eq!(status, 403);
    let register = reqwest::Client::new()
        .post(format!("http://{}/2020-01-01/extension/register", api.address()))
        .header("Lambda-Extension-Name", "spy")
        .body(r#"{"events":["INVOKE"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 403, "the Extensions API on the same port too");
    // The event is still there for the run's own user.
    let own = api_for(Admission::User(me())).await;
    assert_eq!(next(&own).await.status(), 200);
}

#[tokio::test]
async fn next_then_response_then_a_second_response_is_refused() {
    let mut api = api().await;
    let res = next(&api).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["lambda-runtime-aws-request-id"], "req-1");
    assert!(res.headers().contains_key("lambda-runtime-deadline-ms"));
    assert!(
        !res.headers().contains_key("lambda-runtime-trace-id"),
        "absent values are omitted"
    );
    assert_eq!(res.text().await.unwrap(), r#"{"k":1}"#);
    assert!(matches!(api.events.recv().await, Some(ApiEvent::Delivered)));

    let (status, body) = post(&api, "/invocation/other-id/response", "{}").await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"})
        )
    );

    let (status, body) = post(&api, "/invocation/req-1/response", r#"{"ok":true}"#).await;
    assert_eq!((status, body), (202, json!({"status": "OK"})));
    match api.events.recv().await {
        Some(ApiEvent::Finished(Outcome::Response { body, streamed: false })) => {
            assert_eq!(&body[..], br#"{"ok":true}"#)
        }
        other => panic!("unexpected {other:?}"),
    }

    let (status, body) = post(&api, "/invocation/req-1/response", "{}").await;
    assert_eq!(status, 403);
    assert_eq!(body["errorType"], "InvalidStateTransition");
    let (status, _) = post(&api, "/invocation/req-1/error", "{}").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_response_before_the_event_was_handed_out_is_an_invalid_request_id() {
    let api = api().await;
    let (status, body) = post(&api, "/invocation/req-1/response", "{}").await;
    assert_eq!(status, 400);
    assert_eq!(body["errorType"], "InvalidRequestID");
}

#[tokio::test]
async fn an_error_report_is_passed_on_unchanged_or_wrapped_when_not_json() {
    let mut api = api().await;
    next(&api).await;
    api.events.recv().await;
    let res = reqwest::Client::new()
        .post(url(&api, "/invocation/req-1/error"))
        .header("Lambda-Runtime-Function-Error-Type", "Function.BadThing")
        .body("plain text failure")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(
        function_error(&mut api).await,
        json!({"errorType": "Function.BadThing", "errorMessage": "plain text failure"})
    );
}

#[tokio::test]
async fn after_an_init_error_next_is_refused() {
    let mut api = api().await;
    let (status, _) = post(
        &api,
        "/init/error",
        r#"{"errorType":"Runtime.X","errorMessage":"boom"}"#,
    )
    .await;
    assert_eq!(status, 202);
    match api.events.recv().await {
        Some(ApiEvent::InitError(body)) => assert_eq!(&body[..], br#"{"errorType":"Runtime.X","errorMessage":"boom"}"#),
        other => panic!("unexpected {other:?}"),
    }
    let res = next(&api).await;
    assert_eq!(res.status(), 403);
    let (status, _) = post(&api, "/init/error", "{}").await;
    assert_eq!(status, 403, "one init error only");
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let api = api().await;
    let res = reqwest::get(format!("http://{}/2018-06-01/runtime/nope", api.address()))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = reqwest::Client::new()
        .post(url(&api, "/invocation/next"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    // The Extensions, Telemetry and Logs APIs answer alike, with the same error document.
    let base = format!("http://{}", api.address());
    let client = reqwest::Client::new();
    for (method, path, status) in [
        (reqwest::Method::GET, "/2020-01-01/extension/nope", 404),
        (reqwest::Method::GET, "/2022-07-01/telemetry/more", 404),
        (reqwest::Method::GET, "/2020-01-01/extension/register", 405),
        (reqwest::Method::POST, "/2020-01-01/extension/event/next", 405),
        (reqwest::Method::GET, "/2022-07-01/telemetry", 405),
    ] {
        let res = client
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{method} {path}");
        let body: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        assert!(
            body["errorType"].is_string() && body["errorMessage"].is_string(),
            "{body}"
        );
    }
    next(&api).await;
    let (status, body) = {
        let res = reqwest::Client::new()
            .post(url(&api, "/invocation/req-1/response"))
            .header("Lambda-Runtime-Function-Response-Mode", "sideways")
            .body("{}")
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            serde_json::from_str::<Value>(&res.text().await.unwrap()).unwrap(),
        )
    };
    assert_eq!(status, 400);
    assert_eq!(body["errorType"], "InvalidFunctionResponseMode");
}

/// A streamed response over a raw connection: chunked body, then error trailers.
async fn stream(api: &RuntimeApi, chunks: &[&str], trailers: &str) -> String {
    let mut conn = tokio::net::TcpStream::connect(api.address()).await.unwrap();
    let mut req = String::from(
        "POST /2018-06-01/runtime/invocation/req-1/response HTTP/1.1\r\nHost: x\r\n\
         Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n\
         Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n",
    );
    for chunk in chunks {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str(&format!("0\r\n{trailers}\r\n"));
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 1024];
    let n = conn.read(&mut reply).await.unwrap();
    String::from_utf8_lossy(&reply[..n]).into_owned()
}

#[tokio::test]
async fn a_stream_arrives_in_order() {
    let mut api = api().await;
    next(&api).await;
    api.events.recv().await;
    let reply = stream(&api, &["hello ", "world"], "").await;
    assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");
    match api.events.recv().await {
        Some(ApiEvent::Finished(Outcome::Response { body, streamed: true })) => assert_eq!(&body[..], b"hello world"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn an_error_in_the_stream_trailers_fails_the_invocation() {
    let mut api = api().await;
    next(&api).await;
    api.events.recv().await;
    // base64 of {"errorType":"Function.Midstream","errorMessage":"lost the source"}
    let body = "eyJlcnJvclR5cGUiOiJGdW5jdGlvbi5NaWRzdHJlYW0iLCJlcnJvck1lc3NhZ2UiOiJsb3N0IHRoZSBzb3VyY2UifQ==";
    let trailers = format!(
        "Lambda-Runtime-Function-Error-Type: Function.Midstream\r\nLambda-Runtime-Function-Error-Body: {body}\r\n"
    );
    let reply = stream(&api, &["partial"], &trailers).await;
    assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");
    assert_eq!(
        function_error(&mut api).await,
        json!({"errorType": "Function.Midstream", "errorMessage": "lost the source"})
    );
}
