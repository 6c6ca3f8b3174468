//! The local AWS emulator (moto's server), one per test process, on a free loopback port.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;

/// Region every test uses.
pub const REGION: &str = "us-east-1";
/// The account id moto always reports.
pub const ACCOUNT: &str = "123456789012";

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The port.
    pub port: u16,
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Emulator {
    /// The emulator of this test process, started on first use. Tests share it and use
    /// resource names of their own, so they can run in parallel.
    pub fn shared() -> &'static Emulator {
        static SHARED: OnceLock<Emulator> = OnceLock::new();
        SHARED.get_or_init(Emulator::start)
    }

    /// Starts a new emulator; it dies with the test process.
    pub fn start() -> Emulator {
        let port = free_port();
        // The spawning thread must outlive the child (PR_SET_PDEATHSIG fires when the
        // parent *thread* exits), so a dedicated thread spawns it and then parks forever.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut cmd = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()));
            cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl in the child before exec; async-signal-safe.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd.spawn();
            let ok = child.is_ok();
            tx.send(child.map(|c| c.id()).map_err(|e| e.to_string())).unwrap();
            if ok {
                loop {
                    std::thread::park();
                }
            }
        });
        let started = rx.recv().unwrap();
        if let Err(e) = started {
            panic!("cannot start moto's server (python3 -m moto.server): {e}; run scripts/setup test");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto's server did not listen on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Emulator {
            url: format!("http://127.0.0.1:{port}"),
            port,
        }
    }

    /// Environment that points an AWS SDK (the runner, a bootstrap) at this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        aws_env(&self.url)
    }

    /// SDK configuration for the test's own clients.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config(&self.url).await
    }
}

/// Environment that points an AWS SDK at `url`, with throwaway credentials.
pub fn aws_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", url.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// SDK configuration for `url` with throwaway credentials.
pub async fn sdk_config(url: &str) -> SdkConfig {
    immortal_handler_sdk::aws::loader()
        .endpoint_url(url)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await
}
