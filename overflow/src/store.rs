//! Small JSON documents in S3 (stored envelopes, oversized outcome records): written
//! and read whole.

use immortal_handler_sdk::aws::{self, describe_error};
use immortal_handler_sdk::envelope::S3Location;

/// Why a document could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// S3 refused or failed the write.
    #[error("cannot write {at}: {detail}")]
    Write {
        /// Where.
        at: S3Location,
        /// S3's answer, described.
        detail: String,
    },
    /// S3 refused or failed the read, or the body broke off.
    #[error("cannot read {at}: {detail}")]
    Read {
        /// Where.
        at: S3Location,
        /// S3's answer, described.
        detail: String,
        /// Whether it may pass by itself: throttled, S3 failing (5xx), no answer, or the
        /// body broke off; not a refusal or a missing object.
        transient: bool,
    },
}

impl StoreError {
    /// S3's answer, without the location.
    pub fn detail(&self) -> &str {
        match self {
            StoreError::Write { detail, .. } | StoreError::Read { detail, .. } => detail,
        }
    }

    /// Whether a read may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Read { transient: true, .. })
    }
}

/// Writes `body` as a JSON object at `at`.
pub async fn put_json(s3: &aws_sdk_s3::Client, at: &S3Location, body: Vec<u8>) -> Result<(), StoreError> {
    s3.put_object()
        .bucket(&at.bucket)
        .key(&at.key)
        .content_type("application/json")
        .body(body.into())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| StoreError::Write {
            at: at.clone(),
            detail: describe_error(&e),
        })
}

/// Reads the object at `at` whole.
pub async fn get_bytes(s3: &aws_sdk_s3::Client, at: &S3Location) -> Result<Vec<u8>, StoreError> {
    let read = |detail: String, transient: bool| StoreError::Read {
        at: at.clone(),
        detail,
        transient,
    };
    let object = s3
        .get_object()
        .bucket(&at.bucket)
        .key(&at.key)
        .send()
        .await
        .map_err(|e| read(describe_error(&e), aws::is_transient(&e)))?;
    Ok(object
        .body
        .collect()
        .await
        .map_err(|e| read(e.to_string(), true))?
        .into_bytes()
        .to_vec())
}
