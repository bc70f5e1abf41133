//! Solve time and proved gap over the grid of shipped configs, five budgets each (from the
//! floor to the all-on-GPU peak, capped at the card's memory), on one hardware profile, of the
//! step `plan` makes by default (clipped at the global norm, GPT-3's setup) or, with `unclipped`,
//! of the step without clipping:
//! `cargo run --release -p planner --example solve_grid [-- PROFILE [unclipped]]`. Prints a
//! markdown table; each plan's `how` says how many solves it took.

use models::{Bytes, GptConfig, HardwareProfile, Program};
use planner::{feasible_floor, finish, plan, Decisions, SolveOptions};
use std::path::Path;
use std::time::Instant;

const CONFIGS: [&str; 10] =
    ["gpt2-124m", "gpt2-350m", "gpt2-774m", "gpt2-1.5b", "gpt3-125m", "gpt3-1.3b", "gpt3-2.7b", "gpt3-6.7b", "gpt3-13b", "gpt3-175b"];

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let profile = std::env::args().nth(1).unwrap_or_else(|| "h100-sxm".into());
    let clipping = match std::env::args().nth(2).as_deref() {
        Some("unclipped") => models::program::Clipping::Off,
        _ => models::program::Clipping::GlobalNorm,
    };
    let hw = HardwareProfile::load(&root.join(format!("models/hardware/{profile}.ron"))).unwrap();
    let opts = SolveOptions::new();
    println!("| config | budget | plan (s) | step (ms) | gap | how |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for name in CONFIGS {
        // The two largest pin more than one host of the profile's: planned as with
        // `--host-memory 4TiB`, as the golden plans are.
        let mut hw = hw.clone();
        if matches!(name, "gpt3-13b" | "gpt3-175b") {
            hw.host_pinnable = Some(Bytes::gib(4096.0));
            hw.host_memory = Some(Bytes::gib(4096.0));
        }
        let hw = &hw;
        let cfg = GptConfig::load(&root.join(format!("models/configs/{name}.ron"))).unwrap();
        let program = Program::build_with(&cfg, clipping);
        let floor = feasible_floor(&program, hw);
        let keep = finish(&program, hw, Bytes::UNLIMITED, &Decisions::all_gpu(&program), None).unwrap();
        let top = keep.schedule.prediction.peak_device().min(hw.memory);
        for i in 0..5 {
            // Budgets at 10%, 30%, 50%, 70%, 90% of the way, rounded to 0.25 GiB.
            let f = 0.1 + 0.2 * i as f64;
            let b = floor.as_f64() + f * (top.as_f64() - floor.as_f64());
            let budget = Bytes::gib(((b / (1u64 << 30) as f64) * 4.0).ceil() / 4.0);
            let t = Instant::now();
            match plan(&program, hw, budget, &opts) {
                Ok(p) => {
                    let secs = t.elapsed().as_secs_f64();
                    let r = p.schedule.prediction.solver.clone();
                    let (gap, how) = r
                        .map(|r| (r.gap_label(), format!("{}; {}", r.status.label(), r.solver.rsplit("bound: ").next().unwrap_or(""))))
                        .unwrap_or_default();
                    println!(
                        "| {name} | {budget} | {secs:.2} | {:.2} | {gap} | {how} | {} |",
                        p.schedule.prediction.step_time.0 * 1e3,
                        p.schedule.prediction.pinned_host
                    );
                }
                Err(e) => println!("| {name} | {budget} | {:.2} | - | - | {e} |", t.elapsed().as_secs_f64()),
            }
        }
    }
}
