//! Predicted against measured, over run records: each record re-planned with today's code
//! ([`Case`]), which term of the model is off where they disagree, the loss agreement between
//! strategies, `report.md` and the two scatter charts (`peak.svg`, `step.svg`: predicted on x,
//! measured on y, with the y = x line).
//!
//! Re-planning needs the planner, which this crate does not depend on: the caller (the memory
//! regression test, `offplan report`) hands [`Case::of_record`] a function that plans.

use crate::record::{Record, StepTimes, ALL_ON_GPU};
use crate::style::{self, err, Chart, Mark, FONT};
use models::hardware::ProbeRates;
use models::schedule::Prediction;
use models::trace::Trace;
use models::units::{Bytes, GIB};
use models::HardwareProfile;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fmt::Write;

/// A record planned again: what the plan predicts, its simulated trace, and the simulator's
/// message where the recorded budget no longer holds.
pub struct RePlan {
    pub prediction: Prediction,
    pub trace: Trace,
    pub over_budget: Option<String>,
}

/// Plans a record again under a hardware profile (the planner's `replan_uncapped`, handed in by
/// the caller), or says why it cannot.
pub type Replan = dyn Fn(&Record, &HardwareProfile) -> Result<RePlan, String>;

/// A case's predicted pool peak must be within this fraction of the measured one.
pub const PEAK_TOLERANCE: f64 = 0.01;
/// A case's predicted step time must be within this fraction of the measured one.
pub const STEP_TOLERANCE: f64 = 0.10;
/// A record with probes is replayed under the mean of its start and end probes, and its step
/// must then be within this fraction of the measured one.
pub const PROBED_STEP_TOLERANCE: f64 = 0.05;
/// The largest change between a run's start and end probes for which the run counts, measured
/// as the step replayed under each: beyond it the machine was noisy, and the run is to be taken
/// again, not kept.
pub const PROBE_DRIFT_TOLERANCE: f64 = 0.05;
/// A memory term outside the pool peak (pool granularity, fixed overhead) is called off when
/// its error is more than this fraction of the measured device peak: then the device peak
/// cannot be within [`PEAK_TOLERANCE`] however good the pool peak is.
pub const DEVICE_TERM_TOLERANCE: f64 = 0.01;
/// Largest |loss difference| allowed between a record and the all-on-GPU record of the same
/// setup at the same step. Offload only moves data, but host AdamW (f32 on the CPU, a different
/// summation and rounding order from the GPU kernel) and recomputation (kernels re-run with
/// other fusion and reduction order) change float order, which drifts the loss by up to about
/// 1e-2 over a few dozen steps; a real error (a stale or missing tensor) moves it by far more.
pub const LOSS_TOLERANCE: f64 = 2e-2;

/// One term of the model, predicted against measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    /// What it is, and which part of the model predicts it.
    pub name: &'static str,
    pub predicted: f64,
    pub measured: f64,
    pub unit: &'static str,
    /// Whether it is within its tolerance.
    pub ok: bool,
}

impl Term {
    /// (predicted - measured) / measured; 0 when both are 0, infinite when only measured is.
    pub fn rel_error(&self) -> f64 {
        rel(self.predicted, self.measured)
    }

    fn line(&self) -> String {
        let (p, m) = match self.unit {
            "bytes" => (Bytes(self.predicted.max(0.0) as u64).to_string(), Bytes(self.measured.max(0.0) as u64).to_string()),
            _ => (format!("{:.3} {}", self.predicted, self.unit), format!("{:.3} {}", self.measured, self.unit)),
        };
        format!("{} {}: predicted {p}, measured {m} ({})", if self.ok { "ok " } else { "OFF" }, self.name, pct(self.rel_error()))
    }
}

/// (p - m) / m.
pub fn rel(p: f64, m: f64) -> f64 {
    if m == 0.0 {
        if p == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (p - m) / m
    }
}

/// A signed percentage with two decimals.
pub fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:+.2}%", 100.0 * x)
    } else {
        "inf".into()
    }
}

/// One record next to today's prediction of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// The record's file name.
    pub file: String,
    pub config: String,
    pub strategy: String,
    pub hardware: String,
    pub budget: Option<u64>,
    /// Why re-planning failed (then the predicted figures are zero).
    pub error: Option<String>,
    /// Today's plan of the record does not fit the record's budget (the simulator's message);
    /// the figures are then those of the same decisions planned without a cap.
    pub over_budget: Option<String>,
    pub predicted_pool: u64,
    pub measured_pool: u64,
    pub measured_reserved: u64,
    /// What the pool is predicted to reserve: the arena rounded up to the profile's
    /// reservation unit for an arena run, the pool peak otherwise.
    pub predicted_reserved: u64,
    /// Device memory predicted outside the pool: the profile's fixed overhead (and, for an
    /// arena run, the mapping of its pinned host memory).
    pub fixed_overhead: u64,
    pub measured_device: u64,
    pub predicted_time: StepTimes,
    /// The record's measured step times by lane, when it has them (v2).
    pub measured_time: Option<StepTimes>,
    /// The record's median step time (after the first), ms: what the step chart shows when the
    /// record has no lane times.
    pub median_ms: f64,
    /// Where the record has probes: `predicted_time` is the replay under their mean, and this
    /// the step predicted under the shipped profile, ms.
    pub shipped_step_ms: Option<f64>,
    /// How far the step predicted under the record's start probe is from the one under its end
    /// probe (of their mean): how much the machine changed over the run, as it matters for this
    /// step.
    pub probe_drift: Option<f64>,
}

impl Case {
    /// `record` (read from `file`) against today's `prediction` and `trace` of it on `hw`.
    pub fn new(file: &str, record: &Record, hw: &HardwareProfile, prediction: &Prediction, trace: &Trace) -> Case {
        let mut c = Case::failed(file, record, String::new());
        c.error = None;
        // An arena run's pool hands out the arena alone; a pool run's, its live peak.
        if record.used_arena() {
            c.predicted_pool = prediction.tensor_bytes().0;
            c.predicted_reserved = hw.pool_reserved(prediction.tensor_bytes()).0;
            c.fixed_overhead = prediction.peak_device().0.saturating_sub(c.predicted_reserved);
        } else {
            c.predicted_pool = prediction.peak_allocated.0;
            c.predicted_reserved = c.predicted_pool;
            c.fixed_overhead = hw.fixed_overhead.0;
        }
        c.predicted_time = StepTimes::predicted(prediction, trace);
        c
    }

    /// `record`, which could not be re-planned: `error` says why.
    pub fn failed(file: &str, record: &Record, error: String) -> Case {
        Case {
            file: file.to_string(),
            config: record.config.name.clone(),
            strategy: record.strategy_name().to_string(),
            hardware: record.hardware_name().to_string(),
            budget: record.budget_bytes,
            error: Some(error),
            over_budget: None,
            predicted_pool: 0,
            predicted_reserved: 0,
            measured_pool: record.measured.allocated_bytes,
            measured_reserved: record.measured.reserved_bytes,
            fixed_overhead: 0,
            measured_device: record.measured.device_bytes,
            predicted_time: StepTimes::default(),
            measured_time: record.measured_time,
            median_ms: record.median_ms,
            shipped_step_ms: None,
            probe_drift: None,
        }
    }

    pub fn predicted_device(&self) -> u64 {
        self.predicted_reserved + self.fixed_overhead
    }

    /// Error of the pool peak, the number the 1% target is about.
    pub fn peak_error(&self) -> f64 {
        rel(self.predicted_pool as f64, self.measured_pool as f64)
    }

    pub fn device_error(&self) -> f64 {
        rel(self.predicted_device() as f64, self.measured_device as f64)
    }

    /// Measured step time, ms: the lane times' step where recorded, else the median step.
    pub fn measured_step_ms(&self) -> f64 {
        self.measured_time.as_ref().map_or(self.median_ms, |t| t.step_ms)
    }

    pub fn step_error(&self) -> f64 {
        rel(self.predicted_time.step_ms, self.measured_step_ms())
    }

    /// Whether the step time is held to its tolerance: only records with measured lane
    /// times (v1 medians include whatever ran beside the step, and name no lanes).
    pub fn step_checked(&self) -> bool {
        self.measured_time.is_some()
    }

    /// Whether the step was predicted under the record's own probed rates.
    pub fn probed(&self) -> bool {
        self.shipped_step_ms.is_some()
    }

    /// The step time's tolerance: [`PROBED_STEP_TOLERANCE`] under the record's probes, else
    /// [`STEP_TOLERANCE`].
    pub fn step_tolerance(&self) -> f64 {
        if self.probed() {
            PROBED_STEP_TOLERANCE
        } else {
            STEP_TOLERANCE
        }
    }

    /// Whether the run's probes moved more than [`PROBE_DRIFT_TOLERANCE`]: a noisy machine.
    pub fn noisy(&self) -> bool {
        self.probe_drift.is_some_and(|d| d > PROBE_DRIFT_TOLERANCE)
    }

    /// The memory terms: pool peak (lifetime graph and tensor inventory), reserved minus
    /// allocated (pool granularity, predicted 0), device minus reserved (the profile's fixed
    /// overhead).
    pub fn memory_terms(&self) -> Vec<Term> {
        let dev = self.measured_device.max(1) as f64;
        let granularity = self.measured_reserved.saturating_sub(self.measured_pool) as f64;
        let overhead = self.measured_device.saturating_sub(self.measured_reserved) as f64;
        vec![
            Term {
                name: "pool peak (lifetime graph / tensor inventory)",
                predicted: self.predicted_pool as f64,
                measured: self.measured_pool as f64,
                unit: "bytes",
                ok: self.error.is_none() && self.peak_error().abs() <= PEAK_TOLERANCE,
            },
            Term {
                name: "reserved - allocated (pool granularity)",
                predicted: self.predicted_reserved.saturating_sub(self.predicted_pool) as f64,
                measured: granularity,
                unit: "bytes",
                ok: (granularity - self.predicted_reserved.saturating_sub(self.predicted_pool) as f64).abs() / dev <= DEVICE_TERM_TOLERANCE,
            },
            Term {
                name: "device - reserved (fixed overhead, pinned host mapping)",
                predicted: self.fixed_overhead as f64,
                measured: overhead,
                unit: "bytes",
                ok: self.error.is_none() && (self.fixed_overhead as f64 - overhead).abs() / dev <= DEVICE_TERM_TOLERANCE,
            },
        ]
    }

    /// The time terms, when the record has measured lane times: step, compute, H2D, D2H, host
    /// busy time and the compute lane's wait. A lane term is called off when its error is
    /// more than [`STEP_TOLERANCE`] of the measured step (so small lanes do not fail on noise).
    pub fn time_terms(&self) -> Vec<Term> {
        let Some(m) = &self.measured_time else { return Vec::new() };
        let p = &self.predicted_time;
        let step = m.step_ms.max(1e-9);
        let tol = self.step_tolerance();
        let lane = |name, pv: f64, mv: f64| Term { name, predicted: pv, measured: mv, unit: "ms", ok: (pv - mv).abs() / step <= tol };
        vec![
            Term {
                name: "step time",
                predicted: p.step_ms,
                measured: m.step_ms,
                unit: "ms",
                ok: self.error.is_none() && rel(p.step_ms, m.step_ms).abs() <= tol,
            },
            lane("compute lane busy (kernel rates)", p.compute_ms, m.compute_ms),
            lane("H2D lane busy (h2d bandwidth)", p.h2d_ms, m.h2d_ms),
            lane("D2H lane busy (d2h bandwidth)", p.d2h_ms, m.d2h_ms),
            lane("host lane busy (host rates)", p.host_ms, m.host_ms),
            lane("compute waits on copies/host (overlap)", p.compute_wait_ms, m.compute_wait_ms),
        ]
    }

    /// The case of `record` re-planned by `replan` under the hardware profile it names, read
    /// from `hardware_dir/NAME.ron`: the plan's prediction, trace and the over-budget message
    /// where the recorded budget no longer holds; or why it could not be planned.
    pub fn of_record(file: &str, record: &Record, hardware_dir: &std::path::Path, replan: &Replan) -> Case {
        let path = hardware_dir.join(format!("{}.ron", record.hardware_name()));
        let shipped = match HardwareProfile::load(&path) {
            Ok(hw) => hw,
            Err(e) => return Case::failed(file, record, format!("hardware profile {}: {e}", path.display())),
        };
        // A record with probes is judged replayed under its own machine's rates.
        let probed = record.probe.as_ref().and_then(|p| p.mean());
        let hw = probed.as_ref().map_or_else(|| shipped.clone(), |p| shipped.with_probed(p));
        let shipped_step_ms = match probed {
            Some(_) => replan(record, &shipped).ok().map(|r| r.prediction.step_time.0 * 1e3),
            None => None,
        };
        let case = Case::replanned(file, record, &hw, replan(record, &hw));
        // How much the machine changed over the run, as it matters for this step: the step
        // replayed under the start probe against under the end probe.
        let step_under = |p: &ProbeRates| replan(record, &shipped.with_probed(p)).ok().map(|r| r.prediction.step_time.0);
        let probe_drift = match record.probe.as_ref().map(|p| (p.start.as_ref(), p.end.as_ref())) {
            Some((Some(a), Some(b))) => match (step_under(a), step_under(b)) {
                (Some(x), Some(y)) if x + y > 0.0 => Some((x - y).abs() / (0.5 * (x + y))),
                _ => None,
            },
            _ => None,
        };
        Case { shipped_step_ms, probe_drift, ..case }
    }

    /// The case of `record` planned again on `hw` (`plan`: the replan's outcome).
    fn replanned(file: &str, record: &Record, hw: &HardwareProfile, plan: Result<RePlan, String>) -> Case {
        match plan {
            Ok(RePlan { prediction, trace, over_budget }) => {
                let c = Case::new(file, record, hw, &prediction, &trace);
                match over_budget {
                    Some(m) => c.with_over_budget(m),
                    None => c,
                }
            }
            Err(e) => Case::failed(file, record, e),
        }
    }

    /// The same case, marked as over its recorded budget with the simulator's `message`.
    pub fn with_over_budget(mut self, message: String) -> Case {
        self.over_budget = Some(message);
        self
    }

    /// Whether the case meets its targets: re-planned within its budget, pool peak within 1%,
    /// and the step within 10% where it is checked.
    pub fn passes(&self) -> bool {
        self.error.is_none()
            && self.over_budget.is_none()
            && self.peak_error().abs() <= PEAK_TOLERANCE
            && (!self.step_checked() || self.step_error().abs() <= self.step_tolerance())
            && !self.noisy()
    }

    /// How far outside its targets the case is, for worst-first order: the larger of the peak
    /// and (checked) step errors, each in units of its tolerance; infinite when re-planning
    /// failed.
    pub fn severity(&self) -> f64 {
        if self.error.is_some() || self.over_budget.is_some() {
            return f64::INFINITY;
        }
        let peak = self.peak_error().abs() / PEAK_TOLERANCE;
        let step = if self.step_checked() { self.step_error().abs() / self.step_tolerance() } else { 0.0 };
        let noisy = self.probe_drift.map_or(0.0, |d| d / PROBE_DRIFT_TOLERANCE);
        let s = peak.max(step).max(noisy);
        if s.is_nan() {
            f64::INFINITY
        } else {
            s
        }
    }

    /// The names of the terms that are off, or "-" when none is.
    pub fn terms_off(&self) -> String {
        if let Some(e) = &self.error {
            return format!("re-planning failed: {e}");
        }
        let mut off: Vec<&str> = self.memory_terms().into_iter().chain(self.time_terms()).filter(|t| !t.ok).map(|t| t.name).collect();
        if self.over_budget.is_some() {
            off.insert(0, "budget (today's plan exceeds the recorded budget)");
        }
        if !self.step_checked() && self.step_error().abs() > STEP_TOLERANCE {
            off.push("step time vs median (unchecked: the record has no lane times)");
        }
        if self.noisy() {
            off.push("the machine (its probes moved: run it again)");
        }
        if off.is_empty() {
            "-".into()
        } else {
            off.join("; ")
        }
    }

    /// Every term, one a line, for a failure message.
    pub fn explain(&self) -> String {
        let mut s = format!(
            "{} ({}, {}, budget {}, profile {}):",
            self.file,
            self.config,
            self.strategy,
            self.budget.map_or("none".to_string(), |b| Bytes(b).to_string()),
            self.hardware
        );
        if let Some(e) = &self.error {
            let _ = write!(s, "\n  re-planning failed: {e}");
            return s;
        }
        if let Some(e) = &self.over_budget {
            let _ = write!(s, "\n  OFF budget: today's plan of these decisions does not fit: {e} (figures below: planned without a cap)");
        }
        for t in self.memory_terms().into_iter().chain(self.time_terms()) {
            let _ = write!(s, "\n  {}", t.line());
        }
        if let Some(shipped) = self.shipped_step_ms {
            let _ = write!(
                s,
                "\n  step replayed under the run's probes (tolerance {:.0}%); under the shipped profile it is {shipped:.3} ms ({})",
                100.0 * self.step_tolerance(),
                pct(rel(shipped, self.measured_step_ms()))
            );
        }
        if let Some(d) = self.probe_drift {
            let _ = write!(
                s,
                "\n  {} probes: the step replayed under the start probe and under the end probe differ by {:.1}% (at most {:.0}%)",
                if self.noisy() { "OFF" } else { "ok " },
                100.0 * d,
                100.0 * PROBE_DRIFT_TOLERANCE
            );
        }
        if !self.step_checked() {
            let _ = write!(
                s,
                "\n  step time not checked (no measured lane times): predicted {:.3} ms, median {:.3} ms ({})",
                self.predicted_time.step_ms,
                self.median_ms,
                pct(self.step_error())
            );
        }
        s
    }
}

/// Cases sorted worst first: by [`Case::severity`], then by the device peak's and the step
/// time's error (terms outside the targets, for the order of cases within them); stable.
pub fn worst_first(mut cases: Vec<Case>) -> Vec<Case> {
    let key = |c: &Case| (c.severity(), c.device_error().abs(), c.step_error().abs());
    cases.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0).then(kb.1.total_cmp(&ka.1)).then(kb.2.total_cmp(&ka.2))
    });
    cases
}

/// The value of `--flag V` or `--flag=V` in a command line.
fn flag<'a>(command: &'a str, name: &str) -> Option<&'a str> {
    let mut it = command.split_whitespace();
    while let Some(w) = it.next() {
        if w == name {
            return it.next();
        }
        if let Some(v) = w.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Some(v);
        }
    }
    None
}

/// Records that train the same thing: the same config (shape included), the same number of
/// steps, and the same `--seed` and `--lr` on the command line (absent = the default).
fn same_setup(a: &Record, b: &Record) -> bool {
    // The data and where training started (records without them ran on the shipped corpus).
    let data = |r: &Record| r.training.as_ref().map(|t| (t.data_pattern.clone(), t.data_tokens, t.first_step, t.start.clone()));
    let lrs = |r: &Record| r.steps.iter().map(|s| s.lr.map(f64::to_bits)).collect::<Vec<_>>();
    a.config == b.config
        && a.steps.len() == b.steps.len()
        && a.clipping == b.clipping
        && lrs(a) == lrs(b)
        && (data(a).is_none() || data(b).is_none() || data(a) == data(b))
        && flag(&a.command, "--seed") == flag(&b.command, "--seed")
        && flag(&a.command, "--lr") == flag(&b.command, "--lr")
}

/// Every record whose setup matches an earlier all-on-GPU record's (in the order given) against
/// that reference: one line per step whose |loss difference| exceeds [`LOSS_TOLERANCE`]
/// (all-on-GPU repeats included). Returns (pairs compared, mismatch lines).
pub fn loss_mismatches(records: &[(String, &Record)]) -> (usize, Vec<String>) {
    let mut pairs = 0;
    let mut out = Vec::new();
    for (i, (file, r)) in records.iter().enumerate() {
        let reference = records[..i].iter().find(|(_, q)| q.strategy_name() == ALL_ON_GPU && same_setup(q, r));
        let Some((ref_file, q)) = reference else { continue };
        pairs += 1;
        for (a, b) in r.steps.iter().zip(&q.steps) {
            let d = (a.loss - b.loss).abs();
            if d.is_nan() || d > LOSS_TOLERANCE || a.step != b.step {
                out.push(format!(
                    "{file} ({}) step {}: loss {} vs {} in the all-on-GPU {ref_file}: |diff| {d:.3e} > {LOSS_TOLERANCE:e}",
                    r.strategy_name(),
                    a.step,
                    a.loss,
                    b.loss
                ));
            }
        }
    }
    (pairs, out)
}

fn gib(b: u64) -> String {
    format!("{:.3}", b as f64 / GIB as f64)
}

/// `report.md`: the targets, one table row per case worst first, then each failing case's terms
/// and the loss comparison.
pub fn report_markdown(cases: &[Case], loss_pairs: usize, loss_issues: &[String]) -> String {
    let mut s = String::from("# Predicted against measured\n\n");
    let pass = cases.iter().filter(|c| c.passes()).count();
    let _ = writeln!(
        s,
        "{} records, {} within target (pool peak within {:.0}%, step time within {:.0}% where the record has measured lane times, or within {:.0}% replayed under the run's own probes where it has them, the step replayed under its start and its end probe differing by at most {:.0}%). Each record is re-planned with today's code; worst first.\n",
        cases.len(),
        pass,
        100.0 * PEAK_TOLERANCE,
        100.0 * STEP_TOLERANCE,
        100.0 * PROBED_STEP_TOLERANCE,
        100.0 * PROBE_DRIFT_TOLERANCE
    );
    s.push_str("| # | record | config | strategy | budget | pool peak predicted (GiB) | pool peak measured (GiB) | pool error | device peak predicted (GiB) | device peak measured (GiB) | device error | step predicted (ms) | step measured (ms) | step error | step error, shipped profile | term off |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (i, c) in cases.iter().enumerate() {
        let failed = c.error.is_some();
        let na = |v: String| if failed { "-".to_string() } else { v };
        let step_err = pct(c.step_error()) + if c.step_checked() { "" } else { " (median, unchecked)" };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} |",
            i + 1,
            c.file,
            c.config,
            c.strategy,
            c.budget.map_or("none".to_string(), |b| Bytes(b).to_string()),
            na(gib(c.predicted_pool)),
            gib(c.measured_pool),
            na(pct(c.peak_error())),
            na(gib(c.predicted_device())),
            gib(c.measured_device),
            na(pct(c.device_error())),
            na(format!("{:.2}", c.predicted_time.step_ms)),
            c.measured_step_ms(),
            na(step_err + if c.probed() { " (probed)" } else { "" }),
            c.shipped_step_ms.map_or("-".to_string(), |m| pct(rel(m, c.measured_step_ms()))),
            c.terms_off().replace('|', "/")
        );
    }
    let failing: Vec<&Case> = cases.iter().filter(|c| !c.passes()).collect();
    if !failing.is_empty() {
        s.push_str("\n## Cases outside target\n\n```\n");
        for c in failing {
            s.push_str(&c.explain());
            s.push('\n');
        }
        s.push_str("```\n");
    }
    let _ = writeln!(
        s,
        "\n## Losses\n\n{loss_pairs} records compared with the all-on-GPU record of the same config, step count, seed and learning rate (|diff| <= {LOSS_TOLERANCE:e} at every step): {}.",
        if loss_issues.is_empty() { "all agree".to_string() } else { format!("{} steps disagree", loss_issues.len()) }
    );
    for l in loss_issues {
        let _ = writeln!(s, "- {l}");
    }
    s
}

/// One point of a scatter: numbered as the table's row.
#[derive(Clone, Debug, PartialEq)]
pub struct ScatterPoint {
    pub label: String,
    pub x: f64,
    pub y: f64,
    /// Within target (drawn in the "ok" colour).
    pub ok: bool,
}

/// Predicted (x) against measured (y), with the y = x line and a band of the tolerance.
pub struct ScatterChart {
    pub title: String,
    pub unit: &'static str,
    /// Series name and its points.
    pub series: Vec<(String, Vec<ScatterPoint>)>,
    pub tolerance: f64,
}

/// Table rows are numbered from 1 in `cases` order; points carry those numbers.
pub fn peak_chart(cases: &[Case]) -> ScatterChart {
    let pts = |device: bool| -> Vec<ScatterPoint> {
        cases
            .iter()
            .enumerate()
            .filter(|(_, c)| c.error.is_none())
            .map(|(i, c)| {
                let (x, y) = if device { (c.predicted_device(), c.measured_device) } else { (c.predicted_pool, c.measured_pool) };
                let ok = rel(x as f64, y as f64).abs() <= PEAK_TOLERANCE;
                ScatterPoint { label: format!("{}", i + 1), x: x as f64 / GIB as f64, y: y as f64 / GIB as f64, ok }
            })
            .collect()
    };
    ScatterChart {
        title: "Peak memory: predicted against measured".into(),
        unit: "GiB",
        series: vec![("pool peak (allocated)".into(), pts(false)), ("device peak (+ fixed overhead)".into(), pts(true))],
        tolerance: PEAK_TOLERANCE,
    }
}

pub fn step_chart(cases: &[Case]) -> ScatterChart {
    let series = |checked: bool| -> Vec<ScatterPoint> {
        cases
            .iter()
            .enumerate()
            .filter(|(_, c)| c.error.is_none() && c.step_checked() == checked)
            .map(|(i, c)| ScatterPoint {
                label: format!("{}", i + 1),
                x: c.predicted_time.step_ms,
                y: c.measured_step_ms(),
                ok: c.step_error().abs() <= STEP_TOLERANCE,
            })
            .collect()
    };
    ScatterChart {
        title: "Step time: predicted against measured".into(),
        unit: "ms",
        series: vec![("measured step (lane times)".into(), series(true)), ("median step (v1 record)".into(), series(false))],
        tolerance: STEP_TOLERANCE,
    }
}

const OK: RGBColor = RGBColor(31, 119, 180);
const OFF: RGBColor = RGBColor(214, 39, 40);

impl ScatterChart {
    /// The axis range, log scale: every point, padded.
    pub fn range(&self) -> (f64, f64) {
        let vals = self.series.iter().flat_map(|(_, v)| v.iter().flat_map(|p| [p.x, p.y])).filter(|v| v.is_finite() && *v > 0.0);
        let (lo, hi) = vals.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if !lo.is_finite() {
            return (0.1, 10.0);
        }
        (lo / 1.5, hi * 1.5)
    }
}

impl Chart for ScatterChart {
    fn size(&self) -> (u32, u32) {
        (1300, 860)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (plot, legend) = root.split_horizontally(860);
        let (lo, hi) = self.range();
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, (FONT, 20))
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d((lo..hi).log_scale(), (lo..hi).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(format!("predicted ({})", self.unit))
            .y_desc(format!("measured ({})", self.unit))
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        // y = x, and the tolerance band around it (straight on log-log axes: two points each).
        let n = 1;
        let line = |f: f64| (0..=n).map(move |i| lo * (hi / lo).powf(i as f64 / n as f64)).map(move |x| (x, x * f));
        chart.draw_series(LineSeries::new(line(1.0), BLACK.stroke_width(2))).map_err(err)?;
        let band = RGBColor(150, 150, 150);
        chart.draw_series(LineSeries::new(line(1.0 + self.tolerance), band.stroke_width(1))).map_err(err)?;
        chart.draw_series(LineSeries::new(line(1.0 - self.tolerance), band.stroke_width(1))).map_err(err)?;
        // Points: one marker shape per series, coloured by tolerance; labels of points that
        // land on the same pixel are joined ("1,2,3") and drawn once, the first series' above
        // left of the point, the second's below right, so the two do not cover each other.
        // (series, pixel, labels, colour)
        type Label = (usize, (i32, i32), Vec<String>, RGBColor);
        let mut labels: Vec<Label> = Vec::new();
        for (si, (_, pts)) in self.series.iter().enumerate() {
            for p in pts.iter().filter(|p| p.x > 0.0 && p.y > 0.0) {
                let (x, y) = chart.backend_coord(&(p.x, p.y));
                let color = if p.ok { OK } else { OFF };
                draw_point(&plot, si, (x, y), color)?;
                match labels.iter_mut().find(|(s, k, _, _)| *s == si && (k.0 - x).abs() < 6 && (k.1 - y).abs() < 6) {
                    Some(l) => l.2.push(p.label.clone()),
                    None => labels.push((si, (x, y), vec![p.label.clone()], color)),
                }
            }
        }
        for (si, (x, y), ls, color) in labels {
            let text = ls.join(",");
            let at = if si % 2 == 0 { (x - 10 - 7 * text.len() as i32, y - 18) } else { (x + 10, y + 4) };
            plot.draw(&Text::new(text, at, (FONT, 13).into_font().color(&color))).map_err(err)?;
        }
        let legend = legend.margin(60, 0, 0, 0);
        let entries = vec![
            ("y = x".to_string(), BLACK, Mark::Line),
            (format!("+/- {:.0}%", 100.0 * self.tolerance), band, Mark::Line),
            (format!("within {:.0}%", 100.0 * self.tolerance), OK, Mark::Box),
            (format!("outside {:.0}%", 100.0 * self.tolerance), OFF, Mark::Box),
        ];
        style::draw_legend(&legend, "predicted vs measured", &entries)?;
        let font = (FONT, 15).into_font();
        for (si, (name, pts)) in self.series.iter().enumerate() {
            let y = 42 + 22 * (entries.len() + si) as i32;
            draw_point(&legend, si, (16, y), RGBColor(90, 90, 90))?;
            legend.draw(&Text::new(format!("{name} ({})", pts.len()), (32, y - 8), font.clone())).map_err(err)?;
        }
        let y = 42 + 22 * (entries.len() + self.series.len()) as i32;
        legend.draw(&Text::new("numbers: rows of report.md".to_string(), (8, y - 8), font)).map_err(err)
    }
}

/// Series `si`'s marker at pixel `(x, y)`: filled dots, then hollow triangles.
fn draw_point<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, si: usize, (x, y): (i32, i32), color: RGBColor) -> Result<(), String> {
    match si % 2 {
        0 => area.draw(&Circle::new((x, y), 5, color.filled())),
        _ => area.draw(&TriangleMarker::new((x, y), 7, color.stroke_width(2))),
    }
    .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{MemoryPeaks, StepRecord, RECORD_VERSION};

    fn record(strategy: &str, losses: &[f64]) -> Record {
        let cfg =
            models::GptConfig::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs/gpt2-tiny.ron")).unwrap();
        Record {
            version: RECORD_VERSION,
            command: "offplan run --steps 3".into(),
            config: cfg,
            schedule: strategy.into(),
            schedule_digest: String::new(),
            device: "gpu".into(),
            driver: "13.0".into(),
            commit: "unknown".into(),
            unix_time: 0,
            predicted: MemoryPeaks { allocated_bytes: 0, reserved_bytes: 0, device_bytes: 0 },
            measured: MemoryPeaks { allocated_bytes: 1000 << 20, reserved_bytes: 1002 << 20, device_bytes: 1600 << 20 },
            device_bytes_at_start: 0,
            peak_flops: 1.0,
            model_flops: 1.0,
            steps: losses
                .iter()
                .enumerate()
                .map(|(i, l)| StepRecord { step: i as u32 + 1, loss: *l, lr: None, grad_norm: None, ms: 10.0, tokens_per_s: 1.0, mfu: 0.0 })
                .collect(),
            median_ms: 10.0,
            median_tokens_per_s: 1.0,
            notes: vec![],
            hardware: String::new(),
            budget_bytes: None,
            strategy: strategy.into(),
            decisions: vec![],
            predicted_time: None,
            measured_time: None,
            allocator: String::new(),
            startup: None,
            probe: None,
            clipping: Default::default(),
            training: None,
            op_times: Vec::new(),
            host_op_times: Vec::new(),
            issue_ms: None,
        }
    }

    fn case(pool: u64, overhead: u64, step_ms: f64, measured: Option<StepTimes>) -> Case {
        let mut r = record(ALL_ON_GPU, &[1.0]);
        r.measured_time = measured;
        let mut c = Case::failed("r.ron", &r, String::new());
        c.error = None;
        c.predicted_pool = pool;
        c.predicted_reserved = pool;
        c.fixed_overhead = overhead;
        c.predicted_time.step_ms = step_ms;
        c
    }

    #[test]
    fn terms_say_which_part_is_off() {
        // Pool peak exact, overhead right (1600 - 1002 MiB = 598 MiB): passes.
        let c = case(1000 << 20, 598 << 20, 10.0, None);
        assert!(c.passes(), "{}", c.explain());
        assert_eq!(c.terms_off(), "-");
        // Pool 2% high: fails on the pool term only.
        let c = case(1020 << 20, 598 << 20, 10.0, None);
        assert!(!c.passes());
        assert!(c.terms_off().starts_with("pool peak") && !c.terms_off().contains("fixed overhead"), "{}", c.terms_off());
        assert!((c.peak_error() - 0.02).abs() < 1e-12);
        // Overhead 100 MiB off: the device term is off, the case still passes on the pool.
        let c = case(1000 << 20, 698 << 20, 10.0, None);
        assert!(c.passes() && c.terms_off().contains("fixed overhead"));
        // Step 20% slow with lanes: step and the compute lane are off, the copies are not.
        let m = StepTimes { step_ms: 12.5, compute_ms: 12.5, ..StepTimes::default() };
        let mut c = case(1000 << 20, 598 << 20, 10.0, Some(m));
        c.predicted_time.compute_ms = 10.0;
        assert!(!c.passes());
        let off = c.terms_off();
        assert!(off.contains("step time") && off.contains("compute lane") && !off.contains("H2D"), "{off}");
        assert!(c.explain().contains("OFF step time"), "{}", c.explain());
        // Worst first: the failing re-plan, then 20% step (2x its tolerance), then 1.5% pool.
        let failed = Case::failed("f.ron", &record(ALL_ON_GPU, &[1.0]), "boom".into());
        let order = worst_first(vec![case(1015 << 20, 598 << 20, 10.0, None), c.clone(), failed, case(1000 << 20, 598 << 20, 10.0, None)]);
        assert_eq!(order[0].file, "f.ron");
        assert_eq!(order[1], c);
        assert!((order[2].peak_error() - 0.015).abs() < 1e-12);
        assert!(order[3].passes());
        // Over its recorded budget: fails, first among planned cases, and says so.
        let over = case(1000 << 20, 598 << 20, 10.0, None).with_over_budget("peak exceeds the budget".into());
        assert!(!over.passes() && over.terms_off().starts_with("budget"));
        assert!(over.explain().contains("OFF budget"), "{}", over.explain());
    }

    #[test]
    fn losses_are_compared_with_the_same_setup_only() {
        let base = record(ALL_ON_GPU, &[10.0, 9.0, 8.0]);
        let close = record("offload-all", &[10.0, 9.01, 8.0]);
        let far = record("planner", &[10.0, 9.0, 8.5]);
        let mut other_lr = record("planner", &[10.0, 5.0, 1.0]);
        other_lr.command = "offplan run --steps 3 --lr 1e-2".into();
        // A clipped run, or one under another learning-rate schedule, is another setup.
        let mut clipped = record("planner", &[10.0, 5.0, 1.0]);
        clipped.clipping = models::program::Clipping::GlobalNorm;
        let mut scheduled = record("planner", &[10.0, 5.0, 1.0]);
        for (i, s) in scheduled.steps.iter_mut().enumerate() {
            s.lr = Some(1e-4 * (i + 1) as f64);
        }
        let rs = [
            ("a.ron".to_string(), &base),
            ("b.ron".to_string(), &close),
            ("c.ron".to_string(), &far),
            ("d.ron".to_string(), &other_lr),
            ("e.ron".to_string(), &clipped),
            ("f.ron".to_string(), &scheduled),
        ];
        let (pairs, issues) = loss_mismatches(&rs);
        assert_eq!(pairs, 2);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(issues[0].starts_with("c.ron (planner) step 3"), "{}", issues[0]);
        assert_eq!(flag("x --lr=3 --seed 4", "--lr"), Some("3"));
        assert_eq!(flag("x --lr=3 --seed 4", "--seed"), Some("4"));
    }

    #[test]
    fn charts_render_with_every_point_and_the_diagonal() {
        let cases = vec![
            case(1000 << 20, 598 << 20, 10.0, None),
            case(1020 << 20, 598 << 20, 11.0, Some(StepTimes { step_ms: 10.0, ..StepTimes::default() })),
        ];
        let peak = peak_chart(&cases);
        assert_eq!(peak.series.len(), 2);
        assert_eq!(peak.series[0].1.len(), 2);
        assert!(peak.series[0].1[0].ok && !peak.series[0].1[1].ok);
        let (lo, hi) = peak.range();
        assert!(lo < 1000.0 / 1024.0 && hi > 1600.0 / 1024.0);
        let svg = style::render_svg(&peak).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("predicted (GiB)") && svg.contains("y = x"));
        let step = step_chart(&cases);
        assert_eq!(step.series[0].1.len() + step.series[1].1.len(), 2);
        assert!(style::render_png(&step).unwrap().starts_with(b"\x89PNG"));
        let md = report_markdown(&cases, 0, &[]);
        assert_eq!(md.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| #")).count(), 2);
    }
}
