//! The periodic sweep: what the stop events missed. Every invocation not ended has a live
//! marker; the sweep lists them (one call per 1,000), reads their entries a few at a
//! time, asks ECS about their tasks a hundred at a time (DescribeTasks' most), and
//! reconciles what it finds: a stopped or vanished task's attempt is relaunched (or
//! reported), a launch whose starter vanished is finished, the marker of an ended
//! invocation and a marker whose entry was never written are removed.
//!
//! It starts where the last sweep stopped (a cursor in the ledger) and stops before the
//! Lambda's deadline, so that with more live invocations than one run can look at,
//! every one is still reached, in turn. Sweeps at once are safe: every change is a
//! conditional write of the ledger, and a launch's token makes a repeated RunTask the
//! same task.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use immortal_handler_sdk::aws::CallFailed;
use immortal_overflow::ledger::{now_ms, LiveMarker, State, Versioned};
use serde::Serialize;
use tokio::time::Instant;

use crate::error::ForwardError;
use crate::forward::{Forwarder, LAUNCH_LEASE_MS};
use crate::reconcile::{log, stop_reason, Reconciled};

/// Entries read at once.
pub const READS_AT_ONCE: usize = 32;
/// Relaunches (and resumed launches) at once.
pub const RELAUNCHES_AT_ONCE: usize = 8;
/// Entries per batch: DescribeTasks' most tasks per call.
pub const BATCH: usize = 100;
/// What a batch may still need when the deadline nears: none is started with less left.
pub const MARGIN: Duration = Duration::from_secs(10);

/// What one sweep did.
#[derive(Debug, Default, Serialize)]
pub struct Swept {
    /// What it did about each invocation it acted on (nothing for those left alone).
    pub outcomes: Vec<Reconciled>,
    /// Live markers listed.
    pub live: usize,
    /// Of those, how many it looked at before its deadline.
    pub looked_at: usize,
    /// Markers removed whose entry was never written.
    pub orphans: usize,
    /// Whether it looked at every live marker.
    pub complete: bool,
}

/// What a batch found to do.
enum Action {
    /// Finish a launch nobody holds.
    Resume(Versioned),
    /// The attempt's task stopped or is gone, or its runner stopped renewing its lease
    /// (or recorded an interruption), with no task to ask about: why.
    Stopped {
        held: Versioned,
        task: Option<String>,
        reason: String,
    },
}

impl Forwarder {
    /// Sweeps the live invocations, from where the last sweep stopped, until done or
    /// `deadline` (less [`MARGIN`]) is near.
    pub async fn sweep(&self, deadline: Option<Instant>) -> Swept {
        self.sweep_as_of(deadline, now_ms()).await
    }

    /// [`Forwarder::sweep`], judging markers' and leases' ages as of `now_ms` (ms since
    /// the epoch): what a sweep that much later would do.
    pub async fn sweep_as_of(&self, deadline: Option<Instant>, now_ms: u64) -> Swept {
        let mut swept = Swept::default();
        let markers = match self.ledger.live_markers().await {
            Ok(markers) => markers,
            Err(e) => {
                tracing::error!(error = %e, "the sweep cannot list the ledger");
                return swept;
            }
        };
        swept.live = markers.len();
        let cursor = self.ledger.sweep_cursor().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the sweep's cursor is unreadable; starting from the first invocation");
            None
        });
        let order = rotate(markers, cursor.as_deref());
        let mut last = None;
        for batch in order.chunks(BATCH) {
            if deadline.is_some_and(|d| Instant::now() + MARGIN >= d) {
                break;
            }
            self.sweep_batch(batch, now_ms, &mut swept).await;
            swept.looked_at += batch.len();
            last = batch.last().map(|m| m.request_id.clone());
        }
        swept.complete = swept.looked_at == swept.live;
        if let Some(last) = last {
            if let Err(e) = self.ledger.set_sweep_cursor(&last).await {
                tracing::warn!(error = %e, "the sweep's cursor was not saved; the next starts elsewhere");
            }
        }
        tracing::info!(
            live = swept.live,
            looked_at = swept.looked_at,
            acted_on = swept.outcomes.len(),
            orphans = swept.orphans,
            complete = swept.complete,
            "swept"
        );
        swept
    }

    async fn sweep_batch(&self, batch: &[LiveMarker], now_ms: u64, swept: &mut Swept) {
        let read: Vec<_> = stream::iter(batch)
            .map(|marker| async move { (marker, self.ledger.read(&marker.request_id).await) })
            .buffer_unordered(READS_AT_ONCE)
            .collect()
            .await;
        let mut actions = Vec::new();
        let mut watched = Vec::new();
        for (marker, result) in read {
            match result {
                Err(e) => failed(swept, &marker.request_id, &e.into()),
                Ok(None) => {
                    // A marker whose entry's write failed (not a conflict): once older
                    // than a launch's lease, nobody will write that entry any more.
                    if orphaned(marker, now_ms) {
                        match self.ledger.forget(&marker.request_id).await {
                            Ok(()) => swept.orphans += 1,
                            Err(e) => failed(swept, &marker.request_id, &e.into()),
                        }
                    }
                }
                Ok(Some(held)) if held.entry.state.ended() => {
                    // A marker a losing create left behind.
                    if let Err(e) = self.ledger.forget(&marker.request_id).await {
                        failed(swept, &marker.request_id, &e.into());
                    }
                }
                Ok(Some(held)) => match (held.entry.state, held.entry.task.clone()) {
                    (State::Launching, _) => actions.push(Action::Resume(held)),
                    (State::Running | State::Interrupted, Some(task)) => watched.push((held, task)),
                    (state, None) => actions.extend(unwatched(state, held, now_ms)),
                    _ => {}
                },
            }
        }
        if !watched.is_empty() {
            let tasks: Vec<String> = watched.iter().map(|(_, task)| task.clone()).collect();
            match self.stopped_tasks(&tasks).await {
                Ok(stopped) => actions.extend(watched.into_iter().filter_map(|(held, task)| {
                    let reason = stopped.get(&task)?.clone();
                    Some(Action::Stopped {
                        held,
                        task: Some(task),
                        reason,
                    })
                })),
                Err(e) => {
                    for (held, _) in &watched {
                        failed(swept, &held.entry.request_id, &e);
                    }
                }
            }
        }
        let done: Vec<_> = stream::iter(actions)
            .map(|action| self.act(action))
            .buffer_unordered(RELAUNCHES_AT_ONCE)
            .collect()
            .await;
        for (request_id, result) in done {
            match result {
                Ok(Some(outcome)) => {
                    log(&outcome, &request_id);
                    swept.outcomes.push(outcome);
                }
                Ok(None) => {}
                Err(e) => failed(swept, &request_id, &e),
            }
        }
    }

    async fn act(&self, action: Action) -> (String, Result<Option<Reconciled>, ForwardError>) {
        match action {
            Action::Resume(mut held) => {
                let request_id = held.entry.request_id.clone();
                (request_id, self.resume_launch(&mut held).await)
            }
            Action::Stopped { held, task, reason } => {
                // The entry as this sweep read it: a write over a newer one conflicts.
                let (request_id, attempt) = (held.entry.request_id.clone(), held.entry.attempt);
                let result = self.reconcile_held(held, attempt, task.as_deref(), &reason).await;
                (request_id, result.map(Some))
            }
        }
    }

    /// Which of `tasks` (at most [`BATCH`]) stopped or are gone, and why: one
    /// DescribeTasks call.
    async fn stopped_tasks(&self, tasks: &[String]) -> Result<HashMap<String, String>, ForwardError> {
        let out = self
            .ecs
            .describe_tasks()
            .cluster(&self.config.cluster)
            .set_tasks(Some(tasks.to_vec()))
            .send()
            .await
            .map_err(|e| CallFailed::new(format!("DescribeTasks({} tasks)", tasks.len()), &e))?;
        let mut stopped = HashMap::new();
        let mut found = HashSet::new();
        for task in out.tasks() {
            let Some(arn) = task.task_arn() else { continue };
            found.insert(arn.to_owned());
            if task.last_status() == Some("STOPPED") {
                let reason = stop_reason(
                    task.stop_code().map(|c| c.as_str()),
                    task.stopped_reason(),
                    task.containers()
                        .iter()
                        .map(|c| (c.name(), c.exit_code().map(i64::from), c.reason())),
                );
                stopped.insert(arn.to_owned(), format!("{reason} (found by the sweep)"));
            }
        }
        // Not found: gone, when ECS says it is missing (or says nothing of it); any other
        // failure is no news.
        let unclear: HashSet<&str> = out
            .failures()
            .iter()
            .filter(|f| f.reason() != Some("MISSING"))
            .filter_map(|f| f.arn())
            .collect();
        for task in tasks {
            if !found.contains(task) && !unclear.contains(task.as_str()) {
                stopped.insert(
                    task.clone(),
                    "the task is gone from ECS (found by the sweep)".to_owned(),
                );
            }
        }
        Ok(stopped)
    }
}

/// What to do about an attempt with no task (the sweep cannot ask ECS about it): one its
/// runner marked interrupted is relaunched; one whose runner stopped renewing its lease
/// (the worker is gone) too. (A lease of 0 was never taken: an entry of an earlier
/// version, left to its events.)
fn unwatched(state: State, held: Versioned, now_ms: u64) -> Option<Action> {
    let entry = &held.entry;
    let reason = match state {
        State::Interrupted => "the attempt was interrupted (recorded by its runner; it had no task)".to_owned(),
        State::Running if entry.lease_until_ms != 0 && entry.lease_until_ms < now_ms => format!(
            "the runner of attempt {} (with no task) stopped renewing its lease: its worker is gone (found by the sweep)",
            entry.attempt
        ),
        _ => return None,
    };
    Some(Action::Stopped {
        held,
        task: None,
        reason,
    })
}

fn failed(swept: &mut Swept, request_id: &str, error: &ForwardError) {
    let outcome = Reconciled::Failed {
        reason: error.to_string(),
    };
    log(&outcome, request_id);
    swept.outcomes.push(outcome);
}

/// Whether a marker with no entry is an orphan: older than a launch's lease, so that
/// nobody is still about to write its entry (a create writes both at once).
pub fn orphaned(marker: &LiveMarker, now_ms: u64) -> bool {
    now_ms.saturating_sub(marker.marked_ms) > LAUNCH_LEASE_MS
}

/// The markers in key order, starting after `cursor` and wrapping around.
pub fn rotate(mut markers: Vec<LiveMarker>, cursor: Option<&str>) -> Vec<LiveMarker> {
    markers.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    if let Some(cursor) = cursor {
        let after = markers.partition_point(|m| m.request_id.as_str() <= cursor);
        markers.rotate_left(after);
    }
    markers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markers(ids: &[&str]) -> Vec<LiveMarker> {
        ids.iter()
            .map(|id| LiveMarker {
                request_id: (*id).to_owned(),
                marked_ms: 0,
            })
            .collect()
    }

    fn ids(markers: &[LiveMarker]) -> Vec<&str> {
        markers.iter().map(|m| m.request_id.as_str()).collect()
    }

    #[test]
    fn a_marker_without_an_entry_is_an_orphan_only_once_no_launch_can_still_write_it() {
        let marker = LiveMarker {
            request_id: "r".into(),
            marked_ms: 1_000_000,
        };
        assert!(
            !orphaned(&marker, 1_000_000 + LAUNCH_LEASE_MS),
            "a launch may still be writing it"
        );
        assert!(orphaned(&marker, 1_000_001 + LAUNCH_LEASE_MS));
        assert!(!orphaned(&marker, 0), "a clock behind the marker");
    }

    #[test]
    fn a_sweep_starts_after_the_last_ones_cursor_and_wraps_around() {
        let all = markers(&["d", "a", "c", "b"]);
        assert_eq!(ids(&rotate(all.clone(), None)), ["a", "b", "c", "d"]);
        assert_eq!(ids(&rotate(all.clone(), Some("b"))), ["c", "d", "a", "b"]);
        assert_eq!(
            ids(&rotate(all.clone(), Some("bb"))),
            ["c", "d", "a", "b"],
            "a cursor that ended since"
        );
        assert_eq!(ids(&rotate(all.clone(), Some("d"))), ["a", "b", "c", "d"]);
        assert_eq!(ids(&rotate(all, Some("z"))), ["a", "b", "c", "d"]);
    }
}
