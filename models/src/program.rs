//! The step program: the ops of one training step in the order the executor runs them, each with
//! the tensors it reads, writes, allocates (just before it runs) and frees (just after).
//!
//! Order: embedding; per layer ln1, qkv, attention, attention projection (+ residual), ln2, fc,
//! gelu, fc projection (+ residual); final norm; output layer per vocabulary chunk (logits and
//! cross-entropy statistics); loss; backward in reverse. Unclipped, each parameter owner's AdamW
//! update right after its gradients are complete (per-owner updates are exact). Clipped by the
//! global norm ([`Clipping::GlobalNorm`]), each owner's partial norm right after its gradients
//! are complete (`GradNorm`, where the gradient is), then after the last backward op the scale
//! (`ClipScale`, on the host: it needs every partial), then every update, the owner whose
//! gradients completed last first; gradients live until their update.
//!
//! FLOP convention: matrix products 2*M*N*K; attention counts the causal half,
//! 2*B*T*T*C forward (QK^T and PV), 2.5x that backward for the fused kind (it recomputes the
//! scores), 2x for the materialised kind.

use crate::config::GptConfig;
use crate::inventory::{Inventory, Owner, TensorId, View};
use crate::units::{Bytes, Flops};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OpId(pub u32);

impl OpId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What an op computes; the executor dispatches on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpKind {
    Embed,
    Ln1(u32),
    Qkv(u32),
    Attn(u32),
    AttnProj(u32),
    Ln2(u32),
    Fc(u32),
    Gelu(u32),
    FcProj(u32),
    LnF,
    /// Logits of one vocabulary chunk and the running cross-entropy statistics.
    OutFwd(u32),
    /// Loss per token from the statistics (one chunk: also turns logits into dlogits in place).
    Loss,
    /// Backward of one chunk: (recompute logits,) dlogits, dlnf += dlogits W, dW = dlogits^T lnf.
    OutBwd(u32),
    LnFBwd,
    FcProjBwd(u32),
    GeluBwd(u32),
    FcBwd(u32),
    Ln2Bwd(u32),
    AttnProjBwd(u32),
    AttnBwd(u32),
    QkvBwd(u32),
    Ln1Bwd(u32),
    EmbedBwd,
    /// Partial sums of squares of one owner's gradient (a clipped step).
    GradNorm(Owner),
    /// The global norm from every partial and the clip scale (a clipped step; on the host).
    ClipScale,
    Adam(Owner),
}

impl OpKind {
    /// The kind without its layer, chunk or owner ("Fc", "OutBwd", "Adam"): what one row of a
    /// per-kind table of a step's ops sums.
    /// Every family's name, as [`OpKind::family`] gives them.
    pub const FAMILIES: [&'static str; 26] = [
        "Embed",
        "Ln1",
        "Qkv",
        "Attn",
        "AttnProj",
        "Ln2",
        "Fc",
        "Gelu",
        "FcProj",
        "LnF",
        "OutFwd",
        "Loss",
        "OutBwd",
        "LnFBwd",
        "FcProjBwd",
        "GeluBwd",
        "FcBwd",
        "Ln2Bwd",
        "AttnProjBwd",
        "AttnBwd",
        "QkvBwd",
        "Ln1Bwd",
        "EmbedBwd",
        "GradNorm",
        "ClipScale",
        "Adam",
    ];

    pub fn family(self) -> &'static str {
        use OpKind::*;
        match self {
            Embed => "Embed",
            Ln1(_) => "Ln1",
            Qkv(_) => "Qkv",
            Attn(_) => "Attn",
            AttnProj(_) => "AttnProj",
            Ln2(_) => "Ln2",
            Fc(_) => "Fc",
            Gelu(_) => "Gelu",
            FcProj(_) => "FcProj",
            LnF => "LnF",
            OutFwd(_) => "OutFwd",
            Loss => "Loss",
            OutBwd(_) => "OutBwd",
            LnFBwd => "LnFBwd",
            FcProjBwd(_) => "FcProjBwd",
            GeluBwd(_) => "GeluBwd",
            FcBwd(_) => "FcBwd",
            Ln2Bwd(_) => "Ln2Bwd",
            AttnProjBwd(_) => "AttnProjBwd",
            AttnBwd(_) => "AttnBwd",
            QkvBwd(_) => "QkvBwd",
            Ln1Bwd(_) => "Ln1Bwd",
            EmbedBwd => "EmbedBwd",
            GradNorm(_) => "GradNorm",
            ClipScale => "ClipScale",
            Adam(_) => "Adam",
        }
    }

    /// The transformer layer this op belongs to, if any.
    pub fn layer(self) -> Option<u32> {
        use OpKind::*;
        match self {
            Ln1(l) | Qkv(l) | Attn(l) | AttnProj(l) | Ln2(l) | Fc(l) | Gelu(l) | FcProj(l) | FcProjBwd(l) | GeluBwd(l) | FcBwd(l)
            | Ln2Bwd(l) | AttnProjBwd(l) | AttnBwd(l) | QkvBwd(l) | Ln1Bwd(l) => Some(l),
            Adam(Owner::Layer(l)) | GradNorm(Owner::Layer(l)) => Some(l),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    Forward,
    Head,
    Backward,
    Optimizer,
}

/// Which hardware rate bounds an op's arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkClass {
    Matmul,
    Attention,
    /// Bounded by memory traffic (norms, element-wise, optimizer, gathers).
    Memory,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub id: OpId,
    pub name: String,
    pub kind: OpKind,
    pub phase: Phase,
    pub reads: Vec<TensorId>,
    pub writes: Vec<TensorId>,
    /// Allocated just before the op runs.
    pub allocs: Vec<TensorId>,
    /// Freed just after the op runs (their last use).
    pub frees: Vec<TensorId>,
    pub flops: Flops,
    /// Device memory traffic: bytes read plus bytes written.
    pub bytes: Bytes,
    pub work: WorkClass,
    /// Kernel launches the op makes, its products included.
    pub launches: u32,
    /// Of those, cuBLASLt products: the host takes longer to issue one than a kernel.
    #[serde(default)]
    pub products: u32,
    /// The micro-batch (from 0) whose forward or backward pass the op belongs to; the updates
    /// and the clip scale after the last pass carry the last's.
    #[serde(default)]
    pub micro: u32,
}

impl Op {
    /// Every tensor the op needs on the GPU while it runs.
    pub fn touches(&self) -> impl Iterator<Item = TensorId> + '_ {
        self.reads.iter().chain(self.writes.iter()).chain(self.allocs.iter()).copied()
    }
}

/// Whether the step clips its gradients before the updates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Clipping {
    /// Each owner's update right after its gradients (no clipping).
    #[default]
    Off,
    /// By the global norm of all gradients: every update waits for every gradient.
    GlobalNorm,
}

/// The ops of one training step plus the inventory they act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub config: GptConfig,
    pub inventory: Inventory,
    pub ops: Vec<Op>,
    #[serde(default)]
    pub clipping: Clipping,
    /// Forward and backward passes whose gradients each update sums (gradient accumulation).
    #[serde(default = "one_micro_batch")]
    pub micro_batches: u32,
    /// Each kind's first op, so that [`Program::find`] costs no pass over the ops (the planner
    /// asks per layer and owner: a pass each made plan() quadratic in the layers).
    #[serde(skip)]
    index: OpIndex,
}

fn one_micro_batch() -> u32 {
    1
}

/// The first op of each kind (and micro-batch) among `ops` as built; not part of a program's value (two programs
/// with the same ops are equal however their index was made), and absent in a deserialized one.
#[derive(Clone, Debug, Default)]
struct OpIndex {
    first: std::collections::HashMap<(OpKind, u32), OpId>,
    /// The number of ops it was made over: a program whose ops changed since is searched.
    ops: usize,
}

impl OpIndex {
    fn of(ops: &[Op]) -> OpIndex {
        let mut first = std::collections::HashMap::with_capacity(ops.len());
        for o in ops {
            first.entry((o.kind, o.micro)).or_insert(o.id);
        }
        OpIndex { first, ops: ops.len() }
    }
}

impl PartialEq for OpIndex {
    fn eq(&self, _: &OpIndex) -> bool {
        true
    }
}

/// Bytes the embedding's backward writes zeroing the untied token table's gradient whole before
/// its scatter adds the step's rows (bf16, V x C); none for a tied table, whose gradient the
/// output layer's backward writes first.
pub fn embed_table_zero_bytes(cfg: &GptConfig) -> Bytes {
    if cfg.tied_embeddings {
        Bytes::ZERO
    } else {
        Bytes(cfg.padded_vocab as u64 * cfg.hidden as u64 * 2)
    }
}

impl Program {
    /// The step without clipping.
    pub fn build(cfg: &GptConfig) -> Program {
        Self::build_with(cfg, Clipping::Off)
    }

    /// One micro-batch per update.
    pub fn build_with(cfg: &GptConfig, clipping: Clipping) -> Program {
        Self::build_accumulating(cfg, clipping, 1)
    }

    /// `micro_batches` forward and backward passes of `cfg`'s batch, each adding its gradients
    /// into the same tensors, then the updates (after the clip scale, clipped).
    pub fn build_accumulating(cfg: &GptConfig, clipping: Clipping, micro_batches: u32) -> Program {
        let micro_batches = micro_batches.max(1);
        let inventory = match clipping {
            Clipping::Off => Inventory::build(cfg),
            Clipping::GlobalNorm => Inventory::build_clipped(cfg),
        }
        .accumulating(micro_batches);
        let ops = OpsBuilder { cfg, inv: &inventory, ops: Vec::new(), clipped: Vec::new(), micro: 0, micro_batches }.build();
        let index = OpIndex::of(&ops);
        Program { config: cfg.clone(), inventory, ops, clipping, micro_batches, index }
    }

    /// The step a training setup runs: clipped where its `grad_clip` is positive, with its
    /// micro-batches.
    pub fn for_setup(cfg: &GptConfig, setup: &crate::training::TrainingSetup) -> Program {
        Self::build_accumulating(cfg, setup.clipping(), setup.micro_batches)
    }

    /// Tokens one step trains on: micro-batches x B x T.
    pub fn tokens_per_step(&self) -> u64 {
        self.micro_batches as u64 * self.config.tokens()
    }

    /// The op that makes the clip scale, in a clipped step.
    pub fn clip_scale_op(&self) -> Option<&Op> {
        self.find(OpKind::ClipScale)
    }

    pub fn op(&self, id: OpId) -> &Op {
        &self.ops[id.index()]
    }

    /// The first op of `kind` (of the first micro-batch that has one: the updates are after the
    /// last pass).
    pub fn find(&self, kind: OpKind) -> Option<&Op> {
        (0..self.micro_batches).find_map(|m| self.find_in(kind, m))
    }

    /// The op of `kind` in micro-batch `micro`'s pass.
    pub fn find_in(&self, kind: OpKind, micro: u32) -> Option<&Op> {
        if self.index.ops == self.ops.len() && self.index.ops > 0 {
            return self.index.first.get(&(kind, micro)).map(|id| &self.ops[id.index()]);
        }
        self.ops.iter().find(|o| o.kind == kind && o.micro == micro)
    }

    /// Every op of `kind`, one per micro-batch that has one, in program order.
    pub fn find_all(&self, kind: OpKind) -> impl Iterator<Item = &Op> + '_ {
        (0..self.micro_batches).filter_map(move |m| self.find_in(kind, m))
    }

    /// The forward ops of micro-batch `micro` that rebuild layer `l`'s saved activations from its
    /// input (recomputation).
    pub fn recompute_ops(&self, l: u32, micro: u32) -> Vec<OpId> {
        use OpKind::*;
        [Ln1(l), Qkv(l), Attn(l), AttnProj(l), Ln2(l), Fc(l), Gelu(l)]
            .iter()
            .filter_map(|k| self.find_in(*k, micro).map(|o| o.id))
            .collect()
    }

    pub fn total_flops(&self) -> Flops {
        self.ops.iter().map(|o| o.flops).sum()
    }

    /// Model FLOPs per step by the convention llm.c reports MFU with: 6N + 6*L*T*C per token,
    /// N the non-embedding... here N counts all allocated parameters except the position table.
    pub fn model_flops(&self) -> Flops {
        let c = &self.config;
        let n = (c.allocated_param_count() - c.max_seq as u64 * c.hidden as u64) as f64;
        let per_token = 6.0 * n + 6.0 * c.layers as f64 * c.seq as f64 * c.hidden as f64;
        Flops(per_token * self.tokens_per_step() as f64)
    }

    /// Checks the program's own lifetime rules: every tensor an op touches is allocated (or
    /// persistent) and not yet freed; nothing is allocated twice or freed before it exists;
    /// every non-persistent tensor allocated is freed by the end of the step.
    pub fn check_lifetimes(&self) -> Result<(), String> {
        let inv = &self.inventory;
        let mut live: Vec<bool> = inv.tensors.iter().map(|t| t.persistent).collect();
        let mut ever: Vec<bool> = live.clone();
        for op in &self.ops {
            for t in &op.allocs {
                if live[t.index()] {
                    return Err(format!("{}: allocates {} which is already live", op.name, inv.tensor(*t).name));
                }
                live[t.index()] = true;
                ever[t.index()] = true;
            }
            for t in op.touches() {
                if !live[t.index()] {
                    return Err(format!("{}: touches {} which is not allocated", op.name, inv.tensor(t).name));
                }
            }
            for t in &op.frees {
                let tensor = inv.tensor(*t);
                if !live[t.index()] || tensor.persistent {
                    return Err(format!("{}: frees {} which is not a live temporary", op.name, tensor.name));
                }
                live[t.index()] = false;
            }
        }
        for t in &inv.tensors {
            if !t.persistent && live[t.id.index()] {
                return Err(format!("{} is never freed", t.name));
            }
            if !ever[t.id.index()] {
                return Err(format!("{} is never allocated", t.name));
            }
        }
        Ok(())
    }
}

struct OpsBuilder<'a> {
    cfg: &'a GptConfig,
    inv: &'a Inventory,
    ops: Vec<Op>,
    /// Owners whose gradients are complete, in that order (a clipped step).
    clipped: Vec<Owner>,
    /// The pass being built.
    micro: u32,
    micro_batches: u32,
}

/// Arguments of one op, before its traffic is summed.
struct Spec<'s> {
    kind: OpKind,
    phase: Phase,
    reads: &'s [TensorId],
    writes: &'s [TensorId],
    allocs: &'s [TensorId],
    frees: &'s [TensorId],
    flops: f64,
    work: WorkClass,
    launches: u32,
    products: u32,
    /// The parameter views (`Inventory` names: "qkv_w", ...) of its owner's weights and
    /// gradients the op touches; empty: whole tensors.
    views: &'s [&'s str],
}

impl OpsBuilder<'_> {
    fn name(kind: OpKind) -> String {
        use OpKind::*;
        match kind {
            Embed => "embed".into(),
            Ln1(l) => format!("layer{l}.ln1"),
            Qkv(l) => format!("layer{l}.qkv"),
            Attn(l) => format!("layer{l}.attn"),
            AttnProj(l) => format!("layer{l}.attproj"),
            Ln2(l) => format!("layer{l}.ln2"),
            Fc(l) => format!("layer{l}.fc"),
            Gelu(l) => format!("layer{l}.gelu"),
            FcProj(l) => format!("layer{l}.fcproj"),
            LnF => "lnf".into(),
            OutFwd(c) => format!("chunk{c}.out_fwd"),
            Loss => "loss".into(),
            OutBwd(c) => format!("chunk{c}.out_bwd"),
            LnFBwd => "lnf_bwd".into(),
            FcProjBwd(l) => format!("layer{l}.fcproj_bwd"),
            GeluBwd(l) => format!("layer{l}.gelu_bwd"),
            FcBwd(l) => format!("layer{l}.fc_bwd"),
            Ln2Bwd(l) => format!("layer{l}.ln2_bwd"),
            AttnProjBwd(l) => format!("layer{l}.attproj_bwd"),
            AttnBwd(l) => format!("layer{l}.attn_bwd"),
            QkvBwd(l) => format!("layer{l}.qkv_bwd"),
            Ln1Bwd(l) => format!("layer{l}.ln1_bwd"),
            EmbedBwd => "embed_bwd".into(),
            GradNorm(o) => format!("{o}.grad_norm"),
            ClipScale => "clip_scale".into(),
            Adam(o) => format!("{o}.adam"),
        }
    }

    fn push(&mut self, s: Spec<'_>) {
        let inv = self.inv;
        // Traffic: tensors read and tensors written (a tensor allocated and written counts once);
        // of a parameter tensor, the views the op uses; parameter tensors of other owners that
        // an op only reads (tied embedding rows) count by the rows actually gathered, below.
        let micro_batches = self.micro_batches as u64;
        let traffic = |t: TensorId| -> u64 {
            let tensor = inv.tensor(t);
            if tensor.class == crate::inventory::TensorClass::Io && micro_batches > 1 {
                // Tokens, targets and losses hold every micro-batch; an op touches its own.
                return tensor.bytes.0 / micro_batches;
            }
            if s.views.is_empty() || tensor.views.is_empty() {
                return tensor.bytes.0;
            }
            let elems: u64 = tensor.views.iter().filter(|v| s.views.contains(&v.name.as_str())).map(View::elems).sum();
            elems * tensor.dtype.size()
        };
        let mut bytes: u64 = s.reads.iter().map(|&t| traffic(t)).sum();
        let mut written: Vec<TensorId> = s.writes.to_vec();
        written.extend(s.allocs.iter().filter(|t| !s.writes.contains(t)));
        bytes += written.iter().map(|&t| traffic(t)).sum::<u64>();
        if s.kind == OpKind::Embed || s.kind == OpKind::EmbedBwd {
            // A gather/scatter touches B*T rows of the tables, not the tables.
            let c = self.cfg;
            let rows = 2 * c.tokens() * c.hidden as u64 * 2;
            bytes = rows + 2 * c.tokens() * c.hidden as u64 + c.tokens() * 4;
            if s.kind == OpKind::EmbedBwd && self.micro == 0 {
                bytes += embed_table_zero_bytes(c).0;
            }
        }
        if self.micro > 0 {
            // A later micro-batch adds its gradients into the sums: each is read as well.
            bytes +=
                s.writes.iter().filter(|&&t| inv.tensor(t).class == crate::inventory::TensorClass::Grads).map(|&t| traffic(t)).sum::<u64>();
        }
        let id = OpId(self.ops.len() as u32);
        let per_pass = !matches!(s.kind, OpKind::GradNorm(_) | OpKind::ClipScale | OpKind::Adam(_));
        let name = if self.micro_batches > 1 && per_pass { format!("mb{}.{}", self.micro, Self::name(s.kind)) } else { Self::name(s.kind) };
        self.ops.push(Op {
            id,
            name,
            kind: s.kind,
            phase: s.phase,
            reads: s.reads.to_vec(),
            writes: s.writes.to_vec(),
            allocs: s.allocs.to_vec(),
            frees: s.frees.to_vec(),
            flops: Flops(s.flops),
            bytes: Bytes(bytes),
            work: s.work,
            launches: s.launches,
            products: s.products,
            micro: self.micro,
        });
    }

    fn build(mut self) -> Vec<Op> {
        for m in 0..self.micro_batches {
            self.micro = m;
            self.pass();
        }
        if let Some(clip) = &self.inv.clip {
            self.push(Spec {
                kind: OpKind::ClipScale,
                phase: Phase::Optimizer,
                reads: &clip.norms,
                writes: &[clip.scale],
                allocs: &[],
                frees: &clip.norms,
                flops: 0.0,
                work: WorkClass::Memory,
                launches: 0,
                products: 0,
                views: &[],
            });
            for o in std::mem::take(&mut self.clipped).into_iter().rev() {
                self.adam(o);
            }
        }
        self.ops
    }

    /// One micro-batch's forward and backward; the last's also each owner's update (unclipped)
    /// or partial norm (clipped) as its gradients are complete. The first pass allocates the
    /// gradients; later ones add into them.
    fn pass(&mut self) {
        use OpKind::*;
        use Phase::*;
        use WorkClass::*;
        let last = self.micro + 1 == self.micro_batches;
        let first = self.micro == 0;
        let cfg = self.cfg;
        let inv = self.inv;
        let (bt, c) = (cfg.tokens() as f64, cfg.hidden as f64);
        let t = cfg.seq as f64;
        let k = cfg.output_chunks;
        let vc = (cfg.padded_vocab / k) as f64;
        let chunked = k > 1;
        let tied = cfg.tied_embeddings;
        let attn_fwd = 2.0 * bt * t * c;
        let attn_bwd = match cfg.attention {
            crate::config::Attention::Fused => 2.5 * attn_fwd,
            crate::config::Attention::Materialized => 2.0 * attn_fwd,
        };
        let io = inv.io;
        let h = inv.head.clone();
        let w = |o: Owner| inv.params(o).weights;
        let g = |o: Owner| inv.params(o).grads;
        let chunk_weights: Vec<TensorId> = (0..k).map(|i| w(Owner::OutputChunk(i))).collect();
        // Unclipped: the update. Clipped: the partial norm, and the update after the scale.
        let adam = |b: &mut Self, o: Owner| match &b.inv.clip {
            _ if !last => {}
            None => b.adam(o),
            Some(_) => {
                let norm = b.inv.grad_norm(o).expect("every owner has a partial norm");
                b.push(Spec {
                    kind: GradNorm(o),
                    phase: Backward,
                    reads: &[g(o)],
                    writes: &[],
                    allocs: &[norm],
                    frees: &[],
                    flops: 0.0,
                    work: Memory,
                    launches: 1,
                    products: 0,
                    views: &[],
                });
                b.clipped.push(o);
            }
        };

        // ---- forward
        let mut embed_reads = vec![io.tokens, w(Owner::Embedding)];
        if tied {
            embed_reads.extend(&chunk_weights);
        }
        let x0 = inv.acts.first().map(|a| a.x_in).unwrap_or(h.x_out);
        self.push(Spec {
            kind: Embed,
            phase: Forward,
            reads: &embed_reads,
            writes: &[],
            allocs: &[x0],
            frees: &[],
            flops: 0.0,
            work: Memory,
            launches: if tied { k } else { 1 },
            products: 0,
            views: &[],
        });
        for l in 0..cfg.layers {
            let a = inv.acts[l as usize];
            let lw = w(Owner::Layer(l));
            let next = inv.acts.get(l as usize + 1).map(|n| n.x_in).unwrap_or(h.x_out);
            self.push(Spec {
                kind: Ln1(l),
                phase: Forward,
                reads: &[a.x_in, lw],
                writes: &[],
                allocs: &[a.ln1, a.ln1_stats],
                frees: &[],
                flops: 0.0,
                work: Memory,
                launches: 1,
                products: 0,
                views: &["ln1_w", "ln1_b"],
            });
            self.push(Spec {
                kind: Qkv(l),
                phase: Forward,
                reads: &[a.ln1, lw],
                writes: &[],
                allocs: &[a.qkv],
                frees: &[],
                flops: 2.0 * bt * c * 3.0 * c,
                work: Matmul,
                launches: 1,
                products: 1,
                views: &["qkv_w", "qkv_b"],
            });
            self.push(Spec {
                kind: Attn(l),
                phase: Forward,
                reads: &[a.qkv],
                writes: &[],
                allocs: &[a.att, a.atty],
                frees: &[],
                flops: attn_fwd,
                work: Attention,
                launches: 1,
                products: 0,
                views: &[],
            });
            self.push(Spec {
                kind: AttnProj(l),
                phase: Forward,
                reads: &[a.atty, a.x_in, lw],
                writes: &[],
                allocs: &[a.x_mid],
                frees: &[],
                flops: 2.0 * bt * c * c,
                work: Matmul,
                launches: 1,
                products: 1,
                views: &["attproj_w", "attproj_b"],
            });
            self.push(Spec {
                kind: Ln2(l),
                phase: Forward,
                reads: &[a.x_mid, lw],
                writes: &[],
                allocs: &[a.ln2, a.ln2_stats],
                frees: &[],
                flops: 0.0,
                work: Memory,
                launches: 1,
                products: 0,
                views: &["ln2_w", "ln2_b"],
            });
            self.push(Spec {
                kind: Fc(l),
                phase: Forward,
                reads: &[a.ln2, lw],
                writes: &[],
                allocs: &[a.fch],
                frees: &[],
                flops: 8.0 * bt * c * c,
                work: Matmul,
                launches: 1,
                products: 1,
                views: &["fc_w", "fc_b"],
            });
            self.push(Spec {
                kind: Gelu(l),
                phase: Forward,
                reads: &[a.fch],
                writes: &[],
                allocs: &[a.fch_gelu],
                frees: &[],
                flops: 0.0,
                work: Memory,
                launches: 1,
                products: 0,
                views: &[],
            });
            self.push(Spec {
                kind: FcProj(l),
                phase: Forward,
                reads: &[a.fch_gelu, a.x_mid, lw],
                writes: &[],
                allocs: &[next],
                frees: &[],
                flops: 8.0 * bt * c * c,
                work: Matmul,
                launches: 1,
                products: 1,
                views: &["fcproj_w", "fcproj_b"],
            });
        }

        // ---- head: final norm, output layer by chunk, loss
        let fnw = w(Owner::FinalNorm);
        self.push(Spec {
            kind: LnF,
            phase: Head,
            reads: &[h.x_out, fnw],
            writes: &[],
            allocs: &[h.lnf, h.lnf_stats],
            frees: &[],
            flops: 0.0,
            work: Memory,
            launches: 1,
            products: 0,
            views: &[],
        });
        for i in 0..k {
            let logits = h.logits[i as usize];
            let mut allocs = vec![logits];
            if i == 0 {
                allocs.push(h.ce_stats);
            }
            let frees: Vec<TensorId> = if chunked { vec![logits] } else { vec![] };
            self.push(Spec {
                kind: OutFwd(i),
                phase: Head,
                reads: &[h.lnf, chunk_weights[i as usize], io.targets],
                writes: &[h.ce_stats],
                allocs: &allocs,
                frees: &frees,
                flops: 2.0 * bt * c * vc,
                work: Matmul,
                launches: 2,
                products: 1,
                views: &[],
            });
        }
        let (loss_reads, loss_writes) = if chunked {
            (vec![h.ce_stats, io.targets], vec![io.losses])
        } else {
            (vec![h.ce_stats, io.targets, h.logits[0]], vec![io.losses, h.logits[0]])
        };
        self.push(Spec {
            kind: Loss,
            phase: Head,
            reads: &loss_reads,
            writes: &loss_writes,
            allocs: &[],
            frees: &[],
            flops: 0.0,
            work: Memory,
            launches: if chunked { 1 } else { 2 },
            products: 0,
            views: &[],
        });

        // ---- backward
        for i in (0..k).rev() {
            let o = Owner::OutputChunk(i);
            let logits = h.logits[i as usize];
            let mut allocs = if first { vec![g(o)] } else { vec![] };
            let mut reads = vec![h.lnf, chunk_weights[i as usize], h.ce_stats, io.targets];
            if chunked {
                allocs.push(logits);
            } else {
                reads.push(logits);
            }
            if i == k - 1 {
                allocs.push(h.dlnf);
            }
            let mut frees = vec![logits];
            if i == 0 {
                frees.push(h.ce_stats);
            }
            let recompute = if chunked { 2.0 * bt * c * vc } else { 0.0 };
            self.push(Spec {
                kind: OutBwd(i),
                phase: Backward,
                reads: &reads,
                writes: &[h.dlnf, g(o)],
                allocs: &allocs,
                frees: &frees,
                flops: recompute + 4.0 * bt * c * vc,
                work: Matmul,
                launches: if chunked { 4 } else { 2 },
                products: if chunked { 3 } else { 2 },
                views: &[],
            });
            if !tied {
                adam(self, o);
            }
        }
        let fn_o = Owner::FinalNorm;
        let lnf_allocs: Vec<TensorId> = if first { vec![h.dres, g(fn_o)] } else { vec![h.dres] };
        self.push(Spec {
            kind: LnFBwd,
            phase: Backward,
            reads: &[h.dlnf, h.x_out, h.lnf_stats, fnw],
            writes: &[h.dres, g(fn_o)],
            allocs: &lnf_allocs,
            frees: &[h.dlnf, h.x_out, h.lnf, h.lnf_stats],
            flops: 0.0,
            work: Memory,
            launches: 3,
            products: 0,
            views: &[],
        });
        adam(self, fn_o);
        for l in (0..cfg.layers).rev() {
            let o = Owner::Layer(l);
            let a = inv.acts[l as usize];
            let s = inv.scratch[l as usize];
            let (lw, lg) = (w(o), g(o));
            let mm = |f: f64| 2.0 * f * bt * c * c; // dX and dW products of a C x f*C weight
            let fcproj_allocs: Vec<TensorId> = if first { vec![s.dfch, lg] } else { vec![s.dfch] };
            self.push(Spec {
                kind: FcProjBwd(l),
                phase: Backward,
                reads: &[h.dres, a.fch_gelu, lw],
                writes: &[lg],
                allocs: &fcproj_allocs,
                frees: &[a.fch_gelu],
                flops: mm(8.0),
                work: Matmul,
                launches: 4,
                products: 2,
                views: &["fcproj_w", "fcproj_b"],
            });
            self.push(Spec {
                kind: GeluBwd(l),
                phase: Backward,
                reads: &[s.dfch, a.fch],
                writes: &[s.dfch],
                allocs: &[],
                frees: &[a.fch],
                flops: 0.0,
                work: Memory,
                launches: 1,
                products: 0,
                views: &[],
            });
            self.push(Spec {
                kind: FcBwd(l),
                phase: Backward,
                reads: &[s.dfch, a.ln2, lw],
                writes: &[lg],
                allocs: &[s.dln2],
                frees: &[s.dfch, a.ln2],
                flops: mm(8.0),
                work: Matmul,
                launches: 4,
                products: 2,
                views: &["fc_w", "fc_b"],
            });
            self.push(Spec {
                kind: Ln2Bwd(l),
                phase: Backward,
                reads: &[s.dln2, a.x_mid, a.ln2_stats, lw, h.dres],
                writes: &[h.dres, lg],
                allocs: &[],
                frees: &[s.dln2, a.x_mid, a.ln2_stats],
                flops: 0.0,
                work: Memory,
                launches: 3,
                products: 0,
                views: &["ln2_w", "ln2_b"],
            });
            self.push(Spec {
                kind: AttnProjBwd(l),
                phase: Backward,
                reads: &[h.dres, a.atty, lw],
                writes: &[lg],
                allocs: &[s.datty],
                frees: &[],
                flops: mm(2.0),
                work: Matmul,
                launches: 4,
                products: 2,
                views: &["attproj_w", "attproj_b"],
            });
            self.push(Spec {
                kind: AttnBwd(l),
                phase: Backward,
                reads: &[s.datty, a.qkv, a.att, a.atty],
                writes: &[],
                allocs: &[s.datt, s.dqkv],
                frees: &[s.datty, s.datt, a.att, a.atty],
                flops: attn_bwd,
                work: Attention,
                launches: 2,
                products: 0,
                views: &[],
            });
            self.push(Spec {
                kind: QkvBwd(l),
                phase: Backward,
                reads: &[s.dqkv, a.ln1, lw],
                writes: &[lg],
                allocs: &[s.dln1],
                frees: &[s.dqkv, a.qkv, a.ln1],
                flops: mm(6.0),
                work: Matmul,
                launches: 4,
                products: 2,
                views: &["qkv_w", "qkv_b"],
            });
            self.push(Spec {
                kind: Ln1Bwd(l),
                phase: Backward,
                reads: &[s.dln1, a.x_in, a.ln1_stats, lw, h.dres],
                writes: &[h.dres, lg],
                allocs: &[],
                frees: &[s.dln1, a.x_in, a.ln1_stats],
                flops: 0.0,
                work: Memory,
                launches: 3,
                products: 0,
                views: &["ln1_w", "ln1_b"],
            });
            adam(self, o);
        }
        let eo = Owner::Embedding;
        let embed_allocs: Vec<TensorId> = if first { vec![g(eo)] } else { vec![] };
        let mut embed_writes = vec![g(eo)];
        if tied {
            embed_writes.extend((0..k).map(|i| g(Owner::OutputChunk(i))));
        }
        self.push(Spec {
            kind: EmbedBwd,
            phase: Backward,
            reads: &[h.dres, io.tokens],
            writes: &embed_writes,
            allocs: &embed_allocs,
            frees: &[h.dres],
            flops: 0.0,
            work: Memory,
            launches: if tied { 1 + k } else { 3 },
            products: 0,
            views: &[],
        });
        adam(self, eo);
        if tied {
            for i in 0..k {
                adam(self, Owner::OutputChunk(i));
            }
        }
    }

    /// AdamW of one owner (reading the clip scale in a clipped step); frees its gradients.
    fn adam(&mut self, o: Owner) {
        let p = *self.inv.params(o);
        let mut reads = vec![p.grads, p.optimizer];
        reads.extend(self.inv.clip.as_ref().map(|c| c.scale));
        self.push(Spec {
            kind: OpKind::Adam(o),
            phase: Phase::Optimizer,
            reads: &reads,
            writes: &[p.optimizer, p.weights],
            allocs: &[],
            frees: &[p.grads],
            flops: 0.0,
            work: WorkClass::Memory,
            // One AdamW kernel per parameter view (weight decay differs between them).
            launches: self.inv.tensor(p.weights).views.len() as u32,
            products: 0,
            views: &[],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Attention, Precision};
    use crate::inventory::{BlockKind, TensorClass};
    use proptest::prelude::*;

    // One argument per field the property test varies.
    #[allow(clippy::too_many_arguments)]
    fn cfg(
        layers: u32,
        heads: u32,
        head_size: u32,
        batch: u32,
        seq: u32,
        vocab: u32,
        chunks: u32,
        tied: bool,
        attention: Attention,
    ) -> GptConfig {
        GptConfig {
            name: "prop".into(),
            layers,
            hidden: heads * head_size,
            heads,
            vocab,
            padded_vocab: vocab.div_ceil(chunks * 8) * chunks * 8,
            max_seq: seq,
            batch,
            seq,
            tied_embeddings: tied,
            attention,
            precision: Precision::default(),
            output_chunks: chunks,
        }
    }

    /// Saved activation bytes of one layer, written out (2 bytes per bf16 element, s = T, b = B,
    /// h = C, a = NH). Korthikanti et al. count 34sbh + 5as^2b with dropout; we have no dropout,
    /// so their two 1-byte dropout masks (attention output, MLP output: 2sbh) go, leaving 32sbh:
    /// LN1 input 2, QKV input 2, Q,K,V 6, projection input 2, LN2 input 2, fc input 2,
    /// GELU input 8 and fc-projection input 8. For attention they keep softmax output (2as^2b),
    /// its dropout mask (as^2b) and dropout output (2as^2b); materialised attention here keeps
    /// the softmax output only (2as^2b), fused keeps the fp32 log-sum-exp per row (4abs).
    /// Both layer norms also keep fp32 mean and rstd (16sb), which the paper neglects.
    fn closed_form_layer_activation_bytes(c: &GptConfig) -> u64 {
        let (s, b, h, a) = (c.seq as u64, c.batch as u64, c.hidden as u64, c.heads as u64);
        let attention = match c.attention {
            Attention::Materialized => 2 * a * s * s * b,
            Attention::Fused => 4 * a * s * b,
        };
        32 * s * b * h + 16 * s * b + attention
    }

    fn any_config() -> impl Strategy<Value = GptConfig> {
        (
            1u32..5,
            1u32..5,
            prop::sample::select(vec![8u32, 16, 32]),
            1u32..4,
            prop::sample::select(vec![16u32, 32, 64]),
            100u32..600,
            prop::sample::select(vec![1u32, 2, 4]),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(l, nh, hs, b, t, v, k, tied, fused)| {
                cfg(l, nh, hs, b, t, v, k, tied, if fused { Attention::Fused } else { Attention::Materialized })
            })
    }

    proptest! {
        #[test]
        fn every_tensor_is_allocated_before_use_and_freed_after(c in any_config(), k in 1u32..4, clipped in any::<bool>()) {
            let clipping = if clipped { Clipping::GlobalNorm } else { Clipping::Off };
            let p = Program::build_accumulating(&c, clipping, k);
            prop_assert_eq!(p.check_lifetimes(), Ok(()));
        }

        #[test]
        fn live_bytes_never_negative_and_classes_add_up(c in any_config()) {
            let p = Program::build(&c);
            let inv = &p.inventory;
            let mut live: i128 = inv.tensors.iter().filter(|t| t.persistent).map(|t| t.bytes.0 as i128).sum();
            for op in &p.ops {
                live += op.allocs.iter().map(|t| inv.tensor(*t).bytes.0 as i128).sum::<i128>();
                live -= op.frees.iter().map(|t| inv.tensor(*t).bytes.0 as i128).sum::<i128>();
                prop_assert!(live >= 0);
            }
            let persistent: i128 = inv.tensors.iter().filter(|t| t.persistent).map(|t| t.bytes.0 as i128).sum();
            prop_assert_eq!(live, persistent, "the step ends where it began");
            let total: u64 = inv.tensors.iter().map(|t| t.bytes.0).sum();
            let by_class: u64 = [TensorClass::Weights, TensorClass::Grads, TensorClass::OptimizerState, TensorClass::Activations, TensorClass::Scratch, TensorClass::Workspace, TensorClass::Io]
                .iter().map(|k| inv.bytes_of(*k).0).sum();
            prop_assert_eq!(total, by_class);
            prop_assert_eq!(inv.bytes_of(TensorClass::OptimizerState).0, 12 * c.allocated_param_count());
        }

        #[test]
        fn layer_activations_match_the_closed_form(c in any_config()) {
            let inv = Inventory::build(&c);
            for l in 0..c.layers {
                prop_assert_eq!(inv.layer_activation_bytes(l).0, closed_form_layer_activation_bytes(&c));
            }
        }
    }

    #[test]
    fn shipped_configs_have_exact_parameter_counts() {
        // (name, params with V = 50257): closed form V*C(*2 untied) + n_ctx*C + L*(12C^2+13C) + 2C.
        let expect = [
            ("gpt2-124m", 124_439_808u64),
            ("gpt2-350m", 354_823_168),
            ("gpt2-774m", 774_030_080),
            ("gpt2-1.5b", 1_557_611_200),
            ("gpt3-125m", 163_823_616),
            ("gpt3-1.3b", 1_418_649_600),
            ("gpt3-2.7b", 2_780_211_200),
            ("gpt3-6.7b", 6_864_257_024),
            ("gpt3-13b", 13_110_702_080),
            ("gpt3-175b", 175_221_817_344),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        for (name, params) in expect {
            let c = GptConfig::load(&dir.join(format!("{name}.ron"))).unwrap();
            assert_eq!(c.param_count(), params, "{name}");
            let p = Program::build(&c);
            assert_eq!(p.inventory.param_count(), c.allocated_param_count(), "{name}");
            assert_eq!(p.check_lifetimes(), Ok(()), "{name}");
            assert_eq!(Program::build_with(&c, Clipping::GlobalNorm).check_lifetimes(), Ok(()), "{name} clipped");
        }
        let gpt2 = GptConfig::load(&dir.join("gpt2-124m.ron")).unwrap();
        assert_eq!(gpt2.allocated_param_count(), 124_475_904);
    }

    #[test]
    fn find_by_the_index_is_the_first_op_of_its_kind_built_or_read_back() {
        let c = cfg(3, 2, 16, 2, 16, 300, 2, false, Attention::Fused);
        let p = Program::build_with(&c, Clipping::GlobalNorm);
        let scan = |p: &Program, k: OpKind| p.ops.iter().find(|o| o.kind == k).map(|o| o.id);
        let back: Program = ron::from_str(&ron::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p, "the index is no part of a program's value");
        for o in &p.ops {
            assert_eq!(p.find(o.kind).map(|x| x.id), scan(&p, o.kind), "{:?}", o.kind);
            assert_eq!(back.find(o.kind).map(|x| x.id), scan(&p, o.kind), "{:?} read back", o.kind);
        }
        assert!(p.find(OpKind::Adam(Owner::Layer(7))).is_none());
        // Ops changed after the build are searched, not looked up.
        let mut q = p.clone();
        let first = q.ops.remove(0);
        assert_ne!(q.find(first.kind).map(|o| o.id), Some(first.id));
    }

    #[test]
    fn a_clipped_step_updates_after_every_gradient_and_the_scale() {
        for tied in [false, true] {
            let c = cfg(3, 2, 16, 2, 16, 300, 2, tied, Attention::Fused);
            let p = Program::build_with(&c, Clipping::GlobalNorm);
            assert_eq!(p.check_lifetimes(), Ok(()));
            let inv = &p.inventory;
            let clip = inv.clip.as_ref().unwrap();
            let at = |k: OpKind| p.find(k).unwrap().id.index();
            let scale = at(OpKind::ClipScale);
            let last_backward = p.ops.iter().rposition(|o| o.phase == Phase::Backward && !matches!(o.kind, OpKind::GradNorm(_))).unwrap();
            assert!(scale > last_backward);
            for o in inv.owners() {
                let g = inv.params(o).grads;
                let norm = at(OpKind::GradNorm(o));
                let last_write = p.ops.iter().rposition(|op| op.writes.contains(&g) || op.allocs.contains(&g)).unwrap();
                // Right after the gradient is complete, and before the scale.
                assert!(norm > last_write && norm < scale, "{o}");
                let adam = p.op(OpId(at(OpKind::Adam(o)) as u32));
                assert!(adam.id.index() > scale && adam.reads.contains(&clip.scale) && adam.frees.contains(&g), "{o}");
            }
            assert_eq!(p.op(OpId(scale as u32)).reads, clip.norms);
            // Unclipped: the same forward and backward, each update right after its gradient.
            let plain = Program::build(&c);
            assert!(plain.inventory.clip.is_none() && plain.find(OpKind::ClipScale).is_none());
            let kinds = |p: &Program| {
                p.ops
                    .iter()
                    .filter(|o| o.phase != Phase::Optimizer && !matches!(o.kind, OpKind::GradNorm(_)))
                    .map(|o| o.kind)
                    .collect::<Vec<_>>()
            };
            assert_eq!(kinds(&p), kinds(&plain));
        }
    }

    #[test]
    fn accumulation_runs_k_passes_into_one_set_of_gradients_then_the_updates() {
        for (tied, clipping) in [(false, Clipping::Off), (true, Clipping::GlobalNorm), (false, Clipping::GlobalNorm)] {
            let c = cfg(2, 2, 16, 2, 16, 300, 2, tied, Attention::Fused);
            let one = Program::build_with(&c, clipping);
            let k = 3;
            let p = Program::build_accumulating(&c, clipping, k);
            assert_eq!(p.check_lifetimes(), Ok(()), "tied {tied}, {clipping:?}");
            assert_eq!(p.tokens_per_step(), 3 * one.tokens_per_step());
            assert!((p.model_flops().0 / one.model_flops().0 - 3.0).abs() < 1e-12);
            assert!((p.total_flops().0 / one.total_flops().0 - 3.0).abs() < 1e-12, "each pass computes as the step of one");
            let inv = &p.inventory;
            for o in inv.owners() {
                let g = inv.params(o).grads;
                let allocs: Vec<&Op> = p.ops.iter().filter(|op| op.allocs.contains(&g)).collect();
                assert_eq!(allocs.len(), 1, "{o}: the first pass allocates the sums");
                assert_eq!(allocs[0].micro, 0);
                let writers: std::collections::BTreeSet<u32> =
                    p.ops.iter().filter(|op| op.writes.contains(&g)).map(|op| op.micro).collect();
                assert_eq!(writers, (0..k).collect(), "{o}: every pass adds into them");
                let adam = p.find(OpKind::Adam(o)).unwrap();
                let last_write = p.ops.iter().rposition(|op| op.writes.contains(&g)).unwrap();
                assert!(adam.id.index() > last_write && adam.frees.contains(&g));
                assert_eq!(p.find_all(OpKind::Adam(o)).count(), 1);
            }
            for m in 0..k {
                assert!(p.find_in(OpKind::Embed, m).is_some() && p.find_in(OpKind::Loss, m).is_some());
                assert_eq!(p.recompute_ops(1, m).len(), 7);
                assert!(p.recompute_ops(1, m).iter().all(|o| p.op(*o).micro == m));
            }
            // Updates (and partial norms) come after the last pass's own backward ops only.
            let first_update = p.ops.iter().position(|o| matches!(o.kind, OpKind::Adam(_) | OpKind::GradNorm(_))).unwrap();
            assert!(p.ops[..first_update].iter().all(|o| o.micro < k - 1 || o.phase != Phase::Optimizer));
            assert!(p.ops[first_update..].iter().all(|o| o.micro == k - 1));
            // The io tensors hold every micro-batch; an op's traffic counts its own.
            assert_eq!(inv.tensor(inv.io.tokens).bytes.0, 3 * one.inventory.tensor(one.inventory.io.tokens).bytes.0);
            let loss = |p: &Program, m| p.find_in(OpKind::Loss, m).unwrap().bytes;
            assert_eq!(loss(&p, 2), loss(&one, 0));
            // Later passes read the gradients they add into.
            let fc = |p: &Program, m| p.find_in(OpKind::FcBwd(0), m).unwrap().bytes.0;
            assert_eq!(fc(&p, 0), fc(&one, 0));
            assert!(fc(&p, 1) > fc(&p, 0));
            assert!(p.ops.iter().filter(|o| o.micro == 1).all(|o| o.name.starts_with("mb1.")));
        }
        // One micro-batch is the step as it was.
        let c = cfg(2, 2, 16, 2, 16, 300, 2, false, Attention::Fused);
        assert_eq!(Program::build_accumulating(&c, Clipping::GlobalNorm, 1), Program::build_with(&c, Clipping::GlobalNorm));
    }

    #[test]
    fn recompute_ops_rebuild_exactly_the_inner_activations() {
        let c = cfg(2, 2, 16, 2, 16, 300, 2, false, Attention::Fused);
        let p = Program::build(&c);
        let inner = p.inventory.find_block(BlockKind::LayerActivations(1)).unwrap();
        let mut rebuilt: Vec<TensorId> = p.recompute_ops(1, 0).iter().flat_map(|o| p.op(*o).allocs.clone()).collect();
        rebuilt.sort();
        let mut want = inner.tensors.clone();
        want.sort();
        assert_eq!(rebuilt, want);
    }
}
