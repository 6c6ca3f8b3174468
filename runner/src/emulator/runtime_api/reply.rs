//! Response shapes of the Runtime API (as the Runtime Interface Emulator renders them).

use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::Full;
use immortal_handler_sdk::ErrorDocument;

/// A JSON reply; like Lambda's (Go's json.Encoder) it ends with a newline.
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_string(value).expect("a reply serializes");
    body.push('\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// A JSON reply whose body is already JSON (an event, as it came).
pub(crate) fn json_bytes(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("static response parts are valid")
}

/// `202 {"status":"OK"}`: the runtime's report was accepted.
pub(crate) fn accepted() -> Response<Full<Bytes>> {
    json(StatusCode::ACCEPTED, &serde_json::json!({ "status": "OK" }))
}

/// An error reply: Lambda's error document.
pub(crate) fn error(status: StatusCode, error_type: &str, message: &str) -> Response<Full<Bytes>> {
    json(status, &ErrorDocument::new(error_type, message))
}

/// `400 InvalidRequestID`: the id in the path is not the current invocation's.
pub(crate) fn invalid_request_id() -> Response<Full<Bytes>> {
    error(StatusCode::BAD_REQUEST, "InvalidRequestID", "Invalid request ID")
}

/// `403 InvalidStateTransition`, worded as Lambda words it.
pub(crate) fn invalid_transition(from: &str, to: &str) -> Response<Full<Bytes>> {
    let message =
        format!("State transition from {from} to {to} failed for runtime. Error: State transition is not allowed");
    error(StatusCode::FORBIDDEN, "InvalidStateTransition", &message)
}

/// `403`: the connection is not from the run's own user (another function's process).
pub(crate) fn refused() -> Response<Full<Bytes>> {
    error(
        StatusCode::FORBIDDEN,
        "AccessDenied",
        "this Runtime API serves only its own function's processes",
    )
}

/// `404`: not a path of the Runtime, Extensions, Telemetry or Logs API.
pub(crate) fn not_found(path: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("no Runtime, Extensions, Telemetry or Logs API endpoint at {path}"),
    )
}

/// `405`: a known path with the wrong method.
pub(crate) fn method_not_allowed(method: &Method) -> Response<Full<Bytes>> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!("{method} is not allowed here"),
    )
}
