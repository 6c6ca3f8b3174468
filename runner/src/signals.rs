//! SIGTERM and SIGINT to the runner become a stop request (ECS stops tasks with SIGTERM).

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::invoke::StopSignal;

/// Starts listening; the receiver holds the first signal number received.
pub fn install() -> StopSignal {
    let (tx, rx) = watch::channel(None);
    for (kind, number) in [
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::interrupt(), libc::SIGINT),
    ] {
        let Ok(mut stream) = signal(kind) else { continue };
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                tx.send_if_modified(|current| current.is_none().then(|| *current = Some(number)).is_some());
            }
        });
    }
    rx
}
