//! A plain `lambda_runtime` function (no immortal SDK): answers with what it saw, so
//! tests can check the event, the context headers and the environment.
//! With `"run": "NAME"` in the event it also runs NAME from PATH and returns its output.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn echo(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, ctx) = event.into_parts();
    let run = match payload.get("run").and_then(Value::as_str) {
        Some(program) => {
            let out = std::process::Command::new(program).output()?;
            Value::String(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        None => Value::Null,
    };
    Ok(json!({
        "event": payload,
        "request_id": ctx.request_id,
        "invoked_function_arn": ctx.invoked_function_arn,
        "deadline_ms": ctx.deadline,
        "xray_trace_id": ctx.xray_trace_id,
        "client_context": ctx.client_context,
        "identity": ctx.identity,
        "function_name": ctx.env_config.function_name,
        "memory": ctx.env_config.memory,
        "version": ctx.env_config.version,
        "env": std::env::vars().collect::<std::collections::BTreeMap<_, _>>(),
        "cwd": std::env::current_dir()?.display().to_string(),
        "pid": std::process::id(),
        "run": run,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(echo)).await
}
