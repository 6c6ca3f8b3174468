//! What went wrong, in one line that says what to do, and the exit code for each kind
//! (documented in docs/operate.md).

use immortal_dlq_forwarder::error::ForwardError;
use immortal_dlq_forwarder::steer::SteerError;
use immortal_overflow::ledger::LedgerError;

/// Exit codes, one per kind of failure (0 is done).
pub mod code {
    /// Something unexpected (a bug, or an AWS failure not covered below).
    pub const FAILED: i32 = 1;
    /// A bad command line or a setting missing (clap uses 2 for its own errors too).
    pub const USAGE: i32 = 2;
    /// The ledger has no such invocation.
    pub const UNKNOWN: i32 = 3;
    /// AWS refused or has not what the settings name: no bucket, no stack, no permission.
    pub const AWS: i32 = 4;
    /// Not possible in the invocation's state: stopping an ended one, replaying a live one.
    pub const REFUSED: i32 = 5;
}

/// A command's failure.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A setting is missing or invalid.
    #[error("{0}")]
    Usage(String),
    /// No such invocation.
    #[error("{0}")]
    Unknown(String),
    /// AWS refused or has not what the settings name.
    #[error("{0}")]
    Aws(String),
    /// Not possible now.
    #[error("{0}")]
    Refused(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process's exit code.
    pub fn code(&self) -> i32 {
        match self {
            CliError::Usage(_) => code::USAGE,
            CliError::Unknown(_) => code::UNKNOWN,
            CliError::Aws(_) => code::AWS,
            CliError::Refused(_) => code::REFUSED,
            CliError::Failed(_) => code::FAILED,
        }
    }

    /// An AWS call's failure, with what to do about the usual ones.
    pub fn aws(what: &str, detail: &str) -> CliError {
        let hint = if detail.contains("NoSuchBucket") {
            " (the payload bucket does not exist: check IMMORTAL_PAYLOAD_BUCKET, or give --stack NAME)"
        } else if detail.contains("AccessDenied") || detail.contains("not authorized") {
            " (your credentials lack the permission named above: see docs/operate.md for the rights each command needs)"
        } else if detail.contains("does not exist") || detail.contains("ResourceNotFound") {
            " (check the name, the account and the region: AWS_REGION or --region)"
        } else {
            ""
        };
        let refused = [
            "NoSuchBucket",
            "AccessDenied",
            "not authorized",
            "does not exist",
            "ResourceNotFound",
            "ValidationError",
        ];
        let message = format!("{what}: {detail}{hint}");
        if refused.iter().any(|r| detail.contains(r)) {
            CliError::Aws(message)
        } else {
            CliError::Failed(message)
        }
    }
}

impl From<LedgerError> for CliError {
    fn from(e: LedgerError) -> Self {
        match &e {
            LedgerError::Store { at, reason } => CliError::aws(&format!("cannot read the ledger at {at}"), reason),
            _ => CliError::Failed(e.to_string()),
        }
    }
}

impl From<SteerError> for CliError {
    fn from(e: SteerError) -> Self {
        match e {
            SteerError::Unknown(_) => CliError::Unknown(e.to_string()),
            SteerError::Ended { .. } | SteerError::NotReplayable { .. } | SteerError::Unrunnable { .. } => {
                CliError::Refused(e.to_string())
            }
            SteerError::Forward(ForwardError::Ledger(e)) => e.into(),
            SteerError::Forward(e) => CliError::aws("AWS refused", &e.to_string()),
        }
    }
}
