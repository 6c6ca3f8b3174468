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

impl Settings {
    /// Reads `THUMBNAIL_*`.
    pub fn from_env() -> Result<Settings, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let default_position = match var("THUMBNAIL_DEFAULT_POSITION") {
            Some(text) => Position::parse(text.trim())
                .ok_or_else(|| format!("THUMBNAIL_DEFAULT_POSITION={text:?} is not MM-SS, HH-MM-SS or seconds"))?,
            None => Position(1000),
        };
        let overflow_bytes = match var("THUMBNAIL_OVERFLOW_BYTES") {
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("THUMBNAIL_OVERFLOW_BYTES={text:?} is not a number of bytes"))?,
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
