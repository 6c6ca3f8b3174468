//! The thumbnail function's settings.

use crate::position::Position;

/// Settings, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `THUMBNAIL_BUCKET`: where PNGs go (default: the video's bucket).
    pub bucket: Option<String>,
    /// `THUMBNAIL_PREFIX`: key prefix of PNGs (default `thumbnails/`).
    pub prefix: String,
    /// `THUMBNAIL_DEFAULT_POSITION`: for keys that name none (default `00-01`).
    pub default_position: Position,
    /// `THUMBNAIL_OVERFLOW_BYTES`: larger videos go to the runner at once when running
    /// in Lambda (default 1 GiB).
    pub overflow_bytes: u64,
}

/// A `THUMBNAIL_*` setting that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSetting {
    /// `THUMBNAIL_DEFAULT_POSITION`.
    #[error("THUMBNAIL_DEFAULT_POSITION={0:?} is not MM-SS, HH-MM-SS or seconds")]
    Position(String),
    /// `THUMBNAIL_OVERFLOW_BYTES`.
    #[error("THUMBNAIL_OVERFLOW_BYTES={0:?} is not a number of bytes")]
    Bytes(String),
}

impl Settings {
    /// Reads `THUMBNAIL_*`.
    pub fn from_env() -> Result<Settings, BadSetting> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let default_position = match var("THUMBNAIL_DEFAULT_POSITION") {
            Some(text) => Position::parse(text.trim()).ok_or(BadSetting::Position(text))?,
            None => Position(1000),
        };
        let overflow_bytes = match var("THUMBNAIL_OVERFLOW_BYTES") {
            Some(text) => text.trim().parse().map_err(|_| BadSetting::Bytes(text))?,
            None => 1 << 30,
        };
        Ok(Settings {
            bucket: var("THUMBNAIL_BUCKET"),
            prefix: var("THUMBNAIL_PREFIX").unwrap_or_else(|| "thumbnails/".to_owned()),
            default_position,
            overflow_bytes,
        })
    }
}
