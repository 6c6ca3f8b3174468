//! The function's logs, where Lambda would have put them: its own log group, a stream
//! named like Lambda's, its output line by line and the platform's START, END and
//! REPORT lines (or, when its `LoggingConfig` says JSON, Lambda's JSON records). The
//! runner's own diagnostics stay on stderr.
//!
//! Lines are batched (a second, or PutLogEvents' limits) and a batch is retried until
//! it is accepted: a throttled log service delays lines, it never loses one. Should the
//! log group refuse for good, the lines go to stderr, said so in a warning.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use immortal_handler_sdk::aws::describe_error;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use std::sync::Arc;

use crate::emulator::extensions::telemetry::{Kind, Telemetry};
use crate::emulator::invocation::Invocation;
use crate::emulator::platform::Platform;

/// PutLogEvents: at most this many events, and bytes (each event counts 26 more).
const MAX_EVENTS: usize = 10_000;
const MAX_BATCH_BYTES: usize = 1_048_576;
/// A single event's limit; longer lines are split.
const MAX_EVENT_BYTES: usize = 256 * 1024 - 26;
/// How long a line waits for its batch.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long the end of a run waits for a refusing log service before the rest goes to
/// stderr.
const CLOSE_PATIENCE: Duration = Duration::from_secs(120);

/// Where the function's output goes (`--function-logs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogDestination {
    /// The function's own log group (the image's default).
    CloudWatch,
    /// The runner's stderr (locally).
    Stderr,
}

impl LogDestination {
    /// Parses `cloudwatch` or `stderr`.
    pub(crate) fn parse(text: &str) -> Result<LogDestination, UnknownDestination> {
        match text {
            "cloudwatch" => Ok(LogDestination::CloudWatch),
            "stderr" => Ok(LogDestination::Stderr),
            other => Err(UnknownDestination(other.to_owned())),
        }
    }
}

/// A `--function-logs` value that names no destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not cloudwatch or stderr")]
pub(crate) struct UnknownDestination(pub(crate) String);

/// CloudWatch Logs refused or failed a call (its answer, described).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LogsError(String);

/// One line, stamped when it was read.
struct Line {
    at_ms: i64,
    text: String,
}

/// A run's log: the bootstrap's output and the platform's lines.
pub(crate) struct FunctionLog {
    lines: Option<mpsc::UnboundedSender<Line>>,
    /// Extensions' telemetry subscriptions, which take the lines too.
    tap: Option<Arc<Telemetry>>,
    shipper: Option<tokio::task::JoinHandle<()>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    json: bool,
    /// The CloudWatch Logs stream the lines go to, if they go to one.
    stream: Option<String>,
    /// Lines go to a person's terminal: a record's bare `\r` (the runtime clients join a
    /// multi-line record so, for CloudWatch) becomes a line break there, or a traceback
    /// would draw over itself.
    terminal: bool,
}

impl FunctionLog {
    /// Output to the runner's stderr: inherited by the bootstrap, or, on a terminal (and
    /// not in JSON), read line by line so that a record's lines show as lines.
    pub(crate) fn stderr(json: bool) -> FunctionLog {
        FunctionLog {
            lines: None,
            tap: None,
            shipper: None,
            readers: Vec::new(),
            json,
            stream: None,
            terminal: !json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    /// The CloudWatch Logs stream the lines go to (in the function's log group).
    pub(crate) fn stream(&self) -> Option<&str> {
        self.stream.as_deref()
    }

    /// Output shipped to `group`/`stream` with `client`.
    pub(crate) fn cloudwatch(
        client: aws_sdk_cloudwatchlogs::Client,
        group: String,
        stream: String,
        json: bool,
    ) -> FunctionLog {
        let (tx, rx) = mpsc::unbounded_channel();
        let shipper = tokio::spawn(ship(client, group, stream.clone(), rx));
        FunctionLog {
            lines: Some(tx),
            tap: None,
            shipper: Some(shipper),
            readers: Vec::new(),
            json,
            stream: Some(stream),
            terminal: false,
        }
    }

    /// The stream name for `invocation`: `YYYY/MM/DD/[VERSION]` as Lambda's, then an id
    /// that says the runner wrote it.
    pub(crate) fn stream_name(invocation: &Invocation) -> String {
        let date = &aws_smithy_types::DateTime::from(SystemTime::now())
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_else(|_| "1970-01-01".into())[..10];
        format!(
            "{}/[{}]immortal-{}",
            date.replace('-', "/"),
            invocation.function_version,
            uuid::Uuid::new_v4().simple()
        )
    }

    /// Lines read from here on also go to the extensions' telemetry subscriptions.
    pub(crate) fn tap(&mut self, telemetry: Arc<Telemetry>) {
        self.tap = Some(telemetry);
    }

    /// A pipe for the bootstrap's stdout and stderr (`None`: it writes to the runner's
    /// stderr itself).
    pub(crate) fn output(&mut self) -> std::io::Result<Option<OwnedFd>> {
        self.output_as(Kind::Function)
    }

    /// A pipe for the output of the function (`Kind::Function`) or of an extension
    /// (`Kind::Extension`): both go to the function's log, as in Lambda.
    pub(crate) fn output_as(&mut self, kind: Kind) -> std::io::Result<Option<OwnedFd>> {
        let tx = self.lines.clone();
        let tap = self.tap.clone();
        let terminal = self.terminal;
        if tx.is_none() && tap.is_none() && !terminal {
            return Ok(None);
        }
        let (reader, writer) = std::io::pipe()?;
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
        self.readers.push(tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match lines.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf);
                        let line = text.trim_end_matches(['\n', '\r']);
                        match &tx {
                            Some(tx) => send_split(tx, line),
                            None if terminal => eprintln!("{}", for_terminal(line)),
                            None => eprintln!("{line}"),
                        }
                        if let Some(tap) = &tap {
                            tap.line(kind, line);
                        }
                    }
                }
            }
        }));
        Ok(Some(OwnedFd::from(writer)))
    }

    /// A platform event's lines (none for the events Lambda keeps out of the log).
    pub(crate) fn platform(&self, event: &Platform<'_>) {
        for line in event.log_lines(self.json) {
            self.platform_line(line);
        }
    }

    fn platform_line(&self, line: String) {
        match &self.lines {
            Some(tx) => {
                let _ = tx.send(Line {
                    at_ms: now_ms(),
                    text: line,
                });
            }
            None => eprintln!("{line}"),
        }
    }

    /// Waits until every line read has been delivered (or, refused for good, written to
    /// stderr).
    pub(crate) async fn close(mut self) {
        for reader in self.readers.drain(..) {
            // The bootstrap is gone: its output ends, unless something it started holds
            // the pipe open; then what is read so far is what there is.
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        self.lines = None;
        if let Some(shipper) = self.shipper.take() {
            let _ = shipper.await;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// Sends `text`, split into events CloudWatch accepts.
fn send_split(tx: &mpsc::UnboundedSender<Line>, text: &str) {
    let mut rest = text;
    loop {
        let mut cut = rest.len().min(MAX_EVENT_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        let _ = tx.send(Line {
            at_ms: now_ms(),
            text: head.to_owned(),
        });
        if tail.is_empty() {
            return;
        }
        rest = tail;
    }
}

/// Collects lines into batches and delivers them, in order, until the senders are gone.
async fn ship(
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    stream: String,
    mut rx: mpsc::UnboundedReceiver<Line>,
) {
    let mut sink = Sink {
        client,
        group,
        stream,
        ready: false,
        refused: false,
    };
    let mut batch: Vec<Line> = Vec::new();
    let mut bytes = 0usize;
    let mut open = true;
    let mut since = Instant::now();
    while open || !batch.is_empty() {
        let wait = FLUSH_EVERY.saturating_sub(since.elapsed());
        let full = batch.len() >= MAX_EVENTS;
        if open && !full {
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(line)) => {
                    if bytes + line.text.len() + 26 > MAX_BATCH_BYTES {
                        sink.deliver(std::mem::take(&mut batch)).await;
                        bytes = 0;
                        since = Instant::now();
                    }
                    bytes += line.text.len() + 26;
                    batch.push(line);
                    continue;
                }
                Ok(None) => open = false,
                Err(_) => {}
            }
        }
        if !batch.is_empty() {
            sink.deliver(std::mem::take(&mut batch)).await;
        }
        bytes = 0;
        since = Instant::now();
    }
}

struct Sink {
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    stream: String,
    ready: bool,
    refused: bool,
}

impl Sink {
    /// Delivers `batch`, retrying with backoff; refused for good, it writes to stderr.
    async fn deliver(&mut self, batch: Vec<Line>) {
        if self.refused {
            return to_stderr(&batch);
        }
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let error = match self.put(&batch).await {
                Ok(()) => return,
                Err(error) => error,
            };
            if started.elapsed() > CLOSE_PATIENCE {
                tracing::warn!(group = %self.group, error = %error, "the function's log group refuses its lines; they go to stderr from now on");
                self.refused = true;
                return to_stderr(&batch);
            }
            tracing::debug!(error = %error, "log delivery failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn put(&mut self, batch: &[Line]) -> Result<(), LogsError> {
        if !self.ready {
            self.create().await?;
            self.ready = true;
        }
        let events = batch
            .iter()
            .map(|line| {
                InputLogEvent::builder()
                    .timestamp(line.at_ms)
                    .message(if line.text.is_empty() { " " } else { &line.text })
                    .build()
                    .expect("timestamp and message are set")
            })
            .collect::<Vec<_>>();
        match self
            .client
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .set_log_events(Some(events))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception())
                {
                    self.ready = false;
                }
                Err(LogsError(describe_error(&e)))
            }
        }
    }

    /// The stream (and, when Lambda has not made it yet, the group).
    async fn create(&self) -> Result<(), LogsError> {
        let stream = || {
            self.client
                .create_log_stream()
                .log_group_name(&self.group)
                .log_stream_name(&self.stream)
                .send()
        };
        match stream().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                let _ = self.client.create_log_group().log_group_name(&self.group).send().await;
                stream().await.map(|_| ()).map_err(|e| LogsError(describe_error(&e)))
            }
            Err(e) => Err(LogsError(describe_error(&e))),
        }
    }
}

/// A record's lines as lines: a bare `\r` (not before `\n`) becomes a line break.
///
/// ```text
/// "[ERROR] boom\rTraceback ...\r  File ..." → three lines
/// ```
fn for_terminal(line: &str) -> std::borrow::Cow<'_, str> {
    if line.contains('\r') {
        std::borrow::Cow::Owned(line.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        std::borrow::Cow::Borrowed(line)
    }
}

fn to_stderr(batch: &[Line]) {
    for line in batch {
        eprintln!("{}", line.text);
    }
}

/// The peak resident memory (MB) of `pid` and every process below it.
pub(crate) fn tree_peak_rss_mb(pid: i32) -> u64 {
    fn walk(pid: i32, total: &mut u64) {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                *total += kb;
            }
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return;
        };
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                walk(child, total);
            }
        }
    }
    let mut kb = 0;
    walk(pid, &mut kb);
    kb.div_ceil(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_bare_carriage_returns_become_lines_on_a_terminal() {
        assert_eq!(
            for_terminal("[ERROR] boom\rTraceback\r  File x"),
            "[ERROR] boom\nTraceback\n  File x"
        );
        assert_eq!(for_terminal("plain"), "plain");
    }

    #[test]
    fn long_lines_are_split_on_character_boundaries() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let text = "é".repeat(MAX_EVENT_BYTES);
        send_split(&tx, &text);
        drop(tx);
        let mut parts = Vec::new();
        while let Ok(line) = rx.try_recv() {
            assert!(line.text.len() <= MAX_EVENT_BYTES);
            parts.push(line.text);
        }
        assert_eq!(parts.len(), 2);
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn the_runners_own_memory_is_measured() {
        assert!(tree_peak_rss_mb(std::process::id() as i32) > 0);
    }
}
