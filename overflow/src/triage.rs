//! What becomes of one overflow-queue message, decided the same way by every consumer
//! (the forwarder, and drain workers): recognise it, resolve a pointer record, find its
//! function, apply the relaunch policy, and either hand back the envelope to run or
//! pass the record on to the failure destination.

use std::borrow::Cow;
use std::sync::Arc;

use immortal_handler_sdk::container::{FUNCTION_ATTRIBUTE, ON_FAILURE_VAR, RELAUNCH_TAG, RELAUNCH_VAR};
use immortal_handler_sdk::destination::{DestinationRecord, OutcomeFacts, RunnerMarker};
use immortal_handler_sdk::envelope::Envelope;
use immortal_handler_sdk::function_ref::LATEST;
use immortal_handler_sdk::record::{self, QueueMessage, Record};
use immortal_handler_sdk::{ErrorDocument, FunctionRef};

use crate::functions::Functions;
use crate::policy::{FailureClass, RelaunchPolicy};
use crate::publisher::{timestamp_now, Publisher, Target};
use crate::queue_function::QueueFunctions;
use crate::sender::Senders;
use crate::settings::OverflowSettings;

/// The verdict on one message.
#[derive(Debug)]
pub enum Verdict {
    /// Run it: the envelope that replays the invocation.
    Relaunch(Box<Envelope>),
    /// The policy does not relaunch this kind of failure; it stays for the parking queue.
    Declined {
        /// The failure class.
        class: &'static str,
    },
    /// Not relaunched, and sent to the failure destination as a destination record.
    PassedOn {
        /// The failure class (`unrunnable` when nothing here can run it).
        class: &'static str,
        /// Where it went.
        destination: String,
        /// Why, when it is not the relaunch policy's choice.
        reason: Option<String>,
    },
    /// Unusable or unresolvable: the message must stay queued (SQS delivers it again,
    /// then parks it).
    Failed {
        /// Why.
        reason: String,
    },
    /// Its sender may not run the function it names ([`crate::sender`]): never run,
    /// left for the parking queue.
    Unauthenticated {
        /// Who sent it, as SQS says.
        sender: String,
        /// Why not.
        reason: String,
    },
}

impl Verdict {
    /// Whether the message may leave the queue (it ran elsewhere, or was passed on).
    pub fn done(&self) -> bool {
        matches!(self, Verdict::PassedOn { .. })
    }

    /// One log line for a verdict that does not run the message, the same from every
    /// consumer (`decision`: `declined`, `passed-on`, `failed`).
    pub fn log(&self, message_id: &str, request_id: &str, function: &str) {
        match self {
            Verdict::Relaunch(_) => {}
            Verdict::Declined { class } => tracing::warn!(
                message_id,
                request_id,
                function,
                decision = "declined",
                class,
                "not relaunched by {RELAUNCH_VAR}; left for the parking queue"
            ),
            Verdict::PassedOn {
                class,
                destination,
                reason: None,
            } => {
                tracing::warn!(message_id, request_id, function, decision = "passed-on", class, destination = %destination, "not relaunched by {RELAUNCH_VAR}; sent to {ON_FAILURE_VAR}")
            }
            Verdict::PassedOn {
                class,
                destination,
                reason: Some(reason),
            } => {
                tracing::error!(message_id, request_id, function, decision = "passed-on", class, destination = %destination, reason = %reason, "cannot run; sent to {ON_FAILURE_VAR}")
            }
            Verdict::Failed { reason } => {
                tracing::error!(message_id, request_id, function, decision = "failed", reason = %reason, "not run; SQS will deliver the message again")
            }
            Verdict::Unauthenticated { sender, reason } => {
                tracing::error!(message_id, request_id, function, decision = "unauthenticated", sender = %sender, reason = %reason, "not run: its sender may not run the function it names; left for the parking queue")
            }
        }
    }
}

/// The verdict, with what is known of the message for logging.
#[derive(Debug)]
pub struct Triaged {
    /// The verdict.
    pub verdict: Verdict,
    /// The original request id, when the record could be read.
    pub request_id: Option<String>,
    /// The function, when known.
    pub function: Option<FunctionRef>,
}

/// Judges messages.
pub struct Triage {
    functions: QueueFunctions,
    senders: Senders,
    facts: Arc<Functions>,
    publisher: Publisher,
    policy: RelaunchPolicy,
    on_failure: Option<Target>,
    /// `forwarder` or `runner`: who passes declined records on.
    source: &'static str,
}

impl Triage {
    /// A triage by `settings`, with clients from `sdk`; `source` (`forwarder` or
    /// `runner`) marks the records it passes on.
    pub fn new(sdk: &aws_config::SdkConfig, settings: &OverflowSettings, source: &'static str) -> Self {
        let facts = Arc::new(Functions::new(sdk));
        Triage {
            functions: QueueFunctions::new(settings.function_map.clone(), aws_sdk_sqs::Client::new(sdk)),
            senders: Senders::new(sdk, facts.clone(), settings.trusted_senders.clone()),
            facts,
            publisher: Publisher::new(sdk, settings.payload_bucket.clone()),
            policy: settings.relaunch.clone(),
            on_failure: settings.on_failure.clone(),
            source,
        }
    }

    /// Decides what becomes of `message`.
    pub async fn triage(&self, message: &QueueMessage) -> Triaged {
        let (record, function) = match self.read(message).await {
            Ok(read) => read,
            Err(triaged) => return triaged,
        };
        let request_id = Some(record.request_id().to_owned());
        let class = FailureClass::of(&record);
        if !self.policy_for(function.as_ref()).await.relaunches(class) {
            let verdict = match &self.on_failure {
                None => Verdict::Declined { class: class.name() },
                Some(target) => {
                    self.pass_on(&record, message, function.as_ref(), target, class.name(), None)
                        .await
                }
            };
            return Triaged {
                verdict,
                request_id,
                function,
            };
        }
        match record.to_envelope(message, function.as_ref()) {
            Ok(envelope) => {
                // The envelope's ARN is the fullest reference (region, account, qualifier).
                let function = envelope.context.function_ref().ok().flatten().or(function);
                let verdict = match &function {
                    Some(named) => match self.senders.authenticate(message.sender_id.as_deref(), named).await {
                        Ok(()) => Verdict::Relaunch(Box::new(envelope)),
                        Err(e) if e.refused() => Verdict::Unauthenticated {
                            sender: message.sender_id.clone().unwrap_or_else(|| "(none)".into()),
                            reason: e.to_string(),
                        },
                        Err(e) => Verdict::Failed { reason: e.to_string() },
                    },
                    None => Verdict::Failed {
                        reason: "the record names no function to run".into(),
                    },
                };
                Triaged {
                    verdict,
                    request_id,
                    function,
                }
            }
            Err(e) => Triaged {
                verdict: Verdict::Failed { reason: e.to_string() },
                request_id,
                function,
            },
        }
    }

    /// The functions it looks up (shared with whoever needs the same facts).
    pub fn functions(&self) -> Arc<Functions> {
        self.facts.clone()
    }

    /// The relaunch policy for `function`: its own (the `immortal:relaunch` tag), else
    /// the stack's. A tag that does not parse, or a function that cannot be looked up,
    /// gets the stack's, with a warning (the sender check then says what is wrong).
    async fn policy_for(&self, function: Option<&FunctionRef>) -> Cow<'_, RelaunchPolicy> {
        let Some(function) = function else {
            return Cow::Borrowed(&self.policy);
        };
        match self.facts.facts(function).await.map(|facts| facts.relaunch()) {
            Ok(Some(Ok(own))) => Cow::Owned(own),
            Ok(Some(Err(e))) => {
                tracing::warn!(function = %function.label(), error = %e, "the function's {RELAUNCH_TAG} tag does not parse; the stack's {RELAUNCH_VAR} applies");
                Cow::Borrowed(&self.policy)
            }
            Ok(None) => Cow::Borrowed(&self.policy),
            Err(e) => {
                tracing::warn!(function = %function.label(), error = %e, "cannot read the function's own relaunch setting; the stack's {RELAUNCH_VAR} applies");
                Cow::Borrowed(&self.policy)
            }
        }
    }

    /// For a message the policy relaunches but nothing here can run (no runner for its
    /// runtime): the record goes to the failure destination with `reason`; without one,
    /// it stays queued (and is parked after maxReceiveCount).
    pub async fn not_runnable(&self, message: &QueueMessage, reason: String) -> Verdict {
        let Some(target) = &self.on_failure else {
            return Verdict::Failed { reason };
        };
        match self.read(message).await {
            Ok((record, function)) => {
                self.pass_on(&record, message, function.as_ref(), target, "unrunnable", Some(reason))
                    .await
            }
            Err(triaged) => triaged.verdict,
        }
    }

    /// The message's record (a pointer record resolved) and the function it names.
    async fn read(&self, message: &QueueMessage) -> Result<(Record, Option<FunctionRef>), Triaged> {
        let failed = |reason: String, request_id, function| Triaged {
            verdict: Verdict::Failed { reason },
            request_id,
            function,
        };
        let record = match record::parse(message) {
            Ok(Record::Destination(pointer)) if pointer.record_location().is_some() => {
                match self.publisher.resolve(*pointer).await {
                    Ok(full) => Record::Destination(Box::new(full)),
                    Err(e) => return Err(failed(e.to_string(), None, None)),
                }
            }
            Ok(record) => record,
            Err(e) => return Err(failed(e.to_string(), None, None)),
        };
        let function = match &record {
            Record::Destination(r) => FunctionRef::parse(&r.request_context.function_arn).ok(),
            // Handed off by a drain worker: named, since its own queue is not this one.
            Record::DeadLetter(_) if message.attributes.contains_key(FUNCTION_ATTRIBUTE) => message
                .attributes
                .get(FUNCTION_ATTRIBUTE)
                .and_then(|a| a.string_value.as_deref())
                .and_then(|f| FunctionRef::parse(f).ok()),
            Record::DeadLetter(_) => match message.queue_arn.as_deref() {
                Some(queue) => match self.functions.function_for(queue).await {
                    Ok(function) => function,
                    Err(e) => return Err(failed(e.to_string(), Some(record.request_id().to_owned()), None)),
                },
                None => None,
            },
        };
        Ok((record, function))
    }

    /// Sends a record that will not run to `target`, as a destination record (with
    /// `reason` when it is not the policy's choice).
    async fn pass_on(
        &self,
        record: &Record,
        message: &QueueMessage,
        function: Option<&FunctionRef>,
        target: &Target,
        class: &'static str,
        reason: Option<String>,
    ) -> Verdict {
        match self
            .publish_record(record, message, function, target, reason.clone())
            .await
        {
            Ok(()) => Verdict::PassedOn {
                class,
                destination: target.to_string(),
                reason,
            },
            Err(e) => Verdict::Failed { reason: e.to_string() },
        }
    }

    async fn publish_record(
        &self,
        record: &Record,
        message: &QueueMessage,
        function: Option<&FunctionRef>,
        target: &Target,
        reason: Option<String>,
    ) -> Result<(), PassOnError> {
        let version = env!("CARGO_PKG_VERSION");
        let marker = RunnerMarker {
            source: self.source.into(),
            version: version.into(),
            record_location: None,
            reason,
        };
        let out = match record {
            Record::Destination(lambda) => {
                let mut out = (**lambda).clone();
                out.immortal = Some(marker);
                out
            }
            Record::DeadLetter(dead) => {
                let envelope = record.to_envelope(message, function)?;
                let (error_type, error_message) = record.error();
                let error =
                    ErrorDocument::new(error_type.unwrap_or_default(), error_message.unwrap_or_default()).to_json();
                let arn = envelope.context.invoked_function_arn.unwrap_or_default();
                let mut out = DestinationRecord::outcome(OutcomeFacts {
                    request_id: &dead.request_id,
                    function_arn: &arn,
                    executed_version: LATEST,
                    invoke_count: 1,
                    request_payload: &dead.event,
                    success: false,
                    response: error.as_bytes(),
                    timestamp: timestamp_now(),
                    marker: (self.source, version),
                });
                out.immortal = Some(marker);
                out
            }
        };
        self.publisher.publish(target, &out).await?;
        Ok(())
    }
}

/// Why a record that will not run could not be passed on.
#[derive(Debug, thiserror::Error)]
enum PassOnError {
    /// A dead-letter message whose envelope cannot be made (its function unknown).
    #[error(transparent)]
    Record(#[from] record::RecordError),
    /// The destination refused it.
    #[error(transparent)]
    Publish(#[from] crate::publisher::PublishError),
}
