//! `offplan inspect`: what one training step of a config holds, with everything on the GPU.

use super::{usage, ModelArgs};
use models::inventory::{BlockKind, Owner, TensorClass};
use models::parallel::TimedCollective;
use models::program::Phase;
use models::{Bytes, HardwareProfile, ParallelCommunication, ParallelMemory, Parallelism, Program, StageMemory, ZeroStage};
use planner::LifetimeGraph;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

/// Several GPUs: the tensor, pipeline and data-parallel grid each rank's memory is shown for.
#[derive(clap::Args, Debug)]
pub struct ParallelArgs {
    /// Tensor-parallel ranks (must divide heads, hidden and padded_vocab).
    #[arg(long, value_name = "T", default_value_t = 1)]
    pub tp: u32,
    /// Pipeline stages (must divide layers).
    #[arg(long, value_name = "P", default_value_t = 1)]
    pub pp: u32,
    /// Data-parallel ranks.
    #[arg(long, value_name = "D", default_value_t = 1)]
    pub dp: u32,
    /// ZeRO stage: 1 shards the optimizer state over the data-parallel ranks.
    #[arg(long, value_name = "0|1", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub zero: u8,
    /// Sequence parallelism (with --tp above 1): split what tensor parallelism replicates along
    /// the sequence.
    #[arg(long)]
    pub sequence_parallel: bool,
    /// Micro-batches per step under 1F1B (default: --pp).
    #[arg(long, value_name = "M")]
    pub micro_batches: Option<u32>,
    /// Hardware profile whose `interconnect` times each rank's collectives (models/hardware/*.ron;
    /// the grid must fit its GPUs). Without it, the collectives' bytes alone.
    #[arg(long, value_name = "PATH")]
    pub hardware: Option<PathBuf>,
}

impl ParallelArgs {
    fn parallelism(&self) -> Parallelism {
        let zero = if self.zero == 1 { ZeroStage::One } else { ZeroStage::Off };
        Parallelism { tp: self.tp, pp: self.pp, dp: self.dp, zero, sequence_parallel: self.sequence_parallel }
    }

    /// The grid's memory and collectives when any flag differs from one GPU (timed over `hw`'s
    /// interconnect when given); a bad grid, or one the profile cannot hold, is a usage error.
    fn view(&self, cfg: &models::GptConfig, hw: Option<&HardwareProfile>) -> anyhow::Result<Option<ParallelView>> {
        let par = self.parallelism();
        let micro_batches = self.micro_batches.unwrap_or(par.pp);
        if par.is_single() && micro_batches == par.pp {
            return Ok(None);
        }
        let memory = ParallelMemory::of(cfg, &par, micro_batches).map_err(|e| usage(e.to_string()))?;
        let communication = ParallelCommunication::of(cfg, &par, micro_batches, hw).map_err(|e| usage(e.to_string()))?;
        Ok(Some(ParallelView { memory, communication }))
    }
}

/// One rank per pipeline stage: its memory (the fields of `ParallelMemory`) and its collectives.
#[derive(Serialize)]
struct ParallelView {
    #[serde(flatten)]
    memory: ParallelMemory,
    /// Per pipeline stage the collectives of one rank per step, and the 1F1B bubble.
    communication: ParallelCommunication,
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
    /// Per pipeline stage, one rank's memory and collectives (only with parallel flags).
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel: Option<ParallelView>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.model.load()?;
    let hw = args.parallel.hardware.as_deref().map(super::load_hardware).transpose()?;
    let parallel = args.parallel.view(&cfg, hw.as_ref())?;
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
        parallel,
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
    if let Some(v) = &i.parallel {
        print_parallel(&cfg, &v.memory);
        print_communication(&v.memory.parallelism, &v.communication);
    }
    Ok(())
}

/// The per-pipeline-stage table: one rank of each pipeline stage (its ranks are alike).
fn print_parallel(cfg: &models::GptConfig, m: &ParallelMemory) {
    let p = &m.parallelism;
    let onoff = |b: bool| if b { "on" } else { "off" };
    println!();
    println!(
        "several GPUs: TP {} x PP {} x DP {} = {} ranks; ZeRO-1 {}; sequence parallelism {}",
        p.tp,
        p.pp,
        p.dp,
        m.ranks,
        onoff(p.zero == ZeroStage::One),
        onoff(p.sequence_parallel)
    );
    println!(
        "  1F1B, {} micro-batches of {} x {} per step and data-parallel rank (global batch {} sequences)",
        m.micro_batches,
        cfg.batch,
        cfg.seq,
        m.micro_batches as u64 * cfg.batch as u64 * p.dp as u64
    );
    let attention = format!("{:?}", cfg.attention).to_lowercase();
    println!(
        "  saved activations per layer, micro-batch and rank: {} ({attention} attention, no dropout); full recomputation keeps {}",
        Bytes(m.layer_activation_bytes.0),
        Bytes(m.recompute_layer_bytes.0)
    );
    let formula = if p.sequence_parallel { "sbh/t (34 + 5as/h)" } else { "sbh (10 + 24/t + 5as/(ht))" };
    println!(
        "  Korthikanti et al. 2022: {} = {} (1-byte dropout masks, materialised attention); full recomputation {}",
        formula,
        Bytes(m.korthikanti_layer_bytes.round() as u64),
        Bytes(m.korthikanti_recompute_bytes.round() as u64)
    );
    let holds: Vec<String> = m.stages.iter().map(also_holds).collect();
    let w = holds.iter().map(String::len).max().unwrap_or(0).max("also holds".len());
    println!(
        "  {:<14} {:<8} {:<w$} {:>15} {:>12} {:>12} {:>12} {:>15} {:>9} {:>12}",
        "pipeline stage", "layers", "also holds", "params/rank", "weights", "grads", "optimizer", "act/micro-batch", "in flight", "total"
    );
    for (s, holds) in m.stages.iter().zip(&holds) {
        println!(
            "  {:<14} {:<8} {:<w$} {:>15} {:>12} {:>12} {:>12} {:>15} {:>9} {:>12}",
            s.pipeline_stage,
            format!("{}-{}", s.layers.start, s.layers.end.saturating_sub(1)),
            holds,
            group(s.params_per_rank),
            s.weight_bytes.to_string(),
            s.grad_bytes.to_string(),
            s.optimizer_bytes.to_string(),
            s.activation_bytes_per_micro_batch.to_string(),
            s.micro_batches_in_flight,
            s.total_bytes.to_string()
        );
    }
    println!("  total: weights, gradients, optimizer state and the activations in flight (no scratch, workspace or device overhead)");
    if m.stages.first().is_some_and(|s| s.tied_copies() > 0) {
        println!("  tied embeddings: the first pipeline stage keeps a copy of the token table (as Megatron-LM does)");
    }
}

/// Each pipeline stage's collectives (stages alike printed once) and the 1F1B bubble.
fn print_communication(p: &Parallelism, c: &ParallelCommunication) {
    println!();
    if c.stages.iter().all(|s| s.collectives.is_empty()) {
        println!("  collectives: none (one rank)");
        return;
    }
    println!("  collectives of one rank per step ({})", c.rank_layout);
    match (&c.hardware, &c.interconnect) {
        (Some(name), Some(i)) => {
            let link = |l: models::LinkRate| format!("{:.0} GB/s, {} per step", l.bandwidth.as_gb_per_s(), l.latency);
            let between = i.inter_node.map_or("none".to_string(), link);
            println!(
                "  times: ring model over {name}'s interconnect ({} node{} of {} GPUs; within a node {}; between nodes {}; \
                 collectives share the host link: {})",
                i.nodes,
                if i.nodes == 1 { "" } else { "s" },
                i.gpus_per_node,
                link(i.intra_node),
                between,
                if i.collectives_share_host_link { "yes" } else { "no" }
            );
        }
        _ if p.ranks() > 1 => println!("  bytes only: give --hardware with a profile that has an interconnect for their times"),
        _ => {}
    }
    let timed = c.interconnect.is_some();
    // Pipeline stages whose collectives are alike (the middle ones) are printed once.
    let key = |s: &models::StageCommunication| {
        s.collectives
            .iter()
            .map(|t| TimedCollective { collective: models::Collective { pipeline_stages: None, ..t.collective.clone() }, ..t.clone() })
            .collect::<Vec<_>>()
    };
    for run in c.stages.chunk_by(|a, b| key(a) == key(b)) {
        let (s, end) = (&run[0], &run[run.len() - 1]);
        let which = if run.len() > 1 {
            format!("pipeline stages {}-{}", s.pipeline_stage, end.pipeline_stage)
        } else {
            format!("pipeline stage {}", s.pipeline_stage)
        };
        let time = s.seconds_per_step.map_or(String::new(), |t| format!(", {t}"));
        let each = if run.len() > 1 { " each" } else { "" };
        if s.collectives.is_empty() {
            println!("  {which}: none");
        } else {
            println!("  {which}: {} per step{time}{each}", s.bytes_per_step);
            if timed {
                println!("    {:<5} {:<14} {:>12} {:>7} {:<6} {:>11}  what", "group", "kind", "bytes/call", "calls", "link", "time/step");
            } else {
                println!("    {:<5} {:<14} {:>12} {:>7}  what", "group", "kind", "bytes/call", "calls");
            }
            for t in &s.collectives {
                let x = &t.collective;
                let (group, kind, bytes) = (x.group.name(), x.kind.name(), x.bytes.to_string());
                match (t.within_node, t.seconds_per_step) {
                    (Some(within), Some(time)) => println!(
                        "    {group:<5} {kind:<14} {bytes:>12} {:>7} {:<6} {:>11}  {}",
                        x.calls_per_step,
                        if within { "node" } else { "nodes" },
                        time.to_string(),
                        x.what
                    ),
                    _ => println!("    {group:<5} {kind:<14} {bytes:>12} {:>7}  {}", x.calls_per_step, x.what),
                }
            }
        }
    }
    if p.pp > 1 {
        let (num, den) = (p.pp - 1, c.micro_batches + p.pp - 1);
        let g = gcd(num, den);
        println!(
            "  1F1B bubble: (P - 1) / (M + P - 1) = {}/{} = {:.1}% of the step (Narayanan et al. 2021)",
            num / g,
            den / g,
            100.0 * c.bubble_fraction
        );
    }
    if timed {
        println!("  time/step sums every call as if none overlapped another or the compute; link: within a node or across nodes");
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// What a pipeline stage holds besides its layers.
fn also_holds(s: &StageMemory) -> String {
    let mut v = Vec::new();
    if s.owners.iter().any(|o| o.owner == Owner::Embedding) {
        v.push("embedding".to_string());
    }
    let tied = s.tied_copies();
    if tied > 0 {
        v.push("token table copy (tied)".to_string());
    }
    if s.owners.iter().any(|o| o.owner == Owner::FinalNorm) {
        let chunks = s.owners.iter().filter(|o| matches!(o.owner, Owner::OutputChunk(_)) && !o.tied_copy).count();
        v.push(format!("final norm, output ({chunks} chunk{})", if chunks == 1 { "" } else { "s" }));
    }
    if v.is_empty() {
        "-".to_string()
    } else {
        v.join(", ")
    }
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
