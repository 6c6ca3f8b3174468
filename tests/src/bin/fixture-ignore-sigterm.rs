//! A function that ignores SIGTERM. It answers at once, unless the event says
//! `"hang": true`; either way only SIGKILL ends it. With `"pid_file": PATH` it writes
//! its pid there once it has the event (so a test knows the run is under way).

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    if let Some(path) = event.payload["pid_file"].as_str() {
        std::fs::write(path, std::process::id().to_string())?;
    }
    if event.payload["hang"].as_bool() == Some(true) {
        std::future::pending::<()>().await;
    }
    Ok(json!({ "pid": std::process::id() }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // SAFETY: setting a signal disposition at start-up, before any other thread cares.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    lambda_runtime::run(service_fn(handler)).await
}
