//! `sweep.svg` and `sweep.csv`: predicted step time against budget, the planner's curve and each
//! heuristic's on one chart; infeasible points are left out of the chart and kept in the CSV.

use crate::style::{self, err, Chart, FONT};
use models::figures::MemoryFigures;
use models::units::{Bytes, Seconds, GIB};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fmt::Write;

/// One method at one budget.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepPoint {
    /// "planner", or a heuristic's name.
    pub method: String,
    pub budget: Bytes,
    /// None where the method has no schedule under the budget.
    pub step_time: Option<Seconds>,
    /// The plan's memory figures (live peak, arena, device, host memory); None where infeasible.
    pub memory: Option<MemoryFigures>,
    /// Why infeasible, or a detail (the N of "offload first N").
    pub note: String,
}

/// Methods in first-appearance order, each with its feasible points as (budget GiB, step ms),
/// sorted by budget.
pub fn sweep_series(points: &[SweepPoint]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for p in points {
        if !out.iter().any(|(m, _)| *m == p.method) {
            out.push((p.method.clone(), Vec::new()));
        }
        if let Some(t) = p.step_time {
            let series = out.iter_mut().find(|(m, _)| *m == p.method).expect("just added");
            series.1.push((p.budget.0 as f64 / GIB as f64, t.ms()));
        }
    }
    for (_, v) in &mut out {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The memory columns are `models::figures::MemoryFigures`, named as every output names them.
pub const CSV_HEADER: &str =
    "method,budget_bytes,budget_gib,feasible,step_time_ms,live_peak_bytes,arena_bytes,device_bytes,device_gib,host_memory_bytes,note";

/// The CSV: one row per point, in the order given.
pub fn sweep_csv(points: &[SweepPoint]) -> String {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for p in points {
        let m = p.memory.as_ref();
        let bytes = |f: fn(&MemoryFigures) -> Bytes| m.map_or(String::new(), |m| f(m).0.to_string());
        let _ = writeln!(
            s,
            "{},{},{:.4},{},{},{},{},{},{},{},{}",
            csv_field(&p.method),
            p.budget.0,
            p.budget.0 as f64 / GIB as f64,
            p.step_time.is_some(),
            p.step_time.map_or(String::new(), |t| format!("{:.4}", t.ms())),
            bytes(|m| m.live_peak),
            bytes(|m| m.arena),
            bytes(|m| m.device),
            m.map_or(String::new(), |m| format!("{:.4}", m.device.0 as f64 / GIB as f64)),
            bytes(|m| m.host_memory),
            csv_field(&p.note)
        );
    }
    s
}

pub struct SweepChart {
    pub title: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// All budgets swept, GiB (the x range even where nothing is feasible).
    pub budgets: Vec<f64>,
}

impl SweepChart {
    pub fn new(title: String, points: &[SweepPoint]) -> SweepChart {
        let budgets = points.iter().map(|p| p.budget.0 as f64 / GIB as f64).collect();
        SweepChart { title, series: sweep_series(points), budgets }
    }
}

/// The planner's curve in black, heuristics in palette colours.
fn method_color(i: usize, name: &str) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    if name == "planner" {
        RGBColor(0, 0, 0)
    } else {
        PALETTE[i % PALETTE.len()]
    }
}

/// Draws marker `i` (one shape per method) centred on pixel `(x, y)` of `area`.
fn draw_marker<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, i: usize, (x, y): (i32, i32), color: RGBColor) -> Result<(), String> {
    let (line, fill) = (color.stroke_width(2), color.filled());
    match i % 6 {
        0 => area.draw(&Circle::new((x, y), 4, fill)),
        1 => area.draw(&Circle::new((x, y), 8, line)),
        2 => area.draw(&TriangleMarker::new((x, y), 8, line)),
        3 => area.draw(&Cross::new((x, y), 6, line)),
        4 => area.draw(&Rectangle::new([(x - 4, y - 4), (x + 4, y + 4)], fill)),
        _ => area.draw(&Rectangle::new([(x - 7, y - 7), (x + 7, y + 7)], line)),
    }
    .map_err(err)
}

impl Chart for SweepChart {
    fn size(&self) -> (u32, u32) {
        (1300, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (plot, legend) = root.split_horizontally(1010);
        let lo = self.budgets.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.budgets.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        // One budget: centre it in a 1 GiB window.
        let (lo, hi) = match (lo.is_finite(), hi > lo) {
            (true, true) => (lo, hi),
            (true, false) => (lo - 0.5, lo + 0.5),
            _ => (0.0, 1.0),
        };
        let pad = (hi - lo) * 0.04;
        let t_max = self.series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)).fold(0.0, f64::max);
        let t_min = self.series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)).fold(f64::INFINITY, f64::min);
        let (t_lo, t_hi) = if t_min.is_finite() { ((t_min * 0.9).max(0.0), t_max * 1.08) } else { (0.0, 1.0) };
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, (FONT, 20))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d((lo - pad)..(hi + pad), t_lo..t_hi.max(t_lo + 1e-6))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("GPU memory budget (GiB)")
            .y_desc("predicted step time (ms)")
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        let mut entries = Vec::new();
        for (i, (name, pts)) in self.series.iter().enumerate() {
            let color = method_color(i, name);
            let width = if name == "planner" { 3 } else { 2 };
            chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(width))).map_err(err)?;
            // A different marker per method, so points that coincide (all methods agree at the
            // top budget) stay distinguishable.
            // `plot` is the left part of the root, so backend pixels are its own pixels.
            for p in pts {
                draw_marker(&plot, i, chart.backend_coord(p), color)?;
            }
            let label = match pts.len() {
                0 => format!("{name} (never feasible)"),
                1 => format!("{name} (1 point)"),
                _ => name.clone(),
            };
            entries.push((label, color));
        }
        let legend = legend.margin(60, 0, 0, 0);
        style::draw_legend(&legend, "method", &[])?;
        for (i, (label, color)) in entries.into_iter().enumerate() {
            let y = 42 + 22 * i as i32;
            legend.draw(&PathElement::new(vec![(4, y), (34, y)], color.stroke_width(2))).map_err(err)?;
            draw_marker(&legend, i, (19, y), color)?;
            legend.draw(&Text::new(label, (42, y - 8), (FONT, 15).into_font())).map_err(err)?;
        }
        Ok(())
    }
}
