//! Golden tests of the numbers behind each chart, and checks that the files are valid SVG / PNG
//! with their axis labels and legends.

mod common;

use models::inventory::BlockKind;
use models::schedule::{Lane, Placement};
use models::trace::{BlockState, SpanKind};
use models::units::{Bytes, Seconds, GIB};
use reports::summary::{decision_groups, ranges};
use reports::*;

const EPS: f64 = 1e-9;

#[test]
fn memory_series_sum_to_the_trace_totals_at_every_sample() {
    let f = common::fixture();
    let series = memory_series(&f.trace);
    assert!(series.len() >= 5, "weights, grads, optimizer, activations, chunks, ... : {}", series.len());
    for (i, s) in f.trace.memory.iter().enumerate() {
        let sum: f64 = series.iter().map(|(_, pts)| pts[i].1).sum();
        assert!((sum - s.total().0 as f64 / GIB as f64).abs() < EPS, "sample {i}");
        for (_, pts) in &series {
            assert_eq!(pts[i].0, s.time.ms());
        }
    }
    // Golden: at the first sample only the persistent tensors are live, so the weights band is
    // exactly the layers' and final norm's bf16 weights.
    let inv = &f.program.inventory;
    let weights: Bytes =
        inv.tensors.iter().filter(|t| t.persistent && t.category == models::MemoryCategory::Weights).map(|t| t.bytes).sum();
    let w = series.iter().find(|(c, _)| *c == models::MemoryCategory::Weights).unwrap();
    assert!((w.1[0].1 - weights.0 as f64 / GIB as f64).abs() < EPS);
    // Categories never live are left out of the legend.
    assert!(series.iter().all(|(_, pts)| pts.iter().any(|p| p.1 > 0.0)));
}

#[test]
fn memory_chart_peak_marker_is_the_trace_peak_and_the_top_of_the_stack() {
    let f = common::fixture();
    let chart = MemoryChart::new(&f.schedule, &f.trace, &f.figures.memory);
    let fixed = f.schedule.prediction.fixed_overhead;
    assert_eq!(chart.bands[0].label, "fixed overhead");
    assert!(chart.bands[0].points.iter().all(|p| (p.1 - fixed.0 as f64 / GIB as f64).abs() < EPS));
    let want = (f.trace.peak_allocated + fixed).0 as f64 / GIB as f64;
    assert_eq!(chart.peak.0, f.trace.peak_time.ms());
    assert!((chart.peak.1 - want).abs() < EPS);
    let top = chart.totals().iter().map(|p| p.1).fold(0.0, f64::max);
    assert!((top - want).abs() < 1e-6, "stack top {top} vs peak {want}");
    assert!((chart.budget_gib - f.schedule.budget.0 as f64 / GIB as f64).abs() < EPS);
    assert!(chart.peak_label.contains(&f.schedule.prediction.peak_at));
    // The figures are the ones every output names.
    let m = &f.figures.memory;
    assert!(chart.peak_label.starts_with(&format!("live peak {} ", m.live_peak)), "{}", chart.peak_label);
    assert_eq!(chart.device_label, format!("device {}", m.device));
    assert!((chart.device_gib - m.device.0 as f64 / GIB as f64).abs() < EPS);
    assert_eq!(chart.figure_labels[0], format!("arena {}", m.arena));
    assert_eq!(chart.figure_labels[1], format!("headroom {}", Bytes(m.headroom() as u64)));
    assert_eq!(chart.figure_labels[2], format!("host memory {} pinned", m.host_memory));
}

#[test]
fn timeline_lanes_hold_every_span_with_waits_on_the_compute_lane() {
    let f = common::fixture();
    let lanes = timeline_lanes(&f.trace);
    assert_eq!(lanes.iter().map(|(l, _)| *l).collect::<Vec<_>>(), Lane::ALL.to_vec());
    assert_eq!(lanes.iter().map(|(_, b)| b.len()).sum::<usize>(), f.trace.spans.len());
    let compute = &lanes[0].1;
    assert_eq!(compute.iter().filter(|b| b.kind == SpanKind::Op).count(), f.program.ops.len());
    for w in compute.windows(2) {
        assert!(w[0].end_ms <= w[1].start_ms + EPS, "compute spans do not overlap");
    }
    let waited = reports::timeline::lane_time_ms(&f.trace, Lane::Compute, SpanKind::Wait);
    assert!((waited - f.schedule.prediction.exposed_transfer.ms()).abs() < EPS);
    let ops: f64 = f.program.ops.iter().map(|o| models::cost::op_time(o, &f.hw).ms()).sum();
    assert!((reports::timeline::lane_time_ms(&f.trace, Lane::Compute, SpanKind::Op) - ops).abs() < 1e-6);
    assert_eq!(lanes[1].1.len(), 1, "one prefetch");
    assert_eq!(lanes[2].1.len(), 1, "one evict");
}

#[test]
fn placement_rows_follow_the_block_spans() {
    let f = common::fixture();
    let rows = placement_rows(&f.program, &f.trace);
    let placeable = f.program.inventory.blocks.iter().filter(|b| b.kind.placeable()).count();
    assert_eq!(rows.len(), placeable);
    let off = f.program.inventory.find_block(BlockKind::LayerActivations(0)).unwrap().id;
    let row = rows.iter().find(|r| r.block == off).unwrap();
    assert_eq!(row.name, "layer0.activations");
    let states: Vec<BlockState> = row.spans.iter().map(|s| s.2).collect();
    assert_eq!(states, [BlockState::Gpu, BlockState::InFlight, BlockState::Host, BlockState::InFlight, BlockState::Gpu]);
    let step = f.trace.step_time.ms();
    for r in &rows {
        let covered: f64 = r.spans.iter().map(|s| s.1 - s.0).sum();
        assert!((covered - step).abs() < 1e-6, "{} covers {covered} of {step} ms", r.name);
    }
    let totals = reports::placement::state_totals(&rows);
    assert!(totals.iter().all(|(_, ms)| *ms > 0.0), "{totals:?}");
}

#[test]
fn summary_groups_decisions_and_states_the_prediction() {
    let f = common::fixture();
    let groups = decision_groups(&f.program, &f.schedule);
    let gpu_weights = groups.iter().find(|g| g.group == "layer weights" && g.placement == Placement::Gpu).unwrap();
    assert_eq!(gpu_weights.indices, vec![0, 1]);
    let off = groups.iter().find(|g| g.group == "layer activations" && g.placement == Placement::Offloaded).unwrap();
    assert_eq!((off.indices.clone(), off.count), (vec![0], 1));
    assert_eq!(groups.iter().map(|g| g.count).sum::<usize>(), f.schedule.decisions.len());
    let md = summary_markdown(&f.program, &f.schedule, &f.trace, &f.figures);
    assert!(md.contains("| layer activations | offloaded | 0 | 1 |"), "{md}");
    assert!(md.contains("| layer activations | recomputed | 1 | 1 |"), "{md}");
    assert!(md.contains("| layer weights | gpu | 0–1 | 2 |"), "{md}");
    let pr = &f.schedule.prediction;
    // Every memory and step figure, as `models::figures` words it.
    for fig in f.figures.memory.figures().iter().chain(&f.figures.step.figures()) {
        assert!(md.contains(&fig.markdown_row()), "{}: {md}", fig.name);
    }
    assert!(md.contains(&format!("| live peak | {} |", pr.peak_allocated)), "{md}");
    assert!(md.contains(&format!("| device | {} |", pr.peak_device())), "{md}");
    assert!(md.contains(&format!("| host memory | {} |", pr.pinned_host)), "{md}");
    assert!(md.contains(&format!("| waiting on H2D | {} |", pr.exposed_transfer)), "{md}");
    assert!(md.contains(&f.schedule.prediction.peak_at));
    assert!(md.contains("transfer exposed"));
    assert!(!md.contains("## Solver"), "no solver section without a solver report");
}

#[test]
fn ranges_compress_indices() {
    assert_eq!(ranges(&[0, 1, 2, 3, 7, 9, 10]), "0–3, 7, 9–10");
    assert_eq!(ranges(&[5]), "5");
    assert_eq!(ranges(&[3, 1, 2]), "1–3");
    assert_eq!(ranges(&[]), "");
}

/// Memory figures of a plan whose device figure is `device`.
fn memory(device: Bytes) -> models::figures::MemoryFigures {
    models::figures::MemoryFigures {
        live_peak: device - Bytes(3 * GIB),
        peak_at: "layer0.fc".into(),
        arena: device - Bytes(2 * GIB),
        laid_out: true,
        fixed_overhead: Bytes(GIB),
        pool_rounding: Bytes::ZERO,
        pinned_mapping: Bytes(GIB),
        device,
        budget: device + Bytes(GIB),
        host_memory: Bytes(512 * GIB),
        host_pinnable: None,
    }
}

fn points() -> Vec<SweepPoint> {
    let p = |m: &str, gib: u64, ms: Option<f64>, note: &str| SweepPoint {
        method: m.into(),
        budget: Bytes(gib * GIB),
        step_time: ms.map(Seconds::from_ms),
        memory: ms.map(|_| memory(Bytes(gib * GIB - GIB))),
        note: note.into(),
    };
    vec![
        p("planner", 20, Some(250.0), ""),
        p("planner", 10, Some(400.0), ""),
        p("keep all", 10, None, "needs 35.4 GiB, budget 10 GiB"),
        p("keep all", 20, None, "needs 35.4 GiB"),
        p("offload first N", 20, Some(300.0), "N = 12"),
        p("offload first N", 10, Some(500.0), "N = 24"),
    ]
}

#[test]
fn sweep_series_omit_infeasible_points_and_sort_by_budget() {
    let s = sweep_series(&points());
    assert_eq!(s.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(), ["planner", "keep all", "offload first N"]);
    assert_eq!(s[0].1, vec![(10.0, 400.0), (20.0, 250.0)]);
    assert!(s[1].1.is_empty());
    assert_eq!(s[2].1, vec![(10.0, 500.0), (20.0, 300.0)]);
}

#[test]
fn sweep_csv_has_one_row_per_point() {
    let csv = sweep_csv(&points());
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[0], reports::sweep::CSV_HEADER);
    assert_eq!(lines[1], "planner,21474836480,20.0000,true,250.0000,17179869184,18253611008,20401094656,19.0000,549755813888,");
    assert_eq!(lines[3], "keep all,10737418240,10.0000,false,,,,,,,\"needs 35.4 GiB, budget 10 GiB\"");
    assert_eq!(
        lines[5],
        "offload first N,21474836480,20.0000,true,300.0000,17179869184,18253611008,20401094656,19.0000,549755813888,N = 12"
    );
    for l in &lines[1..] {
        assert!(l.split(',').count() >= 11, "{l}");
    }
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn plan_pictures_are_valid_files_with_labelled_axes_and_legends() {
    let f = common::fixture();
    // Kept under target/tmp so the pictures can be looked at after the test.
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reports-plan");
    let _ = std::fs::remove_dir_all(&out);
    let files = write_plan_pictures(&out, &f.program, &f.schedule, &f.trace, &f.figures).unwrap();
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["memory.svg", "memory.png", "timeline.svg", "placement.svg", "summary.md"]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 5, "no temporary files left");

    let memory = read(&out.join("memory.svg"));
    assert_eq!(common::check_xml(&memory), Ok("svg".into()));
    for text in [
        "time in the step (ms)",
        "device memory (GiB)",
        "memory class",
        "fixed overhead",
        "weights",
        "optimizer state",
        "activations",
        "budget",
        "live peak",
        "device",
        "arena",
        "headroom",
        "host memory",
    ] {
        assert!(memory.contains(text), "memory.svg lacks {text:?}");
    }
    let timeline = read(&out.join("timeline.svg"));
    assert_eq!(common::check_xml(&timeline), Ok("svg".into()));
    for text in
        ["time in the step (ms)", "compute", "H2D", "D2H", "host", "compute waits (exposed)", "copy/host lane waits", "prefetch (H2D)"]
    {
        assert!(timeline.contains(text), "timeline.svg lacks {text:?}");
    }
    let placement = read(&out.join("placement.svg"));
    assert_eq!(common::check_xml(&placement), Ok("svg".into()));
    for text in [
        "time in the step (ms)",
        "block",
        "layer0.activations",
        "embedding.weights",
        "on GPU",
        "on host",
        "in flight",
        "dropped / recomputed",
    ] {
        assert!(placement.contains(text), "placement.svg lacks {text:?}");
    }
    assert!(read(&out.join("summary.md")).starts_with("# Plan: gpt2-tiny on"));
    // PNG previews of the SVG-only charts, beside them in target/tmp, for people to look at.
    let preview = out.parent().unwrap().join("reports-plan-preview");
    std::fs::create_dir_all(&preview).unwrap();
    let timeline_png = reports::style::render_png(&TimelineChart::new(&f.schedule, &f.trace, &f.figures.step)).unwrap();
    std::fs::write(preview.join("timeline.png"), timeline_png).unwrap();
    let placement_png = reports::style::render_png(&PlacementChart::new(&f.program, &f.schedule, &f.trace)).unwrap();
    std::fs::write(preview.join("placement.png"), placement_png).unwrap();

    // The PNG decodes, has the chart's size, and has text drawn in the legend column (the
    // embedded font works with no system fonts).
    let decoder = png::Decoder::new(std::fs::File::open(out.join("memory.png")).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1400, 720));
    let dark_in_legend = (0..info.height as usize)
        .flat_map(|y| (1160..info.width as usize).map(move |x| (y, x)))
        .filter(|(y, x)| {
            let i = (y * info.width as usize + x) * 3;
            buf[i] < 60 && buf[i + 1] < 60 && buf[i + 2] < 60
        })
        .count();
    assert!(dark_in_legend > 500, "legend text pixels: {dark_in_legend}");
}

#[test]
fn sweep_files_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_sweep(dir.path(), "gpt test sweep", &points()).unwrap();
    assert_eq!(files.len(), 3);
    assert!(std::fs::read(dir.path().join("sweep.png")).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
    let svg = read(&dir.path().join("sweep.svg"));
    assert_eq!(common::check_xml(&svg), Ok("svg".into()));
    for text in ["GPU memory budget (GiB)", "predicted step time (ms)", "planner", "offload first N", "keep all (never feasible)"] {
        assert!(svg.contains(text), "sweep.svg lacks {text:?}");
    }
    assert_eq!(read(&dir.path().join("sweep.csv")), sweep_csv(&points()));
    assert!(write_sweep(dir.path(), "empty", &[]).is_err());
}

#[test]
fn summary_reports_the_solver_when_there_is_one() {
    let mut f = common::fixture();
    f.schedule.prediction.solver = Some(models::schedule::SolverReport {
        solver: "highs".into(),
        objective: Seconds::from_ms(12.5),
        bound: Some(Seconds::from_ms(12.0)),
        gap: Some(0.04),
        solve_seconds: 1.25,
        status: models::schedule::SolveStatus::Proved,
    });
    let md = summary_markdown(&f.program, &f.schedule, &f.trace, &f.figures);
    assert!(md.contains("## Solver"), "{md}");
    assert!(md.contains("| highs | proved within the gap | 12.50 ms | 12.00 ms | 4.00% | 1.25 s |"), "{md}");
}

#[test]
fn a_sweep_of_one_budget_still_draws() {
    let dir = tempfile::tempdir().unwrap();
    let one = vec![points().remove(0)];
    write_sweep(dir.path(), "one budget", &one).unwrap();
    let svg = read(&dir.path().join("sweep.svg"));
    assert_eq!(common::check_xml(&svg), Ok("svg".into()));
    assert!(svg.contains("planner (1 point)"));
}
