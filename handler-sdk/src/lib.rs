//! # immortal-handler-sdk
//!
//! Write an AWS Lambda handler once; run it in Lambda and, when an invocation would
//! time out, in the immortal runner, with the same event and context.
//!
//! This crate also owns the contracts every part of immortal shares: the
//! [invocation envelope](envelope), the [container variable names](container),
//! and the overflow queue [record formats](record).
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

#[cfg(feature = "aws")]
pub mod aws;
pub mod container;
pub mod destination;
pub mod envelope;
mod error;
pub mod ffi;
#[cfg(feature = "runtime")]
pub mod handler;
pub mod init_error;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "overflow")]
pub mod outcome;
#[cfg(feature = "overflow")]
pub mod queue_function;
pub mod record;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "overflow")]
pub mod triage;

pub use envelope::{Envelope, InvocationContext, Overflow, OverflowSource};
pub use error::EnvelopeError;
#[cfg(feature = "runtime")]
pub use handler::{Context, Error, Handler, OverflowError};
#[cfg(feature = "runtime")]
pub use runtime::{run, Runtime};
