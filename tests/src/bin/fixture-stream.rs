//! A function that streams its response in several chunks.

use lambda_runtime::streaming::{channel, Body, Response};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

async fn stream(event: LambdaEvent<Value>) -> Result<Response<Body>, Error> {
    let chunks: Vec<String> = event.payload["chunks"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let (mut tx, rx) = channel();
    tokio::spawn(async move {
        for chunk in chunks {
            tx.send_data(chunk.into()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    Ok(Response::from(rx))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(stream)).await
}
