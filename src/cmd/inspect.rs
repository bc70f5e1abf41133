//! `offplan inspect`: what one training step of a config holds, with everything on the GPU.

use super::ModelArgs;
use models::inventory::{BlockKind, TensorClass};
use models::program::Phase;
use models::{Bytes, Program};
use planner::LifetimeGraph;
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Inspection {
    name: String,
    layers: u32,
    hidden: u32,
    heads: u32,
    batch: u32,
    seq: u32,
    params: u64,
    allocated_params: u64,
    bytes_per_class: Vec<(String, u64)>,
    activation_bytes_per_layer: u64,
    head_activation_bytes: u64,
    all_gpu_peak_bytes: u64,
    all_gpu_peak_at: String,
    all_gpu_peak_phase: String,
    program_flops: f64,
    model_flops: f64,
    ops: usize,
    tensors: usize,
    blocks: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.model.load()?;
    // The step plan and run take by default: GPT-3's setup, clipped.
    let program = Program::for_setup(&cfg, &models::TrainingSetup::gpt3(&cfg));
    let inv = &program.inventory;
    let graph = LifetimeGraph::build(&program);
    let (peak, at) = graph.peak();
    let classes = [
        TensorClass::Weights,
        TensorClass::Grads,
        TensorClass::OptimizerState,
        TensorClass::Activations,
        TensorClass::Scratch,
        TensorClass::Workspace,
        TensorClass::Io,
    ];
    let head = inv.find_block(BlockKind::HeadActivations).map(|b| b.bytes).unwrap_or_default();
    let i = Inspection {
        name: cfg.name.clone(),
        layers: cfg.layers,
        hidden: cfg.hidden,
        heads: cfg.heads,
        batch: cfg.batch,
        seq: cfg.seq,
        params: cfg.param_count(),
        allocated_params: cfg.allocated_param_count(),
        bytes_per_class: classes.iter().map(|c| (format!("{c:?}"), inv.bytes_of(*c).0)).collect(),
        activation_bytes_per_layer: inv.layer_activation_bytes(0).0,
        head_activation_bytes: head.0,
        all_gpu_peak_bytes: peak.0,
        all_gpu_peak_at: program.op(at).name.clone(),
        all_gpu_peak_phase: format!("{:?}", program.op(at).phase),
        program_flops: program.total_flops().0,
        model_flops: program.model_flops().0,
        ops: program.ops.len(),
        tensors: inv.tensors.len(),
        blocks: inv.blocks.len(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(());
    }
    println!("{} — {} layers, hidden {}, {} heads; micro-batch {} x {}", i.name, i.layers, i.hidden, i.heads, i.batch, i.seq);
    println!("  parameters        {:>16} ({} allocated, padded vocabulary)", group(i.params), group(i.allocated_params));
    println!("  bytes per class (one step, all on the GPU):");
    for (c, b) in &i.bytes_per_class {
        println!("    {:<16} {:>12}", c, Bytes(*b).to_string());
    }
    println!(
        "  saved activations {:>12} per layer, {} head",
        Bytes(i.activation_bytes_per_layer).to_string(),
        Bytes(i.head_activation_bytes)
    );
    let phase = if program.op(at).phase == Phase::Forward { "forward" } else { "head/backward" };
    println!(
        "  all-on-GPU peak   {:>12} at {} ({phase}); plus the device's fixed overhead",
        Bytes(i.all_gpu_peak_bytes).to_string(),
        i.all_gpu_peak_at
    );
    println!("  FLOPs per step    {:.3e} executed, {:.3e} model (6N + 6LTC per token)", i.program_flops, i.model_flops);
    println!("  {} ops, {} tensors, {} blocks", i.ops, i.tensors, i.blocks);
    Ok(())
}

/// 124439808 -> "124,439,808".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
