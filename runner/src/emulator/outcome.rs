//! How one invocation ended, and what that means for the exit code and stdout.

use bytes::Bytes;
use immortal_handler_sdk::ErrorDocument;

use crate::exit::Exit;

/// The result of one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function's response, exact bytes (already written out if it was streamed).
    Response {
        /// The response body.
        body: Bytes,
        /// Whether it arrived as a stream (and was written out as it came).
        streamed: bool,
    },
    /// The invocation failed; `body` is the error JSON Lambda would report.
    Failed {
        /// What failed.
        kind: Failure,
        /// The error document (`{"errorType": ..., "errorMessage": ...}` or the runtime's own).
        body: Bytes,
    },
}

/// The kinds of failure, each with its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The function reported an error, or its runtime died mid-invocation.
    Function,
    /// The runtime failed to initialise.
    Init,
    /// The invocation ran past its limit.
    Timeout,
    /// Killed by a signal (the bootstrap by someone else, or the runner was told to stop).
    Signal(i32),
}

impl Outcome {
    /// A failure with a Lambda-shaped error document.
    pub(crate) fn failed(kind: Failure, error_type: &str, message: &str) -> Outcome {
        Outcome::Failed {
            kind,
            body: error_document(error_type, message),
        }
    }

    /// The exit code for this outcome.
    pub(crate) fn exit(&self) -> Exit {
        match self {
            Outcome::Response { .. } => Exit::Success,
            Outcome::Failed {
                kind: Failure::Function,
                ..
            } => Exit::FunctionError,
            Outcome::Failed {
                kind: Failure::Init, ..
            } => Exit::Init,
            Outcome::Failed {
                kind: Failure::Timeout, ..
            } => Exit::Timeout,
            Outcome::Failed {
                kind: Failure::Signal(n),
                ..
            } => Exit::Signal(*n),
        }
    }

    /// The body: the response, or the error document.
    pub(crate) fn body(&self) -> &Bytes {
        match self {
            Outcome::Response { body, .. } | Outcome::Failed { body, .. } => body,
        }
    }

    /// The `errorType` of a failure, when its document has one.
    pub(crate) fn error_type(&self) -> Option<String> {
        match self {
            Outcome::Response { .. } => None,
            Outcome::Failed { body, .. } => ErrorDocument::read(body).map(|doc| doc.error_type),
        }
    }
}

/// Lambda's error document as bytes.
pub(crate) fn error_document(error_type: &str, message: &str) -> Bytes {
    Bytes::from(ErrorDocument::new(error_type, message).to_json())
}

/// Lambda's message for a timed-out invocation: `Task timed out after 1.00 seconds`.
pub(crate) fn timeout_message(request_id: &str, seconds: f64) -> String {
    format!("RequestId: {request_id} Error: Task timed out after {seconds:.2} seconds")
}

/// The name Go's os/exec (and so Lambda) gives a signal: `killed`, `terminated`...
pub(crate) fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "killed".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGBUS => "bus error".into(),
        libc::SIGILL => "illegal instruction".into(),
        libc::SIGFPE => "floating point exception".into(),
        libc::SIGHUP => "hangup".into(),
        libc::SIGQUIT => "quit".into(),
        libc::SIGPIPE => "broken pipe".into(),
        n => format!("signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_timeout_text() {
        assert_eq!(
            timeout_message("r", 1.0),
            "RequestId: r Error: Task timed out after 1.00 seconds"
        );
        let outcome = Outcome::failed(Failure::Timeout, "Sandbox.Timedout", &timeout_message("r", 2.5));
        assert_eq!(outcome.exit(), Exit::Timeout);
        assert_eq!(outcome.error_type().as_deref(), Some("Sandbox.Timedout"));
    }
}
