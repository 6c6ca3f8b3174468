//! Lambda's asynchronous-invocation destination record (OnSuccess / OnFailure), the
//! shape Lambda puts on a destination queue and the runner reports outcomes in.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `condition` of a successful invocation.
pub const SUCCESS: &str = "Success";
/// `condition` after the last retry failed.
pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
/// `condition` when the event got too old waiting.
pub const EVENT_AGE_EXCEEDED: &str = "EventAgeExceeded";

/// A destination record, field for field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRecord {
    /// Always `1.0`.
    pub version: String,
    /// When the record was made, RFC 3339 with milliseconds.
    pub timestamp: String,
    /// Which invocation, and how it ended.
    pub request_context: RequestContext,
    /// The original event, exact bytes.
    pub request_payload: Box<RawValue>,
    /// The last attempt's status (absent when the function never ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_context: Option<ResponseContext>,
    /// The function's response, or its error document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_payload: Option<Box<RawValue>>,
    /// Present when the immortal runner made the record (Lambda never sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immortal: Option<RunnerMarker>,
}

/// `requestContext`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    /// The original request id.
    pub request_id: String,
    /// The function's ARN, with its qualifier (`:$LATEST`).
    pub function_arn: String,
    /// `Success`, `RetriesExhausted` or `EventAgeExceeded`.
    pub condition: String,
    /// How many times the event was tried.
    pub approximate_invoke_count: u32,
}

/// `responseContext`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    /// 200 when the runtime answered (even with an error).
    pub status_code: u16,
    /// The version that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_version: Option<String>,
    /// `Unhandled` or `Handled` on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_error: Option<String>,
}

/// Marks a record the runner produced, so consumers (and the forwarder, when a person
/// redrives it) can tell an overflow outcome from Lambda's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerMarker {
    /// Always `"runner"` or `"forwarder"`: which part wrote it.
    pub source: String,
    /// The version of that part.
    pub version: String,
}

impl DestinationRecord {
    /// `errorType` and `errorMessage` of the response payload, when it is an error document.
    pub fn error(&self) -> (Option<String>, Option<String>) {
        let Some(payload) = &self.response_payload else {
            return (None, None);
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(payload.get()) else {
            return (None, None);
        };
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        (field("errorType"), field("errorMessage"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lambda_record_round_trips() {
        let text = include_str!("../fixtures/destination-retries-exhausted-timeout.json");
        let record: DestinationRecord = serde_json::from_str(text).unwrap();
        assert_eq!(record.request_context.condition, RETRIES_EXHAUSTED);
        assert_eq!(record.request_context.approximate_invoke_count, 1);
        assert_eq!(record.error().0.as_deref(), Some("Sandbox.Timedout"));
        assert!(record.immortal.is_none());
        let again: serde_json::Value = serde_json::to_value(&record).unwrap();
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(text).unwrap());
    }
}
