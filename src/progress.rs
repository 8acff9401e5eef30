//! Progress reporting: indicatif bars on a terminal, plain lines otherwise
//! (CI logs), nothing with `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One set of bars for the process: nodes built in parallel each show
/// theirs, one per line, without overwriting each other.
fn bars() -> &'static MultiProgress {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Lines,
    Quiet,
}

#[derive(Clone, Copy, Debug)]
pub struct Progress {
    mode: Mode,
}

impl Progress {
    /// Bars when stderr is a terminal, plain lines when it is not.
    pub(crate) fn auto(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        Progress { mode }
    }

    pub fn quiet() -> Self {
        Progress { mode: Mode::Quiet }
    }

    /// Whether messages other than errors are suppressed.
    pub(crate) fn is_quiet(&self) -> bool {
        self.mode == Mode::Quiet
    }

    /// A task measured in bytes.
    pub(crate) fn task(&self, what: &str, total: u64) -> Task {
        self.start(
            what,
            total,
            "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            human_bytes,
        )
    }

    /// A task measured in items (e.g. the changes of a plan).
    pub(crate) fn items(&self, what: &str, total: u64) -> Task {
        self.start(what, total, "{msg:>12} [{bar:30}] {pos}/{len}", |n| {
            format!("{n} items")
        })
    }

    fn start(&self, what: &str, total: u64, template: &str, unit: fn(u64) -> String) -> Task {
        let bar = match self.mode {
            Mode::Bars => {
                let b = bars().add(ProgressBar::new(total));
                b.set_style(
                    ProgressStyle::with_template(template)
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                b.set_message(what.to_string());
                Some(b)
            }
            _ => None,
        };
        if self.mode == Mode::Lines {
            eprintln!("{what}: started ({})", unit(total));
        }
        Task {
            what: what.to_string(),
            mode: self.mode,
            bar,
            done: 0,
            started: Instant::now(),
            last_line: Instant::now(),
            unit,
        }
    }
}

pub(crate) struct Task {
    what: String,
    mode: Mode,
    bar: Option<ProgressBar>,
    done: u64,
    started: Instant,
    last_line: Instant,
    unit: fn(u64) -> String,
}

impl Task {
    pub(crate) fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.inc(n);
        } else if self.mode == Mode::Lines && self.last_line.elapsed() > Duration::from_secs(10) {
            self.last_line = Instant::now();
            eprintln!("{}: {} so far", self.what, (self.unit)(self.done));
        }
    }

    pub(crate) fn finish(self) {
        let line = format!(
            "{}: done, {} in {:.1}s",
            self.what,
            (self.unit)(self.done),
            self.started.elapsed().as_secs_f64()
        );
        self.end(line);
    }

    /// The task stopped before its end: said so, with how far it got.
    pub(crate) fn fail(self, why: &str) {
        let line = format!(
            "{}: {why} (after {} in {:.1}s)",
            self.what,
            (self.unit)(self.done),
            self.started.elapsed().as_secs_f64()
        );
        self.end(line);
    }

    fn end(self, line: String) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        match self.mode {
            // Printed above the bars still running.
            Mode::Bars => {
                let _ = bars().println(line);
            }
            Mode::Lines => eprintln!("{line}"),
            Mode::Quiet => {}
        }
    }
}

/// `1.5 GiB`-style sizes for messages.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
