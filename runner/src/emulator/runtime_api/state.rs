//! The one place that owns the invocation's phase.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{ApiEvent, ResponseSink};
use crate::emulator::extensions::Extensions;
use crate::emulator::invocation::Invocation;

/// Where the invocation stands, from the Runtime API's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The runtime is starting; it has not asked for the event yet.
    Init,
    /// The runtime reported an init error.
    InitFailed,
    /// The event was handed out; a result is awaited.
    Running,
    /// A result was received (or is being received, for a stream).
    Done,
}

impl Phase {
    /// The state name Lambda uses in its transition errors.
    pub(crate) fn lambda_name(self) -> &'static str {
        match self {
            Phase::Init => "Initializing",
            Phase::InitFailed => "InitError",
            Phase::Running => "Running",
            Phase::Done => "RuntimeResponseSentState",
        }
    }
}

/// State shared by the endpoint handlers.
pub(crate) struct Shared {
    pub(crate) invocation: Arc<Invocation>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) sink: ResponseSink,
    pub(crate) extensions: Arc<Extensions>,
    phase: Mutex<Phase>,
    events: mpsc::UnboundedSender<ApiEvent>,
}

impl Shared {
    pub(crate) fn new(
        invocation: Arc<Invocation>,
        timeout: Option<Duration>,
        events: mpsc::UnboundedSender<ApiEvent>,
        sink: ResponseSink,
        extensions: Arc<Extensions>,
    ) -> Self {
        Shared {
            invocation,
            timeout,
            sink,
            extensions,
            phase: Mutex::new(Phase::Init),
            events,
        }
    }

    /// Moves from `from` to `to` if the phase is `from`; returns the phase found.
    pub(crate) fn transition(&self, from: Phase, to: Phase) -> Result<(), Phase> {
        let mut phase = self.phase.lock().expect("phase lock poisoned");
        if *phase == from {
            *phase = to;
            Ok(())
        } else {
            Err(*phase)
        }
    }

    /// The current phase.
    pub(crate) fn phase(&self) -> Phase {
        *self.phase.lock().expect("phase lock poisoned")
    }

    /// Tells the supervisor; it may already have stopped listening, which is fine.
    pub(crate) fn report(&self, event: ApiEvent) {
        let _ = self.events.send(event);
    }
}
