//! How an attempt the ledger holds is settled once its run is over: one rule for a
//! single task and for each message of a drain worker, so that the same end always
//! leaves the same state and reason behind.

use immortal_overflow::ledger::State;

use crate::emulator::outcome::{signal_name, Outcome};
use crate::error::RunnerError;

/// How the run ended, as far as the ledger cares.
#[derive(Debug)]
pub(crate) enum End<'a> {
    /// The code never ran (the code could not be fetched, the role not assumed...);
    /// `delivered` says whether the failure record that says so went out.
    Unrun { err: &'a RunnerError, delivered: bool },
    /// The code never ran for a reason another attempt may not meet (AWS unavailable):
    /// no record, the attempt is relaunched.
    Unavailable(&'a RunnerError),
    /// The runner was stopped from outside (Spot, scale-in, `podman stop`) by `signal`.
    Stopped(i32),
    /// The function ran to `outcome`; `delivered` says whether its record went out.
    Ran { outcome: &'a Outcome, delivered: bool },
}

/// The state and reason the attempt ends with; `None` leaves it running in the ledger,
/// which relaunches it once this runner's task has stopped.
pub(crate) fn settlement(end: &End<'_>) -> Option<(State, Option<String>)> {
    match end {
        End::Unrun { err, delivered: true } => Some((State::Failed, Some(err.to_string()))),
        End::Unavailable(err) => Some((
            State::Interrupted,
            Some(format!("the run could not start for now: {err}")),
        )),
        // Nothing about the invocation failed: the reconciler relaunches it.
        End::Stopped(signal) => Some((
            State::Interrupted,
            Some(format!("the runner was stopped ({})", signal_name(*signal))),
        )),
        // Undelivered: left unended, so it runs again rather than vanish.
        End::Unrun { delivered: false, .. } | End::Ran { delivered: false, .. } => None,
        End::Ran {
            outcome: Outcome::Response { .. },
            ..
        } => Some((State::Succeeded, None)),
        End::Ran { outcome, .. } => Some((State::Failed, outcome.error_type())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::outcome::Failure;
    use bytes::Bytes;

    #[test]
    fn each_end_settles_once_and_the_same_way() {
        let ok = Outcome::Response {
            body: Bytes::from_static(b"{}"),
            streamed: false,
        };
        let failed = Outcome::failed(Failure::Function, "KeyError", "boom");
        let err = RunnerError::Function("GetFunction failed".into());
        let cases = [
            (
                End::Unrun {
                    err: &err,
                    delivered: true,
                },
                Some((State::Failed, Some(err.to_string()))),
            ),
            (
                End::Unrun {
                    err: &err,
                    delivered: false,
                },
                None,
            ),
            (
                End::Stopped(15),
                Some((State::Interrupted, Some("the runner was stopped (terminated)".into()))),
            ),
            (
                End::Ran {
                    outcome: &ok,
                    delivered: true,
                },
                Some((State::Succeeded, None)),
            ),
            (
                End::Ran {
                    outcome: &failed,
                    delivered: true,
                },
                Some((State::Failed, Some("KeyError".into()))),
            ),
            (
                End::Ran {
                    outcome: &ok,
                    delivered: false,
                },
                None,
            ),
            (
                End::Ran {
                    outcome: &failed,
                    delivered: false,
                },
                None,
            ),
        ];
        for (end, expected) in cases {
            assert_eq!(settlement(&end), expected, "{end:?}");
        }
    }
}
