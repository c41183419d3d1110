//! The terminal: results on stdout, progress and messages on stderr.
//! Progress bars show only on a terminal; elsewhere (CI, pipes, tests) each
//! finished step is one plain line, so logs stay readable.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// `text` with every control character but newline and tab shown as an
/// escape (`\u{1b}`): what kctl prints holds names, labels, messages and
/// events read back from etcd, Docker and minions, none of which may
/// move the cursor, retitle the window or write the clipboard.
/// An error report as the terminal shows it. Reports carry text from
/// outside (a minion's stderr, Docker's answers): where that holds control
/// characters, the report is drawn without colours and shown escaped, so
/// it cannot move the cursor or rewrite the screen.
pub fn report_text(report: &miette::Report) -> String {
    let mut plain = String::new();
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_links(false);
    if handler.render_report(&mut plain, report.as_ref()).is_err() {
        plain = format!("{report}");
    }
    match printable(&plain) {
        std::borrow::Cow::Borrowed(_) => format!("{report:?}"),
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| match unsafe_char(c) {
                true => c.escape_unicode().to_string(),
                false => c.to_string(),
            })
            .collect(),
    )
}

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
        let line = printable(line.as_ref());
        if self.interactive {
            let _ = self.multi.println(line.as_ref());
        } else {
            eprintln!("{line}");
        }
    }

    /// Result text on stdout.
    pub fn out(&self, text: impl AsRef<str>) {
        let text = printable(text.as_ref());
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
        self.bar
            .set_message(printable(&message.into()).into_owned());
    }

    pub fn done(self, message: impl Into<String>) {
        self.finish('✓', message.into());
    }

    pub fn fail(self, message: impl Into<String>) {
        self.finish('✗', message.into());
    }

    fn finish(self, mark: char, message: String) {
        let message = printable(&message);
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_report_with_control_characters_is_shown_escaped() {
        let report = miette::miette!(help = "run `kctl up`", "minion said: \u{1b}[2J\u{7}gone");
        let text = super::report_text(&report);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(
            text.contains("\\u{1b}[2J") && text.contains("run `kctl up`"),
            "{text:?}"
        );
        // An ordinary one keeps miette's own drawing.
        let report = miette::miette!("plain failure");
        assert_eq!(super::report_text(&report), format!("{report:?}"));
    }

    #[test]
    fn control_characters_of_data_are_shown_escaped() {
        let osc52 = "web\u{1b}]52;c;ZXZpbA==\u{7}\r\nnext\tcolumn";
        assert_eq!(
            super::printable(osc52),
            "web\\u{1b}]52;c;ZXZpbA==\\u{7}\\u{d}\nnext\tcolumn"
        );
        assert!(matches!(
            super::printable("plain\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
