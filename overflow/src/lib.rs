//! # immortal-overflow
//!
//! What the forwarder and the runner share about overflow traffic, so that a message is
//! judged, relaunched and reported the same way whoever reads it:
//!
//! - [`settings`]: the settings both read from the environment, validated once;
//! - [`policy`]: the failure classes a record reports and which are relaunched;
//! - [`queue_function`]: which function a dead-letter queue belongs to;
//! - [`attached_queues`]: the attached functions' own dead-letter queues, found by tag;
//! - [`functions`]: what an attached function is (one GetFunction, remembered);
//! - [`sender`]: whether a record's sender may run the function it names;
//! - [`triage`]: one message → run it, decline it, pass it on, or keep it queued;
//! - [`carrier`]: the envelope's trip into a container and back;
//! - [`ledger`]: the durable record of every relaunched invocation;
//! - [`metrics`]: CloudWatch metrics in the embedded metric format;
//! - [`publisher`]: destination records to SQS, SNS or EventBridge;
//! - [`store`]: small JSON documents in the payload bucket.
//!
//! The contracts themselves (envelope, record formats, names) are in
//! `immortal-handler-sdk`.
#![deny(missing_docs)]

pub mod attached_queues;
pub mod carrier;
pub mod functions;
pub mod ledger;
pub mod metrics;
pub mod policy;
pub mod publisher;
pub mod queue_function;
pub mod sender;
pub mod settings;
pub mod store;
pub mod triage;

pub use carrier::Carrier;
pub use policy::{FailureClass, RelaunchPolicy};
pub use publisher::{Publisher, Target};
pub use settings::{Lookup, OverflowSettings, SettingError};
pub use triage::{Triage, Triaged, Verdict};
