//! SIGTERM and SIGINT to the runner become a stop request (ECS stops tasks with SIGTERM).

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// A stop request: the signal number the runner received (SIGTERM, SIGINT).
pub type StopSignal = watch::Receiver<Option<i32>>;

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

/// Resolves when a stop is requested (at once if one already was).
pub(crate) async fn stop_requested(stop: &mut StopSignal) -> Option<i32> {
    loop {
        if let Some(signal) = *stop.borrow_and_update() {
            return Some(signal);
        }
        if stop.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
