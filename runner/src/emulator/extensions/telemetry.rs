//! The Telemetry API's and the Logs API's subscriptions: records of the `platform`,
//! `function` and `extension` types, buffered as each subscriber asked (items, bytes,
//! time) and POSTed as JSON arrays to its HTTP destination. Extensions name
//! `http://sandbox.localdomain:PORT`, which resolves only inside Lambda: the runner
//! delivers such destinations on loopback, where the extension listens.
//!
//! Records from before a subscription (the init's) reach it too, as Lambda's buffered
//! stream does. The Logs API (2020-08-15) gets the same records in its older shape.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::emulator::platform::Platform;
use immortal_overflow::publisher::timestamp_now;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// Which API a subscription came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `/2022-07-01/telemetry`.
    Telemetry,
    /// `/2020-08-15/logs`.
    Logs,
}

/// A record's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `platform.*` events.
    Platform,
    /// The function's log lines.
    Function,
    /// The extensions' log lines.
    Extension,
}

impl Kind {
    fn parse(text: &str) -> Option<Kind> {
        match text {
            "platform" => Some(Kind::Platform),
            "function" => Some(Kind::Function),
            "extension" => Some(Kind::Extension),
            _ => None,
        }
    }
}

/// How records of one subscription are delivered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Subscription {
    /// The API used.
    pub(crate) api: Api,
    /// The subscribing extension.
    pub(crate) extension: String,
    /// What it wants.
    pub(crate) kinds: Vec<Kind>,
    /// Where to (loopback for `sandbox.localdomain`).
    pub(crate) url: String,
    /// Flush at this many records...
    pub(crate) max_items: usize,
    /// ...or bytes...
    pub(crate) max_bytes: usize,
    /// ...or after this long.
    pub(crate) timeout: Duration,
}

/// Why a subscribe request is refused (Lambda answers 400 ValidationError).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SubscribeError {
    /// Not HTTP.
    #[error("destination protocol {0}: the runner delivers over HTTP only")]
    Protocol(String),
    /// No destination URI.
    #[error("destination.URI is required (http://sandbox.localdomain:PORT)")]
    NoUri,
    /// No `types`.
    #[error("types is required: platform, function, extension")]
    NoTypes,
    /// An unknown type.
    #[error("{0} is not a type: platform, function or extension")]
    UnknownType(String),
    /// An empty `types`.
    #[error("types should not be empty")]
    EmptyTypes,
    /// Not an `http://` URI.
    #[error("{0}: only http:// destinations are delivered")]
    NotHttp(String),
    /// No port in the URI.
    #[error("{0}: URI port is not provided")]
    NoPort(String),
    /// Another host than the sandbox.
    #[error("{0}: telemetry is delivered only within the sandbox (http://sandbox.localdomain:PORT)")]
    NotTheSandbox(String),
}

impl Subscription {
    /// A subscribe request's body, checked as Lambda checks it.
    pub(crate) fn parse(api: Api, extension: &str, body: &Value) -> Result<Subscription, SubscribeError> {
        let destination = &body["destination"];
        let protocol = destination["protocol"].as_str().unwrap_or("HTTP");
        if protocol != "HTTP" {
            return Err(SubscribeError::Protocol(protocol.to_owned()));
        }
        let uri = destination["URI"].as_str().ok_or(SubscribeError::NoUri)?;
        let kinds: Vec<Kind> = body["types"]
            .as_array()
            .ok_or(SubscribeError::NoTypes)?
            .iter()
            .map(|t| {
                t.as_str()
                    .and_then(Kind::parse)
                    .ok_or_else(|| SubscribeError::UnknownType(t.to_string()))
            })
            .collect::<Result<_, _>>()?;
        if kinds.is_empty() {
            return Err(SubscribeError::EmptyTypes);
        }
        let buffering = &body["buffering"];
        let number =
            |key: &str, default: u64, min: u64, max: u64| buffering[key].as_u64().unwrap_or(default).clamp(min, max);
        Ok(Subscription {
            api,
            extension: extension.to_owned(),
            kinds,
            url: loopback(uri)?,
            max_items: number("maxItems", 1000, 1, 30_000) as usize,
            max_bytes: number("maxBytes", 262_144, 1, 1_048_576) as usize,
            timeout: Duration::from_millis(number("timeoutMs", 1000, 25, 30_000)),
        })
    }
}

/// `uri` with Lambda's sandbox host names pointed at loopback.
fn loopback(uri: &str) -> Result<String, SubscribeError> {
    let rest = uri
        .strip_prefix("http://")
        .ok_or_else(|| SubscribeError::NotHttp(uri.to_owned()))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| SubscribeError::NoPort(uri.to_owned()))?;
    // As in Lambda, telemetry goes to the sandbox and nowhere else: an extension cannot
    // ship a function's logs off the task through the runner.
    match host {
        "sandbox.localdomain" | "sandbox" | "localhost" | "127.0.0.1" => Ok(format!("http://127.0.0.1:{port}{path}")),
        _ => Err(SubscribeError::NotTheSandbox(uri.to_owned())),
    }
}

enum Command {
    Record(Value),
    Flush(oneshot::Sender<()>),
}

struct Subscriber {
    kinds: Vec<Kind>,
    api: Api,
    commands: mpsc::UnboundedSender<Command>,
}

#[derive(Default)]
struct Inner {
    /// The records so far, for a subscription still to come; `None` once none can
    /// come any more (the init is over: Lambda closes subscriptions then).
    history: Option<History>,
    subscribers: Vec<Subscriber>,
}

/// Records kept for subscriptions still to come, bounded in number and bytes.
#[derive(Default)]
struct History {
    records: Vec<(Kind, Value)>,
    bytes: usize,
}

/// The run's telemetry streams.
pub(crate) struct Telemetry {
    inner: Mutex<Inner>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            inner: Mutex::new(Inner {
                history: Some(History::default()),
                subscribers: Vec::new(),
            }),
        }
    }
}

/// Records kept for subscriptions still to come, at most...
const HISTORY: usize = 10_000;
/// ...and bytes (as serialized JSON).
const HISTORY_BYTES: usize = 4 * 1024 * 1024;

impl Telemetry {
    /// No subscribers yet.
    pub(crate) fn new() -> Arc<Telemetry> {
        Arc::new(Telemetry::default())
    }

    /// The init is over: no subscription can come any more (Lambda closes the Telemetry
    /// and Logs APIs' subscriptions then), so the records kept for one are dropped, and
    /// with no subscriber nothing is kept or built from here on.
    pub(crate) fn close_subscriptions(&self) {
        self.inner.lock().expect("telemetry lock").history = None;
    }

    /// How many records are kept for subscriptions still to come.
    #[cfg(test)]
    fn kept(&self) -> usize {
        let inner = self.inner.lock().expect("telemetry lock");
        inner.history.as_ref().map_or(0, |h| h.records.len())
    }

    /// A typed platform event, as its record.
    pub(crate) fn platform_event(&self, event: &Platform<'_>) {
        self.platform(event.event_type(), event.record());
    }

    /// A `platform.*` event.
    fn platform(&self, event_type: &str, record: Value) {
        self.emit(Kind::Platform, event_type, record);
    }

    /// A log line of the function or of an extension.
    pub(crate) fn line(&self, kind: Kind, line: &str) {
        let kind_name = if kind == Kind::Extension {
            "extension"
        } else {
            "function"
        };
        self.emit(kind, kind_name, Value::String(line.to_owned()));
    }

    fn emit(&self, kind: Kind, event_type: &str, record: Value) {
        let mut inner = self.inner.lock().expect("telemetry lock");
        let wanted = inner.subscribers.iter().any(|s| s.kinds.contains(&kind));
        if !wanted && inner.history.is_none() {
            return;
        }
        let event = json!({"time": timestamp_now(), "type": event_type, "record": record});
        for subscriber in inner.subscribers.iter().filter(|s| s.kinds.contains(&kind)) {
            if let Some(shaped) = shape(subscriber.api, &event) {
                let _ = subscriber.commands.send(Command::Record(shaped));
            }
        }
        if let Some(history) = &mut inner.history {
            let size = event.to_string().len();
            if history.records.len() < HISTORY && history.bytes + size <= HISTORY_BYTES {
                history.bytes += size;
                history.records.push((kind, event));
            }
        }
    }

    /// Starts delivering to `subscription`, the records so far first.
    pub(crate) fn subscribe(self: &Arc<Self>, subscription: Subscription) {
        let (commands, receiver) = mpsc::unbounded_channel();
        tracing::info!(extension = %subscription.extension, url = %subscription.url, kinds = ?subscription.kinds, api = ?subscription.api, "telemetry subscription");
        let types: Vec<&str> = subscription
            .kinds
            .iter()
            .map(|k| match k {
                Kind::Platform => "platform",
                Kind::Function => "function",
                Kind::Extension => "extension",
            })
            .collect();
        {
            let mut inner = self.inner.lock().expect("telemetry lock");
            let kept = inner.history.as_ref().map(|h| h.records.as_slice()).unwrap_or_default();
            for (kind, event) in kept {
                if subscription.kinds.contains(kind) {
                    if let Some(shaped) = shape(subscription.api, event) {
                        let _ = commands.send(Command::Record(shaped));
                    }
                }
            }
            inner.subscribers.push(Subscriber {
                kinds: subscription.kinds.clone(),
                api: subscription.api,
                commands,
            });
        }
        self.platform(
            "platform.telemetrySubscription",
            json!({"name": subscription.extension, "state": "Subscribed", "types": types}),
        );
        tokio::spawn(deliver(subscription, receiver));
    }

    /// Delivers what is buffered, waiting at most `limit` for the subscribers to take it.
    pub(crate) async fn flush(&self, limit: Duration) {
        let acks: Vec<oneshot::Receiver<()>> = {
            let inner = self.inner.lock().expect("telemetry lock");
            inner
                .subscribers
                .iter()
                .filter_map(|s| {
                    let (tx, rx) = oneshot::channel();
                    s.commands.send(Command::Flush(tx)).ok().map(|_| rx)
                })
                .collect()
        };
        let _ = tokio::time::timeout(limit, futures_util::future::join_all(acks)).await;
    }
}

/// The event as `api` delivers it (`None`: not part of that API).
fn shape(api: Api, event: &Value) -> Option<Value> {
    if api == Api::Telemetry {
        return Some(event.clone());
    }
    let record = &event["record"];
    let (event_type, record) = match event["type"].as_str()? {
        "function" | "extension" => return Some(event.clone()),
        "platform.start" => (
            "platform.start",
            json!({"requestId": record["requestId"], "version": record["version"]}),
        ),
        "platform.runtimeDone" => ("platform.end", json!({"requestId": record["requestId"]})),
        "platform.report" => (
            "platform.report",
            json!({"requestId": record["requestId"], "metrics": record["metrics"]}),
        ),
        "platform.extension" => ("platform.extension", record.clone()),
        _ => return None,
    };
    Some(json!({"time": event["time"], "type": event_type, "record": record}))
}

/// Buffers and posts one subscriber's records until the run ends.
async fn deliver(subscription: Subscription, mut commands: mpsc::UnboundedReceiver<Command>) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let mut batch: Vec<Value> = Vec::new();
    let mut bytes = 0usize;
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let wait = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let flush_ack = tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Record(record)) => {
                    bytes += record.to_string().len();
                    batch.push(record);
                    due.get_or_insert_with(|| tokio::time::Instant::now() + subscription.timeout);
                    if batch.len() < subscription.max_items && bytes < subscription.max_bytes {
                        continue;
                    }
                    None
                }
                Some(Command::Flush(ack)) => Some(ack),
                None => None,
            },
            _ = wait => None,
        };
        if !batch.is_empty() {
            post(&client, &subscription, std::mem::take(&mut batch)).await;
        }
        bytes = 0;
        due = None;
        if let Some(ack) = flush_ack {
            let _ = ack.send(());
        }
        if commands.is_closed() && commands.is_empty() {
            return;
        }
    }
}

async fn post(client: &reqwest::Client, subscription: &Subscription, batch: Vec<Value>) {
    let body = Value::Array(batch).to_string();
    for attempt in 0..3u32 {
        match client
            .post(&subscription.url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => {
                tracing::warn!(extension = %subscription.extension, status = response.status().as_u16(), attempt, "the telemetry subscriber refused a batch")
            }
            Err(e) => {
                tracing::warn!(extension = %subscription.extension, error = %e, attempt, "cannot deliver telemetry to the subscriber")
            }
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
    }
    tracing::warn!(extension = %subscription.extension, "telemetry dropped after three tries, as Lambda drops what a subscriber does not take");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_kept_for_a_subscription_only_while_one_may_come_and_within_bounds() {
        let t = Telemetry::new();
        t.line(Kind::Function, "during init");
        assert_eq!(t.kept(), 1);
        let big = "x".repeat(1024 * 1024);
        for _ in 0..10 {
            t.line(Kind::Function, &big);
        }
        assert_eq!(t.kept(), 4, "at most 4 MiB are kept");
        t.close_subscriptions();
        assert_eq!(t.kept(), 0, "the init is over: no subscription can come");
        t.line(Kind::Function, "during the invocation");
        assert_eq!(t.kept(), 0, "a run without subscribers keeps nothing");
    }

    #[test]
    fn sandbox_destinations_are_delivered_on_loopback() {
        let body = json!({"schemaVersion": "2022-12-13", "types": ["platform", "function"],
                          "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 100},
                          "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243/telemetry"}});
        let s = Subscription::parse(Api::Telemetry, "x", &body).unwrap();
        assert_eq!(s.url, "http://127.0.0.1:4243/telemetry");
        assert_eq!(s.kinds, [Kind::Platform, Kind::Function]);
        assert_eq!(s.timeout, Duration::from_millis(100));
        let mut bad = body.clone();
        bad["types"] = json!([]);
        assert_eq!(
            Subscription::parse(Api::Telemetry, "x", &bad).unwrap_err(),
            SubscribeError::EmptyTypes
        );
        bad["types"] = json!(["platform"]);
        bad["destination"]["URI"] = json!("http://collector.example.com:4243/telemetry");
        assert_eq!(
            Subscription::parse(Api::Telemetry, "x", &bad).unwrap_err(),
            SubscribeError::NotTheSandbox("http://collector.example.com:4243/telemetry".into()),
            "nowhere outside the sandbox, as in Lambda"
        );
        bad["destination"]["URI"] = json!("http://sandbox.localdomain");
        bad["types"] = json!(["platform"]);
        assert!(Subscription::parse(Api::Telemetry, "x", &bad)
            .unwrap_err()
            .to_string()
            .contains("port"));
    }

    #[test]
    fn the_logs_api_gets_the_older_shape() {
        let done =
            json!({"time": "t", "type": "platform.runtimeDone", "record": {"requestId": "r", "status": "success"}});
        assert_eq!(
            shape(Api::Logs, &done).unwrap(),
            json!({"time": "t", "type": "platform.end", "record": {"requestId": "r"}})
        );
        let init = json!({"time": "t", "type": "platform.initStart", "record": {}});
        assert_eq!(shape(Api::Logs, &init), None);
        assert_eq!(shape(Api::Telemetry, &init), Some(init));
        assert!(
            timestamp_now().ends_with('Z') && timestamp_now().len() == 24,
            "{}",
            timestamp_now()
        );
    }
}
