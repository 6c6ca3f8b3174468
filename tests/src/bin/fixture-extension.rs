//! An external extension built on the `lambda-extension` crate's published API, nothing
//! of ours in it: it registers for INVOKE and SHUTDOWN and appends what it gets to the
//! file `EXTENSION_LOG` names (`INVOKE <request id>`, then `INVOKE-DONE` after
//! `EXTENSION_DELAY_MS`, and `SHUTDOWN <reason>`); with `EXTENSION_NOTE_UID`, its user
//! id first (`UID <n>`); with `EXTENSION_REGISTER_DELAY_MS`, it registers that late
//! (noting `REGISTERING`).

use std::io::Write;

use lambda_extension::{service_fn, Error, LambdaEvent, NextEvent};

fn note(line: &str) -> Result<(), Error> {
    let path = std::env::var("EXTENSION_LOG")?;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{line}")?;
    Ok(())
}

async fn extension(event: LambdaEvent) -> Result<(), Error> {
    match event.next {
        NextEvent::Invoke(invoke) => {
            note(&format!("INVOKE {}", invoke.request_id))?;
            let delay: u64 = std::env::var("EXTENSION_DELAY_MS")
                .ok()
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            note("INVOKE-DONE")?;
        }
        NextEvent::Shutdown(shutdown) => note(&format!("SHUTDOWN {}", shutdown.shutdown_reason))?,
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    println!("fixture-extension starting");
    if std::env::var_os("EXTENSION_NOTE_UID").is_some() {
        // SAFETY: a plain id query.
        note(&format!("UID {}", unsafe { libc::getuid() }))?;
    }
    if let Some(delay) = std::env::var("EXTENSION_REGISTER_DELAY_MS")
        .ok()
        .and_then(|d| d.parse().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        note("REGISTERING")?;
    }
    lambda_extension::run(service_fn(extension)).await
}
