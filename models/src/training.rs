//! The training setup beside the model: AdamW's hyper-parameters and the learning-rate schedule
//! (linear warmup, then cosine decay to a floor), each value with where it came from.
//!
//! A user writes a [`SetupSpec`] (a RON `TrainingSetup(...)` file, any field left out, or the
//! command's flags); [`TrainingSetup::resolve`] fills what is absent with GPT-3's values for the
//! model's size and checks the result. The setup does not change any placement: the planner
//! carries it in the schedule so that `simulate` and `run SCHEDULE` read it from there.
//!
//! Clipping by the global norm changes the step program (every update waits for every gradient:
//! [`crate::program::Clipping`]), and so does gradient accumulation: `micro_batches` forward and
//! backward passes of the config's batch before the updates ([`crate::Program::for_setup`]).

use crate::config::GptConfig;
use crate::error::ModelError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// GPT-3's peak learning rates by model size (Brown et al. 2020, Table 2.1): (parameters, lr).
pub const GPT3_LEARNING_RATES: [(u64, f64, &str); 8] = [
    (125_000_000, 6.0e-4, "125M"),
    (350_000_000, 3.0e-4, "350M"),
    (760_000_000, 2.5e-4, "760M"),
    (1_300_000_000, 2.0e-4, "1.3B"),
    (2_700_000_000, 1.6e-4, "2.7B"),
    (6_700_000_000, 1.2e-4, "6.7B"),
    (13_000_000_000, 1.0e-4, "13B"),
    (175_000_000_000, 0.6e-4, "175B"),
];

/// Adam's beta1 in GPT-3 (Brown et al. 2020, Appendix B).
pub const GPT3_BETA1: f64 = 0.9;
/// Adam's beta2 in GPT-3 (Appendix B).
pub const GPT3_BETA2: f64 = 0.95;
/// Adam's epsilon in GPT-3 (Appendix B).
pub const GPT3_EPS: f64 = 1e-8;
/// GPT-3's weight decay (Appendix B: "0.1 ... to provide a small amount of regularization").
pub const GPT3_WEIGHT_DECAY: f64 = 0.1;
/// GPT-3 clips "the global norm of the gradient at 1.0" (Appendix B).
pub const GPT3_GRAD_CLIP: f64 = 1.0;
/// GPT-3 decays the learning rate by cosine "down to 10% of its value" (Appendix B): the floor
/// is the peak divided by this.
pub const GPT3_FLOOR_DIVISOR: f64 = 10.0;

/// The length of the linear warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Warmup {
    /// This many steps.
    Steps(u32),
    /// A tenth of the run's steps, rounded: GPT-3 warms up over 375M tokens (Appendix B), more
    /// than most runs here train, so the run's length sets it. Known only when the run's steps
    /// are (a schedule is planned before `run --steps` says them).
    TenthOfRun,
}

/// Where a value of the setup came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// A command-line flag (its name).
    Flag(String),
    /// A `--setup` file (its path).
    File(String),
    /// The default, and its source.
    Default(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "{name}"),
            Source::File(path) => write!(f, "{path}"),
            Source::Default(why) => write!(f, "default: {why}"),
        }
    }
}

/// Where each value of a [`TrainingSetup`] came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    pub lr: Source,
    pub min_lr: Source,
    pub warmup: Source,
    pub beta1: Source,
    pub beta2: Source,
    pub eps: Source,
    pub weight_decay: Source,
    #[serde(default = "Source::before_clipping")]
    pub grad_clip: Source,
    #[serde(default = "Source::before_accumulation")]
    pub micro_batches: Source,
}

impl Source {
    /// The source of a setup recorded before clipping existed: it did not clip.
    fn before_clipping() -> Source {
        Source::Default("a setup from before clipping, which trained unclipped".into())
    }

    /// The source of a setup recorded before gradient accumulation existed: one micro-batch.
    fn before_accumulation() -> Source {
        Source::Default("one micro-batch per optimizer step".into())
    }
}

/// AdamW (decoupled weight decay, bias correction) and its learning-rate schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingSetup {
    /// Peak learning rate, reached at the end of the warmup.
    pub lr: f64,
    /// The floor the cosine decays to at the run's last step.
    pub min_lr: f64,
    pub warmup: Warmup,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Applied to matrices only (the executor's `view_weight_decay`).
    pub weight_decay: f64,
    /// The largest global norm of the gradients (L2 over every parameter's gradient) before the
    /// updates scale them down to it; 0 turns clipping off. Absent in schedules and records made
    /// before clipping existed: those did not clip.
    #[serde(default)]
    pub grad_clip: f64,
    /// Micro-batches (of the config's batch) whose gradients each optimizer step sums: K in
    /// B x K x T tokens per step. Absent in schedules and records made before accumulation: 1.
    #[serde(default = "one")]
    pub micro_batches: u32,
    pub sources: Sources,
}

fn one() -> u32 {
    1
}

/// What a user gives: any field of the setup, the rest left to the defaults. As a file it reads
/// `TrainingSetup(lr: 3e-4, warmup: 10)` (RON; an absent field is the default).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename = "TrainingSetup", deny_unknown_fields)]
pub struct SetupSpec {
    #[serde(default)]
    pub lr: Option<f64>,
    #[serde(default)]
    pub min_lr: Option<f64>,
    /// Warmup steps.
    #[serde(default)]
    pub warmup: Option<u32>,
    #[serde(default)]
    pub beta1: Option<f64>,
    #[serde(default)]
    pub beta2: Option<f64>,
    #[serde(default)]
    pub eps: Option<f64>,
    #[serde(default)]
    pub weight_decay: Option<f64>,
    /// Largest global gradient norm; 0 turns clipping off.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Micro-batches per optimizer step (gradient accumulation), at least 1.
    #[serde(default)]
    pub micro_batches: Option<u32>,
}

impl SetupSpec {
    /// Reads a setup file; a field it does not know or a value of the wrong type is refused with
    /// its line. Values are checked once resolved ([`TrainingSetup::resolve`]).
    pub fn load(path: &Path) -> Result<SetupSpec, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
        Self::parse(&text, path)
    }

    /// Parses setup text; `path` only labels errors. Optional fields need no `Some(...)`.
    pub fn parse(text: &str, path: &Path) -> Result<SetupSpec, ModelError> {
        ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
            .from_str(text)
            .map_err(|e| ModelError::parse(path, e, "models/setups/"))
    }
}

/// A value of the setup that cannot train: the field, where it came from and what to do.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{field} {value} (from {from}) {message}")]
pub struct SetupError {
    /// The field's name as the file spells it (`lr`, `min_lr`, `warmup`, ...).
    pub field: &'static str,
    pub value: String,
    /// Where the value came from.
    pub from: Source,
    pub message: String,
}

/// The GPT-3 row (Table 2.1) nearest to `params` by ratio (model sizes grow geometrically).
pub fn gpt3_row(params: u64) -> (u64, f64, &'static str) {
    let distance = |n: u64| (params.max(1) as f64 / n as f64).ln().abs();
    let mut best = GPT3_LEARNING_RATES[0];
    for row in GPT3_LEARNING_RATES {
        if distance(row.0) < distance(best.0) {
            best = row;
        }
    }
    best
}

/// "124M", "2.65B": a parameter count for people.
fn params_label(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2}B", n as f64 / 1e9)
    } else {
        format!("{:.0}M", n as f64 / 1e6)
    }
}

impl TrainingSetup {
    /// GPT-3's setup for `config`'s size (Brown et al. 2020): the peak lr of the Table 2.1 row
    /// nearest in parameters, Adam's betas 0.9/0.95 and eps 1e-8, weight decay 0.1, cosine decay
    /// to 10% of the peak (Appendix B); the warmup a tenth of the run ([`Warmup::TenthOfRun`]).
    pub fn gpt3(config: &GptConfig) -> TrainingSetup {
        let params = config.param_count();
        let (_, lr, row) = gpt3_row(params);
        let appendix = |what: &str| Source::Default(format!("GPT-3 (Brown et al. 2020) Appendix B: {what}"));
        TrainingSetup {
            lr,
            min_lr: lr / GPT3_FLOOR_DIVISOR,
            warmup: Warmup::TenthOfRun,
            beta1: GPT3_BETA1,
            beta2: GPT3_BETA2,
            eps: GPT3_EPS,
            weight_decay: GPT3_WEIGHT_DECAY,
            grad_clip: GPT3_GRAD_CLIP,
            micro_batches: 1,
            sources: Sources {
                lr: Source::Default(format!(
                    "GPT-3 (Brown et al. 2020) Table 2.1, the {row} row, nearest to this model's {} parameters",
                    params_label(params)
                )),
                min_lr: Self::floor_source(),
                warmup: Source::Default("a tenth of the run's steps (GPT-3's warmup of 375M tokens, Appendix B, exceeds most runs)".into()),
                beta1: appendix("Adam beta1 0.9"),
                beta2: appendix("Adam beta2 0.95"),
                eps: appendix("Adam eps 1e-8"),
                weight_decay: appendix("weight decay 0.1"),
                grad_clip: appendix("the global norm of the gradient clipped at 1.0"),
                micro_batches: Source::before_accumulation(),
            },
        }
    }

    /// GPT-3's setup for `program`'s model, its clipping as the program has it (off for an
    /// unclipped program, so that a schedule says what its step does).
    pub fn gpt3_for(program: &crate::program::Program) -> TrainingSetup {
        let mut s = TrainingSetup::gpt3(&program.config);
        if program.clipping == crate::program::Clipping::Off {
            s.grad_clip = 0.0;
            s.sources.grad_clip = Source::Default("the step program is unclipped".into());
        }
        s
    }

    fn floor_source() -> Source {
        Source::Default("a tenth of the peak lr, as GPT-3 decays by cosine to 10% (Appendix B)".into())
    }

    /// A constant learning rate `lr` (no warmup, the floor at the peak) with GPT-3's other values:
    /// for tests that compare runs step by step.
    pub fn constant(config: &GptConfig, lr: f64) -> TrainingSetup {
        let mut s = TrainingSetup::gpt3(config);
        s.lr = lr;
        s.min_lr = lr;
        s.warmup = Warmup::Steps(0);
        s
    }

    /// The setup for `config`: each field from `flags` (named `--lr`, `--min-lr`, ...), else
    /// from `file` (its path and contents), else GPT-3's default; checked ([`Self::validate`]).
    /// With the peak lr given but no floor, the floor is a tenth of that peak.
    pub fn resolve(config: &GptConfig, file: Option<(&Path, &SetupSpec)>, flags: &SetupSpec) -> Result<TrainingSetup, SetupError> {
        let mut s = TrainingSetup::gpt3(config);
        let empty = SetupSpec::default();
        let (path, spec) = match file {
            Some((p, spec)) => (p.display().to_string(), spec),
            None => (String::new(), &empty),
        };
        // Flag first, then file: the value and its source.
        fn pick<T: Copy>(flag: Option<T>, name: &str, file: Option<T>, path: &str) -> Option<(T, Source)> {
            flag.map(|v| (v, Source::Flag(name.into()))).or_else(|| file.map(|v| (v, Source::File(path.into()))))
        }
        if let Some((v, src)) = pick(flags.lr, "--lr", spec.lr, &path) {
            s.lr = v;
            s.sources.lr = src;
            s.min_lr = v / GPT3_FLOOR_DIVISOR;
        }
        if let Some((v, src)) = pick(flags.min_lr, "--min-lr", spec.min_lr, &path) {
            s.min_lr = v;
            s.sources.min_lr = src;
        }
        if let Some((v, src)) = pick(flags.warmup, "--warmup", spec.warmup, &path) {
            s.warmup = Warmup::Steps(v);
            s.sources.warmup = src;
        }
        if let Some((v, src)) = pick(flags.beta1, "--beta1", spec.beta1, &path) {
            s.beta1 = v;
            s.sources.beta1 = src;
        }
        if let Some((v, src)) = pick(flags.beta2, "--beta2", spec.beta2, &path) {
            s.beta2 = v;
            s.sources.beta2 = src;
        }
        if let Some((v, src)) = pick(flags.eps, "--eps", spec.eps, &path) {
            s.eps = v;
            s.sources.eps = src;
        }
        if let Some((v, src)) = pick(flags.weight_decay, "--weight-decay", spec.weight_decay, &path) {
            s.weight_decay = v;
            s.sources.weight_decay = src;
        }
        if let Some((v, src)) = pick(flags.grad_clip, "--grad-clip", spec.grad_clip, &path) {
            s.grad_clip = v;
            s.sources.grad_clip = src;
        }
        if let Some((v, src)) = pick(flags.micro_batches, "--micro-batches", spec.micro_batches, &path) {
            s.micro_batches = v;
            s.sources.micro_batches = src;
        }
        s.validate()?;
        Ok(s)
    }

    /// The step program's clipping: by the global norm where `grad_clip` is positive.
    pub fn clipping(&self) -> crate::program::Clipping {
        if self.grad_clip > 0.0 {
            crate::program::Clipping::GlobalNorm
        } else {
            crate::program::Clipping::Off
        }
    }

    fn error(&self, field: &'static str, value: impl fmt::Display, source: &Source, message: &str) -> SetupError {
        SetupError { field, value: value.to_string(), from: source.clone(), message: message.into() }
    }

    /// Checks every value that does not need the run's length: the peak lr in (0, 1), the floor
    /// in [0, lr], the betas in [0, 1), eps positive, weight decay at least 0, all finite.
    pub fn validate(&self) -> Result<(), SetupError> {
        let src = &self.sources;
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr < 1.0) {
            return Err(self.error("lr", self.lr, &src.lr, "must be a learning rate in (0, 1), e.g. 3e-4"));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            let m = format!(
                "must be from 0 to the peak lr {} (the floor the cosine decays to; e.g. {})",
                self.lr,
                self.lr / GPT3_FLOOR_DIVISOR
            );
            return Err(self.error("min_lr", self.min_lr, &src.min_lr, &m));
        }
        for (field, v, s) in [("beta1", self.beta1, &src.beta1), ("beta2", self.beta2, &src.beta2)] {
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return Err(self.error(field, v, s, "must be in [0, 1) (GPT-3: beta1 0.9, beta2 0.95)"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(self.error("eps", self.eps, &src.eps, "must be positive, e.g. 1e-8"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(self.error("weight_decay", self.weight_decay, &src.weight_decay, "must be 0 or more, e.g. 0.1"));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return Err(self.error("grad_clip", self.grad_clip, &src.grad_clip, "must be 0 (no clipping) or a positive norm, e.g. 1.0"));
        }
        if self.micro_batches == 0 {
            let m = "must be at least 1: the micro-batches whose gradients one optimizer step sums (1: no accumulation)";
            return Err(self.error("micro_batches", self.micro_batches, &src.micro_batches, m));
        }
        Ok(())
    }

    /// Warmup steps of a run of `total_steps`.
    pub fn warmup_steps(&self, total_steps: u32) -> u32 {
        match self.warmup {
            Warmup::Steps(n) => n,
            // Rounded half up; a run of under 5 steps has none.
            Warmup::TenthOfRun => ((total_steps as u64 + 5) / 10) as u32,
        }
    }

    /// Checks the setup against a run of `total_steps`: the warmup must fit in it.
    pub fn check_run(&self, total_steps: u32) -> Result<(), SetupError> {
        let w = self.warmup_steps(total_steps);
        if w > total_steps {
            let m =
                format!("is longer than the run of {total_steps} steps: give a warmup of at most {total_steps} steps, or run more steps");
            return Err(self.error("warmup", format!("{w} steps"), &self.sources.warmup, &m));
        }
        Ok(())
    }

    /// The learning rate of `step` (from 1) in a run of `total_steps`: `lr * step / warmup` up
    /// to the warmup's end (the peak there), then cosine from the peak down to `min_lr` at the
    /// last step. Without warmup the first step is the peak; a run with no step after the peak
    /// stays there; past the run (the schedule runner's extra measured step) the floor.
    pub fn lr_at(&self, step: u32, total_steps: u32) -> f64 {
        let w = self.warmup_steps(total_steps);
        if step <= w {
            // The fraction first, so that the warmup's last step is the peak exactly.
            return self.lr * (step as f64 / w as f64);
        }
        let peak = w.max(1);
        if step <= peak || total_steps <= peak {
            return self.lr;
        }
        if step >= total_steps {
            return self.min_lr;
        }
        let progress = (step - peak) as f64 / (total_steps - peak) as f64;
        let lr = self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        // Rounding may step a hair outside [floor, peak] at either end.
        lr.clamp(self.min_lr, self.lr)
    }

    /// The setup for people: (what, value, where it came from) per value (plan's stdout,
    /// summary.md, simulate, run).
    pub fn rows(&self) -> Vec<(&'static str, String, String)> {
        let s = &self.sources;
        let warmup = match self.warmup {
            Warmup::Steps(n) => format!("{n} steps"),
            Warmup::TenthOfRun => "a tenth of the run".into(),
        };
        vec![
            ("peak lr", fmt_g(self.lr), s.lr.to_string()),
            ("warmup", warmup, format!("{} (linear from 0 to the peak)", s.warmup)),
            ("floor lr", fmt_g(self.min_lr), format!("{} (cosine from the peak to it at the run's last step)", s.min_lr)),
            ("AdamW beta1", self.beta1.to_string(), s.beta1.to_string()),
            ("AdamW beta2", self.beta2.to_string(), s.beta2.to_string()),
            ("AdamW eps", fmt_g(self.eps), s.eps.to_string()),
            ("weight decay", self.weight_decay.to_string(), format!("{} (matrices only)", s.weight_decay)),
            (
                "grad clip",
                if self.grad_clip > 0.0 { fmt_g(self.grad_clip) } else { "off".into() },
                format!("{} (global norm; every update waits for every gradient)", s.grad_clip),
            ),
            (
                "micro-batches",
                self.micro_batches.to_string(),
                format!("{} (gradients summed over them before each update)", s.micro_batches),
            ),
        ]
    }

    /// [`Self::rows`] as aligned lines.
    pub fn lines(&self) -> Vec<String> {
        self.rows().into_iter().map(|(what, v, src)| format!("{what:<14}{v:<20} {src}")).collect()
    }
}

/// "6e-4", "0.1": short numbers for people.
/// A value as people write it: six significant digits at most (a floor of lr / 10 is
/// 5.9999999999999995e-5 to the last bit, shown 6e-5).
pub fn fmt_g(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-2 {
        let e = format!("{v:.5e}");
        let (mantissa, exp) = e.split_once('e').expect("{:e} has an exponent");
        format!("{}e{exp}", mantissa.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_are_shown_as_written() {
        assert_eq!(fmt_g(6e-4 / 10.0), "6e-5");
        assert_eq!(fmt_g(1.6e-4), "1.6e-4");
        assert_eq!(fmt_g(1e-8), "1e-8");
        assert_eq!(fmt_g(0.95), "0.95");
    }

    fn config(name: &str) -> GptConfig {
        GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("configs/{name}.ron"))).unwrap()
    }

    fn setup(warmup: u32) -> TrainingSetup {
        let mut s = TrainingSetup::gpt3(&config("gpt3-125m"));
        s.warmup = Warmup::Steps(warmup);
        s
    }

    #[test]
    fn defaults_are_gpt3s_row_nearest_in_parameters() {
        for (name, lr) in [
            ("gpt2-124m", 6.0e-4),
            ("gpt3-125m", 6.0e-4),
            ("gpt2-350m", 3.0e-4),
            ("gpt2-774m", 2.5e-4),
            ("gpt2-1.5b", 2.0e-4),
            ("gpt3-1.3b", 2.0e-4),
            ("gpt3-2.7b", 1.6e-4),
            ("gpt3-6.7b", 1.2e-4),
            ("gpt3-13b", 1.0e-4),
            ("gpt3-175b", 0.6e-4),
        ] {
            let s = TrainingSetup::gpt3(&config(name));
            assert_eq!(s.lr, lr, "{name}");
            assert_eq!(s.min_lr, lr / 10.0, "{name}");
            assert_eq!((s.beta1, s.beta2, s.eps, s.weight_decay), (0.9, 0.95, 1e-8, 0.1));
            assert_eq!(s.warmup, Warmup::TenthOfRun);
            s.validate().unwrap();
        }
        assert_eq!(gpt3_row(1).2, "125M");
        assert_eq!(gpt3_row(u64::MAX).2, "175B");
    }

    #[test]
    fn the_default_warmup_is_a_tenth_of_the_run() {
        let s = TrainingSetup::gpt3(&config("gpt3-125m"));
        assert_eq!([1, 4, 5, 10, 14, 15, 30, 1000].map(|n| s.warmup_steps(n)), [0, 0, 1, 1, 1, 2, 3, 100]);
    }

    #[test]
    fn warmup_ramps_to_the_peak_then_decays_to_the_floor() {
        let s = setup(10);
        let total = 100;
        for k in 1..=10 {
            assert_eq!(s.lr_at(k, total), s.lr * (k as f64 / 10.0));
        }
        assert_eq!(s.lr_at(10, total), s.lr);
        assert_eq!(s.lr_at(total, total), s.min_lr);
        assert_eq!(s.lr_at(total + 1, total), s.min_lr);
        // Halfway through the decay: halfway between peak and floor.
        assert!((s.lr_at(55, total) - (s.lr + s.min_lr) / 2.0).abs() < 1e-12);
        // No warmup: the first step is the peak.
        assert_eq!(setup(0).lr_at(1, total), s.lr);
        assert_eq!(setup(0).lr_at(total, total), s.min_lr);
        // A one-step run stays at the peak.
        assert_eq!(setup(0).lr_at(1, 1), s.lr);
        // Constant: every step the same.
        let c = TrainingSetup::constant(&config("gpt3-125m"), 1e-3);
        assert!((1..=20).all(|k| c.lr_at(k, 20) == 1e-3));
    }

    proptest! {
        #[test]
        fn the_schedule_is_a_ramp_then_a_monotone_decay(total in 1u32..5000, warmup_frac in 0.0f64..1.0, default_warmup: bool) {
            let mut s = setup((total as f64 * warmup_frac) as u32);
            if default_warmup {
                s.warmup = Warmup::TenthOfRun;
            }
            s.check_run(total).unwrap();
            let w = s.warmup_steps(total);
            let lrs: Vec<f64> = (1..=total).map(|k| s.lr_at(k, total)).collect();
            for k in 1..=total as usize {
                let lr = lrs[k - 1];
                prop_assert!(lr > 0.0 && lr <= s.lr);
                if k as u32 > w {
                    prop_assert!(lr >= s.min_lr);
                }
            }
            prop_assert!(lrs[..w as usize].windows(2).all(|p| p[0] < p[1]), "warmup ramps");
            prop_assert!(lrs[(w.max(1) - 1) as usize..].windows(2).all(|p| p[0] >= p[1]), "decay is monotone");
            if w >= 1 {
                prop_assert_eq!(lrs[w as usize - 1], s.lr);
            }
            if total > w.max(1) {
                prop_assert_eq!(lrs[total as usize - 1], s.min_lr);
            }
        }
    }

    fn flags(f: impl FnOnce(&mut SetupSpec)) -> SetupSpec {
        let mut s = SetupSpec::default();
        f(&mut s);
        s
    }

    #[test]
    fn flags_override_the_file_and_the_file_the_defaults() {
        let cfg = config("gpt3-2.7b");
        let file = SetupSpec::parse("TrainingSetup(lr: 3e-4, warmup: 10, weight_decay: 0.0)", Path::new("s.ron")).unwrap();
        let s = TrainingSetup::resolve(&cfg, Some((Path::new("s.ron"), &file)), &flags(|f| f.lr = Some(1e-4))).unwrap();
        assert_eq!(s.lr, 1e-4);
        assert_eq!(s.sources.lr, Source::Flag("--lr".into()));
        assert_eq!(s.min_lr, 1e-4 / 10.0, "the floor follows the given peak");
        assert_eq!(s.warmup, Warmup::Steps(10));
        assert_eq!(s.sources.warmup, Source::File("s.ron".into()));
        assert_eq!(s.weight_decay, 0.0);
        assert!(matches!(s.sources.beta2, Source::Default(_)));
        // A bare struct without its name reads too.
        assert_eq!(SetupSpec::parse("(warmup: 3)", Path::new("s.ron")).unwrap().warmup, Some(3));
        let e = SetupSpec::parse("TrainingSetup(learning_rate: 3e-4)", Path::new("s.ron")).unwrap_err();
        assert!(e.to_string().contains("learning_rate"), "{e}");
        let lines = s.lines().join("\n");
        assert!(lines.contains("peak lr") && lines.contains("--lr") && lines.contains("s.ron"), "{lines}");
    }

    #[test]
    fn a_setup_recorded_before_clipping_reads_as_unclipped() {
        let cfg = config("gpt3-125m");
        let now = TrainingSetup::gpt3(&cfg);
        assert_eq!((now.grad_clip, now.clipping()), (1.0, crate::program::Clipping::GlobalNorm));
        // The same setup as a schedule or record written before clipping: no grad_clip fields.
        let mut old = serde_json::to_value(&now).unwrap();
        old.as_object_mut().unwrap().remove("grad_clip");
        old["sources"].as_object_mut().unwrap().remove("grad_clip");
        let read: TrainingSetup = serde_json::from_value(old).unwrap();
        assert_eq!((read.grad_clip, read.clipping()), (0.0, crate::program::Clipping::Off));
        assert!(read.sources.grad_clip.to_string().contains("before clipping"));
    }

    #[test]
    fn bad_values_name_their_field() {
        let cfg = config("gpt3-125m");
        let cases: Vec<(SetupSpec, &str)> = vec![
            (flags(|f| f.lr = Some(0.0)), "lr"),
            (flags(|f| f.lr = Some(-1e-3)), "lr"),
            (flags(|f| f.lr = Some(1.0)), "lr"),
            (flags(|f| f.lr = Some(f64::NAN)), "lr"),
            (flags(|f| f.min_lr = Some(-1e-5)), "min_lr"),
            (flags(|f| f.min_lr = Some(1e-3)), "min_lr"),
            (flags(|f| f.beta1 = Some(1.0)), "beta1"),
            (flags(|f| f.beta2 = Some(-0.1)), "beta2"),
            (flags(|f| f.eps = Some(0.0)), "eps"),
            (flags(|f| f.weight_decay = Some(-0.1)), "weight_decay"),
            (flags(|f| f.grad_clip = Some(-1.0)), "grad_clip"),
            (flags(|f| f.grad_clip = Some(f64::INFINITY)), "grad_clip"),
        ];
        for (spec, field) in cases {
            let e = TrainingSetup::resolve(&cfg, None, &spec).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(matches!(e.from, Source::Flag(_)), "{e}");
        }
        let s = TrainingSetup::resolve(&cfg, None, &flags(|f| f.warmup = Some(20))).unwrap();
        let e = s.check_run(10).unwrap_err();
        assert_eq!(e.field, "warmup");
        assert!(e.to_string().contains("--warmup") && e.to_string().contains("at most 10"), "{e}");
        s.check_run(20).unwrap();
        // The floor may equal the peak (a constant rate) or be 0.
        TrainingSetup::resolve(&cfg, None, &flags(|f| f.min_lr = Some(6e-4))).unwrap();
        TrainingSetup::resolve(&cfg, None, &flags(|f| f.min_lr = Some(0.0))).unwrap();
    }

    #[test]
    fn a_setup_survives_ron() {
        let s = TrainingSetup::gpt3(&config("gpt3-1.3b"));
        let text = ron::to_string(&s).unwrap();
        assert_eq!(ron::from_str::<TrainingSetup>(&text).unwrap(), s);
    }
}
