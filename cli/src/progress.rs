//! Progress of long commands on stderr: a bar with rate and ETA when stderr is a terminal,
//! plain periodic lines otherwise (logs, pipes). stdout is never touched.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::io::note;

/// How often a plain progress line is written.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Progress of one command.
pub(crate) struct Progress {
    what: String,
    unit: &'static str,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Progress of `what` (`"bulk-dump author"`), counted in `unit`s, out of `total` when
    /// known. A bar when stderr is a terminal, unless `CQRS_PROGRESS=plain`.
    pub(crate) fn new(what: impl Into<String>, unit: &'static str, total: Option<u64>) -> Self {
        let what = what.into();
        let tty = std::io::stderr().is_terminal()
            && std::env::var("CQRS_PROGRESS").map_or(true, |v| v != "plain");
        let bar = tty.then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            let template = if total.is_some() {
                "{msg} [{bar:30}] {human_pos}/{human_len} {unit} {rate} ETA {eta}"
            } else {
                "{msg} {human_pos} {unit} {rate} {elapsed}"
            };
            let template = template.replace("{unit}", unit);
            if let Ok(style) = ProgressStyle::with_template(&template) {
                // A whole rate: `{per_sec}` prints four decimals.
                let rate = move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} {unit}/s", state.per_sec());
                };
                bar.set_style(style.progress_chars("=> ").with_key("rate", rate));
            }
            bar.set_message(what.clone());
            bar
        });
        let now = Instant::now();
        Self {
            what,
            unit,
            total,
            done: 0,
            started: now,
            last_line: now,
            bar,
        }
    }

    /// Counts `n` more.
    pub(crate) fn add(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None => {
                let now = Instant::now();
                if now.duration_since(self.last_line) >= PLAIN_EVERY {
                    self.last_line = now;
                    note(&self.line(now.duration_since(self.started)));
                }
            }
        }
    }

    /// Ends the bar (the summary lines are the command's).
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// The plain line after `elapsed`: `bulk-dump author: 1200/5000 rows (24 %), 600 rows/s,
    /// ETA 6 s`.
    pub(crate) fn line(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-3);
        #[allow(clippy::cast_precision_loss)] // a rate for people
        let rate = self.done as f64 / secs;
        let mut out = match self.total {
            Some(total) if total > 0 => {
                #[allow(clippy::cast_precision_loss)]
                let percent = (self.done as f64 * 100.0 / total as f64).min(100.0);
                format!(
                    "{}: {}/{} {} ({percent:.0} %)",
                    self.what, self.done, total, self.unit
                )
            }
            _ => format!("{}: {} {}", self.what, self.done, self.unit),
        };
        out.push_str(&format!(", {rate:.0} {}/s", self.unit));
        if let Some(total) = self.total
            && rate > 0.0
            && total > self.done
        {
            #[allow(clippy::cast_precision_loss)]
            let eta = (total - self.done) as f64 / rate;
            out.push_str(&format!(", ETA {eta:.0} s"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(total: Option<u64>, done: u64) -> Progress {
        let now = Instant::now();
        Progress {
            what: "bulk-dump author".into(),
            unit: "rows",
            total,
            done,
            started: now,
            last_line: now,
            bar: None,
        }
    }

    #[test]
    fn plain_lines_give_count_rate_and_eta() {
        assert_eq!(
            plain(Some(5000), 1200).line(Duration::from_secs(2)),
            "bulk-dump author: 1200/5000 rows (24 %), 600 rows/s, ETA 6 s"
        );
        assert_eq!(
            plain(None, 300).line(Duration::from_secs(3)),
            "bulk-dump author: 300 rows, 100 rows/s"
        );
        assert_eq!(
            plain(Some(10), 10).line(Duration::from_secs(1)),
            "bulk-dump author: 10/10 rows (100 %), 10 rows/s"
        );
        assert_eq!(
            plain(Some(0), 0).line(Duration::ZERO),
            "bulk-dump author: 0 rows, 0 rows/s"
        );
    }

    #[test]
    fn plain_lines_come_at_most_every_interval() {
        let mut p = plain(Some(100), 0);
        p.add(10);
        assert_eq!(p.done, 10);
        assert_eq!(p.last_line, p.started, "no line before the interval");
        p.last_line -= PLAIN_EVERY;
        p.add(10);
        assert!(p.last_line > p.started, "a line once the interval passed");
    }
}
