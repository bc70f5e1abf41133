//! One training step on the GPU, all on the GPU: walks `Program::ops` in order; before each op
//! allocates its `allocs` from the stream-ordered pool (compute stream), runs the op's calls
//! ([`crate::ops`]: its kernels and cuBLASLt products, as `executor/kernels/README.md` says)
//! and frees its `frees` after it. No `unsafe` here: that is in [`crate::gpu`].

use crate::gpu::{DeviceBuffer, Gpu, GpuError, Kernels, Lt};
use crate::host::AdamW;
use crate::kernels::KernelSet;
use crate::ops::{Call, StepLaunches};
use models::inventory::{Owner, TensorClass, TensorId};
use models::program::{Op, OpKind, Program};

type Result<T> = std::result::Result<T, GpuError>;

/// The device side of a run: kernels, cuBLASLt, and one slot per inventory tensor.
pub struct Step<'p> {
    pub program: &'p Program,
    kernels: Kernels,
    lt: Lt,
    /// Every op's calls, with the parameter views found once.
    launches: StepLaunches<'p>,
    /// Live device memory of each tensor (None: not allocated now).
    bufs: Vec<Option<DeviceBuffer>>,
    pub adamw: AdamW,
    /// The largest global gradient norm of a clipped program (its setup's `grad_clip`).
    pub max_grad_norm: f64,
    /// The last step's global gradient norm before clipping (clipped programs).
    pub grad_norm: Option<f64>,
    /// The last step's exact gradient checksum (`host::grad_checksum`; clipped programs).
    pub grad_checksum: Option<u64>,
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
        let set = KernelSet::for_config(&program.config).map_err(crate::ExecError::Unsupported)?;
        let kernels = Kernels::for_set(gpu, &set)?;
        Step::with_kernels(program, adamw, host_resident, alloc, kernels)
    }

    /// As [`Step::with_allocator`], with the kernels loaded already (of
    /// `KernelSet::for_config(&program.config)`).
    pub fn with_kernels(
        program: &'p Program,
        adamw: AdamW,
        host_resident: &[TensorId],
        alloc: &mut dyn FnMut(&models::Tensor) -> Result<DeviceBuffer>,
        kernels: Kernels,
    ) -> std::result::Result<Step<'p>, crate::ExecError> {
        let cfg = &program.config;
        let vc = cfg.padded_vocab / cfg.output_chunks;
        if !cfg.hidden.is_multiple_of(8) || !vc.is_multiple_of(8) {
            return Err(crate::ExecError::Unsupported(format!(
                "the kernels need C % 8 == 0 and Vp/k % 8 == 0 (C {}, Vp/k {vc})",
                cfg.hidden
            )));
        }
        let launches = StepLaunches::new(program).map_err(crate::ExecError::Unsupported)?;

        let inv = &program.inventory;
        let mut bufs: Vec<Option<DeviceBuffer>> = (0..inv.tensors.len()).map(|_| None).collect();
        // Scratch: the clip scale, the one persistent scratch tensor.
        for class in [TensorClass::Weights, TensorClass::OptimizerState, TensorClass::Io, TensorClass::Workspace, TensorClass::Scratch] {
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
        let lt = Lt::new(inv.tensor(inv.io.workspace).bytes.0)?;
        Ok(Step { program, kernels, lt, launches, bufs, adamw, max_grad_norm: 0.0, grad_norm: None, grad_checksum: None })
    }

    /// The compiled kernels.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
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

    pub fn upload(&self, gpu: &Gpu, t: TensorId, bytes: &[u8]) -> Result<()> {
        let tensor = self.program.inventory.tensor(t);
        if bytes.len() as u64 != tensor.bytes.0 {
            return Err(GpuError::Invalid(format!("upload of {} bytes into {} of {}", bytes.len(), tensor.name, tensor.bytes.0)));
        }
        gpu.upload(&gpu.compute, self.buffer(t)?, bytes)
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
        gpu.download(&gpu.compute, &mut out, self.buffer(t)?)?;
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
            if op.kind == OpKind::ClipScale {
                self.clip_scale(gpu)?;
            } else {
                self.dispatch(gpu, op, step)?;
            }
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

    /// The clip scale of a clipped step, as a schedule's host op makes it (the same host
    /// functions, so the same bits): every owner's partial norms brought to the host, the
    /// global norm and the scale sent back for the updates. Waits for the compute stream.
    fn clip_scale(&mut self, gpu: &Gpu) -> Result<()> {
        let clip =
            self.program.inventory.clip.as_ref().ok_or_else(|| GpuError::Invalid("an unclipped program has no clip scale".into()))?;
        let mut partials = Vec::with_capacity(clip.norms.len());
        for t in &clip.norms {
            partials.push(f32s(&self.download(gpu, *t)?));
        }
        let norm = crate::host::global_norm(partials.iter().map(|p| p.as_slice()));
        let scale = crate::host::clip_scale(norm, self.max_grad_norm);
        self.upload(gpu, clip.scale, &scale.to_le_bytes())?;
        self.grad_norm = Some(norm);
        self.grad_checksum = Some(crate::host::grad_checksum(partials.iter().map(|p| p.as_slice())));
        Ok(())
    }

    /// The forward pass alone on `gpu`'s compute stream (the program's ops up to and including
    /// the loss, none of the backward or AdamW): the mean loss of the batch uploaded, for
    /// validation. Frees what it allocated before it returns; weights and optimizer state are
    /// only read.
    pub fn forward_loss(&mut self, gpu: &Gpu) -> Result<f64> {
        let program = self.program;
        let inv = &program.inventory;
        let last = program
            .ops
            .iter()
            .position(|op| op.kind == OpKind::Loss)
            .ok_or_else(|| GpuError::Invalid("the program has no loss op".into()))?;
        let ran = (|| {
            for op in &program.ops[..=last] {
                for t in &op.allocs {
                    if self.bufs[t.index()].is_some() {
                        return Err(GpuError::Invalid(format!("{}: {} is already allocated", op.name, inv.tensor(*t).name)));
                    }
                    self.bufs[t.index()] = Some(gpu.alloc(&gpu.compute, inv.tensor(*t).bytes.0)?);
                }
                self.dispatch(gpu, op, 1)?;
                for t in &op.frees {
                    self.bufs[t.index()] = None;
                }
            }
            self.mean_loss(gpu)
        })();
        // What the backward would have freed (saved activations, the head's buffers).
        for (i, b) in self.bufs.iter_mut().enumerate() {
            if !inv.tensors[i].persistent {
                *b = None;
            }
        }
        ran
    }

    /// Launches `op`'s calls on the compute stream (every tensor they name must be on the GPU:
    /// invariant 1).
    pub fn dispatch(&self, gpu: &Gpu, op: &Op, step: u32) -> Result<()> {
        let calls = self.launches.op(op, step, &self.adamw).map_err(|e| GpuError::Invalid(format!("{}: {e}", op.name)))?;
        let buffer = |t: TensorId| self.buffer(t);
        for call in &calls {
            match call {
                Call::Kernel(l) => self.kernels.launch(&gpu.compute, l, buffer)?,
                Call::Product(p) => self.lt.matmul(&gpu.compute, p, buffer, self.buffer(self.program.inventory.io.workspace)?)?,
            }
        }
        Ok(())
    }
}

/// f32 values of little-endian bytes.
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}
