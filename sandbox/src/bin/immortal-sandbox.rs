//! `immortal-sandbox`: see the library's documentation. Installed setuid root; every
//! line here that runs as root reads only its own arguments (two numbers and paths the
//! runner chose) and the signals it receives.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;

use immortal_sandbox::{is_function_uid, Spec, EXEC, JOIN, KILL_SIGNAL, SPEC_FD, SWEEP};

/// Exit code for a refused request (the runner reports it as a failure to start).
const REFUSED: u8 = 125;

fn main() -> ExitCode {
    // The runner that started us, read first: if it dies before the death signal below
    // is armed, the parent changes and `exec` refuses. (Comparing with 1 instead would
    // refuse every run where the runner itself is PID 1, as in a container.)
    // SAFETY: getppid has no preconditions and cannot fail.
    let runner = unsafe { libc::getppid() };
    let args: Vec<String> = std::env::args().collect();
    let refuse = |why: &str| {
        eprintln!("immortal-sandbox: {why}");
        ExitCode::from(REFUSED)
    };
    if args.len() < 4 {
        return refuse("usage: immortal-sandbox exec UID GID | join UID GID | sweep UID GID [DIR...]");
    }
    let (Ok(uid), Ok(gid)) = (args[2].parse::<u32>(), args[3].parse::<u32>()) else {
        return refuse("UID and GID must be numbers");
    };
    if !is_function_uid(uid) || !is_function_uid(gid) {
        return refuse("UID and GID must be function ids (20000-29999)");
    }
    // SAFETY: plain id queries.
    let (euid, caller) = unsafe { (libc::geteuid(), libc::getuid()) };
    if euid != 0 {
        return refuse("not running as root: install it owned by root with mode 4750 (chmod u+s), group of the runner");
    }
    if is_function_uid(caller) {
        return refuse("a function's user may not start functions");
    }
    match args[1].as_str() {
        EXEC => exec(uid, gid, runner, true),
        JOIN => exec(uid, gid, runner, false),
        SWEEP => {
            sweep(uid, gid, &args[4..]);
            ExitCode::SUCCESS
        }
        _ => refuse("the sub-command is exec, join or sweep"),
    }
}

/// The signals relayed to the function (and SIGCHLD, which ends the wait).
fn relayed() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local value.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            KILL_SIGNAL,
            libc::SIGCHLD,
        ] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Runs the spec's program as `uid`; with `sweep`, kills whatever the user left
/// running when it ends. `runner` is the parent this process started with.
fn exec(uid: u32, gid: u32, runner: libc::pid_t, sweep: bool) -> ExitCode {
    let set = relayed();
    let refuse = |why: &str| {
        eprintln!("immortal-sandbox: {why}");
        ExitCode::from(REFUSED)
    };
    // Signals wait for sigtimedwait below instead of running handlers.
    // SAFETY: `set` is an initialised sigset; a null old-set pointer is allowed.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return refuse("cannot block the relayed signals");
    }
    // If the runner dies, kill the function (relayed as KILL_SIGNAL).
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, KILL_SIGNAL as libc::c_ulong) } != 0 {
        return refuse("cannot arm the parent-death signal");
    }
    // SAFETY: getppid has no preconditions and cannot fail.
    if unsafe { libc::getppid() } != runner {
        return refuse("the runner is gone");
    }
    // What the function leaves behind when its parent ends is re-parented here, not to
    // PID 1 (the runner, in a container), and reaped here: no zombies pile up in a
    // long-lived worker.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) } != 0 {
        return refuse("cannot become the function's subreaper");
    }
    // SAFETY: getpid has no preconditions and cannot fail.
    let sandbox = unsafe { libc::getpid() };
    // SAFETY: this process has one thread (nothing here spawns any), so the child may
    // run any code until it execs.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return refuse("fork failed");
    }
    if child == 0 {
        // SAFETY: in the single-threaded child of a single-threaded parent.
        unsafe { become_function(uid, gid, sandbox) };
    }
    // SAFETY: the spec pipe is the child's to read; the parent never touches it.
    unsafe { libc::close(SPEC_FD) };
    // SAFETY: `child` is our own child and `set` the blocked set.
    let status = unsafe { supervise(child, &set) };
    if sweep {
        sweep_processes(uid, gid);
        reap_all();
    }
    // SAFETY: `status` is a wait status from waitpid.
    unsafe { exit_like(status) }
}

/// Reaps what is left of the function's processes (killed by the sweep), waiting a
/// little for each to finish dying; whatever outlives that goes to PID 1.
fn reap_all() {
    for _ in 0..50 {
        let mut status = 0;
        // SAFETY: waitpid on any child of ours, without blocking.
        match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
            pid if pid > 0 => continue,
            0 => std::thread::sleep(std::time::Duration::from_millis(20)),
            _ => return, // ECHILD: none left
        }
    }
}

/// In the child: drop to the function's user, then read the spec and exec it. Never
/// returns.
unsafe fn become_function(uid: u32, gid: u32, sandbox: libc::pid_t) -> ! {
    let fail = |why: &str| -> ! {
        eprintln!("immortal-sandbox: {why}");
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(REFUSED as i32) }
    };
    // SAFETY: credential changes and prctl in a single-threaded child.
    unsafe {
        // A session of its own: the function cannot signal the sandbox's group.
        libc::setsid();
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(gid, gid, gid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            fail("cannot become the function's user");
        }
        if libc::geteuid() != uid || libc::getegid() != gid || libc::setuid(0) == 0 {
            fail("the function's user kept privileges");
        }
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        // Dropping privileges cleared the death signal: die with the sandbox.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != sandbox {
            fail("the sandbox is gone");
        }
        let set = relayed();
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    // Unprivileged from here on: reading what the runner wrote is no risk to anyone.
    let mut bytes = Vec::new();
    // SAFETY: SPEC_FD is the pipe the runner opened for this child; owned from here.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(SPEC_FD) };
    if pipe.read_to_end(&mut bytes).is_err() {
        fail("cannot read the spec");
    }
    drop(pipe);
    let spec = Spec::decode(&bytes).unwrap_or_else(|e| fail(e.0));
    if let Some(scratch) = &spec.scratch {
        use std::os::unix::fs::DirBuilderExt;
        if std::fs::DirBuilder::new().mode(0o700).create(scratch).is_err() && !Path::new(scratch).is_dir() {
            fail("cannot create the scratch folder");
        }
    }
    if std::env::set_current_dir(&spec.cwd).is_err() {
        fail("cannot enter the working directory");
    }
    let (argv, env) = spec.c_strings().unwrap_or_else(|e| fail(e.0));
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (argv_ptrs, env_ptrs) = (ptrs(&argv), ptrs(&env));
    // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(argv[0].as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    fail("cannot start the program")
}

/// Waits for the child, relaying signals to its session; returns its wait status.
unsafe fn supervise(child: libc::pid_t, set: &libc::sigset_t) -> libc::c_int {
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    loop {
        let mut status = 0;
        // SAFETY: plain process calls on our own children.
        unsafe {
            // Any child: the function, or one of its orphans re-parented to this
            // subreaper (reaped and forgotten).
            match libc::waitpid(-1, &mut status, libc::WNOHANG) {
                pid if pid == child => return status,
                pid if pid > 0 => continue,
                _ => {}
            }
            let signal = libc::sigtimedwait(set, std::ptr::null_mut(), &timeout);
            match signal {
                s if s == KILL_SIGNAL => {
                    libc::kill(-child, libc::SIGKILL);
                }
                s if s > 0 && s != libc::SIGCHLD => {
                    libc::kill(-child, s);
                }
                _ => {}
            }
        }
    }
}

/// Leaves as the child left: its exit code, or killed by its signal.
unsafe fn exit_like(status: libc::c_int) -> ExitCode {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: restoring the default action and raising the same signal on ourselves.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            let mut only: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut only);
            libc::sigaddset(&mut only, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
        }
        return ExitCode::from(128 + signal as u8);
    }
    ExitCode::from(libc::WEXITSTATUS(status) as u8)
}

/// Kills every process of `uid` (what the function started and left behind), from a
/// child that is `uid` itself: `kill(-1)` then reaches exactly those.
fn sweep_processes(uid: u32, gid: u32) {
    as_function(uid, gid, || {
        // SAFETY: kill(-1) as the function's user signals only its own processes.
        unsafe { libc::kill(-1, libc::SIGKILL) };
    });
}

/// `sweep UID GID [DIR...]`: kills what `uid` runs, then removes what it owns in each DIR.
fn sweep(uid: u32, gid: u32, dirs: &[String]) {
    sweep_processes(uid, gid);
    let dirs = dirs.to_vec();
    as_function(uid, gid, move || {
        for dir in &dirs {
            remove_owned(Path::new(dir), uid);
        }
    });
}

/// Removes what `uid` owns at or under `path`, never following a link.
fn remove_owned(path: &Path, uid: u32) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.uid() == uid {
        let _ = if meta.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        return;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            remove_owned(&entry.path(), uid);
        }
    }
}

/// Runs `work` in a child process that is `uid:gid`, and waits for it.
fn as_function(uid: u32, gid: u32, work: impl FnOnce()) {
    // SAFETY: fork; the child drops privileges before doing anything else and leaves
    // with _exit.
    unsafe {
        let child = libc::fork();
        if child == 0 {
            if libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(gid, gid, gid) == 0
                && libc::setresuid(uid, uid, uid) == 0
            {
                work();
            }
            libc::_exit(0);
        }
        if child > 0 {
            let mut status = 0;
            libc::waitpid(child, &mut status, 0);
        }
    }
}
