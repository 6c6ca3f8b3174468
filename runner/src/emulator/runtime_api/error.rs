//! `POST /runtime/invocation/{id}/error`: the function failed.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::state::{Phase, Shared};
use super::{reply, ApiEvent};
use crate::emulator::outcome::{error_document, Failure, Outcome};

/// The header a runtime may use to name its error type.
pub(crate) const ERROR_TYPE_HEADER: &str = "Lambda-Runtime-Function-Error-Type";

pub(crate) async fn handle(shared: &Shared, id: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if id != shared.invocation.request_id || shared.phase() == Phase::Init {
        return reply::invalid_request_id();
    }
    if let Err(phase) = shared.transition(Phase::Running, Phase::Done) {
        return reply::invalid_transition(phase.lambda_name(), "InvocationErrorResponse");
    }
    let body = error_body(req).await;
    shared.report(ApiEvent::Finished(Outcome::Failed {
        kind: Failure::Function,
        body,
    }));
    reply::accepted()
}

/// The error document as Lambda passes it on: the runtime's JSON body unchanged, or,
/// when the body is not a JSON object, one built from the error-type header and the text.
pub(crate) async fn error_body(req: Request<Incoming>) -> Bytes {
    let error_type = req
        .headers()
        .get(ERROR_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("unhandled"))
        .unwrap_or("Runtime.Unknown")
        .to_owned();
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return error_document(&error_type, &format!("the error report broke off: {e}")),
    };
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value) if value.is_object() => body,
        _ => error_document(&error_type, String::from_utf8_lossy(&body).trim()),
    }
}
