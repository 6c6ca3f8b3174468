//! The invocation envelope: everything needed to replay one Lambda invocation.
//!
//! One JSON document, `{"event": ..., "context": {...}}`. The event is kept as the
//! exact JSON text it arrived as (never re-serialized), and unknown context fields
//! are kept, so an envelope survives any number of hops unchanged.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::EnvelopeError;

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

/// A function reference split out of a Lambda function ARN or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    /// The function's name (no qualifier).
    pub name: String,
    /// `$LATEST`, a version number or an alias, when the reference carried one.
    pub qualifier: Option<String>,
    /// The region, when the reference was an ARN.
    pub region: Option<String>,
    /// The account id, when the reference was an ARN.
    pub account: Option<String>,
}

impl FunctionRef {
    /// Parses `NAME`, `NAME:QUALIFIER`, or `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
    ///
    /// ```
    /// use immortal_handler_sdk::envelope::FunctionRef;
    /// let f = FunctionRef::parse("arn:aws:lambda:eu-west-1:123456789012:function:thumb:live").unwrap();
    /// assert_eq!((f.name.as_str(), f.qualifier.as_deref()), ("thumb", Some("live")));
    /// ```
    pub fn parse(text: &str) -> Result<Self, EnvelopeError> {
        let bad = || EnvelopeError::FunctionRef { value: text.to_owned() };
        if let Some(rest) = text.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.split(':').collect();
            // partition, service, region, account, "function", name[, qualifier]
            if parts.len() < 6
                || parts.len() > 7
                || parts[1] != "lambda"
                || parts[4] != "function"
                || parts[5].is_empty()
            {
                return Err(bad());
            }
            return Ok(FunctionRef {
                name: parts[5].to_owned(),
                qualifier: parts.get(6).map(|q| q.to_string()).filter(|q| !q.is_empty()),
                region: Some(parts[2].to_owned()).filter(|r| !r.is_empty()),
                account: Some(parts[3].to_owned()).filter(|a| !a.is_empty()),
            });
        }
        let mut split = text.splitn(2, ':');
        let name = split.next().unwrap_or_default();
        if name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        Ok(FunctionRef {
            name: name.to_owned(),
            qualifier: split.next().map(str::to_owned).filter(|q| !q.is_empty()),
            region: None,
            account: None,
        })
    }

    /// The ARN of this function in `region`/`account`, qualified when a qualifier is known.
    pub fn arn(&self, default_region: &str, default_account: &str) -> String {
        let region = self.region.as_deref().unwrap_or(default_region);
        let account = self.account.as_deref().unwrap_or(default_account);
        match &self.qualifier {
            Some(q) => format!("arn:aws:lambda:{region}:{account}:function:{}:{q}", self.name),
            None => format!("arn:aws:lambda:{region}:{account}:function:{}", self.name),
        }
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

    #[test]
    fn function_refs() {
        let f = FunctionRef::parse("thumb").unwrap();
        assert_eq!((f.name.as_str(), f.qualifier), ("thumb", None));
        let f = FunctionRef::parse("thumb:7").unwrap();
        assert_eq!(f.qualifier.as_deref(), Some("7"));
        assert_eq!(f.arn("us-east-1", "1"), "arn:aws:lambda:us-east-1:1:function:thumb:7");
        let f = FunctionRef::parse("arn:aws:lambda:us-east-1:123456789012:function:thumb:$LATEST").unwrap();
        assert_eq!(f.qualifier.as_deref(), Some("$LATEST"));
        assert_eq!(
            f.arn("x", "y"),
            "arn:aws:lambda:us-east-1:123456789012:function:thumb:$LATEST"
        );
        assert!(FunctionRef::parse("arn:aws:s3:::bucket").is_err());
        assert!(FunctionRef::parse("").is_err());
    }
}
