//! The short probes each `offplan run` takes before its first step and after its last: the
//! rates of the profile that vary by machine and by minute, measured the way calibrate measures
//! them but small (256 MiB copies, 64 M parameters of host AdamW, the host's gradient norm over
//! 64 MiB, every product of one step, layer 0's ops issued in step order, a host function
//! between two kernels, host AdamW beside copies each way and both, five rounds): under two
//! seconds on the H200.

use super::{Options, MIB};

impl Options {
    /// What a run's probe measures.
    pub fn probe() -> Options {
        Options {
            repeats: 5,
            copy_sizes: vec![256 * MIB],
            device_copy_bytes: 64 * MIB,
            launches: 200,
            host_copy_bytes: (64 * MIB) as usize,
            // A working set of 1 GiB: a smaller one sits in the host's caches and runs faster
            // than the step's updates (16 M parameters ran up to 22% faster than calibrate's
            // 256 M on the H200 machine).
            host_adam_params: 64 << 20,
            min_sample_s: 1e-3,
        }
    }
}

#[cfg(feature = "cuda")]
pub use gpu::probe;

#[cfg(feature = "cuda")]
mod gpu {
    use super::super::report::{matmul_rate, pair_rate};
    use super::super::timing::{Bench, Source};
    use super::super::{copies, kernels, ops, products, shared_memory, step_gemms, Options, MIB};

    use crate::gpu::Gpu;
    use crate::kernels::KernelSet;
    use crate::ExecError;
    use models::hardware::ProbeRates;
    use models::{BytesPerSecond, FlopsPerSecond, Program};

    /// Probes `gpu` at the shapes of `program`'s step. Takes its own device memory (layer 0's
    /// tensors, the products' operands, the copies' buffers) and pinned memory, and gives both
    /// back, a failed probe's too: the pool would keep it reserved beside the step.
    pub fn probe(gpu: &Gpu, program: &Program) -> Result<ProbeRates, ExecError> {
        let rates = measure(gpu, program);
        gpu.synchronize()?;
        gpu.trim_pool()?;
        rates
    }

    fn measure(gpu: &Gpu, program: &Program) -> Result<ProbeRates, ExecError> {
        let t0 = std::time::Instant::now();
        let opts = Options::probe();
        let cfg = &program.config;
        let set = KernelSet::for_config(cfg).map_err(ExecError::Unsupported)?;
        let bench = Bench::new(gpu, program, &set, &opts)?;
        let launches = kernels::launches(&bench)?;
        let launch_overhead = launches.gpu;
        let gemms = step_gemms(cfg);
        let src = Source::new(&bench, &gemms)?;
        let gemms = products::measure(&bench, &src, gemms)?;
        let attention = kernels::attention(&bench, &src)?;
        let in_order = ops::in_order_issue(&bench, &src)?;
        let host_call = kernels::host_call_latency(&bench)?;
        let mut buffers = copies::Buffers::new(&bench)?;
        let rows = copies::pinned(&bench, &mut buffers)?;
        let c = rows.last().ok_or_else(|| ExecError::Calibration("the probe copied nothing".into()))?.clone();
        let copy_issue = copies::copy_issue(&bench, &mut buffers)?;
        let shared = shared_memory::gpu::measure(&bench, &mut buffers, &c)?;
        let host_ops = super::super::host::host_ops_rate(opts.repeats, &|n| super::super::host::HostBuf::pinned(gpu, n))?;
        bench.finish(Some(buffers), src)?;
        let rates = ProbeRates {
            h2d: BytesPerSecond(c.h2d),
            d2h: BytesPerSecond(c.d2h),
            h2d_duplex: BytesPerSecond(c.h2d_duplex),
            d2h_duplex: BytesPerSecond(c.d2h_duplex),
            matmul_flops: FlopsPerSecond(matmul_rate(&gemms, launch_overhead).map_err(ExecError::Calibration)?),
            attention_flops: FlopsPerSecond(pair_rate(&attention.forward, &attention.backward, launch_overhead)),
            host_adam_params_per_second: shared.adam_alone.rate(),
            host_ops: Some(host_ops),
            issue: Some(launches.issue_costs(products::product_issue(&gemms), copy_issue, Some(&in_order))),
            host_call: Some(host_call),
            host_sharing: shared.sharing(&c),
            seconds: t0.elapsed().as_secs_f64(),
        };
        tracing::info!(
            "probe ({:.2} s): copies {:.1}/{:.1} GB/s, {:.1}+{:.1} at once ({} MiB); products {:.1} TFLOP/s; attention {:.1} TFLOP/s; host AdamW {:.2} G params/s; host ops {:.1} GB/s",
            rates.seconds,
            rates.h2d.0 / 1e9,
            rates.d2h.0 / 1e9,
            rates.h2d_duplex.0 / 1e9,
            rates.d2h_duplex.0 / 1e9,
            c.bytes / MIB,
            rates.matmul_flops.0 / 1e12,
            rates.attention_flops.0 / 1e12,
            rates.host_adam_params_per_second / 1e9,
            host_ops / 1e9
        );
        Ok(rates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_a_small_calibration() {
        let p = Options::probe();
        p.check().unwrap();
        let full = Options::full();
        assert!(p.repeats < full.repeats && p.host_adam_params < full.host_adam_params);
        assert!(p.copy_sizes.iter().max() < full.copy_sizes.iter().max());
    }
}
