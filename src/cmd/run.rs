//! `offplan run`: training steps on the GPU with everything on the GPU (no schedule yet),
//! measured: loss, step time (CUDA events), tokens/s, MFU per step; at the end the pool's and
//! the driver's peak memory next to the planner's prediction; a record (RON) under `--out`.

use super::{CodedError, ModelArgs, EXIT_NO_GPU};
use anyhow::Context;
use executor::{AdamW, ExecError, RunOptions};
use models::{HardwareProfile, Program};
use planner::LifetimeGraph;
use reports::record::{steady_median_ms, MemoryPeaks, Record, StepRecord, RECORD_VERSION};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training steps to run.
    #[arg(long, default_value_t = 10)]
    pub steps: u32,
    /// Folder for the record (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Also write the PyTorch reference export here (executor/reference/README.md).
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// Hardware profile, for the fixed device-memory overhead in the prediction.
    #[arg(long, value_name = "PATH", default_value = "models/hardware/h100-sxm.ron")]
    pub hardware: PathBuf,
    /// Peak dense bf16 TFLOP/s for MFU (llm.c's H100 SXM figure by default).
    #[arg(long, default_value_t = 989.0)]
    pub peak_tflops: f64,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f32,
    /// Seed of the initial weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn commit() -> String {
    if let Some(c) = option_env!("OFFPLAN_COMMIT") {
        return c.to_string();
    }
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.model.load()?;
    let program = Program::build(&cfg);
    program.check_lifetimes().map_err(|m| anyhow::anyhow!("the step program is inconsistent: {m}"))?;
    let (predicted_peak, _) = LifetimeGraph::build(&program).peak();
    let hw: Option<HardwareProfile> = HardwareProfile::load(&args.hardware).ok();
    let fixed = hw.as_ref().map(|h| h.fixed_overhead.0).unwrap_or(0);
    let digest = models::digest::program_digest(&program);
    println!(
        "{}: {} layers, C {}, {} heads, B {} x T {}, {} output chunks, {:?} attention; {} steps, all on the GPU",
        cfg.name, cfg.layers, cfg.hidden, cfg.heads, cfg.batch, cfg.seq, cfg.output_chunks, cfg.attention, args.steps
    );
    println!("planner: all-on-GPU peak {} (pool), + {} fixed overhead ({})", mib(predicted_peak.0), mib(fixed), args.hardware.display());

    let adamw = AdamW { lr: args.lr, ..AdamW::default() };
    let opts = RunOptions { steps: args.steps, seed: args.seed, adamw, export: args.export.clone(), peak_flops: args.peak_tflops * 1e12 };
    let n = args.steps;
    let mut print_step = |r: &executor::StepReport| {
        println!(
            "step {:>4}/{n} | loss {:.6} | {:>9.2} ms | {:>10.0} tok/s | MFU {:>5.1}%",
            r.step,
            r.loss,
            r.ms,
            r.tokens_per_s,
            100.0 * r.mfu
        );
    };
    let result = match executor::run_all_on_gpu(&program, &opts, &mut print_step) {
        Ok(r) => r,
        Err(ExecError::NoGpu(m)) => return Err(CodedError { code: EXIT_NO_GPU, message: format!("no CUDA device: {m}") }.into()),
        Err(e) => return Err(e).context("running the step on the GPU"),
    };

    let predicted = MemoryPeaks { allocated_bytes: predicted_peak.0, reserved_bytes: predicted_peak.0, device_bytes: predicted_peak.0 + fixed };
    let measured = MemoryPeaks {
        allocated_bytes: result.pool_used_high,
        reserved_bytes: result.pool_reserved_high,
        device_bytes: result.device_used_high,
    };
    let pct = |m: u64, p: u64| if p > 0 { 100.0 * (m as f64 - p as f64) / p as f64 } else { 0.0 };
    println!("memory (measured vs predicted):");
    for (what, m, p) in [
        ("pool USED_MEM_HIGH", measured.allocated_bytes, predicted.allocated_bytes),
        ("pool RESERVED_MEM_HIGH", measured.reserved_bytes, predicted.reserved_bytes),
        ("device in use (cuMemGetInfo)", measured.device_bytes, predicted.device_bytes),
    ] {
        println!("  {what:<30} {:>14} vs {:>14}  ({:+.2}%)", mib(m), mib(p), pct(m, p));
    }
    println!("  device in use before allocating: {}", mib(result.device_used_at_start));

    let steps: Vec<StepRecord> = result
        .steps
        .iter()
        .map(|s| StepRecord { step: s.step, loss: s.loss, ms: s.ms, tokens_per_s: s.tokens_per_s, mfu: s.mfu })
        .collect();
    let median_ms = steady_median_ms(&steps);
    let tokens = cfg.tokens() as f64;
    let median_tps = if median_ms > 0.0 { tokens / (median_ms / 1e3) } else { 0.0 };
    println!(
        "median step (after the first): {:.2} ms, {:.0} tok/s, MFU {:.1}%",
        median_ms,
        median_tps,
        100.0 * program.model_flops().0 / (median_ms / 1e3) / (args.peak_tflops * 1e12)
    );
    let record = Record {
        version: RECORD_VERSION,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        config: cfg.clone(),
        schedule: "all-on-gpu".into(),
        schedule_digest: digest,
        device: result.device.clone(),
        driver: result.driver.clone(),
        commit: commit(),
        unix_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        predicted,
        measured,
        device_bytes_at_start: result.device_used_at_start,
        peak_flops: args.peak_tflops * 1e12,
        model_flops: program.model_flops().0,
        steps,
        median_ms,
        median_tokens_per_s: median_tps,
        notes: vec![format!("corpus: {} GPT-2 tokens (executor/corpus)", result.corpus_tokens)],
        hardware: String::new(),
        budget_bytes: None,
        strategy: reports::record::ALL_ON_GPU.into(),
        decisions: Vec::new(),
        predicted_time: None,
        measured_time: None,
    };
    let path = record.write(&args.out).with_context(|| format!("writing the record under {}", args.out.display()))?;
    println!("record: {}", path.display());
    if let Some(d) = &args.export {
        println!("reference export: {}", d.display());
    }
    Ok(())
}
