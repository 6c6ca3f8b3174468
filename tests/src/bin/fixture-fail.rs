//! A function whose handler returns an error with a chosen type.

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

async fn fail(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let reason = event
        .payload
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("it failed")
        .to_owned();
    Err(Diagnostic {
        error_type: "Fixture.Failed".into(),
        error_message: reason,
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(fail)).await
}
