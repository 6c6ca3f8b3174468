//! `run(handler)` for a `bootstrap` main, on top of `lambda_runtime`.

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};

use crate::handler::{Context, Error, Handler, OverflowError};

/// Runs `handler` against the Runtime API (Lambda's, or the runner's).
pub async fn run<H: Handler>(handler: H) -> Result<(), lambda_runtime::Error> {
    Runtime::new(handler).run().await
}

/// A configured runtime.
pub struct Runtime<H> {
    handler: Arc<H>,
    overflow_margin: Option<Duration>,
}

impl<H: Handler> Runtime<H> {
    /// A runtime for `handler`.
    pub fn new(handler: H) -> Self {
        Runtime {
            handler: Arc::new(handler),
            overflow_margin: None,
        }
    }

    /// The guard: when an invocation under a time limit is still running `margin`
    /// before its deadline, end it with `Immortal.Overflow` (so the forwarder relaunches
    /// it at once) instead of letting Lambda kill it at the deadline. The handler's
    /// future is dropped at that point, so use it for work that is safe to redo.
    pub fn overflow_margin(mut self, margin: Duration) -> Self {
        self.overflow_margin = Some(margin);
        self
    }

    /// Serves invocations until the process ends.
    pub async fn run(self) -> Result<(), lambda_runtime::Error> {
        crate::logging::init();
        let (handler, margin) = (self.handler, self.overflow_margin);
        lambda_runtime::run(service_fn(move |event: LambdaEvent<H::Event>| {
            let handler = handler.clone();
            async move {
                let ctx = Context::from_lambda(event.context);
                invoke(&*handler, event.payload, ctx, margin)
                    .await
                    .map_err(Diagnostic::from)
            }
        }))
        .await
    }
}

/// One invocation, with the guard when asked for and a clock exists.
pub(crate) async fn invoke<H: Handler>(
    handler: &H,
    event: H::Event,
    ctx: Context,
    margin: Option<Duration>,
) -> Result<H::Response, Error> {
    let budget = match (margin, ctx.remaining()) {
        (Some(margin), Some(remaining)) => Some(remaining.saturating_sub(margin)),
        _ => None,
    };
    let work = handler.handle(event, ctx);
    match budget {
        None => work.await,
        Some(budget) => match tokio::time::timeout(budget, work).await {
            Ok(result) => result,
            Err(_) => Err(OverflowError::new(format!(
                "less than {} s of Lambda's time limit remained; handing the invocation to the runner",
                margin.unwrap_or_default().as_secs_f64()
            ))
            .into()),
        },
    }
}
