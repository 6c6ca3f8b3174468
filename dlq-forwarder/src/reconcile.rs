//! The reconciler: after ECS accepted a task, the ledger holds the invocation, and this
//! makes sure every attempt ends in an outcome. An ECS "Task State Change" event
//! (STOPPED) for a task whose run reported no end (it never started, it was
//! interrupted, it was killed) relaunches the invocation as its next attempt, up to
//! `IMMORTAL_MAX_ATTEMPTS`, then reports it `RetriesExhausted` with the reason. The
//! periodic sweep ([`crate::sweep`]) catches what the events missed.

use immortal_handler_sdk::container::{ATTEMPTS_EXHAUSTED_ERROR_TYPE, ENVELOPE_URL_VAR};
use immortal_handler_sdk::destination::{DestinationRecord, OutcomeFacts};
use immortal_handler_sdk::envelope::S3Location;
use immortal_handler_sdk::function_ref::LATEST;
use immortal_handler_sdk::{Envelope, ErrorDocument, FunctionRef};
use immortal_overflow::carrier::CarrierError;
use immortal_overflow::ledger::{envelope_key_parts, now_ms, State, Versioned};
use immortal_overflow::metrics::{self, Metric};
use immortal_overflow::publisher::timestamp_now;
use immortal_overflow::Carrier;
use serde::Serialize;
use serde_json::Value;

use crate::error::ForwardError;
use crate::forward::{launched_facts, Forwarder, Unrunnable, LAUNCH_LEASE_MS};
use crate::size::TaskSize;

/// A task that stopped, as ECS tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedTask {
    /// Its ARN.
    pub task_arn: String,
    /// The envelope it was started with (from its overrides).
    pub envelope: S3Location,
    /// Why it stopped: stop code, stopped reason, the container's exit code and reason.
    pub reason: String,
}

impl StoppedTask {
    /// Recognises an EventBridge "ECS Task State Change" event for a stopped runner task
    /// (`None` for anything else, and for tasks not started with an envelope).
    pub fn from_event(event: &Value) -> Option<StoppedTask> {
        if event["source"] != "aws.ecs" || event["detail-type"] != "ECS Task State Change" {
            return None;
        }
        let detail = &event["detail"];
        if detail["lastStatus"] != "STOPPED" {
            return None;
        }
        Self::from_task(detail)
    }

    /// The same from a DescribeTasks task (as JSON, camelCase as ECS writes it).
    pub fn from_task(task: &Value) -> Option<StoppedTask> {
        let envelope = task["overrides"]["containerOverrides"]
            .as_array()?
            .iter()
            .flat_map(|c| c["environment"].as_array().into_iter().flatten())
            .find(|kv| kv["name"] == ENVELOPE_URL_VAR)?["value"]
            .as_str()?;
        let reason = stop_reason(
            task["stopCode"].as_str(),
            task["stoppedReason"].as_str(),
            task["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| (c["name"].as_str(), c["exitCode"].as_i64(), c["reason"].as_str())),
        );
        Some(StoppedTask {
            task_arn: task["taskArn"].as_str()?.to_owned(),
            envelope: S3Location::parse(envelope).ok()?,
            reason,
        })
    }
}

/// How a stopped task ended, in one line: ECS's stop code and reason, then each
/// container's exit code (or that it did not run) and reason.
pub(crate) fn stop_reason<'a>(
    stop_code: Option<&str>,
    stopped_reason: Option<&str>,
    containers: impl IntoIterator<Item = (Option<&'a str>, Option<i64>, Option<&'a str>)>,
) -> String {
    let mut reason = format!(
        "stop code {}: {}",
        stop_code.unwrap_or("unknown"),
        stopped_reason.unwrap_or("no reason given")
    );
    for (name, exit_code, why) in containers {
        let name = name.unwrap_or("?");
        match exit_code {
            Some(code) => reason.push_str(&format!("; container {name} exit code {code}")),
            None => reason.push_str(&format!("; container {name} did not run")),
        }
        if let Some(why) = why {
            reason.push_str(&format!(" ({why})"));
        }
    }
    reason
}

/// What the reconciler did about one stopped task or ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Reconciled {
    /// Nothing to do: the invocation ended, or the event is about an older attempt.
    Nothing {
        /// Why.
        why: String,
    },
    /// Started again, as this attempt.
    Relaunched {
        /// The request id.
        request_id: String,
        /// The new attempt.
        attempt: u32,
        /// Its task.
        task_arn: String,
    },
    /// Out of attempts: reported `RetriesExhausted`.
    Exhausted {
        /// The request id.
        request_id: String,
        /// Why the last attempt ended.
        reason: String,
    },
    /// Could not act now; the sweep tries again.
    Failed {
        /// Why.
        reason: String,
    },
}

impl Forwarder {
    /// Acts on a stopped task.
    pub async fn reconcile(&self, stopped: &StoppedTask) -> Reconciled {
        let Some((request_id, attempt)) = envelope_key_parts(&stopped.envelope.key) else {
            return nothing(format!("{} names no invocation attempt", stopped.envelope));
        };
        let result = self
            .reconcile_entry(&request_id, attempt, Some(&stopped.task_arn), &stopped.reason)
            .await;
        let outcome = result.unwrap_or_else(|e| Reconciled::Failed { reason: e.to_string() });
        log(&outcome, &request_id);
        outcome
    }

    async fn reconcile_entry(
        &self,
        request_id: &str,
        attempt: u32,
        task: Option<&str>,
        reason: &str,
    ) -> Result<Reconciled, ForwardError> {
        let Some(held) = self.ledger.read(request_id).await? else {
            return Ok(nothing(format!("{request_id} has no ledger entry")));
        };
        self.reconcile_held(held, attempt, task, reason).await
    }

    /// Acts on the entry as read (`held`) for the end of `attempt` (in `task`, when
    /// known): relaunched, reported, or nothing when the entry moved on. A write that
    /// finds it changed since is a conflict: the caller tries again later.
    pub(crate) async fn reconcile_held(
        &self,
        mut held: Versioned,
        attempt: u32,
        task: Option<&str>,
        reason: &str,
    ) -> Result<Reconciled, ForwardError> {
        let request_id = held.entry.request_id.clone();
        let request_id = request_id.as_str();
        let entry = &held.entry;
        if entry.state.ended() {
            return Ok(nothing(format!("{request_id} ended ({:?})", entry.state)));
        }
        if entry.state == State::Launching {
            // A launch under way, or one that stalled (its RunTask failed, its starter
            // vanished): finished now, whichever attempt the event was about.
            return self.resume_launch(&mut held).await.map(|done| {
                done.unwrap_or_else(|| {
                    nothing(format!(
                        "attempt {} of {request_id} is being started",
                        held.entry.attempt
                    ))
                })
            });
        }
        // The attempt's own task (an entry that never learnt its task takes the event's).
        let other_task = matches!((task, entry.task.as_deref()), (Some(a), Some(b)) if a != b);
        if entry.attempt != attempt || other_task {
            return Ok(nothing(format!(
                "the stopped task ran attempt {attempt}; {request_id} is at attempt {}",
                entry.attempt
            )));
        }
        let reason = match &entry.reason {
            // The runner said why it stopped (interrupted); ECS says how.
            Some(own) => format!("{own}; {reason}"),
            None => reason.to_owned(),
        };
        let envelope = match self.envelope(&entry.envelope, &entry.digest).await {
            Ok(envelope) => envelope,
            // Not the envelope the invocation was launched with: nothing may run it, and
            // its event cannot be trusted into a record either.
            Err(e @ CarrierError::Digest { .. }) => {
                return self.exhaust(&mut held, None, &format!("{reason}; {e}")).await;
            }
            Err(e) => return Err(e.into()),
        };
        let function = FunctionRef::parse(&entry.function).map_err(|source| ForwardError::Entry {
            what: "function",
            source,
        })?;
        if entry.counted_attempts() >= self.config.max_attempts {
            return self.exhaust(&mut held, Some(&envelope), &reason).await;
        }
        let (task_definition, size) = match self.task_definition(&function).await {
            Ok(chosen) => chosen,
            Err(Unrunnable::Retry(why)) => return Err(why),
            Err(Unrunnable::Never(why)) => {
                return self
                    .exhaust(&mut held, Some(&envelope), &format!("{reason}; {why}"))
                    .await
            }
        };
        let relaunched = self
            .next_attempt(&mut held, envelope, &function, (&task_definition, size), reason, false)
            .await?;
        metrics::count(&held.entry.function, Metric::Interrupted);
        Ok(relaunched)
    }

    /// Starts the invocation's next attempt from `envelope` (the same request id, event
    /// and context, `overflow.attempt` one on): the envelope stored, the ended attempt
    /// (`why` it ended) moved into the history, the entry written over the version read
    /// (a conflict: someone else moved it on first), then launched with its own token.
    /// `fresh_count`: the attempts are counted against the limit from this one (a replay).
    pub(crate) async fn next_attempt(
        &self,
        held: &mut Versioned,
        envelope: Envelope,
        function: &FunctionRef,
        (task_definition, size): (&str, TaskSize),
        why: String,
        fresh_count: bool,
    ) -> Result<Reconciled, ForwardError> {
        let request_id = held.entry.request_id.clone();
        let mut next = envelope;
        if let Some(overflow) = next.context.overflow.as_mut() {
            overflow.attempt += 1;
        }
        let number = held.entry.attempt + 1;
        let (at, digest) = self.ledger.store_attempt(&request_id, number, &next).await?;
        let now = now_ms();
        let entry = &mut held.entry;
        entry.close_attempt(why, now);
        entry.current = launched_facts(now, size);
        entry.attempt = number;
        if fresh_count {
            entry.counted_from = number;
        }
        entry.state = State::Launching;
        entry.envelope = at.to_string();
        entry.digest = digest;
        entry.on_demand = false;
        entry.reason = None;
        entry.lease_until_ms = now + LAUNCH_LEASE_MS;
        held.etag = self.ledger.update(&mut held.entry, &held.etag).await?;
        let task_arn = self.launch(held, function, task_definition, size).await?;
        Ok(Reconciled::Relaunched {
            request_id,
            attempt: number,
            task_arn,
        })
    }

    /// Out of attempts: the failure record, with the reason, then the ledger says so.
    /// Without a trustworthy `envelope` the record carries no request payload.
    async fn exhaust(
        &self,
        held: &mut Versioned,
        envelope: Option<&Envelope>,
        reason: &str,
    ) -> Result<Reconciled, ForwardError> {
        let entry = &held.entry;
        let message = format!(
            "RequestId: {} Error: the invocation's {} container attempts ended without an outcome; the last: {reason}",
            entry.request_id, entry.attempt
        );
        self.report_failure(entry, envelope, ATTEMPTS_EXHAUSTED_ERROR_TYPE, message, reason)
            .await?;
        held.entry.state = State::Exhausted;
        held.entry.reason = Some(reason.to_owned());
        if held.entry.current.ended_ms == 0 {
            held.entry.current.ended_ms = now_ms();
        }
        held.etag = self.ledger.update(&mut held.entry, &held.etag).await?;
        metrics::count(&held.entry.function, Metric::Exhausted);
        Ok(Reconciled::Exhausted {
            request_id: held.entry.request_id.clone(),
            reason: reason.to_owned(),
        })
    }

    /// Sends the invocation's failure record (`error_type`, `message`) to the failure
    /// destination, as Lambda's `RetriesExhausted` record of an asynchronous invocation.
    /// Without a trustworthy `envelope` the record carries no request payload; without
    /// a destination the envelope's location is logged (never the event). Where it
    /// went, if anywhere.
    pub(crate) async fn report_failure(
        &self,
        entry: &immortal_overflow::ledger::Entry,
        envelope: Option<&Envelope>,
        error_type: &str,
        message: String,
        reason: &str,
    ) -> Result<Option<String>, ForwardError> {
        let error = ErrorDocument::new(error_type, message).to_json();
        let null = serde_json::value::RawValue::from_string("null".into()).expect("null is JSON");
        let context = envelope.map(|e| &e.context);
        let arn = context
            .and_then(|c| c.invoked_function_arn.clone())
            .unwrap_or_else(|| entry.function.clone());
        let record = DestinationRecord::outcome(OutcomeFacts {
            request_id: &entry.request_id,
            function_arn: &arn,
            executed_version: context.and_then(|c| c.function_version.as_deref()).unwrap_or(LATEST),
            invoke_count: context
                .and_then(|c| c.overflow.as_ref())
                .map(|o| o.attempt)
                .unwrap_or(entry.attempt),
            request_payload: envelope.map(|e| &*e.event).unwrap_or(&null),
            success: false,
            response: error.as_bytes(),
            timestamp: timestamp_now(),
            marker: ("forwarder", env!("CARGO_PKG_VERSION")),
        });
        match &self.config.overflow.on_failure {
            Some(target) => {
                self.publisher.publish(target, &record).await?;
                Ok(Some(target.to_string()))
            }
            // The record holds the event: never in the logs. The envelope stays in the
            // payload bucket (under the entry's `envelope`) until the lifecycle rule.
            None => {
                tracing::error!(
                    request_id = %entry.request_id,
                    function = %arn,
                    envelope = %entry.envelope,
                    error_type,
                    reason,
                    "no failure destination is set (IMMORTAL_ON_FAILURE): the invocation's envelope stays in the payload bucket"
                );
                Ok(None)
            }
        }
    }

    /// The attempt's envelope, checked against its digest.
    pub(crate) async fn envelope(&self, location: &str, digest: &str) -> Result<Envelope, CarrierError> {
        let at = S3Location::parse(location).map_err(CarrierError::Location)?;
        let carrier = Carrier::Stored {
            at,
            digest: Some(digest.to_owned()),
        };
        carrier.open(|| async { self.ledger.s3().clone() }).await
    }

    /// Finishes the launch of the entry's current attempt when nobody holds it (its lease
    /// ran out or was released): the same attempt, the same client token, so a launch
    /// ECS had in fact accepted answers with its task instead of starting another.
    /// `None` while another holds it.
    pub(crate) async fn resume_launch(&self, held: &mut Versioned) -> Result<Option<Reconciled>, ForwardError> {
        if held.entry.lease_until_ms > now_ms() {
            return Ok(None);
        }
        let function = FunctionRef::parse(&held.entry.function).map_err(|source| ForwardError::Entry {
            what: "function",
            source,
        })?;
        let (task_definition, size) = match self.task_definition(&function).await {
            Ok(chosen) => chosen,
            Err(Unrunnable::Retry(why)) => return Err(why),
            // As after a stop: a function that can never run here ends with a record,
            // not a launch retried at every sweep.
            Err(Unrunnable::Never(why)) => {
                let envelope = self.envelope(&held.entry.envelope, &held.entry.digest).await.ok();
                return self.exhaust(held, envelope.as_ref(), &why).await.map(Some);
            }
        };
        let task_arn = self.take_over(held, &function, &task_definition, size).await?;
        Ok(Some(Reconciled::Relaunched {
            request_id: held.entry.request_id.clone(),
            attempt: held.entry.attempt,
            task_arn,
        }))
    }
}

fn nothing(why: String) -> Reconciled {
    Reconciled::Nothing { why }
}

pub(crate) fn log(outcome: &Reconciled, request_id: &str) {
    match outcome {
        Reconciled::Nothing { why } => tracing::info!(request_id, decision = "nothing", why = %why, "task stopped"),
        Reconciled::Relaunched { attempt, task_arn, .. } => {
            tracing::warn!(request_id, decision = "relaunched", attempt, task_arn = %task_arn, "the attempt ended without an outcome; relaunched")
        }
        Reconciled::Exhausted { reason, .. } => {
            tracing::error!(request_id, decision = "exhausted", reason = %reason, "out of attempts; reported RetriesExhausted")
        }
        Reconciled::Failed { reason } => {
            tracing::error!(request_id, decision = "failed", reason = %reason, "could not reconcile now; the sweep tries again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_reason_names_the_stop_code_and_each_containers_end() {
        let reason = stop_reason(
            Some("SpotInterruption"),
            None,
            [
                (Some("runner"), Some(143), None),
                (Some("sidecar"), None, Some("CannotPullContainerError")),
            ],
        );
        assert_eq!(
            reason,
            "stop code SpotInterruption: no reason given; container runner exit code 143; \
             container sidecar did not run (CannotPullContainerError)"
        );
    }

    /// AWS's published task state change event (see fixtures/README.md), stopped the way
    /// the same documentation describes, for a runner task with our overrides.
    fn aws_sample_stopped() -> Value {
        let mut event: Value =
            serde_json::from_str(include_str!("../fixtures/aws-ecs-task-state-change.json")).unwrap();
        let detail = &mut event["detail"];
        detail["lastStatus"] = "STOPPED".into();
        detail["desiredStatus"] = "STOPPED".into();
        detail["stopCode"] = "SpotInterruption".into();
        detail["stoppedReason"] = "Your Spot Task was interrupted.".into();
        detail["stoppedAt"] = "2020-01-23T18:10:00.000Z".into();
        detail["containers"][0]["lastStatus"] = "STOPPED".into();
        detail["containers"][0]["exitCode"] = 143.into();
        detail["overrides"]["containerOverrides"][0]["environment"] = serde_json::json!([
            {"name": "IMMORTAL_ENVELOPE_URL", "value": "s3://immortal-dev-payloads/envelopes/req-1/attempt-2.json"},
            {"name": "IMMORTAL_ENVELOPE_DIGEST", "value": "5f9c4ab08cac7457e9111a30e4664920607ea2c115a1433d7be98e97e64244ca"}
        ]);
        event
    }

    #[test]
    fn awss_own_sample_event_is_read_and_a_running_task_is_left_alone() {
        // Verbatim, as AWS documents it: a running task, not ours (no envelope).
        let sample: Value = serde_json::from_str(include_str!("../fixtures/aws-ecs-task-state-change.json")).unwrap();
        assert_eq!(StoppedTask::from_event(&sample), None);
        let mut stopped_but_not_ours = aws_sample_stopped();
        stopped_but_not_ours["detail"]["overrides"] =
            serde_json::json!({"containerOverrides": [{"name": "FargateApp"}]});
        assert_eq!(
            StoppedTask::from_event(&stopped_but_not_ours),
            None,
            "no envelope: not a runner task"
        );
    }

    #[test]
    fn stopped_runner_tasks_are_recognised_with_their_reason() {
        let event = aws_sample_stopped();
        let stopped = StoppedTask::from_event(&event).unwrap();
        assert_eq!(stopped.envelope.key, "envelopes/req-1/attempt-2.json");
        assert_eq!(
            stopped.task_arn,
            "arn:aws:ecs:us-west-2:111122223333:task/FargateCluster/c13b4cb40f1f4fe4a2971f76ae5a47ad"
        );
        assert!(stopped.reason.contains("SpotInterruption"), "{}", stopped.reason);
        assert!(stopped.reason.contains("exit code 143"), "{}", stopped.reason);
        let mut running = event.clone();
        running["detail"]["lastStatus"] = "RUNNING".into();
        assert_eq!(StoppedTask::from_event(&running), None);
        let mut other = event;
        other["source"] = "aws.ec2".into();
        assert_eq!(StoppedTask::from_event(&other), None);
    }
}
