//! # immortal-sandbox
//!
//! Lambda runs a function as an unprivileged user of its own, with its code read-only.
//! The runner does the same in its container without running as root itself: it stays
//! the image's unprivileged user and starts each bootstrap through `immortal-sandbox`, a
//! small setuid-root program that does three things and parses nothing it was not
//! given by the runner while it holds root:
//!
//! - `immortal-sandbox exec UID GID`: forks; the child drops to `UID:GID` (no
//!   supplementary groups, no new privileges, killed with its parent), and only then
//!   reads what to run from fd 3 ([`Spec`]) and `exec`s it. The parent stays, relays the
//!   runner's signals to the child's session, and when the child is gone kills every
//!   process left of `UID`; it exits as the child did.
//! - `immortal-sandbox sweep UID GID [DIR...]`: as `UID`, kills every process of `UID`
//!   and removes what `UID` owns in each `DIR` (`/tmp`, `/var/tmp`, `/dev/shm`, its
//!   scratch folder), its folders' permissions restored first (a `chmod 000` folder
//!   does not survive); exits [`SWEEP_LEFTOVERS`] when anything of `UID` is left.
//!
//! `UID` must lie in [`FUNCTION_UIDS`], and the caller must not: a function cannot use
//! it to become another. Install it owned by root, group of the runner, mode 4750.
#![deny(missing_docs)]

use std::ffi::CString;
use std::ops::RangeInclusive;

/// The user ids functions run as: one per concurrently running function.
pub const FUNCTION_UIDS: RangeInclusive<u32> = 20_000..=29_999;
/// The file descriptor the child reads its [`Spec`] from.
pub const SPEC_FD: i32 = 3;
/// Sent to the sandbox, it kills the function at once (SIGKILL itself could not be
/// relayed: it would kill the sandbox and leave the function running).
pub const KILL_SIGNAL: i32 = libc::SIGUSR1;
/// The sub-command that runs a bootstrap.
pub const EXEC: &str = "exec";
/// The sub-command that runs a process beside a function's bootstrap, as its user (an
/// extension): like [`EXEC`], but what the user left running is cleared up when the
/// bootstrap's `exec` ends, not when this one does.
pub const JOIN: &str = "join";
/// The sub-command that clears up after a function.
pub const SWEEP: &str = "sweep";
/// `sweep`'s exit code when something of the user's could not be removed: the user id
/// must not serve another run.
pub const SWEEP_LEFTOVERS: u8 = 3;

/// What the child runs, written by the runner to [`SPEC_FD`] and read by the child once
/// it is unprivileged: NUL-terminated strings, in this order: the working directory,
/// a scratch folder to create (mode 700, may be empty), the number of arguments, the
/// arguments (the program first), then `KEY=VALUE` environment entries to the end.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spec {
    /// The working directory.
    pub cwd: String,
    /// A private folder to create for the function (its `TMPDIR`), if any.
    pub scratch: Option<String>,
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
}

/// Why a spec cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub &'static str);

impl Spec {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut push = |s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        push(&self.cwd);
        push(self.scratch.as_deref().unwrap_or(""));
        push(&self.argv.len().to_string());
        for arg in &self.argv {
            push(arg);
        }
        for (key, value) in &self.env {
            push(&format!("{key}={value}"));
        }
        out
    }

    /// Reads the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Spec, SpecError> {
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        let fields = bytes
            .split(|b| *b == 0)
            .map(|f| String::from_utf8(f.to_vec()).map_err(|_| SpecError("a field is not UTF-8")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut fields = fields.into_iter();
        let cwd = fields.next().ok_or(SpecError("no working directory"))?;
        let scratch = Some(fields.next().ok_or(SpecError("no scratch folder"))?).filter(|s| !s.is_empty());
        let argc: usize = fields
            .next()
            .ok_or(SpecError("no argument count"))?
            .parse()
            .map_err(|_| SpecError("the argument count is not a number"))?;
        if argc == 0 {
            return Err(SpecError("no program"));
        }
        let argv: Vec<String> = fields.by_ref().take(argc).collect();
        if argv.len() != argc {
            return Err(SpecError("fewer arguments than counted"));
        }
        let env = fields
            .map(|entry| {
                entry
                    .split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or(SpecError("an environment entry has no ="))
            })
            .collect::<Result<_, _>>()?;
        Ok(Spec {
            cwd,
            scratch,
            argv,
            env,
        })
    }

    /// The arguments and environment as C strings for `execve`.
    pub fn c_strings(&self) -> Result<(Vec<CString>, Vec<CString>), SpecError> {
        let c = |s: String| CString::new(s).map_err(|_| SpecError("a NUL inside a field"));
        let argv = self.argv.iter().cloned().map(c).collect::<Result<_, _>>()?;
        let env = self
            .env
            .iter()
            .map(|(k, v)| c(format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        Ok((argv, env))
    }
}

/// Whether `uid` is one a function may run as.
pub fn is_function_uid(uid: u32) -> bool {
    FUNCTION_UIDS.contains(&uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip() {
        let spec = Spec {
            cwd: "/var/task".into(),
            scratch: Some("/tmp/fn-1".into()),
            argv: vec!["/var/runtime/bootstrap".into(), "a b".into()],
            env: vec![("A".into(), "1=2".into()), ("EMPTY".into(), String::new())],
        };
        assert_eq!(Spec::decode(&spec.encode()).unwrap(), spec);
        let no_scratch = Spec { scratch: None, ..spec };
        assert_eq!(Spec::decode(&no_scratch.encode()).unwrap(), no_scratch);
    }

    #[test]
    fn bad_specs_are_refused() {
        let spec = |fields: &[&str]| {
            fields
                .iter()
                .flat_map(|f| [f.as_bytes(), b"\0"].concat())
                .collect::<Vec<u8>>()
        };
        assert!(Spec::decode(b"").is_err());
        assert!(Spec::decode(&spec(&["/", "", "x"])).is_err());
        assert!(Spec::decode(&spec(&["/", "", "0"])).is_err(), "no program");
        assert!(Spec::decode(&spec(&["/", "", "2", "only-one"])).is_err());
        assert!(Spec::decode(&spec(&["/", "", "1", "p", "NOEQUALS"])).is_err());
        assert!(is_function_uid(20_000) && !is_function_uid(0) && !is_function_uid(10_001));
    }
}
