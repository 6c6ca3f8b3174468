//! Sample videos made by ffmpeg, and frames compared as decoded pixels.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A video encoding to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264, 8-bit 4:2:0.
    H264,
    /// HEVC, 10-bit 4:2:0.
    Hevc10,
}

/// A test pattern whose every frame differs, `seconds` long at 25 fps.
pub fn make_video(path: &Path, seconds: u32, size: &str, codec: Codec) {
    let source = format!("testsrc2=duration={seconds}:size={size}:rate=25");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", &source]);
    match codec {
        Codec::H264 => cmd.args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "50"]),
        Codec::Hevc10 => cmd.args([
            "-c:v",
            "libx265",
            "-pix_fmt",
            "yuv420p10le",
            "-x265-params",
            "log-level=error:keyint=50",
        ]),
    };
    let status = cmd
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("run ffmpeg (scripts/setup installs it)");
    assert!(status.success(), "ffmpeg could not make {}", path.display());
}

/// The videos the thumbnail tests share: (h264 10 s 320x240, hevc 10-bit 6 s 256x144).
pub fn sample_videos() -> &'static (PathBuf, PathBuf) {
    static VIDEOS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    VIDEOS.get_or_init(|| {
        // In the build folder, made once and reused by every test process (nothing left
        // in the temp folder); each is made aside and renamed into place.
        let dir = crate::runner::profile_dir().join("test-videos");
        std::fs::create_dir_all(&dir).unwrap();
        let (h264, hevc) = (dir.join("h264.mp4"), dir.join("hevc10.mp4"));
        for (path, seconds, size, codec) in [
            (&h264, 10, "320x240", Codec::H264),
            (&hevc, 6, "256x144", Codec::Hevc10),
        ] {
            if !path.is_file() {
                let part = tempfile::Builder::new().suffix(".mp4").tempfile_in(&dir).unwrap();
                make_video(part.path(), seconds, size, codec);
                part.persist(path).unwrap();
            }
        }
        (h264, hevc)
    })
}

/// ffmpeg's own PNG of the frame at `seconds` of a local file (the reference).
pub fn reference_png(video: &Path, seconds: f64) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-ss", &seconds.to_string(), "-i"])
        .arg(video)
        .args(["-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "pipe:1"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success() && !out.stdout.is_empty(), "no reference frame");
    out.stdout
}

/// A PNG's decoded pixels (16-bit RGB, so 8- and 10-bit sources compare alike).
pub fn pixels(png: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "png_pipe",
            "-i",
            "pipe:0",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb48le",
            "pipe:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    let mut stdin = child.stdin.take().unwrap();
    let png = png.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&png));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success() && !out.stdout.is_empty(), "not a decodable PNG");
    out.stdout
}

/// Width and height from a PNG header.
pub fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// An S3 `ObjectCreated:Put` event for `bucket`/`key` (the key encoded as S3 does).
pub fn s3_event(bucket: &str, key: &str, size: u64) -> serde_json::Value {
    let mut event: serde_json::Value =
        serde_json::from_str(include_str!("../../handler-sdk/fixtures/s3-put.json")).unwrap();
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b' ' => "+".to_owned(),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    let record = &mut event["Records"][0]["s3"];
    record["bucket"]["name"] = bucket.into();
    record["bucket"]["arn"] = format!("arn:aws:s3:::{bucket}").into();
    record["object"]["key"] = encoded.into();
    record["object"]["size"] = size.into();
    event
}
