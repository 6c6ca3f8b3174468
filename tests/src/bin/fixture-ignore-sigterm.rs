//! A function that ignores SIGTERM. It answers at once, unless the event says
//! `"hang": true`; either way only SIGKILL ends it.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
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
