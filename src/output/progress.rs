//! The progress line shown on a terminal while sampling: elapsed time (of the
//! duration, when there is one) and samples so far. indicatif handles terminal
//! width and clearing, and draws nothing when stderr is not a terminal.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress line, or nothing when hidden.
pub struct Progress {
    bar: ProgressBar,
    duration: Option<Duration>,
    last: Option<Instant>,
}

impl Progress {
    /// A progress line on stderr, hidden when `quiet` or stderr is no terminal.
    pub fn new(quiet: bool, duration: Option<Duration>) -> Progress {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"));
        Progress {
            bar,
            duration,
            last: None,
        }
    }

    /// Whether the line is drawn at all (reading the sample count costs syscalls).
    pub fn visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Redraws, at most five times a second.
    pub fn update(&mut self, elapsed: Duration, samples: impl FnOnce() -> u64) {
        if !self.visible()
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(Instant::now());
        let time = match self.duration {
            Some(d) => format!("{:.1} s of {:.1} s", elapsed.as_secs_f64(), d.as_secs_f64()),
            None => format!("{:.1} s (Ctrl-C to stop)", elapsed.as_secs_f64()),
        };
        self.bar
            .set_message(format!("sampling: {time}, {} samples", samples()));
        self.bar.tick();
    }

    /// Removes the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
