//! What the GPU probes share: [`Bench`] (the device, the compiled kernels, cuBLASLt and its
//! workspace, the step's launches, and the timing rules: a warm-up, calls per sample sized to
//! [`Options::min_sample_s`], rounds that run every case once side by side) and [`Source`], the
//! random bf16 data every operand is copied from.

use super::{bad, mib, Options, MIB};
use crate::gpu::{elapsed_ms, record, DeviceBuffer, Gpu, Kernels, Lt};
use crate::host::bf16::{bf16, f32_to_bf16};
use crate::kernels::{KernelSet, MatType};
use crate::ops::{Call, StepLaunches};
use crate::ExecError;
use cudarc::driver::CudaEvent;
use models::program::OpKind;
use models::{Program, TensorId};
use std::time::Instant;

pub(super) type R<T> = Result<T, ExecError>;

pub(super) fn align256(x: u64) -> u64 {
    x.div_ceil(256) * 256
}

/// Seconds between two events; checks the result is a positive, finite time.
pub(super) fn secs(start: &CudaEvent, end: &CudaEvent, what: &str) -> R<f64> {
    let ms = elapsed_ms(start, end)? as f64;
    if !(ms.is_finite() && ms > 0.0) {
        return Err(bad(format!("{what}: the events measured {ms} ms")));
    }
    Ok(ms / 1e3)
}

/// The most calls one held sample takes: the driver queues about a thousand launches per
/// stream, and a host that fills the queue waits for the GPU, which would time the hold, not the
/// issuing.
pub(super) const MAX_HELD_CALLS: u32 = 500;

/// How long hold the stream per call timed, and at most.
const HOLD_PER_CALL_NS: u64 = 30_000;
const MAX_HOLD_NS: u64 = 40_000_000;

/// One sample of calls timed with the stream held, seconds per call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Gated {
    /// On the GPU, between events around the calls.
    pub gpu: f64,
    /// On the host, issuing them.
    pub host: f64,
}

/// One case of [`Bench::side_by_side`]: its name, its calls per sample, one call.
pub(super) type Case<'a> = (&'a str, u32, Box<dyn FnMut() -> R<()> + 'a>);

/// The device side of a calibration: kernels and cuBLASLt as a step sets them up.
pub(super) struct Bench<'g> {
    pub gpu: &'g Gpu,
    pub program: &'g Program,
    pub opts: &'g Options,
    pub launches: StepLaunches<'g>,
    pub kernels: Kernels,
    pub lt: Lt,
    /// The inventory's `matmul_workspace`.
    pub workspace: DeviceBuffer,
    /// 512 bytes for the launch-overhead samples, held to the end like everything the
    /// fixed-overhead measurement counts.
    pub tiny: DeviceBuffer,
}

impl<'g> Bench<'g> {
    /// Compiles the kernels of `set`, creates cuBLASLt and takes the workspace and the
    /// launch-overhead buffer.
    pub fn new(gpu: &'g Gpu, program: &'g Program, set: &KernelSet, opts: &'g Options) -> R<Bench<'g>> {
        let launches = StepLaunches::new(program).map_err(ExecError::Unsupported)?;
        let kernels = Kernels::for_set(gpu, set)?;
        let inv = &program.inventory;
        let workspace = gpu.alloc(&gpu.compute, inv.tensor(inv.io.workspace).bytes.0)?;
        let lt = Lt::new(workspace.bytes())?;
        let tiny = gpu.alloc(&gpu.compute, 512)?;
        Ok(Bench { gpu, program, opts, launches, kernels, lt, workspace, tiny })
    }

    /// Times `iters` calls of `f` on the compute stream between two events; seconds per call.
    pub fn time_calls(&self, iters: u32, what: &str, f: &mut dyn FnMut() -> R<()>) -> R<f64> {
        Ok(self.time_gated(iters, what, f)?.gpu)
    }

    /// Times `iters` calls of `f` with the stream held: a spin kernel queued first keeps the GPU
    /// busy while the host issues the calls, so the events time the GPU's work alone (not the
    /// host's pace), and the host's time to issue them is timed beside.
    pub fn time_gated(&self, iters: u32, what: &str, f: &mut dyn FnMut() -> R<()>) -> R<Gated> {
        let iters = iters.min(MAX_HELD_CALLS);
        let stream = &self.gpu.compute;
        let (a, b) = (self.gpu.timing_event()?, self.gpu.timing_event()?);
        // Longer than the host takes to issue the calls (tens of microseconds each at most).
        self.kernels.spin(stream, (u64::from(iters) * HOLD_PER_CALL_NS).min(MAX_HOLD_NS))?;
        record(&a, stream)?;
        let t0 = Instant::now();
        for _ in 0..iters {
            f()?;
        }
        let host = t0.elapsed().as_secs_f64();
        record(&b, stream)?;
        Ok(Gated { gpu: secs(&a, &b, what)? / iters as f64, host: host / iters as f64 })
    }

    /// Warm-up (two calls), then the number of calls that makes a sample last `min_sample_s`.
    pub fn calibrate_iters(&self, what: &str, f: &mut dyn FnMut() -> R<()>) -> R<u32> {
        f()?;
        f()?;
        self.gpu.synchronize()?;
        let one = self.time_calls(1, what, f)?;
        Ok(((self.opts.min_sample_s / one).ceil() as u32).clamp(1, MAX_HELD_CALLS))
    }

    /// `repeats` rounds; each runs `before`, then every case once (its calls between two
    /// events), in order. The samples of each case, seconds per call.
    pub fn side_by_side(&self, cases: &mut [Case<'_>], before: &mut dyn FnMut() -> R<()>) -> R<Vec<Vec<f64>>> {
        Ok(self.side_by_side_gated(cases, before)?.into_iter().map(|xs| xs.iter().map(|g| g.gpu).collect()).collect())
    }

    /// [`Bench::side_by_side`] with the host's issue time of each sample beside.
    pub fn side_by_side_gated(&self, cases: &mut [Case<'_>], before: &mut dyn FnMut() -> R<()>) -> R<Vec<Vec<Gated>>> {
        let mut samples = vec![Vec::new(); cases.len()];
        for _ in 0..self.opts.repeats {
            before()?;
            for (i, (what, iters, f)) in cases.iter_mut().enumerate() {
                samples[i].push(self.time_gated(*iters, what, f.as_mut())?);
            }
        }
        Ok(samples)
    }

    /// Times `ops` (each a name and the calls of one op) side by side: each op's calls per
    /// sample found first, then `check` (once every op has run), then the rounds with `before`.
    pub fn time_ops(
        &self,
        tensors: &Tensors,
        ops: &[(&str, Vec<Call<TensorId>>)],
        check: impl FnOnce() -> R<()>,
        before: &mut dyn FnMut() -> R<()>,
    ) -> R<Vec<Vec<f64>>> {
        Ok(self.time_ops_gated(tensors, ops, check, before)?.into_iter().map(|xs| xs.iter().map(|g| g.gpu).collect()).collect())
    }

    /// [`Bench::time_ops`] with the host's issue time of each sample beside.
    pub fn time_ops_gated(
        &self,
        tensors: &Tensors,
        ops: &[(&str, Vec<Call<TensorId>>)],
        check: impl FnOnce() -> R<()>,
        before: &mut dyn FnMut() -> R<()>,
    ) -> R<Vec<Vec<Gated>>> {
        // A held sample's launches, not its calls, must fit in the driver's queue.
        let iters = ops
            .iter()
            .map(|(what, calls)| {
                let most = (MAX_HELD_CALLS / calls.len().max(1) as u32).max(1);
                Ok(self.calibrate_iters(what, &mut || self.run(calls, tensors))?.min(most))
            })
            .collect::<R<Vec<u32>>>()?;
        self.gpu.synchronize()?;
        check()?;
        let mut cases: Vec<Case> =
            ops.iter().zip(&iters).map(|((what, calls), it)| (*what, *it, Box::new(move || self.run(calls, tensors)) as Box<_>)).collect();
        self.side_by_side_gated(&mut cases, before)
    }

    /// The calls of the first op of `kind` (layer 0's), as the step makes them.
    pub fn op_calls(&self, kind: OpKind) -> R<Vec<Call<TensorId>>> {
        let op = self.program.find(kind).ok_or_else(|| bad(format!("the step program has no {kind:?} op")))?;
        self.launches.op(op, 1, &crate::host::AdamW::default()).map_err(|e| bad(e.to_string()))
    }

    /// Runs `calls` on the compute stream, the tensors they name in `tensors`.
    pub fn run(&self, calls: &[Call<TensorId>], tensors: &Tensors) -> R<()> {
        for call in calls {
            match call {
                Call::Kernel(l) => self.kernels.launch(&self.gpu.compute, l, |t| tensors.get(t))?,
                Call::Product(p) => self.lt.matmul(&self.gpu.compute, p, |t| tensors.get(t), &self.workspace)?,
            }
        }
        Ok(())
    }

    /// Device memory for `ts` (in that order), each of its inventory size.
    pub fn tensors(&self, ts: &[TensorId]) -> R<Tensors<'_>> {
        let inv = &self.program.inventory;
        let bufs = ts.iter().map(|&t| Ok((t, self.gpu.alloc(&self.gpu.compute, inv.tensor(t).bytes.0)?))).collect::<R<_>>()?;
        Ok(Tensors { program: self.program, bufs })
    }

    /// Downloads the first values of an output (`bytes` of `buf`) and checks they are finite.
    pub fn check_finite(&self, buf: &DeviceBuffer, bytes: u64, out: MatType, what: &str) -> R<()> {
        let n = bytes.min(1 << 16);
        let mut host = vec![0u8; n as usize];
        self.gpu.download(&self.gpu.compute, &mut host, buf.range(0, n)?)?;
        let bad_count = match out {
            MatType::Bf16 => {
                host.chunks_exact(2).filter(|c| !bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32().is_finite()).count()
            }
            MatType::F32 => host.chunks_exact(4).filter(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()).count(),
        };
        if bad_count > 0 {
            return Err(bad(format!("{what}: {bad_count} of its first {} values are not finite", n / out.size())));
        }
        Ok(())
    }

    /// Gives everything back once the streams are done: the copies' buffers and the random data
    /// first, then cuBLASLt and its workspace.
    pub fn finish(self, copies: Option<super::copies::Buffers>, src: Source) -> R<()> {
        self.gpu.synchronize()?;
        drop((copies, src, self.tiny));
        self.gpu.synchronize()?;
        drop(self.lt);
        drop(self.workspace);
        self.gpu.synchronize()?;
        Ok(())
    }
}

/// Device memory for some of the inventory's tensors (a probe's layer-0 tensors).
pub(super) struct Tensors<'p> {
    program: &'p Program,
    bufs: Vec<(TensorId, DeviceBuffer)>,
}

impl Tensors<'_> {
    pub fn get(&self, t: TensorId) -> crate::gpu::Result<&DeviceBuffer> {
        self.bufs.iter().find(|(id, _)| *id == t).map(|(_, b)| b).ok_or_else(|| {
            crate::gpu::GpuError::Invalid(format!("calibration: {} has no device memory", self.program.inventory.tensor(t).name))
        })
    }
}

/// Deterministic bf16 values in [-1, 1).
fn random_bf16(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(2 * n);
    for _ in 0..n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let u = (r >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
        let b: bf16 = f32_to_bf16(2.0 * u - 1.0);
        out.extend_from_slice(&b.to_bits().to_le_bytes());
    }
    out
}

/// Random bf16 data on the device, enough for the operands of the largest product (and at
/// least 64 MiB); every input of a probe is copied from it.
pub(super) struct Source {
    pub buf: DeviceBuffer,
}

impl Source {
    /// Refuses when the device has too little free memory for the products and the copies.
    pub fn new(b: &Bench, gemms: &[super::GemmShape]) -> R<Source> {
        let (gpu, s) = (b.gpu, &b.gpu.compute);
        let src_bytes = gemms.iter().map(super::products::operand_bytes).max().unwrap_or(0).max(64 * MIB);
        let d_bytes = gemms.iter().map(|g| g.layout.d_bytes()).max().unwrap_or(0);
        let (free, _) = gpu.mem_info()?;
        let opts = b.opts;
        let need = src_bytes + d_bytes + 2 * opts.copy_sizes.iter().max().copied().unwrap_or(0).max(opts.device_copy_bytes);
        if need > free / 10 * 9 {
            return Err(ExecError::Unsupported(format!(
                "calibration needs about {:.0} MiB of device memory, {:.0} MiB is free: use --quick or a smaller --model/--batch",
                mib(need),
                mib(free)
            )));
        }
        let buf = gpu.alloc(s, src_bytes)?;
        let chunk = random_bf16((16 * MIB / 2) as usize, 0x5eed);
        let mut off = 0u64;
        while off < src_bytes {
            let n = (src_bytes - off).min(chunk.len() as u64);
            gpu.upload(s, buf.range(off, n)?, &chunk[..n as usize])?;
            off += n;
        }
        Ok(Source { buf })
    }

    /// Fills `dst` with the random data (tiled).
    pub fn fill(&self, gpu: &Gpu, dst: &DeviceBuffer) -> R<()> {
        let mut off = 0u64;
        while off < dst.bytes() {
            let n = (dst.bytes() - off).min(self.buf.bytes());
            gpu.copy_d2d(&gpu.compute, dst.range(off, n)?, self.buf.range(0, n)?)?;
            off += n;
        }
        Ok(())
    }
}
