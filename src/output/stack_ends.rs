//! Whether each sampled user stack was walked all the way out, judged after
//! symbolization: for the frame-pointer mode, where the walk cannot tell by itself.
//!
//! A whole user stack begins where its thread began: `_start` and the C library's
//! start functions for the main thread, `start_thread` or `clone3` for the others
//! (Go's runtime has its own). A frame-pointer walk through code built without
//! frame pointers follows a register that holds data, not a frame, and ends in
//! garbage (`[unknown]` or an arbitrary function) instead. What is counted: samples
//! with a user stack none of whose three outermost frames is such a start; three,
//! because a stripped executable's own `_start` has no name (`exe+0x…`), while the
//! C library's start functions above it do.

use flamegraphs::{FrameKind, Profile};

/// How many of a capture's user stacks reach their thread's start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StackEnds {
    /// Samples with a user stack.
    pub user: u64,
    /// Of those, samples whose stack does not begin at a thread's start.
    pub broken: u64,
}

/// Names that begin a thread's stack.
const STARTS: &[&str] = &[
    "_start",
    "_dl_start",
    "_dl_start_user",
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "__clone_internal",
];

/// Prefixes of names that begin a thread's stack: glibc's `__libc_start_main`,
/// `__libc_start_main_impl`, `__libc_start_call_main`; Go's entry points.
const START_PREFIXES: &[&str] = &[
    "__libc_start",
    "runtime.goexit",
    "runtime.rt0_go",
    "runtime.mstart",
];

fn is_start(name: &str) -> bool {
    STARTS.contains(&name) || START_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Counts, over the profile's samples, the user stacks that do not reach a start.
pub fn count(profile: &Profile) -> StackEnds {
    let mut ends = StackEnds::default();
    // samples only: an off-CPU entry counts waits
    for sample in profile.samples.iter().filter(|s| !profile.is_off_cpu(s)) {
        let outermost: Vec<&str> = profile
            .stack_frames(&sample.stack)
            .map(|f| profile.frame(f))
            .take_while(|f| f.kind != FrameKind::Kernel)
            .take(3)
            .map(|f| f.name.as_str())
            .collect();
        // no user stack (a kernel thread), or one the maps lost: nothing to judge
        if outermost.is_empty() || outermost == ["[lost stack]"] {
            continue;
        }
        ends.user += sample.count;
        if !outermost.iter().any(|n| is_start(n)) {
            ends.broken += sample.count;
        }
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;
    use flamegraphs::{Frame, Meta, Sample};

    fn add(p: &mut Profile, names: &[(&str, FrameKind)], count: u64) {
        let stack = names
            .iter()
            .map(|(n, k)| p.frame_location(Frame::named(*n, *k)))
            .collect();
        p.samples.push(Sample {
            pid: 1,
            tid: 1,
            comm: "x".into(),
            stack,
            count,
            weight: count,
        });
    }

    #[test]
    fn stacks_that_begin_at_a_start_are_whole_and_the_rest_broken() {
        use FrameKind::{Kernel, User};
        let mut p = Profile::new(Meta::default());
        add(
            &mut p,
            &[
                ("_start", User),
                ("__libc_start_main", User),
                ("main", User),
            ],
            5,
        );
        // stripped executable: its own _start unnamed, libc's functions named
        add(
            &mut p,
            &[
                ("xz+0x1a2b", User),
                ("__libc_start_main_impl", User),
                ("__libc_start_call_main", User),
                ("main", User),
            ],
            4,
        );
        add(
            &mut p,
            &[("clone3", User), ("start_thread", User), ("worker", User)],
            3,
        );
        // a frame-pointer walk that ran into code without frame pointers
        add(
            &mut p,
            &[("[unknown]", User), ("_PyEval_EvalFrameDefault", User)],
            7,
        );
        add(
            &mut p,
            &[
                ("libc.so.6+0x9a", User),
                ("memcpy", User),
                ("do_syscall_64", Kernel),
            ],
            2,
        );
        // not judged: kernel threads and lost stacks
        add(&mut p, &[("worker_thread", Kernel)], 11);
        add(
            &mut p,
            &[("[lost stack]", User), ("do_syscall_64", Kernel)],
            13,
        );
        assert_eq!(
            count(&p),
            StackEnds {
                user: 21,
                broken: 9
            }
        );
    }

    #[test]
    fn only_the_outermost_three_frames_count() {
        let mut p = Profile::new(Meta::default());
        let u = FrameKind::User;
        // a start deep inside a stack (a callback named like one) does not make it whole
        add(
            &mut p,
            &[("[unknown]", u), ("a", u), ("b", u), ("_start", u)],
            1,
        );
        assert_eq!(count(&p), StackEnds { user: 1, broken: 1 });
    }
}
