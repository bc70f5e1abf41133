//! A run's measured memory over one step drawn over the plan's prediction: the pool's bytes in
//! use after every allocation and free of the measured step (at the time the compute stream
//! reached it, from events), against the simulator's live bytes over its own time line.

use crate::style::{self, err, Chart, Mark};
use models::schedule::Schedule;
use models::trace::Trace;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The overlay's data, (ms, GiB) step functions.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasuredMemoryChart {
    pub title: String,
    pub predicted: Vec<(f64, f64)>,
    pub measured: Vec<(f64, f64)>,
    /// The budget less the fixed overhead: what the pool may hold.
    pub pool_budget_gib: f64,
    pub predicted_ms: f64,
    pub measured_ms: f64,
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

impl MeasuredMemoryChart {
    /// `measured`: (ms, pool bytes in use) samples in time order; `measured_ms` the step's time.
    pub fn new(schedule: &Schedule, trace: &Trace, measured: &[(f64, u64)], measured_ms: f64, device: &str) -> MeasuredMemoryChart {
        MeasuredMemoryChart {
            title: format!(
                "{} under {} on {}: pool memory over one step, measured and predicted",
                schedule.model.name, schedule.budget, device
            ),
            predicted: trace.memory.iter().map(|s| (s.time.ms(), gib(s.total().0))).collect(),
            measured: measured.iter().map(|(t, b)| (*t, gib(*b))).collect(),
            pool_budget_gib: gib(schedule.budget.0.saturating_sub(schedule.prediction.fixed_overhead.0)),
            predicted_ms: trace.step_time.ms(),
            measured_ms,
        }
    }

    /// Highest measured value (GiB).
    pub fn measured_peak(&self) -> f64 {
        self.measured.iter().map(|p| p.1).fold(0.0, f64::max)
    }
}

/// A step line through `pts`, each value held to the next sample and the last to `end`.
fn step_line(pts: &[(f64, f64)], end: f64) -> Vec<(f64, f64)> {
    let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
    style::step_function(pts, &ys, end)
}

const MEASURED: RGBColor = RGBColor(255, 127, 14);
const PREDICTED: RGBColor = RGBColor(31, 119, 180);

impl Chart for MeasuredMemoryChart {
    fn size(&self) -> (u32, u32) {
        (1400, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (plot, legend) = root.split_horizontally(1130);
        let top = self.predicted.iter().map(|p| p.1).fold(self.measured_peak(), f64::max).max(self.pool_budget_gib);
        let y_max = (top * 1.12).max(1e-3);
        let x_max = self.predicted_ms.max(self.measured_ms).max(1e-6);
        let mut chart = style::step_axes(&plot, &self.title, x_max, y_max, "pool memory in use (GiB)")?;
        chart
            .draw_series(std::iter::once(PathElement::new(step_line(&self.predicted, self.predicted_ms), PREDICTED.stroke_width(2))))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(step_line(&self.measured, self.measured_ms), MEASURED.stroke_width(2))))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, self.pool_budget_gib), (x_max, self.pool_budget_gib)],
                style::BUDGET.stroke_width(2),
            )))
            .map_err(err)?;
        let entries = vec![
            ("measured (pool, events)".to_string(), MEASURED, Mark::Line),
            ("predicted (simulator)".to_string(), PREDICTED, Mark::Line),
            ("budget less fixed overhead".to_string(), style::BUDGET, Mark::Line),
        ];
        style::draw_legend(&legend.margin(60, 0, 0, 0), "pool memory", &entries)
    }
}

/// Writes `memory.svg` and `memory.png` of a run into `dir`.
pub fn write_measured_memory(dir: &Path, chart: &MeasuredMemoryChart) -> Result<Vec<PathBuf>, crate::ReportError> {
    crate::create_dir(dir)?;
    Ok(vec![crate::svg(dir, "memory.svg", chart)?, crate::png(dir, "memory.png", chart)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_line_holds_each_value_to_the_next_sample_and_the_end() {
        let v = step_line(&[(0.0, 1.0), (2.0, 3.0)], 5.0);
        assert_eq!(v, vec![(0.0, 1.0), (2.0, 1.0), (2.0, 3.0), (5.0, 3.0)]);
    }
}
