//! Host-op throughput: AdamW parameters per second (all cores, and one), and the CPU embedding
//! gather/scatter in bytes per second, counted as `models::program` counts an Embed/EmbedBwd
//! op's bytes (`2*N*C*2` table rows read + `2*N*C` written + `4*N` tokens), so the numbers
//! compare directly with a hardware profile's `host_adam_params_per_second` and
//! `host_memory_bandwidth`.
//!
//! `cargo bench -p executor --bench host` (add `-- --quick` for a short run; set
//! `HOST_BENCH_BIG=0` to skip the 1e8-parameter case, 1.6 GB of memory).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use executor::host::bf16::{bf16, f32_to_bf16};
use executor::host::{adamw_owner, embedding_backward_wpe, embedding_backward_wte, embedding_forward, AdamW, WteScratch};
use models::inventory::View;
use std::time::Duration;

fn pattern(n: usize, scale: f32) -> Vec<bf16> {
    (0..n).map(|i| f32_to_bf16(((i.wrapping_mul(2654435761) % 2001) as f32 / 1000.0 - 1.0) * scale)).collect()
}

fn adamw(c: &mut Criterion) {
    let mut sizes = vec![10_000_000usize];
    if std::env::var("HOST_BENCH_BIG").map(|v| v != "0").unwrap_or(true) {
        sizes.push(100_000_000);
    }
    let mut group = c.benchmark_group("host_adamw");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    let threads = rayon::current_num_threads();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for n in sizes {
        // a layer-like split: one matrix (decayed) and one vector (not)
        let cols = 1000;
        let rows = (n - cols) / cols;
        let views = vec![
            View { name: "w".into(), shape: vec![rows as u64, cols as u64], offset: 0 },
            View { name: "b".into(), shape: vec![(n - rows * cols) as u64], offset: (rows * cols) as u64 },
        ];
        let mut w = pattern(n, 0.1);
        let g = pattern(n, 0.01);
        let mut opt: Vec<f32> = (0..3 * n).map(|i| if i < 2 * n { (i % 7) as f32 * 1e-3 } else { 1e-6 }).collect();
        let h = AdamW { lr: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
        group.throughput(Throughput::Elements(n as u64));
        let mut step = 1u32;
        group.bench_function(BenchmarkId::new(format!("{threads}_threads"), n), |b| {
            b.iter(|| {
                adamw_owner(&mut w, &g, &mut opt, &views, &h, step, 1.0).unwrap();
                step += 1;
            })
        });
        if n <= 10_000_000 {
            group.bench_function(BenchmarkId::new("1_thread", n), |b| {
                b.iter(|| {
                    one.install(|| adamw_owner(&mut w, &g, &mut opt, &views, &h, step, 1.0)).unwrap();
                    step += 1;
                })
            });
        }
    }
    group.finish();
}

fn embedding(c: &mut Criterion) {
    // gpt2-124m: B 8, T 1024, C 768, Vp 50304, max_seq 1024
    let (b, t, ch, vp, max_seq) = (8usize, 1024usize, 768usize, 50304usize, 1024usize);
    let n = b * t;
    let tokens: Vec<i32> = (0..n).map(|i| ((i * 7919 + i * i * 31) % 50257) as i32).collect();
    let wte = pattern(vp * ch, 0.02);
    let wpe = pattern(max_seq * ch, 0.01);
    let dout = pattern(n * ch, 0.001);
    let mut out = vec![bf16::ZERO; n * ch];
    let mut dwte = pattern(vp * ch, 0.0);
    let mut dwpe = vec![bf16::ZERO; max_seq * ch];
    let mut scratch = WteScratch::with_capacity(n);
    let op_bytes = (2 * n * ch * 2 + 2 * n * ch + 4 * n) as u64;

    let mut group = c.benchmark_group("host_embedding_gpt2_124m_B8_T1024");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(op_bytes));
    group.bench_function("forward_gather", |bch| bch.iter(|| embedding_forward(&mut out, &tokens, &wte, 0, vp, &wpe, t, ch).unwrap()));
    group.bench_function("backward_wte_scatter_add", |bch| {
        bch.iter(|| embedding_backward_wte(&mut dwte, &dout, &tokens, 0, vp, ch, &mut scratch).unwrap())
    });
    group.bench_function("backward_wpe", |bch| bch.iter(|| embedding_backward_wpe(&mut dwpe, &dout, b, t, ch, max_seq).unwrap()));
    group.finish();
}

criterion_group!(benches, adamw, embedding);
criterion_main!(benches);
