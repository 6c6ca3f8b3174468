//! The test harness: real binaries, real zips, a real local AWS emulator.
//!
//! - [`runner`]: builds and runs the `runner` binary and captures what it did.
//! - [`emulator`]: moto's server on a free port; [`server`]: a programmable HTTP server.
//! - [`zips`]: code zips the way `cargo lambda build --output-format zip` makes them.
//! - [`registry`]: ECR's image reads, where the emulator cannot serve them.
//! - [`container`]: the runner image, run as Fargate runs it (podman, stand-in bases).
//! - [`osls`]: Serverless Framework services packaged offline, and readers of the
//!   CloudFormation they generate.

pub mod container;
pub mod ecs;
pub mod emulator;
pub mod fake_lambda;
pub mod fargate;
pub mod hand_off;
pub mod image_user;
pub mod lambda;
pub mod osls;
pub mod queue;
pub mod registry;
pub mod rehearsal;
pub mod runner;
pub mod s3;
pub mod server;
pub mod video;
pub mod zips;
