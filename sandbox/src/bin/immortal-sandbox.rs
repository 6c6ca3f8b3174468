//! `immortal-sandbox`: see the library's documentation. Installed setuid root; every
//! line here that runs as root reads only its own arguments (two numbers and paths the
//! runner chose) and the signals it receives.
//!
//! Written the way firecracker's jailer writes its system calls: one call per `unsafe`
//! block, its return value checked at once and turned into a [`SysError`] naming the
//! call, and SAFETY comments that state the real invariant. The one that matters most:
//! this program never starts a thread, so after `fork` the child is a copy of a
//! single-threaded process and may allocate and print like any other.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;

use immortal_sandbox::{is_function_uid, Spec, EXEC, JOIN, KILL_SIGNAL, SPEC_FD, SWEEP, SWEEP_LEFTOVERS};

/// Exit code for a refused request (the runner reports it as a failure to start).
const REFUSED: u8 = 125;

/// A system call that failed: which, and the OS error.
#[derive(Debug)]
struct SysError {
    call: &'static str,
    source: std::io::Error,
}

impl std::fmt::Display for SysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.call, self.source)
    }
}

/// A C return value as a result: negative means the call failed (errno says why).
fn check(ret: libc::c_int, call: &'static str) -> Result<libc::c_int, SysError> {
    if ret < 0 {
        Err(SysError {
            call,
            source: std::io::Error::last_os_error(),
        })
    } else {
        Ok(ret)
    }
}

/// Prints why and returns the refusal code.
fn refuse(why: impl std::fmt::Display) -> ExitCode {
    eprintln!("immortal-sandbox: {why}");
    ExitCode::from(REFUSED)
}

fn main() -> ExitCode {
    // The runner that started us, read first: if it dies before the death signal below
    // is armed, the parent changes and `exec` refuses. (Comparing with 1 instead would
    // refuse every run where the runner itself is PID 1, as in a container.)
    // SAFETY: getppid has no preconditions and cannot fail.
    let runner = unsafe { libc::getppid() };
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return refuse("usage: immortal-sandbox exec UID GID | join UID GID | sweep UID GID [DIR...]");
    }
    let (Ok(uid), Ok(gid)) = (args[2].parse::<u32>(), args[3].parse::<u32>()) else {
        return refuse("UID and GID must be numbers");
    };
    if !is_function_uid(uid) || !is_function_uid(gid) {
        return refuse("UID and GID must be function ids (20000-29999)");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    // SAFETY: getuid has no preconditions and cannot fail.
    let caller = unsafe { libc::getuid() };
    if euid != 0 {
        return refuse("not running as root: install it owned by root with mode 4750 (chmod u+s), group of the runner");
    }
    if is_function_uid(caller) {
        return refuse("a function's user may not start functions");
    }
    let result = match args[1].as_str() {
        EXEC => exec(uid, gid, runner, true),
        JOIN => exec(uid, gid, runner, false),
        SWEEP => sweep(uid, gid, &args[4..]),
        _ => return refuse("the sub-command is exec, join or sweep"),
    };
    result.unwrap_or_else(refuse)
}

/// The signals relayed to the function (and SIGCHLD, which ends the wait).
fn relayed() -> Result<libc::sigset_t, SysError> {
    // SAFETY: sigset_t is plain data; sigemptyset below initialises it fully.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    check(unsafe { libc::sigemptyset(&mut set) }, "sigemptyset")?;
    for signal in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        KILL_SIGNAL,
        libc::SIGCHLD,
    ] {
        // SAFETY: `set` is an initialised sigset_t and `signal` a valid signal number.
        check(unsafe { libc::sigaddset(&mut set, signal) }, "sigaddset")?;
    }
    Ok(set)
}

/// Runs the spec's program as `uid`; with `sweep`, kills whatever the user left
/// running when it ends. `runner` is the parent this process started with.
fn exec(uid: u32, gid: u32, runner: libc::pid_t, sweep: bool) -> Result<ExitCode, SysError> {
    let set = relayed()?;
    // Signals wait for sigtimedwait below instead of running handlers.
    // SAFETY: `set` is an initialised sigset; a null old-set pointer is allowed.
    let ret = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    check(ret, "sigprocmask(SIG_BLOCK)")?;
    // If the runner dies, kill the function (relayed as KILL_SIGNAL).
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, KILL_SIGNAL as libc::c_ulong) };
    check(ret, "prctl(PR_SET_PDEATHSIG)")?;
    // SAFETY: getppid has no preconditions and cannot fail.
    if unsafe { libc::getppid() } != runner {
        return Ok(refuse("the runner is gone"));
    }
    // What the function leaves behind when its parent ends is re-parented here, not to
    // PID 1 (the runner, in a container), and reaped here: no zombies pile up in a
    // long-lived worker.
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) };
    check(ret, "prctl(PR_SET_CHILD_SUBREAPER)")?;
    // SAFETY: getpid has no preconditions and cannot fail.
    let sandbox = unsafe { libc::getpid() };
    // SAFETY: this process has one thread (it never starts another), so the child is a
    // complete copy that may run any code until it execs or exits.
    let child = check(unsafe { libc::fork() }, "fork")?;
    if child == 0 {
        let why = become_function(uid, gid, sandbox, &set);
        eprintln!("immortal-sandbox: {why}");
        // SAFETY: leaving the forked child at once, without the parent's destructors
        // or buffered output running twice.
        unsafe { libc::_exit(REFUSED as i32) };
    }
    // The spec pipe is the child's to read; the parent lets its copy go.
    // SAFETY: closing a descriptor number; a failure (it was never opened) is harmless.
    unsafe { libc::close(SPEC_FD) };
    let status = supervise(child, &set)?;
    if sweep {
        // What is left is found by the runner's sweep, which refuses to reuse the user.
        let _all_gone = sweep_processes(uid, gid)?;
        reap_all();
    }
    Ok(exit_like(status))
}

/// Reaps what is left of the function's processes (killed by the sweep), waiting a
/// little for each to finish dying; whatever outlives that goes to PID 1.
fn reap_all() {
    for _ in 0..50 {
        let mut status = 0;
        // SAFETY: waitpid on any child of ours, without blocking; `status` is writable.
        match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
            pid if pid > 0 => continue,
            0 => std::thread::sleep(std::time::Duration::from_millis(20)),
            _ => return, // ECHILD: none left
        }
    }
}

/// In the child: drop to the function's user, then read the spec and exec it. Returns
/// only why it could not.
fn become_function(uid: u32, gid: u32, sandbox: libc::pid_t, relayed: &libc::sigset_t) -> String {
    if let Err(e) = drop_privileges(uid, gid, sandbox, relayed) {
        return format!("cannot become the function's user: {e}");
    }
    // Unprivileged from here on: reading what the runner wrote is no risk to anyone.
    let mut bytes = Vec::new();
    // SAFETY: SPEC_FD is the pipe the runner opened for this child, open in it and
    // owned by nothing else here: the File takes it over and closes it.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(SPEC_FD) };
    if pipe.read_to_end(&mut bytes).is_err() {
        return "cannot read the spec".into();
    }
    drop(pipe);
    let spec = match Spec::decode(&bytes) {
        Ok(spec) => spec,
        Err(e) => return e.0.into(),
    };
    if let Some(scratch) = &spec.scratch {
        use std::os::unix::fs::DirBuilderExt;
        if std::fs::DirBuilder::new().mode(0o700).create(scratch).is_err() && !Path::new(scratch).is_dir() {
            return "cannot create the scratch folder".into();
        }
    }
    if std::env::set_current_dir(&spec.cwd).is_err() {
        return "cannot enter the working directory".into();
    }
    let (argv, env) = match spec.c_strings() {
        Ok(strings) => strings,
        Err(e) => return e.0.into(),
    };
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (argv_ptrs, env_ptrs) = (ptrs(&argv), ptrs(&env));
    // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(argv[0].as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    format!("cannot start the program: {}", std::io::Error::last_os_error())
}

/// In the child: a session of its own, no groups, the function's ids for good, no new
/// privileges, death with the sandbox, the relayed signals unblocked.
fn drop_privileges(uid: u32, gid: u32, sandbox: libc::pid_t, relayed: &libc::sigset_t) -> Result<(), SysError> {
    // A session of its own: the function cannot signal the sandbox's group.
    // SAFETY: setsid has no memory arguments; the child is no group leader.
    check(unsafe { libc::setsid() }, "setsid")?;
    drop_to(uid, gid)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    // SAFETY: getegid has no preconditions and cannot fail.
    let egid = unsafe { libc::getegid() };
    // SAFETY: integer argument only; it must fail now that root is gone.
    let regained = unsafe { libc::setuid(0) } == 0;
    if euid != uid || egid != gid || regained {
        return Err(SysError {
            call: "the privilege check",
            source: std::io::Error::other("the function's user kept privileges"),
        });
    }
    // No setuid program the function runs can give it more than it has.
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    check(ret, "prctl(PR_SET_NO_NEW_PRIVS)")?;
    // Dropping privileges cleared the death signal: die with the sandbox.
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    check(ret, "prctl(PR_SET_PDEATHSIG)")?;
    // SAFETY: getppid has no preconditions and cannot fail.
    if unsafe { libc::getppid() } != sandbox {
        return Err(SysError {
            call: "getppid",
            source: std::io::Error::other("the sandbox is gone"),
        });
    }
    // SAFETY: `relayed` is an initialised sigset; a null old-set pointer is allowed.
    let ret = unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, relayed, std::ptr::null_mut()) };
    check(ret, "sigprocmask(SIG_UNBLOCK)")?;
    Ok(())
}

/// Waits for the child, relaying signals to its session and reaping the orphans
/// re-parented here; returns the child's wait status.
fn supervise(child: libc::pid_t, set: &libc::sigset_t) -> Result<libc::c_int, SysError> {
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    loop {
        let mut status = 0;
        // Any child: the function, or one of its orphans (reaped and forgotten).
        // SAFETY: waitpid on our own children, without blocking; `status` is writable.
        match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
            pid if pid == child => return Ok(status),
            pid if pid > 0 => continue,
            0 => {}
            _ => return check(-1, "waitpid"),
        }
        // SAFETY: `set` is an initialised sigset, `timeout` a valid timespec, and a null
        // siginfo pointer is allowed. -1 is a timeout or an interruption: wait again.
        let signal = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
        let (target, signal) = match signal {
            s if s == KILL_SIGNAL => (-child, libc::SIGKILL),
            s if s > 0 && s != libc::SIGCHLD => (-child, s),
            _ => continue,
        };
        // The function's session may be gone already (ESRCH): nothing to relay to.
        // SAFETY: kill with integer arguments only.
        unsafe { libc::kill(target, signal) };
    }
}

/// Leaves as the child left: its exit code, or killed by its signal.
fn exit_like(status: libc::c_int) -> ExitCode {
    if !libc::WIFSIGNALED(status) {
        return ExitCode::from(libc::WEXITSTATUS(status) as u8);
    }
    let signal = libc::WTERMSIG(status);
    // Die of the same signal: its default action, unblocked, raised on ourselves. Each
    // step may fail only for an invalid signal number, which a wait status never holds;
    // should the process survive anyway, the exit code below says the same.
    // SAFETY: SIG_DFL is a valid disposition for any catchable signal.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
    // SAFETY: sigset_t is plain data; sigemptyset below initialises it fully.
    let mut only: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `only` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut only) };
    // SAFETY: `only` is initialised and `signal` came from a wait status.
    unsafe { libc::sigaddset(&mut only, signal) };
    // SAFETY: `only` is initialised; a null old-set pointer is allowed.
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut()) };
    // SAFETY: getpid cannot fail; kill with integer arguments only.
    unsafe { libc::kill(libc::getpid(), signal) };
    ExitCode::from(128 + signal as u8)
}

/// Kills every process of `uid` (what the function started and left behind), from a
/// child that is `uid` itself: `kill(-1)` then reaches exactly those. Again until none
/// is alive, so a process forked while the first signal went out is not missed.
/// (A killed process not yet reaped by its parent is a zombie: it counts as gone.)
fn sweep_processes(uid: u32, gid: u32) -> Result<bool, SysError> {
    as_function(uid, gid, || {
        for _ in 0..KILL_ROUNDS {
            // SAFETY: kill(-1) as the function's user signals only its own processes.
            // ESRCH (nothing left of the user) is the usual, happy answer.
            unsafe { libc::kill(-1, libc::SIGKILL) };
            if !any_alive(uid) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    })
}

/// Whether a process of `uid` other than this one is alive (not a zombie), by
/// `/proc/PID/status`.
fn any_alive(uid: u32) -> bool {
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() }.to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) && *n != me)
        else {
            return false;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return false;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let real_uid = field("Uid:")
            .split_whitespace()
            .next()
            .and_then(|u| u.parse::<u32>().ok());
        real_uid == Some(uid) && !field("State:").starts_with('Z')
    })
}

/// How many times the sweep signals the user's processes before it gives up.
const KILL_ROUNDS: u32 = 100;

/// `sweep UID GID [DIR...]`: kills what `uid` runs, then removes what it owns in each
/// DIR. [`SWEEP_LEFTOVERS`] when a process or a file of `uid` is left.
fn sweep(uid: u32, gid: u32, dirs: &[String]) -> Result<ExitCode, SysError> {
    let processes_gone = sweep_processes(uid, gid)?;
    let dirs = dirs.to_vec();
    let files_gone = as_function(uid, gid, move || {
        let mut clean = true;
        for dir in &dirs {
            clean &= remove_owned(Path::new(dir), uid);
        }
        clean
    })?;
    if processes_gone && files_gone {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "immortal-sandbox: user {uid} still has {} after the sweep",
            if processes_gone { "files" } else { "processes" }
        );
        Ok(ExitCode::from(SWEEP_LEFTOVERS))
    }
}

/// Removes what `uid` owns at or under `path`, never following a link; a folder of its
/// own is made searchable and writable first (it may have `chmod 000`-ed it). Whether
/// nothing of `uid` is left there.
fn remove_owned(path: &Path, uid: u32) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return true;
    };
    if meta.uid() == uid {
        if meta.is_dir() {
            // Its own folder: the owner may always change its mode.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                remove_owned(&entry.path(), uid);
            }
            let _ = std::fs::remove_dir_all(path);
        } else {
            let _ = std::fs::remove_file(path);
        }
        return std::fs::symlink_metadata(path).is_err();
    }
    let mut clean = true;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            clean &= remove_owned(&entry.path(), uid);
        }
    }
    clean
}

/// In a forked child: no groups, then `gid` and `uid` for good.
fn drop_to(uid: u32, gid: u32) -> Result<(), SysError> {
    // SAFETY: a zero-length list with a null pointer clears the supplementary groups.
    check(unsafe { libc::setgroups(0, std::ptr::null()) }, "setgroups")?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresgid(gid, gid, gid) }, "setresgid")?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresuid(uid, uid, uid) }, "setresuid")?;
    Ok(())
}

/// Runs `work` in a child process that is `uid:gid` (it does nothing if it cannot
/// become them), waits for it, and returns `work`'s verdict (`false` when the child
/// could not become them or did not finish).
fn as_function(uid: u32, gid: u32, work: impl FnOnce() -> bool) -> Result<bool, SysError> {
    // SAFETY: this process has one thread, so the child is a complete copy; it drops
    // privileges before anything else and leaves with _exit.
    let child = check(unsafe { libc::fork() }, "fork")?;
    if child == 0 {
        let code = match drop_to(uid, gid) {
            Ok(_) => i32::from(!work()),
            Err(e) => {
                eprintln!("immortal-sandbox: {e}");
                i32::from(REFUSED)
            }
        };
        // SAFETY: leaving the forked child at once, without the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child; `status` is writable.
    check(unsafe { libc::waitpid(child, &mut status, 0) }, "waitpid")?;
    Ok(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
}
