//! The golden plans: every shipped config at three budgets on the H100 profile, planned with
//! today's code (the default build and options) and held to the decisions and predictions
//! recorded in `golden/plans.ron`. The budgets are ones where the solve is proved within its gap
//! well inside its limits (the solver counts its work instead of timing it, so a plan does not
//! depend on the machine), so the test is deterministic and quick. Work that changes plans on
//! purpose regenerates the file in the same commit and says why:
//! `cargo test --release -p planner --test golden_plans -- --ignored bless`.
//! With the `highs` feature the MILP back end may find other plans where the default build's
//! search stops short of the gap: there each plan's step time is held within the gap of the
//! golden one instead.

use models::{Bytes, GptConfig, HardwareProfile, Placement, Program, Seconds};
use planner::{plan, SolveOptions};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct GoldenPlan {
    config: String,
    budget: Bytes,
    /// Pinned host memory the plan may use where the profile's is too little for any budget
    /// of the card (as `--host-memory`); None: the profile's.
    #[serde(default)]
    host_memory: Option<Bytes>,
    /// Blocks off the GPU ("name placement"); every other placeable block is on the GPU.
    off_gpu: Vec<String>,
    step_time: Seconds,
    peak_allocated: Bytes,
    peak_device: Bytes,
}

const CONFIGS: [&str; 10] =
    ["gpt2-124m", "gpt2-350m", "gpt2-774m", "gpt2-1.5b", "gpt3-125m", "gpt3-1.3b", "gpt3-2.7b", "gpt3-6.7b", "gpt3-13b", "gpt3-175b"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/plans.ron")
}

fn hardware() -> HardwareProfile {
    HardwareProfile::load(&root().join("models/hardware/h100-sxm.ron")).unwrap()
}

fn program(name: &str) -> Program {
    Program::build(&GptConfig::load(&root().join(format!("models/configs/{name}.ron"))).unwrap())
}

fn options() -> SolveOptions {
    SolveOptions::new()
}

/// The profile as a plan with `host_memory` sees it.
fn with_host(hw: &HardwareProfile, host_memory: Option<Bytes>) -> HardwareProfile {
    let mut hw = hw.clone();
    if let Some(h) = host_memory {
        hw.host_pinnable = Some(h);
        hw.host_memory = Some(h);
    }
    hw
}

fn planned(
    name: &str,
    program: &Program,
    hw: &HardwareProfile,
    budget: Bytes,
    host_memory: Option<Bytes>,
) -> Result<(GoldenPlan, bool), String> {
    let p = plan(program, &with_host(hw, host_memory), budget, &options()).map_err(|e| e.to_string())?;
    let s = &p.schedule;
    let by_dual = s.prediction.solver.as_ref().is_some_and(|r| !r.solver.contains("HiGHS"));
    let off_gpu =
        s.decisions.iter().filter(|d| d.placement != Placement::Gpu).map(|d| format!("{} {}", d.name, d.placement.label())).collect();
    Ok((
        GoldenPlan {
            config: name.into(),
            budget,
            host_memory,
            off_gpu,
            step_time: s.prediction.step_time,
            peak_allocated: s.prediction.peak_allocated,
            peak_device: s.prediction.peak_device(),
        },
        by_dual,
    ))
}

#[test]
fn plans_match_the_golden_file() {
    let text = std::fs::read_to_string(golden_path()).expect("golden/plans.ron (bless it: see the module doc)");
    let golden: Vec<GoldenPlan> = ron::from_str(&text).unwrap();
    let hw = hardware();
    for name in CONFIGS {
        assert!(golden.iter().filter(|g| g.config == name).count() >= 3, "{name}: fewer than three golden budgets");
    }
    let mut failures = Vec::new();
    for g in &golden {
        let program = program(&g.config);
        match planned(&g.config, &program, &hw, g.budget, g.host_memory) {
            Ok((now, _)) if now == *g => {}
            Ok((now, _)) if cfg!(feature = "highs") && now.step_time.0 <= g.step_time.0 * (1.0 + options().gap()) => {}
            Ok((now, _)) => failures.push(format!(
                "{} @ {}: step {} (golden {}), device {} (golden {}), off the GPU now but not before: {:?}, before but not now: {:?}",
                g.config,
                g.budget,
                now.step_time,
                g.step_time,
                now.peak_device,
                g.peak_device,
                now.off_gpu.iter().filter(|x| !g.off_gpu.contains(x)).collect::<Vec<_>>(),
                g.off_gpu.iter().filter(|x| !now.off_gpu.contains(x)).collect::<Vec<_>>()
            )),
            Err(e) => failures.push(format!("{} @ {}: {e}", g.config, g.budget)),
        }
    }
    assert!(failures.is_empty(), "plans differ from golden/plans.ron:\n{}", failures.join("\n"));
}

/// Writes golden/plans.ron: for each config, candidate budgets from the floor to the all-on-GPU
/// peak (at most the card's memory); keeps three, spread out, whose plan is the same in two
/// solves, each within a few seconds, preferring those the Lagrangian bound proves alone. A
/// config whose plans need more host memory than the profile's at most budgets (gpt3-13b and
/// gpt3-175b on the H100's 125 GiB host) is planned with 4 TiB, as `--host-memory 4TiB`.
#[test]
#[ignore]
fn bless() {
    let hw = hardware();
    let mut out = Vec::new();
    for name in CONFIGS {
        let program = program(name);
        let floor = planner::feasible_floor(&program, &hw);
        let keep = planner::finish(&program, &hw, Bytes::UNLIMITED, &planner::Decisions::all_gpu(&program), None).unwrap();
        let top = keep.schedule.prediction.peak_device().min(hw.memory);
        let mut stable: Vec<(f64, GoldenPlan, bool)> = Vec::new();
        let fits_host = (1..10).filter(|i| {
            let b = floor.as_f64() + *i as f64 / 10.0 * (top.as_f64() - floor.as_f64());
            planned(name, &program, &hw, Bytes::gib(((b / (1u64 << 30) as f64) * 4.0).round() / 4.0), None).is_ok()
        });
        let host_memory = if fits_host.count() >= 5 { None } else { Some(Bytes::gib(4096.0)) };
        for i in 1..10 {
            let f = i as f64 / 10.0;
            let b = floor.as_f64() + f * (top.as_f64() - floor.as_f64());
            let budget = Bytes::gib(((b / (1u64 << 30) as f64) * 4.0).round() / 4.0);
            if stable.iter().any(|s| s.1.budget == budget) {
                continue;
            }
            let t = std::time::Instant::now();
            let Ok((first, dual)) = planned(name, &program, &hw, budget, host_memory) else { continue };
            if t.elapsed().as_secs_f64() > 2.0 {
                continue;
            }
            let same = planned(name, &program, &hw, budget, host_memory).is_ok_and(|(p, _)| p == first);
            eprintln!(
                "{name} @ {budget}: {:.2} s, {}, {}",
                t.elapsed().as_secs_f64(),
                if dual { "dual" } else { "HiGHS" },
                if same { "stable" } else { "UNSTABLE" }
            );
            if same {
                stable.push((f, first, dual));
            }
        }
        // Three spread over the range, dual-proved first.
        stable.sort_by_key(|s| !s.2);
        let mut picked: Vec<(f64, GoldenPlan, bool)> = Vec::new();
        for band in [0.0..0.34, 0.34..0.67, 0.67..1.0] {
            if let Some(s) = stable.iter().find(|s| band.contains(&s.0) && !picked.iter().any(|p| p.1.budget == s.1.budget)) {
                picked.push(s.clone());
            }
        }
        for s in &stable {
            if picked.len() >= 3 {
                break;
            }
            if !picked.iter().any(|p| p.1.budget == s.1.budget) {
                picked.push(s.clone());
            }
        }
        assert!(picked.len() >= 3, "{name}: only {} stable budgets", picked.len());
        picked.sort_by_key(|a| a.1.budget);
        out.extend(picked.into_iter().map(|p| p.1));
    }
    let text = ron::ser::to_string_pretty(&out, ron::ser::PrettyConfig::default()).unwrap();
    std::fs::write(golden_path(), text).unwrap();
}
