//! `POST /runtime/init/error`: the runtime could not start.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use super::error::error_body;
use super::state::{Phase, Shared};
use super::{reply, ApiEvent};

pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Err(phase) = shared.transition(Phase::Init, Phase::InitFailed) {
        return reply::invalid_transition(phase.lambda_name(), "InitError");
    }
    shared.report(ApiEvent::InitError(error_body(req).await));
    reply::accepted()
}
