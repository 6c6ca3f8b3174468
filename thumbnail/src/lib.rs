//! # immortal-thumbnail
//!
//! The demo workload: a video lands in S3, a PNG of one frame lands in S3. One handler,
//! two homes: a `bootstrap` for Lambda and the runner, and a `cdylib` for `runner --lib`.
#![deny(missing_docs)]

pub mod config;
pub mod ffmpeg;
pub mod handler;
pub mod position;

pub use handler::Thumbnail;

immortal_handler_sdk::export_handler!(Thumbnail, Thumbnail::from_env());
