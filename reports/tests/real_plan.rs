//! The charts of a real plan: gpt2-tiny planned by the planner and simulated, halfway between
//! the feasible floor and the all-on-GPU peak, so some blocks move off the GPU.

mod common;

use models::trace::BlockState;
use models::units::GIB;
use models::{Bytes, GptConfig, HardwareProfile, Program};
use reports::*;
use std::path::Path;

fn planned(model: &str) -> (Program, planner::Plan, HardwareProfile) {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let cfg = GptConfig::load(&root.join(format!("models/configs/{model}.ron"))).unwrap();
    let hw = HardwareProfile::load(&root.join("models/hardware/h100-sxm.ron")).unwrap();
    let program = Program::build(&cfg);
    let floor = planner::feasible_floor(&program, &hw);
    // What everything on the GPU needs on the device (the pool's rounding included).
    let top = planner::heuristic_schedule(planner::Heuristic::KeepAll, &program, &hw, Bytes::UNLIMITED).unwrap().prediction.peak_device();
    let budget = Bytes(floor.0 + (top.0 - floor.0) / 2);
    let opts = planner::SolveOptions::new().with_time_limit(models::Seconds(20.0)).unwrap();
    let plan = planner::plan(&program, &hw, budget, &opts).unwrap();
    (program, plan, hw)
}

#[test]
fn charts_of_a_real_plan_match_its_trace() {
    let (program, plan, hw) = planned("gpt2-tiny");
    let (s, t) = (&plan.schedule, &plan.trace);
    let figures = plan.figures(&hw);
    let series = memory_series(t);
    for (i, sample) in t.memory.iter().enumerate() {
        let sum: f64 = series.iter().map(|(_, pts)| pts[i].1).sum();
        assert!((sum - sample.total().0 as f64 / GIB as f64).abs() < 1e-9, "sample {i}");
    }
    let chart = MemoryChart::new(s, t, &figures.memory);
    let peak = (t.peak_allocated + s.prediction.fixed_overhead).0 as f64 / GIB as f64;
    assert!((chart.peak.1 - peak).abs() < 1e-9);
    let top = chart.totals().iter().map(|p| p.1).fold(0.0, f64::max);
    assert!((top - peak).abs() < 1e-6, "stack top {top} vs trace peak {peak}");
    assert!(chart.peak.1 <= chart.budget_gib + 1e-9, "the plan fits its budget");
    assert!(chart.device_gib <= chart.budget_gib + 1e-9, "the device figure fits the budget");
    assert_eq!(chart.device_label, format!("device {}", s.prediction.peak_device()));

    let rows = placement_rows(&program, t);
    let off_gpu = rows.iter().filter(|r| r.spans.iter().any(|x| x.2 != BlockState::Gpu)).count();
    assert!(off_gpu > 0, "half-way to the floor some block leaves the GPU");
    let lanes = timeline_lanes(t);
    assert_eq!(lanes.iter().map(|(_, b)| b.len()).sum::<usize>(), t.spans.len());

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reports-real-plan");
    let _ = std::fs::remove_dir_all(&out);
    let files = write_plan_pictures(&out, &program, s, t, &figures).unwrap();
    assert_eq!(files.len(), 5);
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "svg")) {
        assert_eq!(common::check_xml(&std::fs::read_to_string(f).unwrap()), Ok("svg".into()), "{}", f.display());
    }
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("## Solver"), "{md}");
    assert!(md.contains(&s.prediction.peak_at), "{md}");
    let timeline = std::fs::read_to_string(out.join("timeline.svg")).unwrap();
    assert!(timeline.contains(&figures.step.one_line()), "the timeline's title breaks the step down");
}

/// Pictures of a full-size plan for people to look at (target/tmp/reports-gpt3-1.3b); about a
/// minute of solving, so run it on purpose: `cargo test -p reports -- --ignored`.
#[test]
#[ignore]
fn pictures_of_gpt3_1_3b() {
    let (program, plan, hw) = planned("gpt3-1.3b");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reports-gpt3-1.3b");
    let figures = plan.figures(&hw);
    write_plan_pictures(&out, &program, &plan.schedule, &plan.trace, &figures).unwrap();
    let preview = |name: &str, png: Vec<u8>| std::fs::write(out.join(name), png).unwrap();
    preview("timeline-preview.png", reports::style::render_png(&TimelineChart::new(&plan.schedule, &plan.trace, &figures.step)).unwrap());
    preview("placement-preview.png", reports::style::render_png(&PlacementChart::new(&program, &plan.schedule, &plan.trace)).unwrap());
}
