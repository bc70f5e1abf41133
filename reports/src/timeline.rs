//! `timeline.svg`: the compute lane, both copy lanes and the host as rows over time; spans
//! coloured by kind, op names where they fit, and the compute lane's waits in their own colour so
//! exposed transfer time shows; the title breaks the step down (`models::figures`).

use crate::style::{self, err, row_label, Chart, Mark, FONT};
use models::figures::StepBreakdown;
use models::schedule::{Lane, Schedule};
use models::trace::{SpanKind, Trace};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One span in plot units.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub start_ms: f64,
    pub end_ms: f64,
    pub kind: SpanKind,
    pub label: String,
}

/// Every lane (in `Lane::ALL` order, empty lanes included) with its spans in time order.
pub fn timeline_lanes(trace: &Trace) -> Vec<(Lane, Vec<Bar>)> {
    Lane::ALL
        .iter()
        .map(|lane| {
            let mut bars: Vec<Bar> = trace
                .spans
                .iter()
                .filter(|s| s.lane == *lane)
                .map(|s| Bar { start_ms: s.start.ms(), end_ms: s.end.ms(), kind: s.kind, label: s.label.clone() })
                .collect();
            bars.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
            (*lane, bars)
        })
        .collect()
}

/// Milliseconds a lane spent on spans of one kind.
pub fn lane_time_ms(trace: &Trace, lane: Lane, kind: SpanKind) -> f64 {
    trace.spans.iter().filter(|s| s.lane == lane && s.kind == kind).map(|s| (s.end - s.start).ms()).sum()
}

pub struct TimelineChart {
    pub title: String,
    pub lanes: Vec<(Lane, Vec<Bar>)>,
    pub step_ms: f64,
}

impl TimelineChart {
    /// The chart of `trace`, its title the step's parts as every output names them (`step`).
    pub fn new(schedule: &Schedule, trace: &Trace, step: &StepBreakdown) -> TimelineChart {
        TimelineChart {
            title: format!("{} on {}: lanes over one step; {}", schedule.model.name, schedule.hardware, step.one_line()),
            lanes: timeline_lanes(trace),
            step_ms: trace.step_time.ms(),
        }
    }
}

const PLOT_W: u32 = 1900;

impl Chart for TimelineChart {
    fn size(&self) -> (u32, u32) {
        (PLOT_W + 220, 460)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (plot, legend) = root.split_horizontally(PLOT_W);
        let n = self.lanes.len();
        let x_max = self.step_ms.max(1e-6);
        // Lane i is drawn at y = n - 1 - i so the compute lane is the top row.
        let names: Vec<&'static str> = self.lanes.iter().map(|(l, _)| l.label()).collect();
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, (FONT, 20))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..x_max, -0.5..(n as f64 - 0.5))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time in the step (ms)")
            .y_desc("lane")
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 14))
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|y: &f64| row_label(&names, *y))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        let px_per_ms = (PLOT_W as f64 - 120.0) / x_max;
        for (i, (lane, bars)) in self.lanes.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            // Only the compute lane's waits cost step time; other lanes waiting are just idle.
            let color = |k: SpanKind| if k == SpanKind::Wait && *lane != Lane::Compute { style::IDLE_WAIT } else { style::span_color(k) };
            chart
                .draw_series(bars.iter().map(|b| {
                    // Waits are thinner so work on the same lane stays readable beside them.
                    let h = if b.kind == SpanKind::Wait { 0.18 } else { 0.34 };
                    Rectangle::new([(b.start_ms, y - h), (b.end_ms, y + h)], color(b.kind).filled())
                }))
                .map_err(err)?;
            chart
                .draw_series(
                    bars.iter().map(|b| Rectangle::new([(b.start_ms, y - 0.34), (b.end_ms, y + 0.34)], WHITE.mix(0.6).stroke_width(1))),
                )
                .map_err(err)?;
            // An op name goes inside its span when it fits (about 7 px per character at 12 px).
            let fits =
                bars.iter().filter(|b| b.kind != SpanKind::Wait && (b.end_ms - b.start_ms) * px_per_ms > 7.0 * b.label.len() as f64 + 6.0);
            chart
                .draw_series(fits.map(|b| {
                    Text::new(b.label.clone(), (b.start_ms, y + 0.1), (FONT, 12).into_font().color(&WHITE).transform(FontTransform::None))
                }))
                .map_err(err)?;
        }
        let kinds = [SpanKind::Op, SpanKind::Recompute, SpanKind::HostOp, SpanKind::Prefetch, SpanKind::Evict, SpanKind::Wait];
        let mut entries: Vec<(String, RGBColor, Mark)> =
            kinds.iter().map(|k| (style::span_label(*k).to_string(), style::span_color(*k), Mark::Box)).collect();
        entries.push((style::IDLE_WAIT_LABEL.to_string(), style::IDLE_WAIT, Mark::Box));
        style::draw_legend(&legend.margin(60, 0, 0, 0), "span kind", &entries)
    }
}
