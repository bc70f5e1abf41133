//! plan()'s work outside the solver against the number of layers: the stage model with its
//! routes and the feasible floor (`feasible_floor`), and one plan emitted, simulated and laid
//! out (`finish`, here of the all-on-GPU decisions), for a gpt3-2.7b shape of 32, 64, 128 and
//! 256 layers on the H100 profile. Linear work doubles with each step of the table.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use models::{Bytes, GptConfig, HardwareProfile, Program};
use planner::{feasible_floor, finish, Decisions};
use std::path::Path;

fn program(layers: u32) -> (Program, HardwareProfile) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = GptConfig::load(&root.join("models/configs/gpt3-2.7b.ron")).unwrap();
    let hw = HardwareProfile::load(&root.join("models/hardware/h100-sxm.ron")).unwrap();
    let cfg = GptConfig { layers, name: format!("gpt3-2.7b-{layers}-layers"), ..cfg };
    (Program::build_with(&cfg, models::program::Clipping::GlobalNorm), hw)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("outside_the_solver");
    g.sample_size(10);
    for layers in [32, 64, 128, 256] {
        let (p, hw) = program(layers);
        g.bench_with_input(BenchmarkId::new("stage model and floor", layers), &layers, |b, _| b.iter(|| feasible_floor(&p, &hw)));
        let all_gpu = Decisions::all_gpu(&p);
        g.bench_with_input(BenchmarkId::new("emit, simulate, lay out", layers), &layers, |b, _| {
            b.iter(|| finish(&p, &hw, Bytes::UNLIMITED, &all_gpu, None).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
