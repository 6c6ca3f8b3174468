//! Publishing destination records (OnSuccess / OnFailure) to SQS, SNS or EventBridge,
//! with records too large for their destination stored in S3 and sent as a pointer.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use immortal_handler_sdk::arn::Arn;
use immortal_handler_sdk::aws::{self, describe_error};
use immortal_handler_sdk::container::PAYLOAD_BUCKET_VAR;
use immortal_handler_sdk::destination::{DestinationRecord, SUCCESS};
use immortal_handler_sdk::envelope::S3Location;
use immortal_handler_sdk::record::QueueArn;

use crate::store;

/// SNS's message limit, and EventBridge's entry limit.
pub const SNS_LIMIT: usize = 262_144;
/// EventBridge PutEvents entry limit.
pub const EVENTBRIDGE_LIMIT: usize = 262_144;
/// The SQS message attribute that marks records from immortal.
pub const SOURCE_ATTRIBUTE: &str = "immortal-source";

/// Where a record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An SQS queue, by URL or ARN.
    Sqs(String),
    /// An SNS topic ARN.
    Sns(String),
    /// An EventBridge bus ARN.
    EventBridge(String),
}

/// A destination that is none of the kinds outcome records go to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an SQS queue URL or ARN, an SNS topic ARN or an EventBridge bus ARN (arn:aws:events:REGION:ACCOUNT:event-bus/NAME)")]
pub struct BadTarget(pub String);

impl Target {
    /// Parses a queue URL, a queue ARN, a topic ARN or an event bus ARN.
    pub fn parse(text: &str) -> Result<Target, BadTarget> {
        let text = text.trim();
        if text.starts_with("https://") || text.starts_with("http://") {
            return Ok(Target::Sqs(text.to_owned()));
        }
        match Arn::parse(text) {
            Some(arn) if arn.service == "sqs" => Ok(Target::Sqs(text.to_owned())),
            Some(arn) if arn.service == "sns" => Ok(Target::Sns(text.to_owned())),
            Some(arn) if arn.service == "events" && arn.resource.starts_with("event-bus/") => {
                Ok(Target::EventBridge(text.to_owned()))
            }
            _ => Err(BadTarget(text.to_owned())),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sqs(t) | Target::Sns(t) | Target::EventBridge(t) => f.write_str(t),
        }
    }
}

/// How a record was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// As it is.
    Inline,
    /// As a pointer to the full record, stored here.
    Pointer(S3Location),
}

/// Why a record was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Too large for the destination and nowhere to store it.
    #[error("the record is {size} bytes, over the {limit}-byte limit of {target}, and {PAYLOAD_BUCKET_VAR} is not set to store it")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
        /// The destination.
        target: String,
    },
    /// The destination (or the payload bucket) refused or could not be reached.
    #[error("{0}")]
    Failed(String),
    /// An SQS destination could not be looked up.
    #[error("cannot reach {target}: {detail}")]
    Unreachable {
        /// The queue as configured.
        target: String,
        /// Why.
        detail: String,
    },
    /// An oversized record could not be stored in the payload bucket.
    #[error("cannot store the record: {0}")]
    Unstored(#[source] store::StoreError),
}

/// Why the full record behind a pointer record cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The pointer is not an `s3://` URL.
    #[error("the record's location: {0}")]
    Location(#[from] immortal_handler_sdk::EnvelopeError),
    /// It could not be read.
    #[error("cannot read the full record: {0}")]
    Unreadable(#[from] store::StoreError),
    /// What is there is not a destination record.
    #[error("the record at {at} is not a destination record: {source}")]
    NotARecord {
        /// Where.
        at: S3Location,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The pointer leads outside the payload bucket's `outcomes/`, where only immortal
    /// stores records.
    #[error("the record's location {at} is not in the payload bucket's {OUTCOMES}/ (only records immortal stored there are followed)")]
    Elsewhere {
        /// Where it pointed.
        at: S3Location,
    },
    /// The stored record is another function's.
    #[error("the record at {at} is for {stored}, not for {pointer} as its pointer says")]
    OtherFunction {
        /// Where.
        at: S3Location,
        /// The function the pointer names.
        pointer: String,
        /// The function the stored record names.
        stored: String,
    },
}

/// Where records too large for their destination are stored, in the payload bucket.
const OUTCOMES: &str = "outcomes";

/// Publishes records.
pub struct Publisher {
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    events: aws_sdk_eventbridge::Client,
    s3: aws_sdk_s3::Client,
    payload_bucket: Option<String>,
    queues: std::sync::Mutex<std::collections::HashMap<String, (String, usize)>>,
}

impl Publisher {
    /// A publisher with clients from `sdk`; `payload_bucket` stores records too large to send.
    pub fn new(sdk: &aws_config::SdkConfig, payload_bucket: Option<String>) -> Self {
        Publisher {
            sqs: aws_sdk_sqs::Client::new(sdk),
            sns: aws_sdk_sns::Client::new(sdk),
            events: aws_sdk_eventbridge::Client::new(sdk),
            s3: aws::s3_client(sdk),
            payload_bucket,
            queues: Default::default(),
        }
    }

    /// Sends `record` to `target` (the SDK retries transient failures with backoff).
    pub async fn publish(&self, target: &Target, record: &DestinationRecord) -> Result<Delivered, PublishError> {
        let body = serde_json::to_string(record).expect("a record serializes");
        let source = record
            .immortal
            .as_ref()
            .map(|m| m.source.clone())
            .unwrap_or_else(|| "immortal".into());
        let (queue_url, limit) = match target {
            Target::Sqs(queue) => {
                let (url, limit) = self.sqs_queue(queue).await?;
                (Some(url), limit)
            }
            Target::Sns(_) => (None, SNS_LIMIT),
            Target::EventBridge(_) => (None, EVENTBRIDGE_LIMIT),
        };
        let overhead = match target {
            Target::Sqs(_) => SOURCE_ATTRIBUTE.len() + "String".len() + source.len(),
            Target::Sns(_) => 0,
            Target::EventBridge(_) => {
                14 + "lambda".len() + detail_type(record).len() + record.request_context.function_arn.len()
            }
        };
        let (body, delivered) = if body.len() + overhead <= limit {
            (body, Delivered::Inline)
        } else {
            let at = self.store(record, &body, limit, target).await?;
            (
                serde_json::to_string(&record.pointer(&at.to_string())).expect("a record serializes"),
                Delivered::Pointer(at),
            )
        };
        let failed = |e: String| PublishError::Failed(format!("cannot send the record to {target}: {e}"));
        match target {
            Target::Sqs(_) => {
                let marker = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(&source)
                    .build()
                    .expect("complete");
                self.sqs
                    .send_message()
                    .queue_url(queue_url.unwrap_or_default())
                    .message_body(body)
                    .message_attributes(SOURCE_ATTRIBUTE, marker)
                    .send()
                    .await
                    .map_err(|e| failed(describe_error(&e)))?;
            }
            Target::Sns(topic) => {
                let marker = aws_sdk_sns::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(&source)
                    .build()
                    .expect("complete");
                self.sns
                    .publish()
                    .topic_arn(topic)
                    .message(body)
                    .message_attributes(SOURCE_ATTRIBUTE, marker)
                    .send()
                    .await
                    .map_err(|e| failed(describe_error(&e)))?;
            }
            Target::EventBridge(bus) => {
                // As Lambda sends destination records to EventBridge.
                let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                    .event_bus_name(bus)
                    .source("lambda")
                    .detail_type(detail_type(record))
                    .resources(&record.request_context.function_arn)
                    .detail(body)
                    .build();
                let out = self
                    .events
                    .put_events()
                    .entries(entry)
                    .send()
                    .await
                    .map_err(|e| failed(describe_error(&e)))?;
                if out.failed_entry_count > 0 {
                    let reason = out
                        .entries()
                        .first()
                        .and_then(|e| e.error_message())
                        .unwrap_or("unknown")
                        .to_owned();
                    return Err(failed(reason));
                }
            }
        }
        Ok(delivered)
    }

    /// A queue's URL and its own size limit (MaximumMessageSize), looked up once per
    /// publisher: a drain worker reports every outcome to the same queue.
    async fn sqs_queue(&self, queue: &str) -> Result<(String, usize), PublishError> {
        if let Some(known) = self.queues.lock().expect("queue cache").get(queue) {
            return Ok(known.clone());
        }
        let unreachable = |detail: String| PublishError::Unreachable {
            target: queue.to_owned(),
            detail,
        };
        let url = if queue.starts_with("arn:") {
            let arn = QueueArn::parse(queue).ok_or_else(|| unreachable("not an SQS queue ARN".to_owned()))?;
            self.sqs
                .get_queue_url()
                .queue_name(&arn.name)
                .queue_owner_aws_account_id(&arn.account)
                .send()
                .await
                .map_err(|e| unreachable(describe_error(&e)))?
                .queue_url
                .ok_or_else(|| unreachable("GetQueueUrl answered no URL".to_owned()))?
        } else {
            queue.to_owned()
        };
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .send()
            .await
            .map_err(|e| unreachable(format!("cannot read its size limit: {}", describe_error(&e))))?
            .attributes;
        let limit = attributes
            .and_then(|a| {
                a.get(&QueueAttributeName::MaximumMessageSize)
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(262_144);
        self.queues
            .lock()
            .expect("queue cache")
            .insert(queue.to_owned(), (url.clone(), limit));
        Ok((url, limit))
    }

    async fn store(
        &self,
        record: &DestinationRecord,
        body: &str,
        limit: usize,
        target: &Target,
    ) -> Result<S3Location, PublishError> {
        let Some(bucket) = &self.payload_bucket else {
            return Err(PublishError::TooLarge {
                size: body.len(),
                limit,
                target: target.to_string(),
            });
        };
        let at = record_location(bucket, OUTCOMES, record);
        store::put_json(&self.s3, &at, body.as_bytes().to_vec())
            .await
            .map_err(PublishError::Unstored)?;
        Ok(at)
    }

    /// Keeps a record no destination took in the payload bucket, under `undelivered/`
    /// (`None` without a payload bucket).
    pub async fn keep_undelivered(&self, record: &DestinationRecord) -> Option<Result<S3Location, store::StoreError>> {
        let at = record_location(self.payload_bucket.as_deref()?, "undelivered", record);
        let body = serde_json::to_vec(record).expect("a record serializes");
        Some(store::put_json(&self.s3, &at, body).await.map(|()| at))
    }

    /// The full record behind a pointer record (unchanged when it is not one).
    pub async fn resolve(&self, record: DestinationRecord) -> Result<DestinationRecord, ResolveError> {
        let Some(location) = record.record_location() else {
            return Ok(record);
        };
        let at = S3Location::parse(location)?;
        let ours = self.payload_bucket.as_deref() == Some(at.bucket.as_str())
            && at.key.starts_with(&format!("{OUTCOMES}/"))
            && !at.key.contains("..");
        if !ours {
            return Err(ResolveError::Elsewhere { at });
        }
        let bytes = store::get_bytes(&self.s3, &at).await?;
        let full: DestinationRecord =
            serde_json::from_slice(&bytes).map_err(|source| ResolveError::NotARecord { at: at.clone(), source })?;
        if full.request_context.function_arn != record.request_context.function_arn {
            return Err(ResolveError::OtherFunction {
                at,
                pointer: record.request_context.function_arn,
                stored: full.request_context.function_arn,
            });
        }
        Ok(full)
    }
}

/// Where a record is stored in the payload bucket: `PREFIX/REQUEST_ID/CONDITION-TIME.json`.
fn record_location(bucket: &str, prefix: &str, record: &DestinationRecord) -> S3Location {
    S3Location {
        bucket: bucket.to_owned(),
        key: format!(
            "{prefix}/{}/{}-{}.json",
            record.request_context.request_id,
            record.request_context.condition,
            record.timestamp.replace(':', "-")
        ),
    }
}

/// EventBridge's detail-type for Lambda destination records.
fn detail_type(record: &DestinationRecord) -> &'static str {
    if record.request_context.condition == SUCCESS {
        "Lambda Function Invocation Result - Success"
    } else {
        "Lambda Function Invocation Result - Failure"
    }
}

/// Now, as RFC 3339 with milliseconds (`2026-11-22T10:00:00.123Z`), as Lambda writes it.
pub fn timestamp_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = aws_smithy_types::DateTime::from_secs(now.as_secs() as i64)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into());
    format!("{}.{:03}Z", seconds.trim_end_matches('Z'), now.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("https://sqs.us-east-1.amazonaws.com/1/q").unwrap(),
            Target::Sqs("https://sqs.us-east-1.amazonaws.com/1/q".into())
        );
        assert!(matches!(Target::parse("arn:aws:sqs:us-east-1:1:q"), Ok(Target::Sqs(_))));
        assert!(matches!(Target::parse("arn:aws:sns:us-east-1:1:t"), Ok(Target::Sns(_))));
        assert!(matches!(
            Target::parse("arn:aws:events:us-east-1:1:event-bus/default"),
            Ok(Target::EventBridge(_))
        ));
        assert!(Target::parse("arn:aws:s3:::bucket").is_err());
    }

    #[test]
    fn timestamps_have_milliseconds() {
        let t = timestamp_now();
        assert_eq!(t.len(), "2026-11-22T10:00:00.123Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
    }
}
