//! `offplan report RECORDS_DIR --out DIR`: every run record re-planned with today's code and
//! compared with what the run measured: `report.md` (one row per record, worst first, with the
//! term of the model that is off) and the `peak` and `step` scatter charts (predicted against
//! measured, with the y = x line).

use anyhow::Context;
use models::{Bytes, HardwareProfile};
use reports::calibration::{loss_mismatches, worst_first, Case, RePlan};
use reports::record::{load_dir, Record};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of run records (`run-*.ron`, as `offplan run --out` writes them).
    #[arg(value_name = "RECORDS_DIR")]
    pub records: PathBuf,
    /// Folder for report.md, peak.svg/png and step.svg/png (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Folder of hardware profiles; a record planned for profile NAME is re-planned with
    /// DIR/NAME.ron.
    #[arg(long, value_name = "DIR", default_value = "models/hardware")]
    pub hardware_dir: PathBuf,
}

/// Plans `record` again with today's code.
pub fn replan(record: &Record, hw: &HardwareProfile) -> Result<RePlan, String> {
    let budget = record.budget_bytes.map_or(Bytes::UNLIMITED, Bytes);
    let (plan, over_budget) = planner::replan_uncapped(&record.program(), hw, budget, &record.decisions).map_err(|e| e.to_string())?;
    Ok(RePlan { prediction: plan.schedule.prediction, trace: plan.trace, over_budget })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let records = load_dir(&args.records)?;
    if records.is_empty() {
        anyhow::bail!(
            "no run records (*.ron) in {}: records are written by `offplan run --out {}` on a GPU; give the folder that holds them (e.g. reports/records)",
            args.records.display(),
            args.records.display()
        );
    }
    let named: Vec<(String, &Record)> =
        records.iter().map(|(p, r)| (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), r)).collect();
    let cases = worst_first(named.iter().map(|(f, r)| Case::of_record(f, r, &args.hardware_dir, &replan)).collect());
    let (pairs, issues) = loss_mismatches(&named);
    let out = models::io::StagedDir::new(&args.out).with_context(|| format!("--out {}: cannot write there", args.out.display()))?;
    reports::write_calibration(out.path(), &cases, pairs, &issues)
        .with_context(|| format!("writing the report into {}", args.out.display()))?;
    let written = out.commit().with_context(|| format!("moving the report into {}", args.out.display()))?;
    let pass = cases.iter().filter(|c| c.passes()).count();
    println!("{} records, {pass} within target; {} loss comparisons, {} disagreeing steps", cases.len(), pairs, issues.len());
    for c in cases.iter().filter(|c| !c.passes()) {
        println!("{}", c.explain());
    }
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(())
}
