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

use crate::container::{OVERFLOW_ERROR_TYPE, TIMEOUT_ERROR_TYPE, TIMEOUT_PHRASE};
use crate::destination::{DestinationRecord, EVENT_AGE_EXCEEDED, SUCCESS};
use crate::envelope::{Envelope, FunctionRef, InvocationContext, Overflow, OverflowSource};

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
}

/// A message attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    /// `String`, `Number` or `Binary` (with an optional `.custom` suffix).
    pub data_type: String,
    /// The value, for String and Number attributes.
    pub string_value: Option<String>,
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
    #[error("message {message_id} is a dead-letter message from {queue}, which names no function; tag the queue (aws sqs tag-queue --queue-url URL --tags immortal:function=NAME) or add queueArn=function to IMMORTAL_FUNCTION_MAP")]
    NoFunction {
        /// The message.
        message_id: String,
        /// The queue.
        queue: String,
    },
}

/// What kind of failure a record reports, for the relaunch policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// Lambda's timeout.
    Timeout,
    /// The handler asked to overflow (`Immortal.Overflow`).
    Overflow,
    /// Any other function error (would likely fail again).
    Error,
    /// The event expired before the function ran.
    Expired,
    /// Not a failure (an OnSuccess record).
    Success,
    /// A runner's own failure record that a person put back on the queue.
    Redriven,
}

impl FailureClass {
    /// The name used in `IMMORTAL_RELAUNCH`.
    pub fn name(self) -> &'static str {
        match self {
            FailureClass::Timeout => "timeout",
            FailureClass::Overflow => "overflow",
            FailureClass::Error => "error",
            FailureClass::Expired => "expired",
            FailureClass::Success => "success",
            FailureClass::Redriven => "redriven",
        }
    }
}

/// Which failures are relaunched. Default: timeouts, handler overflows, and records a
/// person redrove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaunchPolicy {
    classes: Vec<FailureClass>,
}

impl Default for RelaunchPolicy {
    fn default() -> Self {
        RelaunchPolicy {
            classes: vec![FailureClass::Timeout, FailureClass::Overflow, FailureClass::Redriven],
        }
    }
}

impl RelaunchPolicy {
    /// Parses a comma-separated list of `timeout`, `overflow`, `error`, `expired`, or `all`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut classes = vec![FailureClass::Redriven];
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let class = match word.to_ascii_lowercase().as_str() {
                "timeout" | "timeouts" => FailureClass::Timeout,
                "overflow" => FailureClass::Overflow,
                "error" | "errors" => FailureClass::Error,
                "expired" => FailureClass::Expired,
                "all" => {
                    classes.extend([
                        FailureClass::Timeout,
                        FailureClass::Overflow,
                        FailureClass::Error,
                        FailureClass::Expired,
                    ]);
                    continue;
                }
                other => {
                    return Err(format!(
                        "`{other}` is not one of timeout, overflow, error, expired, all"
                    ))
                }
            };
            classes.push(class);
        }
        Ok(RelaunchPolicy { classes })
    }

    /// Whether records of `class` are relaunched.
    pub fn relaunches(&self, class: FailureClass) -> bool {
        self.classes.contains(&class)
    }
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

    /// What kind of failure this is.
    pub fn class(&self) -> FailureClass {
        if let Record::Destination(r) = self {
            if r.immortal.is_some() && r.request_context.condition != SUCCESS {
                return FailureClass::Redriven;
            }
            if r.request_context.condition == SUCCESS {
                return FailureClass::Success;
            }
            if r.request_context.condition == EVENT_AGE_EXCEEDED && r.response_payload.is_none() {
                return FailureClass::Expired;
            }
        }
        let (error_type, message) = self.error();
        let is_timeout = error_type.as_deref() == Some(TIMEOUT_ERROR_TYPE)
            || message.as_deref().is_some_and(|m| m.contains(TIMEOUT_PHRASE));
        if is_timeout {
            FailureClass::Timeout
        } else if error_type.as_deref() == Some(OVERFLOW_ERROR_TYPE)
            || message.as_deref().is_some_and(|m| m.starts_with(OVERFLOW_ERROR_TYPE))
        {
            FailureClass::Overflow
        } else {
            FailureClass::Error
        }
    }

    /// The envelope that replays this invocation. A dead-letter message needs the
    /// function its queue is bound to (`function`: a name or ARN).
    pub fn to_envelope(&self, message: &QueueMessage, function: Option<&str>) -> Result<Envelope, RecordError> {
        let (error_type, error_message) = self.error();
        match self {
            Record::DeadLetter(d) => {
                let function = function.ok_or_else(|| RecordError::NoFunction {
                    message_id: message.message_id.clone(),
                    queue: message.queue_arn.clone().unwrap_or_else(|| "an unknown queue".into()),
                })?;
                let (region, account) = queue_region_account(message.queue_arn.as_deref());
                let function = FunctionRef::parse(function).map_err(|e| RecordError::Malformed {
                    message_id: message.message_id.clone(),
                    format: "dead-letter message",
                    problem: format!("its queue's function mapping is unusable: {e}"),
                })?;
                let arn = function.arn(&region, &account);
                Ok(Envelope {
                    event: d.event.clone(),
                    context: InvocationContext {
                        request_id: Some(d.request_id.clone()),
                        invoked_function_arn: Some(arn),
                        function_name: Some(function.name.clone()),
                        function_version: function
                            .qualifier
                            .clone()
                            .filter(|q| q.chars().all(|c| c.is_ascii_digit()) || q == "$LATEST"),
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

/// Region and account from `arn:aws:sqs:REGION:ACCOUNT:NAME` (defaults when unknown).
fn queue_region_account(queue_arn: Option<&str>) -> (String, String) {
    let parts: Vec<&str> = queue_arn.unwrap_or_default().split(':').collect();
    match parts.as_slice() {
        ["arn", _, "sqs", region, account, _] => ((*region).to_owned(), (*account).to_owned()),
        _ => (
            std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
            "123456789012".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// The Lambda SQS event record shape the fixtures are stored in.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Fixture {
        message_id: String,
        body: String,
        #[serde(default)]
        message_attributes: BTreeMap<String, FixtureAttribute>,
        #[serde(rename = "eventSourceARN")]
        event_source_arn: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct FixtureAttribute {
        data_type: String,
        string_value: Option<String>,
    }

    fn message(text: &str) -> QueueMessage {
        let f: Fixture = serde_json::from_str(text).unwrap();
        QueueMessage {
            message_id: f.message_id,
            body: f.body,
            attributes: f
                .message_attributes
                .into_iter()
                .map(|(k, a)| {
                    (
                        k,
                        MessageAttribute {
                            data_type: a.data_type,
                            string_value: a.string_value,
                        },
                    )
                })
                .collect(),
            queue_arn: Some(f.event_source_arn),
        }
    }

    const S3_EVENT: &str = include_str!("../fixtures/s3-put.json");

    fn assert_event_is_the_s3_put(envelope: &Envelope) {
        let got: Value = serde_json::from_str(envelope.event.get()).unwrap();
        assert_eq!(got, serde_json::from_str::<Value>(S3_EVENT).unwrap());
    }

    #[test]
    fn dead_letter_timeouts_in_both_message_formats() {
        for text in [
            include_str!("../fixtures/sqs-dlq-timeout-old.json"),
            include_str!("../fixtures/sqs-dlq-timeout-new.json"),
        ] {
            let msg = message(text);
            let record = parse(&msg).unwrap();
            assert!(matches!(&record, Record::DeadLetter(d) if d.error_code == Some(200)));
            assert_eq!(record.class(), FailureClass::Timeout);
            assert!(RelaunchPolicy::default().relaunches(record.class()));
            let envelope = record.to_envelope(&msg, Some("thumbnail")).unwrap();
            assert_event_is_the_s3_put(&envelope);
            let ctx = &envelope.context;
            assert_eq!(ctx.request_id.as_deref(), Some("3f2a6c1e-8b7d-4e2a-9c1f-5a6b7c8d9e0f"));
            assert_eq!(
                ctx.invoked_function_arn.as_deref(),
                Some("arn:aws:lambda:us-east-1:123456789012:function:thumbnail")
            );
            let overflow = ctx.overflow.as_ref().unwrap();
            assert_eq!(overflow.source, OverflowSource::Dlq);
            assert_eq!(overflow.error_type.as_deref(), Some("Sandbox.Timedout"));
            assert!(overflow
                .error_message
                .as_deref()
                .unwrap()
                .contains("Task timed out after 900.00 seconds"));
        }
    }

    #[test]
    fn a_dead_letter_function_error_is_not_relaunched_by_default() {
        let record = parse(&message(include_str!("../fixtures/sqs-dlq-function-error.json"))).unwrap();
        assert_eq!(record.class(), FailureClass::Error);
        assert!(!RelaunchPolicy::default().relaunches(FailureClass::Error));
        assert!(RelaunchPolicy::parse("timeout,error")
            .unwrap()
            .relaunches(FailureClass::Error));
    }

    #[test]
    fn a_handler_overflow_through_a_dead_letter_queue() {
        let record = parse(&message(include_str!("../fixtures/sqs-dlq-overflow.json"))).unwrap();
        assert_eq!(record.class(), FailureClass::Overflow);
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
    fn destination_records_retries_exhausted_and_event_age_exceeded() {
        let msg = message(include_str!("../fixtures/sqs-destination-retries-exhausted.json"));
        let record = parse(&msg).unwrap();
        assert_eq!(record.class(), FailureClass::Timeout);
        let envelope = record.to_envelope(&msg, None).unwrap();
        assert_event_is_the_s3_put(&envelope);
        assert_eq!(
            envelope.context.invoked_function_arn.as_deref(),
            Some("arn:aws:lambda:us-east-1:123456789012:function:thumbnail:$LATEST")
        );
        assert_eq!(envelope.context.function_version.as_deref(), Some("$LATEST"));
        let overflow = envelope.context.overflow.unwrap();
        assert_eq!((overflow.attempt, overflow.source), (2, OverflowSource::Destination));

        let record = parse(&message(include_str!(
            "../fixtures/sqs-destination-event-age-exceeded.json"
        )))
        .unwrap();
        assert_eq!(
            record.class(),
            FailureClass::Timeout,
            "it timed out, then the event expired"
        );
        let record = parse(&message(include_str!(
            "../fixtures/sqs-destination-event-age-never-ran.json"
        )))
        .unwrap();
        assert_eq!(record.class(), FailureClass::Expired);
        let record = parse(&message(include_str!(
            "../fixtures/sqs-destination-function-error.json"
        )))
        .unwrap();
        assert_eq!(record.class(), FailureClass::Error);
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
        };
        assert!(parse(&msg).unwrap_err().to_string().contains("is not JSON"));
    }

    #[test]
    fn policy_words() {
        assert!(RelaunchPolicy::parse("timeout, nonsense").is_err());
        let all = RelaunchPolicy::parse("all").unwrap();
        assert!(all.relaunches(FailureClass::Expired) && all.relaunches(FailureClass::Error));
        assert!(!all.relaunches(FailureClass::Success));
    }
}
