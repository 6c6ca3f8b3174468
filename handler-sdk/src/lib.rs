//! # immortal-handler-sdk
//!
//! Write an AWS Lambda handler once; run it in Lambda and, when an invocation would
//! time out, in the immortal runner, with the same event and context.
//!
//! For handler authors: [`Handler`], [`Context`] (with [`Context::overflow_now`]),
//! [`run`]/[`Runtime`] for a `bootstrap`, and [`export_handler!`] for `runner --lib`.
//!
//! This crate also owns the contracts every part of immortal shares, small enough to
//! read whole: the [invocation envelope](envelope), [function references](function_ref)
//! and context defaults, the [names](container) (variables, tags, error types), the
//! overflow queue [record formats](record), the [destination record](destination) and
//! the [error document](error_document). The AWS plumbing that carries them lives in
//! `immortal-overflow`.
#![deny(missing_docs)]

#[cfg(feature = "aws")]
pub mod arn;
pub mod aws;
pub mod container;
pub mod destination;
pub mod envelope;
mod error;
pub mod error_document;
pub mod ffi;
pub mod function_ref;
#[cfg(feature = "runtime")]
pub mod handler;
pub mod init_error;
#[cfg(feature = "logging")]
pub mod logging;
pub mod record;
#[cfg(feature = "runtime")]
pub mod runtime;

pub use envelope::{Envelope, InvocationContext, Overflow, OverflowSource};
pub use error::EnvelopeError;
pub use error_document::ErrorDocument;
pub use function_ref::FunctionRef;
#[cfg(feature = "runtime")]
pub use handler::{Context, Error, Handler, OverflowError};
#[cfg(feature = "runtime")]
pub use runtime::{run, Runtime};
