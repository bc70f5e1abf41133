//! One training step on the GPU, all on the GPU: walks `Program::ops` in order; before each op
//! allocates its `allocs` from the stream-ordered pool (compute stream), dispatches its
//! `OpKind` to the kernels of `executor/kernels` (launched as `executor/kernels/README.md`
//! says) and cuBLASLt products, and frees its `frees` after it. No `unsafe` here: that is in
//! [`crate::gpu`].

use crate::gpu::{Arg, DeviceBuffer, Gemm, Gpu, GpuError, Kernels, Lt, MatType};
use crate::host::AdamW;
use models::config::Attention;
use models::inventory::{Owner, TensorClass, TensorId};
use models::program::{Op, OpKind, Program};

type Result<T> = std::result::Result<T, GpuError>;

/// Row splits of the column reductions (colsum, layer-norm dw/db): S * n * 4 bytes of the
/// workspace.
const SPLITS: i32 = 32;

/// Every kernel the step launches, by file.
pub fn wanted_kernels(cfg: &models::GptConfig) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> = Vec::new();
    let mut add = |f: &'static str, names: &[&str]| {
        for n in names {
            v.push((f, n.to_string()));
        }
    };
    add("encoder.cu", &["embedding_forward", "embedding_backward_wpe", "embedding_backward_wte"]);
    add(
        "layernorm.cu",
        &[
            "layernorm_forward",
            "layernorm_backward_dx",
            "layernorm_backward_dx_f32dy",
            "layernorm_backward_dwdb_partial",
            "layernorm_backward_dwdb_partial_f32dy",
            "layernorm_backward_dwdb_reduce",
        ],
    );
    add("bias.cu", &["colsum_partial", "colsum_reduce"]);
    add("gelu.cu", &["gelu_forward", "gelu_backward"]);
    add("crossentropy.cu", &["ce_stats_update", "ce_loss", "ce_backward"]);
    add("adamw.cu", &["adamw_update"]);
    add("misc.cu", &["fill_bf16"]);
    let d = cfg.hidden / cfg.heads;
    match cfg.attention {
        Attention::Fused => {
            v.push(("attention.cu", "attention_backward_delta".into()));
            v.push(("attention.cu", format!("flash_attention_forward_d{d}")));
            v.push(("attention.cu", format!("flash_attention_backward_d{d}")));
        }
        Attention::Materialized => {
            for n in ["attention_materialized_forward", "attention_materialized_backward_dq", "attention_materialized_backward_dkdv"] {
                v.push(("attention_materialized.cu", n.into()));
            }
        }
    }
    v
}

fn cdiv(a: u64, b: u64) -> u32 {
    a.div_ceil(b) as u32
}

/// Flash-attention forward warps per block (the contract: 8 for D = 128, else 4).
pub fn fwd_warps(d: u32) -> u32 {
    if d == 128 {
        8
    } else {
        4
    }
}

/// The device side of a run: kernels, cuBLASLt, and one slot per inventory tensor.
pub struct Step<'p> {
    pub program: &'p Program,
    kernels: Kernels,
    lt: Lt,
    /// Live device memory of each tensor (None: not allocated now).
    bufs: Vec<Option<DeviceBuffer>>,
    pub adamw: AdamW,
}

/// Host copies of tensors a step captured for the reference export.
#[derive(Default)]
pub struct Capture {
    pub logits: Option<Vec<u8>>,
    /// (owner, bf16 bytes) of every owner's gradient at its AdamW update.
    pub grads: Vec<(Owner, Vec<u8>)>,
}

impl<'p> Step<'p> {
    /// Checks the shapes the kernels need, compiles them, allocates the persistent tensors
    /// (reporting "allocating N MiB" per class as a `tracing` info event) and creates cuBLASLt on
    /// the workspace tensor.
    pub fn new(gpu: &Gpu, program: &'p Program, adamw: AdamW) -> std::result::Result<Step<'p>, crate::ExecError> {
        Step::with_host_resident(gpu, program, adamw, &[])
    }

    /// As [`Step::new`], but the persistent tensors in `host_resident` get no device memory
    /// (a schedule brings them in when it needs them).
    pub fn with_host_resident(
        gpu: &Gpu,
        program: &'p Program,
        adamw: AdamW,
        host_resident: &[TensorId],
    ) -> std::result::Result<Step<'p>, crate::ExecError> {
        Step::with_allocator(gpu, program, adamw, host_resident, &mut |t| gpu.alloc(&gpu.compute, t.bytes.0))
    }

    /// As [`Step::with_host_resident`], the persistent tensors' memory taken by `alloc`.
    pub fn with_allocator(
        gpu: &Gpu,
        program: &'p Program,
        adamw: AdamW,
        host_resident: &[TensorId],
        alloc: &mut dyn FnMut(&models::Tensor) -> Result<DeviceBuffer>,
    ) -> std::result::Result<Step<'p>, crate::ExecError> {
        let cfg = &program.config;
        let d = cfg.hidden / cfg.heads;
        let vc = cfg.padded_vocab / cfg.output_chunks;
        if !cfg.hidden.is_multiple_of(8) || !vc.is_multiple_of(8) {
            return Err(crate::ExecError::Unsupported(format!(
                "the kernels need C % 8 == 0 and Vp/k % 8 == 0 (C {}, Vp/k {vc})",
                cfg.hidden
            )));
        }
        match cfg.attention {
            Attention::Fused if ![32, 64, 80, 96, 128].contains(&d) => {
                return Err(crate::ExecError::Unsupported(format!(
                    "fused attention has kernels for head sizes 32, 64, 80, 96, 128; this config has {d}"
                )))
            }
            Attention::Materialized if d > 256 => {
                return Err(crate::ExecError::Unsupported(format!(
                    "materialised attention supports head sizes up to 256; this config has {d}"
                )))
            }
            _ => {}
        }
        let wanted = wanted_kernels(cfg);
        let wanted_ref: Vec<(&'static str, &str)> = wanted.iter().map(|(f, n)| (*f, n.as_str())).collect();
        let t0 = std::time::Instant::now();
        let kernels = Kernels::compile(gpu, crate::gpu::KERNEL_FILES, &wanted_ref)?;
        tracing::info!("compiled {} kernels with NVRTC in {:.1} s", wanted.len(), t0.elapsed().as_secs_f64());
        if cfg.attention == Attention::Fused {
            kernels.set_max_dynamic_smem(&format!("flash_attention_forward_d{d}"), fwd_smem(d))?;
            kernels.set_max_dynamic_smem(&format!("flash_attention_backward_d{d}"), bwd_smem(d))?;
        } else {
            let smem = cfg.seq * 4;
            if smem > 48 * 1024 {
                kernels.set_max_dynamic_smem("attention_materialized_forward", smem)?;
                kernels.set_max_dynamic_smem("attention_materialized_backward_dq", smem)?;
            }
        }

        let inv = &program.inventory;
        let mut bufs: Vec<Option<DeviceBuffer>> = (0..inv.tensors.len()).map(|_| None).collect();
        for class in [TensorClass::Weights, TensorClass::OptimizerState, TensorClass::Io, TensorClass::Workspace] {
            let ts: Vec<&models::Tensor> =
                inv.tensors.iter().filter(|t| t.persistent && t.class == class && !host_resident.contains(&t.id)).collect();
            let bytes: u64 = ts.iter().map(|t| t.bytes.0).sum();
            tracing::info!("allocating {:>8.1} MiB for {:?} ({} tensors)", bytes as f64 / (1u64 << 20) as f64, class, ts.len());
            for t in ts {
                bufs[t.id.index()] = Some(alloc(t)?);
            }
        }
        if let Some(t) = inv.tensors.iter().find(|t| t.persistent && bufs[t.id.index()].is_none() && !host_resident.contains(&t.id)) {
            return Err(crate::ExecError::Unsupported(format!(
                "persistent tensor {} of class {:?} has no start-up allocation",
                t.name, t.class
            )));
        }
        let ws = bufs[inv.io.workspace.index()].as_ref().expect("workspace allocated above");
        let lt = Lt::new(ws)?;
        Ok(Step { program, kernels, lt, bufs, adamw })
    }

    /// The device buffer of a live tensor.
    pub fn buffer(&self, t: TensorId) -> Result<&DeviceBuffer> {
        self.bufs[t.index()]
            .as_ref()
            .ok_or_else(|| GpuError::Invalid(format!("tensor {} is not on the GPU", self.program.inventory.tensor(t).name)))
    }

    /// Takes device memory for `t`, ordered on `stream`.
    pub fn alloc_tensor(&mut self, gpu: &Gpu, t: TensorId, stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> Result<()> {
        let tensor = self.program.inventory.tensor(t);
        if self.bufs[t.index()].is_some() {
            return Err(GpuError::Invalid(format!("{} is already allocated", tensor.name)));
        }
        self.bufs[t.index()] = Some(gpu.alloc(stream, tensor.bytes.0)?);
        Ok(())
    }

    /// Gives `t` the device memory `buf` (a range of an arena the caller planned).
    pub fn put_tensor(&mut self, t: TensorId, buf: DeviceBuffer) -> Result<()> {
        let tensor = self.program.inventory.tensor(t);
        if self.bufs[t.index()].is_some() {
            return Err(GpuError::Invalid(format!("{} is already allocated", tensor.name)));
        }
        if buf.bytes() != tensor.bytes.0 {
            return Err(GpuError::Invalid(format!("{} needs {} bytes, not {}", tensor.name, tensor.bytes.0, buf.bytes())));
        }
        self.bufs[t.index()] = Some(buf);
        Ok(())
    }

    /// Gives `t`'s device memory back, ordered on `stream`.
    pub fn free_tensor(&mut self, t: TensorId, stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> Result<()> {
        match self.bufs[t.index()].take() {
            Some(b) => {
                b.free_on(stream);
                Ok(())
            }
            None => Err(GpuError::Invalid(format!("free of {}, which is not allocated", self.program.inventory.tensor(t).name))),
        }
    }

    /// Device pointer of a live tensor (invariant 1: every op finds its tensors on the GPU).
    pub fn ptr(&self, t: TensorId) -> Result<u64> {
        self.bufs[t.index()]
            .as_ref()
            .map(|b| b.ptr())
            .ok_or_else(|| GpuError::Invalid(format!("tensor {} is not on the GPU", self.program.inventory.tensor(t).name)))
    }

    /// Device pointer of a named view of a parameter tensor (element offset times the dtype size).
    fn view(&self, t: TensorId, name: &str) -> Result<u64> {
        let tensor = self.program.inventory.tensor(t);
        let v =
            tensor.views.iter().find(|v| v.name == name).ok_or_else(|| GpuError::Invalid(format!("{} has no view {name}", tensor.name)))?;
        Ok(self.ptr(t)? + v.offset * tensor.dtype.size())
    }

    pub fn upload(&self, gpu: &Gpu, t: TensorId, bytes: &[u8]) -> Result<()> {
        let tensor = self.program.inventory.tensor(t);
        if bytes.len() as u64 != tensor.bytes.0 {
            return Err(GpuError::Invalid(format!("upload of {} bytes into {} of {}", bytes.len(), tensor.name, tensor.bytes.0)));
        }
        gpu.upload(&gpu.compute, self.ptr(t)?, bytes)
    }

    /// Puts one batch's token ids and targets on the GPU.
    pub fn upload_batch(&self, gpu: &Gpu, batch: &crate::data::Batch) -> Result<()> {
        let io = self.program.inventory.io;
        self.upload(gpu, io.tokens, &crate::export::i32_bytes(&batch.inputs))?;
        self.upload(gpu, io.targets, &crate::export::i32_bytes(&batch.targets))
    }

    /// The step's loss: the mean of the per-token losses the loss op wrote.
    pub fn mean_loss(&self, gpu: &Gpu) -> Result<f64> {
        let bytes = self.download(gpu, self.program.inventory.io.losses)?;
        let n = bytes.len() / 4;
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).sum::<f64>() / n as f64)
    }

    pub fn download(&self, gpu: &Gpu, t: TensorId) -> Result<Vec<u8>> {
        let tensor = self.program.inventory.tensor(t);
        let mut out = vec![0u8; tensor.bytes.0 as usize];
        gpu.download(&gpu.compute, &mut out, self.ptr(t)?)?;
        Ok(out)
    }

    /// Runs every op of the program once, in order, on the compute stream. `step` counts from 1
    /// (AdamW bias correction). With `capture`, copies chunk 0's logits after its forward and
    /// every owner's gradient before it is freed (synchronously: slow, for the export only).
    pub fn run(&mut self, gpu: &Gpu, step: u32, mut capture: Option<&mut Capture>) -> Result<()> {
        let program = self.program;
        for op in &program.ops {
            for t in &op.allocs {
                if self.bufs[t.index()].is_some() {
                    return Err(GpuError::Invalid(format!("{}: {} is already allocated", op.name, program.inventory.tensor(*t).name)));
                }
                self.bufs[t.index()] = Some(gpu.alloc(&gpu.compute, program.inventory.tensor(*t).bytes.0)?);
            }
            self.dispatch(gpu, op, step)?;
            if let Some(c) = capture.as_deref_mut() {
                if op.kind == OpKind::OutFwd(0) {
                    c.logits = Some(self.download(gpu, program.inventory.head.logits[0])?);
                }
                if let OpKind::Adam(o) = op.kind {
                    let g = program.inventory.params(o).grads;
                    c.grads.push((o, self.download(gpu, g)?));
                }
            }
            for t in &op.frees {
                if self.bufs[t.index()].take().is_none() {
                    return Err(GpuError::Invalid(format!(
                        "{}: frees {} which is not allocated",
                        op.name,
                        program.inventory.tensor(*t).name
                    )));
                }
            }
        }
        Ok(())
    }

    fn launch(&self, gpu: &Gpu, name: &str, grid: (u32, u32, u32), block: u32, smem: u32, args: &[Arg]) -> Result<()> {
        self.kernels.launch(&gpu.compute, name, grid, block, smem, args)
    }

    /// out (rows, o) = inp (rows, i) W^T (W: (o, i) row-major) [+ bias] [+ residual].
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        gpu: &Gpu,
        out: u64,
        inp: u64,
        w: u64,
        bias: Option<u64>,
        residual: Option<u64>,
        rows: u64,
        i: u64,
        o: u64,
    ) -> Result<()> {
        self.lt.matmul(
            &gpu.compute,
            &Gemm {
                m: o,
                n: rows,
                k: i,
                trans_a: true,
                trans_b: false,
                a: w,
                lda: i as i64,
                b: inp,
                ldb: i as i64,
                c: residual,
                d: out,
                ldd: o as i64,
                out: MatType::Bf16,
                bias,
            },
        )
    }

    /// dx (rows, i) [+]= dy (rows, o) W (W: (o, i)); `out` the type of dx.
    #[allow(clippy::too_many_arguments)]
    fn matmul_dx(&self, gpu: &Gpu, dx: u64, dy: u64, w: u64, rows: u64, i: u64, o: u64, out: MatType, accumulate: bool) -> Result<()> {
        self.lt.matmul(
            &gpu.compute,
            &Gemm {
                m: i,
                n: rows,
                k: o,
                trans_a: false,
                trans_b: false,
                a: w,
                lda: i as i64,
                b: dy,
                ldb: o as i64,
                c: accumulate.then_some(dx),
                d: dx,
                ldd: i as i64,
                out,
                bias: None,
            },
        )
    }

    /// dW (o, i) = dy^T (o, rows) x (rows, i).
    #[allow(clippy::too_many_arguments)]
    fn matmul_dw(&self, gpu: &Gpu, dw: u64, dy: u64, x: u64, rows: u64, i: u64, o: u64) -> Result<()> {
        self.lt.matmul(
            &gpu.compute,
            &Gemm {
                m: i,
                n: o,
                k: rows,
                trans_a: false,
                trans_b: true,
                a: x,
                lda: i as i64,
                b: dy,
                ldb: o as i64,
                c: None,
                d: dw,
                ldd: i as i64,
                out: MatType::Bf16,
                bias: None,
            },
        )
    }

    fn colsum(&self, gpu: &Gpu, out: u64, x: u64, rows: u64, n: u64) -> Result<()> {
        let ws = self.ptr(self.program.inventory.io.workspace)?;
        self.launch(
            gpu,
            "colsum_partial",
            (cdiv(n, 64), SPLITS as u32, 1),
            256,
            0,
            &[Arg::P(ws), Arg::P(x), Arg::I(rows as i32), Arg::I(n as i32)],
        )?;
        self.launch(
            gpu,
            "colsum_reduce",
            (cdiv(n, 256), 1, 1),
            256,
            0,
            &[Arg::P(out), Arg::P(ws), Arg::I(SPLITS), Arg::I(n as i32), Arg::I(0)],
        )
    }

    fn layernorm_fwd(&self, gpu: &Gpu, out: TensorId, stats: TensorId, x: TensorId, w: u64, b: u64) -> Result<()> {
        let c = &self.program.config;
        let n = c.tokens();
        let s = self.ptr(stats)?;
        self.launch(
            gpu,
            "layernorm_forward",
            (cdiv(n, 8), 1, 1),
            256,
            0,
            &[
                Arg::P(self.ptr(out)?),
                Arg::P(s),
                Arg::P(s + 4 * n),
                Arg::P(self.ptr(x)?),
                Arg::P(w),
                Arg::P(b),
                Arg::I(n as i32),
                Arg::I(c.hidden as i32),
            ],
        )
    }

    /// dres (+)= LN backward dx; dw, db = the weight and bias gradients.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_bwd(
        &self,
        gpu: &Gpu,
        dx: u64,
        dy: u64,
        f32dy: bool,
        x: TensorId,
        stats: TensorId,
        w: u64,
        dw: u64,
        db: u64,
        accumulate: bool,
    ) -> Result<()> {
        let c = &self.program.config;
        let (n, ch) = (c.tokens(), c.hidden as u64);
        let s = self.ptr(stats)?;
        let x = self.ptr(x)?;
        let ws = self.ptr(self.program.inventory.io.workspace)?;
        let sfx = if f32dy { "_f32dy" } else { "" };
        self.launch(
            gpu,
            &format!("layernorm_backward_dx{sfx}"),
            (cdiv(n, 8), 1, 1),
            256,
            0,
            &[
                Arg::P(dx),
                Arg::P(dy),
                Arg::P(x),
                Arg::P(s),
                Arg::P(s + 4 * n),
                Arg::P(w),
                Arg::I(n as i32),
                Arg::I(ch as i32),
                Arg::I(accumulate as i32),
            ],
        )?;
        self.launch(
            gpu,
            &format!("layernorm_backward_dwdb_partial{sfx}"),
            (cdiv(ch, 64), SPLITS as u32, 1),
            256,
            0,
            &[Arg::P(ws), Arg::P(dy), Arg::P(x), Arg::P(s), Arg::P(s + 4 * n), Arg::I(n as i32), Arg::I(ch as i32)],
        )?;
        self.launch(
            gpu,
            "layernorm_backward_dwdb_reduce",
            (cdiv(ch, 256), 1, 1),
            256,
            0,
            &[Arg::P(dw), Arg::P(db), Arg::P(ws), Arg::I(SPLITS), Arg::I(ch as i32)],
        )
    }

    fn adam(&self, gpu: &Gpu, owner: Owner, step: u32) -> Result<()> {
        let inv = &self.program.inventory;
        let p = inv.params(owner);
        let n = p.params;
        let (w, g, opt) = (self.ptr(p.weights)?, self.ptr(p.grads)?, self.ptr(p.optimizer)?);
        let h = &self.adamw;
        for v in &inv.tensor(p.weights).views {
            let (off, cnt) = (v.offset, v.elems());
            let wd = if v.shape.len() == 2 { h.weight_decay } else { 0.0 };
            self.launch(
                gpu,
                "adamw_update",
                (cdiv(cnt, 256), 1, 1),
                256,
                0,
                &[
                    Arg::P(w + 2 * off),
                    Arg::P(opt + 4 * off),
                    Arg::P(opt + 4 * (n + off)),
                    Arg::P(opt + 4 * (2 * n + off)),
                    Arg::P(g + 2 * off),
                    Arg::L(cnt as i64),
                    Arg::F(h.lr),
                    Arg::F(h.beta1),
                    Arg::F(h.beta2),
                    Arg::F(h.eps),
                    Arg::F(wd),
                    Arg::I(step as i32),
                ],
            )?;
        }
        Ok(())
    }

    /// Launches `op`'s kernels on the compute stream (its tensors must be on the GPU).
    pub fn dispatch(&self, gpu: &Gpu, op: &Op, step: u32) -> Result<()> {
        use OpKind::*;
        let cfg = &self.program.config;
        let inv = &self.program.inventory;
        let (b, t, c, nh) = (cfg.batch as u64, cfg.seq as u64, cfg.hidden as u64, cfg.heads as u64);
        let n = b * t;
        let d = c / nh;
        let k = cfg.output_chunks as u64;
        let vc = cfg.padded_vocab as u64 / k;
        let v = cfg.vocab as i32;
        let tied = cfg.tied_embeddings;
        let scale = 1.0f32 / (d as f32).sqrt();
        let io = inv.io;
        let h = &inv.head;
        let lw = |l: u32, name: &str| self.view(inv.layers[l as usize].weights, name);
        let lg = |l: u32, name: &str| self.view(inv.layers[l as usize].grads, name);
        let (i32_, p) = (|x: u64| Arg::I(x as i32), Arg::P);
        match op.kind {
            Embed => {
                let out = self.ptr(inv.acts.first().map(|a| a.x_in).unwrap_or(h.x_out))?;
                let e = inv.embedding.weights;
                let wpe = self.view(e, "wpe")?;
                let tokens = self.ptr(io.tokens)?;
                let grid = (cdiv(n * c / 8, 256), 1, 1);
                if tied {
                    for i in 0..k {
                        let w = self.ptr(inv.chunks[i as usize].weights)?;
                        self.launch(
                            gpu,
                            "embedding_forward",
                            grid,
                            256,
                            0,
                            &[p(out), p(tokens), p(w), i32_(i * vc), i32_(vc), p(wpe), i32_(n), i32_(t), i32_(c)],
                        )?;
                    }
                } else {
                    let wte = self.view(e, "wte")?;
                    self.launch(
                        gpu,
                        "embedding_forward",
                        grid,
                        256,
                        0,
                        &[p(out), p(tokens), p(wte), i32_(0), i32_(cfg.padded_vocab as u64), p(wpe), i32_(n), i32_(t), i32_(c)],
                    )?;
                }
            }
            Ln1(l) => {
                let a = inv.acts[l as usize];
                self.layernorm_fwd(gpu, a.ln1, a.ln1_stats, a.x_in, lw(l, "ln1_w")?, lw(l, "ln1_b")?)?;
            }
            Qkv(l) => {
                let a = inv.acts[l as usize];
                self.linear(gpu, self.ptr(a.qkv)?, self.ptr(a.ln1)?, lw(l, "qkv_w")?, Some(lw(l, "qkv_b")?), None, n, c, 3 * c)?;
            }
            Attn(l) => {
                let a = inv.acts[l as usize];
                let (atty, att, qkv) = (self.ptr(a.atty)?, self.ptr(a.att)?, self.ptr(a.qkv)?);
                match cfg.attention {
                    Attention::Fused => {
                        let nw = fwd_warps(d as u32);
                        self.launch(
                            gpu,
                            &format!("flash_attention_forward_d{d}"),
                            (cdiv(t, 16 * nw as u64), (b * nh) as u32, 1),
                            32 * nw,
                            fwd_smem(d as u32),
                            &[p(atty), p(att), p(qkv), i32_(b), i32_(t), i32_(nh), Arg::F(scale)],
                        )?;
                    }
                    Attention::Materialized => {
                        self.launch(
                            gpu,
                            "attention_materialized_forward",
                            (t as u32, (b * nh) as u32, 1),
                            128,
                            (t * 4) as u32,
                            &[p(atty), p(att), p(qkv), i32_(b), i32_(t), i32_(nh), i32_(d), Arg::F(scale)],
                        )?;
                    }
                }
            }
            AttnProj(l) => {
                let a = inv.acts[l as usize];
                self.linear(
                    gpu,
                    self.ptr(a.x_mid)?,
                    self.ptr(a.atty)?,
                    lw(l, "attproj_w")?,
                    Some(lw(l, "attproj_b")?),
                    Some(self.ptr(a.x_in)?),
                    n,
                    c,
                    c,
                )?;
            }
            Ln2(l) => {
                let a = inv.acts[l as usize];
                self.layernorm_fwd(gpu, a.ln2, a.ln2_stats, a.x_mid, lw(l, "ln2_w")?, lw(l, "ln2_b")?)?;
            }
            Fc(l) => {
                let a = inv.acts[l as usize];
                self.linear(gpu, self.ptr(a.fch)?, self.ptr(a.ln2)?, lw(l, "fc_w")?, Some(lw(l, "fc_b")?), None, n, c, 4 * c)?;
            }
            Gelu(l) => {
                let a = inv.acts[l as usize];
                let cnt = n * 4 * c;
                self.launch(
                    gpu,
                    "gelu_forward",
                    (cdiv(cnt / 8, 256), 1, 1),
                    256,
                    0,
                    &[p(self.ptr(a.fch_gelu)?), p(self.ptr(a.fch)?), Arg::L(cnt as i64)],
                )?;
            }
            FcProj(l) => {
                let a = inv.acts[l as usize];
                let next = inv.acts.get(l as usize + 1).map(|x| x.x_in).unwrap_or(h.x_out);
                self.linear(
                    gpu,
                    self.ptr(next)?,
                    self.ptr(a.fch_gelu)?,
                    lw(l, "fcproj_w")?,
                    Some(lw(l, "fcproj_b")?),
                    Some(self.ptr(a.x_mid)?),
                    n,
                    4 * c,
                    c,
                )?;
            }
            LnF => {
                let f = inv.final_norm.weights;
                self.layernorm_fwd(gpu, h.lnf, h.lnf_stats, h.x_out, self.view(f, "lnf_w")?, self.view(f, "lnf_b")?)?;
            }
            OutFwd(i) => {
                let logits = self.ptr(h.logits[i as usize])?;
                let w = self.ptr(inv.chunks[i as usize].weights)?;
                self.linear(gpu, logits, self.ptr(h.lnf)?, w, None, None, n, c, vc)?;
                self.launch(
                    gpu,
                    "ce_stats_update",
                    (n as u32, 1, 1),
                    256,
                    0,
                    &[
                        p(self.ptr(h.ce_stats)?),
                        p(logits),
                        p(self.ptr(io.targets)?),
                        i32_(n),
                        i32_(vc),
                        i32_(i as u64 * vc),
                        Arg::I(v),
                        Arg::I((i == 0) as i32),
                    ],
                )?;
            }
            Loss => {
                let stats = self.ptr(h.ce_stats)?;
                self.launch(gpu, "ce_loss", (cdiv(n, 256), 1, 1), 256, 0, &[p(self.ptr(io.losses)?), p(stats), i32_(n)])?;
                if k == 1 {
                    self.launch(
                        gpu,
                        "ce_backward",
                        (n as u32, 1, 1),
                        256,
                        0,
                        &[
                            p(self.ptr(h.logits[0])?),
                            p(stats),
                            p(self.ptr(io.targets)?),
                            i32_(n),
                            i32_(vc),
                            Arg::I(0),
                            Arg::I(v),
                            Arg::F(1.0 / n as f32),
                        ],
                    )?;
                }
            }
            OutBwd(i) => {
                let logits = self.ptr(h.logits[i as usize])?;
                let w = self.ptr(inv.chunks[i as usize].weights)?;
                let lnf = self.ptr(h.lnf)?;
                if k > 1 {
                    self.linear(gpu, logits, lnf, w, None, None, n, c, vc)?;
                    self.launch(
                        gpu,
                        "ce_backward",
                        (n as u32, 1, 1),
                        256,
                        0,
                        &[
                            p(logits),
                            p(self.ptr(h.ce_stats)?),
                            p(self.ptr(io.targets)?),
                            i32_(n),
                            i32_(vc),
                            i32_(i as u64 * vc),
                            Arg::I(v),
                            Arg::F(1.0 / n as f32),
                        ],
                    )?;
                }
                // dlnf (fp32) = or += dlogits W; the last chunk (first in backward) starts it.
                self.matmul_dx(gpu, self.ptr(h.dlnf)?, logits, w, n, c, vc, MatType::F32, i as u64 != k - 1)?;
                self.matmul_dw(gpu, self.ptr(inv.chunks[i as usize].grads)?, logits, lnf, n, c, vc)?;
                if !tied {
                    // the program's Adam op follows
                }
            }
            LnFBwd => {
                let (f, g) = (inv.final_norm.weights, inv.final_norm.grads);
                self.layernorm_bwd(
                    gpu,
                    self.ptr(h.dres)?,
                    self.ptr(h.dlnf)?,
                    true,
                    h.x_out,
                    h.lnf_stats,
                    self.view(f, "lnf_w")?,
                    self.view(g, "lnf_w")?,
                    self.view(g, "lnf_b")?,
                    false,
                )?;
            }
            FcProjBwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                let dres = self.ptr(h.dres)?;
                self.matmul_dx(gpu, self.ptr(s.dfch)?, dres, lw(l, "fcproj_w")?, n, 4 * c, c, MatType::Bf16, false)?;
                self.matmul_dw(gpu, lg(l, "fcproj_w")?, dres, self.ptr(a.fch_gelu)?, n, 4 * c, c)?;
                self.colsum(gpu, lg(l, "fcproj_b")?, dres, n, c)?;
            }
            GeluBwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                let cnt = n * 4 * c;
                self.launch(
                    gpu,
                    "gelu_backward",
                    (cdiv(cnt / 8, 256), 1, 1),
                    256,
                    0,
                    &[p(self.ptr(s.dfch)?), p(self.ptr(a.fch)?), Arg::L(cnt as i64)],
                )?;
            }
            FcBwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                let dfch = self.ptr(s.dfch)?;
                self.matmul_dx(gpu, self.ptr(s.dln2)?, dfch, lw(l, "fc_w")?, n, c, 4 * c, MatType::Bf16, false)?;
                self.matmul_dw(gpu, lg(l, "fc_w")?, dfch, self.ptr(a.ln2)?, n, c, 4 * c)?;
                self.colsum(gpu, lg(l, "fc_b")?, dfch, n, 4 * c)?;
            }
            Ln2Bwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                self.layernorm_bwd(
                    gpu,
                    self.ptr(h.dres)?,
                    self.ptr(s.dln2)?,
                    false,
                    a.x_mid,
                    a.ln2_stats,
                    lw(l, "ln2_w")?,
                    lg(l, "ln2_w")?,
                    lg(l, "ln2_b")?,
                    true,
                )?;
            }
            AttnProjBwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                let dres = self.ptr(h.dres)?;
                self.matmul_dx(gpu, self.ptr(s.datty)?, dres, lw(l, "attproj_w")?, n, c, c, MatType::Bf16, false)?;
                self.matmul_dw(gpu, lg(l, "attproj_w")?, dres, self.ptr(a.atty)?, n, c, c)?;
                self.colsum(gpu, lg(l, "attproj_b")?, dres, n, c)?;
            }
            AttnBwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                let (datty, qkv, att, atty, dqkv, datt) =
                    (self.ptr(s.datty)?, self.ptr(a.qkv)?, self.ptr(a.att)?, self.ptr(a.atty)?, self.ptr(s.dqkv)?, self.ptr(s.datt)?);
                match cfg.attention {
                    Attention::Fused => {
                        self.launch(
                            gpu,
                            "attention_backward_delta",
                            (cdiv(b * nh * t, 8), 1, 1),
                            256,
                            0,
                            &[p(datt), p(datty), p(atty), i32_(b), i32_(t), i32_(nh), i32_(d)],
                        )?;
                        self.launch(
                            gpu,
                            &format!("flash_attention_backward_d{d}"),
                            (cdiv(t, 64), (b * nh) as u32, 1),
                            128,
                            bwd_smem(d as u32),
                            &[p(dqkv), p(datty), p(qkv), p(att), p(datt), i32_(b), i32_(t), i32_(nh), Arg::F(scale)],
                        )?;
                    }
                    Attention::Materialized => {
                        let grid = (t as u32, (b * nh) as u32, 1);
                        let args = [p(dqkv), p(datt), p(datty), p(qkv), p(att), i32_(b), i32_(t), i32_(nh), i32_(d), Arg::F(scale)];
                        self.launch(gpu, "attention_materialized_backward_dq", grid, 128, (t * 4) as u32, &args)?;
                        self.launch(gpu, "attention_materialized_backward_dkdv", grid, 128, 0, &args)?;
                    }
                }
            }
            QkvBwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                let dqkv = self.ptr(s.dqkv)?;
                self.matmul_dx(gpu, self.ptr(s.dln1)?, dqkv, lw(l, "qkv_w")?, n, c, 3 * c, MatType::Bf16, false)?;
                self.matmul_dw(gpu, lg(l, "qkv_w")?, dqkv, self.ptr(a.ln1)?, n, c, 3 * c)?;
                self.colsum(gpu, lg(l, "qkv_b")?, dqkv, n, 3 * c)?;
            }
            Ln1Bwd(l) => {
                let (a, s) = (inv.acts[l as usize], inv.scratch[l as usize]);
                self.layernorm_bwd(
                    gpu,
                    self.ptr(h.dres)?,
                    self.ptr(s.dln1)?,
                    false,
                    a.x_in,
                    a.ln1_stats,
                    lw(l, "ln1_w")?,
                    lg(l, "ln1_w")?,
                    lg(l, "ln1_b")?,
                    true,
                )?;
            }
            EmbedBwd => {
                let g = inv.embedding.grads;
                let dres = self.ptr(h.dres)?;
                let tokens = self.ptr(io.tokens)?;
                self.launch(
                    gpu,
                    "embedding_backward_wpe",
                    (cdiv(cfg.max_seq as u64 * c / 8, 256), 1, 1),
                    256,
                    0,
                    &[p(self.view(g, "wpe")?), p(dres), i32_(b), i32_(t), i32_(c), Arg::I(cfg.max_seq as i32)],
                )?;
                let block = 1024.min((c / 8).div_ceil(32) * 32) as u32;
                if tied {
                    for i in 0..k {
                        let cg = self.ptr(inv.chunks[i as usize].grads)?;
                        self.launch(
                            gpu,
                            "embedding_backward_wte",
                            (n as u32, 1, 1),
                            block,
                            0,
                            &[p(cg), p(dres), p(tokens), i32_(i * vc), i32_(vc), i32_(n), i32_(c)],
                        )?;
                    }
                } else {
                    let wte = self.view(g, "wte")?;
                    let cnt = cfg.padded_vocab as u64 * c;
                    self.launch(gpu, "fill_bf16", (cdiv(cnt, 256), 1, 1), 256, 0, &[p(wte), Arg::L(cnt as i64), Arg::F(0.0)])?;
                    self.launch(
                        gpu,
                        "embedding_backward_wte",
                        (n as u32, 1, 1),
                        block,
                        0,
                        &[p(wte), p(dres), p(tokens), Arg::I(0), i32_(cfg.padded_vocab as u64), i32_(n), i32_(c)],
                    )?;
                }
            }
            Adam(o) => self.adam(gpu, o, step)?,
        }
        Ok(())
    }
}

/// Dynamic shared memory of the flash forward: (16*NW + 256) * (D + 8) * 2 bytes.
pub fn fwd_smem(d: u32) -> u32 {
    (16 * fwd_warps(d) + 256) * (d + 8) * 2
}

/// Dynamic shared memory of the flash backward: 512 * (D + 8) + 512 bytes.
pub fn bwd_smem(d: u32) -> u32 {
    512 * (d + 8) + 512
}
