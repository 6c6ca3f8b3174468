//! The handler: for every S3 `ObjectCreated` record, one frame of the video as a PNG.

use std::path::PathBuf;
use std::time::Duration;

use aws_lambda_events::event::s3::{S3Event, S3EventRecord};
use aws_sdk_s3::presigning::PresigningConfig;
use immortal_handler_sdk::aws::{self, describe_error};
use immortal_handler_sdk::{Context, Error, Handler};
use serde::Serialize;

use crate::config::Settings;
use crate::ffmpeg::{self, FrameError};
use crate::position::{decode_key, parse_key};

/// The thumbnail function.
pub struct Thumbnail {
    s3: aws_sdk_s3::Client,
    ffmpeg: PathBuf,
    settings: Settings,
}

/// One thumbnail written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Written {
    /// `s3://bucket/key` of the video.
    pub source: String,
    /// The position used, `HH:MM:SS`.
    pub position: String,
    /// The PNG's bucket.
    pub bucket: String,
    /// The PNG's key.
    pub key: String,
    /// The PNG's size.
    pub bytes: usize,
}

/// The function's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response {
    /// Every thumbnail written, in record order.
    pub thumbnails: Vec<Written>,
}

impl Thumbnail {
    /// Initialisation: settings, ffmpeg, the S3 client. A missing ffmpeg is an init error.
    pub async fn from_env() -> Result<Thumbnail, Error> {
        let settings = Settings::from_env().map_err(|e| Error::new("Thumbnail.Config", e.to_string()))?;
        let ffmpeg = ffmpeg::locate().map_err(|e| Error::new("Thumbnail.FfmpegMissing", e.to_string()))?;
        let s3 = aws::s3_client(&aws::load().await);
        tracing::info!(ffmpeg = %ffmpeg.display(), prefix = %settings.prefix, "thumbnail ready");
        Ok(Thumbnail { s3, ffmpeg, settings })
    }

    async fn one(&self, record: &S3EventRecord, ctx: &Context) -> Result<Written, Error> {
        let bucket = record
            .s3
            .bucket
            .name
            .clone()
            .ok_or_else(|| Error::new("Thumbnail.BadEvent", "an S3 record without a bucket name"))?;
        let raw_key = record
            .s3
            .object
            .key
            .clone()
            .ok_or_else(|| Error::new("Thumbnail.BadEvent", "an S3 record without an object key"))?;
        let key = decode_key(&raw_key);
        let source = format!("s3://{bucket}/{key}");
        let size = record.s3.object.size.unwrap_or(0).max(0) as u64;
        if size > self.settings.overflow_bytes {
            ctx.overflow_now(format!(
                "{source} is {size} bytes, over THUMBNAIL_OVERFLOW_BYTES={}",
                self.settings.overflow_bytes
            ))?;
        }
        let request = parse_key(&key);
        let position = request.position.unwrap_or(self.settings.default_position);
        // Long enough for a run without a time limit to keep reading the video.
        let expiry = if ctx.remaining().is_none() {
            Duration::from_secs(12 * 3600)
        } else {
            Duration::from_secs(3600)
        };
        let url = self
            .s3
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .presigned(PresigningConfig::expires_in(expiry).expect("a valid presigning duration"))
            .await
            .map_err(|e| Error::new("Thumbnail.S3", format!("cannot presign {source}: {e}")))?;
        let started = std::time::Instant::now();
        let png = ffmpeg::frame_png(&self.ffmpeg, url.uri(), position)
            .await
            .map_err(|e| match e {
                FrameError::PastTheEnd { .. } => Error::new("Thumbnail.NoFrame", format!("{source}: {e}")),
                _ => Error::new("Thumbnail.FfmpegFailed", format!("{source}: {e}")),
            })?;
        let out_bucket = self.settings.bucket.clone().unwrap_or_else(|| bucket.clone());
        let out_key = format!("{}{}.png", self.settings.prefix, request.name);
        self.s3
            .put_object()
            .bucket(&out_bucket)
            .key(&out_key)
            .content_type("image/png")
            .metadata("source-key", ascii(&key))
            .metadata("position", position.to_string())
            .metadata("request-id", ascii(ctx.request_id()))
            .body(png.clone().into())
            .send()
            .await
            .map_err(|e| {
                Error::new(
                    "Thumbnail.S3",
                    format!("cannot write s3://{out_bucket}/{out_key}: {}", describe_error(&e)),
                )
            })?;
        tracing::info!(source = %source, position = %position, png = %format!("s3://{out_bucket}/{out_key}"), bytes = png.len(), ffmpeg_ms = started.elapsed().as_millis() as u64, "thumbnail written");
        Ok(Written {
            source,
            position: position.to_string(),
            bucket: out_bucket,
            key: out_key,
            bytes: png.len(),
        })
    }
}

/// S3 metadata must be ASCII: anything else percent-encoded.
fn ascii(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::CONTROLS).to_string()
}

impl Handler for Thumbnail {
    type Event = S3Event;
    type Response = Response;

    async fn handle(&self, event: S3Event, ctx: Context) -> Result<Response, Error> {
        let mut thumbnails = Vec::with_capacity(event.records.len());
        for record in &event.records {
            thumbnails.push(self.one(record, &ctx).await?);
        }
        Ok(Response { thumbnails })
    }
}
