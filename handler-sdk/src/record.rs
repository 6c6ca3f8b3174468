//! The overflow queue's message formats, recognised per message, and the envelope
//! each one replays. One parser for every consumer (the forwarder and drain workers).
//!
//! - A dead-letter message (DeadLetterConfig): the body is the original event; the
//!   attributes `RequestID` (String), `ErrorCode` (Number) and `ErrorMessage` (String)
//!   say what failed. The message does not name the function: the queue does.
//! - A destination record (`destinations.onFailure`), also when it arrives wrapped by
//!   SNS (`{"Type":"Notification","Message":...}`) or EventBridge (`{"detail":...}`).

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::arn::Arn;
use crate::container::{FUNCTION_MAP_VAR, FUNCTION_TAG, OVERFLOW_ERROR_TYPE, TIMEOUT_ERROR_TYPE, TIMEOUT_PHRASE};
use crate::destination::DestinationRecord;
use crate::envelope::{Envelope, InvocationContext, Overflow, OverflowSource};
use crate::function_ref::{ContextDefaults, FunctionRef};

/// One queue message, however it was received (a Lambda SQS event record, or ReceiveMessage).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueMessage {
    /// The SQS message id.
    pub message_id: String,
    /// The body.
    pub body: String,
    /// Message attributes by name.
    pub attributes: BTreeMap<String, MessageAttribute>,
    /// The queue's ARN, when known.
    pub queue_arn: Option<String>,
    /// Who sent it (SQS's `SenderId`: a principal's unique id, or `ROLE_ID:SESSION`).
    pub sender_id: Option<String>,
    /// When it was sent (SQS's `SentTimestamp`, ms since the epoch): for an overflow
    /// record, about when Lambda gave up on the invocation.
    pub sent_ms: Option<u64>,
}

/// A message attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    /// `String`, `Number` or `Binary` (with an optional `.custom` suffix).
    pub data_type: String,
    /// The value, for String and Number attributes.
    pub string_value: Option<String>,
}

/// SQS's system attribute naming a message's sender.
pub const SENDER_ID: &str = "SenderId";
/// SQS's system attribute saying when a message was sent (ms since the epoch).
pub const SENT_TIMESTAMP: &str = "SentTimestamp";

/// The messages of an SQS event, as Lambda hands them to a function.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct SqsBatch {
    /// The messages.
    #[serde(rename = "Records")]
    pub records: Vec<QueueMessage>,
}

/// A message as Lambda's SQS event carries it (camelCase, `eventSourceARN`).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LambdaSqsRecord {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    message_attributes: BTreeMap<String, LambdaSqsAttribute>,
    #[serde(default, rename = "eventSourceARN")]
    event_source_arn: Option<String>,
    /// SQS's system attributes (`SenderId`, `ApproximateReceiveCount`...).
    #[serde(default)]
    attributes: BTreeMap<String, Value>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LambdaSqsAttribute {
    #[serde(default)]
    data_type: Option<String>,
    #[serde(default)]
    string_value: Option<String>,
}

impl<'de> serde::Deserialize<'de> for QueueMessage {
    /// Reads one record of a Lambda SQS event.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let record = LambdaSqsRecord::deserialize(deserializer)?;
        Ok(QueueMessage {
            message_id: record.message_id.unwrap_or_default(),
            body: record.body.unwrap_or_default(),
            attributes: record
                .message_attributes
                .into_iter()
                .map(|(name, a)| {
                    (
                        name,
                        MessageAttribute {
                            data_type: a.data_type.unwrap_or_default(),
                            string_value: a.string_value,
                        },
                    )
                })
                .collect(),
            queue_arn: record.event_source_arn,
            sender_id: record
                .attributes
                .get(SENDER_ID)
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            sent_ms: record
                .attributes
                .get(SENT_TIMESTAMP)
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse().ok()),
        })
    }
}

/// A recognised overflow record.
#[derive(Debug, Clone)]
pub enum Record {
    /// From a dead-letter queue.
    DeadLetter(DeadLetter),
    /// An asynchronous-invocation destination record.
    Destination(Box<DestinationRecord>),
}

/// A dead-letter message.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The original request id.
    pub request_id: String,
    /// The HTTP status Lambda recorded (200 for function errors).
    pub error_code: Option<i64>,
    /// The first 1 KB of the error message.
    pub error_message: Option<String>,
    /// The original event.
    pub event: Box<RawValue>,
}

/// Why a message is not a usable overflow record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Neither format.
    #[error("message {message_id} is neither a dead-letter message (no RequestID attribute) nor a Lambda destination record (no requestContext.functionArn): {preview}")]
    Unrecognised {
        /// The message.
        message_id: String,
        /// The start of its body.
        preview: String,
    },
    /// Recognised, but malformed.
    #[error("message {message_id} looks like a {format} but {problem}")]
    Malformed {
        /// The message.
        message_id: String,
        /// Which format it resembles.
        format: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A dead-letter message from a queue not bound to a function.
    #[error("message {message_id} is a dead-letter message from {queue}, which names no function; tag the queue (aws sqs tag-queue --queue-url URL --tags {tag}=NAME) or add queueArn=function to {map}", tag = FUNCTION_TAG, map = FUNCTION_MAP_VAR)]
    NoFunction {
        /// The message.
        message_id: String,
        /// The queue.
        queue: String,
    },
}

/// Recognises `message`.
pub fn parse(message: &QueueMessage) -> Result<Record, RecordError> {
    if let Some(request_id) = message.attributes.get("RequestID").and_then(|a| a.string_value.clone()) {
        let malformed = |problem: String| RecordError::Malformed {
            message_id: message.message_id.clone(),
            format: "dead-letter message",
            problem,
        };
        let event = RawValue::from_string(message.body.trim().to_owned())
            .map_err(|e| malformed(format!("its body (the original event) is not JSON: {e}")))?;
        let error_code = match message
            .attributes
            .get("ErrorCode")
            .and_then(|a| a.string_value.as_deref())
        {
            Some(code) => Some(
                code.trim()
                    .parse::<i64>()
                    .map_err(|_| malformed(format!("ErrorCode `{code}` is not a number")))?,
            ),
            None => None,
        };
        return Ok(Record::DeadLetter(DeadLetter {
            request_id,
            error_code,
            error_message: message
                .attributes
                .get("ErrorMessage")
                .and_then(|a| a.string_value.clone()),
            event,
        }));
    }
    let unrecognised = || RecordError::Unrecognised {
        message_id: message.message_id.clone(),
        preview: message.body.chars().take(120).collect(),
    };
    let value: Value = serde_json::from_str(&message.body).map_err(|_| unrecognised())?;
    let inner = unwrap_transport(&value).ok_or_else(unrecognised)?;
    let record: DestinationRecord = serde_json::from_str(&inner).map_err(|e| RecordError::Malformed {
        message_id: message.message_id.clone(),
        format: "Lambda destination record",
        problem: e.to_string(),
    })?;
    Ok(Record::Destination(Box::new(record)))
}

/// The destination record's text inside a plain, SNS-wrapped or EventBridge-wrapped body.
fn unwrap_transport(value: &Value) -> Option<String> {
    let is_record = |v: &Value| v.get("requestContext").and_then(|c| c.get("functionArn")).is_some();
    if is_record(value) {
        return Some(value.to_string());
    }
    if value.get("Type").and_then(Value::as_str) == Some("Notification") {
        let inner: Value = serde_json::from_str(value.get("Message")?.as_str()?).ok()?;
        return is_record(&inner).then(|| inner.to_string());
    }
    value.get("detail").filter(|d| is_record(d)).map(|d| d.to_string())
}

impl Record {
    /// The original request id.
    pub fn request_id(&self) -> &str {
        match self {
            Record::DeadLetter(d) => &d.request_id,
            Record::Destination(r) => &r.request_context.request_id,
        }
    }

    /// The function the record names (destination records only).
    pub fn function_arn(&self) -> Option<&str> {
        match self {
            Record::DeadLetter(_) => None,
            Record::Destination(r) => Some(&r.request_context.function_arn),
        }
    }

    /// The reported error type and message.
    pub fn error(&self) -> (Option<String>, Option<String>) {
        match self {
            Record::DeadLetter(d) => {
                let message = d.error_message.clone();
                let error_type = message.as_deref().and_then(|m| {
                    if m.contains(TIMEOUT_PHRASE) {
                        Some(TIMEOUT_ERROR_TYPE.to_owned())
                    } else if m.starts_with(OVERFLOW_ERROR_TYPE) {
                        Some(OVERFLOW_ERROR_TYPE.to_owned())
                    } else {
                        None
                    }
                });
                (error_type, message)
            }
            Record::Destination(r) => r.error(),
        }
    }

    /// The envelope that replays this invocation. A dead-letter message needs the
    /// function its queue is bound to.
    pub fn to_envelope(&self, message: &QueueMessage, function: Option<&FunctionRef>) -> Result<Envelope, RecordError> {
        let (error_type, error_message) = self.error();
        match self {
            Record::DeadLetter(d) => {
                let function = function.ok_or_else(|| RecordError::NoFunction {
                    message_id: message.message_id.clone(),
                    queue: message.queue_arn.clone().unwrap_or_else(|| "an unknown queue".into()),
                })?;
                // The function lives where its dead-letter queue does, unless named by ARN.
                let mut defaults = ContextDefaults::from_env();
                if let Some(queue) = message.queue_arn.as_deref().and_then(QueueArn::parse) {
                    (defaults.region, defaults.account) = (queue.region, queue.account);
                }
                let arn = function.arn_or_default(&defaults);
                Ok(Envelope {
                    event: d.event.clone(),
                    context: InvocationContext {
                        request_id: Some(d.request_id.clone()),
                        invoked_function_arn: Some(arn),
                        function_name: Some(function.name.clone()),
                        function_version: function.version().map(str::to_owned),
                        overflow: Some(Overflow {
                            // Lambda tried at least once; the DLQ message does not say how often.
                            attempt: 2,
                            error_type,
                            error_message,
                            source: OverflowSource::Dlq,
                            extra: Default::default(),
                        }),
                        ..Default::default()
                    },
                })
            }
            Record::Destination(r) => {
                let ctx = &r.request_context;
                let function = FunctionRef::parse(&ctx.function_arn).map_err(|e| RecordError::Malformed {
                    message_id: message.message_id.clone(),
                    format: "Lambda destination record",
                    problem: e.to_string(),
                })?;
                Ok(Envelope {
                    event: r.request_payload.clone(),
                    context: InvocationContext {
                        request_id: Some(ctx.request_id.clone()),
                        invoked_function_arn: Some(ctx.function_arn.clone()),
                        function_name: Some(function.name),
                        function_version: r.response_context.as_ref().and_then(|c| c.executed_version.clone()),
                        overflow: Some(Overflow {
                            attempt: ctx.approximate_invoke_count.saturating_add(1),
                            error_type,
                            error_message,
                            source: if r.immortal.is_some() {
                                OverflowSource::Manual
                            } else {
                                OverflowSource::Destination
                            },
                            extra: Default::default(),
                        }),
                        ..Default::default()
                    },
                })
            }
        }
    }
}

/// An SQS queue ARN, `arn:aws:sqs:REGION:ACCOUNT:NAME`, split once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueArn {
    /// The region.
    pub region: String,
    /// The owning account.
    pub account: String,
    /// The queue's name.
    pub name: String,
}

impl QueueArn {
    /// Splits `arn:PARTITION:sqs:REGION:ACCOUNT:NAME`; `None` for anything else.
    ///
    /// ```
    /// use immortal_handler_sdk::record::QueueArn;
    /// let q = QueueArn::parse("arn:aws:sqs:eu-west-1:111122223333:thumbnail-dlq").unwrap();
    /// assert_eq!((q.region.as_str(), q.account.as_str(), q.name.as_str()), ("eu-west-1", "111122223333", "thumbnail-dlq"));
    /// assert!(QueueArn::parse("https://sqs.eu-west-1.amazonaws.com/1/q").is_none());
    /// ```
    pub fn parse(text: &str) -> Option<QueueArn> {
        let arn = Arn::parse(text).filter(|arn| arn.service == "sqs" && !arn.resource.contains(':'))?;
        Some(QueueArn {
            region: arn.region.to_owned(),
            account: arn.account.to_owned(),
            name: arn.resource.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> QueueMessage {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_dead_letter_message_needs_its_queues_function() {
        let msg = message(include_str!("../fixtures/sqs-dlq-timeout-new.json"));
        let err = parse(&msg).unwrap().to_envelope(&msg, None).unwrap_err();
        assert!(err.to_string().contains("tag the queue"), "{err}");
        assert!(
            err.to_string()
                .contains("arn:aws:sqs:us-east-1:123456789012:thumbnail-dlq"),
            "{err}"
        );
    }

    #[test]
    fn sns_and_eventbridge_wrapped_records() {
        let inner = include_str!("../fixtures/destination-retries-exhausted-timeout.json");
        let sns = serde_json::json!({"Type": "Notification", "MessageId": "m", "Message": inner}).to_string();
        let bridge = format!(
            r#"{{"version":"0","detail-type":"Lambda Function Invocation Result - Failure","detail":{inner}}}"#
        );
        for body in [sns, bridge] {
            let msg = QueueMessage {
                message_id: "m".into(),
                body,
                ..Default::default()
            };
            assert_eq!(
                parse(&msg).unwrap().request_id(),
                "7b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e"
            );
        }
    }

    #[test]
    fn anything_else_is_refused_with_a_preview() {
        let err = parse(&message(include_str!("../fixtures/sqs-malformed.json"))).unwrap_err();
        assert!(matches!(err, RecordError::Unrecognised { .. }));
        assert!(err.to_string().contains("hello, not an overflow record"), "{err}");
        let msg = QueueMessage {
            message_id: "m".into(),
            body: "{not json".into(),
            attributes: [(
                "RequestID".to_owned(),
                MessageAttribute {
                    data_type: "String".into(),
                    string_value: Some("r".into()),
                },
            )]
            .into(),
            queue_arn: None,
            sender_id: None,
            sent_ms: None,
        };
        assert!(parse(&msg).unwrap_err().to_string().contains("is not JSON"));
    }

    #[test]
    fn lambda_sqs_records_keep_number_attributes_and_the_queue() {
        let message = message(include_str!("../fixtures/sqs-dlq-timeout-new.json"));
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
        let batch: SqsBatch = serde_json::from_str(&format!(
            r#"{{"Records":[{}]}}"#,
            include_str!("../fixtures/sqs-dlq-timeout-old.json")
        ))
        .unwrap();
        assert_eq!(batch.records.len(), 1);
    }
}
