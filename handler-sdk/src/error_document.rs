//! Lambda's error document, `{"errorType": ..., "errorMessage": ...}`: what a runtime
//! reports, what Lambda puts in a failure record, what the Runtime API answers with.
//! One type, built by conversion, never by hand.

use serde::{Deserialize, Serialize};

/// The error document.
///
/// ```
/// use immortal_handler_sdk::error_document::ErrorDocument;
/// let doc = ErrorDocument::new("Sandbox.Timedout", "Task timed out after 3.00 seconds");
/// assert_eq!(doc.to_json(), r#"{"errorType":"Sandbox.Timedout","errorMessage":"Task timed out after 3.00 seconds"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDocument {
    /// `errorType`, e.g. `Runtime.ExitError`.
    pub error_type: String,
    /// `errorMessage`.
    pub error_message: String,
}

impl ErrorDocument {
    /// A document of `error_type` saying `message`.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorDocument {
            error_type: error_type.into(),
            error_message: message.into(),
        }
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an error document serializes")
    }

    /// `errorType` and `errorMessage` of any JSON text that has them (a runtime's own
    /// document may carry more fields, such as `stackTrace`).
    pub fn read(text: &[u8]) -> Option<ErrorDocument> {
        serde_json::from_slice(text).ok()
    }
}

/// An error's message followed by its causes, on one line: `outer: inner: root`.
pub fn message_with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl std::fmt::Display for ErrorDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.error_message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_documents_with_more_fields() {
        let doc = ErrorDocument::read(br#"{"errorType":"ValueError","errorMessage":"x","stackTrace":[]}"#).unwrap();
        assert_eq!(doc, ErrorDocument::new("ValueError", "x"));
        assert!(ErrorDocument::read(b"plain text").is_none());
    }
}
