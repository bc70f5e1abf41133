//! The kernels' probes: launch overhead (back-to-back `fill_bf16` launches), the attention
//! forward and backward and the GELU forward and backward, each launched as the step launches
//! it (layer 0's op, its tensors at their inventory sizes, random inputs).

use super::ops::InOrderIssue;
use super::Timed;
use models::program::OpKind;
use models::Program;
use serde::Serialize;

/// A kernel's forward and backward, timed side by side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelPair {
    pub forward: Timed,
    pub backward: Timed,
}

/// (FLOPs, bytes, launches) of the first op of `kind` in the step program: the cost model's counts.
pub fn program_op(program: &Program, kind: OpKind) -> Option<(f64, u64, u32)> {
    program.ops.iter().find(|o| o.kind == kind).map(|o| (o.flops.0, o.bytes.0, o.launches))
}

#[cfg(feature = "cuda")]
pub(super) use gpu::{attention, gelu, host_call_latency, launches};

/// How many round trips through the host lane calibrate times, each beside the same two kernels
/// without it.
pub const HOST_CALL_SAMPLES: usize = 21;

/// The median of the round trips' extra seconds over the direct pairs' (at least 0): what one
/// host function between two kernels costs the GPU.
pub fn host_call_extra(through_host: &[f64], direct: &[f64]) -> Option<f64> {
    let mut d: Vec<f64> = through_host.iter().zip(direct).map(|(t, d)| t - d).filter(|x| x.is_finite()).collect();
    if d.is_empty() {
        return None;
    }
    d.sort_by(f64::total_cmp);
    Some(d[d.len() / 2].max(0.0))
}

impl Launches {
    /// The host's issue costs: a kernel and an event from these launches, a product and a copy
    /// as timed beside (seconds each), the kernel's and the product's at the pace the host
    /// issued layer 0's ops in step order (`in_order`) where that was timed.
    pub fn issue_costs(&self, product: f64, copy: f64, in_order: Option<&InOrderIssue>) -> models::IssueCosts {
        use models::Seconds;
        let f = in_order.and_then(|o| o.factor(self.host_kernel, product)).unwrap_or(1.0);
        models::IssueCosts {
            kernel: Seconds(self.host_kernel * f),
            product: Seconds(product * f),
            copy: Seconds(copy),
            event: Seconds(self.host_event),
        }
    }
}

/// Back-to-back launches of a tiny kernel, seconds each.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Launches {
    /// On the GPU, with the host's launches ahead of it.
    pub gpu: f64,
    /// The host's time to launch one.
    pub host_kernel: f64,
    /// The host's time to record an event.
    pub host_event: f64,
}

#[cfg(feature = "cuda")]
mod gpu {
    use super::Launches;
    use super::{program_op, KernelPair};
    use crate::calibrate::timing::{secs, Bench, Case, Gated, Source, R};
    use crate::calibrate::{bad, positive_median, Timed};
    use crate::kernels::{FillBf16, MatType, Region};
    use models::config::DType;
    use models::program::OpKind;

    /// Per launch of `fill_bf16` on 256 elements, launched `launches` times back to back with
    /// the stream held (after 100 to warm up), the medians over the rounds: the GPU's time per
    /// kernel (`launch_overhead`) and the host's time to launch one; and the host's time to
    /// record an event, timed beside.
    pub fn launches(b: &Bench) -> R<Launches> {
        let fill = FillBf16 { p: Region::whole(&b.tiny, b.tiny.bytes(), DType::Bf16), n: 256, value: 0.0 }
            .launch()
            .map_err(|e| bad(e.to_string()))?;
        let run = || -> R<()> { Ok(b.kernels.launch(&b.gpu.compute, &fill, Ok)?) };
        for _ in 0..100 {
            run()?;
        }
        b.gpu.synchronize()?;
        let ev = b.gpu.timing_event()?;
        let record = || -> R<()> { Ok(crate::gpu::record(&ev, &b.gpu.compute)?) };
        let launches = b.opts.launches;
        let mut cases: Vec<Case> = vec![("fill_bf16 launches", launches, Box::new(run)), ("event records", launches, Box::new(record))];
        let samples = b.side_by_side_gated(&mut cases, &mut || Ok(()))?;
        let median = |xs: &[Gated], f: fn(&Gated) -> f64, what: &str| positive_median(&xs.iter().map(f).collect::<Vec<_>>(), what);
        let l = Launches {
            gpu: median(&samples[0], |g| g.gpu, "launch overhead")?,
            host_kernel: median(&samples[0], |g| g.host, "kernel issue")?,
            host_event: median(&samples[1], |g| g.host, "event issue")?,
        };
        tracing::info!(
            "launches: {:.2} us per kernel on the GPU, {:.2} us to issue one, {:.2} us to record an event ({} back to back)",
            l.gpu * 1e6,
            l.host_kernel * 1e6,
            l.host_event * 1e6,
            launches
        );
        Ok(l)
    }

    /// What a host function costs between two kernels that wait on it, as a `HostRun` between
    /// GPU work does: a tiny kernel, an event the host lane waits on, a host function doing
    /// nothing, an event the compute stream waits on, the kernel again; against the two kernels
    /// back to back. Each pair runs behind a spin kernel that holds the GPU while the host
    /// issues, so the events time the GPU's side alone. Seconds, the median difference.
    pub fn host_call_latency(b: &Bench) -> R<f64> {
        let fill = FillBf16 { p: Region::whole(&b.tiny, b.tiny.bytes(), DType::Bf16), n: 256, value: 0.0 }
            .launch()
            .map_err(|e| bad(e.to_string()))?;
        let compute = &b.gpu.compute;
        let host = b.gpu.ctx.new_stream().map_err(crate::gpu::GpuError::from)?;
        let (to_host, from_host) = (b.gpu.sync_event()?, b.gpu.sync_event()?);
        let (t0, t1) = (b.gpu.timing_event()?, b.gpu.timing_event()?);
        let kernel = || -> R<()> { Ok(b.kernels.launch(compute, &fill, Ok)?) };
        const HOLD_NS: u64 = 200_000;
        let (mut through, mut direct) = (Vec::new(), Vec::new());
        for i in 0..super::HOST_CALL_SAMPLES + 2 {
            b.kernels.spin(compute, HOLD_NS)?;
            crate::gpu::record(&t0, compute)?;
            kernel()?;
            crate::gpu::record(&to_host, compute)?;
            host.wait(&to_host).map_err(crate::gpu::GpuError::from)?;
            b.gpu.host_noop(&host)?;
            crate::gpu::record(&from_host, &host)?;
            compute.wait(&from_host).map_err(crate::gpu::GpuError::from)?;
            kernel()?;
            crate::gpu::record(&t1, compute)?;
            host.synchronize().map_err(crate::gpu::GpuError::from)?;
            b.gpu.synchronize()?;
            let trip = secs(&t0, &t1, "a round trip through the host lane")?;
            b.kernels.spin(compute, HOLD_NS)?;
            crate::gpu::record(&t0, compute)?;
            kernel()?;
            kernel()?;
            crate::gpu::record(&t1, compute)?;
            b.gpu.synchronize()?;
            // The first two warm the host function's thread up.
            if i >= 2 {
                through.push(trip);
                direct.push(secs(&t0, &t1, "two kernels")?);
            }
        }
        let extra = super::host_call_extra(&through, &direct).ok_or_else(|| bad("no round trip through the host lane was timed".into()))?;
        tracing::info!("a host function between two kernels: {:.2} us more than the two alone", extra * 1e6);
        Ok(extra)
    }

    /// The attention forward and backward of layer 0 (FLOPs as the step program counts them).
    pub fn attention(b: &Bench, src: &Source) -> R<KernelPair> {
        let inv = &b.program.inventory;
        let cfg = &b.program.config;
        let (a0, s0) = (inv.acts[0], inv.scratch[0]);
        let t = b.tensors(&[a0.qkv, a0.att, a0.atty, s0.datty, s0.datt, s0.dqkv])?;
        src.fill(b.gpu, t.get(a0.qkv)?)?;
        src.fill(b.gpu, t.get(s0.datty)?)?;
        let (fwd, bwd) = (b.op_calls(OpKind::Attn(0))?, b.op_calls(OpKind::AttnBwd(0))?);
        let (fwd_flops, _, fwd_launches) =
            program_op(b.program, OpKind::Attn(0)).ok_or_else(|| bad("the step program has no attention op".into()))?;
        let (bwd_flops, _, bwd_launches) =
            program_op(b.program, OpKind::AttnBwd(0)).ok_or_else(|| bad("the step program has no attention backward op".into()))?;
        let check = || {
            let (atty, dqkv) = (t.get(a0.atty)?, t.get(s0.dqkv)?);
            b.check_finite(atty, atty.bytes(), MatType::Bf16, "attention forward output")?;
            b.check_finite(dqkv, dqkv.bytes(), MatType::Bf16, "attention backward dqkv")
        };
        let samples = b.time_ops(&t, &[("attention forward", fwd), ("attention backward", bwd)], check, &mut || Ok(()))?;
        let d = cfg.hidden / cfg.heads;
        let what = |dir: &str| format!("attention {dir} ({:?}, D {d})", cfg.attention);
        let pair = KernelPair {
            forward: Timed::median_of(what("forward"), fwd_flops, &samples[0], "attention forward", fwd_launches)?,
            backward: Timed::median_of(what("backward"), bwd_flops, &samples[1], "attention backward", bwd_launches)?,
        };
        drop(t);
        Ok(pair)
    }

    /// `gelu_forward` and `gelu_backward` of layer 0 (bytes as the step program counts them).
    /// The backward runs in place on dfch, as the step does; the values stay finite
    /// (|gelu'| < 1.13), and a fresh copy each round keeps them from shrinking to zeros.
    pub fn gelu(b: &Bench, src: &Source) -> R<KernelPair> {
        let inv = &b.program.inventory;
        let (a0, s0) = (inv.acts[0], inv.scratch[0]);
        let t = b.tensors(&[a0.fch, a0.fch_gelu, s0.dfch])?;
        src.fill(b.gpu, t.get(a0.fch)?)?;
        src.fill(b.gpu, t.get(s0.dfch)?)?;
        let cnt = inv.tensor(a0.fch).bytes.0 / 2;
        if !cnt.is_multiple_of(8) || inv.tensor(a0.fch_gelu).bytes.0 != 2 * cnt || inv.tensor(s0.dfch).bytes.0 != 2 * cnt {
            return Err(bad(format!("the GELU tensors are not {cnt} bf16 values (a multiple of 8)")));
        }
        let (fwd, bwd) = (b.op_calls(OpKind::Gelu(0))?, b.op_calls(OpKind::GeluBwd(0))?);
        let (_, gf_bytes, gf_launches) =
            program_op(b.program, OpKind::Gelu(0)).ok_or_else(|| bad("the step program has no GELU op".into()))?;
        let (_, gb_bytes, gb_launches) =
            program_op(b.program, OpKind::GeluBwd(0)).ok_or_else(|| bad("the step program has no GELU backward op".into()))?;
        let check = || {
            let out = t.get(a0.fch_gelu)?;
            b.check_finite(out, out.bytes(), MatType::Bf16, "gelu_forward output")
        };
        let dfch = t.get(s0.dfch)?;
        let samples = b.time_ops(&t, &[("gelu_forward", fwd), ("gelu_backward", bwd)], check, &mut || src.fill(b.gpu, dfch))?;
        let pair = KernelPair {
            forward: Timed::median_of(format!("gelu_forward ({} values)", cnt), gf_bytes as f64, &samples[0], "gelu_forward", gf_launches)?,
            backward: Timed::median_of(
                format!("gelu_backward ({} values)", cnt),
                gb_bytes as f64,
                &samples[1],
                "gelu_backward",
                gb_launches,
            )?,
        };
        drop(t);
        Ok(pair)
    }
}
