//! `GET /runtime/invocation/next`: hands out the event, once.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::state::{Phase, Shared};
use super::{reply, ApiEvent};
use crate::emulator::invocation::{epoch_ms_after, NO_DEADLINE};

pub(crate) async fn handle(shared: &Shared) -> Response<Full<Bytes>> {
    if shared.phase() == Phase::Init {
        // As in Lambda: the event goes out once every extension finished its init, and
        // at the same moment as INVOKE to those registered for it.
        shared.extensions.begin_invoke(invoke_event(shared)).await;
    }
    match shared.transition(Phase::Init, Phase::Running) {
        Ok(()) => {
            shared.report(ApiEvent::Delivered);
            event_response(shared)
        }
        Err(Phase::InitFailed) => reply::invalid_transition("InitError", "Ready"),
        Err(phase) => {
            // Lambda freezes a runtime waiting here; the supervisor stops it instead.
            shared.report(if phase == Phase::Done {
                ApiEvent::Idle
            } else {
                ApiEvent::Abandoned
            });
            std::future::pending().await
        }
    }
}

/// The event with every header Lambda sends; absent values are omitted, never empty.
fn event_response(shared: &Shared) -> Response<Full<Bytes>> {
    let inv = &shared.invocation;
    let deadline = epoch_ms_after(shared.timeout.unwrap_or(NO_DEADLINE));
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header("Lambda-Runtime-Aws-Request-Id", &inv.request_id)
        .header("Lambda-Runtime-Deadline-Ms", deadline.to_string())
        .header("Lambda-Runtime-Invoked-Function-Arn", &inv.invoked_function_arn);
    let optional = [
        ("Lambda-Runtime-Trace-Id", &inv.trace_id),
        ("Lambda-Runtime-Client-Context", &inv.client_context),
        ("Lambda-Runtime-Cognito-Identity", &inv.identity),
        ("Lambda-Runtime-Aws-Tenant-Id", &inv.tenant_id),
    ];
    for (name, value) in optional {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            match HeaderValue::from_str(value) {
                Ok(value) => builder = builder.header(name, value),
                Err(_) => tracing::warn!(header = name, "value is not a valid HTTP header; not sent"),
            }
        }
    }
    builder
        .body(Full::new(inv.event.clone()))
        .expect("event response parts are valid")
}

/// The INVOKE event extensions get: metadata, never the payload.
fn invoke_event(shared: &Shared) -> Bytes {
    let inv = &shared.invocation;
    let deadline = epoch_ms_after(shared.timeout.unwrap_or(NO_DEADLINE));
    let mut event = serde_json::json!({
        "eventType": "INVOKE", "deadlineMs": deadline, "requestId": inv.request_id,
        "invokedFunctionArn": inv.invoked_function_arn,
    });
    if let Some(trace) = inv.trace_id.as_deref().filter(|t| !t.is_empty()) {
        event["tracing"] = serde_json::json!({"type": "X-Amzn-Trace-Id", "value": trace});
    }
    Bytes::from(event.to_string())
}
