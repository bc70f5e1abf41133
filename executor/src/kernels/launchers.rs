//! One launcher per kernel (two or three for the ops that launch several in a row): its
//! arguments named as the kernel's parameters, each buffer checked and narrowed to the elements
//! the kernel touches, and its grid, block and dynamic shared memory.

use super::{bwd_smem, cdiv, fwd_smem, fwd_warps, materialized_smem, Args, Kernel, Launch, LaunchError, Region, SPLITS};
use models::config::{Attention, DType, GptConfig};
use models::inventory::{GRAD_NORM_PARTIALS, GRAD_NORM_WORDS};

type Result<T> = std::result::Result<T, LaunchError>;

/// `embedding_forward`: `out[n] = wte[tokens[n] - v_begin] + wpe[n % T]` for the rows whose
/// token lies in `[v_begin, v_begin + v_count)`. Sizes: N = B*T rows, C channels.
pub struct EmbeddingForward<B> {
    pub out: Region<B>,
    pub tokens: Region<B>,
    pub wte: Region<B>,
    pub v_begin: u64,
    pub v_count: u64,
    pub wpe: Region<B>,
    pub n: u64,
    pub t: u64,
    pub c: u64,
}

impl<B: Copy> EmbeddingForward<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        let (n, t, c) = (self.n, self.t, self.c);
        Ok(Args::new(Kernel::EmbeddingForward)
            .bf16("out", self.out, n * c)?
            .i32s("tokens", self.tokens, n)?
            .bf16("wte", self.wte, self.v_count * c)?
            .int(self.v_begin)
            .int(self.v_count)
            .bf16("wpe", self.wpe, t * c)?
            .int(n)
            .int(t)
            .int(c)
            .launch((cdiv(n * c / 8, 256), 1, 1), 256, 0))
    }
}

/// `embedding_backward_wpe`: `dwpe[t] = sum_b dout[b, t]` for t < T, 0 up to `max_seq`.
pub struct EmbeddingBackwardWpe<B> {
    pub dwpe: Region<B>,
    pub dout: Region<B>,
    pub b: u64,
    pub t: u64,
    pub c: u64,
    pub max_seq: u64,
}

impl<B: Copy> EmbeddingBackwardWpe<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        let (b, t, c, max_seq) = (self.b, self.t, self.c, self.max_seq);
        Ok(Args::new(Kernel::EmbeddingBackwardWpe)
            .bf16("dwpe", self.dwpe, max_seq * c)?
            .bf16("dout", self.dout, b * t * c)?
            .int(b)
            .int(t)
            .int(c)
            .int(max_seq)
            .launch((cdiv(max_seq * c / 8, 256), 1, 1), 256, 0))
    }
}

/// `embedding_backward_wte`: ADDS into the rows `[v_begin, v_begin + v_count)` of the table's
/// gradient the sum of `dout` over the positions of each token.
pub struct EmbeddingBackwardWte<B> {
    pub dwte: Region<B>,
    pub dout: Region<B>,
    pub tokens: Region<B>,
    pub v_begin: u64,
    pub v_count: u64,
    pub n: u64,
    pub c: u64,
}

impl<B: Copy> EmbeddingBackwardWte<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        let (n, c) = (self.n, self.c);
        let block = 1024.min((c / 8).div_ceil(32) * 32) as u32;
        Ok(Args::new(Kernel::EmbeddingBackwardWte)
            .bf16("dwte", self.dwte, self.v_count * c)?
            .bf16("dout", self.dout, n * c)?
            .i32s("tokens", self.tokens, n)?
            .int(self.v_begin)
            .int(self.v_count)
            .int(n)
            .int(c)
            .launch((n as u32, 1, 1), block, 0))
    }
}

/// `layernorm_forward`: `out = (x - mean) * rstd * w + b` over rows of C, with each row's mean
/// and rstd (`stats` is (2, N): mean then rstd).
pub struct LayernormForward<B> {
    pub out: Region<B>,
    pub stats: Region<B>,
    pub x: Region<B>,
    pub w: Region<B>,
    pub b: Region<B>,
    pub n: u64,
    pub c: u64,
}

impl<B: Copy> LayernormForward<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        let (n, c) = (self.n, self.c);
        Ok(Args::new(Kernel::LayernormForward)
            .bf16("out", self.out, n * c)?
            .f32("mean", self.stats.slice(0, n)?, n)?
            .f32("rstd", self.stats.slice(n, n)?, n)?
            .bf16("x", self.x, n * c)?
            .bf16("w", self.w, c)?
            .bf16("b", self.b, c)?
            .int(n)
            .int(c)
            .launch((cdiv(n, 8), 1, 1), 256, 0))
    }
}

/// The layer norm backward: `layernorm_backward_dx` (`dx` (+)= the input gradient), then the
/// weight and bias gradients through `partials` (`2 * S * C` f32 of scratch):
/// `layernorm_backward_dwdb_partial` and `layernorm_backward_dwdb_reduce`. `dy` is bf16, or
/// f32 for the final norm (the `_f32dy` kernels).
pub struct LayernormBackward<B> {
    pub dx: Region<B>,
    pub dy: Region<B>,
    pub x: Region<B>,
    pub stats: Region<B>,
    pub w: Region<B>,
    pub dw: Region<B>,
    pub db: Region<B>,
    pub partials: Region<B>,
    pub n: u64,
    pub c: u64,
    pub accumulate: bool,
}

impl<B: Copy> LayernormBackward<B> {
    /// The three launches, in order.
    pub fn launches(self) -> Result<[Launch<B>; 3]> {
        let (n, c) = (self.n, self.c);
        let f32dy = self.dy.dtype == DType::F32;
        let (dx_kernel, partial_kernel) = if f32dy {
            (Kernel::LayernormBackwardDxF32dy, Kernel::LayernormBackwardDwdbPartialF32dy)
        } else {
            (Kernel::LayernormBackwardDx, Kernel::LayernormBackwardDwdbPartial)
        };
        let dy_type = if f32dy { DType::F32 } else { DType::Bf16 };
        let (mean, rstd) = (self.stats.slice(0, n)?, self.stats.slice(n, n)?);
        let s = SPLITS as u64;
        let dx = Args::new(dx_kernel)
            .bf16("dx", self.dx, n * c)?
            .buf("dy", self.dy, dy_type, n * c)?
            .bf16("x", self.x, n * c)?
            .f32("mean", mean, n)?
            .f32("rstd", rstd, n)?
            .bf16("w", self.w, c)?
            .int(n)
            .int(c)
            .int(self.accumulate as u64)
            .launch((cdiv(n, 8), 1, 1), 256, 0);
        let partial = Args::new(partial_kernel)
            .f32("partials", self.partials, 2 * s * c)?
            .buf("dy", self.dy, dy_type, n * c)?
            .bf16("x", self.x, n * c)?
            .f32("mean", mean, n)?
            .f32("rstd", rstd, n)?
            .int(n)
            .int(c)
            .launch((cdiv(c, 64), SPLITS, 1), 256, 0);
        let reduce = Args::new(Kernel::LayernormBackwardDwdbReduce)
            .bf16("dw", self.dw, c)?
            .bf16("db", self.db, c)?
            .f32("partials", self.partials, 2 * s * c)?
            .int(s)
            .int(c)
            .launch((cdiv(c, 256), 1, 1), 256, 0);
        Ok([dx, partial, reduce])
    }
}

/// A bias gradient: `out = sum over rows of x` (rows x n) through `partials` (`S * n` f32 of
/// scratch): `colsum_partial` then `colsum_reduce` (written, not accumulated).
pub struct Colsum<B> {
    pub out: Region<B>,
    pub x: Region<B>,
    pub partials: Region<B>,
    pub rows: u64,
    pub n: u64,
}

impl<B: Copy> Colsum<B> {
    pub fn launches(self) -> Result<[Launch<B>; 2]> {
        let (rows, n, s) = (self.rows, self.n, SPLITS as u64);
        let partial = Args::new(Kernel::ColsumPartial)
            .f32("partials", self.partials, s * n)?
            .bf16("x", self.x, rows * n)?
            .int(rows)
            .int(n)
            .launch((cdiv(n, 64), SPLITS, 1), 256, 0);
        let reduce =
            Args::new(Kernel::ColsumReduce).bf16("out", self.out, n)?.f32("partials", self.partials, s * n)?.int(s).int(n).int(0).launch(
                (cdiv(n, 256), 1, 1),
                256,
                0,
            );
        Ok([partial, reduce])
    }
}

/// `gelu_forward(out, inp, n)`: `out = gelu(inp)` (out may be inp).
pub struct GeluForward<B> {
    pub out: Region<B>,
    pub inp: Region<B>,
    pub n: u64,
}

impl<B: Copy> GeluForward<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        Ok(Args::new(Kernel::GeluForward).bf16("out", self.out, self.n)?.bf16("inp", self.inp, self.n)?.long(self.n).launch(
            (cdiv(self.n / 8, 256), 1, 1),
            256,
            0,
        ))
    }
}

/// `gelu_backward(dinout, inp, n)`: `dinout *= gelu'(inp)` in place.
pub struct GeluBackward<B> {
    pub dinout: Region<B>,
    pub inp: Region<B>,
    pub n: u64,
}

impl<B: Copy> GeluBackward<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        Ok(Args::new(Kernel::GeluBackward).bf16("dinout", self.dinout, self.n)?.bf16("inp", self.inp, self.n)?.long(self.n).launch(
            (cdiv(self.n / 8, 256), 1, 1),
            256,
            0,
        ))
    }
}

/// `ce_stats_update`: merges one vocabulary chunk's logits (N x Vc, ids from `v_begin`) into the
/// cross-entropy statistics (3, N); `first` overwrites them.
pub struct CeStatsUpdate<B> {
    pub stats: Region<B>,
    pub logits: Region<B>,
    pub targets: Region<B>,
    pub n: u64,
    pub vc: u64,
    pub v_begin: u64,
    /// The real vocabulary (ids from it on are padding).
    pub v: u64,
    pub first: bool,
}

impl<B: Copy> CeStatsUpdate<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        let n = self.n;
        Ok(Args::new(Kernel::CeStatsUpdate)
            .f32("stats", self.stats, 3 * n)?
            .bf16("logits", self.logits, n * self.vc)?
            .i32s("targets", self.targets, n)?
            .int(n)
            .int(self.vc)
            .int(self.v_begin)
            .int(self.v)
            .int(self.first as u64)
            .launch((n as u32, 1, 1), 256, 0))
    }
}

/// `ce_loss`: each row's loss from the statistics.
pub struct CeLoss<B> {
    pub losses: Region<B>,
    pub stats: Region<B>,
    pub n: u64,
}

impl<B: Copy> CeLoss<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        let n = self.n;
        Ok(Args::new(Kernel::CeLoss).f32("losses", self.losses, n)?.f32("stats", self.stats, 3 * n)?.int(n).launch(
            (cdiv(n, 256), 1, 1),
            256,
            0,
        ))
    }
}

/// `ce_backward`: one chunk's logits become `(softmax - onehot(target)) * scale` in place.
pub struct CeBackward<B> {
    pub logits: Region<B>,
    pub stats: Region<B>,
    pub targets: Region<B>,
    pub n: u64,
    pub vc: u64,
    pub v_begin: u64,
    pub v: u64,
    pub scale: f32,
}

impl<B: Copy> CeBackward<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        let n = self.n;
        Ok(Args::new(Kernel::CeBackward)
            .bf16("logits", self.logits, n * self.vc)?
            .f32("stats", self.stats, 3 * n)?
            .i32s("targets", self.targets, n)?
            .int(n)
            .int(self.vc)
            .int(self.v_begin)
            .int(self.v)
            .float(self.scale)
            .launch((n as u32, 1, 1), 256, 0))
    }
}

/// `adamw_update` over `n` parameters: weights and gradients (bf16), master, m and v (f32).
/// With `scale` (a clipped step: the one-f32 `clip_scale` tensor), `adamw_update_clipped`, whose
/// gradient is `f32(grads[i]) * scale`; bitwise `adamw_update` when the scale is 1.
pub struct AdamwUpdate<B> {
    pub weights: Region<B>,
    pub master: Region<B>,
    pub m: Region<B>,
    pub v: Region<B>,
    pub grads: Region<B>,
    pub n: u64,
    pub scalars: AdamwScalars,
    /// The clip scale (1 f32), or `None` for the unclipped kernel.
    pub scale: Option<Region<B>>,
}

/// The scalars of one AdamW update, computed once on the host for the kernel and for host AdamW
/// alike, so both do the same fp32 operations on the same values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamwScalars {
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
    /// 1 - lr * weight_decay.
    pub decay: f32,
    /// lr / (1 - beta1^step).
    pub step_size: f32,
    /// sqrt(1 - beta2^step).
    pub bc2_sqrt: f32,
}

impl AdamwScalars {
    /// PyTorch AdamW's scalars at `step` (from 1), in f32.
    pub fn new(lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, step: u32) -> AdamwScalars {
        let bc1 = 1.0f32 - beta1.powf(step as f32);
        let bc2 = 1.0f32 - beta2.powf(step as f32);
        AdamwScalars {
            beta1,
            one_minus_beta1: 1.0f32 - beta1,
            beta2,
            one_minus_beta2: 1.0f32 - beta2,
            eps,
            decay: 1.0f32 - lr * weight_decay,
            step_size: lr / bc1,
            bc2_sqrt: bc2.sqrt(),
        }
    }
}

impl<B: Copy> AdamwUpdate<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        let (n, s) = (self.n, self.scalars);
        let kernel = if self.scale.is_some() { Kernel::AdamwUpdateClipped } else { Kernel::AdamwUpdate };
        let args = Args::new(kernel)
            .bf16("weights", self.weights, n)?
            .f32("master", self.master, n)?
            .f32("m", self.m, n)?
            .f32("v", self.v, n)?
            .bf16("grads", self.grads, n)?
            .long(n)
            .float(s.beta1)
            .float(s.one_minus_beta1)
            .float(s.beta2)
            .float(s.one_minus_beta2)
            .float(s.eps)
            .float(s.decay)
            .float(s.step_size)
            .float(s.bc2_sqrt);
        let args = match self.scale {
            Some(scale) => args.f32("scale", scale, 1)?,
            None => args,
        };
        Ok(args.launch((cdiv(n, 256), 1, 1), 256, 0))
    }
}

/// `grad_norm_partials(g, n, partials)`: the [`GRAD_NORM_PARTIALS`] partial sums of squares of
/// `n` bf16 gradient elements and as many exact checksums ([`GRAD_NORM_WORDS`] words), in the fixed order of grad_norm.cu (which the host replays
/// bitwise: `crate::host::grad_norm_partials`). Grid and block are fixed (256 x 256) for any `n`.
pub struct GradNormPartials<B> {
    pub grads: Region<B>,
    pub partials: Region<B>,
    pub n: u64,
}

/// Threads per block of `grad_norm_partials` (part of its summation order).
pub const GRAD_NORM_THREADS: u32 = 256;

impl<B: Copy> GradNormPartials<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        Ok(Args::new(Kernel::GradNormPartials)
            .bf16("grads", self.grads, self.n)?
            .long(self.n)
            .f32("partials", self.partials, GRAD_NORM_WORDS)?
            .launch((GRAD_NORM_PARTIALS as u32, 1, 1), GRAD_NORM_THREADS, 0))
    }
}

/// `fill_bf16(p, n, value)`.
pub struct FillBf16<B> {
    pub p: Region<B>,
    pub n: u64,
    pub value: f32,
}

impl<B: Copy> FillBf16<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        Ok(Args::new(Kernel::FillBf16).bf16("p", self.p, self.n)?.long(self.n).float(self.value).launch((cdiv(self.n, 256), 1, 1), 256, 0))
    }
}

/// `spin_ns(ns)`: one thread on the stream for `ns` nanoseconds (a debug delay; no buffers).
pub struct SpinNs {
    pub ns: u64,
}

impl SpinNs {
    pub fn launch<B: Copy>(self) -> Launch<B> {
        Args::new(Kernel::SpinNs).long(self.ns).launch((1, 1, 1), 1, 0)
    }
}

/// `init_params(weights, master, n, first, key, mean, std)`: elements `first..first + n` of an
/// owner's initial weights (and their fp32 master copy) from the counter-based generator.
pub struct InitParams<B> {
    pub weights: Region<B>,
    pub master: Region<B>,
    pub n: u64,
    pub first: u64,
    pub key: u64,
    pub mean: f32,
    pub std: f32,
}

impl<B: Copy> InitParams<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        Ok(Args::new(Kernel::InitParams)
            .bf16("weights", self.weights, self.n)?
            .f32("master", self.master, self.n)?
            .long(self.n)
            .long(self.first)
            .long(self.key)
            .float(self.mean)
            .float(self.std)
            .launch((cdiv(self.n, 256).min(1 << 16), 1, 1), 256, 0))
    }
}

/// Shapes of an attention launch: B, T, NH and the head size D (C = NH * D).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub b: u64,
    pub t: u64,
    pub nh: u64,
    pub d: u64,
}

impl AttentionShape {
    pub fn of(cfg: &GptConfig) -> AttentionShape {
        AttentionShape { b: cfg.batch as u64, t: cfg.seq as u64, nh: cfg.heads as u64, d: (cfg.hidden / cfg.heads) as u64 }
    }
    fn c(&self) -> u64 {
        self.nh * self.d
    }
    /// Elements of (B, T, C).
    fn rows(&self) -> u64 {
        self.b * self.t * self.c()
    }
    /// Elements of (B, NH, T).
    fn per_head_row(&self) -> u64 {
        self.b * self.nh * self.t
    }
    /// `1/sqrt(D)`.
    pub fn scale(&self) -> f32 {
        1.0f32 / (self.d as f32).sqrt()
    }
}

/// The attention forward: `flash_attention_forward_d{D}` (`att` the log-sum-exp (B, NH, T) f32)
/// or `attention_materialized_forward` (`att` the probabilities (B, NH, T, T) bf16).
pub struct AttentionForward<B> {
    pub kind: Attention,
    pub out: Region<B>,
    pub att: Region<B>,
    pub qkv: Region<B>,
    pub shape: AttentionShape,
}

impl<B: Copy> AttentionForward<B> {
    pub fn launch(self) -> Result<Launch<B>> {
        let AttentionShape { b, t, nh, d } = self.shape;
        let scale = self.shape.scale();
        match self.kind {
            Attention::Fused => {
                let nw = fwd_warps(d as u32);
                Ok(Args::new(Kernel::FlashForward(d as u32))
                    .bf16("out", self.out, self.shape.rows())?
                    .f32("lse", self.att, self.shape.per_head_row())?
                    .bf16("qkv", self.qkv, 3 * self.shape.rows())?
                    .int(b)
                    .int(t)
                    .int(nh)
                    .float(scale)
                    .launch((cdiv(t, 16 * nw as u64), (b * nh) as u32, 1), 32 * nw, fwd_smem(d as u32)))
            }
            Attention::Materialized => Ok(Args::new(Kernel::MaterializedForward)
                .bf16("out", self.out, self.shape.rows())?
                .bf16("att", self.att, self.shape.per_head_row() * t)?
                .bf16("qkv", self.qkv, 3 * self.shape.rows())?
                .int(b)
                .int(t)
                .int(nh)
                .int(d)
                .float(scale)
                .launch((t as u32, (b * nh) as u32, 1), 128, materialized_smem(t as u32))),
        }
    }
}

/// The attention backward into `dqkv`. Fused: `attention_backward_delta` (`datt` = the delta
/// (B, NH, T) f32), then `flash_attention_backward_d{D}`. Materialised:
/// `attention_materialized_backward_dq` (writes `datt`, (B, NH, T, T) bf16), then `_dkdv`.
pub struct AttentionBackward<B> {
    pub kind: Attention,
    pub dqkv: Region<B>,
    pub datt: Region<B>,
    pub dout: Region<B>,
    pub qkv: Region<B>,
    pub att: Region<B>,
    pub out: Region<B>,
    pub shape: AttentionShape,
}

impl<B: Copy> AttentionBackward<B> {
    pub fn launches(self) -> Result<[Launch<B>; 2]> {
        let AttentionShape { b, t, nh, d } = self.shape;
        let scale = self.shape.scale();
        let (rows, heads) = (self.shape.rows(), self.shape.per_head_row());
        match self.kind {
            Attention::Fused => {
                let delta = Args::new(Kernel::AttentionBackwardDelta)
                    .f32("delta", self.datt, heads)?
                    .bf16("dout", self.dout, rows)?
                    .bf16("out", self.out, rows)?
                    .int(b)
                    .int(t)
                    .int(nh)
                    .int(d)
                    .launch((cdiv(b * nh * t, 8), 1, 1), 256, 0);
                let flash = Args::new(Kernel::FlashBackward(d as u32))
                    .bf16("dqkv", self.dqkv, 3 * rows)?
                    .bf16("dout", self.dout, rows)?
                    .bf16("qkv", self.qkv, 3 * rows)?
                    .f32("lse", self.att, heads)?
                    .f32("delta", self.datt, heads)?
                    .int(b)
                    .int(t)
                    .int(nh)
                    .float(scale)
                    .launch((cdiv(t, 64), (b * nh) as u32, 1), 128, bwd_smem(d as u32));
                Ok([delta, flash])
            }
            Attention::Materialized => {
                let grid = (t as u32, (b * nh) as u32, 1);
                let args = |k: Kernel| -> Result<Args<B>> {
                    Ok(Args::new(k)
                        .bf16("dqkv", self.dqkv, 3 * rows)?
                        .bf16("datt", self.datt, heads * t)?
                        .bf16("dout", self.dout, rows)?
                        .bf16("qkv", self.qkv, 3 * rows)?
                        .bf16("att", self.att, heads * t)?
                        .int(b)
                        .int(t)
                        .int(nh)
                        .int(d)
                        .float(scale))
                };
                Ok([
                    args(Kernel::MaterializedBackwardDq)?.launch(grid, 128, materialized_smem(t as u32)),
                    args(Kernel::MaterializedBackwardDkdv)?.launch(grid, 128, 0),
                ])
            }
        }
    }
}
