//! The Megatron-LM command line closest to a plan (`offplan export megatron`), what the plan
//! does that those flags cannot say, and the exported configuration as offplan decisions, so
//! that it can be planned and simulated beside the plan.
//!
//! What Megatron-LM's flags can say (its argument parser, NVIDIA/Megatron-LM at d98e8a64dd;
//! `tests/data/megatron-lm-flags.txt` lists every flag this module writes, each checked there):
//! - full recomputation of whole layers: `--recompute-granularity full --recompute-method block
//!   --recompute-num-layers N` recomputes the first N layers of each pipeline stage from their
//!   inputs (offplan: the layer's input kept, its other saved activations recomputed);
//! - activation offloading of whole layers: `--cpu-offloading-num-layers N` (fewer than the
//!   layers; it turns `cpu_offloading` on, whose activations-only default the command line cannot
//!   change), refused beside recomputation and with pipeline parallelism; modelled here as the
//!   first N layers' saved activations, input included, offloaded;
//! - the optimizer on the host: `--optimizer-cpu-offload --optimizer-offload-fraction F` (with
//!   `--use-precision-aware-optimizer`, which the parser requires): its hybrid optimizer moves
//!   parameters in model order until F of them are on the host, updated there (offplan: host
//!   AdamW of the owners in program order until F of the parameters, one owner at a time).
//!
//! [`knobs_within`] searches these knobs for their fastest setting within a budget, as offplan's
//! stage model prices them, to set beside a plan.
//!
//! It cannot say: streamed weights (`cpu_offloading_weights` is not a flag), a streamed
//! optimizer (state on the host, update on the GPU), the CPU embedding, offloading only a
//! layer's input, a choice of which layers beyond "the first N", or recomputation and
//! offloading together.

use crate::decisions::{ActChoice, Decisions, OwnerChoice};
use crate::model::{Evaluation, StageModel};
use crate::{Plan, PlanError};
use models::inventory::Owner;
use models::training::{fmt_g, Warmup};
use models::{Bytes, HardwareProfile, Placement, Program, Seconds, TrainingSetup};

/// One flag of the command line, its value if it takes one.
#[derive(Clone, Debug, PartialEq)]
pub struct MegatronArg {
    pub flag: &'static str,
    pub value: Option<String>,
}

/// What of a plan Megatron-LM's flags can say: its three offload knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MegatronKnobs {
    /// `--recompute-num-layers` under the block method: the first N layers recomputed whole.
    pub recompute_layers: u32,
    /// `--cpu-offloading-num-layers`: the first N layers' activations offloaded (below the
    /// layers, and 0 beside recomputation).
    pub offload_layers: u32,
    /// Owners in program order whose optimizer runs on the host: `--optimizer-offload-fraction`
    /// is their share of the parameters.
    pub host_optimizer_owners: usize,
}

impl MegatronKnobs {
    /// The knobs in a few words: `recompute 25, 52.9% of the optimizer on the host`.
    pub fn summary(&self, program: &Program) -> String {
        let mut parts = Vec::new();
        if self.recompute_layers > 0 {
            parts.push(format!("recompute {}", self.recompute_layers));
        }
        if self.offload_layers > 0 {
            parts.push(format!("offload {}", self.offload_layers));
        }
        if self.host_optimizer_owners > 0 {
            parts.push(format!("{:.1}% of the optimizer on the host", 100.0 * self.fraction(program)));
        }
        if parts.is_empty() {
            "no knob".into()
        } else {
            parts.join(", ")
        }
    }

    /// Nothing recomputed, offloaded or updated on the host.
    pub const NONE: MegatronKnobs = MegatronKnobs { recompute_layers: 0, offload_layers: 0, host_optimizer_owners: 0 };

    /// The share of the parameters whose optimizer runs on the host.
    pub fn fraction(&self, program: &Program) -> f64 {
        let owners = program.inventory.owners();
        let params = |o: &Owner| program.inventory.params(*o).params;
        let total: u64 = owners.iter().map(params).sum();
        let host: u64 = owners.iter().take(self.host_optimizer_owners).map(params).sum();
        host as f64 / total.max(1) as f64
    }

    /// The knobs' flags (none for a knob at 0).
    pub fn args(&self, program: &Program) -> Vec<MegatronArg> {
        let mut v = Vec::new();
        let mut arg = |flag: &'static str, value: Option<String>| v.push(MegatronArg { flag, value });
        if self.recompute_layers > 0 {
            arg("--recompute-granularity", Some("full".into()));
            arg("--recompute-method", Some("block".into()));
            arg("--recompute-num-layers", Some(self.recompute_layers.to_string()));
        }
        if self.offload_layers > 0 {
            arg("--cpu-offloading-num-layers", Some(self.offload_layers.to_string()));
        }
        if self.host_optimizer_owners > 0 {
            arg("--optimizer-cpu-offload", None);
            arg("--optimizer-offload-fraction", Some(format!("{:.4}", self.fraction(program))));
            arg("--use-precision-aware-optimizer", None);
            arg("--overlap-cpu-optimizer-d2h-h2d", None);
        }
        v
    }

    /// What Megatron-LM runs with these knobs, as offplan decisions (this module's reading of
    /// its flags: see the module's comment).
    pub fn decisions(&self, program: &Program) -> Decisions {
        let mut d = Decisions::all_gpu(program);
        for l in 0..self.recompute_layers.min(program.config.layers) {
            d.layers[l as usize] = ActChoice::RECOMPUTE;
        }
        for l in 0..self.offload_layers.min(program.config.layers) {
            d.layers[l as usize] = ActChoice::OFFLOAD;
        }
        for o in program.inventory.owners().into_iter().take(self.host_optimizer_owners) {
            d.set_owner(o, OwnerChoice { weights: Placement::Gpu, optimizer: Placement::Host });
        }
        d
    }
}

/// A plan said in Megatron-LM's flags.
#[derive(Clone, Debug, PartialEq)]
pub struct MegatronExport {
    /// The flags, model and training setup first, then what the plan decides.
    pub args: Vec<MegatronArg>,
    /// What the plan does that the flags cannot say (or say only approximately), one line each.
    pub cannot_say: Vec<String>,
    /// The knobs closest to the plan; what Megatron-LM would run with them, as offplan
    /// decisions, is `knobs.decisions(program)`.
    pub knobs: MegatronKnobs,
}

impl MegatronExport {
    /// The flags as one shell command line's arguments, one flag per line.
    pub fn command_line(&self) -> String {
        let lines: Vec<String> = self
            .args
            .iter()
            .map(|a| match &a.value {
                Some(v) => format!("  {} {v}", a.flag),
                None => format!("  {}", a.flag),
            })
            .collect();
        lines.join(" \\\n")
    }
}

/// The Megatron-LM arguments closest to `decisions` for `program` trained with `setup` on one GPU.
pub fn export(program: &Program, setup: &TrainingSetup, decisions: &Decisions) -> MegatronExport {
    let cfg = &program.config;
    let layers = cfg.layers;
    let mut args = Vec::new();
    let mut cannot_say = Vec::new();
    let mut arg = |flag: &'static str, value: Option<String>| args.push(MegatronArg { flag, value });
    let num = |v: u64| Some(v.to_string());

    // One GPU: every parallel size 1, one micro-batch per step.
    arg("--tensor-model-parallel-size", num(1));
    arg("--pipeline-model-parallel-size", num(1));
    arg("--micro-batch-size", num(cfg.batch as u64));
    arg("--global-batch-size", num(cfg.batch as u64));
    // The model: GPT-2's layer (pre-norm LayerNorm, GELU MLP of 4C, learned positions, biases).
    arg("--num-layers", num(layers as u64));
    arg("--hidden-size", num(cfg.hidden as u64));
    arg("--ffn-hidden-size", num(4 * cfg.hidden as u64));
    arg("--num-attention-heads", num(cfg.heads as u64));
    arg("--seq-length", num(cfg.seq as u64));
    arg("--max-position-embeddings", num(cfg.max_seq as u64));
    arg("--position-embedding-type", Some("learned_absolute".into()));
    arg("--normalization", Some("LayerNorm".into()));
    arg("--attention-dropout", num(0));
    arg("--hidden-dropout", num(0));
    match vocab_divisor(cfg.vocab, cfg.padded_vocab) {
        Some(d) => arg("--make-vocab-size-divisible-by", num(d as u64)),
        None => cannot_say.push(format!(
            "the padded vocabulary {} is no multiple of the vocabulary {} rounded up: Megatron-LM pads to a multiple of --make-vocab-size-divisible-by",
            cfg.padded_vocab, cfg.vocab
        )),
    }
    if !cfg.tied_embeddings {
        arg("--untie-embeddings-and-output-weights", None);
    }
    arg("--bf16", None);
    // The training setup.
    arg("--optimizer", Some("adam".into()));
    arg("--lr", Some(fmt_g(setup.lr)));
    arg("--min-lr", Some(fmt_g(setup.min_lr)));
    arg("--lr-decay-style", Some("cosine".into()));
    match setup.warmup {
        Warmup::Steps(n) => arg("--lr-warmup-iters", num(n as u64)),
        Warmup::TenthOfRun => arg("--lr-warmup-fraction", Some("0.1".into())),
    }
    arg("--adam-beta1", Some(fmt_g(setup.beta1)));
    arg("--adam-beta2", Some(fmt_g(setup.beta2)));
    arg("--adam-eps", Some(fmt_g(setup.eps)));
    arg("--weight-decay", Some(fmt_g(setup.weight_decay)));
    arg("--clip-grad", Some(fmt_g(setup.grad_clip)));

    let mut knobs = MegatronKnobs::NONE;
    // Activations: whole layers recomputed, or whole layers offloaded, the first N.
    let recomputed: Vec<u32> = (0..layers).filter(|&l| decisions.layers[l as usize].inner == Placement::Recomputed).collect();
    // A layer counts as offloaded by its other saved activations, the bulk of its bytes; one
    // that offloads only its input is said apart below.
    let offloaded: Vec<u32> = (0..layers).filter(|&l| decisions.layers[l as usize].inner == Placement::Offloaded).collect();
    let recompute = !recomputed.is_empty() && recomputed.len() >= offloaded.len();
    if recompute {
        let n = recomputed.len() as u32;
        knobs.recompute_layers = n;
        if !is_prefix(&recomputed) {
            cannot_say
                .push(format!("the plan recomputes layers {}; Megatron-LM's block method recomputes the first {n}", ranges(&recomputed)));
        }
        let offloaded_too: Vec<u32> = offloaded.iter().copied().filter(|l| !recomputed.contains(l)).collect();
        if !offloaded_too.is_empty() {
            cannot_say.push(format!(
                "the plan also offloads layers {}' activations; Megatron-LM refuses CPU offloading beside recomputation, so they stay on the GPU",
                ranges(&offloaded_too)
            ));
        }
    } else if !offloaded.is_empty() {
        let n = (offloaded.len() as u32).min(layers.saturating_sub(1));
        knobs.offload_layers = n;
        if n < offloaded.len() as u32 {
            cannot_say.push(format!(
                "the plan offloads every layer's activations; --cpu-offloading-num-layers must be below the layers ({layers}), so the last stays on the GPU"
            ));
        } else if !is_prefix(&offloaded) {
            cannot_say
                .push(format!("the plan offloads layers {}; Megatron-LM offloads {n} layers (here the first {n})", ranges(&offloaded)));
        }
        if !recomputed.is_empty() {
            cannot_say.push(format!(
                "the plan also recomputes layers {}; Megatron-LM refuses recomputation beside CPU offloading, so they keep their activations",
                ranges(&recomputed)
            ));
        }
    }
    for (inner, what) in [(Placement::Gpu, "kept"), (Placement::Recomputed, "recomputed")] {
        let input_only: Vec<u32> = (0..layers)
            .filter(|&l| {
                let a = decisions.layers[l as usize];
                a.input == Placement::Offloaded && a.inner == inner
            })
            .collect();
        if !input_only.is_empty() {
            cannot_say.push(format!(
                "layers {} offload their input alone (their other activations {what}): Megatron-LM offloads a layer's activations whole, and keeps a recomputed layer's input",
                ranges(&input_only)
            ));
        }
    }

    // Weights and optimizer state, per owner in program order.
    let owners = program.inventory.owners();
    let params = |o: Owner| program.inventory.params(o).params;
    let total: u64 = owners.iter().map(|&o| params(o)).sum();
    let on_host: u64 = owners.iter().filter(|&&o| decisions.owner(o).optimizer == Placement::Host).map(|&o| params(o)).sum();
    let streamed_weights: Vec<Owner> = owners.iter().copied().filter(|&o| decisions.owner(o).weights == Placement::Streamed).collect();
    if !streamed_weights.is_empty() {
        cannot_say.push(format!(
            "the plan streams the weights of {} from the host around each use: Megatron-LM's command line has no weight offloading (`cpu_offloading_weights` is not a flag), so they stay on the GPU",
            owner_list(&streamed_weights)
        ));
    }
    let streamed_optimizer: Vec<Owner> = owners.iter().copied().filter(|&o| decisions.owner(o).optimizer == Placement::Streamed).collect();
    if !streamed_optimizer.is_empty() {
        cannot_say.push(format!(
            "the plan keeps the optimizer state of {} on the host and streams it to the GPU for each update: Megatron-LM's optimizer runs where its state is, so it stays on the GPU",
            owner_list(&streamed_optimizer)
        ));
    }
    if decisions.owner(Owner::Embedding).weights == Placement::Host {
        cannot_say.push(
            "the plan runs the embedding on the host (its lookup, its backward and its update): Megatron-LM has no CPU embedding; only the update's share is in --optimizer-offload-fraction".into(),
        );
    }
    if on_host > 0 {
        // Megatron-LM moves parameters in model order while fewer than the fraction are moved:
        // the owners up to the first whose parameters reach the plan's share.
        let mut moved = 0u64;
        while moved < on_host {
            moved += params(owners[knobs.host_optimizer_owners]);
            knobs.host_optimizer_owners += 1;
        }
        let host: Vec<Owner> = owners.iter().copied().filter(|&o| decisions.owner(o).optimizer == Placement::Host).collect();
        if host.len() != knobs.host_optimizer_owners || host.iter().zip(&owners).any(|(a, b)| a != b) {
            cannot_say.push(format!(
                "the plan updates {} on the host ({:.2}% of the parameters); Megatron-LM's hybrid optimizer moves parameters in model order: here the first {} owners, {:.2}%",
                owner_list(&host),
                100.0 * on_host as f64 / total as f64,
                knobs.host_optimizer_owners,
                100.0 * knobs.fraction(program)
            ));
        }
    }
    args.extend(knobs.args(program));
    MegatronExport { args, cannot_say, knobs }
}

/// Megatron-LM's knobs at their fastest within `budget` as offplan's stage model prices them,
/// fastest first (empty when none fits): every count of layers recomputed, and every count of
/// layers offloaded, each with the fewest optimizer owners on the host that make it fit (memory
/// falls with each owner moved; time, at host AdamW's rate and its copies, does not).
pub fn knobs_within(model: &StageModel, budget: Bytes) -> Vec<KnobsFit> {
    let program = model.program;
    let layers = program.config.layers;
    let owners = program.inventory.owners().len();
    let cap = model.capacity(budget);
    let fits = |e: &Evaluation| e.peak.0 <= cap && model.hw.host_pinnable.is_none_or(|h| e.pinned <= h);
    let activations = (0..=layers)
        .map(|r| MegatronKnobs { recompute_layers: r, ..MegatronKnobs::NONE })
        .chain((1..layers).map(|o| MegatronKnobs { offload_layers: o, ..MegatronKnobs::NONE }));
    let mut found: Vec<(MegatronKnobs, Evaluation)> = Vec::new();
    for a in activations {
        let at = |m: usize| {
            let k = MegatronKnobs { host_optimizer_owners: m, ..a };
            (k, model.evaluate(&k.decisions(program)))
        };
        let all = at(owners);
        if !fits(&all.1) {
            continue;
        }
        // The fewest owners on the host that fit: a binary search over the prefix.
        let (mut lo, mut hi, mut best) = (0usize, owners, all);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let c = at(mid);
            if fits(&c.1) {
                hi = mid;
                best = c;
            } else {
                lo = mid + 1;
            }
        }
        found.push(best);
    }
    found.sort_by(|a, b| a.1.step_time.0.total_cmp(&b.1.step_time.0));
    found.into_iter().map(|(knobs, e)| KnobsFit { knobs, step_time: e.step_time, peak: e.peak }).collect()
}

/// The fastest setting of the knobs within `budget` once laid out: [`knobs_within`]'s, fastest
/// first, each emitted, simulated and laid out in its arena until one fits on the device (eight
/// at most); with the count of settings the stage model found to fit. None when none does.
pub fn fastest_within(program: &Program, hw: &HardwareProfile, budget: Bytes) -> Result<Option<(MegatronKnobs, Plan, usize)>, PlanError> {
    let model = StageModel::new(program, hw);
    let fits = knobs_within(&model, budget);
    for k in fits.iter().take(8) {
        let plan = crate::planned::finish(program, hw, budget, &k.knobs.decisions(program), None)?;
        if plan.schedule.prediction.peak_device() <= budget {
            return Ok(Some((k.knobs, plan, fits.len())));
        }
    }
    Ok(None)
}

/// Knobs that fit, with the stage model's step time and live peak for them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KnobsFit {
    pub knobs: MegatronKnobs,
    pub step_time: Seconds,
    pub peak: Bytes,
}

/// The `--make-vocab-size-divisible-by` that pads `vocab` to `padded`: the largest power of two
/// up to 128 (Megatron-LM's default) that does; None where none pads it to exactly `padded`.
fn vocab_divisor(vocab: u32, padded: u32) -> Option<u32> {
    (0..=7).rev().map(|k| 1u32 << k).find(|d| vocab.div_ceil(*d) * d == padded)
}

fn is_prefix(layers: &[u32]) -> bool {
    layers.iter().enumerate().all(|(i, &l)| l == i as u32)
}

/// `0-3, 7, 9-10`.
fn ranges(layers: &[u32]) -> String {
    models::runs::ranges(layers, "-", ", ")
}

fn owner_list(owners: &[Owner]) -> String {
    let layers: Vec<u32> = owners.iter().filter_map(|o| if let Owner::Layer(l) = o { Some(*l) } else { None }).collect();
    let mut parts: Vec<String> = owners.iter().filter(|o| !matches!(o, Owner::Layer(_))).map(|o| o.to_string()).collect();
    if !layers.is_empty() {
        parts.insert(0, format!("layers {}", ranges(&layers)));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::GptConfig;
    use std::path::Path;

    fn program(name: &str) -> Program {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs");
        Program::build(&GptConfig::load(&dir.join(format!("{name}.ron"))).unwrap())
    }

    fn setup(p: &Program) -> TrainingSetup {
        TrainingSetup::gpt3(&p.config)
    }

    fn value<'a>(e: &'a MegatronExport, flag: &str) -> Option<&'a str> {
        e.args.iter().find(|a| a.flag == flag).map(|a| a.value.as_deref().unwrap_or(""))
    }

    #[test]
    fn the_first_layers_recomputed_are_megatrons_block_method() {
        let p = program("gpt3-2.7b");
        let mut d = Decisions::all_gpu(&p);
        for l in 0..5 {
            d.layers[l] = ActChoice::RECOMPUTE;
        }
        let e = export(&p, &setup(&p), &d);
        assert_eq!(value(&e, "--recompute-num-layers"), Some("5"));
        assert_eq!(value(&e, "--recompute-method"), Some("block"));
        assert_eq!(value(&e, "--num-layers"), Some("32"));
        assert_eq!(value(&e, "--make-vocab-size-divisible-by"), Some("128"));
        assert!(value(&e, "--untie-embeddings-and-output-weights").is_some());
        assert!(value(&e, "--cpu-offloading-num-layers").is_none());
        assert!(e.cannot_say.is_empty(), "{:?}", e.cannot_say);
        assert_eq!(e.knobs.decisions(&p), d, "the first five recomputed is what Megatron-LM runs");
    }

    #[test]
    fn what_the_flags_cannot_say_is_said_and_left_on_the_gpu() {
        let p = program("gpt3-2.7b");
        let mut d = Decisions::all_gpu(&p);
        // Recompute layers 3 and 9, offload layer 4's input alone, stream layer 6's weights and
        // the first output chunk's optimizer.
        d.layers[3] = ActChoice::RECOMPUTE;
        d.layers[9] = ActChoice::RECOMPUTE;
        d.layers[4] = ActChoice { input: Placement::Offloaded, inner: Placement::Gpu };
        d.layers[11] = ActChoice::OFFLOAD;
        d.set_owner(Owner::Layer(6), OwnerChoice { weights: Placement::Streamed, optimizer: Placement::Gpu });
        d.set_owner(Owner::OutputChunk(0), OwnerChoice { weights: Placement::Gpu, optimizer: Placement::Streamed });
        let e = export(&p, &setup(&p), &d);
        assert_eq!(value(&e, "--recompute-num-layers"), Some("2"));
        let said = e.cannot_say.join("\n");
        for part in [
            "layers 3, 9",
            "layers 11' activations",
            "layers 4 offload their input alone (their other activations kept)",
            "layers 6",
            "chunk0",
        ] {
            assert!(said.contains(part), "{part:?} missing from:\n{said}");
        }
        let mut expected = Decisions::all_gpu(&p);
        expected.layers[0] = ActChoice::RECOMPUTE;
        expected.layers[1] = ActChoice::RECOMPUTE;
        assert_eq!(e.knobs.decisions(&p), expected);
    }

    #[test]
    fn offloading_every_layer_stops_one_short_and_the_optimizer_fraction_is_model_order() {
        let p = program("gpt3-1.3b");
        let mut d = Decisions::all_gpu(&p).with_optimizer(Placement::Host);
        d.layers = vec![ActChoice::OFFLOAD; p.config.layers as usize];
        let e = export(&p, &setup(&p), &d);
        assert_eq!(value(&e, "--cpu-offloading-num-layers"), Some("23"));
        assert_eq!(value(&e, "--optimizer-offload-fraction"), Some("1.0000"));
        assert!(value(&e, "--use-precision-aware-optimizer").is_some());
        assert!(e.cannot_say.iter().any(|s| s.contains("the last stays on the GPU")));
        assert_eq!(e.knobs.decisions(&p).layers[22], ActChoice::OFFLOAD);
        assert_eq!(e.knobs.decisions(&p).layers[23], ActChoice::KEEP);
        assert!(e.knobs.decisions(&p).owners.iter().all(|(_, c)| c.optimizer == Placement::Host));
        // Half the layers' updates on the host, the last half: the same fraction, the first
        // owners in model order, and the difference said.
        let mut d = Decisions::all_gpu(&p);
        for l in 12..24 {
            d.set_owner(Owner::Layer(l), OwnerChoice { weights: Placement::Gpu, optimizer: Placement::Host });
        }
        let e = export(&p, &setup(&p), &d);
        let f: f64 = value(&e, "--optimizer-offload-fraction").unwrap().parse().unwrap();
        assert!(f > 0.0 && f < 0.5, "{f}");
        assert_eq!(e.knobs.decisions(&p).owner(Owner::Embedding).optimizer, Placement::Host);
        assert_eq!(e.knobs.decisions(&p).owner(Owner::Layer(23)).optimizer, Placement::Gpu);
        assert!(e.cannot_say.iter().any(|s| s.contains("model order")));
    }

    #[test]
    fn the_fastest_knobs_fit_and_none_that_fits_is_faster() {
        let p = program("gpt3-1.3b");
        let hw = crate::shipped::h100();
        let model = StageModel::new(&p, &hw);
        let budget = Bytes::gib(16.0);
        let found = knobs_within(&model, budget);
        let best = found.first().copied().expect("some knobs fit 16 GiB");
        assert!(best.peak.0 <= model.capacity(budget));
        assert!(found.windows(2).all(|w| w[0].step_time <= w[1].step_time));
        // Against every combination of the knobs that fits: none faster.
        let layers = p.config.layers;
        let activations = (0..=layers).map(|r| (r, 0)).chain((1..layers).map(|o| (0, o)));
        for (r, o) in activations {
            for m in 0..=p.inventory.owners().len() {
                let k = MegatronKnobs { recompute_layers: r, offload_layers: o, host_optimizer_owners: m };
                let x = model.evaluate(&k.decisions(&p));
                if x.peak.0 <= model.capacity(budget) {
                    assert!(x.step_time.0 >= best.step_time.0 - 1e-12, "{k:?} beats {best:?}");
                }
            }
        }
        // Nothing fits under the floor.
        assert!(knobs_within(&model, Bytes::gib(1.0)).is_empty());
    }

    #[test]
    fn the_vocabulary_divisor_pads_to_the_padded_vocabulary() {
        assert_eq!(vocab_divisor(50257, 50304), Some(128));
        assert_eq!(vocab_divisor(50257, 50272), Some(32));
        assert_eq!(vocab_divisor(50257, 50257), Some(1));
        assert_eq!(vocab_divisor(50257, 51200), None);
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        let shorts: Vec<String> = [1.6e-4, 1.6000000000000003e-5, 0.95, 1.0, 0.1, 1e-8, 0.0, 123456.0].iter().map(|&x| fmt_g(x)).collect();
        assert_eq!(shorts, ["1.6e-4", "1.6e-5", "0.95", "1", "0.1", "1e-8", "0", "123456"]);
    }
}
