//! Names shared between the parts: container environment variables, tags, error types.
//!
//! Decided once, here; every other crate uses these constants, never the literals.

/// The original event (JSON), set on the runner's container by the forwarder.
pub const EVENT_VAR: &str = "IMMORTAL_EVENT";
/// The invocation context (JSON), set on the runner's container by the forwarder.
pub const CONTEXT_VAR: &str = "IMMORTAL_CONTEXT";
/// Where a whole envelope is stored when it is too large for the task overrides
/// (`s3://bucket/key`). Takes the place of [`EVENT_VAR`] and [`CONTEXT_VAR`].
pub const ENVELOPE_URL_VAR: &str = "IMMORTAL_ENVELOPE_URL";

/// The overflow queue a drain worker (`runner --queue`) reads; set by the scaler.
pub const QUEUE_URL_VAR: &str = "IMMORTAL_QUEUE_URL";

/// Set by the runner for the bootstrap: the runner's version. Its presence means
/// "running in the overflow runner, not in Lambda".
pub const RUNNER_VAR: &str = "IMMORTAL_RUNNER";
/// Set by the runner for the bootstrap to `1` when the invocation has no time limit
/// (the deadline header then carries a far-future placeholder).
pub const NO_DEADLINE_VAR: &str = "IMMORTAL_NO_DEADLINE";
/// How far ahead the deadline header points when there is no time limit: 21 days, the
/// largest round figure whose remaining milliseconds still fit a signed 32-bit integer
/// (Java's `Context.getRemainingTimeInMillis()` returns `int`).
pub const NO_DEADLINE_SECS: u64 = 21 * 24 * 3600;
/// Set by the runner for the bootstrap, only in overflow runs: the context's
/// `overflow` object as JSON (attempt, original error, source).
pub const OVERFLOW_VAR: &str = "IMMORTAL_OVERFLOW";

/// Queue tag naming the function whose dead-letter queue this is (name or ARN).
pub const FUNCTION_TAG: &str = "immortal:function";
/// Task tag carrying the original request id.
pub const REQUEST_ID_TAG: &str = "immortal:request-id";

/// The error type a handler returns to hand its invocation to the runner at once.
pub const OVERFLOW_ERROR_TYPE: &str = "Immortal.Overflow";
/// Lambda's error type for a timed-out invocation.
pub const TIMEOUT_ERROR_TYPE: &str = "Sandbox.Timedout";
/// The phrase in Lambda's timeout messages, in both the old and new formats.
pub const TIMEOUT_PHRASE: &str = "Task timed out after";
