//! The handler model shared by both homes: a [`Handler`] gets the event and a
//! [`Context`] that says whether it runs with Lambda's clock or without one, and can
//! hand its invocation to the runner early with [`Context::overflow_now`].

use std::future::Future;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::container::{NO_DEADLINE_VAR, OVERFLOW_ERROR_TYPE, OVERFLOW_VAR, RUNNER_VAR};
use crate::envelope::Overflow;
use crate::error_document::{message_with_causes, ErrorDocument};

/// A Lambda handler that runs unchanged in Lambda and in the runner.
///
/// ```
/// use immortal_handler_sdk::{Context, Error, Handler};
///
/// struct Greeter;
///
/// impl Handler for Greeter {
///     type Event = serde_json::Value;
///     type Response = String;
///
///     async fn handle(&self, event: Self::Event, ctx: Context) -> Result<String, Error> {
///         if event["size"].as_u64() > Some(1 << 30) {
///             ctx.overflow_now("too big to finish within Lambda's limit")?;
///         }
///         Ok(format!("hello {}", event["name"]))
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// The event type (deserialized from the invocation's JSON).
    type Event: DeserializeOwned + Send + 'static;
    /// The response type (serialized to JSON).
    type Response: Serialize + Send + 'static;
    /// Handles one invocation.
    fn handle(&self, event: Self::Event, ctx: Context) -> impl Future<Output = Result<Self::Response, Error>> + Send;
}

/// The invocation's context: Lambda's own, plus where the clock and the overflow stand.
#[derive(Debug, Clone)]
pub struct Context {
    /// What Lambda (or the runner) told the runtime.
    pub lambda: lambda_runtime::Context,
    overflow: Option<Overflow>,
    unlimited: bool,
    in_runner: bool,
}

impl Context {
    /// A context from Lambda's, with the runner's markers read from the environment.
    pub fn from_lambda(lambda: lambda_runtime::Context) -> Self {
        Context {
            lambda,
            overflow: std::env::var(OVERFLOW_VAR)
                .ok()
                .and_then(|json| serde_json::from_str(&json).ok()),
            unlimited: std::env::var(NO_DEADLINE_VAR).is_ok_and(|v| v == "1"),
            in_runner: std::env::var_os(RUNNER_VAR).is_some(),
        }
    }

    /// A context for an in-process run in the runner (no clock).
    pub fn in_process(lambda: lambda_runtime::Context, overflow: Option<Overflow>) -> Self {
        Context {
            lambda,
            overflow,
            unlimited: true,
            in_runner: true,
        }
    }

    /// The request id (the original one in an overflow run).
    pub fn request_id(&self) -> &str {
        &self.lambda.request_id
    }

    /// The ARN the function was invoked with.
    pub fn invoked_function_arn(&self) -> &str {
        &self.lambda.invoked_function_arn
    }

    /// Time left before the invocation is killed; `None` when there is no limit (the runner).
    pub fn remaining(&self) -> Option<Duration> {
        if self.unlimited {
            return None;
        }
        Some(
            self.lambda
                .deadline()
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
        )
    }

    /// Whether this run is an overflow (the invocation failed in Lambda first).
    pub fn is_overflow(&self) -> bool {
        self.overflow.is_some()
    }

    /// The overflow details: attempt, Lambda's error, where the record came from.
    pub fn overflow(&self) -> Option<&Overflow> {
        self.overflow.as_ref()
    }

    /// Whether the immortal runner runs this invocation (rather than Lambda).
    pub fn in_runner(&self) -> bool {
        self.in_runner
    }

    /// Hands the invocation to the runner at once, instead of waiting for Lambda to
    /// kill it: under a time limit this returns an error to propagate with `?` (errorType
    /// `Immortal.Overflow`, which the forwarder relaunches); without one (already in the
    /// runner) it returns `Ok(())` and the handler carries on.
    pub fn overflow_now(&self, reason: impl Into<String>) -> Result<(), OverflowError> {
        match self.remaining() {
            None => Ok(()),
            Some(_) => Err(OverflowError { reason: reason.into() }),
        }
    }
}

/// "Run me in the runner": ends a Lambda invocation with errorType `Immortal.Overflow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverflowError {
    reason: String,
}

impl OverflowError {
    /// An overflow for `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        OverflowError { reason: reason.into() }
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl std::fmt::Display for OverflowError {
    /// `Immortal.Overflow: reason`: the prefix survives dead-letter queues, which keep
    /// only the message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{OVERFLOW_ERROR_TYPE}: {}", self.reason)
    }
}

impl From<OverflowError> for lambda_runtime::Diagnostic {
    fn from(err: OverflowError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: OVERFLOW_ERROR_TYPE.to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// A handler's error: any error converts with `?` (its type's name becomes the
/// errorType), [`Error::new`] picks the errorType, and an [`OverflowError`] stays an
/// `Immortal.Overflow`.
pub struct Error(lambda_runtime::Diagnostic);

impl Error {
    /// An error with an explicit errorType, e.g. `Thumbnail.NoFrame`.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Error(lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: message.into(),
        })
    }

    /// The errorType.
    pub fn error_type(&self) -> &str {
        &self.0.error_type
    }

    /// The errorMessage.
    pub fn message(&self) -> &str {
        &self.0.error_message
    }

    /// The error document Lambda reports: `{"errorType": ..., "errorMessage": ...}`.
    pub fn to_json(&self) -> String {
        ErrorDocument::from(self).to_json()
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(err: E) -> Self {
        let full = std::any::type_name::<E>();
        let short = full
            .split('<')
            .next()
            .unwrap_or(full)
            .rsplit("::")
            .next()
            .unwrap_or(full);
        Error::new(short, message_with_causes(&err))
    }
}

impl From<OverflowError> for Error {
    fn from(err: OverflowError) -> Self {
        Error(err.into())
    }
}

impl From<&Error> for ErrorDocument {
    fn from(err: &Error) -> Self {
        ErrorDocument::new(err.error_type(), err.message())
    }
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(err: Error) -> Self {
        err.0
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.error_type, self.0.error_message)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.error_message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(deadline_ms: u64, unlimited: bool) -> Context {
        let mut lambda = lambda_runtime::Context::default();
        lambda.deadline = deadline_ms;
        Context {
            lambda,
            overflow: None,
            unlimited,
            in_runner: unlimited,
        }
    }

    #[test]
    fn overflow_now_hands_off_only_under_a_limit() {
        let soon = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 60_000;
        let in_lambda = context(soon, false);
        assert!(in_lambda.remaining().unwrap() <= Duration::from_secs(60));
        let err: Error = in_lambda.overflow_now("big").unwrap_err().into();
        assert_eq!(err.error_type(), "Immortal.Overflow");
        assert_eq!(err.message(), "Immortal.Overflow: big");
        let in_runner = context(soon, true);
        assert_eq!(in_runner.remaining(), None);
        assert!(in_runner.overflow_now("big").is_ok());
    }

    #[test]
    fn any_error_converts_with_its_type_name() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let err: Error = io.into();
        assert_eq!((err.error_type(), err.message()), ("Error", "gone"));
        let parse: Error = "x".parse::<u32>().unwrap_err().into();
        assert_eq!(parse.error_type(), "ParseIntError");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&parse.to_json()).unwrap()["errorType"],
            "ParseIntError"
        );
    }
}
