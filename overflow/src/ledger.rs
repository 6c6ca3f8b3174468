//! The ledger: one durable record per relaunched invocation, kept beside the envelopes
//! in the payload bucket, so that after ECS accepts a task no process is the only holder
//! of an invocation. Keyed by the original request id (`ledger/<request id>.json`),
//! written with S3's conditional writes: `If-None-Match: *` creates an entry once,
//! `If-Match` on its ETag updates it only if nobody else did in between. A marker under
//! `ledger/live/` exists while the invocation has not ended, for the sweep to find.
//!
//! The forwarder creates the entry and launches attempts; the runner records how its
//! attempt ended; the reconciler (the forwarder again, on ECS's task events and on a
//! schedule) relaunches an attempt whose task stopped without an end.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use immortal_handler_sdk::aws::describe_error;
use immortal_handler_sdk::envelope::S3Location;
use serde::{Deserialize, Serialize};

use crate::store;

/// Where an invocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// An attempt is being started (a forwarder holds the lease).
    Launching,
    /// An attempt's task was accepted by ECS (or a drain worker runs it).
    Running,
    /// The attempt was stopped from outside (Spot, scale-in); it will be relaunched.
    Interrupted,
    /// It ended with a response.
    Succeeded,
    /// It ended with an error (the function's, or one before it could run).
    Failed,
    /// Its attempts ran out; reported as `RetriesExhausted`.
    Exhausted,
    /// A person stopped it (`immortal stop`); reported as `Immortal.Stopped`.
    Stopped,
}

impl State {
    /// Whether the invocation has ended (nothing more will run for it).
    pub fn ended(self) -> bool {
        matches!(
            self,
            State::Succeeded | State::Failed | State::Exhausted | State::Stopped
        )
    }

    /// Its name as the ledger writes it (`running`, `exhausted`...).
    pub fn name(self) -> &'static str {
        match self {
            State::Launching => "launching",
            State::Running => "running",
            State::Interrupted => "interrupted",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Exhausted => "exhausted",
            State::Stopped => "stopped",
        }
    }

    /// Every state, in the order an invocation may pass through them.
    pub const ALL: [State; 7] = [
        State::Launching,
        State::Running,
        State::Interrupted,
        State::Succeeded,
        State::Failed,
        State::Exhausted,
        State::Stopped,
    ];
}

impl std::str::FromStr for State {
    type Err = String;

    fn from_str(text: &str) -> Result<State, String> {
        State::ALL.into_iter().find(|s| s.name() == text).ok_or_else(|| {
            let names: Vec<&str> = State::ALL.iter().map(|s| s.name()).collect();
            format!("`{text}` is no state: use one of {}", names.join(", "))
        })
    }
}

/// What is known of one attempt's run, for people (`immortal show`, `ls`, `stats`):
/// written where the ledger is written anyway, never with a round trip of its own on
/// the launch path. Times are ms since the epoch; 0 is "not yet" (or an entry written
/// before they were kept).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptFacts {
    /// When the forwarder started launching it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub launched_ms: u64,
    /// When its runner started running it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub started_ms: u64,
    /// When it ended (an outcome, an interruption, a stop).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ended_ms: u64,
    /// The task's CPU units (1024 a vCPU), when the forwarder sized it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// The task's memory (MB), when the forwarder sized it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// Where the function's own log lines of this attempt went: its log group...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
    /// ...and the stream the runner wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_stream: Option<String>,
}

fn is_zero<N: Default + PartialEq>(n: &N) -> bool {
    *n == N::default()
}

/// How an earlier attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptEnd {
    /// Its number.
    pub attempt: u32,
    /// Its task, if one was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Why it ended: the task's stop code, exit code and reason.
    pub reason: String,
    /// Its times, size and logs.
    #[serde(flatten)]
    pub facts: AttemptFacts,
}

/// One invocation's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The original request id.
    pub request_id: String,
    /// The function (name or ARN, with its qualifier).
    pub function: String,
    /// The current container attempt, from 1 (Lambda's own attempts do not count).
    pub attempt: u32,
    /// Where it stands.
    pub state: State,
    /// The current attempt's task, once ECS accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The current attempt's envelope.
    pub envelope: String,
    /// SHA-256 (hex) of that envelope's bytes.
    pub digest: String,
    /// The current attempt went to on-demand Fargate after Spot had no capacity: a
    /// retried launch takes the same way (and token), never both.
    #[serde(default)]
    pub on_demand: bool,
    /// Until when (epoch ms) the one starting an attempt holds it; after that another
    /// may take over. A running attempt with no task (a drain worker's hand-over, a
    /// runner that could not learn its task) holds it the same way, renewed by its
    /// runner every [`RUN_LEASE_RENEW_MS`]: once it lapses, the sweep relaunches it.
    pub lease_until_ms: u64,
    /// Why the current attempt ended, when it did without an outcome (or how).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Earlier attempts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptEnd>,
    /// Bumped on every write (so an unchanged-looking rewrite still changes the ETag).
    pub revision: u64,
    /// When the ledger first held it (ms since the epoch; 0 in entries older than that).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_ms: u64,
    /// When Lambda gave up on the invocation: the overflow record's time (ms since the
    /// epoch), if known.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_ms: u64,
    /// The first attempt counted against `IMMORTAL_MAX_ATTEMPTS` (a replay starts a new
    /// count; 0 or 1: from the first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub counted_from: u32,
    /// The current attempt's times, size and logs.
    #[serde(flatten)]
    pub current: AttemptFacts,
}

impl Entry {
    /// Attempts counted against the limit so far, the current one included.
    pub fn counted_attempts(&self) -> u32 {
        self.attempt + 1 - self.counted_from.clamp(1, self.attempt.max(1))
    }

    /// Ends the current attempt's facts at `now_ms` (unless it had ended) and moves them,
    /// with `task` and `reason`, into the history.
    pub fn close_attempt(&mut self, reason: String, now_ms: u64) {
        let mut facts = std::mem::take(&mut self.current);
        if facts.ended_ms == 0 {
            facts.ended_ms = now_ms;
        }
        self.history.push(AttemptEnd {
            attempt: self.attempt,
            task: self.task.take(),
            reason,
            facts,
        });
    }
}

/// Why the ledger could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// S3 failed.
    #[error("the ledger at {at}: {reason}")]
    Store {
        /// Where.
        at: String,
        /// Why.
        reason: String,
    },
    /// Someone else wrote the entry in between (retry from a fresh read).
    #[error("the ledger entry {0} changed meanwhile")]
    Conflict(String),
    /// A stored envelope could not be read back.
    #[error(transparent)]
    Document(#[from] store::StoreError),
}

/// An invocation not ended, as the sweep lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMarker {
    /// Its request id (key-safe).
    pub request_id: String,
    /// When its marker was written (ms since the epoch).
    pub marked_ms: u64,
}

/// The ledger in one payload bucket.
#[derive(Clone)]
pub struct Ledger {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

/// An entry as read, with the ETag that guards the next write.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The entry.
    pub entry: Entry,
    /// Its ETag.
    pub etag: String,
}

/// Epoch milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Ledger {
    /// The ledger in `bucket`.
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Ledger {
            s3,
            bucket: bucket.into(),
        }
    }

    /// The S3 client it writes with.
    pub fn s3(&self) -> &aws_sdk_s3::Client {
        &self.s3
    }

    /// Where an attempt's envelope is stored.
    pub fn envelope_location(&self, request_id: &str, attempt: u32) -> S3Location {
        S3Location {
            bucket: self.bucket.clone(),
            key: format!("{ENVELOPES}{}/attempt-{attempt}.json", key_safe(request_id)),
        }
    }

    fn entry_key(request_id: &str) -> String {
        format!("{LEDGER}{}.json", key_safe(request_id))
    }

    fn live_key(request_id: &str) -> String {
        format!("{LIVE}{}", key_safe(request_id))
    }

    /// Creates `entry` unless one exists: `Ok(Ok(etag))` when created, `Ok(Err(existing))`
    /// when another was there first.
    /// The live marker is written at the same time: a marker left by a create that lost
    /// to an earlier one is removed by the sweep once it finds the invocation ended.
    pub async fn create(&self, entry: &Entry) -> Result<Result<String, Versioned>, LedgerError> {
        let key = Self::entry_key(&entry.request_id);
        let (created, marked) = tokio::join!(
            self.put(&key, entry, Condition::Absent),
            self.mark_live(&entry.request_id, true)
        );
        match created {
            Ok(etag) => {
                marked?;
                Ok(Ok(etag))
            }
            Err(LedgerError::Conflict(_)) => match self.read(&entry.request_id).await? {
                Some(existing) => {
                    // The first create's marker may have failed after its entry was
                    // written: this delivery's marker (written above) stands for it, and
                    // one for an ended invocation is removed.
                    if marked.is_ok() && existing.entry.state.ended() {
                        self.mark_live(&entry.request_id, false).await?;
                    } else {
                        marked?;
                    }
                    Ok(Err(existing))
                }
                None => Err(LedgerError::Conflict(key)),
            },
            Err(e) => Err(e),
        }
    }

    /// The entry of `request_id`, if any.
    pub async fn read(&self, request_id: &str) -> Result<Option<Versioned>, LedgerError> {
        let key = Self::entry_key(request_id);
        let out = match self.s3.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(self.error(&key, describe_error(&e))),
        };
        let etag = out.e_tag.clone().unwrap_or_default();
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| self.error(&key, e.to_string()))?
            .into_bytes();
        let entry = serde_json::from_slice(&bytes).map_err(|e| self.error(&key, format!("not a ledger entry: {e}")))?;
        Ok(Some(Versioned { entry, etag }))
    }

    /// Writes `entry` over the version read (`etag`); a conflict means someone else
    /// wrote it meanwhile.
    pub async fn update(&self, entry: &mut Entry, etag: &str) -> Result<String, LedgerError> {
        entry.revision += 1;
        let key = Self::entry_key(&entry.request_id);
        let etag = self.put(&key, entry, Condition::Matches(etag)).await?;
        if entry.state.ended() {
            // The entry is written: a marker left behind only costs the sweep a read (it
            // removes markers of ended invocations), so this is no failure of the update.
            if let Err(e) = self.mark_live(&entry.request_id, false).await {
                tracing::warn!(request_id = %entry.request_id, error = %e, "the live marker of an ended invocation stays until the sweep");
            }
        }
        Ok(etag)
    }

    /// Reads, changes with `change` (which returns false to leave it as it is) and writes
    /// back, again from a fresh read when someone else wrote in between. Returns the
    /// entry as written (or as found, unchanged).
    pub async fn modify(
        &self,
        request_id: &str,
        mut change: impl FnMut(&mut Entry) -> bool,
    ) -> Result<Option<Entry>, LedgerError> {
        for _ in 0..8 {
            let Some(Versioned { mut entry, etag }) = self.read(request_id).await? else {
                return Ok(None);
            };
            if !change(&mut entry) {
                return Ok(Some(entry));
            }
            match self.update(&mut entry, &etag).await {
                Ok(_) => return Ok(Some(entry)),
                Err(LedgerError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(LedgerError::Conflict(Self::entry_key(request_id)))
    }

    /// The request ids of invocations that have not ended.
    pub async fn live(&self) -> Result<Vec<String>, LedgerError> {
        Ok(self.live_markers().await?.into_iter().map(|m| m.request_id).collect())
    }

    /// The live markers, in key order, with when each was written: one List call per
    /// 1,000 invocations.
    pub async fn live_markers(&self) -> Result<Vec<LiveMarker>, LedgerError> {
        Ok(self
            .list(LIVE)
            .await?
            .into_iter()
            .map(|(request_id, marked_ms)| LiveMarker { request_id, marked_ms })
            .collect())
    }

    /// The keys under `prefix` (without it), in key order, with when each was last
    /// written (ms since the epoch; unknown: now, so never taken for old).
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, LedgerError> {
        let mut keys = Vec::new();
        let mut next = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(next)
                .send()
                .await
                .map_err(|e| self.error(prefix, describe_error(&e)))?;
            keys.extend(page.contents().iter().filter_map(|o| {
                let written = o
                    .last_modified()
                    .and_then(|t| t.to_millis().ok())
                    .and_then(|ms| u64::try_from(ms).ok())
                    .unwrap_or_else(now_ms);
                Some((o.key()?.strip_prefix(prefix)?.to_owned(), written))
            }));
            next = page.next_continuation_token;
            if next.is_none() {
                return Ok(keys);
            }
        }
    }

    /// Where the last sweep stopped (the last request id it looked at), if one did.
    pub async fn sweep_cursor(&self) -> Result<Option<String>, LedgerError> {
        match self.s3.get_object().bucket(&self.bucket).key(SWEEP_CURSOR).send().await {
            Ok(out) => {
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| self.error(SWEEP_CURSOR, e.to_string()))?
                    .into_bytes();
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()).filter(|c| !c.is_empty()))
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.error(SWEEP_CURSOR, describe_error(&e))),
        }
    }

    /// Records where a sweep stopped: the next one starts after `request_id`. Sweeps at
    /// once may overwrite each other's: any cursor is a correct place to start.
    pub async fn set_sweep_cursor(&self, request_id: &str) -> Result<(), LedgerError> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(SWEEP_CURSOR)
            .body(ByteStream::from(request_id.as_bytes().to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error(SWEEP_CURSOR, describe_error(&e)))
    }

    /// Stores `envelope` as attempt `attempt` of `request_id`'s invocation; returns where
    /// and its SHA-256 (see [`Ledger::store_envelope`]).
    pub async fn store_attempt(
        &self,
        request_id: &str,
        attempt: u32,
        envelope: &immortal_handler_sdk::Envelope,
    ) -> Result<(S3Location, String), LedgerError> {
        let at = self.envelope_location(request_id, attempt);
        let digest = self.store_envelope(&at, envelope.to_json().into_bytes()).await?;
        Ok((at, digest))
    }

    /// Stores an attempt's envelope document, once: an attempt's envelope never changes
    /// under a task that may be about to read it. Returns the SHA-256 (hex) of what is
    /// stored (the earlier bytes, when a retried or concurrent launch wrote them first).
    pub async fn store_envelope(&self, at: &S3Location, bytes: Vec<u8>) -> Result<String, LedgerError> {
        let digest = digest(&bytes);
        let put = self
            .s3
            .put_object()
            .bucket(&at.bucket)
            .key(&at.key)
            .content_type("application/json")
            .if_none_match("*")
            .body(ByteStream::from(bytes))
            .send()
            .await;
        match put {
            Ok(_) => Ok(digest),
            Err(e) if matches!(e.raw_response().map(|r| r.status().as_u16()), Some(412) | Some(409)) => {
                let stored = store::get_bytes(&self.s3, at).await?;
                Ok(self::digest(&stored))
            }
            Err(e) => Err(self.error(&at.key, describe_error(&e))),
        }
    }

    /// Marks an ended invocation live again (a person replays it), before its entry says
    /// so: the sweep finds it from then on.
    pub async fn revive(&self, request_id: &str) -> Result<(), LedgerError> {
        self.mark_live(request_id, true).await
    }

    /// Every entry's request id, with when its entry was last written (ms since the
    /// epoch): one List call per 1,000 invocations. Entries written before `since_ms`
    /// are left out (an entry is last written when its invocation ends or later).
    pub async fn entry_ids(&self, since_ms: u64) -> Result<Vec<(String, u64)>, LedgerError> {
        Ok(self
            .list(LEDGER)
            .await?
            .into_iter()
            .filter_map(|(key, written)| {
                let id = key.strip_suffix(".json")?;
                // Not a marker (`live/`) or the sweep's cursor.
                (!id.contains('/') && written >= since_ms).then(|| (id.to_owned(), written))
            })
            .collect())
    }

    /// Removes the live marker of an invocation that ended.
    pub async fn forget(&self, request_id: &str) -> Result<(), LedgerError> {
        self.mark_live(request_id, false).await
    }

    async fn mark_live(&self, request_id: &str, live: bool) -> Result<(), LedgerError> {
        let key = Self::live_key(request_id);
        let result = if live {
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(ByteStream::from_static(b""))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| describe_error(&e))
        } else {
            self.s3
                .delete_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| describe_error(&e))
        };
        result.map_err(|reason| self.error(&key, reason))
    }

    async fn put(&self, key: &str, entry: &Entry, condition: Condition<'_>) -> Result<String, LedgerError> {
        let body = serde_json::to_vec(entry).expect("a ledger entry serializes");
        let mut put = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        put = match condition {
            Condition::Absent => put.if_none_match("*"),
            Condition::Matches(etag) => put.if_match(etag),
        };
        match put.send().await {
            Ok(out) => Ok(out.e_tag.unwrap_or_default()),
            Err(e) => {
                let code = e.raw_response().map(|r| r.status().as_u16());
                // 412: the precondition did not hold; 409: a concurrent conditional write.
                if matches!(code, Some(412) | Some(409)) {
                    Err(LedgerError::Conflict(key.to_owned()))
                } else {
                    Err(self.error(key, describe_error(&e)))
                }
            }
        }
    }

    fn error(&self, key: &str, reason: String) -> LedgerError {
        LedgerError::Store {
            at: format!("s3://{}/{key}", self.bucket),
            reason,
        }
    }
}

/// A conditional write.
enum Condition<'a> {
    /// Only if no object is there.
    Absent,
    /// Only if the object still has this ETag.
    Matches(&'a str),
}

/// The prefix of stored envelopes.
pub const ENVELOPES: &str = "envelopes/";
/// The prefix of ledger entries.
pub const LEDGER: &str = "ledger/";
/// The prefix of live markers.
pub const LIVE: &str = "ledger/live/";
/// How long a running attempt with no task is held without a renewal (five renewals).
pub const RUN_LEASE_MS: u64 = 300_000;
/// How often its runner renews that lease.
pub const RUN_LEASE_RENEW_MS: u64 = 60_000;

/// The lease a running attempt holds: none when ECS can say whether its task still
/// runs, else [`RUN_LEASE_MS`] from now.
pub fn run_lease(task: Option<&str>) -> u64 {
    match task {
        Some(_) => 0,
        None => now_ms() + RUN_LEASE_MS,
    }
}

/// Where the sweep keeps its cursor (outside `live/`, never a request id's entry).
pub const SWEEP_CURSOR: &str = "ledger/.sweep-cursor";

/// SHA-256 of `bytes`, hex.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A request id as one key segment (request ids are UUIDs; anything else is kept safe).
fn key_safe(request_id: &str) -> String {
    request_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The request id and attempt an envelope key names
/// (`envelopes/<request id>/attempt-<n>.json`).
pub fn envelope_key_parts(key: &str) -> Option<(String, u32)> {
    let rest = key.strip_prefix(ENVELOPES)?;
    let (request_id, file) = rest.split_once('/')?;
    let attempt = file.strip_prefix("attempt-")?.strip_suffix(".json")?.parse().ok()?;
    Some((request_id.to_owned(), attempt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_keys_name_their_invocation_and_attempt() {
        assert_eq!(
            envelope_key_parts("envelopes/3f2a-1/attempt-2.json"),
            Some(("3f2a-1".into(), 2))
        );
        assert_eq!(envelope_key_parts("envelopes/x/m-1.json"), None);
        assert_eq!(key_safe("a/b c"), "a_b_c");
        assert!(State::Exhausted.ended() && !State::Interrupted.ended());
        assert_eq!(digest(b"").len(), 64);
    }
}
