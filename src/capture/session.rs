//! What `record` and `continuous` share: tracking, the loaded sampler attached to
//! one event per CPU, the targets in place, and the command held at its gate until
//! sampling is on.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::exec_guard::ExecGuard;
use super::python::Python;
use super::sampler::{self, Sampler};
use super::setup::Setup;
use super::unwind::Tables;
use crate::capture::gated::Gated;
use crate::capture::perf;
use crate::capture::target::Target;
use crate::capture::tracking::Tracking;

/// A capture, set up and (after [`Session::go`]) running.
pub struct Session {
    /// Address-space tracking.
    pub tracking: Tracking,
    /// The BPF program and its events.
    pub sampler: Sampler,
    /// The command, for `-- COMMAND`.
    pub child: Option<Gated>,
    /// CFI mode: the unwind tables in the kernel.
    pub tables: Option<Tables>,
    /// CFI and fp modes: the Python runtimes of the targets and their code
    /// objects' names.
    pub python: Option<Python>,
    exit_fd: Option<OwnedFd>,
    program: Option<PathBuf>,
    off_cpu: bool,
}

/// How long the start waits for the tables of processes that already run (`-p`,
/// `-a`), so a short capture of them is unwound whole from its first sample;
/// tables that take longer arrive while sampling runs.
const TABLES_AT_START: Duration = Duration::from_secs(2);
/// How long a command waits for the tables of its program and the C library: no
/// longer than a user would notice; it runs meanwhile with frame pointers.
const TABLES_BEFORE_COMMAND: Duration = Duration::from_millis(250);

/// Installs the SIGINT/SIGTERM handlers; the flag turns true on either.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

impl Session {
    /// Opens tracking, loads and attaches the sampler, puts the targets in place
    /// and forks the command (held at its gate). Nothing is sampled yet.
    pub fn start(setup: &Setup) -> Result<Session> {
        let mut tracking = Tracking::start(&setup.cpus, setup.cfi.is_some())
            .map_err(|e| event_error(e, "tracking"))?;
        // DWARF samples carry their time: a library unloaded and another loaded
        // at its address each name the samples taken in them
        tracking
            .tracker
            .history
            .keep_replaced(setup.dwarf.is_some());
        tracking.tracker.python.set_lines(setup.python_lines);
        let follow_forks = matches!(setup.target, Target::Command { .. });
        // `-p` samples these processes and no others: the Python walk is loaded
        // only when one of them runs Python (a command or the machine may start
        // Python at any time). A process that exits right now is still profiled
        // for its last moments: its mappings are read before anything else.
        let mut python_frames = true;
        if let Target::Pids(pids) = &setup.target {
            for &pid in pids {
                let _ = tracking.tracker.snapshot(pid);
            }
            python_frames = pids
                .iter()
                .any(|&pid| super::python::may_run_python(&tracking.tracker, pid));
        }
        let config = sampler::Config {
            filter_pids: matches!(setup.target, Target::Pids(_) | Target::Command { .. }),
            follow_forks,
            include_idle: setup.include_idle,
            stack_map_size: setup.stack_map_size,
            counts_map_size: setup.counts_map_size,
            comm: setup.comm.clone(),
            cgroup: setup.cgroup.clone(),
            two_sets: setup.two_sets,
            // the daemon leaves itself out; a single capture shows itself, as perf does
            exclude_self: setup.two_sets,
            dwarf: setup.dwarf,
            cfi: setup.cfi,
            off_cpu_min_ns: setup.off_cpu_min_ns,
            per_thread: setup.per_thread,
            python_frames,
            python_lines: setup.python_lines,
            nmi_event: setup.sampling.event.kind != crate::capture::events::Kind::Software,
        };
        let mut sampler = Sampler::load(&config).map_err(|e| load_error(e, setup.verbose))?;
        if setup.verbose {
            eprintln!("flamebpf: CO-RE: {}", sampler.core_btf);
        }
        let execs = setup.cfi.is_some() || (python_frames && setup.dwarf.is_none());
        if follow_forks || execs {
            let missing = sampler.attach_task_tracepoints(execs)?;
            if let (Some(why), true) = (missing, setup.verbose) {
                // before 6.9: an exec's samples between its point of no return and
                // its end are walked with the old image's tables
                eprintln!("flamebpf: sched_prepare_exec not attached ({why}): execs end tables at sched_process_exec");
            }
        }
        for &cpu in &setup.cpus {
            let name = &setup.sampling.event.name;
            let fd = perf::open_sampling(&setup.sampling, cpu)
                .with_context(|| format!("opening {name} on CPU {cpu}"))
                .map_err(|e| event_error(e, name))?;
            sampler.attach_event(fd)?;
        }
        let mut child = None;
        let mut program = None;
        match &setup.target {
            Target::Pids(pids) => {
                for &pid in pids {
                    sampler.add_target(pid)?;
                }
            }
            Target::All => tracking.tracker.snapshot_all(),
            Target::Command {
                program: path,
                args,
            } => {
                // Until it execs, the child runs our own image.
                let _ = tracking.tracker.snapshot(std::process::id());
                let c = Gated::spawn(path, args)
                    .with_context(|| format!("starting {}", path.display()))?;
                sampler.add_target(c.pid())?;
                child = Some(c);
                program = Some(path.clone());
            }
        }
        let exit_fd = child.as_ref().and_then(Gated::exit_fd);
        let tables = match setup.cfi {
            Some(rows_cap) => {
                let first = sampler
                    .take_first_chunk()
                    .context("CFI mode without a chunk of unwind rows")?;
                let (chunks, index, _) = sampler.unwind_maps();
                Some(Tables::new(chunks, first, rows_cap, index)?)
            }
            None => None,
        };
        let python = match setup.dwarf {
            None if python_frames => Some(Python::new(sampler.python_maps().1)?),
            _ => None,
        };
        let mut session = Session {
            tracking,
            sampler,
            child,
            tables,
            python,
            exit_fd,
            program,
            off_cpu: setup.off_cpu_min_ns.is_some(),
        };
        if let (Some(t), Target::Command { program, .. }) = (session.tables.as_mut(), &setup.target)
        {
            t.prepare_for_command(&prewarm_paths(program));
        }
        let wait = match setup.target {
            Target::Command { .. } => TABLES_BEFORE_COMMAND,
            _ => TABLES_AT_START,
        };
        session.refresh_tables(Some(wait))?;
        Ok(session)
    }

    /// Applies the tracking records that arrived (all of them with `all`) and
    /// loads the unwind tables of the objects they brought. Returns the time up to
    /// which records were applied.
    pub fn follow(&mut self, all: bool) -> Result<u64> {
        let applied = self.tracking.process(all);
        self.refresh_tables(None)?;
        Ok(applied)
    }

    /// CFI mode: asks for the tables of new objects and installs those built,
    /// waiting up to `wait` for all of them. CFI and fp modes: finds the Python
    /// runtimes of the processes that changed and names the code objects of new
    /// Python stacks.
    fn refresh_tables(&mut self, wait: Option<Duration>) -> Result<()> {
        let sampler = &self.sampler;
        let sampled = |pid| sampler.samples(pid);
        let guard = ExecGuard::new(sampler.exec_seen(), self.tracking.applied_up_to);
        let tracker = &mut self.tracking.tracker;
        let changed = match self.tables.as_mut() {
            Some(t) => {
                let (_, _, processes) = sampler.unwind_maps();
                t.sync(tracker, processes, &guard, wait, &sampled)?
            }
            // fp mode: the processes whose CPython may have come or gone
            None => match &self.python {
                Some(py) => tracker
                    .take_changed()
                    .into_iter()
                    .filter(|&pid| py.follows(pid) || sampled(pid))
                    .collect(),
                None => return Ok(()),
            },
        };
        if let Some(py) = self.python.as_mut() {
            let (procs, _) = self.sampler.python_maps();
            if py.sync(&changed, tracker, procs, &guard)? {
                self.sampler.python_changed();
            }
        }
        Ok(())
    }

    /// CFI mode: removes the tables of objects no process that is still known
    /// maps.
    pub fn evict_tables(&mut self) {
        if let Some(t) = self.tables.as_mut() {
            t.evict(&self.tracking.tracker);
        }
    }

    /// Starts sampling and lets the command exec.
    pub fn go(&mut self) -> Result<()> {
        if self.off_cpu {
            // a command's waits begin with it; those of running processes, now
            self.sampler.start_off_cpu(self.child.is_none())?;
        }
        self.sampler.enable()?;
        if let (Some(c), Some(program)) = (self.child.as_mut(), &self.program) {
            if let Err(e) = c.release() {
                let _ = self.sampler.disable();
                bail!("cannot run {}: {}", program.display(), io_reason(&e));
            }
        }
        Ok(())
    }

    /// Descriptors whose readiness should wake the capture loop: tracking rings,
    /// the command's exit, and (DWARF mode) the sample ring buffer.
    pub fn wake_fds(&mut self) -> Result<Vec<RawFd>> {
        let mut fds = self.tracking.fds();
        fds.extend(self.exit_fd.as_ref().map(|fd| fd.as_raw_fd()));
        fds.extend(self.sampler.ring_fd()?);
        fds.extend(self.tables.as_ref().map(Tables::wake_fd));
        fds.extend(self.python.as_ref().map(Python::wake_fd));
        Ok(fds)
    }
}

/// The files a command's first moments run: its program, and the libraries this
/// process maps (the C library, the dynamic loader), which nearly every program
/// maps too; not flamebpf's own binary.
fn prewarm_paths(program: &std::path::Path) -> Vec<PathBuf> {
    let own = std::fs::read_link("/proc/self/exe").ok();
    let mut paths = vec![program.to_path_buf()];
    if let Ok(maps) = symbolizer::procmaps::read(std::process::id()) {
        for m in maps
            .into_iter()
            .filter(|m| m.exec && m.path.starts_with('/'))
        {
            let p = PathBuf::from(&m.path);
            if Some(&p) != own.as_ref() && !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    paths
}

/// Many processes map many objects, each kept open until the end: lift the soft
/// limit on descriptors to the hard one (allowed without privileges).
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// An io::Error's words without "(os error N)".
pub fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Turns a perf_event_open failure into the sentence a user can act on.
fn event_error(e: anyhow::Error, what: &str) -> anyhow::Error {
    let errno = e
        .chain()
        .find_map(|c| c.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error);
    match errno {
        Some(libc::EACCES) | Some(libc::EPERM) => anyhow::anyhow!(
            "not allowed to open the {what} perf event: run as root, or with CAP_PERFMON (kernel.perf_event_paranoid is {})",
            std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        ),
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::EOPNOTSUPP) => {
            anyhow::anyhow!("the {what} event is not supported on this machine")
        }
        _ => e,
    }
}

/// A BPF load failure as one line; with -v, the verifier's last words first.
fn load_error(e: anyhow::Error, verbose: bool) -> anyhow::Error {
    if verbose {
        for line in sampler::libbpf_log_tail(40) {
            eprintln!("libbpf: {line}");
        }
    }
    let hint = if verbose {
        ""
    } else {
        " (run with -v for the verifier log)"
    };
    let words = format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    anyhow::anyhow!("loading the BPF program failed: {words}{hint}")
}
