//! A function that sleeps `seconds` before answering. It writes its pid to `pid_file`
//! when it starts working, and on SIGTERM writes "SIGTERM" to `marker` and exits.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};

async fn sleep(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let seconds = event.payload["seconds"].as_f64().unwrap_or(1.0);
    let marker = event.payload["marker"].as_str().map(str::to_owned);
    let mut term = signal(SignalKind::terminate())?;
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

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(sleep)).await
}
