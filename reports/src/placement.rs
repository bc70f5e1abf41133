//! `placement.svg`: the placeable blocks as rows over the step, coloured by where each block is
//! (GPU, host, in flight, dropped for recomputation).

use crate::style::{self, err, row_label, Chart, Mark, FONT};
use models::inventory::BlockId;
use models::program::Program;
use models::schedule::Schedule;
use models::trace::{BlockState, Trace};
use plotters::coord::Shift;
use plotters::prelude::*;

#[derive(Clone, Debug, PartialEq)]
pub struct PlacementRow {
    pub block: BlockId,
    pub name: String,
    /// (start ms, end ms, state), in time order.
    pub spans: Vec<(f64, f64, BlockState)>,
}

/// One row per placeable block, in inventory order, with the residency spans the trace has for it.
pub fn placement_rows(program: &Program, trace: &Trace) -> Vec<PlacementRow> {
    program
        .inventory
        .blocks
        .iter()
        .filter(|b| b.kind.placeable())
        .map(|b| {
            let mut spans: Vec<(f64, f64, BlockState)> =
                trace.blocks.iter().filter(|s| s.block == b.id).map(|s| (s.start.ms(), s.end.ms(), s.state)).collect();
            spans.sort_by(|x, y| x.0.total_cmp(&y.0));
            PlacementRow { block: b.id, name: b.name(), spans }
        })
        .collect()
}

/// Milliseconds each state covers, summed over rows: (state, ms).
pub fn state_totals(rows: &[PlacementRow]) -> Vec<(BlockState, f64)> {
    [BlockState::Gpu, BlockState::Host, BlockState::InFlight, BlockState::Recomputed]
        .iter()
        .map(|s| (*s, rows.iter().flat_map(|r| &r.spans).filter(|x| x.2 == *s).map(|x| x.1 - x.0).sum()))
        .collect()
}

pub struct PlacementChart {
    pub title: String,
    pub rows: Vec<PlacementRow>,
    pub step_ms: f64,
}

impl PlacementChart {
    pub fn new(program: &Program, schedule: &Schedule, trace: &Trace) -> PlacementChart {
        PlacementChart {
            title: format!(
                "{} on {}: where each block is over one step (budget {})",
                schedule.model.name, schedule.hardware, schedule.budget
            ),
            rows: placement_rows(program, trace),
            step_ms: trace.step_time.ms(),
        }
    }
}

const ROW_PX: u32 = 13;

impl Chart for PlacementChart {
    fn size(&self) -> (u32, u32) {
        (1500, 130 + ROW_PX * self.rows.len().max(1) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (plot, legend) = root.split_horizontally(1260);
        let n = self.rows.len().max(1);
        let x_max = self.step_ms.max(1e-6);
        let names: Vec<&str> = self.rows.iter().map(|r| r.name.as_str()).collect();
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, (FONT, 20))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(170)
            .build_cartesian_2d(0.0..x_max, -0.5..(n as f64 - 0.5))
            .map_err(err)?;
        // Row i is drawn at y = n - 1 - i so the first block is the top row.
        chart
            .configure_mesh()
            .x_desc("time in the step (ms)")
            .y_desc("block")
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 14))
            .y_label_style((FONT, 10))
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|y: &f64| row_label(&names, *y))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(err)?;
        for (i, row) in self.rows.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            chart
                .draw_series(
                    row.spans.iter().map(|(a, b, s)| Rectangle::new([(*a, y - 0.42), (*b, y + 0.42)], style::state_color(*s).filled())),
                )
                .map_err(err)?;
        }
        let entries: Vec<(String, RGBColor, Mark)> = [BlockState::Gpu, BlockState::Host, BlockState::InFlight, BlockState::Recomputed]
            .iter()
            .map(|s| (style::state_label(*s).to_string(), style::state_color(*s), Mark::Box))
            .collect();
        style::draw_legend(&legend.margin(60, 0, 0, 0), "block is", &entries)
    }
}
