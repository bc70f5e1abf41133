//! A run's initial weights and optimizer state, made on the GPU where they will live: each
//! owner's weights and fp32 master copy by `init_params` (`executor/kernels/init.cu`, the
//! counter-based generator of [`crate::init`]) in pieces of a small scratch buffer, copied to
//! the owner's device buffers and, for blocks with a host copy, to their pinned memory; m and v
//! zeroed. The same seed gives the same bits whatever the schedule places where.

use crate::gpu::lanes::Lanes;
use crate::gpu::{DeviceBuffer, Gpu, GpuError};
use crate::init::{owner_key, view_init};
use crate::kernels::{InitParams, Region};
use crate::step::Step;
use models::config::DType;
use models::TensorId;

type Result<T> = std::result::Result<T, GpuError>;

/// Elements of the scratch pieces at most (bf16 weights, fp32 master and zeros: 10 bytes each).
const PIECE: u64 = 16 << 20;

/// Makes the initial state of every owner of `step`'s program from `seed`: into the device
/// buffers of tensors on the GPU, and into the host copies `lanes` holds (if any). Tensors in
/// `host_resident` have no device buffer. Takes at most `scratch_limit` bytes of device memory
/// for its pieces, and gives them back before it returns.
pub fn initialize(gpu: &Gpu, step: &Step, mut lanes: Option<&mut Lanes>, seed: u64, scratch_limit: u64) -> Result<()> {
    let program = step.program;
    let inv = &program.inventory;
    let layers = program.config.layers;
    let owners = inv.owners();
    let largest = owners.iter().map(|o| inv.params(*o).params).max().unwrap_or(1);
    let piece = PIECE.min(largest).min((scratch_limit / 10).max(1 << 16));
    let stream = &gpu.compute;
    let w_s = gpu.alloc(stream, 2 * piece)?;
    let m_s = gpu.alloc(stream, 4 * piece)?;
    let zeros = gpu.alloc(stream, 4 * piece)?;
    gpu.zero(stream, &zeros)?;
    let on_gpu = |t: TensorId| step.buffer(t).ok();
    for (index, &owner) in owners.iter().enumerate() {
        let p = inv.params(owner);
        let n = p.params;
        let key = owner_key(seed, index);
        let views = &inv.tensor(p.weights).views;
        let mut a = 0;
        while a < n {
            let len = piece.min(n - a);
            for v in views {
                let (lo, hi) = (v.offset.max(a), (v.offset + v.elems()).min(a + len));
                if lo >= hi {
                    continue;
                }
                let init = view_init(v, layers);
                let w = Region::whole(&w_s, w_s.bytes(), DType::Bf16).slice(lo - a, hi - lo).map_err(invalid)?;
                let m = Region::whole(&m_s, m_s.bytes(), DType::F32).slice(lo - a, hi - lo).map_err(invalid)?;
                let launch = InitParams { weights: w, master: m, n: hi - lo, first: lo, key, mean: init.mean, std: init.std }
                    .launch()
                    .map_err(invalid)?;
                step.kernels().launch(stream, &launch, Ok)?;
            }
            let pieces = [(p.weights, &w_s, 2 * a, 2 * len), (p.optimizer, &m_s, 4 * a, 4 * len)];
            for (t, src, at, bytes) in pieces {
                put(gpu, on_gpu(t), lanes.as_deref_mut(), t, src, at, bytes)?;
            }
            a += len;
        }
        // m and v: zero.
        let mut at = 4 * n;
        while at < 12 * n {
            let bytes = (12 * n - at).min(zeros.bytes());
            put(gpu, on_gpu(p.optimizer), lanes.as_deref_mut(), p.optimizer, &zeros, at, bytes)?;
            at += bytes;
        }
    }
    gpu.synchronize()?;
    drop((w_s, m_s, zeros));
    gpu.synchronize()?;
    gpu.trim_pool()
}

/// Copies the first `bytes` of `src` to bytes `at..at + bytes` of tensor `t`: its device buffer
/// (if it has one) and its host copy (if `lanes` holds one).
fn put(
    gpu: &Gpu,
    device: Option<&DeviceBuffer>,
    lanes: Option<&mut Lanes>,
    t: TensorId,
    src: &DeviceBuffer,
    at: u64,
    bytes: u64,
) -> Result<()> {
    let from = src.range(0, bytes)?;
    if let Some(dst) = device {
        gpu.copy_d2d(&gpu.compute, dst.range(at, bytes)?, from)?;
    }
    if let Some(lanes) = lanes {
        if lanes.has_copy(t) {
            gpu.compute.synchronize()?;
            let copy = lanes.copy_mut(t)?;
            let dst = copy.get_mut(at as usize..(at + bytes) as usize).ok_or_else(|| invalid("a piece past the host copy's end"))?;
            gpu.download(&gpu.d2h, dst, src.range(0, bytes)?)?;
        }
    }
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> GpuError {
    GpuError::Invalid(format!("initial state: {e}"))
}
