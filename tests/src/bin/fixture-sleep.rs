//! A function that sleeps `seconds` before answering. It writes its pid to `pid_file`
//! when it starts working, and on SIGTERM writes "SIGTERM" to `marker` and exits.
//!
//! With `lock_dir`, it holds an exclusive lock on `<lock_dir>/<request id>.lock` while
//! it works (the kernel drops it when the process dies, however it dies): a second run of
//! the same invocation at the same time finds it taken, notes the request id in
//! `<lock_dir>/concurrent.log` and fails.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};

async fn sleep(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let seconds = event.payload["seconds"].as_f64().unwrap_or(1.0);
    let marker = event.payload["marker"].as_str().map(str::to_owned);
    let mut term = signal(SignalKind::terminate())?;
    let _lock = match event.payload["lock_dir"].as_str() {
        Some(dir) => Some(hold(std::path::Path::new(dir), &event.context.request_id)?),
        None => None,
    };
    if let Some(pid_file) = event.payload["pid_file"].as_str() {
        std::fs::write(pid_file, std::process::id().to_string())?;
    }
    tokio::select! {
        _ = tokio::time::sleep(std::time::Duration::from_secs_f64(seconds)) => Ok(json!({ "slept": seconds })),
        _ = term.recv() => {
            if let Some(marker) = marker {
                std::fs::write(marker, "SIGTERM")?;
            }
            std::process::exit(0);
        }
    }
}

/// Takes the invocation's lock, or notes that another run holds it.
fn hold(dir: &std::path::Path, request_id: &str) -> Result<std::fs::File, Error> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let file = std::fs::File::create(dir.join(format!("{request_id}.lock")))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("concurrent.log"))?;
        writeln!(log, "{request_id}")?;
        return Err(format!("{request_id} is running elsewhere at the same time").into());
    }
    Ok(file)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(sleep)).await
}
