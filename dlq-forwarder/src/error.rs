//! Why the forwarder could not finish something now. Each is a batch item failure (the
//! message comes back) or a sweep's `Failed` (the next sweep tries again): nothing here
//! ends an invocation.

use immortal_handler_sdk::aws::CallFailed;
use immortal_handler_sdk::EnvelopeError;
use immortal_overflow::carrier::CarrierError;
use immortal_overflow::ledger::LedgerError;
use immortal_overflow::publisher::PublishError;

use crate::launch::LaunchError;

/// A failure to be retried.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The record names no request id, which the ledger is keyed by.
    #[error("the record has no request id")]
    NoRequestId,
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A ledger entry holds something that does not parse (written by another version?).
    #[error("the ledger entry's {what} is unusable: {source}")]
    Entry {
        /// Which field.
        what: &'static str,
        /// Why.
        source: EnvelopeError,
    },
    /// Another delivery of the same invocation holds its launch.
    #[error("attempt {attempt} of {request_id} is being started by another forwarder; this delivery waits")]
    Busy {
        /// The attempt being started.
        attempt: u32,
        /// The invocation.
        request_id: String,
    },
    /// RunTask did not start the task.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The attempt's stored envelope could not be read.
    #[error(transparent)]
    Envelope(#[from] CarrierError),
    /// The failure record could not be delivered.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// An AWS call failed (GetFunctionConfiguration, DescribeTasks, ListTasks...).
    #[error(transparent)]
    Aws(#[from] CallFailed),
}
