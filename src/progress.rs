//! Progress: indicatif bars on a terminal, plain log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where messages and progress go (always stderr; stdout is for data).
#[derive(Clone, Copy, Debug)]
pub struct Reporter {
    pub quiet: bool,
    pub terminal: bool,
    /// `--verbose`: details (commands run, files removed) on stderr.
    pub verbose: bool,
}

impl Reporter {
    pub fn new(quiet: bool) -> Reporter {
        Reporter {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            verbose: false,
        }
    }

    /// The same reporter, with `--verbose` details on or off.
    pub fn with_verbose(self, verbose: bool) -> Reporter {
        Reporter { verbose, ..self }
    }

    /// A detail shown only with `--verbose`.
    pub fn detail(&self, message: impl AsRef<str>) {
        if self.verbose {
            eprintln!("{}", message.as_ref());
        }
    }

    /// A line of narrative ("staging backup X ...").
    pub fn step(&self, message: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", message.as_ref());
        }
    }

    pub fn warn(&self, message: impl AsRef<str>) {
        eprintln!("warning: {}", message.as_ref());
    }

    /// A progress measure: a bar on a terminal, a line every few seconds
    /// otherwise.
    pub fn bar(&self, label: &str, total: u64, unit: Unit) -> Progress {
        let bar = if self.terminal && !self.quiet {
            let template = match unit {
                Unit::Bytes => "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                Unit::Segments => "{prefix:>8} [{bar:30}] {pos}/{len} segments {msg}",
            };
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.to_string());
            Some(bar)
        } else {
            None
        };
        Progress {
            bar,
            label: label.to_string(),
            total,
            unit,
            position: 0,
            last_line: Instant::now(),
            quiet: self.quiet,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Unit {
    Bytes,
    Segments,
}

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    unit: Unit,
    position: u64,
    last_line: Instant,
    quiet: bool,
}

impl Progress {
    pub fn set(&mut self, position: u64) {
        self.position = position;
        match &self.bar {
            Some(bar) => bar.set_position(position),
            None => {
                if !self.quiet && self.last_line.elapsed() >= Duration::from_secs(5) {
                    self.last_line = Instant::now();
                    eprintln!("{}: {}", self.label, self.describe());
                }
            }
        }
    }

    pub fn add(&mut self, delta: u64) {
        self.set(self.position + delta);
    }

    pub fn set_message(&self, message: impl Into<String>) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.into());
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }

    fn describe(&self) -> String {
        match self.unit {
            Unit::Bytes => format!(
                "{} of {}",
                human_bytes(self.position),
                human_bytes(self.total)
            ),
            Unit::Segments => format!("{} of {} segments", self.position, self.total),
        }
    }
}

/// `1 segment`, `6 segments`: a count with its noun in the right number.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(count(1, "segment"), "1 segment");
        assert_eq!(count(0, "segment"), "0 segments");
        assert_eq!(count(6, "file"), "6 files");
    }
}
