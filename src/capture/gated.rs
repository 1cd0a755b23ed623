//! Runs the profiled command: forked early, held at a gate until the sampler knows
//! its pid, then exec'd, so its very first instructions are sampled.
//!
//! The command runs in a process group of its own, which is what is ended when the
//! capture ends first (`-d`, Ctrl-C to flamebpf, SIGTERM): the children it started
//! go with it instead of running on unprofiled. When flamebpf holds the terminal,
//! the group is made its foreground for the command's run, as a shell does for a
//! job, so the command reads the terminal and gets Ctrl-C as it would without
//! flamebpf. It gets the resource limits flamebpf started with, not the raised
//! open-file limit flamebpf gives itself.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The open-file limit flamebpf started with, given back to the command.
static STARTING_NOFILE: Mutex<Option<libc::rlimit>> = Mutex::new(None);

/// Notes the limits flamebpf started with; call before raising any.
pub fn remember_limits() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        if let Ok(mut s) = STARTING_NOFILE.lock() {
            *s = Some(lim);
        }
    }
}

/// The terminal on standard input when this process group is its foreground.
fn foreground_tty() -> Option<i32> {
    // SAFETY: plain queries of descriptor 0 and of our own process group.
    unsafe { (libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp()).then_some(0) }
}

/// Makes `pgrp` the terminal's foreground group; SIGTTOU is blocked meanwhile, as
/// a process in a background group that does this is otherwise stopped.
fn set_foreground(tty: i32, pgrp: libc::pid_t) {
    // SAFETY: sigset and mask calls on local values; tcsetpgrp on an open tty.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGTTOU);
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        libc::tcsetpgrp(tty, pgrp);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}

/// Finds the program the way execvp would: a name with a slash is a path, any
/// other name is looked up in $PATH. `None` when nothing executable is there.
pub fn resolve(program: &OsStr) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.as_bytes().contains(&b'/') {
        let p = PathBuf::from(program);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_exec(p))
}

/// A forked child waiting at the gate.
pub struct Gated {
    pid: libc::pid_t,
    gate: Option<OwnedFd>,
    exec_error: OwnedFd,
    /// The terminal handed to the command's group, to take back at its end.
    tty: Mutex<Option<i32>>,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte"))
}

impl Gated {
    /// Forks a child that will exec `path` with `args` (args[0] included) once
    /// [`Gated::release`] is called.
    pub fn spawn(path: &Path, args: &[OsString]) -> io::Result<Gated> {
        // Everything the child needs is built before fork: after it, only
        // async-signal-safe calls are allowed.
        let c_path = cstring(path.as_os_str())?;
        let c_args = args
            .iter()
            .map(|a| cstring(a))
            .collect::<io::Result<Vec<_>>>()?;
        let mut argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let c_env = std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                cstring(&kv)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut envp: Vec<*const libc::c_char> = c_env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());

        let nofile = STARTING_NOFILE.lock().ok().and_then(|s| *s);
        let (gate_r, gate_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        // SAFETY: the child only calls setpgid, read, setrlimit, execve, write and _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: async-signal-safe calls on descriptors and buffers prepared above.
            unsafe {
                libc::setpgid(0, 0);
                libc::close(gate_w.as_raw_fd());
                let mut b = 0u8;
                if libc::read(gate_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1) != 1 {
                    libc::_exit(127); // flamebpf gave up before starting it
                }
                if let Some(lim) = nofile.as_ref() {
                    libc::setrlimit(libc::RLIMIT_NOFILE, lim);
                }
                libc::execve(c_path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(err_w.as_raw_fd(), (&errno as *const i32).cast(), 4);
                libc::_exit(127);
            }
        }
        // Also here, so the group exists whichever of the two runs first.
        // SAFETY: setpgid on our own child, still at the gate.
        unsafe { libc::setpgid(pid, pid) };
        drop(gate_r);
        drop(err_w);
        Ok(Gated {
            pid,
            gate: Some(gate_w),
            exec_error: err_r,
            tty: Mutex::new(None),
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Lets the child exec and reports whether exec succeeded.
    pub fn release(&mut self) -> io::Result<()> {
        if let Some(tty) = foreground_tty() {
            set_foreground(tty, self.pid);
            if let Ok(mut t) = self.tty.lock() {
                *t = Some(tty);
            }
        }
        if let Some(gate) = self.gate.take() {
            // SAFETY: writing one byte from a valid buffer to an open pipe.
            unsafe { libc::write(gate.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        }
        let mut errno = 0i32;
        // SAFETY: reading at most 4 bytes into errno. EOF means the exec succeeded
        // and closed the close-on-exec write end.
        let n = unsafe {
            libc::read(
                self.exec_error.as_raw_fd(),
                (&mut errno as *mut i32).cast(),
                4,
            )
        };
        if n == 4 {
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(())
    }

    /// A descriptor that becomes readable when the child exits (pidfd_open, Linux
    /// 5.3+), so the capture loop wakes at once instead of at its next tick.
    pub fn exit_fd(&self) -> Option<OwnedFd> {
        // SAFETY: pidfd_open on our own child; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
        // SAFETY: a new descriptor nothing else owns.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Waits for the child without blocking: its exit status once it ended.
    pub fn try_wait(&self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        (r == self.pid).then(|| {
            self.take_back_tty();
            exit_code(status)
        })
    }

    fn take_back_tty(&self) {
        if let Some(tty) = self.tty.lock().ok().and_then(|mut t| t.take()) {
            // SAFETY: getpgrp has no preconditions.
            set_foreground(tty, unsafe { libc::getpgrp() });
        }
    }

    /// Asks the command's process group to end (SIGTERM), waits up to `grace` for
    /// the command, then kills the group.
    pub fn terminate(&self, grace: std::time::Duration) -> i32 {
        self.take_back_tty();
        // SAFETY: signalling the group our own child leads.
        unsafe { libc::kill(-self.pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + grace;
        loop {
            if let Some(code) = self.try_wait() {
                // children that ignore SIGTERM do not outlive the capture either
                // SAFETY: as above.
                unsafe { libc::kill(-self.pid, libc::SIGKILL) };
                return code;
            }
            if std::time::Instant::now() >= deadline {
                // SAFETY: as above.
                unsafe { libc::kill(-self.pid, libc::SIGKILL) };
                let mut status = 0;
                // SAFETY: blocking wait for our own child.
                unsafe { libc::waitpid(self.pid, &mut status, 0) };
                return exit_code(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        // A child still at the gate reads EOF and exits 127; reap it if it did.
        self.gate.take();
        let _ = self.try_wait();
        self.take_back_tty();
    }
}

/// The shell's convention: the exit code, or 128 + the signal that ended it.
fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_execvp() {
        assert!(resolve(OsStr::new("sh")).is_some());
        assert!(resolve(OsStr::new("/bin/sh")).is_some());
        assert!(resolve(OsStr::new("no-such-program-flamebpf")).is_none());
        assert!(resolve(OsStr::new("./no/such")).is_none());
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "data").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(resolve(plain.as_os_str()).is_none(), "not executable");
    }

    #[test]
    fn the_child_runs_only_after_release_and_its_status_is_kept() {
        let sh = resolve(OsStr::new("sh")).unwrap();
        let args: Vec<OsString> = ["sh", "-c", "exit 7"].iter().map(OsString::from).collect();
        let mut child = Gated::spawn(&sh, &args).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(child.try_wait(), None, "the child must wait at the gate");
        child.release().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let code = loop {
            if let Some(c) = child.try_wait() {
                break c;
            }
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(code, 7);
    }

    #[test]
    fn an_exec_failure_is_reported() {
        // executable bits but neither ELF nor #!: execve says ENOEXEC
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bogus");
        std::fs::write(&bogus, [0u8, 1, 2, 3]).unwrap();
        std::fs::set_permissions(&bogus, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = Gated::spawn(&bogus, &[OsString::from("bogus")]).unwrap();
        let err = child.release().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOEXEC));
    }

    fn alive(pid: i32) -> bool {
        // a zombie has ended: only its parent's wait is missing
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    }

    #[test]
    fn terminate_ends_the_commands_children_too() {
        let sh = resolve(OsStr::new("sh")).unwrap();
        let args: Vec<OsString> = ["sh", "-c", "sleep 100 & sleep 100 & wait"]
            .iter()
            .map(OsString::from)
            .collect();
        let mut child = Gated::spawn(&sh, &args).unwrap();
        child.release().unwrap();
        let children_file = format!("/proc/{0}/task/{0}/children", child.pid());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let kids: Vec<i32> = loop {
            let kids: Vec<i32> = std::fs::read_to_string(&children_file)
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if kids.len() == 2 {
                break kids;
            }
            assert!(std::time::Instant::now() < deadline, "{kids:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        child.terminate(std::time::Duration::from_secs(2));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while kids.iter().any(|&k| alive(k)) {
            assert!(
                std::time::Instant::now() < deadline,
                "children left running: {kids:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn the_command_gets_the_open_file_limit_flamebpf_started_with() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: get/setrlimit with a valid struct.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let start = lim.rlim_cur.min(lim.rlim_max).min(1000);
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if let Ok(mut s) = STARTING_NOFILE.lock() {
            *s = Some(libc::rlimit {
                rlim_cur: start,
                rlim_max: lim.rlim_max,
            });
        }
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
        let sh = resolve(OsStr::new("sh")).unwrap();
        let test = format!("[ \"$(ulimit -n)\" = {start} ]");
        let args: Vec<OsString> = ["sh", "-c", &test].iter().map(OsString::from).collect();
        let mut child = Gated::spawn(&sh, &args).unwrap();
        child.release().unwrap();
        let code = loop {
            if let Some(c) = child.try_wait() {
                break c;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(
            code, 0,
            "the command saw another open-file limit than {start}"
        );
    }
}
