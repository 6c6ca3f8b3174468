//! The runner's exit codes: one place, documented in `--help` and docs/exit-codes.md.

use std::process::ExitCode;

/// How a run ended, as the process exit code tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the function returned a response.
    Success,
    /// 1: the function returned an error (its error JSON is on stdout).
    FunctionError,
    /// 2: bad usage or bad input (e.g. the event is not JSON).
    Usage,
    /// 3: the code could not be obtained, verified or unpacked.
    Code,
    /// 4: the runtime failed to initialise (init/error, or it exited before asking for the event).
    Init,
    /// 5: the invocation ran past `--timeout`.
    Timeout,
    /// 6: the result could not be delivered to its destination (written to the log in full instead).
    Undelivered,
    /// 7: a drain worker stopped taking work: what a function left could not be cleared.
    Tainted,
    /// 8: AWS did not answer for now (throttled, 5xx, unreachable, after retries) before
    /// the function ran: an attempt the ledger holds is relaunched, nothing failed.
    Unavailable,
    /// 128+N: killed by signal N (the bootstrap, or the runner itself via SIGTERM/SIGINT).
    Signal(i32),
}

impl Exit {
    /// The numeric process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::FunctionError => 1,
            Exit::Usage => 2,
            Exit::Code => 3,
            Exit::Init => 4,
            Exit::Timeout => 5,
            Exit::Undelivered => 6,
            Exit::Tainted => 7,
            Exit::Unavailable => 8,
            Exit::Signal(n) => (128 + n.clamp(1, 127)) as u8,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// The exit-code table as printed at the end of `--help`.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0      the function returned a response (on stdout)
  1      the function returned an error (its error JSON on stdout)
  2      bad usage or bad input (e.g. the event is not JSON)
  3      the code could not be obtained, verified or unpacked
  4      the runtime failed to initialise (init/error, or exit before the event)
  5      timed out (--timeout)
  6      the outcome record could not be delivered (kept whole; the log says where)
  7      a drain worker stopped: what a function left could not be cleared
  8      AWS did not answer for now (throttled, 5xx, unreachable) before the run
  128+N  killed by signal N (143: SIGTERM, 137: SIGKILL)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_codes() {
        assert_eq!(Exit::Signal(15).code(), 143);
        assert_eq!(Exit::Signal(9).code(), 137);
        assert_eq!(Exit::Timeout.code(), 5);
    }
}
