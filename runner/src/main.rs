//! `runner`: parse the command line, run, map the result to an exit code.

use std::process::ExitCode;

use immortal_handler_sdk::logging;
use immortal_runner::{cli::Cli, signals};

fn main() -> ExitCode {
    // Nothing the runner starts may read its memory or environment in /proc, however it
    // runs (the function's user differs anyway when sandboxed).
    // SAFETY: prctl on this process only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let cli = Cli::from_env_and_args();
    logging::init_cli();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(immortal_runner::exit::Exit::Usage.code());
        }
    };
    runtime
        .block_on(async { immortal_runner::run(cli, signals::install()).await })
        .into()
}
