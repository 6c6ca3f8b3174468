//! A small HTTP server of the tests' own: answers what a test tells it to, forwards
//! the rest to an upstream (the emulator), and logs every request. It plays the parts
//! the emulator cannot: a Lambda API that serves layers, a flaky download host, a
//! fault-injecting proxy.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// Query string.
    pub query: String,
    /// Headers, lowercase names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Seen {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (AWS JSON-protocol requests).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// The AWS JSON-protocol operation (`X-Amz-Target: Service.Operation`), if any.
    pub fn target(&self) -> Option<&str> {
        self.header("x-amz-target").and_then(|t| t.rsplit('.').next())
    }
}

/// What to answer.
pub enum Reply {
    /// Pass the request on to the upstream.
    Forward,
    /// A whole response.
    Full {
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: Bytes,
    },
    /// Headers promising `body`, then only its first `cut_at` bytes, then a broken connection.
    Cut {
        /// Status code.
        status: u16,
        /// Headers (Content-Length is added).
        headers: Vec<(String, String)>,
        /// The whole body.
        body: Bytes,
        /// How much of it is sent.
        cut_at: usize,
    },
    /// Pass the request on, then show `observe` the upstream's status and body.
    ForwardThen(Observer),
    /// The reply, after a pause (a slow server: widens a race).
    After(std::time::Duration, Box<Reply>),
    /// Close the connection without answering (a server gone away mid-download).
    HangUp,
}

impl Reply {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(value.to_string()),
        }
    }

    /// The same reply with one more header (whole replies only).
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Full { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// `bytes` as a file, honouring a `Range: bytes=N-` request header.
    pub fn file(request: &Seen, bytes: &Bytes) -> Reply {
        if let Some(start) = request
            .header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
        {
            let total = bytes.len();
            return Reply::Full {
                status: 206,
                headers: vec![(
                    "content-range".into(),
                    format!("bytes {start}-{}/{total}", total.saturating_sub(1)),
                )],
                body: bytes.slice(start.min(total)..),
            };
        }
        Reply::Full {
            status: 200,
            headers: vec![],
            body: bytes.clone(),
        }
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// Sees the upstream's status and body after a forwarded request.
pub type Observer = Box<dyn FnOnce(u16, &Bytes) + Send>;

/// A running test server.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: Arc<Mutex<Vec<Seen>>>,
    _runtime: std::thread::JoinHandle<()>,
}

impl TestServer {
    /// Starts a server answering with `handler`; `Reply::Forward` goes to `upstream`.
    pub fn start(upstream: Option<String>, handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> TestServer {
        let handler: Arc<Handler> = Arc::new(handler);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap().port()).unwrap();
                let client = reqwest::Client::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (handler, log, upstream, client) =
                        (handler.clone(), log2.clone(), upstream.clone(), client.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let (handler, log, upstream, client) =
                                (handler.clone(), log.clone(), upstream.clone(), client.clone());
                            async move { serve(req, &*handler, &log, upstream.as_deref(), &client).await }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        let port = rx.recv().unwrap();
        TestServer {
            url: format!("http://127.0.0.1:{port}"),
            log,
            _runtime: runtime,
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

async fn serve(
    req: hyper::Request<hyper::body::Incoming>,
    handler: &Handler,
    log: &Mutex<Vec<Seen>>,
    upstream: Option<&str>,
    client: &reqwest::Client,
) -> Result<hyper::Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        at: std::time::Instant::now(),
    };
    log.lock().unwrap().push(seen.clone());
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut reply = handler(&seen);
    while let Reply::After(pause, then) = reply {
        tokio::time::sleep(pause).await;
        reply = *then;
    }
    Ok(match reply {
        Reply::Forward => forward(&seen, path, upstream, client, None).await,
        Reply::ForwardThen(observe) => forward(&seen, path, upstream, client, Some(observe)).await,
        // An error from the service makes hyper drop the connection unanswered.
        Reply::HangUp => return Err(std::io::Error::other("hung up by the test")),
        Reply::After(..) => unreachable!("unwrapped above"),
        Reply::Full { status, headers, body } => response(status, &headers, full(body)),
        Reply::Cut {
            status,
            mut headers,
            body,
            cut_at,
        } => {
            headers.push(("content-length".into(), body.len().to_string()));
            let sent = body.slice(..cut_at.min(body.len()));
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(sent)),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "cut by the test",
                )),
            ];
            let stream = futures_util::stream::iter(frames);
            response(status, &headers, BodyExt::boxed(StreamBody::new(stream)))
        }
    })
}

fn full(body: Bytes) -> Body {
    Full::new(body).map_err(|never| match never {}).boxed()
}

fn response(status: u16, headers: &[(String, String)], body: Body) -> hyper::Response<Body> {
    let mut builder = hyper::Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    builder.body(body).unwrap()
}

async fn forward(
    seen: &Seen,
    path_and_query: &str,
    upstream: Option<&str>,
    client: &reqwest::Client,
    observe: Option<Observer>,
) -> hyper::Response<Body> {
    let Some(upstream) = upstream else {
        return response(502, &[], full(Bytes::from_static(b"no upstream configured")));
    };
    let method = reqwest::Method::from_bytes(seen.method.as_bytes()).unwrap();
    let mut request = client
        .request(method, format!("{upstream}{path_and_query}"))
        .body(seen.body.clone());
    for (k, v) in &seen.headers {
        if !["content-length", "transfer-encoding", "connection"].contains(&k.as_str()) {
            request = request.header(k, v);
        }
    }
    match request.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let headers: Vec<(String, String)> = res
                .headers()
                .iter()
                .filter(|(k, _)| !["content-length", "transfer-encoding", "connection"].contains(&k.as_str()))
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = res.bytes().await.unwrap_or_default();
            if let Some(observe) = observe {
                observe(status, &body);
            }
            response(status, &headers, full(body))
        }
        Err(e) => response(502, &[], full(Bytes::from(e.to_string()))),
    }
}
