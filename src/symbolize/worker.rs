//! A thread that owns the symbolizer and runs the jobs handed to it, in the order
//! they come. blazesym's caches cannot move between threads, so the work goes to
//! the thread instead.
//!
//! `record` hands it one capture at the end. The continuous daemon hands it
//! every window and every /debug/pprof/profile answer, so a slow naming (a large
//! binary read for the first time) never keeps the sampling thread from draining
//! the maps and reading the tracking rings.

use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};
use flamegraphs::{Meta, Profile};
use symbolizer::symbolize::Options;
use symbolizer::Symbolizer;

use super::{Located, SymbolizeStats};

/// Something to do with the symbolizer.
type Job = Box<dyn FnOnce(&mut Symbolizer) + Send>;

/// The thread and the way to it.
pub struct Worker {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

impl Worker {
    /// Starts the thread; the kernel's namer is loaded when a job first names a
    /// kernel address.
    pub fn start(options: Options) -> Worker {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            let mut symbolizer = Symbolizer::new(options);
            symbolizer.set_kernel_names(Box::<super::kernel_symbols::OnFirstUse>::default());
            // ends once every sender is gone and every job sent has run
            for job in rx {
                job(&mut symbolizer);
            }
            // The process ends next (record's last job, the daemon's shutdown):
            // unmapping blazesym's files and freeing its caches one by one took
            // 2 ms of a 50 ms capture, for memory the exit gives back at once.
            std::mem::forget(symbolizer);
        });
        Worker { jobs, thread }
    }

    /// Queues `job` behind the others; an error when the thread is gone (it
    /// panicked: [`Worker::finish`] says why).
    pub fn submit(&self, job: impl FnOnce(&mut Symbolizer) + Send + 'static) -> Result<()> {
        self.jobs
            .send(Box::new(job))
            .map_err(|_| anyhow!("the symbolization thread stopped"))
    }

    /// Runs every job queued, then ends the thread.
    pub fn finish(self) -> Result<()> {
        drop(self.jobs);
        self.thread.join().map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            anyhow!("the symbolization thread panicked: {why}")
        })
    }

    /// Names one capture, the thread's last job, and waits for the profile.
    pub fn build(self, located: Located, meta: Meta) -> Result<(Profile, SymbolizeStats)> {
        let (tx, rx) = mpsc::channel();
        self.submit(move |symbolizer| {
            let _ = tx.send(super::name(&located, symbolizer, meta));
        })?;
        self.finish()?;
        rx.recv()
            .map_err(|_| anyhow!("the symbolization thread ended without a profile"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn jobs_run_in_order_and_finish_waits_for_all_of_them() {
        let w = Worker::start(Options::default());
        let done = Arc::new(Mutex::new(Vec::new()));
        for i in 0..5 {
            let done = Arc::clone(&done);
            w.submit(move |_| {
                // the first is the slowest: order must not depend on speed
                if i == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                done.lock().unwrap().push(i);
            })
            .unwrap();
        }
        w.finish().unwrap();
        assert_eq!(*done.lock().unwrap(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_panicking_job_is_reported_not_propagated() {
        let w = Worker::start(Options::default());
        w.submit(|_| panic!("bad object")).unwrap();
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains("bad object"), "{err}");
    }
}
