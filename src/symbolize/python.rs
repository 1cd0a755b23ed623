//! Python frames merged into native stacks. The BPF walk appends a thread's Python
//! frames (leaf first) after its native ones; each run of the evaluation loop, one
//! native `_PyEval_EvalFrameDefault` frame, ran the Python frames up to and
//! including the next one marked as a run's first (bit 62). Each evaluation-loop
//! frame is replaced by its run, so C code called from Python (an extension, a
//! syscall) stays under the Python function that called it, as `py-spy --native`
//! shows it. Runs left over (the native walk ended early) go at the root end.

use symbolizer::python::{code_of, ENTRY_BIT};

/// The native function whose frames are runs of Python's evaluation loop.
pub(super) const EVAL_LOOP: &str = "_PyEval_EvalFrameDefault";

/// The Python words of a stack cut into runs, leaf first; an empty-run word (code
/// 0, bit 62) is a run with no frame yet.
pub(super) fn runs(words: &[u64]) -> Vec<Vec<u64>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for &w in words {
        if code_of(w) != 0 {
            run.push(w);
        }
        if w & ENTRY_BIT != 0 {
            runs.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// Native frames (leaf first, each with whether it is an evaluation loop's) with
/// the runs (leaf first) in place of the evaluation loops' frames; leaf first.
pub(super) fn merge<T: Copy>(native: &[(T, bool)], runs: Vec<Vec<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(native.len() + runs.iter().map(Vec::len).sum::<usize>());
    let mut runs = runs.into_iter();
    for &(frame, eval) in native {
        match eval.then(|| runs.next()).flatten() {
            Some(run) => out.extend(run),
            None => out.push(frame),
        }
    }
    for run in runs {
        out.extend(run);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use symbolizer::python::FRAME_BIT;

    const E: u64 = ENTRY_BIT;
    fn py(code: u64) -> u64 {
        FRAME_BIT | code
    }

    #[test]
    fn runs_end_at_their_first_frame() {
        // 3.11: leaf g, f (entered from C), then <module> (the first run)
        let words = [py(3), py(2) | E, py(1) | E];
        assert_eq!(runs(&words), vec![vec![py(3), py(2) | E], vec![py(1) | E]]);
        // an empty run (the loop had just begun) and a chain cut short
        assert_eq!(
            runs(&[py(0) | E, py(5), py(4)]),
            vec![vec![], vec![py(5), py(4)]]
        );
    }

    #[test]
    fn each_evaluation_loop_takes_its_run_and_c_stays_under_its_caller() {
        // native, leaf first: sha256 (C), eval, PyObject_Call, eval, main
        let native = [
            ("sha", false),
            ("eval", true),
            ("call", false),
            ("eval", true),
            ("main", false),
        ];
        let runs = vec![vec!["loop", "hash_it"], vec!["<module>"]];
        assert_eq!(
            merge(&native, runs),
            ["sha", "loop", "hash_it", "call", "<module>", "main"]
        );
    }

    #[test]
    fn loops_without_runs_stay_and_runs_without_loops_go_at_the_root() {
        let native = [("eval", true), ("eval", true), ("main", false)];
        assert_eq!(merge(&native, vec![vec!["f"]]), ["f", "eval", "main"]);
        let native = [("leaf", false), ("eval", true)];
        assert_eq!(
            merge(&native, vec![vec!["f"], vec!["<module>"]]),
            ["leaf", "f", "<module>"]
        );
    }
}
