//! Several GPUs, the memory side: what one rank of tensor (TP, `t`), pipeline (PP) and data
//! parallelism (DP) holds, per pipeline stage, counted from the same inventory as one GPU.
//!
//! A rank is one GPU of the `tp x pp x dp` grid; a **pipeline stage** is the `tp x dp` ranks that
//! run the same consecutive layers (all ranks of one pipeline stage hold the same bytes, so this
//! module reports one rank per pipeline stage). "Pipeline stage" is never shortened to "stage",
//! which in DESIGN.md is a part of the step between compute-lane waits.
//!
//! # Parameters, gradients and optimizer state (Megatron-LM's sharding)
//!
//! Pipeline stage `p` of `P` holds layers `p*L/P .. (p+1)*L/P`, the embedding on the first
//! pipeline stage and the final norm and output layer (offplan's output chunks) on the last.
//! With tied embeddings the output chunks are the token table; with `P > 1` Megatron keeps a
//! second copy of that table on the first pipeline stage (its weights, gradients and optimizer
//! state: both copies are parameters, their gradients all-reduced between the two pipeline
//! stages), so the first pipeline stage lists the chunks again as tied copies.
//!
//! Each parameter view of the inventory (`Inventory::params`, the views of each owner's weights)
//! is split over the `t` tensor-parallel ranks or replicated ([`Split`]):
//!
//! ```text
//! column-parallel (split by t):  qkv_w, qkv_b, fc_w, fc_b
//! row-parallel (split by t):     attproj_w, fcproj_w      (their biases attproj_b, fcproj_b replicated)
//! vocabulary-parallel (by t):    wte (untied), the output chunks' rows
//! replicated:                    ln1_*, ln2_*, lnf_*, wpe
//! ```
//!
//! One parameter costs what the inventory's tensors cost: bf16 weights 2 bytes, bf16 gradients 2,
//! fp32 master + m + v 12. ZeRO-1 ([`ZeroStage::One`]) shards the 12 over the `dp` data-parallel
//! ranks: `ceil(params / dp) * 12` per rank (Megatron's distributed optimizer pads its buffer so
//! every data-parallel rank holds an equal part). Weights and gradients stay whole on every
//! data-parallel rank.
//!
//! # Activations per layer, per micro-batch, per rank
//!
//! Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
//! section 4; s sequence, b micro-batch, h hidden, a heads, t tensor-parallel size), with 16-bit
//! activations, 1-byte dropout masks and materialised attention ([`korthikanti_layer_bytes`]):
//!
//! ```text
//! no sequence parallelism:  sbh (10 + 24/t + 5as/(ht))
//! sequence parallelism:     sbh/t (34 + 5as/h)
//! full recomputation:       2sbh (no SP), 2sbh/t (SP)
//! ```
//!
//! Their terms ([`PaperTerm`], [`korthikanti_terms`]) and the inventory tensor that is each one
//! ([`layer_activation_shards`]); "TP" is split by t always (inside the column/row-parallel
//! region, by heads or by the MLP's 4h), "SP" split by t only with sequence parallelism (along
//! the sequence), else replicated on every tensor-parallel rank:
//!
//! ```text
//! paper term                              bytes       split   offplan tensor
//! layer norm inputs                       4sbh        SP      x_in, x_mid
//! QKV and fc inputs (layer norm outputs)  4sbh        SP      ln1, ln2
//! Q, K, V                                 6sbh        TP      qkv
//! softmax output                          2as^2b      TP      att (Materialized)
//! softmax dropout mask                    as^2b       TP      -  (no dropout)
//! softmax dropout output                  2as^2b      TP      -  (no dropout: it is att itself)
//! attention projection input              2sbh        TP      atty
//! GeLU input                              8sbh        TP      fch
//! GeLU output (fcproj input)              8sbh        TP      fch_gelu
//! attention and MLP dropout masks         2sbh        SP      -  (no dropout)
//! (not in the paper's count)             -           SP      ln1_stats, ln2_stats (8sb each, fp32)
//! ```
//!
//! Summed, the split-by-t terms are 24sbh + 5as^2b and the rest 10sbh: the paper's formulas. So
//! for materialised attention offplan's bytes per rank are the paper's minus its dropout terms
//! (the three masks, `as^2b/t + 2sbh`, `(as^2b + 2sbh)/t` with SP, and the softmax dropout
//! output `2as^2b/t`) plus the layer norms' statistics, which the paper's count (of the main
//! contributors only) leaves out (`16sb`, `16sb/t` with SP):
//!
//! ```text
//! no SP:  8sbh + 16sb + (24sbh + 2as^2b)/t
//! SP:     (32sbh + 16sb + 2as^2b)/t
//! ```
//!
//! With fused attention `att` is the log-sum-exp (4abs bytes, fp32, split by heads) and has no
//! paper term. With sequence parallelism Megatron saves the sequence shard of each layer norm
//! output and all-gathers it again in backward, so ln1 and ln2 are split too; full recomputation
//! keeps `x_in`, split by t with sequence parallelism. The last pipeline stage also keeps the
//! head's activations (`x_out`, `lnf`, `lnf_stats`; split by t with sequence parallelism, where
//! the final layer norm runs on the sequence shard).
//!
//! # The pipeline
//!
//! Under 1F1B with `m` micro-batches per step, pipeline stage `p` keeps the activations of
//! `min(P - p, m)` micro-batches in flight ([`micro_batches_in_flight`]): the first pipeline
//! stage the most.

use crate::config::GptConfig;
use crate::inventory::{Inventory, Owner};
use crate::units::Bytes;
use serde::{Serialize, Serializer};
use std::ops::Range;

/// Whether optimizer state is sharded over the data-parallel ranks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum ZeroStage {
    /// Every data-parallel rank holds the whole optimizer state of its shard of the model.
    #[default]
    Off,
    /// ZeRO-1: master weights and Adam moments split over the `dp` ranks.
    One,
}

/// The sizes of the parallel grid: `tp x pp x dp` ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Parallelism {
    /// Tensor-parallel ranks (`--tp`): split heads, the MLP and the vocabulary.
    pub tp: u32,
    /// Pipeline stages (`--pp`): split the layers.
    pub pp: u32,
    /// Data-parallel ranks (`--dp`): replicate the model, split the batch.
    pub dp: u32,
    /// ZeRO stage (`--zero`).
    pub zero: ZeroStage,
    /// Sequence parallelism (`--sequence-parallel`): what tensor parallelism replicates (layer
    /// norms, dropout, the residual stream) is split along the sequence instead.
    pub sequence_parallel: bool,
}

impl Default for Parallelism {
    fn default() -> Self {
        Parallelism::single()
    }
}

/// Why a parallel grid does not fit a config; each names its flag, the values and what fits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParallelError {
    #[error("{flag} is 0: it must be at least 1 (1 means no {what})")]
    Zero { flag: &'static str, what: &'static str },
    #[error(
        "--tp {tp} does not divide the {heads} attention heads (tensor parallelism gives each rank whole heads): \
         --tp values that divide heads, hidden and padded_vocab: {fits}"
    )]
    TpHeads { tp: u32, heads: u32, fits: String },
    #[error(
        "--tp {tp} does not divide hidden {hidden} (the column- and row-parallel products split it): \
         --tp values that divide heads, hidden and padded_vocab: {fits}"
    )]
    TpHidden { tp: u32, hidden: u32, fits: String },
    #[error(
        "--tp {tp} does not divide padded_vocab {padded_vocab} (the vocabulary-parallel embedding and output layer \
         split its rows): --tp values that divide heads, hidden and padded_vocab: {fits}"
    )]
    TpVocab { tp: u32, padded_vocab: u32, fits: String },
    #[error("--pp {pp} does not divide the {layers} layers (every pipeline stage holds as many layers): --pp values that divide {layers}: {fits}")]
    PpLayers { pp: u32, layers: u32, fits: String },
    #[error(
        "--sequence-parallel needs --tp above 1 (it splits over the tensor-parallel ranks what tensor parallelism replicates); --tp is 1"
    )]
    SequenceParallelNeedsTp,
    #[error(
        "--sequence-parallel with --tp {tp} splits the sequence of {seq} tokens over {tp} ranks, and {tp} does not divide it: \
         --tp values that divide heads, hidden, padded_vocab and seq: {fits} (or change --seq)"
    )]
    SequenceParallelSeq { tp: u32, seq: u32, fits: String },
    #[error("--micro-batches is 0: a step needs at least one micro-batch (1F1B keeps every pipeline stage busy from --pp {pp} on)")]
    NoMicroBatches { pp: u32 },
}

/// "1, 2, 4, 8": the `k` in 1..=n that pass `ok`.
fn list(n: u32, ok: impl Fn(u32) -> bool) -> String {
    let v: Vec<String> = (1..=n).filter(|k| ok(*k)).map(|k| k.to_string()).collect();
    v.join(", ")
}

impl Parallelism {
    /// One GPU: (1, 1, 1), no ZeRO, no sequence parallelism.
    pub fn single() -> Parallelism {
        Parallelism { tp: 1, pp: 1, dp: 1, zero: ZeroStage::Off, sequence_parallel: false }
    }

    /// Whether this is [`Parallelism::single`].
    pub fn is_single(&self) -> bool {
        *self == Parallelism::single()
    }

    /// GPUs in the grid: `tp * pp * dp`.
    pub fn ranks(&self) -> u64 {
        self.tp as u64 * self.pp as u64 * self.dp as u64
    }

    /// Checks the grid against `cfg`: sizes at least 1; `tp` divides heads, hidden and
    /// padded_vocab; `pp` divides layers; sequence parallelism needs `tp > 1` dividing seq.
    pub fn validate(&self, cfg: &GptConfig) -> Result<(), ParallelError> {
        for (flag, v, what) in
            [("--tp", self.tp, "tensor parallelism"), ("--pp", self.pp, "pipeline parallelism"), ("--dp", self.dp, "data parallelism")]
        {
            if v == 0 {
                return Err(ParallelError::Zero { flag, what });
            }
        }
        let tp_ok = |k: u32| cfg.heads.is_multiple_of(k) && cfg.hidden.is_multiple_of(k) && cfg.padded_vocab.is_multiple_of(k);
        let fits = || list(cfg.heads, tp_ok);
        let t = self.tp;
        if !cfg.heads.is_multiple_of(t) {
            return Err(ParallelError::TpHeads { tp: t, heads: cfg.heads, fits: fits() });
        }
        if !cfg.hidden.is_multiple_of(t) {
            return Err(ParallelError::TpHidden { tp: t, hidden: cfg.hidden, fits: fits() });
        }
        if !cfg.padded_vocab.is_multiple_of(t) {
            return Err(ParallelError::TpVocab { tp: t, padded_vocab: cfg.padded_vocab, fits: fits() });
        }
        if !cfg.layers.is_multiple_of(self.pp) {
            return Err(ParallelError::PpLayers {
                pp: self.pp,
                layers: cfg.layers,
                fits: list(cfg.layers, |k| cfg.layers.is_multiple_of(k)),
            });
        }
        if self.sequence_parallel {
            if t == 1 {
                return Err(ParallelError::SequenceParallelNeedsTp);
            }
            if !cfg.seq.is_multiple_of(t) {
                let fits = list(cfg.heads, |k| k > 1 && tp_ok(k) && cfg.seq.is_multiple_of(k));
                return Err(ParallelError::SequenceParallelSeq { tp: t, seq: cfg.seq, fits });
            }
        }
        Ok(())
    }
}

/// How a parameter view is laid over the tensor-parallel ranks (Megatron-LM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Split {
    /// Output features split by t: qkv and fc weights and biases.
    ColumnParallel,
    /// Input features split by t: attproj and fcproj weights (their biases are replicated).
    RowParallel,
    /// Vocabulary rows split by t: the token table and the output layer.
    VocabParallel,
    /// Whole on every tensor-parallel rank: layer norms, row-parallel biases, positions.
    Replicated,
}

impl Split {
    /// How `owner`'s parameter view `view` (a name of the inventory's views) is split; `None` for
    /// a name this module does not know (counted replicated, the larger).
    pub fn of_view(owner: Owner, view: &str) -> Option<Split> {
        Some(match (owner, view) {
            (Owner::Layer(_), "qkv_w" | "qkv_b" | "fc_w" | "fc_b") => Split::ColumnParallel,
            (Owner::Layer(_), "attproj_w" | "fcproj_w") => Split::RowParallel,
            (Owner::Layer(_), "attproj_b" | "fcproj_b" | "ln1_w" | "ln1_b" | "ln2_w" | "ln2_b") => Split::Replicated,
            (Owner::Embedding, "wte") | (Owner::OutputChunk(_), "w") => Split::VocabParallel,
            (Owner::Embedding, "wpe") | (Owner::FinalNorm, "lnf_w" | "lnf_b") => Split::Replicated,
            _ => return None,
        })
    }

    pub fn is_split(self) -> bool {
        self != Split::Replicated
    }
}

/// Parameters of `owner` on one tensor-parallel rank of `tp`: each of its inventory views split
/// or replicated as [`Split::of_view`] says.
pub fn owner_params_per_rank(inv: &Inventory, owner: Owner, tp: u32) -> u64 {
    let weights = inv.tensor(inv.params(owner).weights);
    weights
        .views
        .iter()
        .map(|v| match Split::of_view(owner, &v.name) {
            Some(s) if s.is_split() => v.elems().div_ceil(tp as u64),
            _ => v.elems(),
        })
        .sum()
}

/// Layers of pipeline stage `stage` of `pp`: `stage*L/pp .. (stage+1)*L/pp`.
pub fn stage_layers(layers: u32, pp: u32, stage: u32) -> Range<u32> {
    let per = layers / pp;
    stage * per..(stage + 1) * per
}

/// Micro-batches whose activations pipeline stage `stage` of `pp` keeps at once under 1F1B with
/// `micro_batches` per step: `min(pp - stage, micro_batches)`.
pub fn micro_batches_in_flight(stage: u32, pp: u32, micro_batches: u32) -> u32 {
    pp.saturating_sub(stage).min(micro_batches)
}

/// One owner held by a pipeline stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OwnerShard {
    #[serde(serialize_with = "owner_name")]
    pub owner: Owner,
    /// Parameters of it on one rank.
    pub params_per_rank: u64,
    /// The first pipeline stage's copy of a tied token table (the output chunks are the table).
    pub tied_copy: bool,
}

/// Owners pipeline stage `stage` of `par.pp` holds, in program order, tied copies after the
/// embedding.
pub fn stage_owners(inv: &Inventory, cfg: &GptConfig, par: &Parallelism, stage: u32) -> Vec<OwnerShard> {
    let last = stage + 1 == par.pp;
    let shard = |owner, tied_copy| OwnerShard { owner, params_per_rank: owner_params_per_rank(inv, owner, par.tp), tied_copy };
    let chunks = || (0..inv.chunks.len() as u32).map(Owner::OutputChunk);
    let mut v = Vec::new();
    if stage == 0 {
        v.push(shard(Owner::Embedding, false));
        if cfg.tied_embeddings && !last {
            v.extend(chunks().map(|o| shard(o, true)));
        }
    }
    v.extend(stage_layers(cfg.layers, par.pp, stage).map(|l| shard(Owner::Layer(l), false)));
    if last {
        v.push(shard(Owner::FinalNorm, false));
        v.extend(chunks().map(|o| shard(o, false)));
    }
    v
}

/// How a saved activation is laid over the tensor-parallel ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ActivationSplit {
    /// Inside the column/row-parallel region: split by heads (or the MLP's 4h) whenever t > 1.
    TensorParallel,
    /// Split along the sequence with sequence parallelism, else whole on every rank.
    SequenceParallel,
}

/// The terms of Korthikanti et al. 2022's per-layer activation memory (section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PaperTerm {
    /// The inputs of the two layer norms: 4sbh.
    LayerNormInputs,
    /// The inputs of the QKV and fc products (the layer norms' outputs): 4sbh.
    LinearInputs,
    /// Q, K and V: 6sbh.
    QueryKeyValue,
    /// The softmax output: 2as^2b.
    SoftmaxOutput,
    /// The softmax dropout mask, 1 byte: as^2b.
    SoftmaxDropoutMask,
    /// The softmax dropout output (attention over values' input): 2as^2b.
    SoftmaxDropoutOutput,
    /// The attention projection's input: 2sbh.
    ProjectionInput,
    /// The GeLU input: 8sbh.
    GeluInput,
    /// The GeLU output (the second MLP product's input): 8sbh.
    GeluOutput,
    /// The attention and MLP dropout masks, 1 byte each: 2sbh.
    DropoutMasks,
}

impl PaperTerm {
    pub const ALL: [PaperTerm; 10] = [
        PaperTerm::LayerNormInputs,
        PaperTerm::LinearInputs,
        PaperTerm::QueryKeyValue,
        PaperTerm::SoftmaxOutput,
        PaperTerm::SoftmaxDropoutMask,
        PaperTerm::SoftmaxDropoutOutput,
        PaperTerm::ProjectionInput,
        PaperTerm::GeluInput,
        PaperTerm::GeluOutput,
        PaperTerm::DropoutMasks,
    ];

    /// Whether the term exists only with dropout (the masks and the softmax dropout output).
    pub fn is_dropout(self) -> bool {
        matches!(self, PaperTerm::SoftmaxDropoutMask | PaperTerm::SoftmaxDropoutOutput | PaperTerm::DropoutMasks)
    }

    /// Whether tensor parallelism alone splits it (else only sequence parallelism does).
    pub fn split(self) -> ActivationSplit {
        match self {
            PaperTerm::LayerNormInputs | PaperTerm::LinearInputs | PaperTerm::DropoutMasks => ActivationSplit::SequenceParallel,
            _ => ActivationSplit::TensorParallel,
        }
    }
}

/// Korthikanti et al.'s terms per rank, in bytes, for sequence `s`, micro-batch `b`, hidden `h`,
/// heads `a`, tensor-parallel size `t`, with or without sequence parallelism.
pub fn korthikanti_terms(s: u64, b: u64, h: u64, a: u64, t: u64, sp: bool) -> Vec<(PaperTerm, f64)> {
    let (s, b, h, a, t) = (s as f64, b as f64, h as f64, a as f64, t as f64);
    let (sbh, as2b) = (s * b * h, a * s * s * b);
    PaperTerm::ALL
        .iter()
        .map(|term| {
            let full = match term {
                PaperTerm::LayerNormInputs | PaperTerm::LinearInputs => 4.0 * sbh,
                PaperTerm::QueryKeyValue => 6.0 * sbh,
                PaperTerm::SoftmaxOutput | PaperTerm::SoftmaxDropoutOutput => 2.0 * as2b,
                PaperTerm::SoftmaxDropoutMask => as2b,
                PaperTerm::ProjectionInput | PaperTerm::DropoutMasks => 2.0 * sbh,
                PaperTerm::GeluInput | PaperTerm::GeluOutput => 8.0 * sbh,
            };
            let split = sp || term.split() == ActivationSplit::TensorParallel;
            (*term, if split { full / t } else { full })
        })
        .collect()
}

/// Korthikanti et al.'s activation bytes of one layer per rank, their closed form:
/// `sbh(10 + 24/t + 5as/(ht))`, or `sbh/t (34 + 5as/h)` with sequence parallelism.
pub fn korthikanti_layer_bytes(s: u64, b: u64, h: u64, a: u64, t: u64, sp: bool) -> f64 {
    let (s, b, h, a, t) = (s as f64, b as f64, h as f64, a as f64, t as f64);
    if sp {
        s * b * h / t * (34.0 + 5.0 * a * s / h)
    } else {
        s * b * h * (10.0 + 24.0 / t + 5.0 * a * s / (h * t))
    }
}

/// Korthikanti et al.'s bytes of one layer under full recomputation: `2sbh`, `2sbh/t` with SP.
pub fn korthikanti_recompute_bytes(s: u64, b: u64, h: u64, t: u64, sp: bool) -> f64 {
    let full = 2.0 * s as f64 * b as f64 * h as f64;
    if sp {
        full / t as f64
    } else {
        full
    }
}

/// One saved activation of a layer (or of the head) on one rank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActivationShard {
    /// The inventory's name without the layer prefix (`qkv`, `att_lse`, ...).
    pub tensor: String,
    /// Its bytes on one GPU (the inventory's).
    #[serde(serialize_with = "bytes_u64")]
    pub bytes: Bytes,
    /// Its bytes on one rank.
    #[serde(serialize_with = "bytes_u64")]
    pub per_rank: Bytes,
    pub split: ActivationSplit,
    /// The paper's term it is (module docs); `None` for what the paper leaves out (layer norm
    /// statistics) or computes otherwise (fused attention's log-sum-exp).
    pub paper: Option<PaperTerm>,
}

fn shard(inv: &Inventory, id: crate::TensorId, split: ActivationSplit, paper: Option<PaperTerm>, par: &Parallelism) -> ActivationShard {
    let t = inv.tensor(id);
    let divided = match split {
        ActivationSplit::TensorParallel => true,
        ActivationSplit::SequenceParallel => par.sequence_parallel,
    };
    let per_rank = if divided { Bytes(t.bytes.0.div_ceil(par.tp as u64)) } else { t.bytes };
    let tensor = t.name.split_once('.').map_or(t.name.as_str(), |(_, n)| n).to_string();
    ActivationShard { tensor, bytes: t.bytes, per_rank, split, paper }
}

/// The saved activations of `layer` per micro-batch on one rank: each inventory tensor, its
/// split and its paper term (the module docs' table).
pub fn layer_activation_shards(inv: &Inventory, layer: u32, par: &Parallelism) -> Vec<ActivationShard> {
    use ActivationSplit::{SequenceParallel as Sp, TensorParallel as Tp};
    use PaperTerm as P;
    let a = &inv.acts[layer as usize];
    let att_term = match inv.tensor(a.att).shape.len() {
        4 => Some(P::SoftmaxOutput),
        _ => None,
    };
    [
        (a.x_in, Sp, Some(P::LayerNormInputs)),
        (a.ln1, Sp, Some(P::LinearInputs)),
        (a.ln1_stats, Sp, None),
        (a.qkv, Tp, Some(P::QueryKeyValue)),
        (a.att, Tp, att_term),
        (a.atty, Tp, Some(P::ProjectionInput)),
        (a.x_mid, Sp, Some(P::LayerNormInputs)),
        (a.ln2, Sp, Some(P::LinearInputs)),
        (a.ln2_stats, Sp, None),
        (a.fch, Tp, Some(P::GeluInput)),
        (a.fch_gelu, Tp, Some(P::GeluOutput)),
    ]
    .into_iter()
    .map(|(id, split, paper)| shard(inv, id, split, paper, par))
    .collect()
}

/// The head's saved activations (final norm input, output and statistics) on one rank of the
/// last pipeline stage.
pub fn head_activation_shards(inv: &Inventory, par: &Parallelism) -> Vec<ActivationShard> {
    let h = &inv.head;
    [h.x_out, h.lnf, h.lnf_stats].into_iter().map(|id| shard(inv, id, ActivationSplit::SequenceParallel, None, par)).collect()
}

fn sum(shards: &[ActivationShard]) -> Bytes {
    shards.iter().map(|s| s.per_rank).sum()
}

/// What one rank of one pipeline stage holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StageMemory {
    /// The pipeline stage, 0 first.
    pub pipeline_stage: u32,
    pub layers: Range<u32>,
    pub owners: Vec<OwnerShard>,
    pub params_per_rank: u64,
    #[serde(serialize_with = "bytes_u64")]
    pub weight_bytes: Bytes,
    #[serde(serialize_with = "bytes_u64")]
    pub grad_bytes: Bytes,
    /// Master weights and Adam moments (divided by dp with ZeRO-1).
    #[serde(serialize_with = "bytes_u64")]
    pub optimizer_bytes: Bytes,
    /// Saved activations of its layers and (last pipeline stage) the head, one micro-batch.
    #[serde(serialize_with = "bytes_u64")]
    pub activation_bytes_per_micro_batch: Bytes,
    /// Of those, the head's (last pipeline stage only).
    #[serde(serialize_with = "bytes_u64")]
    pub head_activation_bytes: Bytes,
    /// Micro-batches held at once under 1F1B.
    pub micro_batches_in_flight: u32,
    #[serde(serialize_with = "bytes_u64")]
    pub activation_bytes_in_flight: Bytes,
    /// Weights, gradients, optimizer state and the activations in flight, all on the GPU (no
    /// scratch, workspace, communication buffers or the device's fixed overhead).
    #[serde(serialize_with = "bytes_u64")]
    pub total_bytes: Bytes,
}

impl StageMemory {
    /// Owners that are tied copies (the first pipeline stage's token table, tied embeddings).
    pub fn tied_copies(&self) -> usize {
        self.owners.iter().filter(|o| o.tied_copy).count()
    }
}

/// Every pipeline stage of a grid, with the per-layer activation breakdown.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParallelMemory {
    pub parallelism: Parallelism,
    pub ranks: u64,
    /// Micro-batches per step (1F1B).
    pub micro_batches: u32,
    /// Layer 0's saved activations per micro-batch on one rank (every layer's are alike).
    pub layer_activations: Vec<ActivationShard>,
    #[serde(serialize_with = "bytes_u64")]
    pub layer_activation_bytes: Bytes,
    /// What full recomputation keeps of a layer on one rank (its input).
    #[serde(serialize_with = "bytes_u64")]
    pub recompute_layer_bytes: Bytes,
    /// Korthikanti et al. 2022 for the same shape (1-byte dropout masks, materialised attention).
    pub korthikanti_layer_bytes: f64,
    pub korthikanti_recompute_bytes: f64,
    pub stages: Vec<StageMemory>,
}

impl ParallelMemory {
    /// The memory of every pipeline stage of `par` for `cfg` with `micro_batches` per step;
    /// checks the grid first.
    pub fn of(cfg: &GptConfig, par: &Parallelism, micro_batches: u32) -> Result<ParallelMemory, ParallelError> {
        par.validate(cfg)?;
        if micro_batches == 0 {
            return Err(ParallelError::NoMicroBatches { pp: par.pp });
        }
        let inv = Inventory::build(cfg);
        let stages = (0..par.pp).map(|p| stage_memory(&inv, cfg, par, micro_batches, p)).collect();
        let layer_activations = layer_activation_shards(&inv, 0, par);
        let (s, b, h, a, t) = (cfg.seq as u64, cfg.batch as u64, cfg.hidden as u64, cfg.heads as u64, par.tp as u64);
        let sp = par.sequence_parallel;
        Ok(ParallelMemory {
            parallelism: *par,
            ranks: par.ranks(),
            micro_batches,
            layer_activation_bytes: sum(&layer_activations),
            recompute_layer_bytes: layer_activations[0].per_rank,
            layer_activations,
            korthikanti_layer_bytes: korthikanti_layer_bytes(s, b, h, a, t, sp),
            korthikanti_recompute_bytes: korthikanti_recompute_bytes(s, b, h, t, sp),
            stages,
        })
    }
}

/// What one rank of pipeline stage `p` holds.
pub fn stage_memory(inv: &Inventory, cfg: &GptConfig, par: &Parallelism, micro_batches: u32, p: u32) -> StageMemory {
    let owners = stage_owners(inv, cfg, par, p);
    let per_param = |owner: Owner, f: fn(&crate::inventory::ParamTensors) -> crate::TensorId| {
        let pt = inv.params(owner);
        inv.tensor(f(pt)).bytes.0 / pt.params.max(1)
    };
    let bytes = |f: fn(&crate::inventory::ParamTensors) -> crate::TensorId| {
        Bytes(owners.iter().map(|o| o.params_per_rank * per_param(o.owner, f)).sum())
    };
    let params_per_rank: u64 = owners.iter().map(|o| o.params_per_rank).sum();
    let optimizer_bytes = match par.zero {
        ZeroStage::Off => bytes(|p| p.optimizer),
        ZeroStage::One => {
            let per = per_param(Owner::FinalNorm, |p| p.optimizer);
            Bytes(params_per_rank.div_ceil(par.dp as u64) * per)
        }
    };
    let layers = stage_layers(cfg.layers, par.pp, p);
    let last = p + 1 == par.pp;
    let head_activation_bytes = if last { sum(&head_activation_shards(inv, par)) } else { Bytes::ZERO };
    let layer_bytes: Bytes = layers.clone().map(|l| sum(&layer_activation_shards(inv, l, par))).sum();
    let activation_bytes_per_micro_batch = layer_bytes + head_activation_bytes;
    let micro_batches_in_flight = micro_batches_in_flight(p, par.pp, micro_batches);
    let activation_bytes_in_flight = activation_bytes_per_micro_batch * micro_batches_in_flight as u64;
    let weight_bytes = bytes(|p| p.weights);
    let grad_bytes = bytes(|p| p.grads);
    StageMemory {
        pipeline_stage: p,
        layers,
        owners,
        params_per_rank,
        weight_bytes,
        grad_bytes,
        optimizer_bytes,
        activation_bytes_per_micro_batch,
        head_activation_bytes,
        micro_batches_in_flight,
        activation_bytes_in_flight,
        total_bytes: weight_bytes + grad_bytes + optimizer_bytes + activation_bytes_in_flight,
    }
}

fn bytes_u64<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(b.0)
}

fn owner_name<S: Serializer>(o: &Owner, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Attention, Precision};
    use crate::inventory::TensorClass;

    fn gpt3_175b(attention: Attention) -> GptConfig {
        GptConfig {
            name: "gpt3-175b".into(),
            layers: 96,
            hidden: 12288,
            heads: 96,
            vocab: 50257,
            padded_vocab: 50304,
            max_seq: 2048,
            batch: 1,
            seq: 2048,
            tied_embeddings: false,
            attention,
            precision: Precision::default(),
            output_chunks: 8,
        }
    }

    fn grid(tp: u32, pp: u32, dp: u32, sp: bool) -> Parallelism {
        Parallelism { tp, pp, dp, zero: ZeroStage::Off, sequence_parallel: sp }
    }

    #[test]
    fn every_inventory_view_has_a_split() {
        for tied in [true, false] {
            let inv = Inventory::build(&crate::inventory::tests::cfg(Attention::Fused, tied));
            for o in inv.owners() {
                for v in &inv.tensor(inv.params(o).weights).views {
                    assert!(Split::of_view(o, &v.name).is_some(), "{o}.{}", v.name);
                }
            }
        }
    }

    #[test]
    fn one_gpu_is_the_inventory_exactly() {
        for attention in [Attention::Fused, Attention::Materialized] {
            for tied in [true, false] {
                let cfg = crate::inventory::tests::cfg(attention, tied);
                let inv = Inventory::build(&cfg);
                let m = ParallelMemory::of(&cfg, &Parallelism::single(), 1).unwrap();
                assert_eq!(m.stages.len(), 1);
                let s = &m.stages[0];
                assert_eq!(s.params_per_rank, inv.param_count());
                assert_eq!(s.weight_bytes, inv.bytes_of(TensorClass::Weights));
                assert_eq!(s.grad_bytes, inv.bytes_of(TensorClass::Grads));
                assert_eq!(s.optimizer_bytes, inv.bytes_of(TensorClass::OptimizerState));
                assert_eq!(s.activation_bytes_in_flight, inv.bytes_of(TensorClass::Activations));
                assert_eq!(m.layer_activation_bytes, inv.layer_activation_bytes(0));
                assert_eq!(s.owners.len(), inv.owners().len());
                assert_eq!(s.tied_copies(), 0);
            }
        }
    }

    /// The module docs' mapping, term by term: offplan's tensors per rank are the paper's terms
    /// less its dropout terms, plus the layer norm statistics.
    #[test]
    fn materialised_attention_is_the_paper_less_dropout_term_by_term() {
        let cfg = gpt3_175b(Attention::Materialized);
        let inv = Inventory::build(&cfg);
        let (s, b, h, a) = (2048u64, 1u64, 12288u64, 96u64);
        for (t, sp) in [(1, false), (8, false), (8, true), (4, true), (2, false)] {
            let par = grid(t, 1, 1, sp);
            let shards = layer_activation_shards(&inv, 0, &par);
            let terms = korthikanti_terms(s, b, h, a, t as u64, sp);
            let closed = korthikanti_layer_bytes(s, b, h, a, t as u64, sp);
            assert_eq!(terms.iter().map(|(_, v)| v).sum::<f64>(), closed, "the terms add up to the closed form");
            let mut dropout = 0.0;
            for (term, v) in &terms {
                let ours: u64 = shards.iter().filter(|x| x.paper == Some(*term)).map(|x| x.per_rank.0).sum();
                if term.is_dropout() {
                    assert_eq!(ours, 0, "{term:?}: no dropout");
                    dropout += v;
                } else {
                    assert_eq!(ours as f64, *v, "{term:?} at t {t} sp {sp}");
                }
            }
            let stats: u64 = shards.iter().filter(|x| x.paper.is_none()).map(|x| x.per_rank.0).sum();
            let stats_expected = if sp { 16 * s * b / t as u64 } else { 16 * s * b };
            assert_eq!(stats, stats_expected, "only the layer norms' statistics are outside the paper");
            assert_eq!(sum(&shards).0 as f64, closed - dropout + stats as f64);
        }
    }

    #[test]
    fn gpt3_175b_at_tp8_pp8_holds_the_hand_computed_shards() {
        let cfg = gpt3_175b(Attention::Fused);
        let m = ParallelMemory::of(&cfg, &grid(8, 8, 1, false), 8).unwrap();
        let (h, vp, n_ctx) = (12288u64, 50304u64, 2048u64);
        // qkv (3h^2 + 3h)/8, attproj h^2/8 + h, fc (4h^2 + 4h)/8, fcproj 4h^2/8 + h, two norms 4h.
        let layer = (3 * h * h + 3 * h) / 8 + h * h / 8 + h + (4 * h * h + 4 * h) / 8 + 4 * h * h / 8 + h + 4 * h;
        assert_eq!(layer, 226_576_896);
        let embedding = vp * h / 8 + n_ctx * h;
        let output = vp * h / 8 + 2 * h;
        for s in &m.stages {
            assert_eq!(s.layers.len(), 12);
            let extra = match s.pipeline_stage {
                0 => embedding,
                7 => output,
                _ => 0,
            };
            assert_eq!(s.params_per_rank, 12 * layer + extra, "pipeline stage {}", s.pipeline_stage);
            assert_eq!(s.weight_bytes.0, 2 * s.params_per_rank);
            assert_eq!(s.optimizer_bytes.0, 12 * s.params_per_rank);
            assert_eq!(s.micro_batches_in_flight, 8 - s.pipeline_stage);
        }
        assert_eq!(m.stages[0].params_per_rank, 2_821_355_520);
        assert_eq!(m.stages[7].params_per_rank, 2_796_214_272);
        assert!(m.stages[0].total_bytes > m.stages[1].total_bytes, "the first pipeline stage holds the most");
    }

    #[test]
    fn zero_one_divides_the_optimizer_state_by_dp() {
        let cfg = gpt3_175b(Attention::Fused);
        let off = ParallelMemory::of(&cfg, &grid(8, 8, 4, false), 8).unwrap();
        let one = ParallelMemory::of(&cfg, &Parallelism { zero: ZeroStage::One, ..grid(8, 8, 4, false) }, 8).unwrap();
        for (a, b) in off.stages.iter().zip(&one.stages) {
            assert_eq!(a.optimizer_bytes.0, 4 * b.optimizer_bytes.0);
            assert_eq!(a.weight_bytes, b.weight_bytes);
            assert_eq!(a.grad_bytes, b.grad_bytes);
        }
    }

    #[test]
    fn tied_embeddings_put_the_token_table_on_the_first_and_last_pipeline_stages() {
        let cfg = crate::inventory::tests::cfg(Attention::Fused, true);
        let m = ParallelMemory::of(&cfg, &grid(2, 3, 1, false), 3).unwrap();
        let table = 512 * 64 / 2;
        let chunks =
            |s: &StageMemory| s.owners.iter().filter(|o| matches!(o.owner, Owner::OutputChunk(_))).map(|o| o.params_per_rank).sum::<u64>();
        assert_eq!(m.stages[0].tied_copies(), 4);
        assert_eq!(chunks(&m.stages[0]), table);
        assert_eq!(chunks(&m.stages[1]), 0);
        assert_eq!(chunks(&m.stages[2]), table);
        assert_eq!(m.stages[2].tied_copies(), 0);
    }

    #[test]
    fn one_f_one_b_keeps_the_most_on_the_first_pipeline_stage() {
        assert_eq!((0..4).map(|p| micro_batches_in_flight(p, 4, 8)).collect::<Vec<_>>(), [4, 3, 2, 1]);
        assert_eq!((0..4).map(|p| micro_batches_in_flight(p, 4, 2)).collect::<Vec<_>>(), [2, 2, 2, 1]);
        assert_eq!(stage_layers(96, 8, 7), 84..96);
    }

    #[test]
    fn bad_grids_name_their_flag_and_what_fits() {
        let cfg = gpt3_175b(Attention::Fused);
        let e = grid(7, 1, 1, false).validate(&cfg).unwrap_err().to_string();
        assert!(e.contains("--tp 7") && e.contains("96 attention heads") && e.contains("1, 2, 3, 4, 6, 8"), "{e}");
        // An unpadded vocabulary of 50257 (odd) takes no tensor parallelism at all.
        let odd = GptConfig { padded_vocab: 50257, output_chunks: 1, ..cfg.clone() };
        let e = grid(2, 1, 1, false).validate(&odd).unwrap_err().to_string();
        assert!(e.contains("--tp 2") && e.contains("padded_vocab 50257") && e.ends_with("padded_vocab: 1"), "{e}");
        let e = grid(1, 5, 1, false).validate(&cfg).unwrap_err().to_string();
        assert!(e.contains("--pp 5") && e.contains("96 layers") && e.contains("1, 2, 3, 4, 6, 8, 12"), "{e}");
        let e = grid(1, 1, 1, true).validate(&cfg).unwrap_err().to_string();
        assert!(e.contains("--sequence-parallel") && e.contains("--tp"), "{e}");
        let e = grid(3, 1, 1, true).validate(&cfg).unwrap_err().to_string();
        assert!(e.contains("seq") && e.contains("2048") && e.contains("2, 4, 8, 16"), "{e}");
        let e = grid(1, 0, 1, false).validate(&cfg).unwrap_err().to_string();
        assert!(e.contains("--pp is 0"), "{e}");
        assert!(matches!(ParallelMemory::of(&cfg, &Parallelism::single(), 0), Err(ParallelError::NoMicroBatches { .. })));
    }
}
