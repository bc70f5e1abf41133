//! End-to-end tests of the `offplan` command: they drive the built executable.

use std::path::{Path, PathBuf};

mod common;
use common::{config, offplan, plan_tiny, scratch_dir, text};

#[test]
fn inspect_prints_the_table() {
    let o = offplan(&["inspect", "--model", &config("gpt2-124m")]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("124,439,808"), "{t}");
    assert!(t.contains("all-on-GPU peak"), "{t}");
}

#[test]
fn inspect_json_is_machine_readable_for_every_shipped_config() {
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/configs")).unwrap() {
        let p = e.unwrap().path();
        let o = offplan(&["inspect", "--model", p.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}: {}", p.display(), text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let params = v["params"].as_u64().unwrap();
        let weights = v["bytes_per_class"][0][1].as_u64().unwrap();
        // bf16 weights: 2 bytes per allocated parameter.
        assert_eq!(weights, 2 * v["allocated_params"].as_u64().unwrap());
        assert!(params > 0 && v["all_gpu_peak_bytes"].as_u64().unwrap() > weights);
    }
}

#[test]
fn inspect_overrides_batch_and_seq() {
    let o = offplan(&["inspect", "--model", &config("gpt3-2.7b"), "--batch", "1", "--seq", "1024", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["batch"], 1);
    assert_eq!(v["seq"], 1024);
    let o = offplan(&["inspect", "--model", &config("gpt3-2.7b"), "--seq", "4096"]);
    assert_eq!(o.status.code(), Some(2), "a flag the config cannot take is bad usage");
    assert!(text(&o).contains("exceeds max_seq"), "{}", text(&o));
}

#[test]
fn bad_config_names_file_line_and_fix() {
    let dir = scratch_dir("badcfg");
    let good = std::fs::read_to_string(config("gpt2-124m")).unwrap();
    let bad = dir.join("bad.ron");
    std::fs::write(&bad, good.replace("heads: 12,", "heads: 12,\n    head_dim: 64,")).unwrap();
    let o = offplan(&["inspect", "--model", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("bad.ron:") && t.contains("head_dim"), "{t}");

    std::fs::write(&bad, good.replace("heads: 12,", "heads: 10,")).unwrap();
    let t = text(&offplan(&["inspect", "--model", bad.to_str().unwrap()]));
    assert!(t.contains("not divisible by heads"), "{t}");

    let o = offplan(&["inspect", "--model", "models/configs/no-such.ron"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no-such.ron"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_usage_exits_2() {
    let o = offplan(&["inspect"]);
    assert_eq!(o.status.code(), Some(2));
}

// ---- offplan simulate

/// The module-queue schedule of gpt2-tiny on the H100 profile, written to a scratch folder.
fn tiny_schedule(dir: &Path, edit: impl FnOnce(&mut models::Schedule)) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = models::GptConfig::load(&root.join(config("gpt2-tiny"))).unwrap();
    let hw = models::HardwareProfile::load(&root.join("models/hardware/h100-sxm.ron")).unwrap();
    let program = models::Program::build(&cfg);
    let mut s = planner::heuristic_schedule(planner::Heuristic::ModuleQueue, &program, &hw, models::Bytes::gib(80.0)).unwrap();
    edit(&mut s);
    let path = dir.join("schedule.ron");
    s.save(&path).unwrap();
    path
}

#[test]
fn simulate_prints_the_step_and_agrees_with_the_schedule() {
    let dir = scratch_dir("simulate");
    let path = tiny_schedule(&dir, |_| {});
    let o = offplan(&["simulate", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for want in [
        "step time",
        "live peak",
        "arena",
        "device",
        "headroom",
        "host memory",
        "waiting on host",
        "host -> device",
        "transfer exposed",
        "holds under any timing",
    ] {
        assert!(t.contains(want), "{want}: {t}");
    }
    let o = offplan(&["simulate", path.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = models::Schedule::load(&path).unwrap();
    assert_eq!(v["peak_allocated_bytes"].as_u64().unwrap(), s.prediction.peak_allocated.0);
    assert!((v["step_time_s"].as_f64().unwrap() - s.prediction.step_time.0).abs() <= 1e-12);
    assert!(v["h2d_bytes"].as_u64().unwrap() > 0, "the module queue streams weights");
    assert_eq!(v["budget_holds"], true);
}

#[test]
fn simulate_reports_a_budget_that_does_not_hold() {
    let dir = scratch_dir("simulate-budget");
    let path = tiny_schedule(&dir, |s| s.budget = models::Bytes::mib(100.0));
    let o = offplan(&["simulate", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("DOES NOT HOLD") && t.contains("over its budget 100 MiB"), "{t}");
}

#[test]
fn simulate_refuses_another_program_and_a_broken_schedule() {
    let dir = scratch_dir("simulate-bad");
    let path = tiny_schedule(&dir, |s| s.model.batch += 1);
    let o = offplan(&["simulate", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("re-plan"), "{}", text(&o));
    // Drop the first wait on the compute lane (and save it with a fresh checksum): the actions
    // are no longer those its decisions make, and the file is refused before it runs.
    let path = tiny_schedule(&dir, |s| {
        let i = s.actions.iter().position(|a| matches!(a, models::Action::Wait(_, models::Lane::Compute))).unwrap();
        s.actions.remove(i);
    });
    let o = offplan(&["simulate", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("not the ones its decisions make"), "{t}");
}

#[test]
fn plan_writes_schedule_pictures_and_summary() {
    let dir = scratch_dir("plan");
    let out = dir.join("out");
    let o = plan_tiny("1GiB", &out);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["schedule.ron", "memory.svg", "memory.png", "timeline.svg", "placement.svg", "summary.md"] {
        let p = out.join(f);
        assert!(p.metadata().map(|m| m.len() > 0).unwrap_or(false), "{f} missing");
    }
    let schedule = models::Schedule::load(&out.join("schedule.ron")).unwrap();
    assert!(schedule.prediction.peak_device() <= schedule.budget);
    // The simulator agrees with what plan wrote.
    let o = offplan(&["simulate", out.join("schedule.ron").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn plan_below_the_floor_exits_3_and_writes_nothing() {
    let dir = scratch_dir("floor");
    let out = dir.join("out");
    let o = plan_tiny("100MiB", &out);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("floor"), "{}", text(&o));
    assert!(!out.join("schedule.ron").exists());
    let o = plan_tiny("lots", &out);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("not a size"), "{}", text(&o));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_without_a_gpu_says_so_and_exits_4() {
    let dir = scratch_dir("run");
    let out = dir.join("out");
    let o = offplan(&["run", "--model", &config("gpt2-tiny"), "--steps", "1", "--out", out.to_str().unwrap()]);
    let t = text(&o);
    if !t.contains("no CUDA device") {
        eprintln!("skipped: a CUDA device is present, this test checks the no-GPU path");
        return;
    }
    assert_eq!(o.status.code(), Some(4), "{t}");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(), "nothing written");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A reader that closes the pipe before the output is written (`offplan ... | head`): the
/// command stops quietly, success and no panic.
#[test]
fn a_closed_stdout_stops_quietly() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_offplan"))
        .args(["inspect", "--model", &config("gpt2-124m")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("panicked"), "{:?}: {err}", o.status);
}
