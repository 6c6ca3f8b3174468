//! Everything that plays Lambda's sandbox for one invocation: the Runtime API and the
//! Extensions, Telemetry and Logs APIs on loopback ([`runtime_api`], [`extensions`]),
//! admitted only from the function's user ([`peer`]); the bootstrap as a child process
//! with Lambda's environment ([`bootstrap`]); the function's own credentials
//! ([`credentials`]); its logs and the platform's START/END/REPORT records
//! ([`function_logs`]); and the supervisor that turns whatever happens into an
//! [`outcome::Outcome`] ([`supervisor`]). [`invocation`] is the context with every gap
//! filled, as the runtime sees it.

pub(crate) mod bootstrap;
pub(crate) mod credentials;
pub(crate) mod extensions;
pub(crate) mod function_logs;
pub(crate) mod invocation;
pub(crate) mod outcome;
pub(crate) mod peer;
pub(crate) mod platform;
pub(crate) mod runtime_api;
pub(crate) mod supervisor;
