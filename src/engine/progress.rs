//! Progress: one live line per resource on a terminal, plain timestamped
//! lines otherwise. Everything goes to stderr; stdout carries results.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Progress {
    start: Instant,
    mode: Mode,
    /// Work that may yet be called off (reads started before the account
    /// lookup answered) says nothing, and no live line is drawn.
    held: AtomicBool,
}

enum Mode {
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
    },
    Plain,
    Quiet,
}

impl Progress {
    /// `ids` in display order; `verbose` asks for plain lines when stderr is
    /// not a terminal (mutating commands want a log, read-only ones do not).
    pub fn new(ids: &[(String, &'static str)], verbose: bool) -> Self {
        Self::with(ids, verbose, false)
    }

    /// Like `new`, held from the start (see `hold`).
    pub fn held(ids: &[(String, &'static str)], verbose: bool) -> Self {
        Self::with(ids, verbose, true)
    }

    fn with(ids: &[(String, &'static str)], verbose: bool, held: bool) -> Self {
        let start = Instant::now();
        let mode = if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(if held {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr_with_hz(10)
            });
            let style = ProgressStyle::with_template(
                "{spinner:.cyan} {prefix:<22.bold} {msg} {elapsed:.dim}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
            let bars = ids
                .iter()
                .map(|(id, _)| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(style.clone());
                    bar.set_prefix(id.clone());
                    bar.set_message("waiting");
                    bar.enable_steady_tick(Duration::from_millis(120));
                    (id.clone(), bar)
                })
                .collect();
            Mode::Bars { multi, bars }
        } else if verbose {
            Mode::Plain
        } else {
            Mode::Quiet
        };
        Self {
            start,
            mode,
            held: AtomicBool::new(held),
        }
    }

    /// Shows what comes after being `held`.
    pub fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        if let Mode::Bars { multi, .. } = &self.mode {
            multi.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        }
    }

    pub fn set(&self, id: &str, msg: String) {
        if self.held.load(Ordering::SeqCst) {
            return;
        }
        match &self.mode {
            Mode::Bars { bars, .. } => {
                if let Some(b) = bars.get(id) {
                    b.set_message(msg);
                }
            }
            Mode::Plain => self.line(id, &msg),
            Mode::Quiet => {}
        }
    }

    pub fn finish(&self, id: &str, msg: String) {
        match &self.mode {
            Mode::Bars { bars, .. } => {
                if let Some(b) = bars.get(id) {
                    b.set_style(
                        ProgressStyle::with_template("  {prefix:<22.bold} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    b.finish_with_message(msg);
                }
            }
            Mode::Plain => self.line(id, &msg),
            Mode::Quiet => {}
        }
    }

    /// Runs `f` (which prints or asks) with the live lines out of its way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.mode {
            Mode::Bars { multi, .. } => multi.suspend(f),
            _ => f(),
        }
    }

    /// Removes the live lines (read-only commands print a table instead).
    pub fn clear(&self) {
        if let Mode::Bars { bars, .. } = &self.mode {
            for b in bars.values() {
                b.finish_and_clear();
            }
        }
    }

    fn line(&self, id: &str, msg: &str) {
        eprintln!(
            "[{:>6.1}s] {id:<22} {msg}",
            self.start.elapsed().as_secs_f64()
        );
    }
}
