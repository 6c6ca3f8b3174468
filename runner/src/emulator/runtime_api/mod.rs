//! A faithful local Lambda Runtime API (`/2018-06-01/runtime/...`) for one invocation,
//! and on the same address the Extensions, Telemetry and Logs APIs ([`extensions`]).
//!
//! One small handler per endpoint ([`next`], [`response`], [`error`], [`init_error`]);
//! [`state`] owns the invocation's phase. Status codes and bodies follow the AWS
//! Runtime Interface Emulator, so runtimes see exactly what Lambda would send them.

mod error;
mod init_error;
mod next;
pub(crate) mod reply;
mod response;
mod sink;
mod state;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::emulator::extensions::{self, Extensions};
use crate::emulator::invocation::Invocation;
use crate::emulator::outcome::Outcome;
use crate::emulator::peer::Admission;
pub use sink::ResponseSink;
use state::Shared;

/// The API version prefix every path starts with.
const PREFIX: &str = "/2018-06-01/runtime";

/// What the runtime did, as the supervisor needs to know it.
#[derive(Debug)]
pub enum ApiEvent {
    /// The runtime received the event: the invocation (and its clock) has started.
    Delivered,
    /// The runtime reported the invocation's result.
    Finished(Outcome),
    /// The runtime reported an initialisation error (the error document).
    InitError(Bytes),
    /// The runtime asked for the next event after finishing: it is idle now.
    Idle,
    /// The runtime asked for the next event without answering the current one.
    Abandoned,
}

/// A running Runtime API server.
pub struct RuntimeApi {
    /// Where it listens (always loopback).
    addr: SocketAddr,
    /// What the runtime does, in order.
    pub events: mpsc::UnboundedReceiver<ApiEvent>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Binds an ephemeral loopback port and serves `invocation` to whoever asks.
    ///
    /// `timeout` only sets the deadline header; enforcing it is the supervisor's job.
    /// The Extensions, Telemetry and Logs APIs are served on the same address, for
    /// `extensions`.
    /// Only connections `admission` admits are served; others get 403.
    pub async fn start(
        invocation: Arc<Invocation>,
        timeout: Option<Duration>,
        sink: ResponseSink,
        extensions: Arc<Extensions>,
        admission: Admission,
    ) -> std::io::Result<RuntimeApi> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (events, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(invocation, timeout, events, sink, extensions));
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let admitted = admission.admits(addr, peer);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move {
                            if admitted {
                                route(shared, req).await
                            } else {
                                Ok(reply::refused())
                            }
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(RuntimeApi {
            addr,
            events: receiver,
            server,
        })
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API`: `host:port`, no scheme or path, as Lambda sets it.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Sends each request to its endpoint's handler.
async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if extensions::api::serves(&path) {
        return Ok(extensions::api::route(&shared.extensions, req).await);
    }
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(reply::not_found(&path));
    };
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let response = match (req.method(), segments.as_slice()) {
        (&Method::GET, ["invocation", "next"]) => next::handle(&shared).await,
        (&Method::POST, ["invocation", id, "response"]) => {
            let id = (*id).to_owned();
            response::handle(&shared, &id, req).await
        }
        (&Method::POST, ["invocation", id, "error"]) => {
            let id = (*id).to_owned();
            error::handle(&shared, &id, req).await
        }
        (&Method::POST, ["init", "error"]) => init_error::handle(&shared, req).await,
        (_, ["invocation", "next"]) | (_, ["invocation", _, "response" | "error"]) | (_, ["init", "error"]) => {
            reply::method_not_allowed(req.method())
        }
        _ => reply::not_found(&path),
    };
    Ok(response)
}
