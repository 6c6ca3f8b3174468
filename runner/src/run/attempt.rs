//! This run as one attempt of an invocation the ledger holds (a task the forwarder
//! started from a stored envelope): the runner says when the attempt runs and how it
//! ended, so the reconciler relaunches exactly the attempts that ended without an
//! outcome, and never one that is still running.

use immortal_handler_sdk::{aws, Envelope};
use std::sync::Mutex;
use std::time::Duration;

use immortal_overflow::ledger::{
    envelope_key_parts, now_ms, run_lease, AttemptFacts, Entry, Ledger, LedgerError, State, RUN_LEASE_MS,
    RUN_LEASE_RENEW_MS,
};
use immortal_overflow::metrics::{self, Metric};
use immortal_overflow::Carrier;

use crate::run::settlement::{settlement, End};

/// The ledger entry this run's attempt belongs to.
pub(crate) struct Attempt {
    ledger: Ledger,
    /// The invocation.
    pub(crate) request_id: String,
    /// Which attempt this is.
    pub(crate) number: u32,
    /// Renews the attempt's lease while it runs with no task to tell ECS about.
    renewal: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}

/// What the ledger says about running this attempt now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Go {
    /// Run it.
    Run,
    /// Do not: the invocation ended, or a later attempt holds it.
    Superseded(String),
}

impl Attempt {
    /// The attempt `carrier` belongs to, when it is a stored envelope of the ledger in
    /// `bucket` (`None` for local runs and envelopes from elsewhere).
    pub(crate) async fn of(carrier: &Carrier, bucket: Option<&str>) -> Option<Attempt> {
        let Carrier::Stored { at, .. } = carrier else {
            return None;
        };
        let bucket = bucket.filter(|b| *b == at.bucket)?;
        let (request_id, number) = envelope_key_parts(&at.key)?;
        let ledger = Ledger::new(aws::s3_client(aws::shared().await), bucket);
        Some(Attempt::new(ledger, request_id, number))
    }

    fn new(ledger: Ledger, request_id: String, number: u32) -> Attempt {
        Attempt {
            ledger,
            request_id,
            number,
            renewal: Mutex::new(None),
        }
    }

    /// Hands a drain worker's run of `envelope` (of `function`) to the ledger in `bucket`
    /// as attempt 1, running in this task: from then on the ledger owns the invocation
    /// and its queue message can go. `None` when the ledger already holds this
    /// invocation (or it has no request id).
    pub(crate) async fn hand_over(
        bucket: &str,
        envelope: &Envelope,
        function: &str,
        failed_ms: Option<u64>,
    ) -> Result<Option<Attempt>, LedgerError> {
        let Some(request_id) = envelope.context.request_id.clone() else {
            return Ok(None);
        };
        let ledger = Ledger::new(aws::s3_client(aws::shared().await), bucket);
        let (at, digest) = ledger.store_attempt(&request_id, 1, envelope).await?;
        let task = own_task_arn().await;
        let now = now_ms();
        let entry = Entry {
            request_id: request_id.clone(),
            function: function.to_owned(),
            attempt: 1,
            state: State::Running,
            lease_until_ms: run_lease(task.as_deref()),
            task,
            envelope: at.to_string(),
            digest,
            on_demand: false,
            reason: None,
            history: Vec::new(),
            revision: 0,
            created_ms: now,
            failed_ms: failed_ms.unwrap_or_default(),
            counted_from: 1,
            // The run started when the worker took the message; this is when the ledger
            // took it over.
            current: AttemptFacts {
                launched_ms: now,
                started_ms: now,
                ..AttemptFacts::default()
            },
        };
        Ok(match ledger.create(&entry).await? {
            Ok(_) => {
                let attempt = Attempt::new(ledger, request_id, 1);
                if entry.task.is_none() {
                    attempt.keep_renewing();
                }
                Some(attempt)
            }
            Err(existing) => {
                tracing::warn!(request_id = %request_id, state = ?existing.entry.state, "the ledger already holds this invocation; the run keeps its message");
                None
            }
        })
    }

    /// Marks the attempt running (with this task, when ECS says which), unless the
    /// invocation ended or moved on.
    pub(crate) async fn start(&self) -> Go {
        let task = own_task_arn().await;
        let mut verdict = Go::Run;
        let result = self
            .ledger
            .modify(&self.request_id, |entry| {
                if entry.state.ended() || entry.attempt != self.number {
                    verdict = Go::Superseded(format!(
                        "the ledger has {} at attempt {} ({:?}); this task runs attempt {}",
                        entry.request_id, entry.attempt, entry.state, self.number
                    ));
                    return false;
                }
                if let (Some(mine), Some(theirs)) = (&task, &entry.task) {
                    if mine != theirs {
                        verdict = Go::Superseded(format!("attempt {} belongs to task {theirs}", self.number));
                        return false;
                    }
                }
                entry.state = State::Running;
                entry.current.started_ms = now_ms();
                entry.task = task.clone().or(entry.task.take());
                entry.lease_until_ms = run_lease(entry.task.as_deref());
                true
            })
            .await;
        if let (Ok(Some(entry)), Go::Run) = (&result, &verdict) {
            if entry.failed_ms > 0 {
                let waited = entry.current.started_ms.saturating_sub(entry.failed_ms);
                metrics::emit(&entry.function, &[(Metric::TimeToStart, waited as f64)]);
            }
        }
        match result {
            Ok(Some(entry)) if verdict == Go::Run && entry.task.is_none() => self.keep_renewing(),
            Ok(_) => {}
            // The run goes ahead: the worst case is a relaunch after it ends, not a loss.
            Err(e) => tracing::warn!(error = %e, "cannot mark the attempt running in the ledger"),
        }
        verdict
    }

    /// Records where the function's log lines of this attempt go, in the background (the
    /// run does not wait for it; a failure only costs `immortal logs` this attempt).
    pub(crate) fn logs_at(&self, group: &str, stream: &str) {
        let (ledger, request_id, number) = (self.ledger.clone(), self.request_id.clone(), self.number);
        let (group, stream) = (group.to_owned(), stream.to_owned());
        tokio::spawn(async move {
            let result = ledger
                .modify(&request_id, |entry| {
                    if entry.attempt != number || entry.current.log_stream.as_deref() == Some(&stream) {
                        return false;
                    }
                    entry.current.log_group = Some(group.clone());
                    entry.current.log_stream = Some(stream.clone());
                    true
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(request_id = %request_id, error = %e, "cannot record where the attempt's logs go");
            }
        });
    }

    /// Renews the lease of this running attempt (which has no task the sweep could ask
    /// ECS about) every [`RUN_LEASE_RENEW_MS`] until it ends or moves on.
    fn keep_renewing(&self) {
        let (ledger, request_id, number) = (self.ledger.clone(), self.request_id.clone(), self.number);
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(RUN_LEASE_RENEW_MS)).await;
                let mut ours = false;
                let result = ledger
                    .modify(&request_id, |entry| {
                        ours = entry.attempt == number && entry.state == State::Running && entry.task.is_none();
                        if ours {
                            entry.lease_until_ms = now_ms() + RUN_LEASE_MS;
                        }
                        ours
                    })
                    .await;
                match result {
                    Ok(_) if !ours => return,
                    Ok(_) => {}
                    // The next renewal may succeed; five must fail before the lease lapses.
                    Err(e) => tracing::warn!(request_id = %request_id, error = %e, "cannot renew the attempt's lease"),
                }
            }
        });
        if let Some(earlier) = self.renewal.lock().expect("renewal").replace(renewal) {
            earlier.abort();
        }
    }

    fn stop_renewing(&self) {
        if let Some(renewal) = self.renewal.lock().expect("renewal").take() {
            renewal.abort();
        }
    }

    /// Settles the attempt after its run, by the one rule of [`settlement`]; an end
    /// that leaves it running changes nothing.
    pub(crate) async fn settle(&self, end: End<'_>) {
        if let Some((state, reason)) = settlement(&end) {
            self.end(state, reason).await;
        }
    }

    /// Records how the attempt ended: `Succeeded`, `Failed` or `Interrupted` (then
    /// relaunched), with `reason`.
    pub(crate) async fn end(&self, state: State, reason: Option<String>) {
        self.stop_renewing();
        let result = self
            .ledger
            .modify(&self.request_id, |entry| {
                if entry.state.ended() || entry.attempt != self.number {
                    return false;
                }
                entry.state = state;
                entry.reason = reason.clone();
                entry.current.ended_ms = now_ms();
                true
            })
            .await;
        match result {
            Ok(_) => {
                tracing::info!(request_id = %self.request_id, attempt = self.number, state = ?state, "the ledger records how the attempt ended")
            }
            // The reconciler relaunches what the ledger does not show ended: at least once.
            Err(e) => tracing::error!(error = %e, state = ?state, "cannot record the attempt's end in the ledger"),
        }
    }
}

/// This task's ARN, from ECS's task metadata endpoint (none outside ECS), asked once
/// per process: a task's ARN does not change, and a drain worker starts many attempts.
/// An endpoint that did not answer is asked again next time.
async fn own_task_arn() -> Option<String> {
    static ARN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if let Some(known) = ARN.get() {
        return known.clone();
    }
    let asked = ask_task_arn().await;
    if asked.is_some() || std::env::var_os("ECS_CONTAINER_METADATA_URI_V4").is_none() {
        let _ = ARN.set(asked.clone());
    }
    asked
}

async fn ask_task_arn() -> Option<String> {
    let base = std::env::var("ECS_CONTAINER_METADATA_URI_V4").ok()?;
    let text = reqwest::Client::new()
        .get(format!("{base}/task"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    task_arn(&text)
}

/// The task's ARN in a task metadata v4 `/task` response.
fn task_arn(response: &str) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(response).ok()?;
    body["TaskARN"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_task_arn_is_read_from_awss_own_sample_response() {
        // AWS's published example, verbatim (see fixtures/README.md).
        let sample = include_str!("../../fixtures/aws-task-metadata-v4-task.json");
        assert_eq!(
            super::task_arn(sample).as_deref(),
            Some("arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c")
        );
        assert_eq!(super::task_arn("{}"), None);
        assert_eq!(super::task_arn("not json"), None);
    }
}
