//! One batch of queue messages: each recognised, judged by the relaunch policy, and
//! launched as a task, or reported as a batch item failure so SQS delivers it again
//! (and, after maxReceiveCount, parks it). Nothing is deleted that did not start a task.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use immortal_handler_sdk::envelope::S3Location;
use immortal_handler_sdk::record::{MessageAttribute, QueueMessage};
use immortal_handler_sdk::triage::{Triage, Verdict};
use immortal_handler_sdk::Envelope;

use crate::config::Config;
use crate::launch::{self, Carrier, TaskRequest};

/// What became of one message.
#[derive(Debug)]
pub enum Decision {
    /// A task was started.
    Launched {
        /// Its ARN.
        task_arn: String,
    },
    /// Not launched: declined, passed on, or failed (never `Verdict::Relaunch`).
    Settled(Verdict),
}

impl Decision {
    /// Whether the message may leave the queue.
    pub fn done(&self) -> bool {
        match self {
            Decision::Launched { .. } => true,
            Decision::Settled(verdict) => verdict.done(),
        }
    }
}

/// The forwarder: configuration and AWS clients.
pub struct Forwarder {
    config: Config,
    ecs: aws_sdk_ecs::Client,
    s3: aws_sdk_s3::Client,
    triage: Triage,
}

impl Forwarder {
    /// A forwarder with clients made from `sdk`.
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> Self {
        let triage = Triage::new(
            sdk,
            config.function_map.clone(),
            config.relaunch.clone(),
            config.on_failure.clone(),
            config.payload_bucket.clone(),
            "forwarder",
        );
        Forwarder {
            config,
            ecs: aws_sdk_ecs::Client::new(sdk),
            s3: immortal_handler_sdk::aws::s3_client(sdk),
            triage,
        }
    }

    /// Handles a batch; the response lists the messages SQS must deliver again.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for message in &event.records {
            let message = queue_message(message);
            // Boxed: the per-record future (triage, S3, RunTask) is deep enough to strain
            // the compiler's layout computation when nested in the runtime's service.
            let decision = Box::pin(self.forward(&message)).await;
            let retry = !decision.done();
            if retry {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message.message_id.clone();
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// Decides and acts on one message, and logs one line about it.
    pub async fn forward(&self, message: &QueueMessage) -> Decision {
        let (decision, request_id, function) = self.decide(message).await;
        let (request_id, function) = (request_id.unwrap_or_default(), function.unwrap_or_default());
        match &decision {
            Decision::Launched { task_arn } => {
                tracing::info!(message_id = %message.message_id, request_id, function, decision = "launched", task_arn = %task_arn, "record forwarded")
            }
            Decision::Settled(verdict) => verdict.log(&message.message_id, &request_id, &function),
        }
        decision
    }

    async fn decide(&self, message: &QueueMessage) -> (Decision, Option<String>, Option<String>) {
        let triaged = self.triage.triage(message).await;
        let (request_id, function) = (triaged.request_id, triaged.function);
        let envelope = match triaged.verdict {
            Verdict::Relaunch(envelope) => envelope,
            settled => return (Decision::Settled(settled), request_id, function),
        };
        let carrier = match self.carrier(&envelope, &message.message_id).await {
            Ok(carrier) => carrier,
            Err(reason) => return (Decision::Settled(Verdict::Failed { reason }), request_id, function),
        };
        let label = function.clone().unwrap_or_default();
        let request = TaskRequest {
            environment: carrier.environment(),
            token: launch::client_token(&message.message_id),
            request_id: request_id.as_deref().unwrap_or_default(),
            function: &label,
        };
        let decision = match launch::run_task(&self.ecs, &self.config, &request).await {
            Ok(task_arn) => Decision::Launched { task_arn },
            Err(e) => Decision::Settled(Verdict::Failed { reason: e.to_string() }),
        };
        (decision, request_id, function)
    }

    /// Inline overrides when they fit, else the envelope stored in the payload bucket.
    async fn carrier(&self, envelope: &Envelope, message_id: &str) -> Result<Carrier, String> {
        if let Some(carrier) = launch::inline_carrier(&self.config.container_name, envelope) {
            return Ok(carrier);
        }
        let Some(bucket) = &self.config.payload_bucket else {
            return Err(format!(
                "the envelope is too large for ECS's {}-character overrides limit and IMMORTAL_PAYLOAD_BUCKET is not set; set it to a bucket the forwarder can write and the runner can read",
                launch::OVERRIDES_LIMIT
            ));
        };
        let request_id = envelope.context.request_id.as_deref().unwrap_or("unknown");
        let at = S3Location {
            bucket: bucket.clone(),
            key: format!("envelopes/{request_id}/{message_id}.json"),
        };
        immortal_handler_sdk::aws::put_json(&self.s3, &at, envelope.to_json().into_bytes())
            .await
            .map_err(|e| format!("cannot store the envelope: {e}"))?;
        Ok(Carrier::Stored(at))
    }
}

/// The parser's view of a Lambda SQS event record.
pub fn queue_message(message: &SqsMessage) -> QueueMessage {
    QueueMessage {
        message_id: message.message_id.clone().unwrap_or_default(),
        body: message.body.clone().unwrap_or_default(),
        attributes: message
            .message_attributes
            .iter()
            .map(|(name, a)| {
                (
                    name.clone(),
                    MessageAttribute {
                        data_type: a.data_type.clone().unwrap_or_default(),
                        string_value: a.string_value.clone(),
                    },
                )
            })
            .collect(),
        queue_arn: message.event_source_arn.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use immortal_handler_sdk::record::{self, FailureClass, Record};

    fn fixture(text: &str) -> QueueMessage {
        queue_message(&serde_json::from_str::<SqsMessage>(text).unwrap())
    }

    #[test]
    fn lambda_sqs_records_keep_number_attributes_and_the_queue() {
        let message = fixture(include_str!("../../handler-sdk/fixtures/sqs-dlq-timeout-new.json"));
        assert_eq!(
            message.attributes["ErrorCode"],
            MessageAttribute {
                data_type: "Number".into(),
                string_value: Some("200".into())
            }
        );
        assert_eq!(
            message.queue_arn.as_deref(),
            Some("arn:aws:sqs:us-east-1:123456789012:thumbnail-dlq")
        );
        let record = record::parse(&message).unwrap();
        assert_eq!(record.class(), FailureClass::Timeout);
    }

    #[test]
    fn every_fixture_parses_or_fails_clearly() {
        for (text, class) in [
            (
                include_str!("../../handler-sdk/fixtures/sqs-dlq-timeout-old.json"),
                Some(FailureClass::Timeout),
            ),
            (
                include_str!("../../handler-sdk/fixtures/sqs-dlq-function-error.json"),
                Some(FailureClass::Error),
            ),
            (
                include_str!("../../handler-sdk/fixtures/sqs-destination-retries-exhausted.json"),
                Some(FailureClass::Timeout),
            ),
            (
                include_str!("../../handler-sdk/fixtures/sqs-destination-event-age-exceeded.json"),
                Some(FailureClass::Timeout),
            ),
            (include_str!("../../handler-sdk/fixtures/sqs-malformed.json"), None),
        ] {
            let parsed = record::parse(&fixture(text));
            assert_eq!(parsed.as_ref().ok().map(Record::class), class, "{parsed:?}");
        }
    }
}
