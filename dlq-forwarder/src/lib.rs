//! # immortal-dlq-forwarder
//!
//! A Lambda function on the overflow queue: every timed-out invocation becomes exactly
//! one ECS Fargate task of the immortal runner, and no message is lost.
//!
//! [`config`] (validated at init), [`forward`] (one batch), [`runtimes`] (which task
//! definition runs a function; [`image_task`] for container-image functions), [`size`] (how large its task is), [`launch`] (RunTask, the overrides budget, the
//! idempotency token), [`reconcile`] (a stopped task without an outcome → the next
//! attempt), [`sweep`] (the periodic sweep: what the events missed, at scale), [`steer`] (a person's
//! stop and replay), and the scaling mode ([`scale`]).
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod forward;
pub mod image_task;
pub mod launch;
pub mod reconcile;
pub mod runtimes;
pub mod scale;
pub mod size;
pub mod steer;
pub mod sweep;
