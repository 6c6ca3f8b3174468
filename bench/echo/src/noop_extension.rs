//! A no-op Lambda extension on the `lambda-extension` crate: registered for INVOKE and
//! SHUTDOWN, it answers each event at once. The benchmarks measure what one extension
//! adds to a run.

use lambda_extension::{service_fn, Error, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_extension::run(service_fn(|_: LambdaEvent| async { Ok::<(), Error>(()) })).await
}
