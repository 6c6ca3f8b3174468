//! A function that looks around its sandbox and says what it found: who it runs as,
//! what it can see of /tmp, the layers root and the runner, what it may write, its
//! environment, and (through the default credential chain of the Rust SDK) whose
//! credentials it holds. What it does is steered by the event:
//! `{"write_marker": NAME}` leaves NAME in /tmp (and a closed folder there), its
//! TMPDIR, /var/tmp and /dev/shm;
//! `{"look_for": NAME, "other_tmpdir": DIR}` checks for another function's files;
//! `{"opt": DIR}` lists a layers root; `{"whoami": true, "again_after_s": N}` calls
//! STS GetCallerIdentity (twice, N seconds apart); `{"sleep_first_s": N}` looks only
//! after N seconds; `{"read_task_root": NAME}` reads NAME in its task root;
//! `{"read_path": DIR}` lists DIR; `{"rewrite": NAME}` opens NAME in its task root for
//! writing.

use std::path::Path;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn inspect(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, ctx) = event.into_parts();
    if let Some(seconds) = payload["sleep_first_s"].as_u64() {
        tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
    }
    let tmpdir = std::env::var("TMPDIR").unwrap_or_default();
    if let Some(name) = payload["write_marker"].as_str() {
        std::fs::write(Path::new("/tmp").join(name), "mine")?;
        std::fs::write(Path::new(&tmpdir).join(name), "mine")?;
        // What a planter leaves for the next function where it may write: a folder it
        // closes to everyone (itself included), /var/tmp, /dev/shm.
        let closed = Path::new("/tmp").join(format!("{name}-closed"));
        std::fs::create_dir(&closed)?;
        std::fs::write(closed.join("secret"), "mine")?;
        std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o000))?;
        std::fs::write(Path::new("/var/tmp").join(name), "mine")?;
        std::fs::write(Path::new("/dev/shm").join(name), "mine")?;
    }
    let look_for = payload["look_for"].as_str().map(|name| {
        json!({
            "in_tmp": Path::new("/tmp").join(name).exists(),
            "closed_in_tmp": Path::new("/tmp").join(format!("{name}-closed")).exists(),
            "in_var_tmp": Path::new("/var/tmp").join(name).exists(),
            "in_dev_shm": Path::new("/dev/shm").join(name).exists(),
            "other_tmpdir_exists": payload["other_tmpdir"].as_str().is_some_and(|d| Path::new(d).exists()),
        })
    });
    let opt = payload["opt"].as_str().map(|dir| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    });
    let task_root = std::env::var("LAMBDA_TASK_ROOT").unwrap_or_default();
    let read_task_root = payload["read_task_root"].as_str().map(|name| {
        std::fs::read_to_string(Path::new(&task_root).join(name)).unwrap_or_else(|e| format!("unreadable: {e}"))
    });
    // What a function should never reach: another path (the code cache), and a change
    // to its own code (whatever modes its zip gave the file).
    let read_path = payload["read_path"].as_str().map(|dir| match std::fs::read_dir(dir) {
        Ok(entries) => format!("listed {} entries", entries.count()),
        Err(e) => format!("refused: {e}"),
    });
    let rewrite = payload["rewrite"].as_str().map(|name| {
        std::fs::OpenOptions::new()
            .append(true)
            .open(Path::new(&task_root).join(name))
            .map(|_| "opened for writing".to_owned())
            .unwrap_or_else(|e| format!("refused: {e}"))
    });
    let task_root_write = std::fs::write(Path::new(&task_root).join("planted"), "x")
        .map(|_| "written".to_owned())
        .unwrap_or_else(|e| format!("refused: {e}"));
    let whoami = if payload["whoami"].as_bool() == Some(true) {
        let first = whoami().await;
        let again = match payload["again_after_s"].as_u64() {
            Some(s) => {
                tokio::time::sleep(std::time::Duration::from_secs(s)).await;
                Some(whoami().await)
            }
            None => None,
        };
        json!({"first": first, "again": again})
    } else {
        Value::Null
    };
    // SAFETY: plain id queries.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    Ok(json!({
        "request_id": ctx.request_id,
        "uid": uid,
        "gid": gid,
        "tmpdir": tmpdir,
        "look_for": look_for,
        "opt": opt,
        "task_root_write": task_root_write,
        "read_task_root": read_task_root,
        "read_path": read_path,
        "rewrite": rewrite,
        "event": payload,
        "argv": std::env::args().collect::<Vec<_>>(),
        "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "runner_environ": runner_environ(),
        "env": std::env::vars().collect::<std::collections::BTreeMap<_, _>>(),
        "whoami": whoami,
    }))
}

/// The caller identity's ARN and the access key id that signed the call.
async fn whoami() -> Value {
    let config = immortal_handler_sdk::aws::load().await;
    let key = match config.credentials_provider() {
        Some(provider) => {
            use aws_credential_types::provider::ProvideCredentials;
            provider
                .provide_credentials()
                .await
                .map(|c| c.access_key_id().to_owned())
                .unwrap_or_else(|e| format!("no credentials: {e}"))
        }
        None => "no provider".to_owned(),
    };
    let arn = aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .map(|out| out.arn.unwrap_or_default())
        .unwrap_or_else(|e| format!("failed: {e:?}"));
    json!({"arn": arn, "access_key_id": key})
}

/// What reading the runner's environment in /proc gives: the runner is the nearest
/// ancestor named `runner`.
fn runner_environ() -> String {
    let mut pid = std::process::id();
    for _ in 0..4 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some(ppid) = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            break;
        };
        pid = ppid;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "runner" {
            return match std::fs::read(format!("/proc/{pid}/environ")) {
                Ok(bytes) if bytes.is_empty() => "empty".into(),
                Ok(bytes) => format!("readable: {}", String::from_utf8_lossy(&bytes).replace('\0', " ")),
                Err(e) => format!("denied: {e}"),
            };
        }
    }
    "no runner found".into()
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(inspect)).await
}
