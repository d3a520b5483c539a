//! Progress display: a bar with ETA and current losses on a terminal, plain log lines
//! otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use plastic::run::{LogRow, Observer};

/// Shows a run's progress on standard error.
pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    last_val: Option<f64>,
    ema: Option<f64>,
}

impl Progress {
    /// A display for the run called `label`.
    pub fn new(label: &str) -> Self {
        Progress {
            label: label.to_string(),
            bar: None,
            last_val: None,
            ema: None,
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn message(&self) -> String {
        let mut m = String::new();
        if let Some(l) = self.ema {
            m += &format!("train {l:.4}");
        }
        if let Some(v) = self.last_val {
            m += &format!("  val {v:.4}");
        }
        m
    }
}

impl Observer for Progress {
    fn start(&mut self, from: usize, to: usize) {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(to as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} steps  {elapsed_precise} (ETA {eta})  {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(self.label.clone());
            bar.set_position(from as u64);
            bar.enable_steady_tick(Duration::from_millis(500));
            self.bar = Some(bar);
        } else if from > 0 {
            eprintln!("{}: resuming at step {from} of {to}", self.label);
        }
    }

    fn step(&mut self, step: usize, loss: f64) {
        self.ema = Some(match self.ema {
            Some(e) => 0.95 * e + 0.05 * loss,
            None => loss,
        });
        if let Some(b) = &self.bar {
            b.set_position(step as u64);
            if step.is_multiple_of(10) {
                b.set_message(self.message());
            }
        }
    }

    fn log(&mut self, row: &LogRow) {
        self.last_val = Some(row.val_loss);
        match &self.bar {
            Some(b) => b.set_message(self.message()),
            None => eprintln!(
                "{}: step {:>6}  train {:.5}  val {:.5}  lr {:.2e}  {:.1} s",
                self.label, row.step, row.train_loss, row.val_loss, row.lr, row.elapsed_s
            ),
        }
    }

    fn note(&mut self, message: &str) {
        match &self.bar {
            Some(b) => b.println(format!("{}: {message}", self.label)),
            None => eprintln!("{}: {message}", self.label),
        }
    }
}
