//! `memory.svg` / `memory.png`: device memory over one step, stacked by category, with the fixed
//! overhead as the bottom band, the budget and the device figure as lines and the live peak
//! marked; the figures are named as every output names them (`models::figures`).

use crate::style::{self, err, Chart, Mark, FONT};
use models::figures::MemoryFigures;
use models::inventory::MemoryCategory;
use models::schedule::Schedule;
use models::trace::Trace;
use models::units::{Bytes, GIB};
use plotters::coord::Shift;
use plotters::prelude::*;

fn gib(b: Bytes) -> f64 {
    b.0 as f64 / GIB as f64
}

/// Per category that is ever non-zero: one point per trace sample, (time in ms, GiB). A sample
/// holds until the next one (memory is a step function of time).
pub fn memory_series(trace: &Trace) -> Vec<(MemoryCategory, Vec<(f64, f64)>)> {
    MemoryCategory::ALL
        .iter()
        .filter(|c| trace.memory.iter().any(|s| s.by_category.get(c).is_some_and(|b| b.0 > 0)))
        .map(|c| {
            let pts = trace.memory.iter().map(|s| (s.time.ms(), gib(s.by_category.get(c).copied().unwrap_or_default()))).collect();
            (*c, pts)
        })
        .collect()
}

/// A band of the stack, bottom to top.
#[derive(Clone, Debug, PartialEq)]
pub struct Band {
    pub label: String,
    pub color: RGBColor,
    /// Un-stacked values, one per trace sample: (ms, GiB).
    pub points: Vec<(f64, f64)>,
}

/// Everything the memory chart shows, in plot units (ms, GiB).
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryChart {
    pub title: String,
    /// Bottom to top: fixed overhead first, then the categories.
    pub bands: Vec<Band>,
    pub budget_gib: f64,
    /// "budget 24 GiB", in the legend.
    pub budget_label: String,
    /// "device 23.771 GiB", in the legend.
    pub device_label: String,
    /// The figures no line shows, in the legend under the lines: arena, headroom, host memory.
    pub figure_labels: Vec<String>,
    /// The device figure (fixed overhead + the arena as the pool rounds it + the mapping of
    /// pinned host memory), drawn as a dashed line.
    pub device_gib: f64,
    /// (ms, GiB) of the live peak on top of the fixed overhead band.
    pub peak: (f64, f64),
    pub peak_label: String,
    pub live_peak: Bytes,
    pub step_ms: f64,
}

impl MemoryChart {
    /// The chart of `trace`, its figures named as every output names them (`memory`).
    pub fn new(schedule: &Schedule, trace: &Trace, memory: &MemoryFigures) -> MemoryChart {
        let fixed = schedule.prediction.fixed_overhead;
        let mut bands = Vec::new();
        if fixed.0 > 0 {
            let points = trace.memory.iter().map(|s| (s.time.ms(), gib(fixed))).collect();
            bands.push(Band { label: "fixed overhead".into(), color: style::FIXED_OVERHEAD, points });
        }
        for (c, points) in memory_series(trace) {
            bands.push(Band { label: c.label().into(), color: style::category_color(c), points });
        }
        MemoryChart {
            title: format!("{} on {}: device memory over one step", schedule.model.name, schedule.hardware),
            bands,
            budget_gib: gib(schedule.budget),
            budget_label: format!("budget {}", schedule.budget),
            device_label: format!("device {}", memory.device),
            figure_labels: vec![
                format!("arena {}", memory.arena),
                if memory.fits() {
                    format!("headroom {}", Bytes(memory.headroom() as u64))
                } else {
                    format!("over the budget by {}", Bytes(memory.headroom().unsigned_abs() as u64))
                },
                format!("host memory {} pinned", memory.host_memory),
            ],
            device_gib: gib(memory.device),
            peak: (trace.peak_time.ms(), gib(trace.peak_allocated + fixed)),
            peak_label: format!("live peak {} (+ {} fixed overhead) at {}", memory.live_peak, fixed, memory.peak_at),
            live_peak: memory.live_peak,
            step_ms: trace.step_time.ms(),
        }
    }

    /// Stacked totals per sample (the top of the stack), (ms, GiB).
    pub fn totals(&self) -> Vec<(f64, f64)> {
        let n = self.bands.first().map_or(0, |b| b.points.len());
        (0..n).map(|i| (self.bands[0].points[i].0, self.bands.iter().map(|b| b.points[i].1).sum())).collect()
    }

    /// Each band as a polygon outline of its stacked step function: the top edge left to right,
    /// then the bottom edge right to left.
    fn polygons(&self) -> Vec<Vec<(f64, f64)>> {
        let n = self.bands.first().map_or(0, |b| b.points.len());
        let mut below = vec![0.0; n];
        let mut out = Vec::new();
        for band in &self.bands {
            let above: Vec<f64> = (0..n).map(|i| below[i] + band.points[i].1).collect();
            let top = style::step_function(&band.points, &above, self.step_ms);
            let bottom = style::step_function(&band.points, &below, self.step_ms);
            let mut poly = top;
            poly.extend(bottom.into_iter().rev());
            out.push(poly);
            below = above;
        }
        out
    }
}

impl Chart for MemoryChart {
    fn size(&self) -> (u32, u32) {
        (1400, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (plot, legend) = root.split_horizontally(1130);
        let y_max = (self.budget_gib.max(self.peak.1).max(self.device_gib) * 1.12).max(1e-3);
        let x_max = self.step_ms.max(1e-6);
        let mut chart = style::step_axes(&plot, &self.title, x_max, y_max, "device memory (GiB)")?;
        for (band, poly) in self.bands.iter().zip(self.polygons()) {
            chart.draw_series(std::iter::once(Polygon::new(poly, band.color.mix(0.85).filled()))).map_err(err)?;
        }
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, self.budget_gib), (x_max, self.budget_gib)],
                style::BUDGET.stroke_width(2),
            )))
            .map_err(err)?;
        chart
            .draw_series(DashedLineSeries::new(vec![(0.0, self.device_gib), (x_max, self.device_gib)], 8, 5, style::DEVICE.stroke_width(2)))
            .map_err(err)?;
        chart.draw_series(std::iter::once(Circle::new(self.peak, 6, style::PEAK.filled()))).map_err(err)?;
        // Keep the label inside the plot when the peak is near the right edge.
        let label_x = if self.peak.0 > x_max * 0.6 { self.peak.0 - x_max * 0.35 } else { self.peak.0 + x_max * 0.01 };
        chart
            .draw_series(std::iter::once(Text::new(
                self.peak_label.clone(),
                (label_x, self.peak.1 + y_max * 0.035),
                (FONT, 14).into_font().style(FontStyle::Bold),
            )))
            .map_err(err)?;

        let mut entries: Vec<(String, RGBColor, Mark)> = self.bands.iter().rev().map(|b| (b.label.clone(), b.color, Mark::Box)).collect();
        // The lines' figures in the legend, where no stack near the budget can hide them.
        entries.push((self.budget_label.clone(), style::BUDGET, Mark::Line));
        entries.push((self.device_label.clone(), style::DEVICE, Mark::Line));
        entries.push((format!("live peak {}", self.live_peak), style::PEAK, Mark::Dot));
        entries.extend(self.figure_labels.iter().map(|l| (l.clone(), style::PEAK, Mark::Text)));
        style::draw_legend(&legend.margin(60, 0, 0, 0), "memory class", &entries)
    }
}
