//! Progress bars (indicatif) on stderr; drawn only on a terminal.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// The bench's progress display.
#[derive(Clone, Default)]
pub(crate) struct Progress {
    bars: MultiProgress,
}

impl Progress {
    /// A bar counting to `len`.
    pub(crate) fn bar(&self, len: u64, message: &str) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} {per_sec}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(message.to_owned());
        bar
    }

    /// A bar that fills over `duration`.
    pub(crate) fn timer(&self, duration: Duration, message: &str) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(duration.as_millis() as u64));
        bar.set_style(
            ProgressStyle::with_template("{msg:40} [{bar:30}] {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(message.to_owned());
        let ticker = bar.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            while !ticker.is_finished() {
                ticker.set_position(start.elapsed().as_millis() as u64);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        bar
    }
}
