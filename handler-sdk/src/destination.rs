//! Lambda's asynchronous-invocation destination record (OnSuccess / OnFailure), the
//! shape Lambda puts on a destination queue and the runner reports outcomes in.

use serde::{Deserialize, Serialize};

use crate::arn::Arn;
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
    /// `"runner"` or `"forwarder"`: which part wrote it.
    pub source: String,
    /// The version of that part.
    pub version: String,
    /// Set on a pointer record (the full one was too large for its destination): where
    /// the full record is stored, `s3://bucket/key`. The payloads are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_location: Option<String>,
    /// Why immortal did not run the invocation, when it passed a record on unrun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How an invocation ended, for [`DestinationRecord::outcome`].
#[derive(Debug, Clone)]
pub struct OutcomeFacts<'a> {
    /// The original request id.
    pub request_id: &'a str,
    /// The function ARN as invoked (a missing qualifier becomes the executed version).
    pub function_arn: &'a str,
    /// The version that ran.
    pub executed_version: &'a str,
    /// Lambda's attempts plus this one.
    pub invoke_count: u32,
    /// The original event.
    pub request_payload: &'a RawValue,
    /// Whether the function succeeded.
    pub success: bool,
    /// The response, or the error document.
    pub response: &'a [u8],
    /// RFC 3339 time with milliseconds.
    pub timestamp: String,
    /// Which part writes the record, and its version.
    pub marker: (&'a str, &'a str),
}

impl DestinationRecord {
    /// The record Lambda would send to OnSuccess / OnFailure for this outcome, marked
    /// as coming from immortal.
    pub fn outcome(facts: OutcomeFacts<'_>) -> DestinationRecord {
        // `function:NAME:QUALIFIER` already names the version that ran.
        let qualified = if Arn::parse(facts.function_arn).is_some_and(|arn| arn.resource_parts().len() >= 3) {
            facts.function_arn.to_owned()
        } else {
            format!("{}:{}", facts.function_arn, facts.executed_version)
        };
        let response = std::str::from_utf8(facts.response)
            .ok()
            .and_then(|text| RawValue::from_string(text.trim().to_owned()).ok())
            .unwrap_or_else(|| {
                let text = serde_json::Value::String(String::from_utf8_lossy(facts.response).into_owned());
                RawValue::from_string(text.to_string()).expect("a JSON string")
            });
        DestinationRecord {
            version: "1.0".to_owned(),
            timestamp: facts.timestamp,
            request_context: RequestContext {
                request_id: facts.request_id.to_owned(),
                function_arn: qualified,
                condition: if facts.success { SUCCESS } else { RETRIES_EXHAUSTED }.to_owned(),
                approximate_invoke_count: facts.invoke_count,
            },
            request_payload: facts.request_payload.to_owned(),
            response_context: Some(ResponseContext {
                status_code: 200,
                executed_version: Some(facts.executed_version.to_owned()),
                function_error: (!facts.success).then(|| "Unhandled".to_owned()),
            }),
            response_payload: Some(response),
            immortal: Some(RunnerMarker {
                source: facts.marker.0.to_owned(),
                version: facts.marker.1.to_owned(),
                record_location: None,
                reason: None,
            }),
        }
    }

    /// Where the full record is, when this is a pointer record.
    pub fn record_location(&self) -> Option<&str> {
        self.immortal.as_ref().and_then(|m| m.record_location.as_deref())
    }

    /// This record as a pointer to the full one stored at `location`.
    pub fn pointer(&self, location: &str) -> DestinationRecord {
        let mut pointer = self.clone();
        pointer.request_payload = RawValue::from_string("null".to_owned()).expect("null is JSON");
        pointer.response_payload = None;
        let marker = pointer.immortal.get_or_insert_with(|| RunnerMarker {
            source: "runner".into(),
            version: String::new(),
            record_location: None,
            reason: None,
        });
        marker.record_location = Some(location.to_owned());
        pointer
    }

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
    fn outcome_records_look_like_lambdas() {
        let event = RawValue::from_string(r#"{"k":1}"#.into()).unwrap();
        let facts = OutcomeFacts {
            request_id: "r-1",
            function_arn: "arn:aws:lambda:us-east-1:1:function:thumb",
            executed_version: "$LATEST",
            invoke_count: 2,
            request_payload: &event,
            success: false,
            response: br#"{"errorType":"X","errorMessage":"y"}"#,
            timestamp: "2026-11-22T10:00:00.000Z".into(),
            marker: ("runner", "0.1.0"),
        };
        let record = DestinationRecord::outcome(facts.clone());
        let json: serde_json::Value = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json["requestContext"]["functionArn"],
            "arn:aws:lambda:us-east-1:1:function:thumb:$LATEST"
        );
        assert_eq!(json["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(json["responseContext"]["functionError"], "Unhandled");
        assert_eq!(json["responsePayload"]["errorType"], "X");
        assert_eq!(json["immortal"]["source"], "runner");
        let ok = DestinationRecord::outcome(OutcomeFacts {
            success: true,
            response: b"plain text",
            ..facts
        });
        let json: serde_json::Value = serde_json::to_value(&ok).unwrap();
        assert_eq!(json["requestContext"]["condition"], "Success");
        assert!(json["responseContext"].get("functionError").is_none());
        assert_eq!(
            json["responsePayload"], "plain text",
            "a non-JSON response becomes a JSON string"
        );
        let pointer = ok.pointer("s3://b/k");
        assert_eq!(pointer.record_location(), Some("s3://b/k"));
        assert_eq!(pointer.request_payload.get(), "null");
    }

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
