//! Small JSON documents in S3 (stored envelopes, oversized outcome records): written
//! and read whole.

use immortal_handler_sdk::aws::describe_error;
use immortal_handler_sdk::envelope::S3Location;

/// Writes `body` as a JSON object at `at`.
pub async fn put_json(s3: &aws_sdk_s3::Client, at: &S3Location, body: Vec<u8>) -> Result<(), String> {
    s3.put_object()
        .bucket(&at.bucket)
        .key(&at.key)
        .content_type("application/json")
        .body(body.into())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot write {at}: {}", describe_error(&e)))
}

/// Reads the object at `at` whole.
pub async fn get_bytes(s3: &aws_sdk_s3::Client, at: &S3Location) -> Result<Vec<u8>, String> {
    let object = s3
        .get_object()
        .bucket(&at.bucket)
        .key(&at.key)
        .send()
        .await
        .map_err(|e| format!("cannot read {at}: {}", describe_error(&e)))?;
    Ok(object
        .body
        .collect()
        .await
        .map_err(|e| format!("cannot read {at}: {e}"))?
        .into_bytes()
        .to_vec())
}
