//! The terminal: results on stdout, progress and messages on stderr.
//! Progress bars show only on a terminal; elsewhere (CI, pipes, tests) each
//! finished step is one plain line, so logs stay readable.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Clone)]
pub struct Ui {
    multi: MultiProgress,
    interactive: bool,
}

impl Default for Ui {
    fn default() -> Self {
        Ui::new()
    }
}

impl Ui {
    pub fn new() -> Ui {
        let interactive = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Ui { multi, interactive }
    }

    /// A spinner for one piece of long work; finish it with `done`.
    pub fn task(&self, message: impl Into<String>) -> Task {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {msg} {elapsed:.dim}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(120));
        Task {
            bar,
            interactive: self.interactive,
        }
    }

    /// A line on stderr that does not disturb running progress bars.
    pub fn note(&self, line: impl AsRef<str>) {
        if self.interactive {
            let _ = self.multi.println(line.as_ref());
        } else {
            eprintln!("{}", line.as_ref());
        }
    }

    /// Result text on stdout.
    pub fn out(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        self.multi.suspend(|| {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
        });
    }

    pub fn warn(&self, text: impl AsRef<str>) {
        self.note(format!("warning: {}", text.as_ref()));
    }
}

pub struct Task {
    bar: ProgressBar,
    interactive: bool,
}

impl Task {
    pub fn set(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    pub fn done(self, message: impl Into<String>) {
        self.finish('✓', message.into());
    }

    pub fn fail(self, message: impl Into<String>) {
        self.finish('✗', message.into());
    }

    fn finish(self, mark: char, message: String) {
        let elapsed = self.bar.elapsed();
        let line = format!("{mark} {message} ({:.1}s)", elapsed.as_secs_f64());
        if self.interactive {
            self.bar.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            self.bar.finish_with_message(line);
        } else {
            self.bar.finish_and_clear();
            eprintln!("{line}");
        }
    }
}
