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
//! The pipeline idles `(P - 1) / (m + P - 1)` of the step ([`bubble_fraction`]; Narayanan et
//! al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using
//! Megatron-LM", give the bubble over the ideal time, `(P - 1) / m`).
//!
//! # Collectives
//!
//! What one rank sends and receives per step ([`stage_collectives`], as [`Collective`] data:
//! kind, group, ranks in it, bytes per call, calls per step), after the Megatron-LM paper
//! (Shoeybi et al. 2019, section 3) and Korthikanti et al. 2022 (section 4.2.2). `A = bsh` 16-bit
//! values (the residual stream of one micro-batch, 2bsh bytes), `L` the pipeline stage's layers,
//! `m` micro-batches:
//!
//! ```text
//! TP, no SP   per layer and micro-batch: 2 all-reduces of A forward (after the row-parallel
//!             attention projection and fcproj: Megatron's g) and 2 backward (the gradients of
//!             the column-parallel qkv's and fc's inputs: its f); the vocabulary-parallel
//!             embedding's output, all-reduced forward (first pipeline stage), and the output
//!             layer's input gradient, all-reduced backward (last)
//! TP, SP      each all-reduce becomes a reduce-scatter and an all-gather of the same A: the
//!             same bytes on the wire (a ring all-reduce is a reduce-scatter then an
//!             all-gather); forward 2 all-gathers + 2 reduce-scatters per layer, backward the
//!             same plus the 2 all-gathers Megatron-LM makes again of the layer norm outputs for
//!             the weight gradients (it saves only their sequence shard); the embedding's output
//!             reduce-scattered, the final norm's output all-gathered (and again in backward),
//!             the output layer's input gradient reduce-scattered; once per step, the gradients
//!             of the replicated parameters inside the sequence-parallel region (layer norms,
//!             row-parallel biases) all-reduced
//! TP, head    the cross-entropy fused with the vocabulary-parallel output layer: only
//!             per-token scalars cross TP ranks, 3 all-reduces of bs fp32 per micro-batch
//!             (the max, the sum of exp, the target's logit); each rank folds its output chunks
//!             first, so the chunks add none
//! PP          per micro-batch, forward the activation A (A/t with SP) sent to the next
//!             pipeline stage and received from the previous one, backward its gradient the
//!             other way; tied embeddings: the token table's gradient all-reduced between the
//!             first and last pipeline stage once per step (Megatron's embedding group)
//! DP          once per step, the gradients of the rank's parameters all-reduced in bf16
//!             (Megatron-LM's default, without --accumulate-allreduce-grads-in-fp32); ZeRO-1
//!             (the distributed optimizer): a reduce-scatter of them and an all-gather of the
//!             updated bf16 weights (padded to a multiple of dp, as the optimizer's shards)
//! ```
//!
//! Bytes are per rank per call, the whole buffer (an all-reduce's, a reduce-scatter's input, an
//! all-gather's output), as NCCL's tests count them; each call's time is the ring model's
//! ([`CollectiveKind::ring_time`]) at the bus bandwidth and latency of the link its group runs
//! over, from the profile's `interconnect` (`models::hardware::Interconnect`). Ranks are laid
//! out as Megatron-LM does by default ([`RANK_LAYOUT`]: TP fastest, then DP, then PP), so a
//! group lies within a node when its ranks' span does ([`within_node`]): TP groups first, then
//! DP, then the pipeline's neighbours. A stage's time per step ([`StageCommunication`]) sums its
//! calls as if none overlapped another or the compute (what they would add to the step were
//! none hidden); their overlap is the multi-rank simulator's (not there yet).

use crate::config::GptConfig;
use crate::hardware::{HardwareProfile, Interconnect, LinkRate};
use crate::inventory::{Inventory, Owner};
use crate::units::{Bytes, Seconds};
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
    #[error(
        "--tp {tp} x --pp {pp} x --dp {dp} is {ranks} ranks, more than the {gpus} GPUs of the hardware profile `{profile}` \
         ({nodes} node(s) of {gpus_per_node}): shrink the grid, or describe a machine of {nodes_needed} nodes (`nodes: {nodes_needed}` in \
         the profile's interconnect, with its inter_node link)"
    )]
    TooManyRanks { tp: u32, pp: u32, dp: u32, ranks: u64, profile: String, nodes: u32, gpus_per_node: u32, gpus: u64, nodes_needed: u64 },
    #[error(
        "the hardware profile `{profile}` has no `interconnect` section, so the collectives of {ranks} ranks cannot be timed \
         (their bytes can: leave out --hardware; the memory needs no profile); see models/hardware/h100-sxm.ron for one"
    )]
    NoInterconnect { profile: String, ranks: u64 },
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
        let inv = grid_inventory(cfg, par, micro_batches)?;
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

/// What a collective does (NCCL's names; a pipeline send or receive is `SendRecv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CollectiveKind {
    AllReduce,
    ReduceScatter,
    AllGather,
    /// One point-to-point transfer between two pipeline stages (a send, or its receive).
    SendRecv,
}

impl CollectiveKind {
    pub fn name(self) -> &'static str {
        match self {
            CollectiveKind::AllReduce => "all-reduce",
            CollectiveKind::ReduceScatter => "reduce-scatter",
            CollectiveKind::AllGather => "all-gather",
            CollectiveKind::SendRecv => "send/recv",
        }
    }

    /// One call of `bytes` (the whole buffer: an all-reduce's, a reduce-scatter's input, an
    /// all-gather's output, a transfer's) among `n` ranks over `link`, by the ring model:
    ///
    /// ```text
    /// all-reduce                  2(n-1)/n * bytes / bandwidth + 2(n-1) * latency
    /// reduce-scatter, all-gather   (n-1)/n * bytes / bandwidth +  (n-1) * latency
    /// send/recv                            bytes / bandwidth +         latency
    /// ```
    ///
    /// with `bandwidth` the bus bandwidth as NCCL reports it (its `busbw` is `algbw` times the
    /// same factors, so these are NCCL's times at that busbw). Zero for a group of one.
    pub fn ring_time(self, bytes: Bytes, n: u32, link: LinkRate) -> Seconds {
        let (b, bw, lat) = (bytes.0 as f64, link.bandwidth.0, link.latency.0);
        let steps = n.saturating_sub(1) as f64;
        let n = n.max(1) as f64;
        match self {
            CollectiveKind::AllReduce => Seconds(2.0 * steps / n * b / bw + 2.0 * steps * lat),
            CollectiveKind::ReduceScatter | CollectiveKind::AllGather => Seconds(steps / n * b / bw + steps * lat),
            CollectiveKind::SendRecv => Seconds(b / bw + lat),
        }
    }
}

/// The process group a collective runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Group {
    /// The `tp` ranks of one tensor-parallel group (consecutive ranks).
    Tp,
    /// The `dp` ranks holding the same shard of the model (stride `tp`).
    Dp,
    /// Ranks of two pipeline stages (stride `tp * dp`): a send/recv, or the tied token table's
    /// gradient between the first and last pipeline stage (Megatron's embedding group).
    Pp,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Tp => "TP",
            Group::Dp => "DP",
            Group::Pp => "PP",
        }
    }
}

/// One collective of one rank, as data: what it moves per call and how often per step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Collective {
    pub kind: CollectiveKind,
    pub group: Group,
    /// Ranks taking part (`n` of the ring model): tp, dp, or 2 for the PP group's.
    pub ranks: u32,
    /// Per rank per call: the whole buffer (see [`CollectiveKind::ring_time`]).
    #[serde(serialize_with = "bytes_u64")]
    pub bytes: Bytes,
    pub calls_per_step: u32,
    /// For the PP group: the two pipeline stages it joins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_stages: Option<[u32; 2]>,
    /// What it carries, in words.
    pub what: String,
}

impl Collective {
    pub fn bytes_per_step(&self) -> Bytes {
        self.bytes * self.calls_per_step as u64
    }
}

/// The rank layout assumed (Megatron-LM's default order, `tp-cp-ep-dp-pp` without context or
/// expert parallelism): tensor-parallel rank fastest, then data-parallel, then pipeline stage.
pub const RANK_LAYOUT: &str =
    "rank = t + T (d + D p): TP fastest, then DP, then PP (Megatron-LM's default order); node = rank / gpus_per_node";

/// The global rank of tensor-parallel rank `t`, data-parallel rank `d`, pipeline stage `p`.
pub fn rank_of(par: &Parallelism, t: u32, d: u32, p: u32) -> u64 {
    t as u64 + par.tp as u64 * (d as u64 + par.dp as u64 * p as u64)
}

/// Whether every instance of `c`'s group lies within one node of `gpus_per_node` GPUs under
/// [`RANK_LAYOUT`] (for TP and DP groups, whose ranks are in increasing order, it is enough that
/// the first and last share a node: the span rule). A group across nodes runs at the
/// inter-node link's rate (the ring's slowest link), every step at its latency.
pub fn within_node(c: &Collective, par: &Parallelism, gpus_per_node: u32) -> bool {
    let g = gpus_per_node.max(1) as u64;
    let same = |a: u64, b: u64| a / g == b / g;
    match c.group {
        Group::Tp => (0..par.dp).all(|d| (0..par.pp).all(|p| same(rank_of(par, 0, d, p), rank_of(par, par.tp - 1, d, p)))),
        Group::Dp => (0..par.tp).all(|t| (0..par.pp).all(|p| same(rank_of(par, t, 0, p), rank_of(par, t, par.dp - 1, p)))),
        Group::Pp => {
            let [a, b] = c.pipeline_stages.unwrap_or([0, par.pp - 1]);
            (0..par.tp).all(|t| (0..par.dp).all(|d| same(rank_of(par, t, d, a), rank_of(par, t, d, b))))
        }
    }
}

/// The fraction of a 1F1B step the pipeline idles: `(P - 1) / (M + P - 1)` for `P` pipeline
/// stages and `M` micro-batches (Narayanan et al. 2021 give the bubble over the ideal time,
/// `(P - 1) / M`; over the whole step it is this). 0 for one pipeline stage.
pub fn bubble_fraction(pp: u32, micro_batches: u32) -> f64 {
    let (p, m) = (pp.max(1) as f64, micro_batches as f64);
    if p <= 1.0 {
        return 0.0;
    }
    (p - 1.0) / (m + p - 1.0)
}

/// Every collective of one rank of pipeline stage `stage` per step of `micro_batches`
/// micro-batches (module docs, "Collectives"), in the order: TP, PP, DP. Groups of one rank
/// have none.
pub fn stage_collectives(inv: &Inventory, cfg: &GptConfig, par: &Parallelism, micro_batches: u32, stage: u32) -> Vec<Collective> {
    use CollectiveKind::{AllGather as Ag, AllReduce as Ar, ReduceScatter as Rs, SendRecv as Sr};
    let (t, m) = (par.tp, micro_batches);
    let (first, last) = (stage == 0, stage + 1 == par.pp);
    let layers = stage_layers(cfg.layers, par.pp, stage).len() as u32;
    let sp = par.sequence_parallel;
    // The residual stream of one micro-batch, b*s*h, 16-bit: the inventory's layer input.
    let act = inv.tensor(inv.acts[0].x_in).bytes;
    let tokens = cfg.batch as u64 * cfg.seq as u64;
    let norm = inv.params(Owner::FinalNorm);
    let per_param = |t| inv.tensor(t).bytes.0 / norm.params.max(1);
    let (grad_per_param, weight_per_param) = (per_param(norm.grads), per_param(norm.weights));
    let c = |kind, group, ranks: u32, bytes: Bytes, calls: u32, what: &str| Collective {
        kind,
        group,
        ranks,
        bytes,
        calls_per_step: calls,
        pipeline_stages: None,
        what: what.to_string(),
    };
    let tp = |kind, bytes, calls, what: &str| c(kind, Group::Tp, t, bytes, calls, what);
    let per_layer = 2 * layers * m;
    let mut v = Vec::new();
    if t > 1 && !sp {
        v.push(tp(Ar, act, per_layer, "forward: the row-parallel outputs (attention projection, fcproj), 2 per layer"));
        v.push(tp(Ar, act, per_layer, "backward: the column-parallel inputs' gradients (qkv, fc), 2 per layer"));
        if first {
            v.push(tp(Ar, act, m, "forward: the vocabulary-parallel embedding's partial rows"));
        }
        if last {
            v.push(tp(Ar, act, m, "backward: the vocabulary-parallel output layer's input gradient"));
        }
    }
    if t > 1 && sp {
        v.push(tp(Ag, act, per_layer, "forward: the layer norm outputs gathered along the sequence (qkv, fc), 2 per layer"));
        v.push(tp(Rs, act, per_layer, "forward: the row-parallel outputs reduced, scattered along the sequence, 2 per layer"));
        v.push(tp(Ag, act, per_layer, "backward: the row-parallel outputs' gradients gathered, 2 per layer"));
        v.push(tp(Rs, act, per_layer, "backward: the column-parallel inputs' gradients reduced and scattered, 2 per layer"));
        v.push(tp(Ag, act, per_layer, "backward: the layer norm outputs gathered again for the weight gradients, 2 per layer"));
        if first {
            v.push(tp(Rs, act, m, "forward: the embedding's partial rows reduced and scattered along the sequence"));
        }
        if last {
            v.push(tp(Ag, act, m, "forward: the final norm's output gathered for the output layer"));
            v.push(tp(Ag, act, m, "backward: the final norm's output gathered again for the output layer's weight gradient"));
            v.push(tp(Rs, act, m, "backward: the output layer's input gradient reduced and scattered"));
        }
        // Each rank's gradient of a replicated parameter inside the sequence-parallel region
        // covers its shard of the sequence only: the layer norms, the row-parallel biases.
        let replicated = |owner: Owner| -> u64 {
            let w = inv.tensor(inv.params(owner).weights);
            w.views.iter().filter(|x| Split::of_view(owner, &x.name) == Some(Split::Replicated)).map(|x| x.elems()).sum()
        };
        let mut params: u64 = stage_layers(cfg.layers, par.pp, stage).map(|l| replicated(Owner::Layer(l))).sum();
        if last {
            params += replicated(Owner::FinalNorm);
        }
        let what = "sequence parallelism: the layer norms' and row-parallel biases' gradients (each rank's from its shard), once per step";
        v.push(tp(Ar, Bytes(params * grad_per_param), 1, what));
    }
    if t > 1 && last {
        let what = "cross-entropy fused with the output layer: per token max, sum of exp, target logit (fp32), 3 per micro-batch";
        v.push(tp(Ar, Bytes(4 * tokens), 3 * m, what));
    }
    if par.pp > 1 {
        let p2p = if sp { Bytes(act.0.div_ceil(t as u64)) } else { act };
        let pp = |stages: [u32; 2], bytes, calls, kind, what: String| Collective {
            pipeline_stages: Some(stages),
            ..c(kind, Group::Pp, 2, bytes, calls, &what)
        };
        let (next, prev) = ([stage, stage + 1], [stage.saturating_sub(1), stage]);
        if !last {
            v.push(pp(next, p2p, m, Sr, "forward: the activation sent to the next pipeline stage".into()));
        }
        if !first {
            v.push(pp(prev, p2p, m, Sr, "forward: the activation received from the previous pipeline stage".into()));
            v.push(pp(prev, p2p, m, Sr, "backward: its gradient sent to the previous pipeline stage".into()));
        }
        if !last {
            v.push(pp(next, p2p, m, Sr, "backward: the gradient received from the next pipeline stage".into()));
        }
        if cfg.tied_embeddings && (first || last) {
            let table: u64 = (0..inv.chunks.len() as u32).map(|k| owner_params_per_rank(inv, Owner::OutputChunk(k), t)).sum();
            let what = "the tied token table's gradient, summed between the first and last pipeline stage, once per step";
            v.push(pp([0, par.pp - 1], Bytes(table * grad_per_param), 1, Ar, what.to_string()));
        }
    }
    if par.dp > 1 {
        let params: u64 = stage_owners(inv, cfg, par, stage).iter().map(|o| o.params_per_rank).sum();
        let dp = |kind, bytes, what: &str| c(kind, Group::Dp, par.dp, bytes, 1, what);
        match par.zero {
            ZeroStage::Off => {
                v.push(dp(Ar, Bytes(params * grad_per_param), "the gradients of the rank's parameters (bf16), once per step"))
            }
            ZeroStage::One => {
                let padded = params.div_ceil(par.dp as u64) * par.dp as u64;
                let what = "ZeRO-1: the gradients reduced, each rank's optimizer shard scattered to it, once per step";
                v.push(dp(Rs, Bytes(padded * grad_per_param), what));
                v.push(dp(
                    Ag,
                    Bytes(padded * weight_per_param),
                    "ZeRO-1: the updated bf16 weights gathered from every shard, once per step",
                ));
            }
        }
    }
    v.retain(|c| c.calls_per_step > 0);
    v
}

/// A collective with its link and times where a profile's interconnect says them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimedCollective {
    #[serde(flatten)]
    pub collective: Collective,
    /// Whether its group lies within one node (None without an interconnect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_node: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_per_call: Option<Seconds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_per_step: Option<Seconds>,
}

/// One rank of one pipeline stage: its collectives per step, their bytes and (with an
/// interconnect) their time, summed as if none overlapped another or the compute.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageCommunication {
    pub pipeline_stage: u32,
    pub collectives: Vec<TimedCollective>,
    /// Bytes over all calls of the step (per rank, the whole buffer of each call).
    #[serde(serialize_with = "bytes_u64")]
    pub bytes_per_step: Bytes,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_per_step: Option<Seconds>,
}

/// Every pipeline stage's collectives per step and the 1F1B bubble, timed over the profile's
/// interconnect when there is one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParallelCommunication {
    /// [`RANK_LAYOUT`].
    pub rank_layout: &'static str,
    /// The profile's name and interconnect the times are for (None: bytes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interconnect: Option<Interconnect>,
    pub micro_batches: u32,
    /// [`bubble_fraction`].
    pub bubble_fraction: f64,
    pub stages: Vec<StageCommunication>,
}

/// The interconnect `par` is timed over on `hw`: None for one rank; an error where the grid
/// has more ranks than the profile's machine, or the profile has no interconnect section.
pub fn check_profile<'a>(par: &Parallelism, hw: &'a HardwareProfile) -> Result<Option<&'a Interconnect>, ParallelError> {
    if par.ranks() <= 1 {
        return Ok(hw.interconnect.as_ref());
    }
    let Some(i) = &hw.interconnect else {
        return Err(ParallelError::NoInterconnect { profile: hw.name.clone(), ranks: par.ranks() });
    };
    if par.ranks() > i.gpus() {
        return Err(ParallelError::TooManyRanks {
            tp: par.tp,
            pp: par.pp,
            dp: par.dp,
            ranks: par.ranks(),
            profile: hw.name.clone(),
            nodes: i.nodes,
            gpus_per_node: i.gpus_per_node,
            gpus: i.gpus(),
            nodes_needed: par.ranks().div_ceil(i.gpus_per_node as u64),
        });
    }
    Ok(Some(i))
}

impl ParallelCommunication {
    /// The collectives of every pipeline stage of `par` for `cfg` with `micro_batches` per
    /// step; timed when `hw` is given (checked by [`check_profile`] first).
    pub fn of(
        cfg: &GptConfig,
        par: &Parallelism,
        micro_batches: u32,
        hw: Option<&HardwareProfile>,
    ) -> Result<ParallelCommunication, ParallelError> {
        let inv = grid_inventory(cfg, par, micro_batches)?;
        let interconnect = match hw {
            Some(hw) => check_profile(par, hw)?.copied(),
            None => None,
        };
        let stages = (0..par.pp)
            .map(|p| {
                let collectives: Vec<TimedCollective> = stage_collectives(&inv, cfg, par, micro_batches, p)
                    .into_iter()
                    .map(|c| {
                        let timed = interconnect.map(|i| {
                            let within = within_node(&c, par, i.gpus_per_node);
                            let call = c.kind.ring_time(c.bytes, c.ranks, i.link(within));
                            (within, call, call * c.calls_per_step as f64)
                        });
                        TimedCollective {
                            within_node: timed.map(|t| t.0),
                            seconds_per_call: timed.map(|t| t.1),
                            seconds_per_step: timed.map(|t| t.2),
                            collective: c,
                        }
                    })
                    .collect();
                let bytes_per_step = collectives.iter().map(|c| c.collective.bytes_per_step()).sum();
                let seconds_per_step = interconnect.map(|_| collectives.iter().filter_map(|c| c.seconds_per_step).sum());
                StageCommunication { pipeline_stage: p, collectives, bytes_per_step, seconds_per_step }
            })
            .collect();
        Ok(ParallelCommunication {
            rank_layout: RANK_LAYOUT,
            hardware: interconnect.and(hw.map(|h| h.name.clone())),
            interconnect,
            micro_batches,
            bubble_fraction: bubble_fraction(par.pp, micro_batches),
            stages,
        })
    }
}

/// The one-GPU inventory that a grid of `par` shards, once the grid and the micro-batch count
/// are checked against `cfg`.
fn grid_inventory(cfg: &GptConfig, par: &Parallelism, micro_batches: u32) -> Result<Inventory, ParallelError> {
    par.validate(cfg)?;
    if micro_batches == 0 {
        return Err(ParallelError::NoMicroBatches { pp: par.pp });
    }
    Ok(Inventory::build(cfg))
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
    use crate::units::BytesPerSecond;

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

    fn link(gb_per_s: f64, latency: f64) -> LinkRate {
        LinkRate { bandwidth: BytesPerSecond(gb_per_s * 1e9), latency: Seconds(latency) }
    }

    fn profile(nodes: Option<u32>) -> HardwareProfile {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware/h100-sxm.ron");
        let mut hw = HardwareProfile::load(&path).unwrap();
        match nodes {
            Some(n) => hw.interconnect.as_mut().unwrap().nodes = n,
            None => hw.interconnect = None,
        }
        hw
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
    }

    /// The ring model by hand: 1 GiB over 8 GPUs at 450 GB/s (NVLink 4's line rate each way).
    #[test]
    fn ring_times_by_hand() {
        let gib = Bytes(1 << 30);
        let free = link(450.0, 0.0);
        // 2 (n - 1) / n = 1.75: 1.75 * 2^30 / 450e9 = 4.1757 ms.
        let ar = CollectiveKind::AllReduce.ring_time(gib, 8, free).0;
        assert!(close(ar, 1.75 * 1073741824.0 / 450e9) && (ar - 4.175_662_6e-3).abs() < 1e-9, "{ar}");
        // (n - 1) / n = 0.875: half the all-reduce; a reduce-scatter and an all-gather are one.
        let rs = CollectiveKind::ReduceScatter.ring_time(gib, 8, free).0;
        let ag = CollectiveKind::AllGather.ring_time(gib, 8, free).0;
        assert!(close(rs, ar / 2.0) && close(rs + ag, ar));
        assert!(close(CollectiveKind::SendRecv.ring_time(gib, 2, free).0, 1073741824.0 / 450e9));
        // Latency: 2 (n - 1) = 14 steps for an all-reduce, 7 for the halves, 1 for a transfer.
        let slow = link(450.0, 3.4e-6);
        assert!(close(CollectiveKind::AllReduce.ring_time(gib, 8, slow).0, ar + 14.0 * 3.4e-6));
        assert!(close(CollectiveKind::AllGather.ring_time(gib, 8, slow).0, ag + 7.0 * 3.4e-6));
        assert!(close(CollectiveKind::SendRecv.ring_time(gib, 2, slow).0, 1073741824.0 / 450e9 + 3.4e-6));
        // A group of one moves nothing.
        assert_eq!(CollectiveKind::AllReduce.ring_time(gib, 1, slow), Seconds(0.0));
    }

    fn stage(cfg: &GptConfig, par: &Parallelism, m: u32, p: u32) -> Vec<Collective> {
        stage_collectives(&Inventory::build(cfg), cfg, par, m, p)
    }

    /// Shoeybi et al. 2019: 2 all-reduces forward and 2 backward per layer of b s h 16-bit
    /// values; gpt3-175b at TP 8, PP 8, 8 micro-batches.
    #[test]
    fn gpt3_175b_tp8_pp8_collectives_by_hand() {
        let cfg = gpt3_175b(Attention::Fused);
        let par = grid(8, 8, 1, false);
        let (s, b, h) = (2048u64, 1u64, 12288u64);
        assert_eq!(2 * s * b * h, 50_331_648);
        let middle = stage(&cfg, &par, 8, 3);
        let tp: Vec<&Collective> = middle.iter().filter(|c| c.group == Group::Tp).collect();
        assert!(tp.iter().all(|c| c.kind == CollectiveKind::AllReduce && c.bytes.0 == 50_331_648 && c.ranks == 8));
        let calls: u32 = tp.iter().map(|c| c.calls_per_step).sum();
        assert_eq!(calls, 4 * 12 * 8, "4 per layer per micro-batch, 12 layers, 8 micro-batches");
        // The pipeline: the activation forward and its gradient backward, each way, per micro-batch.
        let pp: Vec<&Collective> = middle.iter().filter(|c| c.group == Group::Pp).collect();
        assert_eq!(pp.len(), 4);
        assert!(pp.iter().all(|c| c.kind == CollectiveKind::SendRecv && c.bytes.0 == 50_331_648 && c.calls_per_step == 8));
        assert_eq!(pp[0].pipeline_stages, Some([3, 4]));
        assert_eq!(pp[1].pipeline_stages, Some([2, 3]));
        assert_eq!(middle.len(), 6, "no DP collectives at dp 1: {middle:#?}");
        // The first pipeline stage all-reduces the embedding's output, sends, and receives.
        let first = stage(&cfg, &par, 8, 0);
        assert_eq!(first.iter().filter(|c| c.group == Group::Tp).map(|c| c.calls_per_step).sum::<u32>(), 4 * 12 * 8 + 8);
        assert_eq!(first.iter().filter(|c| c.group == Group::Pp).count(), 2);
        // The last: the output layer's input gradient and the fused cross-entropy's 3 fp32 per token.
        let last = stage(&cfg, &par, 8, 7);
        let ce = last.iter().find(|c| c.what.starts_with("cross-entropy")).unwrap();
        assert_eq!((ce.bytes.0, ce.calls_per_step, ce.kind), (4 * s * b, 3 * 8, CollectiveKind::AllReduce));
        assert_eq!(last.iter().filter(|c| c.group == Group::Tp).map(|c| c.calls_per_step).sum::<u32>(), 4 * 12 * 8 + 8 + 24);
        assert_eq!(bubble_fraction(8, 8), 7.0 / 15.0);
        assert_eq!(bubble_fraction(1, 8), 0.0);
        assert_eq!(bubble_fraction(4, 1), 3.0 / 4.0);
    }

    /// Korthikanti et al. 2022: with sequence parallelism each all-reduce is a reduce-scatter and
    /// an all-gather of the same bytes, so the bytes on the wire stay; Megatron-LM gathers the
    /// layer norm outputs once more in backward; pipeline transfers are split by t.
    #[test]
    fn sequence_parallelism_keeps_the_volume() {
        let cfg = gpt3_175b(Attention::Fused);
        let wire = |v: &[Collective]| -> f64 {
            v.iter()
                .filter(|c| c.group == Group::Tp && c.what.contains("per layer") && !c.what.contains("again"))
                .map(|c| {
                    let f = if c.kind == CollectiveKind::AllReduce { 2.0 } else { 1.0 };
                    f * c.bytes_per_step().0 as f64
                })
                .sum()
        };
        let off = stage(&cfg, &grid(8, 8, 1, false), 8, 3);
        let on = stage(&cfg, &grid(8, 8, 1, true), 8, 3);
        assert_eq!(wire(&off), wire(&on));
        assert_eq!(wire(&on), 8.0 * 12.0 * 8.0 * 50_331_648.0);
        let again = on.iter().find(|c| c.what.contains("again")).unwrap();
        assert_eq!((again.kind, again.calls_per_step), (CollectiveKind::AllGather, 2 * 12 * 8));
        // Layer norms (4h) and row-parallel biases (2h) per layer, bf16 gradients, once per step.
        let grads = on.iter().find(|c| c.what.starts_with("sequence parallelism")).unwrap();
        assert_eq!((grads.bytes.0, grads.calls_per_step), (12 * 6 * 12288 * 2, 1));
        assert!(on.iter().filter(|c| c.group == Group::Pp).all(|c| c.bytes.0 == 50_331_648 / 8));
    }

    #[test]
    fn data_parallel_gradients_and_zero_one() {
        let cfg = gpt3_175b(Attention::Fused);
        let m = ParallelMemory::of(&cfg, &grid(8, 8, 4, false), 8).unwrap();
        let params = m.stages[0].params_per_rank;
        let off = stage(&cfg, &grid(8, 8, 4, false), 8, 0);
        let dp: Vec<&Collective> = off.iter().filter(|c| c.group == Group::Dp).collect();
        assert_eq!(dp.len(), 1);
        assert_eq!((dp[0].kind, dp[0].bytes.0, dp[0].calls_per_step, dp[0].ranks), (CollectiveKind::AllReduce, 2 * params, 1, 4));
        let one = stage(&cfg, &Parallelism { zero: ZeroStage::One, ..grid(8, 8, 4, false) }, 8, 0);
        let dp: Vec<(CollectiveKind, u64)> = one.iter().filter(|c| c.group == Group::Dp).map(|c| (c.kind, c.bytes.0)).collect();
        let padded = params.div_ceil(4) * 4;
        assert_eq!(dp, [(CollectiveKind::ReduceScatter, 2 * padded), (CollectiveKind::AllGather, 2 * padded)]);
        // Tied embeddings: the token table's gradient between the first and last pipeline stage.
        let tied = crate::inventory::tests::cfg(Attention::Fused, true);
        for p in 0..3 {
            let v = stage(&tied, &grid(2, 3, 1, false), 3, p);
            let table = v.iter().find(|c| c.what.starts_with("the tied token table"));
            assert_eq!(table.is_some(), p != 1, "pipeline stage {p}");
            if let Some(c) = table {
                assert_eq!((c.bytes.0, c.ranks, c.pipeline_stages), (512 * 64 / 2 * 2, 2, Some([0, 2])));
            }
        }
        assert!(stage(&cfg, &Parallelism::single(), 1, 0).is_empty(), "one GPU has no collectives");
    }

    /// Megatron's order, TP fastest: a group is within a node when its ranks' span is.
    #[test]
    fn groups_within_a_node_follow_the_rank_layout() {
        let c = |group, stages| Collective {
            kind: CollectiveKind::AllReduce,
            group,
            ranks: 2,
            bytes: Bytes(1),
            calls_per_step: 1,
            pipeline_stages: stages,
            what: String::new(),
        };
        let par = grid(2, 2, 4, false);
        assert_eq!(rank_of(&par, 1, 3, 1), 1 + 2 * (3 + 4));
        assert!(within_node(&c(Group::Tp, None), &par, 8));
        assert!(within_node(&c(Group::Dp, None), &par, 8), "ranks 0, 2, 4, 6");
        assert!(!within_node(&c(Group::Pp, Some([0, 1])), &par, 8), "ranks 0 and 8");
        assert!(within_node(&c(Group::Pp, Some([0, 1])), &par, 16));
        assert!(!within_node(&c(Group::Dp, None), &par, 4));
        // TP 3 on nodes of 8: the group of ranks 6, 7, 8 straddles two nodes.
        assert!(!within_node(&c(Group::Tp, None), &grid(3, 1, 4, false), 8));
    }

    #[test]
    fn the_profile_must_hold_the_grid_and_name_its_links() {
        let cfg = gpt3_175b(Attention::Fused);
        let par = grid(8, 8, 1, false);
        let e = ParallelCommunication::of(&cfg, &par, 8, Some(&profile(Some(1)))).unwrap_err();
        assert!(matches!(e, ParallelError::TooManyRanks { ranks: 64, gpus: 8, .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("64 ranks") && e.contains("8 GPUs") && e.contains("h100-sxm"), "{e}");
        let e = ParallelCommunication::of(&cfg, &par, 8, Some(&profile(None))).unwrap_err().to_string();
        assert!(e.contains("no `interconnect`") && e.contains("cannot be timed") && e.contains("--hardware"), "{e}");
        // Without a profile the bytes alone; one GPU needs no interconnect.
        let bytes = ParallelCommunication::of(&cfg, &par, 8, None).unwrap();
        assert!(bytes.stages.iter().all(|s| s.seconds_per_step.is_none() && s.bytes_per_step > Bytes::ZERO));
        assert!(ParallelCommunication::of(&cfg, &Parallelism::single(), 2, Some(&profile(None))).is_ok());

        // 8 nodes of 8: TP within a node over NVLink, each pipeline stage a node of its own.
        let hw = profile(Some(8));
        let i = hw.interconnect.unwrap();
        let timed = ParallelCommunication::of(&cfg, &par, 8, Some(&hw)).unwrap();
        assert_eq!(timed.bubble_fraction, 7.0 / 15.0);
        assert_eq!(timed.hardware.as_deref(), Some("h100-sxm"));
        for s in &timed.stages {
            let mut sum = 0.0;
            for c in &s.collectives {
                let within = c.collective.group == Group::Tp;
                assert_eq!(c.within_node, Some(within), "{}", c.collective.what);
                let l = if within { i.intra_node } else { i.inter_node.unwrap() };
                let call = c.collective.kind.ring_time(c.collective.bytes, c.collective.ranks, l);
                assert_eq!(c.seconds_per_call, Some(call));
                sum += c.seconds_per_step.unwrap().0;
            }
            assert!(close(s.seconds_per_step.unwrap().0, sum));
        }
        // One TP all-reduce of 48 MiB over 8 ranks at the profile's 370 GB/s and 3.4 us.
        let tp = &timed.stages[3].collectives[0];
        let by_hand = 1.75 * 50_331_648.0 / 370e9 + 14.0 * 3.4e-6;
        assert!(close(tp.seconds_per_call.unwrap().0, by_hand), "{tp:?}");
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
