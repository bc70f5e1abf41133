//! `offplan calibrate`: measures on the GPU what a hardware profile holds (copy rates each way
//! and both at once, the step's bf16 products, the attention and GELU kernels, launch overhead,
//! fixed device memory, allocation granularity, host copy and AdamW rates), prints every
//! measurement, and writes the profile (RON, atomically). With no GPU it writes nothing and
//! exits with the "no GPU" code.

use super::{CodedError, EXIT_NO_GPU};
use anyhow::Context;
use executor::calibrate::{default_name, measure, Options};
use executor::ExecError;
use models::{GptConfig, HardwareProfile};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write the measured hardware profile (e.g. models/hardware/h100-sxm.ron).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// GPT config whose matrix products and attention are timed.
    #[arg(long, value_name = "PATH", default_value = "models/configs/gpt3-1.3b.ron")]
    pub model: PathBuf,
    /// Micro-batch size of those shapes (overrides the config).
    #[arg(long, value_name = "B")]
    pub batch: Option<u32>,
    /// Sequence length of those shapes (overrides the config).
    #[arg(long, value_name = "T")]
    pub seq: Option<u32>,
    /// Profile name (default: from the device's name, e.g. "h100-80gb-hbm3-calibrated").
    #[arg(long)]
    pub name: Option<String>,
    /// Fewer sizes and rounds: a smoke test of a few seconds, not a profile to ship.
    #[arg(long)]
    pub quick: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Everything that can be checked without the GPU first: a bad path must not cost a
    // calibration.
    let cfg = GptConfig::load(&args.model)?
        .with_shape(args.batch, args.seq, None)
        .map_err(|m| anyhow::anyhow!("{}: {m}", args.model.display()))?;
    if args.out.is_dir() {
        anyhow::bail!("--out {} is a folder; give the profile's file path", args.out.display());
    }
    let parent = args.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !parent.is_dir() {
        anyhow::bail!("the folder of --out {} does not exist", args.out.display());
    }
    if let Some(n) = &args.name {
        if n.trim().is_empty() {
            anyhow::bail!("--name must not be empty");
        }
    }
    let opts = if args.quick { Options::quick() } else { Options::full() };
    println!(
        "calibrating with the shapes of {} (B {} x T {}, C {}, {} heads, {} output chunks, {:?} attention){}",
        cfg.name,
        cfg.batch,
        cfg.seq,
        cfg.hidden,
        cfg.heads,
        cfg.output_chunks,
        cfg.attention,
        if args.quick { ", quick" } else { "" }
    );

    let cal = match measure(&cfg, &opts) {
        Ok(c) => c,
        Err(ExecError::NoGpu(m)) => return Err(CodedError { code: EXIT_NO_GPU, message: format!("no CUDA device: {m}") }.into()),
        Err(e) => return Err(e).context("calibrating on the GPU"),
    };
    println!();
    print!("{}", cal.report());

    let name = args.name.clone().unwrap_or_else(|| default_name(&cal.device));
    let hw = cal.to_profile(&name).map_err(|m| anyhow::anyhow!("{m}"))?;
    let text = cal.profile_ron(&hw).map_err(|m| anyhow::anyhow!("{m}"))?;
    // What is written must load as every other command loads it.
    let back = HardwareProfile::parse(&text, &args.out).context("the profile written does not load back")?;
    if back.name != hw.name || back.memory != hw.memory || back.fixed_overhead != hw.fixed_overhead {
        anyhow::bail!("the profile written does not load back to the same values");
    }
    models::io::write_atomic(&args.out, text.as_bytes()).with_context(|| format!("writing {}", args.out.display()))?;
    println!();
    println!("profile {name}:");
    println!("  h2d / d2h           {:>8.2} / {:.2} GB/s", hw.h2d.0 / 1e9, hw.d2h.0 / 1e9);
    println!("  duplex h2d / d2h    {:>8.2} / {:.2} GB/s", hw.h2d_duplex.0 / 1e9, hw.d2h_duplex.0 / 1e9);
    println!("  copy latency        {:>8.2} / {:.2} us (beyond the bytes, each copy)", hw.h2d_latency.0 * 1e6, hw.d2h_latency.0 * 1e6);
    println!("  matmul              {:>8.1} TFLOP/s", hw.matmul_flops.0 / 1e12);
    println!("  attention           {:>8.1} TFLOP/s", hw.attention_flops.0 / 1e12);
    println!("  memory bandwidth    {:>8.1} GB/s", hw.memory_bandwidth.0 / 1e9);
    println!("  launch overhead     {:>8.2} us (GPU, per kernel)", hw.launch_overhead.0 * 1e6);
    println!("  in sequence         {:>8.2} us more per launch after a different kernel", hw.sequence_overhead.0 * 1e6);
    if let Some(i) = hw.issue {
        println!(
            "  host issue          {:>8.2} us per kernel, {:.2} per product, {:.2} per copy, {:.2} per event",
            i.kernel.0 * 1e6,
            i.product.0 * 1e6,
            i.copy.0 * 1e6,
            i.event.0 * 1e6
        );
    }
    println!("  fixed overhead      {:>8}", hw.fixed_overhead.to_string());
    println!("  alloc granularity   {:>8}", hw.alloc_granularity.to_string());
    println!("  host memory         {:>8.1} GB/s", hw.host_memory_bandwidth.0 / 1e9);
    println!("  host AdamW          {:>8.2} G params/s", hw.host_adam_params_per_second / 1e9);
    println!("wrote {}", args.out.display());
    if args.quick {
        println!("(--quick: fewer sizes and rounds; calibrate without it for a profile to keep)");
    }
    Ok(())
}
