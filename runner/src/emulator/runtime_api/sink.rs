//! Where a response goes: stdout, a file, or nowhere (kept in memory only).

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

/// A shared writer for response bytes. Streamed responses are written chunk by chunk
/// as they arrive; buffered ones once, at the end.
#[derive(Clone)]
pub struct ResponseSink(Arc<Mutex<Option<Box<dyn AsyncWrite + Send + Unpin>>>>);

impl ResponseSink {
    /// Writes to `writer`.
    pub(crate) fn new(writer: impl AsyncWrite + Send + Unpin + 'static) -> Self {
        ResponseSink(Arc::new(Mutex::new(Some(Box::new(writer)))))
    }

    /// Discards everything (the outcome still holds the bytes).
    pub fn discard() -> Self {
        ResponseSink(Arc::new(Mutex::new(None)))
    }

    /// Writes and flushes one chunk.
    pub(crate) async fn write(&self, chunk: &[u8]) -> std::io::Result<()> {
        if let Some(writer) = self.0.lock().await.as_mut() {
            writer.write_all(chunk).await?;
            writer.flush().await?;
        }
        Ok(())
    }
}
