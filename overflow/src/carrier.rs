//! The envelope's trip into a container: how the forwarder (or the drain scaler, or a
//! person) hands one invocation to a runner through the container's environment, and
//! how the runner gets it back. Both ends call this module; nothing else knows the
//! variable names or the storage layout.
//!
//! - [`Carrier::Inline`]: `IMMORTAL_EVENT` and `IMMORTAL_CONTEXT`, the two halves as JSON.
//! - [`Carrier::Stored`]: `IMMORTAL_ENVELOPE_URL`, the whole envelope in the payload
//!   bucket, and `IMMORTAL_ENVELOPE_DIGEST`, its SHA-256: what the forwarder launches
//!   tasks with, so that no event ever rides in task overrides (CloudTrail, DescribeTasks
//!   and ECS's events keep those).

use immortal_handler_sdk::container::{CONTEXT_VAR, ENVELOPE_DIGEST_VAR, ENVELOPE_URL_VAR, EVENT_VAR};
use immortal_handler_sdk::envelope::S3Location;
use immortal_handler_sdk::{Envelope, EnvelopeError};

use crate::settings::Lookup;
use crate::store;

/// How one envelope travels in a container's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carrier {
    /// The event and the context, inline.
    Inline {
        /// The event text, exactly.
        event: String,
        /// The context JSON (may be empty: all defaults).
        context: String,
    },
    /// The whole envelope, stored at `at`, with its SHA-256 (hex) when known.
    Stored {
        /// Where.
        at: S3Location,
        /// What its bytes hash to.
        digest: Option<String>,
    },
}

/// Why a carried envelope could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CarrierError {
    /// The location variable does not hold an `s3://` URL.
    #[error("{ENVELOPE_URL_VAR}: {0}")]
    Location(EnvelopeError),
    /// A half, or the stored document, is not what it must be.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The stored envelope is not the one the task was started with.
    #[error("the envelope at {at} is not the one this task was started for: its SHA-256 is {actual}, {ENVELOPE_DIGEST_VAR} says {expected}; refusing to run it")]
    Digest {
        /// Where.
        at: S3Location,
        /// What the task was told.
        expected: String,
        /// What is there.
        actual: String,
    },
    /// The stored envelope could not be read.
    #[error("cannot read the envelope at {at}: {reason}")]
    Unreadable {
        /// Where it should be.
        at: S3Location,
        /// Why it is not.
        reason: String,
        /// Whether S3 may answer later (throttled, failing, unreachable).
        transient: bool,
    },
}

impl CarrierError {
    /// Whether opening the envelope may succeed if tried again later: nothing is wrong
    /// with the envelope or where it is.
    pub fn is_transient(&self) -> bool {
        matches!(self, CarrierError::Unreadable { transient: true, .. })
    }
}

impl Carrier {
    /// The envelope, inline.
    pub fn inline(envelope: &Envelope) -> Carrier {
        Carrier::Inline {
            event: envelope.event.get().to_owned(),
            context: envelope.context_json(),
        }
    }

    /// The container environment variables that carry it.
    pub fn to_environment(&self) -> Vec<(String, String)> {
        match self {
            Carrier::Inline { event, context } => vec![
                (EVENT_VAR.to_owned(), event.clone()),
                (CONTEXT_VAR.to_owned(), context.clone()),
            ],
            Carrier::Stored { at, digest } => {
                let mut env = vec![(ENVELOPE_URL_VAR.to_owned(), at.to_string())];
                env.extend(digest.iter().map(|d| (ENVELOPE_DIGEST_VAR.to_owned(), d.clone())));
                env
            }
        }
    }

    /// The carrier in an environment, `None` when it carries none. A stored envelope
    /// wins over inline halves.
    pub fn from_environment(lookup: &Lookup<'_>) -> Result<Option<Carrier>, CarrierError> {
        if let Some(url) = lookup.value(ENVELOPE_URL_VAR) {
            return Ok(Some(Carrier::Stored {
                at: S3Location::parse(&url).map_err(CarrierError::Location)?,
                digest: lookup.value(ENVELOPE_DIGEST_VAR),
            }));
        }
        Ok(lookup.value(EVENT_VAR).map(|event| Carrier::Inline {
            event,
            context: lookup.value(CONTEXT_VAR).unwrap_or_default(),
        }))
    }

    /// The envelope itself: parsed, or read from S3 and parsed. `s3` is only called for
    /// a stored envelope.
    pub async fn open<F, Fut>(&self, s3: F) -> Result<Envelope, CarrierError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = aws_sdk_s3::Client>,
    {
        match self {
            Carrier::Inline { event, context } => Ok(Envelope::from_parts(event, context)?),
            Carrier::Stored { at, digest } => {
                let unreadable = |reason: String, transient: bool| CarrierError::Unreadable {
                    at: at.clone(),
                    reason,
                    transient,
                };
                let bytes = store::get_bytes(&s3().await, at)
                    .await
                    .map_err(|e| unreadable(e.detail().to_owned(), e.is_transient()))?;
                let actual = crate::ledger::digest(&bytes);
                if digest.as_ref().is_some_and(|expected| *expected != actual) {
                    return Err(CarrierError::Digest {
                        at: at.clone(),
                        expected: digest.clone().unwrap_or_default(),
                        actual,
                    });
                }
                let text = String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8 text".into(), false))?;
                tracing::info!(envelope = %at, bytes = text.len(), "envelope read from S3");
                Ok(Envelope::from_json(&text)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn lookup(vars: &[(String, String)]) -> BTreeMap<String, String> {
        vars.iter().cloned().collect()
    }

    #[test]
    fn a_stored_envelope_wins_and_bad_locations_name_the_variable() {
        let vars = lookup(&[
            (EVENT_VAR.into(), "{}".into()),
            (ENVELOPE_URL_VAR.into(), "s3://b/envelopes/r/m.json".into()),
        ]);
        let carrier = Carrier::from_environment(&Lookup::new(|k| vars.get(k).cloned())).unwrap();
        assert_eq!(
            carrier,
            Some(Carrier::Stored {
                at: S3Location {
                    bucket: "b".into(),
                    key: "envelopes/r/m.json".into()
                },
                digest: None
            })
        );
        let vars = lookup(&[(ENVELOPE_URL_VAR.into(), "https://b/k".into())]);
        let err = Carrier::from_environment(&Lookup::new(|k| vars.get(k).cloned())).unwrap_err();
        assert!(err.to_string().starts_with(ENVELOPE_URL_VAR), "{err}");
        assert_eq!(Carrier::from_environment(&Lookup::new(|_| None)).unwrap(), None);
    }
}
