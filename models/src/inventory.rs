//! The tensor inventory: every tensor one training step touches, its bytes, class and block.
//!
//! This is the one source of truth (DESIGN.md): the planner's prediction, the simulator, the
//! executor's allocations and the tests all derive from it. Shapes, per tensor, with
//! B micro-batch, T sequence, C hidden, NH heads, Vp padded vocabulary, k output chunks:
//!
//! ```text
//! parameters (one contiguous tensor per owner and class, views inside):
//!   embedding.{weights,grads}     wte (Vp x C, untied only) + wpe (max_seq x C)   bf16
//!   layer{l}.{weights,grads}      ln1 w,b | qkv w (3C x C), b | attproj w (C x C), b
//!                                 | ln2 w,b | fc w (4C x C), b | fcproj w (C x 4C), b  bf16
//!   final_norm.{weights,grads}    lnf w,b (2C)                                       bf16
//!   chunk{c}.{weights,grads}      output rows (Vp/k x C); with tied embeddings these
//!                                 are also the token table                          bf16
//!   <owner>.optimizer             [master | adam m | adam v], 3 x params            fp32
//! saved activations of layer l (block layer{l}.input, layer{l}.activations):
//!   x_in (B,T,C) | ln1 (B,T,C) ln1_stats (2,B,T f32) | qkv (B,T,3C)
//!   | att: Fused lse (B,NH,T f32) or Materialized probabilities (B,NH,T,T) | atty (B,T,C)
//!   | x_mid (B,T,C) | ln2 (B,T,C) ln2_stats (2,B,T f32) | fch (B,T,4C) | fch_gelu (B,T,4C)
//! head activations: x_out (B,T,C) | lnf (B,T,C) | lnf_stats (2,B,T f32)
//! io: tokens, targets (B,T i32), losses (B,T f32), each (K,B,T) with K micro-batches per step;
//!   workspace: cuBLASLt 32 MiB
//! gradients accumulate in place across micro-batches, in bf16 (the products' output type, and
//!   what PyTorch does for bf16 parameters: autograd adds each micro-batch into `.grad`)
//! scratch: logits chunk (B,T,Vp/k), ce_stats (3,B,T f32), dlnf (B,T,C f32), dres (B,T,C),
//!   per layer: dfch (B,T,4C), dln2 (B,T,C), datty (B,T,C), dqkv (B,T,3C), dln1 (B,T,C),
//!   attention backward: Fused delta (B,NH,T f32) or Materialized datt (B,NH,T,T)
//! ```

use crate::config::{Attention, DType, GptConfig};
use crate::units::{Bytes, MIB};
use serde::{Deserialize, Serialize};
use std::fmt;

/// cuBLASLt workspace; 32 MiB is the usual recommendation on Hopper.
pub const MATMUL_WORKSPACE: Bytes = Bytes(32 * MIB);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TensorId(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlockId(pub u32);

impl TensorId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
impl BlockId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Who a parameter tensor belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Owner {
    Embedding,
    Layer(u32),
    FinalNorm,
    OutputChunk(u32),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Embedding => write!(f, "embedding"),
            Owner::Layer(l) => write!(f, "layer{l}"),
            Owner::FinalNorm => write!(f, "final_norm"),
            Owner::OutputChunk(c) => write!(f, "chunk{c}"),
        }
    }
}

/// What a tensor is, for memory accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TensorClass {
    Weights,
    Grads,
    OptimizerState,
    Activations,
    Scratch,
    Workspace,
    Io,
}

/// The categories memory plots stack by (DESIGN.md vocabulary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemoryCategory {
    Weights,
    Grads,
    OptimizerState,
    Activations,
    OutputChunks,
    Embedding,
    Scratch,
    Workspace,
}

impl MemoryCategory {
    pub const ALL: [MemoryCategory; 8] = [
        MemoryCategory::Weights,
        MemoryCategory::Grads,
        MemoryCategory::OptimizerState,
        MemoryCategory::Activations,
        MemoryCategory::OutputChunks,
        MemoryCategory::Embedding,
        MemoryCategory::Scratch,
        MemoryCategory::Workspace,
    ];
    pub fn label(self) -> &'static str {
        match self {
            MemoryCategory::Weights => "weights",
            MemoryCategory::Grads => "gradients",
            MemoryCategory::OptimizerState => "optimizer state",
            MemoryCategory::Activations => "activations",
            MemoryCategory::OutputChunks => "output-layer chunks",
            MemoryCategory::Embedding => "embedding",
            MemoryCategory::Scratch => "scratch",
            MemoryCategory::Workspace => "workspace + io",
        }
    }
}

/// The unit of placement (DESIGN.md "block").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BlockKind {
    Weights(Owner),
    Grads(Owner),
    Optimizer(Owner),
    /// The layer's input residual x_in: all that full recomputation keeps.
    LayerInput(u32),
    /// Everything else layer l saves for backward.
    LayerActivations(u32),
    /// Final norm input and output, saved for the head's backward.
    HeadActivations,
    Io,
    Workspace,
    /// Short-lived buffers of one or a few ops; always on the GPU.
    Scratch,
    /// Clipping by the global norm: each owner's partial sums of squares of its gradient, where
    /// the gradient is (so placed with the owner), and the clip scale the updates read.
    Clipping,
}

impl BlockKind {
    /// Whether the planner may move this block off the GPU (or recompute it).
    pub fn placeable(self) -> bool {
        !matches!(self, BlockKind::Io | BlockKind::Workspace | BlockKind::Scratch | BlockKind::Clipping)
    }
    pub fn owner(self) -> Option<Owner> {
        match self {
            BlockKind::Weights(o) | BlockKind::Grads(o) | BlockKind::Optimizer(o) => Some(o),
            _ => None,
        }
    }
}

impl fmt::Display for BlockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockKind::Weights(o) => write!(f, "{o}.weights"),
            BlockKind::Grads(o) => write!(f, "{o}.grads"),
            BlockKind::Optimizer(o) => write!(f, "{o}.optimizer"),
            BlockKind::LayerInput(l) => write!(f, "layer{l}.input"),
            BlockKind::LayerActivations(l) => write!(f, "layer{l}.activations"),
            BlockKind::HeadActivations => write!(f, "head.activations"),
            BlockKind::Io => write!(f, "io"),
            BlockKind::Workspace => write!(f, "workspace"),
            BlockKind::Scratch => write!(f, "scratch"),
            BlockKind::Clipping => write!(f, "clipping"),
        }
    }
}

/// A named region inside a tensor (a parameter inside its owner's flat buffer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub name: String,
    pub shape: Vec<u64>,
    /// Offset in elements from the start of the tensor.
    pub offset: u64,
}

impl View {
    pub fn elems(&self) -> u64 {
        self.shape.iter().product()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub id: TensorId,
    pub name: String,
    pub class: TensorClass,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub bytes: Bytes,
    pub block: BlockId,
    /// Lives through the whole step (and across steps) in the all-on-GPU schedule.
    pub persistent: bool,
    /// Parameter views, for parameter tensors; empty otherwise.
    pub views: Vec<View>,
    /// Memory category, for plots.
    pub category: MemoryCategory,
}

impl Tensor {
    pub fn elems(&self) -> u64 {
        self.shape.iter().product()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub id: BlockId,
    pub kind: BlockKind,
    pub tensors: Vec<TensorId>,
    pub bytes: Bytes,
}

impl Block {
    pub fn name(&self) -> String {
        self.kind.to_string()
    }
}

/// The per-owner parameter, grad and optimizer tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamTensors {
    pub weights: TensorId,
    pub grads: TensorId,
    pub optimizer: TensorId,
    pub params: u64,
}

/// Saved activations of one transformer layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerActs {
    pub x_in: TensorId,
    pub ln1: TensorId,
    pub ln1_stats: TensorId,
    pub qkv: TensorId,
    pub att: TensorId,
    pub atty: TensorId,
    pub x_mid: TensorId,
    pub ln2: TensorId,
    pub ln2_stats: TensorId,
    pub fch: TensorId,
    pub fch_gelu: TensorId,
}

/// Backward scratch of one transformer layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerScratch {
    pub dfch: TensorId,
    pub dln2: TensorId,
    pub datty: TensorId,
    pub dqkv: TensorId,
    pub dln1: TensorId,
    /// Fused: delta = rowsum(dO * O) (B,NH,T f32); Materialized: datt (B,NH,T,T).
    pub datt: TensorId,
}

/// Tensors of the final norm, output layer and loss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadTensors {
    pub x_out: TensorId,
    pub lnf: TensorId,
    pub lnf_stats: TensorId,
    /// One logits buffer per vocabulary chunk (B,T,Vp/k bf16), never two alive when k > 1.
    pub logits: Vec<TensorId>,
    /// Per row: running max, sum of exponentials, target logit (fp32).
    pub ce_stats: TensorId,
    pub dlnf: TensorId,
    pub dres: TensorId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoTensors {
    pub tokens: TensorId,
    pub targets: TensorId,
    pub losses: TensorId,
    pub workspace: TensorId,
}

/// Partial sums per owner's gradient: the norm kernel's grid (one fp32 partial per block, each
/// block a contiguous range, each a fixed reduction tree), which the host replays bitwise.
pub const GRAD_NORM_PARTIALS: u64 = 256;
/// 32-bit words of an owner's partial norms tensor: the [`GRAD_NORM_PARTIALS`] fp32 partials,
/// then as many uint32 exact checksums of the same ranges (an equivalence check's gradient
/// checksum).
pub const GRAD_NORM_WORDS: u64 = 2 * GRAD_NORM_PARTIALS;

/// The tensors of clipping by the global norm (a clipped step only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipTensors {
    /// Per owner, in [`Inventory::owners`] order: [`GRAD_NORM_PARTIALS`] fp32 partial sums of
    /// the squares of its gradient and as many exact checksums ([`GRAD_NORM_WORDS`] words),
    /// written by its `GradNorm` op where the gradient is and read by `ClipScale` on the host.
    pub norms: Vec<TensorId>,
    /// One fp32: min(1, max_norm / (norm + 1e-6)), made on the host by `ClipScale`, read by
    /// every update (persistent: the GPU's copy is written by a copy from the host's).
    pub scale: TensorId,
}

/// Every tensor of one step, with typed handles to find them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub tensors: Vec<Tensor>,
    pub blocks: Vec<Block>,
    pub embedding: ParamTensors,
    pub layers: Vec<ParamTensors>,
    pub final_norm: ParamTensors,
    pub chunks: Vec<ParamTensors>,
    pub acts: Vec<LayerActs>,
    pub scratch: Vec<LayerScratch>,
    pub head: HeadTensors,
    pub io: IoTensors,
    /// Present in a clipped step only.
    #[serde(default)]
    pub clip: Option<ClipTensors>,
}

impl Inventory {
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.index()]
    }
    pub fn block(&self, id: BlockId) -> &Block {
        &self.blocks[id.index()]
    }
    pub fn block_of(&self, id: TensorId) -> &Block {
        self.block(self.tensor(id).block)
    }
    pub fn find_block(&self, kind: BlockKind) -> Option<&Block> {
        self.blocks.iter().find(|b| b.kind == kind)
    }
    pub fn params(&self, owner: Owner) -> &ParamTensors {
        match owner {
            Owner::Embedding => &self.embedding,
            Owner::Layer(l) => &self.layers[l as usize],
            Owner::FinalNorm => &self.final_norm,
            Owner::OutputChunk(c) => &self.chunks[c as usize],
        }
    }
    /// Every owner of parameters, in program order.
    pub fn owners(&self) -> Vec<Owner> {
        let mut v = vec![Owner::Embedding];
        v.extend((0..self.layers.len() as u32).map(Owner::Layer));
        v.push(Owner::FinalNorm);
        v.extend((0..self.chunks.len() as u32).map(Owner::OutputChunk));
        v
    }
    /// Total bytes of a class.
    pub fn bytes_of(&self, class: TensorClass) -> Bytes {
        self.tensors.iter().filter(|t| t.class == class).map(|t| t.bytes).sum()
    }
    /// Parameters as allocated (padded vocabulary).
    pub fn param_count(&self) -> u64 {
        self.owners().iter().map(|o| self.params(*o).params).sum()
    }
    /// Saved activation bytes of one transformer layer (input + the rest).
    pub fn layer_activation_bytes(&self, l: u32) -> Bytes {
        [BlockKind::LayerInput(l), BlockKind::LayerActivations(l)].iter().filter_map(|k| self.find_block(*k)).map(|b| b.bytes).sum()
    }

    /// Builds the inventory of one training step of `cfg` without clipping.
    pub fn build(cfg: &GptConfig) -> Inventory {
        Builder::new(cfg).build()
    }

    /// The inventory of a step clipped by the global norm: [`Inventory::build`]'s tensors, then
    /// the clipping tensors ([`ClipTensors`]).
    pub fn build_clipped(cfg: &GptConfig) -> Inventory {
        let mut inv = Builder::new(cfg).build();
        let mut b = Builder { cfg, tensors: std::mem::take(&mut inv.tensors), blocks: std::mem::take(&mut inv.blocks) };
        let norms = inv
            .owners()
            .iter()
            .map(|o| {
                b.tensor(
                    format!("{o}.grad_norm"),
                    TensorClass::Scratch,
                    DType::F32,
                    vec![2, GRAD_NORM_PARTIALS],
                    BlockKind::Clipping,
                    false,
                    Vec::new(),
                    MemoryCategory::Scratch,
                )
            })
            .collect();
        let scale = b.tensor(
            "clip_scale".into(),
            TensorClass::Scratch,
            DType::F32,
            vec![1],
            BlockKind::Clipping,
            true,
            Vec::new(),
            MemoryCategory::Scratch,
        );
        inv.tensors = b.tensors;
        inv.blocks = b.blocks;
        inv.clip = Some(ClipTensors { norms, scale });
        inv
    }

    /// The inventory of a step of `micro_batches` micro-batches: the step's tokens, targets and
    /// losses for all of them (K x B x T each), every other tensor as one micro-batch needs it
    /// (activations and scratch are made again per micro-batch; gradients sum in place).
    pub fn accumulating(mut self, micro_batches: u32) -> Inventory {
        if micro_batches <= 1 {
            return self;
        }
        for id in [self.io.tokens, self.io.targets, self.io.losses] {
            let t = &mut self.tensors[id.index()];
            let grown = Bytes(t.bytes.0 * micro_batches as u64);
            let block = t.block;
            self.blocks[block.index()].bytes = Bytes(self.blocks[block.index()].bytes.0 + grown.0 - t.bytes.0);
            t.shape.insert(0, micro_batches as u64);
            t.bytes = grown;
        }
        self
    }

    /// The partial norms tensor of `owner`'s gradient, in a clipped step.
    pub fn grad_norm(&self, owner: Owner) -> Option<TensorId> {
        let clip = self.clip.as_ref()?;
        self.owners().iter().position(|o| *o == owner).map(|i| clip.norms[i])
    }
}

struct Builder<'a> {
    cfg: &'a GptConfig,
    tensors: Vec<Tensor>,
    blocks: Vec<Block>,
}

impl<'a> Builder<'a> {
    fn new(cfg: &'a GptConfig) -> Self {
        Builder { cfg, tensors: Vec::new(), blocks: Vec::new() }
    }

    fn block(&mut self, kind: BlockKind) -> BlockId {
        if let Some(b) = self.blocks.iter().find(|b| b.kind == kind) {
            return b.id;
        }
        let id = BlockId(self.blocks.len() as u32);
        self.blocks.push(Block { id, kind, tensors: Vec::new(), bytes: Bytes::ZERO });
        id
    }

    #[allow(clippy::too_many_arguments)]
    fn tensor(
        &mut self,
        name: String,
        class: TensorClass,
        dtype: DType,
        shape: Vec<u64>,
        block: BlockKind,
        persistent: bool,
        views: Vec<View>,
        category: MemoryCategory,
    ) -> TensorId {
        let id = TensorId(self.tensors.len() as u32);
        let bytes = Bytes(shape.iter().product::<u64>() * dtype.size());
        let block = self.block(block);
        self.blocks[block.index()].tensors.push(id);
        self.blocks[block.index()].bytes += bytes;
        self.tensors.push(Tensor { id, name, class, dtype, shape, bytes, block, persistent, views, category });
        id
    }

    fn param_views(&self, owner: Owner) -> Vec<View> {
        let c = self.cfg.hidden as u64;
        let vc = (self.cfg.padded_vocab / self.cfg.output_chunks) as u64;
        let shapes: Vec<(&str, Vec<u64>)> = match owner {
            Owner::Embedding => {
                let mut v = Vec::new();
                if !self.cfg.tied_embeddings {
                    v.push(("wte", vec![self.cfg.padded_vocab as u64, c]));
                }
                v.push(("wpe", vec![self.cfg.max_seq as u64, c]));
                v
            }
            Owner::Layer(_) => vec![
                ("ln1_w", vec![c]),
                ("ln1_b", vec![c]),
                ("qkv_w", vec![3 * c, c]),
                ("qkv_b", vec![3 * c]),
                ("attproj_w", vec![c, c]),
                ("attproj_b", vec![c]),
                ("ln2_w", vec![c]),
                ("ln2_b", vec![c]),
                ("fc_w", vec![4 * c, c]),
                ("fc_b", vec![4 * c]),
                ("fcproj_w", vec![c, 4 * c]),
                ("fcproj_b", vec![c]),
            ],
            Owner::FinalNorm => vec![("lnf_w", vec![c]), ("lnf_b", vec![c])],
            Owner::OutputChunk(_) => vec![("w", vec![vc, c])],
        };
        let mut offset = 0;
        shapes
            .into_iter()
            .map(|(name, shape)| {
                let v = View { name: name.to_string(), shape, offset };
                offset += v.elems();
                v
            })
            .collect()
    }

    fn params(&mut self, owner: Owner) -> ParamTensors {
        let views = self.param_views(owner);
        let n: u64 = views.iter().map(View::elems).sum();
        let category = match owner {
            Owner::Embedding => Some(MemoryCategory::Embedding),
            Owner::OutputChunk(_) => Some(MemoryCategory::OutputChunks),
            _ => None,
        };
        let p = self.cfg.precision;
        let weights = self.tensor(
            format!("{owner}.weights"),
            TensorClass::Weights,
            p.weights,
            vec![n],
            BlockKind::Weights(owner),
            true,
            views.clone(),
            category.unwrap_or(MemoryCategory::Weights),
        );
        let grads = self.tensor(
            format!("{owner}.grads"),
            TensorClass::Grads,
            p.grads,
            vec![n],
            BlockKind::Grads(owner),
            false,
            views,
            category.unwrap_or(MemoryCategory::Grads),
        );
        // master, m and v side by side: one contiguous block to stream.
        let optimizer = self.tensor(
            format!("{owner}.optimizer"),
            TensorClass::OptimizerState,
            p.master,
            vec![3, n],
            BlockKind::Optimizer(owner),
            true,
            Vec::new(),
            category.unwrap_or(MemoryCategory::OptimizerState),
        );
        ParamTensors { weights, grads, optimizer, params: n }
    }

    fn act(&mut self, name: String, dtype: DType, shape: Vec<u64>, block: BlockKind) -> TensorId {
        self.tensor(name, TensorClass::Activations, dtype, shape, block, false, Vec::new(), MemoryCategory::Activations)
    }

    fn scratch(&mut self, name: String, dtype: DType, shape: Vec<u64>) -> TensorId {
        self.tensor(name, TensorClass::Scratch, dtype, shape, BlockKind::Scratch, false, Vec::new(), MemoryCategory::Scratch)
    }

    fn build(mut self) -> Inventory {
        let cfg = self.cfg;
        let (b, t, c, nh) = (cfg.batch as u64, cfg.seq as u64, cfg.hidden as u64, cfg.heads as u64);
        let k = cfg.output_chunks;
        let vc = (cfg.padded_vocab / k) as u64;
        let bf = DType::Bf16;
        let f32 = DType::F32;

        let io_kind = BlockKind::Io;
        let tokens =
            self.tensor("tokens".into(), TensorClass::Io, DType::I32, vec![b, t], io_kind, true, Vec::new(), MemoryCategory::Workspace);
        let targets =
            self.tensor("targets".into(), TensorClass::Io, DType::I32, vec![b, t], io_kind, true, Vec::new(), MemoryCategory::Workspace);
        let losses = self.tensor("losses".into(), TensorClass::Io, f32, vec![b, t], io_kind, true, Vec::new(), MemoryCategory::Workspace);
        let workspace = self.tensor(
            "matmul_workspace".into(),
            TensorClass::Workspace,
            DType::Bf16,
            vec![MATMUL_WORKSPACE.0 / 2],
            BlockKind::Workspace,
            true,
            Vec::new(),
            MemoryCategory::Workspace,
        );

        let embedding = self.params(Owner::Embedding);
        let layers: Vec<ParamTensors> = (0..cfg.layers).map(|l| self.params(Owner::Layer(l))).collect();
        let final_norm = self.params(Owner::FinalNorm);
        let chunks: Vec<ParamTensors> = (0..k).map(|i| self.params(Owner::OutputChunk(i))).collect();

        let mut acts = Vec::new();
        for l in 0..cfg.layers {
            let inner = BlockKind::LayerActivations(l);
            let x_in = self.act(format!("layer{l}.x_in"), bf, vec![b, t, c], BlockKind::LayerInput(l));
            let ln1 = self.act(format!("layer{l}.ln1"), bf, vec![b, t, c], inner);
            let ln1_stats = self.act(format!("layer{l}.ln1_stats"), f32, vec![2, b, t], inner);
            let qkv = self.act(format!("layer{l}.qkv"), bf, vec![b, t, 3 * c], inner);
            let att = match cfg.attention {
                Attention::Fused => self.act(format!("layer{l}.att_lse"), f32, vec![b, nh, t], inner),
                Attention::Materialized => self.act(format!("layer{l}.att"), bf, vec![b, nh, t, t], inner),
            };
            let atty = self.act(format!("layer{l}.atty"), bf, vec![b, t, c], inner);
            let x_mid = self.act(format!("layer{l}.x_mid"), bf, vec![b, t, c], inner);
            let ln2 = self.act(format!("layer{l}.ln2"), bf, vec![b, t, c], inner);
            let ln2_stats = self.act(format!("layer{l}.ln2_stats"), f32, vec![2, b, t], inner);
            let fch = self.act(format!("layer{l}.fch"), bf, vec![b, t, 4 * c], inner);
            let fch_gelu = self.act(format!("layer{l}.fch_gelu"), bf, vec![b, t, 4 * c], inner);
            acts.push(LayerActs { x_in, ln1, ln1_stats, qkv, att, atty, x_mid, ln2, ln2_stats, fch, fch_gelu });
        }
        let head_kind = BlockKind::HeadActivations;
        let x_out = self.act("head.x_out".into(), bf, vec![b, t, c], head_kind);
        let lnf = self.act("head.lnf".into(), bf, vec![b, t, c], head_kind);
        let lnf_stats = self.act("head.lnf_stats".into(), f32, vec![2, b, t], head_kind);

        let logits = (0..k).map(|i| self.scratch(format!("chunk{i}.logits"), bf, vec![b, t, vc])).collect();
        let ce_stats = self.scratch("ce_stats".into(), f32, vec![3, b, t]);
        let dlnf = self.scratch("dlnf".into(), f32, vec![b, t, c]);
        let dres = self.scratch("dres".into(), bf, vec![b, t, c]);
        let mut scratch = Vec::new();
        for l in 0..cfg.layers {
            let dfch = self.scratch(format!("layer{l}.dfch"), bf, vec![b, t, 4 * c]);
            let dln2 = self.scratch(format!("layer{l}.dln2"), bf, vec![b, t, c]);
            let datty = self.scratch(format!("layer{l}.datty"), bf, vec![b, t, c]);
            let dqkv = self.scratch(format!("layer{l}.dqkv"), bf, vec![b, t, 3 * c]);
            let dln1 = self.scratch(format!("layer{l}.dln1"), bf, vec![b, t, c]);
            let datt = match cfg.attention {
                Attention::Fused => self.scratch(format!("layer{l}.att_delta"), f32, vec![b, nh, t]),
                Attention::Materialized => self.scratch(format!("layer{l}.datt"), bf, vec![b, nh, t, t]),
            };
            scratch.push(LayerScratch { dfch, dln2, datty, dqkv, dln1, datt });
        }

        Inventory {
            tensors: self.tensors,
            blocks: self.blocks,
            embedding,
            layers,
            final_norm,
            chunks,
            acts,
            scratch,
            head: HeadTensors { x_out, lnf, lnf_stats, logits, ce_stats, dlnf, dres },
            io: IoTensors { tokens, targets, losses, workspace },
            clip: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Precision;

    pub(crate) fn cfg(attention: Attention, tied: bool) -> GptConfig {
        GptConfig {
            name: "t".into(),
            layers: 3,
            hidden: 64,
            heads: 4,
            vocab: 500,
            padded_vocab: 512,
            max_seq: 64,
            batch: 2,
            seq: 32,
            tied_embeddings: tied,
            attention,
            precision: Precision::default(),
            output_chunks: 4,
        }
    }

    #[test]
    fn parameters_add_up_to_the_closed_form() {
        for tied in [true, false] {
            let c = cfg(Attention::Fused, tied);
            let inv = Inventory::build(&c);
            assert_eq!(inv.param_count(), c.allocated_param_count());
            let params = c.allocated_param_count();
            assert_eq!(inv.bytes_of(TensorClass::Weights), Bytes(2 * params));
            assert_eq!(inv.bytes_of(TensorClass::Grads), Bytes(2 * params));
            assert_eq!(inv.bytes_of(TensorClass::OptimizerState), Bytes(12 * params));
        }
    }

    #[test]
    fn blocks_hold_their_tensors_bytes() {
        let inv = Inventory::build(&cfg(Attention::Materialized, true));
        for b in &inv.blocks {
            let sum: Bytes = b.tensors.iter().map(|t| inv.tensor(*t).bytes).sum();
            assert_eq!(sum, b.bytes, "{}", b.name());
            for t in &b.tensors {
                assert_eq!(inv.tensor(*t).block, b.id);
            }
        }
        let names: std::collections::HashSet<_> = inv.tensors.iter().map(|t| &t.name).collect();
        assert_eq!(names.len(), inv.tensors.len(), "tensor names are unique");
    }
}
