//! The thumbnail handler against the emulator's S3 with videos made by ffmpeg: under
//! `runner --artifact` (bootstrap) and `runner --lib` (in-process), and its early
//! hand-off crossing the forwarder.

use std::path::Path;

use aws_sdk_s3::Client as S3;
use immortal_tests::ecs::Cluster;
use immortal_tests::emulator::Emulator;
use immortal_tests::lambda::uuid_like;
use immortal_tests::queue::Queue;
use immortal_tests::runner::{workspace_artifact, Ran, RunnerCmd};
use immortal_tests::video::{pixels, png_size, reference_png, s3_event, sample_videos};
use serde_json::{json, Value};

struct Bucket {
    s3: S3,
    name: String,
}

impl Bucket {
    async fn new() -> Bucket {
        let sdk = Emulator::shared().sdk_config().await;
        let s3 = immortal_handler_sdk::aws::s3_client(&sdk);
        let name = format!("videos-{}", uuid_like());
        s3.create_bucket().bucket(&name).send().await.unwrap();
        Bucket { s3, name }
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> u64 {
        let size = body.len() as u64;
        self.s3
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap();
        size
    }

    async fn upload(&self, key: &str, file: &Path) -> u64 {
        self.put(key, std::fs::read(file).unwrap()).await
    }

    async fn get(&self, key: &str) -> Option<(Vec<u8>, Option<String>, std::collections::HashMap<String, String>)> {
        let out = self.s3.get_object().bucket(&self.name).key(key).send().await.ok()?;
        let content_type = out.content_type.clone();
        let metadata = out.metadata.clone().unwrap_or_default();
        Some((out.body.collect().await.unwrap().to_vec(), content_type, metadata))
    }
}

fn thumbnail(event: &Value, extra: &[(&'static str, String)], args: &[&str]) -> RunnerCmd {
    RunnerCmd::lambda("thumbnail", &event.to_string())
        .envs(Emulator::shared().env())
        .envs(extra.iter().cloned())
        .args(args)
}

async fn run(cmd: RunnerCmd) -> Ran {
    tokio::task::spawn_blocking(move || cmd.run()).await.unwrap()
}

#[tokio::test]
async fn the_png_is_the_frame_ffmpeg_gives_at_the_position_in_the_key() {
    let (h264, _) = sample_videos();
    let bucket = Bucket::new().await;
    let size = bucket.upload("clip_00-03.mp4", h264).await;
    let ran = run(thumbnail(
        &s3_event(&bucket.name, "clip_00-03.mp4", size),
        &[],
        &["--context", r#"{"request_id":"req-thumb"}"#],
    ))
    .await;
    ran.expect_code(0);
    assert_eq!(
        ran.json()["thumbnails"][0],
        json!({"source": format!("s3://{}/clip_00-03.mp4", bucket.name), "position": "00:00:03", "bucket": bucket.name,
               "key": "thumbnails/clip.png", "bytes": ran.json()["thumbnails"][0]["bytes"]})
    );
    let (png, content_type, metadata) = bucket.get("thumbnails/clip.png").await.expect("thumbnail written");
    assert_eq!(
        pixels(&png),
        pixels(&reference_png(h264, 3.0)),
        "the frame ffmpeg -ss 3 gives"
    );
    assert_ne!(
        pixels(&png),
        pixels(&reference_png(h264, 4.0)),
        "not the frame at 00-04"
    );
    assert_eq!(png_size(&png), (320, 240));
    assert_eq!(content_type.as_deref(), Some("image/png"));
    assert_eq!(metadata.get("source-key").map(String::as_str), Some("clip_00-03.mp4"));
    assert_eq!(metadata.get("position").map(String::as_str), Some("00:00:03"));
    assert_eq!(metadata.get("request-id").map(String::as_str), Some("req-thumb"));
}

#[tokio::test]
async fn hevc_10_bit_and_a_key_with_a_space() {
    let (_, hevc) = sample_videos();
    let bucket = Bucket::new().await;
    let key = "my videos/summer clip_00-02.mp4";
    let size = bucket.upload(key, hevc).await;
    let ran = run(thumbnail(
        &s3_event(&bucket.name, key, size),
        &[("THUMBNAIL_PREFIX", "thumbs/".into())],
        &[],
    ))
    .await;
    ran.expect_code(0);
    let (png, _, _) = bucket
        .get("thumbs/my videos/summer clip.png")
        .await
        .expect("thumbnail at the decoded key");
    assert_eq!(pixels(&png), pixels(&reference_png(hevc, 2.0)));
    assert_eq!(png_size(&png), (256, 144));
}

#[tokio::test]
async fn a_position_past_the_end_is_an_error_naming_the_object_and_no_png() {
    let (h264, _) = sample_videos();
    let bucket = Bucket::new().await;
    let size = bucket.upload("clip_00-30.mp4", h264).await;
    let ran = run(thumbnail(&s3_event(&bucket.name, "clip_00-30.mp4", size), &[], &[])).await;
    ran.expect_code(1);
    let error = ran.json();
    assert_eq!(error["errorType"], "Thumbnail.NoFrame");
    let message = error["errorMessage"].as_str().unwrap();
    assert!(
        message.contains(&format!("s3://{}/clip_00-30.mp4", bucket.name)),
        "{message}"
    );
    assert!(
        message.contains("past the end of the video (duration 10.00 s)"),
        "{message}"
    );
    assert!(bucket.get("thumbnails/clip.png").await.is_none(), "never an empty PNG");
}

#[tokio::test]
async fn a_text_file_named_mp4_is_an_error_with_ffmpegs_reason() {
    let bucket = Bucket::new().await;
    let size = bucket
        .put("notes_00-01.mp4", b"these are my notes, not a video\n".to_vec())
        .await;
    let ran = run(thumbnail(&s3_event(&bucket.name, "notes_00-01.mp4", size), &[], &[])).await;
    ran.expect_code(1);
    let error = ran.json();
    assert_eq!(error["errorType"], "Thumbnail.FfmpegFailed");
    let message = error["errorMessage"].as_str().unwrap();
    assert!(
        message.contains(&format!("s3://{}/notes_00-01.mp4", bucket.name)),
        "{message}"
    );
    assert!(
        message.contains("Invalid data found when processing input"),
        "{message}"
    );
    assert!(bucket.get("thumbnails/notes.png").await.is_none());
}

#[tokio::test]
async fn a_missing_ffmpeg_is_an_init_error_that_says_so() {
    let empty = tempfile::tempdir().unwrap();
    let event = s3_event("any", "clip.mp4", 1);
    let ran = run(thumbnail(&event, &[("PATH", empty.path().display().to_string())], &[])).await;
    ran.expect_code(4);
    let error = ran.json();
    assert_eq!(error["errorType"], "Thumbnail.FfmpegMissing");
    assert!(
        error["errorMessage"].as_str().unwrap().contains("ffmpeg not found"),
        "{error}"
    );
}

#[tokio::test]
async fn in_process_under_runner_lib_gives_the_same_output() {
    let (h264, _) = sample_videos();
    let bucket = Bucket::new().await;
    let size = bucket.upload("same_00-05.mp4", h264).await;
    let event = s3_event(&bucket.name, "same_00-05.mp4", size);
    let context = r#"{"request_id":"req-same"}"#;
    let bootstrap = run(thumbnail(
        &event,
        &[("THUMBNAIL_PREFIX", "a/".into())],
        &["--context", context],
    ))
    .await;
    bootstrap.expect_code(0);
    let lib = workspace_artifact("libimmortal_thumbnail.so");
    let cmd = RunnerCmd::new()
        .envs(Emulator::shared().env())
        .env("THUMBNAIL_PREFIX", "b/")
        .args([
            "--lib".as_ref(),
            lib.as_os_str(),
            "--event".as_ref(),
            event.to_string().as_ref(),
            "--context".as_ref(),
            context.as_ref(),
        ]);
    let in_process = run(cmd).await;
    in_process.expect_code(0);
    let mut expected = bootstrap.json();
    expected["thumbnails"][0]["key"] = "b/same.png".into();
    assert_eq!(in_process.json(), expected);
    let (a, _, meta_a) = bucket.get("a/same.png").await.unwrap();
    let (b, _, meta_b) = bucket.get("b/same.png").await.unwrap();
    assert_eq!(a, b, "the same PNG");
    assert_eq!(meta_a, meta_b, "the same metadata, request id included");

    // Errors and exit codes match too.
    let missing = s3_event(&bucket.name, "absent_00-01.mp4", 10);
    let by_bootstrap = run(thumbnail(&missing, &[], &[])).await;
    let cmd = RunnerCmd::new().envs(Emulator::shared().env()).args([
        "--lib".as_ref(),
        lib.as_os_str(),
        "--event".as_ref(),
        missing.to_string().as_ref(),
    ]);
    let by_lib = run(cmd).await;
    by_bootstrap.expect_code(1);
    by_lib.expect_code(1);
    assert_eq!(by_lib.json()["errorType"], by_bootstrap.json()["errorType"]);
}

#[tokio::test]
async fn a_library_of_another_abi_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("old.c");
    std::fs::write(&source, "unsigned immortal_abi_version(void) { return 999; }\n").unwrap();
    let lib = dir.path().join("libold.so");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    let ran = run(RunnerCmd::new().args(["--lib".as_ref(), lib.as_os_str(), "--event".as_ref(), "{}".as_ref()])).await;
    ran.expect_code(3);
    assert!(
        ran.stderr
            .contains("it speaks handler ABI version 999, this runner speaks version 1"),
        "{}",
        ran.stderr
    );
    let ran = run(RunnerCmd::new().args(["--lib", "/lib/x86_64-linux-gnu/libm.so.6", "--event", "{}"])).await;
    ran.expect_code(3);
    assert!(ran.stderr.contains("exports no immortal_abi_version"), "{}", ran.stderr);
}

#[tokio::test]
async fn an_early_hand_off_in_lambda_is_relaunched_by_the_forwarder_and_finishes_in_the_runner() {
    let (h264, _) = sample_videos();
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config().await;
    let bucket = Bucket::new().await;
    let size = bucket.upload("big_00-01.mp4", h264).await;
    let event = s3_event(&bucket.name, "big_00-01.mp4", size);
    let small = [("THUMBNAIL_OVERFLOW_BYTES", "1000".to_owned())];

    // "In Lambda": a clock is running, the object is over the limit → Immortal.Overflow at once.
    let context = r#"{"request_id":"req-big","invoked_function_arn":"arn:aws:lambda:us-east-1:123456789012:function:thumbnail:$LATEST"}"#;
    let in_lambda = run(thumbnail(&event, &small, &["--timeout", "60", "--context", context])).await;
    in_lambda.expect_code(1);
    let error = in_lambda.json();
    assert_eq!(error["errorType"], "Immortal.Overflow");
    assert!(in_lambda.elapsed.as_secs() < 30, "handed off at once");

    // Lambda's OnFailure record for it, on a queue, through the forwarder.
    let record = json!({
        "version": "1.0", "timestamp": "2026-11-22T10:00:00.000Z",
        "requestContext": {"requestId": "req-big", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:thumbnail:$LATEST",
                           "condition": "RetriesExhausted", "approximateInvokeCount": 1},
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": error,
    });
    let id = uuid_like();
    let cluster = Cluster::create(&sdk, &format!("c-{id}")).await;
    let queue = Queue::create(&sdk, &format!("failures-{id}"), &[], &[]).await;
    queue.send(&record.to_string()).await;
    let messages = queue.receive(10, 1).await;
    cluster.forward_all(&queue, &messages, &[]).await;
    let tasks = cluster.tasks().await;
    assert_eq!(tasks.len(), 1);
    let context = cluster.task_envelope(&tasks[0]).await["context"].clone();
    assert_eq!(context["overflow"]["error_type"], "Immortal.Overflow");

    // The task: no clock, so the same handler carries on and writes the thumbnail.
    let cmd = thumbnail(&event, &small, &["--context", &context.to_string()]);
    let in_runner = run(cmd).await;
    in_runner.expect_code(0);
    let (png, _, meta) = bucket
        .get("thumbnails/big.png")
        .await
        .expect("written by the overflow run");
    assert_eq!(pixels(&png), pixels(&reference_png(h264, 1.0)));
    assert_eq!(meta.get("request-id").map(String::as_str), Some("req-big"));
}
