//! What `offplan run` shows as it goes: each start-up phase (a spinner on a terminal), then a
//! bar over the requested steps with loss, ms, tokens/s, MFU and the time left; on anything
//! that is not a terminal, one plain line per phase and per step.

use executor::{Phase, Progress, StepReport};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Console {
    steps: u32,
    terminal: bool,
    spinner: Option<(ProgressBar, Instant, String)>,
    bar: Option<ProgressBar>,
    /// Steps reported so far (a resumed run's step numbers start past 1).
    done: u32,
}

impl Console {
    pub fn new(steps: u32) -> Console {
        Console { steps, terminal: std::io::stderr().is_terminal(), spinner: None, bar: None, done: 0 }
    }

    /// The callback the executor calls.
    pub fn handle(&mut self, p: Progress) {
        match p {
            Progress::Phase(phase) => self.phase(phase),
            Progress::Step(r) => self.step(r),
            Progress::Saved(c) => self.line(&format!(
                "step {}: saved {}{} ({:.1} MiB)",
                c.step,
                c.dir.display(),
                if c.weights_only { ", weights only" } else { "" },
                c.bytes as f64 / (1u64 << 20) as f64
            )),
            Progress::Validated(v) => self.line(&format!("step {}: validation loss {:.6} (mean of {} batches)", v.step, v.loss, v.batches)),
        }
    }

    fn phase(&mut self, phase: Phase) {
        if let Some((s, since, label)) = self.spinner.take() {
            s.finish_and_clear();
            eprintln!("  {label}: {:.2} s", since.elapsed().as_secs_f64());
        }
        if phase == Phase::Training {
            if self.terminal {
                let bar = ProgressBar::new(self.steps as u64);
                bar.set_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} steps | {msg} | ETA {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                self.bar = Some(bar);
            }
            return;
        }
        let label = phase.label();
        if self.terminal {
            let s = ProgressBar::new_spinner();
            s.set_message(label.clone());
            s.enable_steady_tick(Duration::from_millis(100));
            self.spinner = Some((s, Instant::now(), label));
        } else {
            self.spinner = Some((ProgressBar::hidden(), Instant::now(), label));
        }
    }

    /// A line above the bar (or plain).
    fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    fn step(&mut self, r: &StepReport) {
        self.done += 1;
        let norm = r.grad_norm.map(|n| format!(" | norm {n:.4}")).unwrap_or_default();
        let line = format!(
            "step {:>4}/{} | loss {:.6} | lr {:.3e}{norm} | {:>9.2} ms | {:>10.0} tok/s | MFU {:>5.1}%",
            r.step,
            // the last step's number (past `steps` for a resumed run)
            (r.step + self.steps).saturating_sub(self.done),
            r.loss,
            r.lr,
            r.ms,
            r.tokens_per_s,
            100.0 * r.mfu
        );
        match &self.bar {
            Some(bar) => {
                bar.println(&line);
                bar.set_message(format!("loss {:.4}, {:.1} ms, {:.0} tok/s", r.loss, r.ms, r.tokens_per_s));
                bar.set_position(self.done.min(self.steps) as u64);
            }
            None => println!("{line}"),
        }
    }

    /// Clears the bar (the steps stay printed).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
