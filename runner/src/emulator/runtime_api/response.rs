//! `POST /runtime/invocation/{id}/response`: buffered or streamed.

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::state::{Phase, Shared};
use super::{reply, ApiEvent};
use crate::emulator::outcome::{error_document, Failure, Outcome};

const MODE_HEADER: &str = "Lambda-Runtime-Function-Response-Mode";
const ERROR_TYPE_TRAILER: &str = "Lambda-Runtime-Function-Error-Type";
const ERROR_BODY_TRAILER: &str = "Lambda-Runtime-Function-Error-Body";

pub(crate) async fn handle(shared: &Shared, id: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if id != shared.invocation.request_id || shared.phase() == Phase::Init {
        return reply::invalid_request_id();
    }
    let streaming = match req.headers().get(MODE_HEADER).map(|v| v.to_str().unwrap_or("")) {
        None => false,
        Some(mode) if mode.eq_ignore_ascii_case("streaming") => true,
        Some(mode) if mode.eq_ignore_ascii_case("buffered") => false,
        Some(_) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                "InvalidFunctionResponseMode",
                "Invalid function response mode",
            )
        }
    };
    if let Err(phase) = shared.transition(Phase::Running, Phase::Done) {
        return reply::invalid_transition(phase.lambda_name(), "InvocationResponse");
    }
    let outcome = if streaming {
        receive_stream(shared, req.into_body()).await
    } else {
        receive_whole(req.into_body()).await
    };
    match outcome {
        Ok(outcome) => {
            shared.report(ApiEvent::Finished(outcome));
            reply::accepted()
        }
        Err(broke) => {
            let outcome = Outcome::failed(Failure::Function, "Runtime.TruncatedResponse", &broke.to_string());
            shared.report(ApiEvent::Finished(outcome));
            reply::error(
                StatusCode::BAD_REQUEST,
                "TruncatedHTTPRequest",
                "HTTP request detected as truncated",
            )
        }
    }
}

/// The response's body ended before it was whole.
#[derive(Debug, thiserror::Error)]
#[error("the response {} broke off: {source}", if *.streamed { "stream" } else { "body" })]
struct BrokeOff {
    streamed: bool,
    source: hyper::Error,
}

async fn receive_whole(body: Incoming) -> Result<Outcome, BrokeOff> {
    let body = body
        .collect()
        .await
        .map_err(|source| BrokeOff {
            streamed: false,
            source,
        })?
        .to_bytes();
    Ok(Outcome::Response { body, streamed: false })
}

/// Writes each chunk out as it arrives; an error reported in the trailers turns the
/// invocation into a function error, as in Lambda.
async fn receive_stream(shared: &Shared, mut body: Incoming) -> Result<Outcome, BrokeOff> {
    let mut all = BytesMut::new();
    let mut trailer_error: Option<(String, String)> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| BrokeOff { streamed: true, source })?;
        if let Some(trailers) = frame.trailers_ref() {
            if let Some(error_type) = trailers.get(ERROR_TYPE_TRAILER) {
                let error_type = String::from_utf8_lossy(error_type.as_bytes()).into_owned();
                let error_body = trailers
                    .get(ERROR_BODY_TRAILER)
                    .map(|v| decode_error_body(v.as_bytes()))
                    .unwrap_or_default();
                trailer_error = Some((error_type, error_body));
            }
        } else if let Ok(data) = frame.into_data() {
            if let Err(e) = shared.sink.write(&data).await {
                tracing::warn!(error = %e, "could not write a response chunk");
            }
            all.extend_from_slice(&data);
        }
    }
    Ok(match trailer_error {
        None => Outcome::Response {
            body: all.freeze(),
            streamed: true,
        },
        Some((error_type, error_body)) => {
            let body = if serde_json::from_str::<serde_json::Value>(&error_body).is_ok_and(|v| v.is_object()) {
                Bytes::from(error_body)
            } else {
                error_document(&error_type, &error_body)
            };
            Outcome::Failed {
                kind: Failure::Function,
                body,
            }
        }
    })
}

/// The error-body trailer is base64 by convention; fall back to the raw text.
fn decode_error_body(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(raw)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned())
}
