//! Solve time of the planner's MILP (stage model, HiGHS) on gpt3-2.7b (32 layers, batch 2 x
//! 2048, 24 GiB) and gpt3-175b (96 layers, batch 1 x 2048, 76 GiB) on the H100 profile, gap 1%.
//! Prints each solve's gap and bound once before timing.

use criterion::{criterion_group, criterion_main, Criterion};
use models::{Bytes, GptConfig, HardwareProfile, Program};
use planner::{plan, SolveOptions};
use std::path::Path;

fn load(name: &str) -> (Program, HardwareProfile) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = GptConfig::load(&root.join(format!("models/configs/{name}.ron"))).unwrap();
    let hw = HardwareProfile::load(&root.join("models/hardware/h100-sxm.ron")).unwrap();
    (Program::build(&cfg), hw)
}

fn bench(c: &mut Criterion) {
    let opts = SolveOptions::new().with_gap(0.01).unwrap();
    let mut g = c.benchmark_group("solve");
    g.sample_size(10);
    for (name, budget) in [("gpt3-2.7b", 24.0), ("gpt3-175b", 76.0)] {
        let (p, hw) = load(name);
        let budget = Bytes::gib(budget);
        let once = plan(&p, &hw, budget, &opts).unwrap();
        let r = once.schedule.prediction.solver.clone().unwrap();
        eprintln!(
            "{name} @ {budget}: step {} (simulated {}), gap {}, {:.2} s, {}",
            r.objective,
            once.schedule.prediction.step_time,
            r.gap_label(),
            r.solve_seconds,
            r.status.label()
        );
        g.bench_function(name, |b| b.iter(|| plan(&p, &hw, budget, &opts).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
