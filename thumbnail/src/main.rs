//! The thumbnail function's `bootstrap`.

use immortal_handler_sdk::{init_error, logging};
use immortal_thumbnail::Thumbnail;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    logging::init();
    let handler = match Thumbnail::from_env().await {
        Ok(handler) => handler,
        Err(e) => {
            tracing::error!(error_type = e.error_type(), "{}", e.message());
            init_error::report(e.error_type(), e.message());
            std::process::exit(1);
        }
    };
    immortal_handler_sdk::run(handler).await
}
