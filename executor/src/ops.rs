//! What each op of the step program launches, in order: its kernels ([`crate::kernels`]) and
//! cuBLASLt products, with the inventory's tensors as buffers (`executor/kernels/README.md`,
//! "What each op launches"). Plain Rust: the step ([`crate::step`]) runs these calls on the GPU,
//! calibrate times some of them, and the tests check them without a GPU.
//!
//! The parameter views every launch needs (a layer's `qkv_w`, the embedding's `wpe`, ...) are
//! found by name once, in [`StepLaunches::new`], and kept as regions.

use crate::host::AdamW;
use crate::kernels::{
    AdamwUpdate, AttentionBackward, AttentionForward, AttentionShape, CeBackward, CeLoss, CeStatsUpdate, Colsum, EmbeddingBackwardWpe,
    EmbeddingBackwardWte, EmbeddingForward, FillBf16, GeluBackward, GeluForward, GemmLayout, GradNormPartials, Launch, LaunchError,
    LayernormBackward, LayernormForward, MatType, Product, Region,
};
use models::config::DType;
use models::inventory::{Inventory, Owner, TensorId};
use models::program::{Op, OpKind, Program};
use std::collections::HashMap;

/// One call on the compute stream: a kernel launch or a cuBLASLt product.
#[derive(Clone, Debug, PartialEq)]
pub enum Call<B> {
    Kernel(Launch<B>),
    Product(Product<B>),
}

/// A tensor's whole buffer.
fn whole(inv: &Inventory, t: TensorId) -> Region<TensorId> {
    let tensor = inv.tensor(t);
    Region::whole(t, tensor.bytes.0, tensor.dtype)
}

/// A named view of a parameter tensor.
fn view(inv: &Inventory, t: TensorId, name: &str) -> Result<Region<TensorId>, String> {
    let tensor = inv.tensor(t);
    let v = tensor.views.iter().find(|v| v.name == name).ok_or_else(|| format!("{} has no view {name}", tensor.name))?;
    whole(inv, t).slice(v.offset, v.elems()).map_err(|e| format!("view {name} of {}: {e}", tensor.name))
}

/// The views of a layer's weights (or of its gradients).
struct LayerViews {
    ln1_w: Region<TensorId>,
    ln1_b: Region<TensorId>,
    qkv_w: Region<TensorId>,
    qkv_b: Region<TensorId>,
    attproj_w: Region<TensorId>,
    attproj_b: Region<TensorId>,
    ln2_w: Region<TensorId>,
    ln2_b: Region<TensorId>,
    fc_w: Region<TensorId>,
    fc_b: Region<TensorId>,
    fcproj_w: Region<TensorId>,
    fcproj_b: Region<TensorId>,
}

impl LayerViews {
    fn of(inv: &Inventory, t: TensorId) -> Result<LayerViews, String> {
        let v = |name: &str| view(inv, t, name);
        Ok(LayerViews {
            ln1_w: v("ln1_w")?,
            ln1_b: v("ln1_b")?,
            qkv_w: v("qkv_w")?,
            qkv_b: v("qkv_b")?,
            attproj_w: v("attproj_w")?,
            attproj_b: v("attproj_b")?,
            ln2_w: v("ln2_w")?,
            ln2_b: v("ln2_b")?,
            fc_w: v("fc_w")?,
            fc_b: v("fc_b")?,
            fcproj_w: v("fcproj_w")?,
            fcproj_b: v("fcproj_b")?,
        })
    }
}

/// The views of the embedding's weights (or gradients): the token table (untied only) and the
/// position table.
struct EmbeddingViews {
    wte: Option<Region<TensorId>>,
    wpe: Region<TensorId>,
}

impl EmbeddingViews {
    fn of(inv: &Inventory, t: TensorId, tied: bool) -> Result<EmbeddingViews, String> {
        Ok(EmbeddingViews { wte: if tied { None } else { Some(view(inv, t, "wte")?) }, wpe: view(inv, t, "wpe")? })
    }
    fn wte(&self) -> Result<Region<TensorId>, LaunchError> {
        self.wte.ok_or(LaunchError::NoView("wte"))
    }
}

/// One AdamW launch of an owner: a view's parameters, and whether it is decayed (a matrix).
#[derive(Clone, Copy)]
struct AdamView {
    weights: Region<TensorId>,
    grads: Region<TensorId>,
    master: Region<TensorId>,
    m: Region<TensorId>,
    v: Region<TensorId>,
    elems: u64,
    decayed: bool,
}

/// Every op's launches of one program.
pub struct StepLaunches<'p> {
    program: &'p Program,
    layer_weights: Vec<LayerViews>,
    layer_grads: Vec<LayerViews>,
    embedding_weights: EmbeddingViews,
    embedding_grads: EmbeddingViews,
    /// lnf_w and lnf_b of the final norm's weights and gradients.
    final_weights: (Region<TensorId>, Region<TensorId>),
    final_grads: (Region<TensorId>, Region<TensorId>),
    adam: HashMap<Owner, Vec<AdamView>>,
}

/// Why a program of several micro-batches does not run yet.
pub const NO_ACCUMULATION: &str = "the planner and simulator price gradient accumulation, but the executor's kernels do not add a \
     micro-batch's gradients into the last's yet: run one micro-batch per step (--micro-batches 1)";

impl<'p> StepLaunches<'p> {
    /// Finds every parameter view the launches need.
    pub fn new(program: &'p Program) -> Result<StepLaunches<'p>, String> {
        if program.micro_batches > 1 {
            return Err(format!("{} micro-batches per step: {}", program.micro_batches, NO_ACCUMULATION));
        }
        let inv = &program.inventory;
        let tied = program.config.tied_embeddings;
        let layers = |f: fn(&models::inventory::ParamTensors) -> TensorId| -> Result<Vec<LayerViews>, String> {
            inv.layers.iter().map(|p| LayerViews::of(inv, f(p))).collect()
        };
        let norm =
            |t: TensorId| -> Result<(Region<TensorId>, Region<TensorId>), String> { Ok((view(inv, t, "lnf_w")?, view(inv, t, "lnf_b")?)) };
        let mut adam = HashMap::new();
        for owner in inv.owners() {
            let p = inv.params(owner);
            let n = p.params;
            let (w, g, opt) = (whole(inv, p.weights), whole(inv, p.grads), whole(inv, p.optimizer));
            let slice = |r: Region<TensorId>, first: u64, count: u64| r.slice(first, count).map_err(|e| format!("AdamW of {owner}: {e}"));
            let mut views = Vec::new();
            for v in &inv.tensor(p.weights).views {
                let (off, cnt) = (v.offset, v.elems());
                views.push(AdamView {
                    weights: slice(w, off, cnt)?,
                    grads: slice(g, off, cnt)?,
                    master: slice(opt, off, cnt)?,
                    m: slice(opt, n + off, cnt)?,
                    v: slice(opt, 2 * n + off, cnt)?,
                    elems: cnt,
                    decayed: v.shape.len() == 2,
                });
            }
            adam.insert(owner, views);
        }
        Ok(StepLaunches {
            program,
            layer_weights: layers(|p| p.weights)?,
            layer_grads: layers(|p| p.grads)?,
            embedding_weights: EmbeddingViews::of(inv, inv.embedding.weights, tied)?,
            embedding_grads: EmbeddingViews::of(inv, inv.embedding.grads, tied)?,
            final_weights: norm(inv.final_norm.weights)?,
            final_grads: norm(inv.final_norm.grads)?,
            adam,
        })
    }

    /// The calls `op` makes, in order. `step` counts from 1 (AdamW's bias correction).
    pub fn op(&self, op: &Op, step: u32, adamw: &AdamW) -> Result<Vec<Call<TensorId>>, LaunchError> {
        use OpKind::*;
        let cfg = &self.program.config;
        let inv = &self.program.inventory;
        let (b, t, c) = (cfg.batch as u64, cfg.seq as u64, cfg.hidden as u64);
        let n = b * t;
        let k = cfg.output_chunks as u64;
        let vc = cfg.padded_vocab as u64 / k;
        let vocab = cfg.vocab as u64;
        let tied = cfg.tied_embeddings;
        let shape = AttentionShape::of(cfg);
        let (io, h) = (inv.io, &inv.head);
        let x = |id: TensorId| whole(inv, id);
        let workspace = x(io.workspace).as_type(DType::F32);
        let lw = |l: u32| &self.layer_weights[l as usize];
        let lg = |l: u32| &self.layer_grads[l as usize];
        let ln_fwd = |out: TensorId, stats: TensorId, input: TensorId, w: Region<TensorId>, b: Region<TensorId>| {
            LayernormForward { out: x(out), stats: x(stats), x: x(input), w, b, n, c }.launch().map(Call::Kernel)
        };
        // dres (+)= the input gradient of a layer norm of `input`; its weight and bias gradients.
        let ln_bwd = |dy: TensorId,
                      input: TensorId,
                      stats: TensorId,
                      (w, dw, db): (Region<TensorId>, Region<TensorId>, Region<TensorId>),
                      accumulate: bool| {
            let (dx, dy, xx, stats) = (x(h.dres), x(dy), x(input), x(stats));
            Ok::<_, LaunchError>(
                LayernormBackward { dx, dy, x: xx, stats, w, dw, db, partials: workspace, n, c, accumulate }.launches()?.map(Call::Kernel),
            )
        };
        // The backward of a linear layer (i inputs, o outputs) on `input`: dx = dy W, dW = dy^T
        // input, and the bias gradient db = the column sums of dy.
        let linear_bwd = |dx: TensorId,
                          dy: TensorId,
                          (w, dw, db): (Region<TensorId>, Region<TensorId>, Region<TensorId>),
                          input: TensorId,
                          (i, o): (u64, u64)| {
            let dy = x(dy);
            let [partial, reduce] = Colsum { out: db, x: dy, partials: workspace, rows: n, n: o }.launches()?;
            Ok::<_, LaunchError>([
                input_grad(x(dx), dy, w, (n, i, o), MatType::Bf16, false)?,
                weight_grad(dw, dy, x(input), (n, i, o))?,
                Call::Kernel(partial),
                Call::Kernel(reduce),
            ])
        };
        let mut calls = Vec::new();
        match op.kind {
            Embed => {
                let out = x(inv.acts.first().map(|a| a.x_in).unwrap_or(h.x_out));
                let wpe = self.embedding_weights.wpe;
                let launch = |wte: Region<TensorId>, v_begin: u64, v_count: u64| {
                    EmbeddingForward { out, tokens: x(io.tokens), wte, v_begin, v_count, wpe, n, t, c }.launch()
                };
                if tied {
                    for i in 0..k {
                        calls.push(Call::Kernel(launch(x(inv.chunks[i as usize].weights), i * vc, vc)?));
                    }
                } else {
                    calls.push(Call::Kernel(launch(self.embedding_weights.wte()?, 0, cfg.padded_vocab as u64)?));
                }
            }
            Ln1(l) => {
                let a = inv.acts[l as usize];
                calls.push(ln_fwd(a.ln1, a.ln1_stats, a.x_in, lw(l).ln1_w, lw(l).ln1_b)?);
            }
            Qkv(l) => {
                let a = inv.acts[l as usize];
                calls.push(linear(x(a.qkv), x(a.ln1), lw(l).qkv_w, Some(lw(l).qkv_b), None, (n, c, 3 * c))?);
            }
            Attn(l) => {
                let a = inv.acts[l as usize];
                calls.push(Call::Kernel(
                    AttentionForward { kind: cfg.attention, out: x(a.atty), att: x(a.att), qkv: x(a.qkv), shape }.launch()?,
                ));
            }
            AttnProj(l) => {
                let a = inv.acts[l as usize];
                calls.push(linear(x(a.x_mid), x(a.atty), lw(l).attproj_w, Some(lw(l).attproj_b), Some(x(a.x_in)), (n, c, c))?);
            }
            Ln2(l) => {
                let a = inv.acts[l as usize];
                calls.push(ln_fwd(a.ln2, a.ln2_stats, a.x_mid, lw(l).ln2_w, lw(l).ln2_b)?);
            }
            Fc(l) => {
                let a = inv.acts[l as usize];
                calls.push(linear(x(a.fch), x(a.ln2), lw(l).fc_w, Some(lw(l).fc_b), None, (n, c, 4 * c))?);
            }
            Gelu(l) => {
                let a = inv.acts[l as usize];
                calls.push(Call::Kernel(GeluForward { out: x(a.fch_gelu), inp: x(a.fch), n: n * 4 * c }.launch()?));
            }
            FcProj(l) => {
                let a = inv.acts[l as usize];
                let next = inv.acts.get(l as usize + 1).map(|n| n.x_in).unwrap_or(h.x_out);
                calls.push(linear(x(next), x(a.fch_gelu), lw(l).fcproj_w, Some(lw(l).fcproj_b), Some(x(a.x_mid)), (n, 4 * c, c))?);
            }
            LnF => {
                let (w, bias) = self.final_weights;
                calls.push(ln_fwd(h.lnf, h.lnf_stats, h.x_out, w, bias)?);
            }
            OutFwd(i) => {
                let logits = x(h.logits[i as usize]);
                let w = x(inv.chunks[i as usize].weights);
                calls.push(linear(logits, x(h.lnf), w, None, None, (n, c, vc))?);
                let stats = x(h.ce_stats);
                let first = i == 0;
                calls.push(Call::Kernel(
                    CeStatsUpdate { stats, logits, targets: x(io.targets), n, vc, v_begin: i as u64 * vc, v: vocab, first }.launch()?,
                ));
            }
            Loss => {
                let stats = x(h.ce_stats);
                calls.push(Call::Kernel(CeLoss { losses: x(io.losses), stats, n }.launch()?));
                if k == 1 {
                    let logits = x(h.logits[0]);
                    calls.push(Call::Kernel(
                        CeBackward { logits, stats, targets: x(io.targets), n, vc, v_begin: 0, v: vocab, scale: 1.0 / n as f32 }
                            .launch()?,
                    ));
                }
            }
            OutBwd(i) => {
                let logits = x(h.logits[i as usize]);
                let chunk = inv.chunks[i as usize];
                let lnf = x(h.lnf);
                if k > 1 {
                    calls.push(linear(logits, lnf, x(chunk.weights), None, None, (n, c, vc))?);
                    let (stats, targets) = (x(h.ce_stats), x(io.targets));
                    let v_begin = i as u64 * vc;
                    calls.push(Call::Kernel(
                        CeBackward { logits, stats, targets, n, vc, v_begin, v: vocab, scale: 1.0 / n as f32 }.launch()?,
                    ));
                }
                // dlnf (fp32) = or += dlogits W; the last chunk (first in backward) starts it.
                calls.push(input_grad(x(h.dlnf), logits, x(chunk.weights), (n, c, vc), MatType::F32, i as u64 != k - 1)?);
                calls.push(weight_grad(x(chunk.grads), logits, lnf, (n, c, vc))?);
            }
            LnFBwd => {
                let ((w, _), (dw, db)) = (self.final_weights, self.final_grads);
                // the final norm's starts dres
                calls.extend(ln_bwd(h.dlnf, h.x_out, h.lnf_stats, (w, dw, db), false)?);
            }
            FcProjBwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                calls.extend(linear_bwd(s.dfch, h.dres, (lw(l).fcproj_w, lg(l).fcproj_w, lg(l).fcproj_b), a.fch_gelu, (4 * c, c))?);
            }
            GeluBwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                calls.push(Call::Kernel(GeluBackward { dinout: x(s.dfch), inp: x(a.fch), n: n * 4 * c }.launch()?));
            }
            FcBwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                calls.extend(linear_bwd(s.dln2, s.dfch, (lw(l).fc_w, lg(l).fc_w, lg(l).fc_b), a.ln2, (c, 4 * c))?);
            }
            Ln2Bwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                calls.extend(ln_bwd(s.dln2, a.x_mid, a.ln2_stats, (lw(l).ln2_w, lg(l).ln2_w, lg(l).ln2_b), true)?);
            }
            AttnProjBwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                calls.extend(linear_bwd(s.datty, h.dres, (lw(l).attproj_w, lg(l).attproj_w, lg(l).attproj_b), a.atty, (c, c))?);
            }
            AttnBwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                let bwd = AttentionBackward {
                    kind: cfg.attention,
                    dqkv: x(s.dqkv),
                    datt: x(s.datt),
                    dout: x(s.datty),
                    qkv: x(a.qkv),
                    att: x(a.att),
                    out: x(a.atty),
                    shape,
                };
                calls.extend(bwd.launches()?.map(Call::Kernel));
            }
            QkvBwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                calls.extend(linear_bwd(s.dln1, s.dqkv, (lw(l).qkv_w, lg(l).qkv_w, lg(l).qkv_b), a.ln1, (c, 3 * c))?);
            }
            Ln1Bwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                calls.extend(ln_bwd(s.dln1, a.x_in, a.ln1_stats, (lw(l).ln1_w, lg(l).ln1_w, lg(l).ln1_b), true)?);
            }
            EmbedBwd => {
                let (dres, tokens) = (x(h.dres), x(io.tokens));
                let max_seq = cfg.max_seq as u64;
                calls.push(Call::Kernel(EmbeddingBackwardWpe { dwpe: self.embedding_grads.wpe, dout: dres, b, t, c, max_seq }.launch()?));
                let wte = |dwte: Region<TensorId>, v_begin: u64, v_count: u64| {
                    EmbeddingBackwardWte { dwte, dout: dres, tokens, v_begin, v_count, n, c }.launch()
                };
                if tied {
                    for i in 0..k {
                        calls.push(Call::Kernel(wte(x(inv.chunks[i as usize].grads), i * vc, vc)?));
                    }
                } else {
                    let table = self.embedding_grads.wte()?;
                    let vp = cfg.padded_vocab as u64;
                    calls.push(Call::Kernel(FillBf16 { p: table, n: vp * c, value: 0.0 }.launch()?));
                    calls.push(Call::Kernel(wte(table, 0, vp)?));
                }
            }
            GradNorm(o) => {
                let p = inv.params(o);
                let partials = inv.grad_norm(o).ok_or_else(|| LaunchError::NotOnGpu(format!("{}: the program is unclipped", op.name)))?;
                calls.push(Call::Kernel(GradNormPartials { grads: x(p.grads), partials: x(partials), n: p.params }.launch()?));
            }
            // Made on the host from every owner's partials (Step::run, or a schedule's host op).
            ClipScale => return Err(LaunchError::NotOnGpu("clip_scale runs on the host".into())),
            Adam(o) => {
                let scale = inv.clip.as_ref().map(|c| x(c.scale));
                let views = self.adam.get(&o).map(|v| v.as_slice()).unwrap_or(&[]);
                for a in views {
                    calls.push(Call::Kernel(
                        AdamwUpdate {
                            weights: a.weights,
                            master: a.master,
                            m: a.m,
                            v: a.v,
                            grads: a.grads,
                            n: a.elems,
                            scalars: adamw.scalars(if a.decayed { adamw.weight_decay } else { 0.0 }, step),
                            scale,
                        }
                        .launch()?,
                    ));
                }
            }
        }
        Ok(calls)
    }
}

/// out (rows, o) = inp (rows, i) W^T [+ bias] [+ residual]; `(rows, i, o)`.
fn linear<B: Copy>(
    out: Region<B>,
    inp: Region<B>,
    w: Region<B>,
    bias: Option<Region<B>>,
    residual: Option<Region<B>>,
    (rows, i, o): (u64, u64, u64),
) -> Result<Call<B>, LaunchError> {
    Ok(Call::Product(Product::new(GemmLayout::linear(rows, i, o), w, inp, residual, out, bias)?))
}

/// dx (rows, i) [+]= dy (rows, o) W (W: (o, i)); `out` the type of dx.
fn input_grad<B: Copy>(
    dx: Region<B>,
    dy: Region<B>,
    w: Region<B>,
    (rows, i, o): (u64, u64, u64),
    out: MatType,
    accumulate: bool,
) -> Result<Call<B>, LaunchError> {
    Ok(Call::Product(Product::new(GemmLayout::dx(rows, i, o, out), w, dy, accumulate.then_some(dx), dx, None)?))
}

/// dW (o, i) = dy^T (o, rows) x (rows, i).
fn weight_grad<B: Copy>(dw: Region<B>, dy: Region<B>, x: Region<B>, (rows, i, o): (u64, u64, u64)) -> Result<Call<B>, LaunchError> {
    Ok(Call::Product(Product::new(GemmLayout::dw(rows, i, o), x, dy, None, dw, None)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Arg;
    use models::config::Attention;
    use models::GptConfig;
    use std::path::Path;

    fn config(name: &str) -> GptConfig {
        GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../models/configs/{name}.ron"))).unwrap()
    }

    /// gpt2-tiny with each attention, tied and untied, one and four chunks; fused with head
    /// sizes 128 and 64; and a sequence long enough for the materialised attention to need more
    /// than 48 KiB of shared memory.
    fn variants() -> Vec<GptConfig> {
        let base = config("gpt2-tiny");
        let mut v = Vec::new();
        for attention in [Attention::Materialized, Attention::Fused] {
            for tied in [true, false] {
                for chunks in [1, 4] {
                    let mut c = base.clone();
                    c.attention = attention;
                    c.tied_embeddings = tied;
                    c.output_chunks = chunks;
                    c.name = format!("tiny-{attention:?}-{}-k{chunks}", if tied { "tied" } else { "untied" });
                    v.push(c);
                }
            }
        }
        for heads in [1, 2] {
            let mut c = base.clone();
            c.attention = Attention::Fused;
            c.heads = heads;
            c.batch = 2;
            c.seq = 96;
            c.name = format!("tiny-fused-h{heads}");
            v.push(c);
        }
        let mut c = base;
        c.seq = 256 * 64;
        c.max_seq = 256 * 64;
        c.batch = 1;
        c.name = "tiny-long".into();
        v.push(c);
        v
    }

    /// Every call of every op, one line each: kernel or product, geometry, and every argument
    /// (a buffer as tensor name + byte offset, floats as bits).
    fn trace(program: &Program, step: u32, adamw: &AdamW) -> String {
        let launches = StepLaunches::new(program).unwrap();
        let inv = &program.inventory;
        let r = |x: Region<TensorId>| format!("{}+{}", inv.tensor(x.buf).name, x.offset);
        let mut out = String::new();
        for op in &program.ops {
            out.push_str(&format!("# {}\n", op.name));
            for call in launches.op(op, step, adamw).unwrap() {
                let line = match call {
                    Call::Kernel(k) => {
                        let args: Vec<String> = k
                            .args
                            .iter()
                            .map(|a| match a {
                                Arg::Buf(x) => r(*x),
                                Arg::I32(i) => format!("i{i}"),
                                Arg::I64(v) => format!("l{v}"),
                                Arg::F32(f) => format!("f{:08x}", f.to_bits()),
                            })
                            .collect();
                        format!("{} grid={:?} block={} smem={} [{}]", k.kernel.name(), k.grid, k.block, k.smem, args.join(", "))
                    }
                    Call::Product(p) => {
                        let g = p.layout;
                        let opt = |x: Option<Region<TensorId>>| x.map(r).unwrap_or_else(|| "-".into());
                        format!(
                            "gemm m{} n{} k{} ta{} tb{} lda{} ldb{} ldd{} {:?} a={} b={} c={} d={} bias={}",
                            g.m,
                            g.n,
                            g.k,
                            g.trans_a,
                            g.trans_b,
                            g.lda,
                            g.ldb,
                            g.ldd,
                            g.out,
                            r(p.a),
                            r(p.b),
                            opt(p.c),
                            r(p.d),
                            opt(p.bias)
                        )
                    }
                };
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    fn fnv1a(s: &str) -> u64 {
        s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
    }

    /// The launches of every variant at steps 1 and 7, as digests of [`trace`]. They were equal,
    /// line for line, to the launches step.rs made before its launches moved here (commit
    /// dec73a2), and changed since only in `adamw_update`'s arguments (the host's scalars):
    /// a change here changes what runs on the GPU. On a mismatch the traces are written to
    /// a file the message names.
    #[test]
    fn launches_are_unchanged() {
        let adamw = AdamW { lr: 3e-4, weight_decay: 0.1, ..AdamW::default() };
        let (mut got, mut traces) = (Vec::new(), String::new());
        for cfg in variants() {
            let program = Program::build(&cfg);
            for step in [1, 7] {
                let t = trace(&program, step, &adamw);
                got.push(format!("{} step {step}: {:016x}", cfg.name, fnv1a(&t)));
                traces.push_str(&format!("== {} step {step}\n{t}", cfg.name));
            }
        }
        let want: Vec<&str> = WANT.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if got != want {
            let path = std::env::temp_dir().join("offplan-launches.txt");
            std::fs::write(&path, traces).unwrap();
            panic!("the launches changed (all of them in {}):\n{}", path.display(), got.join("\n"));
        }
    }

    const WANT: &str = "
        tiny-Materialized-tied-k1 step 1: 3955ae8de1cf010c
        tiny-Materialized-tied-k1 step 7: ffc768b548d867f8
        tiny-Materialized-tied-k4 step 1: adad3f123948bffa
        tiny-Materialized-tied-k4 step 7: 55e72088c3861fad
        tiny-Materialized-untied-k1 step 1: 0726bbb0ffc69466
        tiny-Materialized-untied-k1 step 7: ded3474cd9d270f3
        tiny-Materialized-untied-k4 step 1: 837244a5e4d7b11e
        tiny-Materialized-untied-k4 step 7: c97f7fb1f6decabe
        tiny-Fused-tied-k1 step 1: 4b6b4c7b81ce1846
        tiny-Fused-tied-k1 step 7: 3acd3f11e252c80e
        tiny-Fused-tied-k4 step 1: 3f649283bc460230
        tiny-Fused-tied-k4 step 7: c5c269d7ca83f317
        tiny-Fused-untied-k1 step 1: 6de40081a6909518
        tiny-Fused-untied-k1 step 7: edda7bc97780d14d
        tiny-Fused-untied-k4 step 1: ca162b4383a99994
        tiny-Fused-untied-k4 step 7: b59905cb35eddeb0
        tiny-fused-h1 step 1: 5660f43ab8ed4d62
        tiny-fused-h1 step 7: e95044a49edaeb6d
        tiny-fused-h2 step 1: af89c1bacf955058
        tiny-fused-h2 step 7: 0ad35e1890ba7f53
        tiny-long step 1: 0b00a58a67109984
        tiny-long step 7: 569d2c997802f387
    ";

    /// Every buffer a call names is the op's (read, written or allocated) or lives all step
    /// long, holds the kernel's element type (the workspace serves as f32 scratch), and every
    /// launch matches its kernel's parameters; on every shipped config.
    #[test]
    fn every_call_fits_its_tensors() {
        let adamw = AdamW::default();
        let names = ["gpt2-tiny", "gpt2-124m", "gpt3-125m", "gpt3-1.3b", "gpt3-2.7b", "gpt3-6.7b", "gpt3-13b", "gpt3-175b", "gpt2-1.5b"];
        for name in names {
            let base = config(name);
            for k in [1, 2] {
                let cfg = base.with_shape(Some(1), Some(64), Some(k)).unwrap();
                let program = Program::build(&cfg);
                let inv = &program.inventory;
                let launches = StepLaunches::new(&program).unwrap();
                for op in &program.ops {
                    let touched: Vec<TensorId> = op.touches().collect();
                    let check = |r: Region<TensorId>| {
                        let t = inv.tensor(r.buf);
                        assert!(touched.contains(&r.buf) || t.persistent, "{name}: {} uses {}", op.name, t.name);
                        assert!(r.offset + r.bytes <= t.bytes.0, "{name}: {} overruns {}", op.name, t.name);
                        assert!(r.dtype == t.dtype || r.buf == inv.io.workspace, "{name}: {} takes {} as {:?}", op.name, t.name, r.dtype);
                    };
                    for call in launches.op(op, 1, &adamw).unwrap() {
                        match call {
                            Call::Kernel(l) => {
                                l.check().unwrap();
                                for a in &l.args {
                                    if let Arg::Buf(r) = a {
                                        check(*r);
                                    }
                                }
                            }
                            Call::Product(p) => p.regions().for_each(|(_, r)| check(r)),
                        }
                    }
                }
            }
        }
    }

    /// The cost model charges each op for its launches and, of them, its products (the host
    /// issues a product slower than a kernel): the counts are the calls this module makes.
    #[test]
    fn the_programs_launch_counts_are_the_calls_made() {
        let adamw = AdamW::default();
        for cfg in
            variants().into_iter().chain(["gpt3-125m", "gpt3-1.3b"].map(|n| config(n).with_shape(Some(1), Some(64), Some(4)).unwrap()))
        {
            let program = Program::build_with(&cfg, models::program::Clipping::GlobalNorm);
            let launches = StepLaunches::new(&program).unwrap();
            for op in program.ops.iter().filter(|o| o.kind != OpKind::ClipScale) {
                let calls = launches.op(op, 1, &adamw).unwrap();
                let products = calls.iter().filter(|c| matches!(c, Call::Product(_))).count();
                assert_eq!((calls.len(), products), (op.launches as usize, op.products as usize), "{}: {}", cfg.name, op.name);
            }
        }
    }
}
