//! The test harness: real binaries, real zips, a real local AWS emulator.
//!
//! - [`runner`]: builds and runs the `runner` binary and captures what it did.
//! - [`zips`]: code zips the way `cargo lambda build --output-format zip` makes them.

pub mod runner;
pub mod zips;
