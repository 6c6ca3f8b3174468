//! The main job: a timed-out thumbnail invocation overflowing into the runner, the whole
//! chain on this machine against the local AWS emulator. `scripts/demo` runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _, Result};
use immortal_tests::emulator::{sdk_config, Emulator, ACCOUNT, REGION};
use immortal_tests::rehearsal::{rehearse, Spec, Stages};
use immortal_tests::runner::lambda_zip;
use immortal_tests::video::{pixels, png_size, reference_png, s3_event};
use serde_json::{json, Value};

const FUNCTION: &str = "immortal-demo-thumbnail";
const KEY: &str = "videos/holiday_00-29.mp4";

fn sample_video(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("sample-1080p-longgop.mp4");
    if path.is_file() {
        return Ok(path);
    }
    // 30 s of 1080p in a single GOP: the frame at 00:29 needs seconds of decoding, far
    // more than the 1-second Lambda limit the demo sets.
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=duration=30:size=1920x1080:rate=30",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "900",
            "-keyint_min",
            "900",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&path)
        .status()
        .context("run ffmpeg")?;
    ensure!(status.success(), "ffmpeg could not make the sample video");
    Ok(path)
}

#[tokio::main]
async fn main() -> Result<()> {
    let out_dir = std::env::current_dir()?.join("target/demo");
    std::fs::create_dir_all(&out_dir)?;
    let mut stages = Stages::default();
    println!("immortal demo: a Lambda invocation that times out finishes in the runner\n");

    let video = sample_video(&out_dir)?;
    stages.say(&format!("sample video {}", video.display()));

    let emulator = Emulator::start();
    let sdk = sdk_config(&emulator.url).await;
    stages.say(&format!("local AWS emulator (moto) listening at {}", emulator.url));

    // The bucket the uploads land in, and the upload whose event the function gets.
    let s3 = immortal_handler_sdk::aws::s3_client(&sdk);
    let uploads = "immortal-demo-uploads";
    s3.create_bucket().bucket(uploads).send().await?;
    let body = std::fs::read(&video)?;
    let size = body.len() as u64;
    s3.put_object()
        .bucket(uploads)
        .key(KEY)
        .body(body.into())
        .send()
        .await?;
    let event = s3_event(uploads, KEY, size);
    stages.say(&format!(
        "uploaded s3://{uploads}/{KEY} ({:.1} MB): the key asks for the frame at 00:29",
        size as f64 / 1e6
    ));

    // The thumbnail's rehearsal: created from its zip, timed out in Lambda with a
    // 1-second limit, dead-lettered, forwarded, run to its end in the task.
    let zips = tempfile::tempdir()?;
    let spec = Spec {
        name: FUNCTION.to_owned(),
        zip: lambda_zip("thumbnail", zips.path()),
        event: event.to_string(),
        runtime: None,
        handler: None,
        runtime_dir: None,
        env: vec![("THUMBNAIL_PREFIX".to_owned(), "thumbnails/".to_owned())],
        lambda_timeout: 1.0,
        work: out_dir.clone(),
    };
    let done = rehearse(&spec, &emulator.url, &mut stages).await?;
    let (task, request_id) = (&done.task, &done.request_id);
    if task.code != Some(0) {
        bail!(
            "the runner failed (exit {:?}):\n{}\n{}",
            task.code,
            task.stdout_text(),
            task.stderr
        );
    }
    let response: Value = serde_json::from_slice(&task.stdout)?;
    let written = &response["thumbnails"][0];
    let (bucket, key) = (
        written["bucket"].as_str().unwrap_or_default(),
        written["key"].as_str().unwrap_or_default(),
    );
    let png = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await?
        .body
        .collect()
        .await?
        .to_vec();
    let saved = out_dir.join("thumbnail.png");
    std::fs::write(&saved, &png)?;
    let (w, h) = png_size(&png);
    let expected = reference_png(&video, 29.0);
    ensure!(
        pixels(&png) == pixels(&expected),
        "the thumbnail is not the frame ffmpeg -ss 29 gives"
    );
    stages.say(&format!("thumbnail at s3://{bucket}/{key} ({w}x{h}, {} bytes, frame at {}), saved to {}; its pixels equal ffmpeg -ss 29's frame", png.len(), written["position"], saved.display()));
    let record = &done.record;
    let mut shown = record.clone();
    shown["requestPayload"] = json!("(the S3 event, unchanged)");
    stages.say("the success record on the success destination (Lambda's format):");
    let pretty = serde_json::to_string_pretty(&shown)?;
    println!(
        "{}",
        pretty
            .lines()
            .map(|l| format!("         {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let entry = &done.entry;
    ensure!(entry["state"] == "succeeded", "the ledger says {entry}");
    stages.say(&format!(
        "the ledger (s3://{}/ledger/{request_id}.json): state {}, attempt {}: nothing left to relaunch",
        done.payload_bucket, entry["state"], entry["attempt"]
    ));
    println!(
        "\nrequest {request_id}: timed out in Lambda, finished in the runner. Account {ACCOUNT}, region {REGION}."
    );
    Ok(())
}
