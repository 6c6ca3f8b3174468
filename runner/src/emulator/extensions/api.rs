//! The Extensions API (`/2020-01-01/extension/...`), the Telemetry API
//! (`/2022-07-01/telemetry`) and the Logs API (`/2020-08-15/logs`), served beside the
//! Runtime API on its address, with Lambda's paths, headers, status codes and bodies.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::telemetry::{Api, Subscription};
use super::{ApiError, Extensions};
use crate::emulator::runtime_api::reply;

/// The Extensions API's prefix.
pub(crate) const EXTENSION_PREFIX: &str = "/2020-01-01/extension/";
/// The Telemetry API's path.
pub(crate) const TELEMETRY_PATH: &str = "/2022-07-01/telemetry";
/// The Logs API's path.
pub(crate) const LOGS_PATH: &str = "/2020-08-15/logs";

const ID_HEADER: &str = "Lambda-Extension-Identifier";
const NAME_HEADER: &str = "Lambda-Extension-Name";
const ERROR_TYPE_HEADER: &str = "Lambda-Extension-Function-Error-Type";
const ACCEPT_FEATURE_HEADER: &str = "Lambda-Extension-Accept-Feature";

const REGISTER_PATH: &str = "/2020-01-01/extension/register";
const NEXT_PATH: &str = "/2020-01-01/extension/event/next";
const INIT_ERROR_PATH: &str = "/2020-01-01/extension/init/error";
const EXIT_ERROR_PATH: &str = "/2020-01-01/extension/exit/error";
/// Every endpoint of these APIs: another method on one of them is 405, any other path 404.
const ENDPOINTS: [&str; 6] = [
    REGISTER_PATH,
    NEXT_PATH,
    INIT_ERROR_PATH,
    EXIT_ERROR_PATH,
    TELEMETRY_PATH,
    LOGS_PATH,
];

/// Whether `path` belongs to one of these APIs.
pub(crate) fn serves(path: &str) -> bool {
    path.starts_with(EXTENSION_PREFIX) || path == TELEMETRY_PATH || path == LOGS_PATH
}

/// Answers one request.
pub(crate) async fn route(extensions: &Extensions, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (id, name) = (header(ID_HEADER), header(NAME_HEADER));
    let (error_type, features) = (header(ERROR_TYPE_HEADER), header(ACCEPT_FEATURE_HEADER));
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return error(&ApiError::new(
                400,
                "InvalidRequest",
                format!("cannot read the body: {e}"),
            ))
        }
    };
    let result = match (method, path.as_str()) {
        (Method::POST, REGISTER_PATH) => register(extensions, name, features, &body),
        (Method::GET, NEXT_PATH) => match id {
            Some(id) => match extensions.next(&id).await {
                Ok(event) => Ok(with_id(reply::json_bytes(StatusCode::OK, event), &id)),
                Err(e) => Err(e),
            },
            None => Err(missing_id()),
        },
        (Method::POST, INIT_ERROR_PATH) => failure(extensions, id, error_type, "init", &body),
        (Method::POST, EXIT_ERROR_PATH) => failure(extensions, id, error_type, "exit", &body),
        (Method::PUT, TELEMETRY_PATH) => subscribe(extensions, Api::Telemetry, id, &body),
        (Method::PUT, LOGS_PATH) => subscribe(extensions, Api::Logs, id, &body),
        (method, known) if ENDPOINTS.contains(&known) => return reply::method_not_allowed(&method),
        _ => return reply::not_found(&path),
    };
    result.unwrap_or_else(|e| error(&e))
}

fn register(
    extensions: &Extensions,
    name: Option<String>,
    features: Option<String>,
    body: &Bytes,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::new(400, "InvalidRequest", format!("the body is not JSON: {e}")))?
    };
    let events: Vec<String> = request["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let id = extensions.register(name.as_deref().unwrap_or_default(), &events)?;
    let info = &extensions.info;
    let mut answer = json!({"functionName": info.name, "functionVersion": info.version, "handler": info.handler});
    if features.is_some_and(|f| f.split(',').any(|f| f.trim() == "accountId")) {
        if let Some(account) = &info.account_id {
            answer["accountId"] = json!(account);
        }
    }
    Ok(with_id(reply::json(StatusCode::OK, &answer), &id))
}

fn failure(
    extensions: &Extensions,
    id: Option<String>,
    error_type: Option<String>,
    phase: &str,
    body: &Bytes,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let id = id.ok_or_else(missing_id)?;
    let error_type = error_type.ok_or_else(|| {
        ApiError::new(
            400,
            "InvalidRequest",
            format!("the {ERROR_TYPE_HEADER} header is required (e.g. Extension.ConfigInvalid)"),
        )
    })?;
    let detail = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["errorMessage"].as_str().map(str::to_owned));
    extensions.fail(&id, &error_type, phase, detail)?;
    Ok(with_id(reply::accepted(), &id))
}

fn subscribe(
    extensions: &Extensions,
    api: Api,
    id: Option<String>,
    body: &Bytes,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let id = id.ok_or_else(missing_id)?;
    let name = extensions.name_of(&id).ok_or_else(|| {
        ApiError::new(
            403,
            "Extension.UnknownExtensionIdentifier",
            format!("no extension has the identifier {id:?}"),
        )
    })?;
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "ValidationError", format!("the body is not JSON: {e}")))?;
    let subscription = Subscription::parse(api, &name, &request)
        .map_err(|why| ApiError::new(400, "ValidationError", why.to_string()))?;
    extensions.telemetry.subscribe(subscription);
    Ok(reply::json(StatusCode::OK, &"OK"))
}

fn missing_id() -> ApiError {
    ApiError::new(
        403,
        "Extension.MissingExtensionIdentifier",
        format!("the {ID_HEADER} header is required: the identifier register returned"),
    )
}

fn with_id(mut response: Response<Full<Bytes>>, id: &str) -> Response<Full<Bytes>> {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(ID_HEADER, value);
    }
    response
}

fn error(e: &ApiError) -> Response<Full<Bytes>> {
    reply::error(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.error_type,
        &e.message,
    )
}
