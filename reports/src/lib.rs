//! Reports: the pictures and tables of a plan (memory, timeline, placement, summary), of a
//! budget sweep and of a run (measured memory, loss). Each chart's data comes from a plain
//! function or struct (`memory_series`, `timeline_lanes`, `placement_rows`, `sweep_series`,
//! `LossChart::of_record`) so tests check numbers, not pixels.
//! Every file is written atomically (`models::io::write_atomic`).

pub mod calibration;
pub mod error;
pub mod loss;
pub mod measured;
pub mod memory;
pub mod placement;
pub mod record;
pub mod style;
pub mod summary;
pub mod sweep;
pub mod timeline;

pub use calibration::{report_markdown, Case};
pub use error::ReportError;
pub use loss::{write_loss_chart, LossChart};
pub use memory::{memory_series, MemoryChart};
pub use placement::{placement_rows, PlacementChart};
pub use summary::summary_markdown;
pub use sweep::{sweep_csv, sweep_series, SweepChart, SweepPoint};
pub use timeline::{timeline_lanes, TimelineChart};

use models::figures::PlanFigures;
use models::program::Program;
use models::schedule::Schedule;
use models::trace::Trace;
use std::path::{Path, PathBuf};
use style::Chart;

fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf, ReportError> {
    models::io::write_atomic(path, bytes).map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })?;
    Ok(path.to_path_buf())
}

fn create_dir(dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Io { path: dir.to_path_buf(), source: e })
}

fn svg(dir: &Path, name: &str, chart: &impl Chart) -> Result<PathBuf, ReportError> {
    let path = dir.join(name);
    let text = style::render_svg(chart).map_err(|e| ReportError::draw(&path, e))?;
    write(&path, text.as_bytes())
}

fn png(dir: &Path, name: &str, chart: &impl Chart) -> Result<PathBuf, ReportError> {
    let path = dir.join(name);
    let bytes = style::render_png(chart).map_err(|e| ReportError::draw(&path, e))?;
    write(&path, &bytes)
}

/// Writes `memory.svg`, `memory.png`, `timeline.svg`, `placement.svg` and `summary.md` into
/// `dir` (created if missing); returns the paths written. `figures` are the plan's memory and
/// step figures (`planner::Plan::figures`), which every file names as the command does.
pub fn write_plan_pictures(
    dir: &Path,
    program: &Program,
    schedule: &Schedule,
    trace: &Trace,
    figures: &PlanFigures,
) -> Result<Vec<PathBuf>, ReportError> {
    if trace.memory.is_empty() {
        return Err(ReportError::Empty { path: dir.join("memory.svg"), message: "the trace has no memory samples".into() });
    }
    create_dir(dir)?;
    let memory = MemoryChart::new(schedule, trace, &figures.memory);
    Ok(vec![
        svg(dir, "memory.svg", &memory)?,
        png(dir, "memory.png", &memory)?,
        svg(dir, "timeline.svg", &TimelineChart::new(schedule, trace, &figures.step))?,
        svg(dir, "placement.svg", &PlacementChart::new(program, schedule, trace))?,
        write(&dir.join("summary.md"), summary_markdown(program, schedule, trace, figures).as_bytes())?,
    ])
}

/// Writes `sweep.svg`, `sweep.png` and `sweep.csv` into `dir` (created if missing); returns the
/// paths.
pub fn write_sweep(dir: &Path, title: &str, points: &[SweepPoint]) -> Result<Vec<PathBuf>, ReportError> {
    if points.is_empty() {
        return Err(ReportError::Empty { path: dir.join("sweep.svg"), message: "no budgets were swept".into() });
    }
    create_dir(dir)?;
    let chart = SweepChart::new(title.to_string(), points);
    Ok(vec![svg(dir, "sweep.svg", &chart)?, png(dir, "sweep.png", &chart)?, write(&dir.join("sweep.csv"), sweep_csv(points).as_bytes())?])
}

/// Writes `report.md`, `peak.svg`, `peak.png`, `step.svg` and `step.png` into `dir` (created if
/// missing) for `cases` (worst first: the table's row numbers label the charts' points);
/// returns the paths.
pub fn write_calibration(dir: &Path, cases: &[Case], loss_pairs: usize, loss_issues: &[String]) -> Result<Vec<PathBuf>, ReportError> {
    if cases.is_empty() {
        return Err(ReportError::Empty { path: dir.join("report.md"), message: "no records".into() });
    }
    create_dir(dir)?;
    let peak = calibration::peak_chart(cases);
    let step = calibration::step_chart(cases);
    Ok(vec![
        write(&dir.join("report.md"), report_markdown(cases, loss_pairs, loss_issues).as_bytes())?,
        svg(dir, "peak.svg", &peak)?,
        png(dir, "peak.png", &peak)?,
        svg(dir, "step.svg", &step)?,
        png(dir, "step.png", &step)?,
    ])
}
