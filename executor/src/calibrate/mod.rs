//! `offplan calibrate`: measures on the GPU what a [`HardwareProfile`] holds, and turns the
//! measurements into a profile.
//!
//! What is timed, and how each profile field comes out of it (CUDA events, a warm-up first, then
//! `repeats` rounds; inside a round every case runs once, side by side, so that drift (clocks,
//! temperature) touches all cases alike; each figure is the median over the rounds):
//! - `h2d`, `d2h`: one pinned copy of S bytes on the host-to-device (device-to-host) stream, for
//!   every S of [`Options::copy_sizes`]; the profile gets the rate at the largest S.
//! - `h2d_duplex`, `d2h_duplex`: both copies enqueued behind one gate event (so they start
//!   together), each timed on its own stream; rates at the largest S.
//! - `matmul_flops`: every cuBLASLt product of one training step ([`step_gemms`]: the layouts
//!   [`crate::ops`] issues), on random bf16 data; the profile gets the
//!   step's FLOPs over the step's product time (a FLOP-weighted harmonic mean), after taking the
//!   launch overhead off each product (the cost model adds it back per launch).
//! - `attention_flops`: the attention kernels as the step launches them (forward; backward with
//!   its delta kernel), with the FLOPs the step program counts for `Attn` and `AttnBwd`.
//! - `memory_bandwidth`: `gelu_forward` and `gelu_backward` at the step's size, with the bytes
//!   the step program counts for `Gelu` and `GeluBwd` (a large device-to-device copy is timed
//!   and printed beside it).
//! - `launch_overhead`: many back-to-back `fill_bf16` launches on 256 elements, per launch, on
//!   the GPU. Every sample is timed with the stream held (a spin kernel queued first), so the
//!   events time the GPU's work, not the pace at which the host issues it.
//! - `issue`: the host's time to issue each kind of work, from the same held samples: a kernel
//!   (the fills), a product (the step's products, weighted by how often the step makes each), a
//!   small pinned copy, an event record.
//! - `fixed_overhead`: device memory in use (cuMemGetInfo total - free) minus what the pool
//!   holds reserved, after every kernel, cuBLASLt plan and library module has run once.
//! - `alloc_granularity`: the spacing of the addresses of 16 consecutive 1-byte allocations from
//!   the pool: what one allocation really takes (512 B on an H100 with CUDA 13). Printed beside
//!   it: the growth of USED_MEM_CURRENT per allocation (the pool counts requested bytes, so 1),
//!   and of RESERVED_MEM_CURRENT (the pool's reservation chunk, 32 MiB there), which is not a
//!   per-allocation size.
//! - `host_memory_bandwidth`: a large host copy on all threads of the rayon pool (read + write).
//! - `host_adam_params_per_second`: [`crate::host::adamw_owner`] on all threads, over pinned
//!   memory as the executor's host copies are (pageable memory is timed and printed beside it).
//! - `host_adam_call_overhead`: the same parameters in 64 calls over separate slices, less the
//!   large-call time (`shared_memory.rs`).
//! - `host_sharing`: host AdamW while pinned copies run one way, then both ways; the share of
//!   its speed alone each kept (`shared_memory.rs`).
//! - `memory`: the device's total memory.
//!
//! One module per probe: `memory` (allocation granularity, the pool's reservation unit, pinned
//! memory's device share, fixed overhead), `kernels` (launch overhead, attention, GELU),
//! `products`, `copies` (pinned copies, the device-to-device copy), `shared_memory` (host AdamW
//! beside copies) and `host` (host copy and AdamW rates); `report` turns a [`Calibration`] into
//! text and a profile; [`measure`] is the list of them in the order they run.
//!
//! The GPU part is behind the `cuda` feature; without it (or with no device) [`measure`] answers
//! [`ExecError::NoGpu`]. Everything else (conversion, medians, the shapes) is plain Rust.

mod copies;
mod host;
mod kernels;
mod memory;
mod ops;
mod probe;
mod products;
mod report;
mod shared_memory;
#[cfg(feature = "cuda")]
mod timing;

pub use copies::CopyRow;
pub use host::{HostMemory, HostRates};
pub use kernels::{program_op, KernelPair};
pub use memory::{AllocProbe, DeviceMemory, InUse, ReserveProbe};
#[cfg(feature = "cuda")]
pub use probe::probe;
pub use products::{program_matmul_flops, step_gemms, GemmRow, GemmShape};
pub use report::{default_name, size_label, utc_date, Calibration};
pub use shared_memory::{Copies, SharedMemory, SharedRow, Slowdown, SMALL_CALLS};

use crate::ExecError;
use models::GptConfig;
#[cfg(feature = "cuda")]
use report::mib;
use serde::Serialize;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// How much to measure.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Timed rounds after the warm-up (each figure is the median over them).
    pub repeats: usize,
    /// Pinned copy sizes in bytes, ascending; the profile gets the rates at the last.
    pub copy_sizes: Vec<u64>,
    /// Device-to-device copy size in bytes.
    pub device_copy_bytes: u64,
    /// Kernel launches per launch-overhead sample.
    pub launches: u32,
    /// Host copy size in bytes.
    pub host_copy_bytes: usize,
    /// Parameters of the host AdamW sample.
    pub host_adam_params: usize,
    /// Each GPU sample repeats its work until it lasts about this long (seconds).
    pub min_sample_s: f64,
}

impl Options {
    /// The full calibration (well under a minute on an H100, most of it kernel compilation and
    /// host memory set-up).
    pub fn full() -> Options {
        Options {
            repeats: 7,
            copy_sizes: vec![8 * MIB, 32 * MIB, 128 * MIB, 512 * MIB, GIB],
            device_copy_bytes: GIB,
            launches: 2000,
            host_copy_bytes: GIB as usize,
            host_adam_params: 256 << 20,
            min_sample_s: 2e-3,
        }
    }

    /// Fewer sizes, repeats and bytes: a smoke test of a few seconds.
    pub fn quick() -> Options {
        Options {
            repeats: 3,
            copy_sizes: vec![8 * MIB, 64 * MIB, 256 * MIB],
            device_copy_bytes: 256 * MIB,
            launches: 500,
            host_copy_bytes: 256 * MIB as usize,
            host_adam_params: 64 << 20,
            min_sample_s: 1e-3,
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if self.repeats == 0 {
            return Err("repeats must be at least 1".into());
        }
        if self.copy_sizes.is_empty() || self.copy_sizes.contains(&0) {
            return Err("copy sizes must be a non-empty list of positive sizes".into());
        }
        if self.copy_sizes.windows(2).any(|w| w[0] >= w[1]) {
            return Err("copy sizes must be ascending".into());
        }
        if self.device_copy_bytes == 0 || self.launches == 0 || self.host_copy_bytes == 0 || self.host_adam_params == 0 {
            return Err("sizes and counts must be positive".into());
        }
        Ok(())
    }
}

/// The median of the finite values (mean of the middle two for an even count); None when there
/// are none.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) })
}

/// Time of the work itself: `measured` less `launches` launch overheads (the cost model adds
/// those back per launch), but never less than half of `measured` (a noisy overhead must not
/// turn a short kernel into an absurd rate).
pub fn work_seconds(measured: f64, launches: u32, launch_overhead: f64) -> f64 {
    (measured - launches as f64 * launch_overhead).max(0.5 * measured)
}

/// A measurement that makes no sense.
#[cfg(any(feature = "cuda", test))]
fn bad(m: String) -> ExecError {
    ExecError::Calibration(m)
}

/// `n` token ids the way a step sees them: the shipped corpus from `offset` on, wrapping (text
/// repeats tokens, which the embedding's backward sums row by row), each below `vocab`. The
/// corpus is tokenised once per process.
#[cfg(any(feature = "cuda", test))]
fn step_tokens(n: usize, vocab: u32, offset: usize) -> Result<Vec<i32>, ExecError> {
    static CORPUS: std::sync::OnceLock<Result<Vec<u32>, String>> = std::sync::OnceLock::new();
    let corpus = CORPUS.get_or_init(|| crate::data::tokenize_corpus().map_err(|e| e.to_string()));
    let corpus = corpus.as_ref().map_err(|e| bad(format!("the shipped corpus: {e}")))?;
    if corpus.is_empty() {
        return Err(bad("the shipped corpus has no tokens".into()));
    }
    Ok((0..n).map(|i| (corpus[(offset + i) % corpus.len()] % vocab) as i32).collect())
}

/// The median of `xs`, which must be positive: else an error naming `what`.
#[cfg(any(feature = "cuda", test))]
fn positive_median(xs: &[f64], what: &str) -> Result<f64, ExecError> {
    median(xs).filter(|m| *m > 0.0).ok_or_else(|| bad(format!("{what}: no valid samples")))
}

/// A timed piece of work: its count (FLOPs or bytes), its median time, its launches.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timed {
    pub what: String,
    pub amount: f64,
    pub seconds: f64,
    pub launches: u32,
}

impl Timed {
    pub fn rate(&self) -> f64 {
        self.amount / self.seconds
    }
}

#[cfg(any(feature = "cuda", test))]
impl Timed {
    /// `what` with its `amount` and `launches`, timed at the median of `samples` (seconds; an
    /// error names `label` when there is none).
    fn median_of(what: String, amount: f64, samples: &[f64], label: &str, launches: u32) -> Result<Timed, ExecError> {
        Ok(Timed { what, amount, seconds: positive_median(samples, label)?, launches })
    }
}

/// Measures everything on device 0; progress goes to `tracing` (info).
pub fn measure(cfg: &GptConfig, opts: &Options) -> Result<Calibration, ExecError> {
    opts.check().map_err(ExecError::Unsupported)?;
    imp::measure(cfg, opts)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn measure(_: &GptConfig, _: &Options) -> Result<Calibration, ExecError> {
        Err(ExecError::NoGpu("this offplan was built without the `cuda` feature".into()))
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use super::timing::{Bench, Source};
    use super::*;
    use crate::gpu::Gpu;
    use crate::kernels::KernelSet;
    use models::Program;
    use std::time::Instant;

    /// Every probe, in the order they run: the pool's first allocations before anything else
    /// takes memory, the kernels and products while nothing but their data is allocated, the
    /// fixed overhead once everything has run, the copies, then the host alone.
    pub fn measure(cfg: &GptConfig, opts: &Options) -> Result<Calibration, ExecError> {
        let t_all = Instant::now();
        // The clipped step (GPT-3's setup, the default): its gradient norms are timed too.
        let program = Program::build_with(cfg, models::program::Clipping::GlobalNorm);
        let set = KernelSet::for_config(cfg).map_err(ExecError::Unsupported)?;
        let gpu = Gpu::new().map_err(ExecError::opening)?;
        let device = memory::device(&gpu)?;
        let alloc = memory::small_allocations(&gpu)?;
        let reserve = memory::large_allocation(&gpu)?;

        let bench = Bench::new(&gpu, &program, &set, opts)?;
        let launches = kernels::launches(&bench)?;
        let gemms = step_gemms(cfg);
        let src = Source::new(&bench, &gemms)?;
        let gemms = products::measure(&bench, &src, gemms)?;
        let attention = kernels::attention(&bench, &src)?;
        let gelu = kernels::gelu(&bench, &src)?;
        let (op_kernels, op_sequence) = ops::every_op(&bench, &src)?;
        let in_order_issue = ops::in_order_issue(&bench, &src)?;
        let host_call_latency = kernels::host_call_latency(&bench)?;
        let in_use = memory::in_use(&gpu, &device)?;

        let mut buffers = copies::Buffers::new(&bench)?;
        let copies = copies::pinned(&bench, &mut buffers)?;
        let copy_issue = copies::copy_issue(&bench, &mut buffers)?;
        let copy_latency = copies::queued_latency(&bench, &mut buffers)?;
        let product_issue = products::product_issue(&gemms);
        let largest = copies.last().expect("checked non-empty");
        let shared = shared_memory::gpu::measure(&bench, &mut buffers, largest)?;
        let device_copy = copies::device_copy(&bench, &buffers)?;
        bench.finish(Some(buffers), src)?;

        // The same ops at a small micro-batch, where a kernel's fixed costs show.
        let small_cfg = GptConfig { batch: 1, seq: cfg.seq.min(256), ..cfg.clone() };
        let small_program = Program::build_with(&small_cfg, models::program::Clipping::GlobalNorm);
        let small = Bench::new(&gpu, &small_program, &set, opts)?;
        let small_src = Source::new(&small, &[])?;
        let (small_op_kernels, small_op_sequence) = ops::every_op(&small, &small_src)?;
        small.finish(None, small_src)?;

        let host = host::measure(opts)?;
        let pinned = |n: usize| host::HostBuf::pinned(&gpu, n);
        let host_ops = host::host_ops(&program, opts.repeats, &pinned)?;
        let small_host_ops = host::host_ops(&small_program, opts.repeats, &pinned)?;
        let host_ops_probe = host::host_ops_rate(opts.repeats, &pinned)?;
        tracing::info!("calibration took {:.1} s", t_all.elapsed().as_secs_f64());
        Ok(Calibration {
            device: device.name,
            driver: device.driver,
            compute_capability: device.compute_capability,
            config: format!("{} (B {} x T {})", cfg.name, cfg.batch, cfg.seq),
            repeats: opts.repeats,
            memory_total: device.total,
            copies,
            gemms,
            attention_forward: attention.forward,
            attention_backward: attention.backward,
            gelu_forward: gelu.forward,
            gelu_backward: gelu.backward,
            device_copy,
            launch_overhead: launches.gpu,
            op_kernels,
            op_sequence,
            small_op_sequence,
            host_ops,
            small_host_ops,
            host_ops_probe,
            copy_latency,
            small_config: format!("{} (B {} x T {})", small_cfg.name, small_cfg.batch, small_cfg.seq),
            small_op_kernels,
            issue: launches.issue_costs(product_issue, copy_issue, Some(&in_order_issue)),
            in_order_issue: Some(in_order_issue),
            back_to_back_issue: Some(launches.issue_costs(product_issue, copy_issue, None)),
            host_call_latency,
            device_used_at_start: device.used_at_start,
            device_used_after: in_use.device_used_after,
            pool_reserved_after: in_use.pool_reserved_after,
            alloc,
            reserve,
            host_copy: host.host_copy,
            host_copy_one_thread: host.host_copy_one_thread,
            host_adam: host.host_adam,
            shared,
            host_threads: host.host_threads,
            host_memory: HostMemory::read(),
            unix_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_tokens_are_the_corpus_below_the_vocabulary() {
        let a = step_tokens(64, 50257, 0).unwrap();
        let b = step_tokens(64, 50257, 1).unwrap();
        assert_eq!(a[1..], b[..63], "one token on");
        // Text repeats tokens; a small vocabulary folds them in range.
        let mut distinct = a.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() < a.len());
        assert!(step_tokens(1000, 97, 5).unwrap().iter().all(|t| (0..97).contains(t)));
    }

    #[test]
    fn median_of_odd_even_and_non_finite() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0, f64::INFINITY]), Some(5.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN]), None);
    }

    #[test]
    fn work_seconds_takes_off_launches_but_not_below_half() {
        assert!((work_seconds(1e-3, 2, 5e-6) - 0.99e-3).abs() < 1e-12);
        assert_eq!(work_seconds(10e-6, 3, 5e-6), 5e-6);
        assert_eq!(work_seconds(1e-3, 0, 5e-6), 1e-3);
    }

    #[test]
    fn options_are_sane() {
        for o in [Options::full(), Options::quick()] {
            o.check().unwrap();
            assert!(*o.copy_sizes.last().unwrap() >= 256 * MIB);
            assert!(o.copy_sizes[0] <= 8 * MIB);
        }
        let mut o = Options::quick();
        o.copy_sizes = vec![64 * MIB, 8 * MIB];
        assert!(o.check().is_err());
        o.copy_sizes = vec![];
        assert!(o.check().is_err());
        let mut o = Options::full();
        o.repeats = 0;
        assert!(o.check().is_err());
    }
}
