//! What a person does to one invocation (`immortal stop`, `immortal replay`), with the
//! ledger, tokens and launches the reconciler uses: a stopped invocation is never
//! relaunched, and a replayed one runs as exactly one new attempt.

use immortal_handler_sdk::aws::CallFailed;
use immortal_handler_sdk::container::STOPPED_ERROR_TYPE;
use immortal_handler_sdk::FunctionRef;
use immortal_overflow::ledger::{now_ms, State};
use serde::Serialize;

use crate::error::ForwardError;
use crate::forward::{Forwarder, Unrunnable};
use crate::reconcile::Reconciled;

/// Why a person's request could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// The ledger has no such invocation.
    #[error("the ledger has no invocation {0}: `immortal ls` lists the ones it has")]
    Unknown(String),
    /// It cannot be stopped: it ended already.
    #[error("{request_id} ended already ({state}); nothing is running to stop")]
    Ended {
        /// The invocation.
        request_id: String,
        /// How it ended.
        state: &'static str,
    },
    /// It cannot be replayed: it has not ended (or succeeded, without `--force`).
    #[error("{request_id} is {state}: {why}")]
    NotReplayable {
        /// The invocation.
        request_id: String,
        /// Where it stands.
        state: &'static str,
        /// What to do instead.
        why: &'static str,
    },
    /// Nothing here can run it again.
    #[error("{request_id} cannot run again: {why}")]
    Unrunnable {
        /// The invocation.
        request_id: String,
        /// Why.
        why: String,
    },
    /// AWS or the ledger failed.
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

impl From<immortal_overflow::ledger::LedgerError> for SteerError {
    fn from(e: immortal_overflow::ledger::LedgerError) -> Self {
        SteerError::Forward(e.into())
    }
}

/// What `stop` did.
#[derive(Debug, Clone, Serialize)]
pub struct Stopped {
    /// The invocation.
    pub request_id: String,
    /// The attempt it stopped.
    pub attempt: u32,
    /// The task it asked ECS to stop, if the attempt had one.
    pub task: Option<String>,
    /// Where the `Immortal.Stopped` failure record went (none: no failure destination).
    pub record_sent_to: Option<String>,
}

impl Forwarder {
    /// Stops `request_id`: ends it in the ledger first (so neither the task's STOPPED
    /// event nor the sweep relaunches it), then stops its task, then sends its failure
    /// record. `by` says who, in the ledger and the task's stop reason.
    pub async fn stop(&self, request_id: &str, by: &str) -> Result<Stopped, SteerError> {
        let reason = format!("stopped by {by} (immortal stop)");
        let mut ended_before = None;
        let entry = self
            .ledger
            .modify(request_id, |entry| {
                if entry.state.ended() {
                    ended_before = Some(entry.state);
                    return false;
                }
                entry.state = State::Stopped;
                entry.reason = Some(reason.clone());
                entry.current.ended_ms = now_ms();
                true
            })
            .await?
            .ok_or_else(|| SteerError::Unknown(request_id.to_owned()))?;
        if let Some(state) = ended_before {
            return Err(SteerError::Ended {
                request_id: request_id.to_owned(),
                state: state.name(),
            });
        }
        if let Some(task) = &entry.task {
            // ECS keeps at most 1,024 characters of a stop reason.
            let result = self
                .ecs
                .stop_task()
                .cluster(&self.config.cluster)
                .task(task)
                .reason(reason.chars().take(1024).collect::<String>())
                .send()
                .await;
            if let Err(e) = result {
                // Ended in the ledger, the task's own end changes nothing any more.
                return Err(ForwardError::Aws(CallFailed::new(format!("StopTask({task})"), &e)).into());
            }
        }
        let envelope = self.envelope(&entry.envelope, &entry.digest).await.ok();
        let message = format!("RequestId: {request_id} Error: {reason}");
        let record_sent_to = self
            .report_failure(&entry, envelope.as_ref(), STOPPED_ERROR_TYPE, message, &reason)
            .await?;
        tracing::warn!(request_id, attempt = entry.attempt, task = ?entry.task, "stopped; nothing relaunches it");
        Ok(Stopped {
            request_id: request_id.to_owned(),
            attempt: entry.attempt,
            task: entry.task,
            record_sent_to,
        })
    }

    /// Runs an ended invocation again as its next attempt, from its stored envelope, as
    /// the reconciler relaunches one (the same request id, event and context, one
    /// attempt on, its own client token), with a fresh count of attempts. A succeeded one
    /// only with `force`; a live one never.
    pub async fn replay(&self, request_id: &str, force: bool) -> Result<Reconciled, SteerError> {
        let mut held = self
            .ledger
            .read(request_id)
            .await?
            .ok_or_else(|| SteerError::Unknown(request_id.to_owned()))?;
        let state = held.entry.state;
        let refused = |why| SteerError::NotReplayable {
            request_id: request_id.to_owned(),
            state: state.name(),
            why,
        };
        if !state.ended() {
            return Err(refused(
                "it has not ended; `immortal stop` it first to run it again from the start",
            ));
        }
        if state == State::Succeeded && !force {
            return Err(refused("it succeeded; --force runs it again anyway"));
        }
        let unrunnable = |why: String| SteerError::Unrunnable {
            request_id: request_id.to_owned(),
            why,
        };
        let envelope = self
            .envelope(&held.entry.envelope, &held.entry.digest)
            .await
            .map_err(|e| unrunnable(e.to_string()))?;
        let function = FunctionRef::parse(&held.entry.function).map_err(|e| unrunnable(e.to_string()))?;
        let (task_definition, size) = match self.task_definition(&function).await {
            Ok(chosen) => chosen,
            Err(Unrunnable::Retry(e)) => return Err(e.into()),
            Err(Unrunnable::Never(why)) => return Err(unrunnable(why)),
        };
        // Live again before the entry says so, so that the sweep finds it whatever happens
        // after the update.
        self.ledger.revive(request_id).await?;
        let ended = held.entry.reason.clone().unwrap_or_else(|| state.name().to_owned());
        // A conflict: someone else replayed it first.
        let replayed = self
            .next_attempt(
                &mut held,
                envelope,
                &function,
                (&task_definition, size),
                format!("{ended}; replayed (immortal replay)"),
                true,
            )
            .await?;
        tracing::warn!(request_id, outcome = ?replayed, "replayed");
        Ok(replayed)
    }
}
