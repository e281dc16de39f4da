//! Progress of long operations (image builds, create): a live spinner line on a terminal, a plain step log otherwise.

use std::io::IsTerminal;
use std::time::Duration;

/// Shows progress lines; with `quiet`, nothing.
pub struct ProgressView {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl ProgressView {
    pub fn new(first: &str, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar.set_message(first.to_string());
            bar
        });
        Self { bar, quiet }
    }

    /// One line of progress; `steps` is (step, of) when the line starts a numbered step.
    pub fn update(&self, stage: &str, message: &str, steps: Option<(u64, u64)>) {
        let label = match steps {
            Some((n, total)) if total > 0 => format!("[{stage} {n}/{total}]"),
            _ => format!("[{stage}]"),
        };
        match &self.bar {
            Some(bar) => {
                if steps.is_some() {
                    // Numbered steps stay in the scrollback, so the build reads as a log afterwards.
                    bar.println(format!("{label} {message}"));
                }
                bar.set_message(format!("{label} {message}"));
            }
            None if !self.quiet => eprintln!("{label} {message}"),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        self.finish();
    }
}
