//! Typed errors of this crate.

/// A malformed envelope, event, context or function reference.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The event text is not JSON.
    #[error("the event is not valid JSON ({source}); pass a JSON document, e.g. --event '{{\"key\":\"value\"}}'")]
    Event {
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// The context text is not a JSON object of the expected shape.
    #[error("the context is not a valid JSON object ({source}); the fields are in the context table of docs/configuration.md (runner --help names them too), e.g. --context '{{\"request_id\":\"...\"}}'")]
    Context {
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A stored envelope document is malformed.
    #[error("the envelope is not valid ({source}); it must be {{\"event\": ..., \"context\": {{...}}}}")]
    Envelope {
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// Not a function name or Lambda function ARN.
    #[error("`{value}` is not a Lambda function name or ARN (expected NAME, NAME:QUALIFIER or arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER])")]
    FunctionRef {
        /// The text given.
        value: String,
    },
    /// Not an `s3://bucket/key` URL.
    #[error("`{value}` is not an s3://BUCKET/KEY location")]
    Location {
        /// The text given.
        value: String,
    },
}
