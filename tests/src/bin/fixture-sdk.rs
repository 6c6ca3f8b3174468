//! A handler written with immortal-handler-sdk: reports what its context says, and
//! sleeps `seconds`. `OVERFLOW_MARGIN_MS` turns on the SDK's guard.

use std::time::Duration;

use immortal_handler_sdk::{Context, Error, Handler, Runtime};
use serde_json::{json, Value};

struct Report;

impl Handler for Report {
    type Event = Value;
    type Response = Value;

    async fn handle(&self, event: Value, ctx: Context) -> Result<Value, Error> {
        if let Some(reason) = event["overflow_now"].as_str() {
            ctx.overflow_now(reason)?;
        }
        tokio::time::sleep(Duration::from_secs_f64(event["seconds"].as_f64().unwrap_or(0.0))).await;
        Ok(json!({
            "request_id": ctx.request_id(),
            "remaining_ms": ctx.remaining().map(|r| r.as_millis() as u64),
            "in_runner": ctx.in_runner(),
            "is_overflow": ctx.is_overflow(),
            "overflow": ctx.overflow(),
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let mut runtime = Runtime::new(Report);
    if let Some(ms) = std::env::var("OVERFLOW_MARGIN_MS").ok().and_then(|v| v.parse().ok()) {
        runtime = runtime.overflow_margin(Duration::from_millis(ms));
    }
    runtime.run().await
}
