//! `loss.svg` / `loss.png`: a run's training loss at every step and, when it validated, its
//! validation losses, against the step. Drawn from the record alone (`steps`, `training`), so a
//! run, `offplan report` or a test draws the same chart from a record file.

use crate::record::Record;
use crate::style::{self, err, Chart, Mark, FONT};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VALIDATION: RGBColor = RGBColor(255, 127, 14);

/// The legend's name of the training series.
pub const TRAIN_LABEL: &str = "training loss (every step)";
/// The legend's name of the validation series (followed by its pattern).
pub const VALIDATION_LABEL: &str = "validation loss";

/// Everything the loss chart shows: (step, loss) points with finite losses, in step order.
#[derive(Clone, Debug, PartialEq)]
pub struct LossChart {
    pub title: String,
    pub train: Vec<(i64, f64)>,
    /// Empty when the run did not validate; the series is then left out of the legend too.
    pub validation: Vec<(i64, f64)>,
    pub validation_label: String,
    /// Text lines under the series in the legend: where the run started, losses not drawn.
    pub notes: Vec<String>,
}

/// Keeps the finite losses in step order; returns them and how many were not finite (a run
/// that diverged), which cannot be placed on an axis.
fn finite(points: impl Iterator<Item = (u32, f64)>) -> (Vec<(i64, f64)>, usize) {
    let mut left_out = 0;
    let mut v: Vec<(i64, f64)> = points
        .filter(|(_, l)| {
            let ok = l.is_finite();
            left_out += usize::from(!ok);
            ok
        })
        .map(|(s, l)| (i64::from(s), l))
        .collect();
    v.sort_by_key(|p| p.0);
    (v, left_out)
}

/// Above this many training steps the line keeps each group's lowest and highest loss: far more
/// points than pixels would only make the SVG huge (a million-step run, hundreds of MB).
const MAX_POINTS: usize = 20_000;

/// `points` in at most [`MAX_POINTS`]: the lowest and highest of consecutive groups, in step
/// order, so the line's envelope is the run's.
fn thin(points: Vec<(i64, f64)>) -> Vec<(i64, f64)> {
    if points.len() <= MAX_POINTS {
        return points;
    }
    let group = points.len().div_ceil(MAX_POINTS / 2);
    let mut out = Vec::with_capacity(MAX_POINTS);
    for g in points.chunks(group) {
        let lo = g.iter().min_by(|a, b| a.1.total_cmp(&b.1)).copied();
        let hi = g.iter().max_by(|a, b| a.1.total_cmp(&b.1)).copied();
        match (lo, hi) {
            (Some(lo), Some(hi)) if lo.0 == hi.0 => out.push(lo),
            (Some(lo), Some(hi)) => out.extend(if lo.0 < hi.0 { [lo, hi] } else { [hi, lo] }),
            _ => {}
        }
    }
    out
}

impl LossChart {
    /// The chart of `record`: its steps as numbered (a resumed run's from its checkpoint on)
    /// and `training.validation` when present. Records written before `--data` trained on the
    /// shipped corpus.
    pub fn of_record(record: &Record) -> LossChart {
        let t = record.training.as_ref();
        let data = t.and_then(|t| t.data_pattern.clone()).unwrap_or_else(|| "the shipped corpus".into());
        let (train, train_out) = finite(record.steps.iter().map(|s| (s.step, s.loss)));
        let (validation, val_out) = finite(t.map_or(&[][..], |t| &t.validation[..]).iter().copied());
        let validation_label = match t.and_then(|t| t.val_pattern.as_deref()) {
            Some(p) => format!("{VALIDATION_LABEL} ({p})"),
            None => VALIDATION_LABEL.to_string(),
        };
        let mut notes = Vec::new();
        if let Some(t) = t {
            notes.push(format!("start: {}", t.start));
        }
        if train.len() > MAX_POINTS {
            notes.push(format!("{} steps: each group's lowest and highest", train.len()));
        }
        let train = thin(train);
        if train_out > 0 {
            notes.push(format!("{train_out} training losses not finite, not drawn"));
        }
        if val_out > 0 {
            notes.push(format!("{val_out} validation losses not finite, not drawn"));
        }
        LossChart { title: format!("{} on {}: loss against step", record.config.name, data), train, validation, validation_label, notes }
    }

    /// The axes' ranges: steps (a window of 2 around a lone step) and losses (padded; a unit
    /// window around a constant loss, 0..1 when nothing is finite).
    fn ranges(&self) -> ((i64, i64), (f64, f64)) {
        let all = || self.train.iter().chain(&self.validation);
        let lo = all().map(|p| p.0).min().unwrap_or(0);
        let hi = all().map(|p| p.0).max().unwrap_or(1);
        let steps = if hi > lo { (lo, hi) } else { (lo - 1, lo + 1) };
        let y_lo = all().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let y_hi = all().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let losses = if !y_lo.is_finite() {
            (0.0, 1.0)
        } else if y_hi - y_lo < 1e-9 {
            (y_lo - 0.5, y_hi + 0.5)
        } else {
            let pad = (y_hi - y_lo) * 0.06;
            (y_lo - pad, y_hi + pad)
        };
        (steps, losses)
    }
}

impl Chart for LossChart {
    fn size(&self) -> (u32, u32) {
        (1300, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (plot, legend) = root.split_horizontally(1000);
        let ((x_lo, x_hi), (y_lo, y_hi)) = self.ranges();
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, (FONT, 20))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss (mean cross-entropy, nats)")
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        chart.draw_series(LineSeries::new(self.train.iter().copied(), TRAIN.stroke_width(2))).map_err(err)?;
        // A lone step draws no line: mark it so the chart is not empty.
        if self.train.len() == 1 {
            chart.draw_series(self.train.iter().map(|p| Circle::new(*p, 3, TRAIN.filled()))).map_err(err)?;
        }
        let mut entries = vec![(TRAIN_LABEL.to_string(), TRAIN, Mark::Line)];
        if !self.validation.is_empty() {
            chart.draw_series(LineSeries::new(self.validation.iter().copied(), VALIDATION.stroke_width(2))).map_err(err)?;
            chart.draw_series(self.validation.iter().map(|p| Circle::new(*p, 5, VALIDATION.filled()))).map_err(err)?;
            entries.push((self.validation_label.clone(), VALIDATION, Mark::Dot));
        }
        entries.extend(self.notes.iter().map(|n| (n.clone(), style::PEAK, Mark::Text)));
        style::draw_legend(&legend.margin(60, 0, 0, 0), "loss", &entries)
    }
}

/// Writes `loss.svg` and `loss.png` of `record` into `dir` (created if missing), each through a
/// temporary name; returns the paths. A record without steps is refused (nothing to draw).
pub fn write_loss_chart(dir: &Path, record: &Record) -> Result<Vec<PathBuf>, crate::ReportError> {
    if record.steps.is_empty() {
        return Err(crate::ReportError::Empty { path: dir.join("loss.svg"), message: "the record has no steps".into() });
    }
    let chart = LossChart::of_record(record);
    crate::create_dir(dir)?;
    Ok(vec![crate::svg(dir, "loss.svg", &chart)?, crate::png(dir, "loss.png", &chart)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{MemoryPeaks, StepRecord, TrainingRecord, RECORD_VERSION};

    /// A record as `offplan run` writes one, built by hand: steps `first..first + n` with a
    /// falling loss, and `validation` as given.
    fn record(first: u32, n: u32, validation: Vec<(u32, f64)>) -> Record {
        let cfg = models::GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs/gpt2-tiny.ron")).unwrap();
        let peaks = MemoryPeaks { allocated_bytes: 1 << 20, reserved_bytes: 1 << 20, device_bytes: 2 << 20 };
        let steps = (first..first + n)
            .map(|s| StepRecord {
                step: s,
                loss: 11.0 - 0.01 * f64::from(s),
                lr: Some(6e-4),
                grad_norm: None,
                ms: 5.0,
                tokens_per_s: 1e5,
                mfu: 0.1,
            })
            .collect();
        let val_pattern = (!validation.is_empty()).then(|| "shards/val_*.bin".to_string());
        Record {
            version: RECORD_VERSION,
            command: "offplan run --model models/configs/gpt2-tiny.ron".into(),
            config: cfg,
            schedule: crate::record::ALL_ON_GPU.into(),
            schedule_digest: "test".into(),
            device: "test".into(),
            driver: "test".into(),
            commit: "unknown".into(),
            unix_time: 0,
            predicted: peaks.clone(),
            measured: peaks,
            device_bytes_at_start: 0,
            peak_flops: 989e12,
            model_flops: 1e12,
            steps,
            median_ms: 5.0,
            median_tokens_per_s: 1e5,
            notes: vec![],
            hardware: "h100-sxm".into(),
            budget_bytes: None,
            strategy: crate::record::ALL_ON_GPU.into(),
            decisions: vec![],
            predicted_time: None,
            measured_time: None,
            allocator: String::new(),
            startup: None,
            probe: None,
            clipping: Default::default(),
            training: Some(TrainingRecord {
                data_pattern: Some("shards/train_*.bin".into()),
                data_shards: 2,
                data_tokens: 1_000_000,
                first_step: first,
                start: if first == 1 { "seed 0".into() } else { format!("resumed from ckpt at step {}", first - 1) },
                checkpoints: vec![],
                val_pattern,
                validation,
            }),
            op_times: Vec::new(),
            host_op_times: Vec::new(),
            issue_ms: None,
        }
    }

    #[test]
    fn the_chart_names_both_series_when_the_run_validated() {
        let dir = tempfile::tempdir().unwrap();
        let r = record(1, 30, vec![(10, 10.95), (20, 10.85), (30, 10.75)]);
        let written = write_loss_chart(dir.path(), &r).unwrap();
        assert_eq!(written, vec![dir.path().join("loss.svg"), dir.path().join("loss.png")]);
        let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
        assert!(svg.contains(TRAIN_LABEL), "loss.svg lacks the training series");
        assert!(svg.contains(VALIDATION_LABEL), "loss.svg lacks the validation series");
        assert!(svg.contains("gpt2-tiny on shards/train_*.bin"), "the title names the model and the data");
        // plotters writes each text on a line of its own.
        assert!(svg.lines().any(|l| l == "step") && svg.contains("loss (mean cross-entropy, nats)"), "axis labels");
        let png = std::fs::read(dir.path().join("loss.png")).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "loss.png is a PNG");
        // Written through temporary names: nothing else is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn without_validation_only_the_training_series_is_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let r = record(1, 10, vec![]);
        write_loss_chart(dir.path(), &r).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
        assert!(svg.contains(TRAIN_LABEL));
        assert!(!svg.contains(VALIDATION_LABEL) && !svg.contains("validation"), "no validation series without --val-data");
        assert!(dir.path().join("loss.png").is_file());
    }

    #[test]
    fn a_resumed_run_is_drawn_at_its_own_steps() {
        let c = LossChart::of_record(&record(11, 10, vec![(20, 10.8)]));
        assert_eq!(c.train.first().map(|p| p.0), Some(11));
        assert_eq!(c.train.last().map(|p| p.0), Some(20));
        assert_eq!(c.ranges().0, (11, 20));
        assert_eq!(c.validation, vec![(20, 10.8)]);
        assert!(c.notes.iter().any(|n| n.contains("resumed from ckpt at step 10")), "{:?}", c.notes);
    }

    #[test]
    fn a_long_run_keeps_its_ends_and_extremes_in_few_points() {
        let points: Vec<(i64, f64)> = (1..=100_001).map(|s| (s, if s == 54_321 { 0.5 } else { 3.0 + 1.0 / s as f64 })).collect();
        let v = thin(points);
        assert!(v.len() <= MAX_POINTS, "{}", v.len());
        assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "in step order");
        assert_eq!((v[0], v.last().map(|p| p.0)), ((1, 4.0), Some(100_001)));
        assert!(v.contains(&(54_321, 0.5)), "the lowest loss is kept");
        assert_eq!(thin(vec![(1, 2.0), (2, 1.0)]), vec![(1, 2.0), (2, 1.0)]);
        // A flat run: one point per group, no step twice.
        let flat = thin((1..=100_000).map(|s| (s, 3.0)).collect());
        assert!(flat.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn odd_records_draw_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        // One step, and a run that diverged: non-finite losses are left out and counted.
        let mut r = record(1, 1, vec![(1, f64::NAN)]);
        let c = LossChart::of_record(&r);
        assert_eq!(c.ranges().0, (0, 2));
        assert!(c.validation.is_empty() && c.notes.iter().any(|n| n.contains("1 validation losses not finite")));
        write_loss_chart(dir.path(), &r).unwrap();
        r.steps[0].loss = f64::INFINITY;
        let c = LossChart::of_record(&r);
        assert!(c.train.is_empty() && c.ranges().1 == (0.0, 1.0));
        write_loss_chart(dir.path(), &r).unwrap();
        // A record written before `--data` (no `training`): the shipped corpus.
        r.training = None;
        assert!(LossChart::of_record(&r).title.contains("the shipped corpus"));
        r.steps.clear();
        assert!(matches!(write_loss_chart(dir.path(), &r), Err(crate::ReportError::Empty { .. })));
    }
}
