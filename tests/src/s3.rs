//! Reading what the parts stored in the emulator's S3.

use bytes::Bytes;

/// The object at `location` (`s3://bucket/key`), whole.
pub async fn read(s3: &aws_sdk_s3::Client, location: &str) -> Bytes {
    let (bucket, key) = location
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .unwrap_or_else(|| panic!("{location} is not an s3:// location"));
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot read {location}: {e:?}"))
        .body
        .collect()
        .await
        .expect("the object's body")
        .into_bytes()
}
