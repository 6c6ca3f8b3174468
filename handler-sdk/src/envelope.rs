//! The invocation envelope: everything needed to replay one Lambda invocation.
//!
//! One JSON document, `{"event": ..., "context": {...}}`. The event is kept as the
//! exact JSON text it arrived as (never re-serialized), and unknown context fields
//! are kept, so an envelope survives any number of hops unchanged.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::EnvelopeError;
use crate::function_ref::FunctionRef;

/// The original event and context of one invocation.
///
/// ```
/// use immortal_handler_sdk::envelope::Envelope;
///
/// let envelope = Envelope::from_parts(r#"{"key":"clip_00-03.mp4"}"#, r#"{"request_id":"abc"}"#).unwrap();
/// assert_eq!(envelope.context.request_id.as_deref(), Some("abc"));
/// assert_eq!(envelope.event.get(), r#"{"key":"clip_00-03.mp4"}"#);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The original event, byte for byte as it was received.
    pub event: Box<RawValue>,
    /// What Lambda told the function about the invocation, plus where the overflow came from.
    #[serde(default)]
    pub context: InvocationContext,
}

impl Envelope {
    /// Builds an envelope from the two halves as JSON text; a blank context means "all defaults".
    pub fn from_parts(event: &str, context: &str) -> Result<Self, EnvelopeError> {
        let event = parse_event(event)?;
        let context = if context.trim().is_empty() {
            InvocationContext::default()
        } else {
            serde_json::from_str(context).map_err(|source| EnvelopeError::Context { source })?
        };
        Ok(Envelope { event, context })
    }

    /// Parses a whole envelope document (as stored at `IMMORTAL_ENVELOPE_URL`).
    pub fn from_json(text: &str) -> Result<Self, EnvelopeError> {
        serde_json::from_str(text).map_err(|source| EnvelopeError::Envelope { source })
    }

    /// The envelope as one compact JSON document.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serializes")
    }

    /// The context half alone, as compact JSON (what `IMMORTAL_CONTEXT` carries).
    pub fn context_json(&self) -> String {
        serde_json::to_string(&self.context).expect("a context always serializes")
    }
}

/// Parses event text into a raw JSON value, keeping its bytes (surrounding white space trimmed).
pub fn parse_event(text: &str) -> Result<Box<RawValue>, EnvelopeError> {
    RawValue::from_string(text.trim().to_owned()).map_err(|source| EnvelopeError::Event { source })
}

/// The context of an invocation. Field names follow `lambda_runtime::Context` where one
/// exists. Every field is optional on input; whoever runs the envelope fills the gaps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvocationContext {
    /// The original Lambda request id (kept across the overflow, never renewed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoked_function_arn: Option<String>,
    /// The function's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_name: Option<String>,
    /// The executed version, `$LATEST` or a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_version: Option<String>,
    /// The function's configured memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_in_mb: Option<u32>,
    /// The X-Ray trace header of the original invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xray_trace_id: Option<String>,
    /// The mobile SDK client context, as Lambda passes it (JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_context: Option<Value>,
    /// The Cognito identity, as Lambda passes it (JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Value>,
    /// The tenant id of a tenant-isolated function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// CloudWatch log group of the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group_name: Option<String>,
    /// CloudWatch log stream of the original invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_stream_name: Option<String>,
    /// Why and from where this invocation overflowed; absent for a plain local run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<Overflow>,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The context's field names, as [`InvocationContext`] reads them.
pub const CONTEXT_FIELDS: [&str; 12] = [
    "request_id",
    "invoked_function_arn",
    "function_name",
    "function_version",
    "memory_limit_in_mb",
    "xray_trace_id",
    "client_context",
    "identity",
    "tenant_id",
    "log_group_name",
    "log_stream_name",
    "overflow",
];

/// The known context field a person most likely meant by `name`, as other tools spell it
/// (`aws_request_id` and `awsRequestId` of Python's and Node's context objects,
/// `functionName`, `memoryLimitInMB`...), or `None`.
///
/// ```
/// use immortal_handler_sdk::envelope::nearest_context_field;
/// assert_eq!(nearest_context_field("aws_request_id"), Some("request_id"));
/// assert_eq!(nearest_context_field("functionName"), Some("function_name"));
/// assert_eq!(nearest_context_field("memoryLimitInMB"), Some("memory_limit_in_mb"));
/// assert_eq!(nearest_context_field("function_nme"), Some("function_name"));
/// assert_eq!(nearest_context_field("colour"), None);
/// ```
pub fn nearest_context_field(name: &str) -> Option<&'static str> {
    let plain = |s: &str| -> String {
        let s: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        s.strip_prefix("aws").map(str::to_owned).unwrap_or(s)
    };
    let wanted = plain(name);
    let mut best: Option<(usize, &'static str)> = None;
    for known in CONTEXT_FIELDS {
        let distance = edit_distance(&wanted, &plain(known));
        if distance <= 2 && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, known));
        }
    }
    best.map(|(_, known)| known)
}

/// Levenshtein distance, for short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut last = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (last + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
            last = here;
        }
    }
    row[b.len()]
}

impl InvocationContext {
    /// The function this context names: its `invoked_function_arn`, else its
    /// `function_name`; `None` when it names none.
    pub fn function_ref(&self) -> Result<Option<FunctionRef>, EnvelopeError> {
        self.invoked_function_arn
            .as_deref()
            .or(self.function_name.as_deref())
            .map(FunctionRef::parse)
            .transpose()
    }
}

/// How an invocation came to overflow into the runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overflow {
    /// Lambda attempts so far, plus one: the attempt the runner makes.
    pub attempt: u32,
    /// Lambda's error type for the failed attempt, e.g. `Sandbox.Timedout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// Lambda's error message for the failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Where the overflow record came from.
    pub source: OverflowSource,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Where an overflow record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverflowSource {
    /// A function's dead-letter queue (DeadLetterConfig).
    Dlq,
    /// An asynchronous-invocation OnFailure destination record.
    Destination,
    /// Started by a person.
    Manual,
}

impl std::fmt::Display for OverflowSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OverflowSource::Dlq => "dlq",
            OverflowSource::Destination => "destination",
            OverflowSource::Manual => "manual",
        })
    }
}

/// An object in S3, written `s3://BUCKET/KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key (may contain slashes).
    pub key: String,
}

impl S3Location {
    /// Parses `s3://BUCKET/KEY`.
    ///
    /// ```
    /// use immortal_handler_sdk::envelope::S3Location;
    /// let at = S3Location::parse("s3://payloads/envelopes/r-1.json").unwrap();
    /// assert_eq!((at.bucket.as_str(), at.key.as_str()), ("payloads", "envelopes/r-1.json"));
    /// assert_eq!(at.to_string(), "s3://payloads/envelopes/r-1.json");
    /// ```
    pub fn parse(text: &str) -> Result<Self, EnvelopeError> {
        let bad = || EnvelopeError::Location { value: text.to_owned() };
        let rest = text.strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, key) = rest.split_once('/').ok_or_else(bad)?;
        if bucket.is_empty() || key.is_empty() {
            return Err(bad());
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_context_fields_are_the_structs_own() {
        let full = InvocationContext {
            request_id: Some("r".into()),
            invoked_function_arn: Some("a".into()),
            function_name: Some("f".into()),
            function_version: Some("1".into()),
            memory_limit_in_mb: Some(1),
            xray_trace_id: Some("x".into()),
            client_context: Some(Value::Null),
            identity: Some(Value::Null),
            tenant_id: Some("t".into()),
            log_group_name: Some("g".into()),
            log_stream_name: Some("s".into()),
            overflow: Some(Overflow {
                attempt: 1,
                error_type: None,
                error_message: None,
                source: OverflowSource::Manual,
                extra: Map::new(),
            }),
            extra: Map::new(),
        };
        let written = serde_json::to_value(&full).unwrap();
        let mut keys: Vec<&str> = written.as_object().unwrap().keys().map(String::as_str).collect();
        let mut known = CONTEXT_FIELDS.to_vec();
        keys.sort_unstable();
        known.sort_unstable();
        assert_eq!(keys, known);
    }

    #[test]
    fn event_bytes_survive_a_round_trip() {
        let event = "{ \"b\": 1,\n \"a\": [1.50, \"\\u00e9\"] }";
        let envelope = Envelope::from_parts(event, "").unwrap();
        let again = Envelope::from_json(&envelope.to_json()).unwrap();
        assert_eq!(again.event.get(), event.trim());
    }

    #[test]
    fn unknown_context_fields_are_kept() {
        let context = r#"{"request_id":"r1","deadline":123,"overflow":{"attempt":2,"source":"dlq","hint":"x"}}"#;
        let envelope = Envelope::from_parts("{}", context).unwrap();
        assert_eq!(envelope.context.extra["deadline"], 123);
        let overflow = envelope.context.overflow.as_ref().unwrap();
        assert_eq!(overflow.extra["hint"], "x");
        let back: Value = serde_json::from_str(&envelope.context_json()).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(context).unwrap());
    }

    #[test]
    fn null_fields_read_as_absent() {
        let envelope = Envelope::from_parts("[]", r#"{"xray_trace_id":null,"identity":null}"#).unwrap();
        assert_eq!(envelope.context, InvocationContext::default());
    }

    #[test]
    fn malformed_halves_name_themselves() {
        let err = Envelope::from_parts("{not json", "").unwrap_err();
        assert!(err.to_string().starts_with("the event is not valid JSON"), "{err}");
        let err = Envelope::from_parts("{}", "[1]").unwrap_err();
        assert!(
            err.to_string().starts_with("the context is not a valid JSON object"),
            "{err}"
        );
    }

    #[test]
    fn s3_locations() {
        assert!(S3Location::parse("s3://b").is_err());
        assert!(S3Location::parse("s3:///k").is_err());
        assert!(S3Location::parse("https://b/k").is_err());
    }
}
