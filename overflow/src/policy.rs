//! Which failures are relaunched: the failure classes a record can report, and the
//! policy (`IMMORTAL_RELAUNCH`) that picks the ones worth another run.

use immortal_handler_sdk::container::{OVERFLOW_ERROR_TYPE, TIMEOUT_ERROR_TYPE, TIMEOUT_PHRASE};
use immortal_handler_sdk::destination::{EVENT_AGE_EXCEEDED, SUCCESS};
use immortal_handler_sdk::record::Record;

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
    /// What kind of failure `record` reports.
    pub fn of(record: &Record) -> FailureClass {
        if let Record::Destination(r) = record {
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
        let (error_type, message) = record.error();
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

    /// The name used in the relaunch setting.
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

/// A word of `IMMORTAL_RELAUNCH` that names no failure class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not one of timeout, overflow, error, expired, all")]
pub struct UnknownClass(pub String);

impl RelaunchPolicy {
    /// Parses a list of `timeout`, `overflow`, `error`, `expired`, or `all`, separated
    /// by commas (`IMMORTAL_RELAUNCH`) or `+` (the `immortal:relaunch` tag).
    pub fn parse(text: &str) -> Result<Self, UnknownClass> {
        let mut classes = vec![FailureClass::Redriven];
        for word in text.split([',', '+']).map(str::trim).filter(|w| !w.is_empty()) {
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
                other => return Err(UnknownClass(other.to_owned())),
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

#[cfg(test)]
mod tests {
    use super::*;
    use immortal_handler_sdk::envelope::{Envelope, OverflowSource};
    use immortal_handler_sdk::record::{parse, QueueMessage};
    use immortal_handler_sdk::FunctionRef;
    use serde_json::Value;

    fn message(text: &str) -> QueueMessage {
        serde_json::from_str(text).unwrap()
    }

    const S3_EVENT: &str = include_str!("../../handler-sdk/fixtures/s3-put.json");

    fn assert_event_is_the_s3_put(envelope: &Envelope) {
        let got: Value = serde_json::from_str(envelope.event.get()).unwrap();
        assert_eq!(got, serde_json::from_str::<Value>(S3_EVENT).unwrap());
    }

    #[test]
    fn dead_letter_timeouts_in_both_message_formats() {
        for text in [
            include_str!("../../handler-sdk/fixtures/sqs-dlq-timeout-old.json"),
            include_str!("../../handler-sdk/fixtures/sqs-dlq-timeout-new.json"),
        ] {
            let msg = message(text);
            let record = parse(&msg).unwrap();
            assert!(matches!(&record, Record::DeadLetter(d) if d.error_code == Some(200)));
            assert_eq!(FailureClass::of(&record), FailureClass::Timeout);
            assert!(RelaunchPolicy::default().relaunches(FailureClass::of(&record)));
            let envelope = record
                .to_envelope(&msg, Some(&FunctionRef::named("thumbnail")))
                .unwrap();
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
        let record = parse(&message(include_str!(
            "../../handler-sdk/fixtures/sqs-dlq-function-error.json"
        )))
        .unwrap();
        assert_eq!(FailureClass::of(&record), FailureClass::Error);
        assert!(!RelaunchPolicy::default().relaunches(FailureClass::Error));
        assert!(RelaunchPolicy::parse("timeout,error")
            .unwrap()
            .relaunches(FailureClass::Error));
    }

    #[test]
    fn a_handler_overflow_through_a_dead_letter_queue() {
        let record = parse(&message(include_str!(
            "../../handler-sdk/fixtures/sqs-dlq-overflow.json"
        )))
        .unwrap();
        assert_eq!(FailureClass::of(&record), FailureClass::Overflow);
    }

    #[test]
    fn destination_records_retries_exhausted_and_event_age_exceeded() {
        let msg = message(include_str!(
            "../../handler-sdk/fixtures/sqs-destination-retries-exhausted.json"
        ));
        let record = parse(&msg).unwrap();
        assert_eq!(FailureClass::of(&record), FailureClass::Timeout);
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
            "../../handler-sdk/fixtures/sqs-destination-event-age-exceeded.json"
        )))
        .unwrap();
        assert_eq!(
            FailureClass::of(&record),
            FailureClass::Timeout,
            "it timed out, then the event expired"
        );
        let record = parse(&message(include_str!(
            "../../handler-sdk/fixtures/sqs-destination-event-age-never-ran.json"
        )))
        .unwrap();
        assert_eq!(FailureClass::of(&record), FailureClass::Expired);
        let record = parse(&message(include_str!(
            "../../handler-sdk/fixtures/sqs-destination-function-error.json"
        )))
        .unwrap();
        assert_eq!(FailureClass::of(&record), FailureClass::Error);
    }

    #[test]
    fn policy_words() {
        assert!(RelaunchPolicy::parse("timeout, nonsense").is_err());
        let all = RelaunchPolicy::parse("all").unwrap();
        assert!(all.relaunches(FailureClass::Expired) && all.relaunches(FailureClass::Error));
        assert!(!all.relaunches(FailureClass::Success));
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
            let parsed = parse(&message(text));
            assert_eq!(parsed.as_ref().ok().map(FailureClass::of), class, "{parsed:?}");
        }
    }
}
