//! Streamed, resumable, verified downloads of code locations.
//!
//! The zip goes straight to disk (never whole in memory) and is hashed on the way, so
//! verifying costs no second pass. A broken connection resumes with an HTTP Range
//! request; failures back off exponentially. Nothing is unpacked until the SHA-256
//! matches what Lambda recorded.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{CONTENT_LENGTH, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use immortal_handler_sdk::error_document::message_with_causes;

use crate::code::function::CodeRef;
use crate::error::CodeError;

/// Attempts per download (first try included).
pub(crate) const DEFAULT_ATTEMPTS: u32 = 6;

/// Downloads code zips.
#[derive(Clone)]
pub(crate) struct Fetcher {
    http: reqwest::Client,
    s3: Option<aws_sdk_s3::Client>,
    s3_endpoint: Option<String>,
    attempts: u32,
    first_backoff: Duration,
}

/// What a finished download did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Downloaded {
    /// Bytes in the file.
    pub(crate) bytes: u64,
    /// HTTP requests made (1 when nothing broke).
    pub(crate) requests: u32,
}

impl Fetcher {
    /// A fetcher that rewrites S3 locations to `s3_endpoint` when one is set, and
    /// presigns `s3://` locations with `s3`.
    pub(crate) fn new(s3: Option<aws_sdk_s3::Client>, s3_endpoint: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .expect("a TLS client with built-in roots always builds");
        Fetcher {
            http,
            s3,
            s3_endpoint,
            attempts: DEFAULT_ATTEMPTS,
            first_backoff: Duration::from_millis(200),
        }
    }

    /// The URL to GET for a code location.
    pub(crate) async fn url_for(&self, location: &str) -> Result<String, CodeError> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                .ok_or_else(|| CodeError::Download {
                    what: "code".into(),
                    url: location.into(),
                    reason: "the location names no bucket and key".into(),
                })?;
            let s3 = self.s3.as_ref().ok_or_else(|| CodeError::Download {
                what: "code".into(),
                url: location.into(),
                reason: "no S3 client to presign it with".into(),
            })?;
            let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(900))
                .expect("15 minutes is a valid presigning duration");
            let presigned = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .presigned(config)
                .await
                .map_err(|e| CodeError::Download {
                    what: "code".into(),
                    url: location.into(),
                    reason: e.to_string(),
                })?;
            return Ok(presigned.uri().to_owned());
        }
        Ok(match &self.s3_endpoint {
            Some(endpoint) => rewrite_s3_location(location, endpoint).unwrap_or_else(|| location.to_owned()),
            None => location.to_owned(),
        })
    }

    /// Downloads `code` to `dest` and checks its SHA-256; on a mismatch `dest` is removed.
    pub(crate) async fn download(&self, code: &CodeRef, dest: &Path) -> Result<Downloaded, CodeError> {
        let url = self.url_for(&code.location).await?;
        let shown = redact(&url);
        let expected = code.digest()?;
        let fail = |reason: String| CodeError::Download {
            what: code.what.clone(),
            url: shown.clone(),
            reason,
        };
        let mut partial = Partial::create(dest)?;
        let mut progress = Progress::new(&code.what, code.size);
        let (mut requests, mut last_error, mut completed) = (0, String::new(), false);
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                let delay = self.first_backoff * 2u32.pow((attempt - 2).min(6));
                tracing::warn!(what = %code.what, attempt, resume_from = partial.have, delay_ms = delay.as_millis() as u64, error = %last_error, "download interrupted; retrying");
                tokio::time::sleep(delay).await;
            }
            requests += 1;
            match self.request(&url, &mut partial, &mut progress).await? {
                Ok(()) => {
                    completed = true;
                    break;
                }
                Err(Refused::Retry(reason)) => last_error = reason,
                Err(Refused::Final(reason)) => return Err(fail(reason)),
            }
        }
        progress.finish(partial.have);
        let (have, actual) = partial.finish()?;
        let refused = if !completed {
            Some(fail(format!("gave up after {requests} requests: {last_error}")))
        } else if let Some(total) = progress.total.filter(|total| *total != have) {
            Some(fail(format!("received {have} of {total} bytes")))
        } else if actual[..] != expected[..] {
            Some(CodeError::HashMismatch {
                what: code.what.clone(),
                expected: code.sha256.clone(),
                actual: base64::engine::general_purpose::STANDARD.encode(actual),
            })
        } else {
            None
        };
        if let Some(err) = refused {
            let _ = std::fs::remove_file(dest);
            return Err(err);
        }
        Ok(Downloaded { bytes: have, requests })
    }

    /// One GET, from where `partial` stands (a range request when it has bytes), to
    /// the end of the body. `Ok(Err(_))`: this request failed; `Retry` if another may
    /// do better.
    async fn request(
        &self,
        url: &str,
        partial: &mut Partial<'_>,
        progress: &mut Progress,
    ) -> Result<Result<(), Refused>, CodeError> {
        let mut request = self.http.get(url);
        if partial.have > 0 {
            request = request.header(RANGE, format!("bytes={}-", partial.have));
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Ok(Err(Refused::Retry(transport_error(e)))),
        };
        match response.status() {
            StatusCode::PARTIAL_CONTENT if partial.have > 0 => {}
            // The server ignored the range: start over.
            StatusCode::OK if partial.have > 0 => partial.restart()?,
            StatusCode::OK => {}
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT => {
                return Ok(Err(Refused::Retry(format!("HTTP {s}"))));
            }
            s => {
                let hint = if s == StatusCode::FORBIDDEN {
                    " (code locations are presigned URLs valid for 10 minutes; run again to get a fresh one)"
                } else {
                    ""
                };
                return Ok(Err(Refused::Final(format!("HTTP {s}{hint}"))));
            }
        }
        if partial.have == 0 {
            if let Some(len) = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
            {
                progress.total = Some(len);
            }
        }
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    partial.append(&chunk)?;
                    progress.update(partial.have);
                }
                Ok(None) => return Ok(Ok(())),
                Err(e) => return Ok(Err(Refused::Retry(transport_error(e)))),
            }
        }
    }
}

/// Why a request did not bring the whole body.
enum Refused {
    /// Worth another request (a transport error, 5xx, 429, 408): the reason.
    Retry(String),
    /// No request will do better (403, 404...): the reason.
    Final(String),
}

/// What has arrived so far: the file, its running hash, its length.
struct Partial<'a> {
    dest: &'a Path,
    out: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
    have: u64,
}

impl<'a> Partial<'a> {
    fn create(dest: &'a Path) -> Result<Partial<'a>, CodeError> {
        let file = std::fs::File::create(dest).map_err(CodeError::io("cannot create", dest))?;
        Ok(Partial {
            dest,
            out: std::io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            have: 0,
        })
    }

    /// Empties the file, to receive the whole body again.
    fn restart(&mut self) -> Result<(), CodeError> {
        let file = std::fs::File::create(self.dest).map_err(CodeError::io("cannot create", self.dest))?;
        let old = std::mem::replace(&mut self.out, std::io::BufWriter::with_capacity(1 << 20, file));
        // Its unwritten bytes are dropped, never flushed into the emptied file.
        drop(old.into_parts());
        self.hasher = Sha256::new();
        self.have = 0;
        Ok(())
    }

    fn append(&mut self, chunk: &[u8]) -> Result<(), CodeError> {
        self.hasher.update(chunk);
        self.out
            .write_all(chunk)
            .map_err(CodeError::io("cannot write", self.dest))?;
        self.have += chunk.len() as u64;
        Ok(())
    }

    /// Flushes the file: its length and SHA-256.
    fn finish(mut self) -> Result<(u64, sha2::digest::Output<Sha256>), CodeError> {
        self.out.flush().map_err(CodeError::io("cannot write", self.dest))?;
        Ok((self.have, self.hasher.finalize()))
    }
}

/// The URL without its query string (presigned URLs carry credentials there).
pub(crate) fn redact(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

/// A transport failure as text for logs and errors. reqwest's own text names the URL
/// it failed on, query string and all (a presigned URL's signature is a bearer
/// credential for its lifetime): drop it, and scrub any signed query a cause repeats.
fn transport_error(e: reqwest::Error) -> String {
    scrub_signed_queries(&message_with_causes(&e.without_url()))
}

/// `text` with the query string of every URL that carries an AWS signature
/// (`X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`, ...) removed.
pub(crate) fn scrub_signed_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('?') {
        out.push_str(&rest[..at]);
        let query_len = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(rest.len() - at);
        let query = &rest[at..at + query_len];
        if !query.to_ascii_lowercase().contains("x-amz-") {
            out.push_str(query);
        }
        rest = &rest[at + query_len..];
    }
    out.push_str(rest);
    out
}

/// For an S3 URL (virtual-hosted or path-style), the same object at `endpoint`,
/// path-style; `None` when `location` is not an S3 URL.
pub(crate) fn rewrite_s3_location(location: &str, endpoint: &str) -> Option<String> {
    let url = reqwest::Url::parse(location).ok()?;
    let host = url.host_str()?;
    if !host.ends_with(".amazonaws.com") && !host.ends_with(".amazonaws.com.cn") {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let s3_label = labels.iter().position(|l| *l == "s3" || l.starts_with("s3-"))?;
    let mut rewritten = endpoint.trim_end_matches('/').to_owned();
    if s3_label > 0 {
        rewritten.push('/');
        rewritten.push_str(&labels[..s3_label].join("."));
    }
    rewritten.push_str(url.path());
    if let Some(query) = url.query() {
        rewritten.push('?');
        rewritten.push_str(query);
    }
    Some(rewritten)
}

/// A progress bar on a terminal; a log line every few seconds otherwise.
struct Progress {
    what: String,
    total: Option<u64>,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    fn new(what: &str, total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_message(format!("downloading {what}"));
            bar
        });
        Progress {
            what: what.to_owned(),
            total,
            bar,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    fn update(&mut self, have: u64) {
        if let Some(bar) = &self.bar {
            if let Some(total) = self.total {
                bar.set_length(total);
            }
            bar.set_position(have);
        } else if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            let rate = have as f64 / self.started.elapsed().as_secs_f64().max(0.001) / 1e6;
            tracing::info!(what = %self.what, bytes = have, total = self.total, mb_per_s = format!("{rate:.1}"), "downloading");
        }
    }

    fn finish(&mut self, have: u64) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let ms = self.started.elapsed().as_millis() as u64;
        tracing::info!(what = %self.what, bytes = have, duration_ms = ms, "downloaded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_locations_are_rewritten_path_style() {
        let ep = "http://127.0.0.1:9000/";
        assert_eq!(
            rewrite_s3_location("https://b.s3.amazonaws.com/k/x.zip", ep).as_deref(),
            Some("http://127.0.0.1:9000/b/k/x.zip")
        );
        assert_eq!(
            rewrite_s3_location("https://s3.eu-west-1.amazonaws.com/b/k.zip?a=1", ep).as_deref(),
            Some("http://127.0.0.1:9000/b/k.zip?a=1")
        );
        assert_eq!(
            rewrite_s3_location("https://prod-04-2014-tasks.s3-us-west-2.amazonaws.com/k", ep).as_deref(),
            Some("http://127.0.0.1:9000/prod-04-2014-tasks/k")
        );
        assert_eq!(
            rewrite_s3_location(
                "https://awslambda-us-east-1-tasks.s3.us-east-1.amazonaws.com/snapshots/fn-1?X-Amz-Signature=x",
                ep
            )
            .as_deref(),
            Some("http://127.0.0.1:9000/awslambda-us-east-1-tasks/snapshots/fn-1?X-Amz-Signature=x")
        );
        assert_eq!(rewrite_s3_location("https://example.com/k.zip", ep), None);
        assert_eq!(
            rewrite_s3_location("https://lambda.us-east-1.amazonaws.com/k", ep),
            None
        );
    }

    #[test]
    fn presigned_queries_are_not_logged() {
        assert_eq!(
            redact("https://b.s3.amazonaws.com/k?X-Amz-Signature=secret"),
            "https://b.s3.amazonaws.com/k"
        );
        assert_eq!(
            scrub_signed_queries("failed for url (https://b/k?x-amz-credential=A&X-Amz-Signature=s): reset; what?"),
            "failed for url (https://b/k): reset; what?"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_request_names_no_signature() {
        // Nothing listens on port 1: the connection is refused, and reqwest's own text
        // for that names the URL it was sending to.
        let mut fetcher = Fetcher::new(None, None);
        fetcher.attempts = 1;
        let code = CodeRef {
            what: "function f".into(),
            location: "http://127.0.0.1:1/code.zip?X-Amz-Security-Token=SECRETTOKEN&X-Amz-Signature=SECRETSIG".into(),
            sha256: "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".into(),
            size: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let err = fetcher
            .download(&code, &dir.path().join("zip"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://127.0.0.1:1/code.zip"), "{err}");
        assert!(!err.contains("X-Amz") && !err.contains("SECRET"), "{err}");
    }
}
