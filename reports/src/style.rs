//! Colours, fonts and the two outputs (SVG text, PNG bytes) every chart shares.

use models::inventory::MemoryCategory;
use models::trace::{BlockState, SpanKind};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::sync::OnceLock;

/// The font family every chart asks for; registered from embedded DejaVu Sans so that PNG text
/// renders on a machine with no system fonts (FACTS.md, "Plots on a fresh machine").
pub const FONT: &str = "sans-serif";

/// Registers the embedded fonts once per process. Both backends need it: plotters lays text out
/// (label areas, legends) with the registered font even when the SVG viewer draws the glyphs.
pub fn register_fonts() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // The bytes are DejaVu's own TTFs; a failure here is a broken build, not user input.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

pub const BUDGET: RGBColor = RGBColor(200, 30, 30);
pub const PEAK: RGBColor = RGBColor(0, 0, 0);
/// The device figure's line on the memory chart.
pub const DEVICE: RGBColor = RGBColor(90, 60, 160);
pub const FIXED_OVERHEAD: RGBColor = RGBColor(150, 150, 150);

/// One colour per memory category (colour-blind-friendly Tableau-like palette).
pub fn category_color(c: MemoryCategory) -> RGBColor {
    match c {
        MemoryCategory::Weights => RGBColor(31, 119, 180),
        MemoryCategory::Grads => RGBColor(255, 127, 14),
        MemoryCategory::OptimizerState => RGBColor(44, 160, 44),
        MemoryCategory::Activations => RGBColor(214, 39, 40),
        MemoryCategory::OutputChunks => RGBColor(148, 103, 189),
        MemoryCategory::Embedding => RGBColor(140, 86, 75),
        MemoryCategory::Scratch => RGBColor(227, 119, 194),
        MemoryCategory::Workspace => RGBColor(188, 189, 34),
    }
}

pub fn span_color(k: SpanKind) -> RGBColor {
    match k {
        SpanKind::Op => RGBColor(31, 119, 180),
        SpanKind::Recompute => RGBColor(255, 127, 14),
        SpanKind::HostOp => RGBColor(140, 86, 75),
        SpanKind::Prefetch => RGBColor(44, 160, 44),
        SpanKind::Evict => RGBColor(148, 103, 189),
        SpanKind::Wait => RGBColor(214, 39, 40),
        SpanKind::Issue => RGBColor(255, 187, 120),
    }
}

pub fn span_label(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Op => "op",
        SpanKind::Recompute => "recompute",
        SpanKind::HostOp => "host op",
        SpanKind::Prefetch => "prefetch (H2D)",
        SpanKind::Evict => "evict (D2H)",
        SpanKind::Wait => "compute waits (exposed)",
        SpanKind::Issue => "waits on the host's launches",
    }
}

/// A copy or host lane waiting on another lane's event: idle, not exposed time.
pub const IDLE_WAIT: RGBColor = RGBColor(215, 215, 215);
pub const IDLE_WAIT_LABEL: &str = "copy/host lane waits";

pub fn state_color(s: BlockState) -> RGBColor {
    match s {
        BlockState::Gpu => RGBColor(31, 119, 180),
        BlockState::Host => RGBColor(200, 200, 200),
        BlockState::InFlight => RGBColor(255, 187, 120),
        BlockState::Recomputed => RGBColor(214, 39, 40),
    }
}

pub fn state_label(s: BlockState) -> &'static str {
    match s {
        BlockState::Gpu => "on GPU",
        BlockState::Host => "on host",
        BlockState::InFlight => "in flight",
        BlockState::Recomputed => "dropped / recomputed",
    }
}

/// A chart that can draw itself on any plotters backend.
pub trait Chart {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Renders a chart as SVG text.
pub fn render_svg(chart: &impl Chart) -> Result<String, String> {
    register_fonts();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, chart.size()).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        chart.draw(&root)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Renders a chart as PNG bytes (RGB, 8 bits).
pub fn render_png(chart: &impl Chart) -> Result<Vec<u8>, String> {
    register_fonts();
    let (w, h) = chart.size();
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        chart.draw(&root)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
    }
    Ok(png_bytes)
}

/// Axes of a chart over one step: time in the step (ms) across, `y_desc` up, both from 0, with
/// the charts' shared caption, margins, fonts and light grid.
pub fn step_axes<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    x_max: f64,
    y_max: f64,
    y_desc: &str,
) -> Result<ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>, String> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time in the step (ms)")
        .y_desc(y_desc)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// The step function through `ys` at the sample times of `pts`, each value held to the next
/// sample and the last to `end`.
pub(crate) fn step_function(pts: &[(f64, f64)], ys: &[f64], end: f64) -> Vec<(f64, f64)> {
    let mut v = Vec::with_capacity(2 * pts.len());
    for (i, (t, _)) in pts.iter().enumerate() {
        let next = pts.get(i + 1).map_or(end.max(*t), |p| p.0);
        v.push((*t, ys[i]));
        v.push((next, ys[i]));
    }
    v
}

/// Maps any plotters error to text.
/// The label of the row drawn at height `y` in a chart whose rows are listed top first (row i
/// sits at y = n - 1 - i); empty between rows and outside them.
pub(crate) fn row_label<S: AsRef<str>>(names: &[S], y: f64) -> String {
    let r = y.round();
    let n = names.len();
    if (y - r).abs() < 1e-6 && r >= 0.0 && (r as usize) < n {
        names[n - 1 - r as usize].as_ref().to_string()
    } else {
        String::new()
    }
}

pub(crate) fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// How a legend entry is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Box,
    Line,
    Dot,
    /// Text only: a figure beside the marked entries.
    Text,
}

/// Draws a legend as a column of entries in its own area (beside the plot, never over data).
pub fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    entries: &[(String, RGBColor, Mark)],
) -> Result<(), String> {
    let font = (FONT, 15).into_font();
    area.draw(&Text::new(title.to_string(), (8, 14), (FONT, 16).into_font().style(FontStyle::Bold))).map_err(err)?;
    for (i, (label, color, mark)) in entries.iter().enumerate() {
        let y = 42 + 22 * i as i32;
        match mark {
            Mark::Box => area.draw(&Rectangle::new([(8, y - 7), (24, y + 7)], color.filled())),
            Mark::Line => area.draw(&PathElement::new(vec![(6, y), (26, y)], color.stroke_width(3))),
            Mark::Dot => area.draw(&Circle::new((16, y), 5, color.filled())),
            Mark::Text => Ok(()),
        }
        .map_err(err)?;
        area.draw(&Text::new(label.clone(), (32, y - 8), font.clone())).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn row_labels_count_from_the_top() {
        let names = ["a", "b", "c"];
        assert_eq!(super::row_label(&names, 2.0), "a");
        assert_eq!(super::row_label(&names, 0.0), "c");
        assert_eq!(super::row_label(&names, 0.5), "");
        assert_eq!(super::row_label(&names, 3.0), "");
        assert_eq!(super::row_label(&names, -1.0), "");
    }
}
