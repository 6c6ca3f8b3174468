//! ffmpeg as a subprocess: found once at init, asked for one frame as PNG.
//!
//! The frame at position T is the first frame whose timestamp is ≥ T (ffmpeg's rule
//! with `-ss` before `-i`, which seeks on the input and decodes only from the
//! preceding keyframe, so over HTTP only the needed byte ranges are read).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncReadExt;

use crate::position::Position;

/// Where a layer puts ffmpeg.
pub const LAYER_PATH: &str = "/opt/bin/ffmpeg";

/// Finds ffmpeg: `FFMPEG_PATH`, else the layer's `/opt/bin/ffmpeg` (or `bin/ffmpeg` of
/// another layers root on PATH), else PATH.
pub fn locate() -> Result<PathBuf, NoFfmpeg> {
    if let Ok(path) = std::env::var("FFMPEG_PATH") {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(NoFfmpeg::NotExecutable(path))
        };
    }
    if is_executable(Path::new(LAYER_PATH)) {
        return Ok(LAYER_PATH.into());
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("ffmpeg"))
            .find(|p| is_executable(p))
    }) {
        return Ok(found);
    }
    Err(NoFfmpeg::NotFound)
}

/// Why ffmpeg cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoFfmpeg {
    /// `FFMPEG_PATH` names something that is not an executable file.
    #[error("FFMPEG_PATH={} is not an executable file", .0.display())]
    NotExecutable(PathBuf),
    /// Nowhere to be found.
    #[error("ffmpeg not found: FFMPEG_PATH is unset, {LAYER_PATH} does not exist and PATH has none; attach the ffmpeg layer (scripts/build-ffmpeg-layer) or set FFMPEG_PATH")]
    NotFound,
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Why no frame came out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    /// ffmpeg read the video but there is no frame at or after the position.
    #[error("no frame at {position}: the position is past the end of the video{duration}")]
    PastTheEnd {
        /// The position asked for.
        position: Position,
        /// `" (duration N s)"` when ffmpeg reported it.
        duration: String,
    },
    /// ffmpeg failed.
    #[error("ffmpeg failed ({status}): {reason}")]
    Failed {
        /// Its exit status.
        status: String,
        /// The last lines it wrote on stderr.
        reason: String,
    },
    /// It could not be run at all.
    #[error("cannot run {path}: {reason}")]
    Spawn {
        /// The ffmpeg used.
        path: String,
        /// The OS error.
        reason: String,
    },
}

/// One PNG frame of `input` (a URL or a file) at `position`.
pub async fn frame_png(ffmpeg: &Path, input: &str, position: Position) -> Result<Vec<u8>, FrameError> {
    let mut cmd = tokio::process::Command::new(ffmpeg);
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "info"]);
    if input.starts_with("http://") || input.starts_with("https://") {
        cmd.args(["-reconnect", "1", "-reconnect_on_network_error", "1"]);
    }
    cmd.args(["-ss", &format!("{:.3}", position.seconds()), "-i", input])
        .args([
            "-map",
            "0:v:0",
            "-frames:v",
            "1",
            "-an",
            "-sn",
            "-f",
            "image2pipe",
            "-c:v",
            "png",
            "pipe:1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| FrameError::Spawn {
        path: ffmpeg.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (mut png, mut log) = (Vec::new(), Vec::new());
    let (read_out, read_err) = tokio::join!(stdout.read_to_end(&mut png), stderr.read_to_end(&mut log));
    let status = child.wait().await.map_err(|e| FrameError::Spawn {
        path: ffmpeg.display().to_string(),
        reason: e.to_string(),
    })?;
    read_out.and(read_err).map_err(|e| FrameError::Spawn {
        path: ffmpeg.display().to_string(),
        reason: e.to_string(),
    })?;
    let log = String::from_utf8_lossy(&log);
    if !status.success() {
        return Err(FrameError::Failed {
            status: status.to_string(),
            reason: last_lines(&log, 3),
        });
    }
    if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(FrameError::PastTheEnd {
            position,
            duration: duration(&log)
                .map(|d| format!(" (duration {d:.2} s)"))
                .unwrap_or_default(),
        });
    }
    Ok(png)
}

/// The last `n` non-empty lines, joined with ` | `.
fn last_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// `Duration: 00:00:10.00` from ffmpeg's log, in seconds.
fn duration(log: &str) -> Option<f64> {
    let text = log.split("Duration: ").nth(1)?.split(',').next()?.trim();
    let parts: Vec<f64> = text.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    match parts.as_slice() {
        [h, m, s] => Some(h * 3600.0 + m * 60.0 + s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ffmpegs_log() {
        let log = "Input #0, mov,mp4, from 'x':\n  Duration: 00:01:10.50, start: 0.000000, bitrate: 5 kb/s\n\nOutput file is empty\n";
        assert_eq!(duration(log), Some(70.5));
        assert_eq!(
            last_lines(log, 2),
            "Duration: 00:01:10.50, start: 0.000000, bitrate: 5 kb/s | Output file is empty"
        );
    }
}
