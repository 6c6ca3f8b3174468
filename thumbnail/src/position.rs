//! Which frame a key asks for: `name_MM-SS.mp4` or `name_HH-MM-SS.mp4` → the frame at
//! that position, written as `name.png`.

use std::fmt;

/// A position in a video, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position(pub u64);

impl Position {
    /// Seconds, for ffmpeg's `-ss`.
    pub fn seconds(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Parses `MM-SS`, `HH-MM-SS`, or plain seconds (`3`, `1.5`).
    pub fn parse(text: &str) -> Option<Position> {
        let parts: Vec<&str> = text.split('-').collect();
        let number = |p: &str| {
            p.chars()
                .all(|c| c.is_ascii_digit())
                .then(|| p.parse::<u64>().ok())
                .flatten()
        };
        match parts.as_slice() {
            [single] => single
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Position((s * 1000.0).round() as u64)),
            [m, s] if m.len() == 2 && s.len() == 2 => {
                let (m, s) = (number(m)?, number(s)?);
                (s < 60).then_some(Position((m * 60 + s) * 1000))
            }
            [h, m, s] if h.len() >= 2 && m.len() == 2 && s.len() == 2 => {
                let (h, m, s) = (number(h)?, number(m)?, number(s)?);
                (m < 60 && s < 60).then_some(Position((h * 3600 + m * 60 + s) * 1000))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Position {
    /// `HH:MM:SS` (with `.mmm` when not whole seconds).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ms, s) = (self.0 % 1000, self.0 / 1000);
        write!(f, "{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)?;
        if ms > 0 {
            write!(f, ".{ms:03}")?;
        }
        Ok(())
    }
}

/// What a video key asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The output name without extension (folders kept): `videos/holiday`.
    pub name: String,
    /// The position named in the key, if any.
    pub position: Option<Position>,
}

/// Splits a (decoded) object key into output name and position.
///
/// ```
/// use immortal_thumbnail::position::{parse_key, Position};
/// let r = parse_key("videos/holiday trip_01-02-03.mp4");
/// assert_eq!(r.name, "videos/holiday trip");
/// assert_eq!(r.position, Some(Position(3_723_000)));
/// assert_eq!(parse_key("clip.mp4").position, None);
/// ```
pub fn parse_key(key: &str) -> Request {
    let stem = match key.rfind('.') {
        Some(dot) if !key[dot..].contains('/') => &key[..dot],
        _ => key,
    };
    if let Some((name, suffix)) = stem.rsplit_once('_') {
        if suffix.contains('-') {
            if let Some(position) = Position::parse(suffix) {
                if !name.is_empty() && !name.ends_with('/') {
                    return Request {
                        name: name.to_owned(),
                        position: Some(position),
                    };
                }
            }
        }
    }
    Request {
        name: stem.to_owned(),
        position: None,
    }
}

/// An S3 event key decoded: `+` is a space, `%XX` a byte.
pub fn decode_key(key: &str) -> String {
    let spaced = key.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            parse_key("clip_00-03.mp4"),
            Request {
                name: "clip".into(),
                position: Some(Position(3000))
            }
        );
        assert_eq!(
            parse_key("a/b_c_10-59.MP4"),
            Request {
                name: "a/b_c".into(),
                position: Some(Position(659_000))
            }
        );
        assert_eq!(
            parse_key("clip_00-61.mp4").position,
            None,
            "61 seconds is not a position"
        );
        assert_eq!(
            parse_key("clip_2024.mp4"),
            Request {
                name: "clip_2024".into(),
                position: None
            }
        );
        assert_eq!(parse_key("_00-03.mp4").position, None);
        assert_eq!(parse_key("dir.v2/clip").name, "dir.v2/clip");
    }

    #[test]
    fn decoding_and_display() {
        assert_eq!(decode_key("my+clip%20one_00-02.mp4"), "my clip one_00-02.mp4");
        assert_eq!(decode_key("caf%C3%A9.mp4"), "café.mp4");
        assert_eq!(Position(3_723_000).to_string(), "01:02:03");
        assert_eq!(Position::parse("1.5"), Some(Position(1500)));
        assert_eq!(Position(1500).to_string(), "00:00:01.500");
    }
}
