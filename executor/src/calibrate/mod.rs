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
//! - `matmul_flops`: every cuBLASLt product of one training step ([`step_gemms`]: the layouts of
//!   step.rs's `linear`, `matmul_dx`, `matmul_dw`), on random bf16 data; the profile gets the
//!   step's FLOPs over the step's product time (a FLOP-weighted harmonic mean), after taking the
//!   launch overhead off each product (the cost model adds it back per launch).
//! - `attention_flops`: the attention kernels as step.rs launches them (forward; backward with
//!   its delta kernel), with the FLOPs the step program counts for `Attn` and `AttnBwd`.
//! - `memory_bandwidth`: `gelu_forward` and `gelu_backward` at the step's size, with the bytes
//!   the step program counts for `Gelu` and `GeluBwd` (a large device-to-device copy is timed
//!   and printed beside it).
//! - `launch_overhead`: many back-to-back `fill_bf16` launches on 256 elements, per launch.
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
//! The GPU part is behind the `cuda` feature; without it (or with no device) [`measure`] answers
//! [`ExecError::NoGpu`]. Everything else (conversion, medians, the shapes) is plain Rust.

mod shared_memory;

pub use shared_memory::{Copies, SharedMemory, SharedRow, Slowdown, SMALL_CALLS};

use crate::ExecError;
use models::hardware::Provenance;
use models::program::{OpKind, WorkClass};
use models::{Bytes, BytesPerSecond, FlopsPerSecond, GptConfig, HardwareProfile, Program, Seconds};
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

/// Element type of a product's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum OutType {
    Bf16,
    F32,
}

impl OutType {
    pub fn size(self) -> u64 {
        match self {
            OutType::Bf16 => 2,
            OutType::F32 => 4,
        }
    }
}

/// One cuBLASLt product of the step, in the column-major terms of `gpu::Gemm`
/// (`D (m x n) = op(A) op(B) [+ C] [+ bias]`), and how many times one step runs it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GemmShape {
    pub name: String,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub trans_a: bool,
    pub trans_b: bool,
    pub lda: i64,
    pub ldb: i64,
    pub ldd: i64,
    pub out: OutType,
    pub bias: bool,
    /// C is given (beta = 1): a residual (another buffer) or an accumulation into D.
    pub with_c: bool,
    /// C is D itself (accumulation).
    pub c_is_d: bool,
    pub per_step: u64,
}

impl GemmShape {
    /// step.rs's `linear`: out (rows, o) = inp (rows, i) W^T [+ bias] [+ residual].
    pub fn linear(name: &str, rows: u64, i: u64, o: u64, bias: bool, residual: bool, per_step: u64) -> GemmShape {
        GemmShape {
            name: name.into(),
            m: o,
            n: rows,
            k: i,
            trans_a: true,
            trans_b: false,
            lda: i as i64,
            ldb: i as i64,
            ldd: o as i64,
            out: OutType::Bf16,
            bias,
            with_c: residual,
            c_is_d: false,
            per_step,
        }
    }

    /// step.rs's `matmul_dx`: dx (rows, i) [+]= dy (rows, o) W.
    pub fn dx(name: &str, rows: u64, i: u64, o: u64, out: OutType, accumulate: bool, per_step: u64) -> GemmShape {
        GemmShape {
            name: name.into(),
            m: i,
            n: rows,
            k: o,
            trans_a: false,
            trans_b: false,
            lda: i as i64,
            ldb: o as i64,
            ldd: i as i64,
            out,
            bias: false,
            with_c: accumulate,
            c_is_d: accumulate,
            per_step,
        }
    }

    /// step.rs's `matmul_dw`: dW (o, i) = dy^T (o, rows) x (rows, i).
    pub fn dw(name: &str, rows: u64, i: u64, o: u64, per_step: u64) -> GemmShape {
        GemmShape {
            name: name.into(),
            m: i,
            n: o,
            k: rows,
            trans_a: false,
            trans_b: true,
            lda: i as i64,
            ldb: o as i64,
            ldd: i as i64,
            out: OutType::Bf16,
            bias: false,
            with_c: false,
            c_is_d: false,
            per_step,
        }
    }

    /// FLOPs of one call.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// Elements of A as its layout spans them (column-major, leading dimension lda).
    pub fn a_elems(&self) -> u64 {
        let cols = if self.trans_a { self.m } else { self.k };
        self.lda as u64 * cols
    }

    pub fn b_elems(&self) -> u64 {
        let cols = if self.trans_b { self.k } else { self.n };
        self.ldb as u64 * cols
    }

    pub fn d_elems(&self) -> u64 {
        self.ldd as u64 * self.n
    }

    pub fn d_bytes(&self) -> u64 {
        self.d_elems() * self.out.size()
    }
}

/// Every distinct product of one training step of `cfg`, as step.rs issues them, with its count
/// per step. Their FLOPs sum to the step program's `Matmul` FLOPs (tested).
pub fn step_gemms(cfg: &GptConfig) -> Vec<GemmShape> {
    let n = cfg.tokens();
    let c = cfg.hidden as u64;
    let l = cfg.layers as u64;
    let k = cfg.output_chunks as u64;
    let vc = cfg.padded_vocab as u64 / k;
    use OutType::*;
    let mut v = vec![
        GemmShape::linear("qkv", n, c, 3 * c, true, false, l),
        GemmShape::linear("attproj", n, c, c, true, true, l),
        GemmShape::linear("fc", n, c, 4 * c, true, false, l),
        GemmShape::linear("fcproj", n, 4 * c, c, true, true, l),
        // the forward of every chunk, and again in its backward when chunked (recompute)
        GemmShape::linear("out", n, c, vc, false, false, if k > 1 { 2 * k } else { k }),
        // the last chunk (first in backward) starts dlnf, the others add to it
        GemmShape::dx("out_dx", n, c, vc, F32, false, 1),
    ];
    if k > 1 {
        v.push(GemmShape::dx("out_dx_acc", n, c, vc, F32, true, k - 1));
    }
    v.extend([
        GemmShape::dw("out_dw", n, c, vc, k),
        GemmShape::dx("fcproj_dx", n, 4 * c, c, Bf16, false, l),
        GemmShape::dw("fcproj_dw", n, 4 * c, c, l),
        GemmShape::dx("fc_dx", n, c, 4 * c, Bf16, false, l),
        GemmShape::dw("fc_dw", n, c, 4 * c, l),
        GemmShape::dx("attproj_dx", n, c, c, Bf16, false, l),
        GemmShape::dw("attproj_dw", n, c, c, l),
        GemmShape::dx("qkv_dx", n, c, 3 * c, Bf16, false, l),
        GemmShape::dw("qkv_dw", n, c, 3 * c, l),
    ]);
    v
}

/// The step program's FLOPs of all `Matmul` ops (what the cost model divides by `matmul_flops`).
pub fn program_matmul_flops(program: &Program) -> f64 {
    program.ops.iter().filter(|o| o.work == WorkClass::Matmul).map(|o| o.flops.0).sum()
}

/// (FLOPs, bytes, launches) of the first op of `kind` in the step program: the cost model's counts.
pub fn program_op(program: &Program, kind: OpKind) -> Option<(f64, u64, u32)> {
    program.ops.iter().find(|o| o.kind == kind).map(|o| (o.flops.0, o.bytes.0, o.launches))
}

/// Pinned copy rates at one size (bytes per second, medians).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CopyRow {
    pub bytes: u64,
    pub h2d: f64,
    pub d2h: f64,
    pub h2d_duplex: f64,
    pub d2h_duplex: f64,
}

/// One product's median time per call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GemmRow {
    pub shape: GemmShape,
    pub seconds: f64,
}

impl GemmRow {
    pub fn flops_per_s(&self) -> f64 {
        self.shape.flops() / self.seconds
    }
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

/// What the small-allocation probe saw in the pool.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AllocProbe {
    pub allocations: u64,
    /// USED_MEM_CURRENT growth per 1-byte allocation.
    pub used_per_alloc: u64,
    /// RESERVED_MEM_CURRENT growth for all of them (the pool's reservation chunk).
    pub reserved_growth: u64,
    /// Smallest distance between two of the allocations' addresses (0 when unknown).
    pub pointer_spacing: u64,
}

impl AllocProbe {
    /// What one allocation takes: the address spacing when it looks like one (1 B to 1 MiB),
    /// else the USED growth, at least 1.
    pub fn granularity(&self) -> u64 {
        if (1..=MIB).contains(&self.pointer_spacing) {
            self.pointer_spacing
        } else {
            self.used_per_alloc.max(1)
        }
    }
}

/// What one large allocation reserved, and what pinning host memory took on the device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReserveProbe {
    /// Bytes of one allocation (not a multiple of any likely reservation unit).
    pub requested: u64,
    /// RESERVED_MEM_CURRENT with it allocated (nothing else is).
    pub reserved: u64,
    /// Pinned host bytes, and the device memory in use that pinning them added.
    pub pinned: u64,
    pub pinned_device: u64,
}

impl ReserveProbe {
    /// The pool's reservation unit: the smallest power of two from 2 MiB whose multiple of the
    /// request is what it reserved (0 when none up to 1 GiB fits).
    pub fn granularity(&self) -> u64 {
        (21..=30).map(|k| 1u64 << k).find(|g| self.requested.div_ceil(*g) * g == self.reserved).unwrap_or(0)
    }

    /// Device bytes per pinned host byte.
    pub fn pinned_fraction(&self) -> f64 {
        if self.pinned == 0 {
            0.0
        } else {
            self.pinned_device as f64 / self.pinned as f64
        }
    }
}

/// Everything one calibration measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Calibration {
    pub device: String,
    pub driver: String,
    pub compute_capability: (i32, i32),
    /// Config whose shapes were timed, with its micro-batch.
    pub config: String,
    pub repeats: usize,
    pub memory_total: u64,
    pub copies: Vec<CopyRow>,
    pub gemms: Vec<GemmRow>,
    pub attention_forward: Timed,
    pub attention_backward: Timed,
    pub gelu_forward: Timed,
    pub gelu_backward: Timed,
    /// Device-to-device copy, bytes read + written.
    pub device_copy: Timed,
    pub launch_overhead: f64,
    /// Device memory in use right after the context was created.
    pub device_used_at_start: u64,
    /// Device memory in use after kernels, cuBLASLt and every product and kernel ran once.
    pub device_used_after: u64,
    /// Pool RESERVED_MEM_CURRENT at that moment.
    pub pool_reserved_after: u64,
    pub alloc: AllocProbe,
    pub reserve: ReserveProbe,
    /// Host copy on all threads, bytes read + written.
    pub host_copy: Timed,
    /// Host copy on one thread, bytes read + written.
    pub host_copy_one_thread: Timed,
    /// Host AdamW on pageable memory: amount = parameters.
    pub host_adam: Timed,
    /// Host AdamW on pinned memory alone and beside pinned copies.
    pub shared: SharedMemory,
    pub host_threads: usize,
    pub unix_time: u64,
}

fn gb(x: f64) -> f64 {
    x / 1e9
}

fn mib(x: u64) -> f64 {
    x as f64 / MIB as f64
}

/// "1024 MiB", "8 MiB", "512 KiB", "3 B".
pub fn size_label(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// UTC "YYYY-MM-DD HH:MM" of a Unix time (civil-from-days, proleptic Gregorian).
pub fn utc_date(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", secs / 3600, (secs % 3600) / 60)
}

/// A profile name from a device name: "NVIDIA H100 80GB HBM3" -> "h100-80gb-hbm3-calibrated".
pub fn default_name(device: &str) -> String {
    let mut s = String::new();
    for word in device.split(|c: char| !c.is_ascii_alphanumeric()) {
        if word.is_empty() || word.eq_ignore_ascii_case("nvidia") {
            continue;
        }
        if !s.is_empty() {
            s.push('-');
        }
        s.push_str(&word.to_ascii_lowercase());
    }
    if s.is_empty() {
        s.push_str("gpu");
    }
    s.push_str("-calibrated");
    s
}

impl Calibration {
    /// The largest copy size's row (the one the profile takes).
    pub fn large_copy(&self) -> Result<&CopyRow, String> {
        self.copies.iter().max_by_key(|r| r.bytes).ok_or_else(|| "no copy sizes were measured".to_string())
    }

    /// Step FLOPs of all products over their time per step (launch overhead taken off each).
    pub fn matmul_rate(&self) -> Result<f64, String> {
        let mut flops = 0.0;
        let mut secs = 0.0;
        for g in &self.gemms {
            if !(g.seconds.is_finite() && g.seconds > 0.0) {
                return Err(format!("product {} has no valid time ({} s)", g.shape.name, g.seconds));
            }
            flops += g.shape.per_step as f64 * g.shape.flops();
            secs += g.shape.per_step as f64 * work_seconds(g.seconds, 1, self.launch_overhead);
        }
        if flops <= 0.0 || secs <= 0.0 {
            return Err("no products were measured".into());
        }
        Ok(flops / secs)
    }

    /// Attention FLOPs (forward + backward) over their time, launch overhead taken off.
    pub fn attention_rate(&self) -> f64 {
        let (f, b) = (&self.attention_forward, &self.attention_backward);
        (f.amount + b.amount)
            / (work_seconds(f.seconds, f.launches, self.launch_overhead) + work_seconds(b.seconds, b.launches, self.launch_overhead))
    }

    /// GELU forward + backward bytes over their time, launch overhead taken off.
    pub fn memory_rate(&self) -> f64 {
        let (f, b) = (&self.gelu_forward, &self.gelu_backward);
        (f.amount + b.amount)
            / (work_seconds(f.seconds, f.launches, self.launch_overhead) + work_seconds(b.seconds, b.launches, self.launch_overhead))
    }

    /// Device memory in use that the pool does not account for.
    pub fn fixed_overhead(&self) -> u64 {
        self.device_used_after.saturating_sub(self.pool_reserved_after)
    }

    pub fn provenance(&self) -> String {
        let c = self.large_copy().ok();
        format!(
            "{} (sm_{}{}), driver {}, {} UTC, `offplan calibrate` ({} rounds, medians; {} shapes){}",
            self.device,
            self.compute_capability.0,
            self.compute_capability.1,
            self.driver,
            utc_date(self.unix_time),
            self.repeats,
            self.config,
            c.map(|c| format!(
                ": pinned copies of {} ({:.1} GB/s H2D, {:.1} GB/s D2H, {:.1} + {:.1} GB/s at once); products FLOP-weighted over one step; attention and GELU kernels as the step launches them; host rates on {} threads",
                size_label(c.bytes),
                gb(c.h2d),
                gb(c.d2h),
                gb(c.h2d_duplex),
                gb(c.d2h_duplex),
                self.host_threads
            ))
            .unwrap_or_default()
        )
    }

    /// The profile these measurements make; checked with [`HardwareProfile::validate`].
    pub fn to_profile(&self, name: &str) -> Result<HardwareProfile, String> {
        let c = self.large_copy()?;
        let hw = HardwareProfile {
            name: name.to_string(),
            provenance: Provenance::Measured(self.provenance()),
            memory: Bytes(self.memory_total),
            h2d: BytesPerSecond(c.h2d),
            d2h: BytesPerSecond(c.d2h),
            h2d_duplex: BytesPerSecond(c.h2d_duplex),
            d2h_duplex: BytesPerSecond(c.d2h_duplex),
            matmul_flops: FlopsPerSecond(self.matmul_rate()?),
            attention_flops: FlopsPerSecond(self.attention_rate()),
            memory_bandwidth: BytesPerSecond(self.memory_rate()),
            launch_overhead: Seconds(self.launch_overhead),
            fixed_overhead: Bytes(self.fixed_overhead()),
            alloc_granularity: Bytes(self.alloc.granularity()),
            host_memory_bandwidth: BytesPerSecond(self.host_copy.rate()),
            // The executor's host copies are pinned.
            host_adam_params_per_second: self.shared.adam_alone.rate(),
            // The room the planner leaves beyond the live peak depends on the schedules, not
            // the device: it is read off run records, not measured here.
            pool_slack: Bytes(0),
            pool_slack_fraction: 0.0,
            pool_reserve_granularity: Bytes(self.reserve.granularity()),
            pinned_device_fraction: self.reserve.pinned_fraction(),
            host_sharing: self.shared.sharing(c),
            host_adam_call_overhead: Seconds(self.shared.call_overhead()),
        };
        hw.validate().map_err(|(field, m)| format!("the measured profile is not valid ({field}): {m}"))?;
        Ok(hw)
    }

    /// The profile as a RON file, with a comment saying where it comes from.
    pub fn profile_ron(&self, hw: &HardwareProfile) -> Result<String, String> {
        let body =
            ron::ser::to_string_pretty(hw, ron::ser::PrettyConfig::default()).map_err(|e| format!("writing the profile as RON: {e}"))?;
        Ok(format!(
            "// {}: measured by `offplan calibrate` on {} (driver {}) at {} UTC, with the shapes of {}.\n// Regenerate with `offplan calibrate --out PATH`; do not edit by hand.\n{body}\n",
            hw.name,
            self.device,
            self.driver,
            utc_date(self.unix_time),
            self.config
        ))
    }

    /// Things that look wrong, for the user to check (not errors).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Ok(c) = self.large_copy() {
            if c.h2d_duplex > 1.05 * c.h2d || c.d2h_duplex > 1.05 * c.d2h {
                w.push("a copy ran faster with the other direction busy than alone: the duplex timing is suspect".into());
            }
        }
        for pair in self.copies.windows(2) {
            if pair[1].h2d < 0.7 * pair[0].h2d || pair[1].d2h < 0.7 * pair[0].d2h {
                w.push(format!(
                    "copy rates fall from {} to {}: another process may be using the link",
                    size_label(pair[0].bytes),
                    size_label(pair[1].bytes)
                ));
            }
        }
        if let Ok(c) = self.large_copy() {
            w.extend(self.shared.warnings(c));
        }
        if !(1..=MIB).contains(&self.alloc.pointer_spacing) {
            w.push(format!(
                "small allocations were not placed next to each other (spacing {} B): alloc_granularity is the USED growth, {} B",
                self.alloc.pointer_spacing,
                self.alloc.granularity()
            ));
        }
        if self.device_used_at_start > 2 * GIB {
            w.push(format!("{:.0} MiB of device memory was in use before anything was allocated: another process may hold memory, and fixed_overhead includes it", mib(self.device_used_at_start)));
        }
        if self.launch_overhead > 20e-6 {
            w.push(format!("launch overhead {:.1} us is high (a busy host?)", self.launch_overhead * 1e6));
        }
        w
    }

    /// All measurements as a text table.
    pub fn report(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "device: {} (sm_{}{}), driver {}, {:.1} GiB",
            self.device,
            self.compute_capability.0,
            self.compute_capability.1,
            self.driver,
            self.memory_total as f64 / GIB as f64
        );
        let _ = writeln!(s, "medians of {} rounds\n", self.repeats);
        let _ = writeln!(s, "pinned copies (GB/s)     H2D      D2H   H2D+D2H at once (each, sum)");
        for r in &self.copies {
            let _ = writeln!(
                s,
                "  {:>10}        {:>7.2}  {:>7.2}   {:>7.2} + {:>7.2} = {:>7.2}",
                size_label(r.bytes),
                gb(r.h2d),
                gb(r.d2h),
                gb(r.h2d_duplex),
                gb(r.d2h_duplex),
                gb(r.h2d_duplex + r.d2h_duplex)
            );
        }
        let _ = writeln!(s, "\nbf16 products of one step of {}", self.config);
        let _ = writeln!(
            s,
            "  {:<12} {:>6} {:>6} {:>6} {:>3} {:>3} {:>4} {:>5} {:>10} {:>9}",
            "product", "m", "n", "k", "tA", "tB", "out", "/step", "ms", "TFLOP/s"
        );
        for g in &self.gemms {
            let sh = &g.shape;
            let _ = writeln!(
                s,
                "  {:<12} {:>6} {:>6} {:>6} {:>3} {:>3} {:>4} {:>5} {:>10.4} {:>9.1}",
                sh.name,
                sh.m,
                sh.n,
                sh.k,
                if sh.trans_a { "T" } else { "N" },
                if sh.trans_b { "T" } else { "N" },
                match sh.out {
                    OutType::Bf16 => "bf16",
                    OutType::F32 => "f32",
                },
                sh.per_step,
                g.seconds * 1e3,
                g.flops_per_s() / 1e12
            );
        }
        match self.matmul_rate() {
            Ok(r) => {
                let _ = writeln!(s, "  FLOP-weighted over the step: {:.1} TFLOP/s", r / 1e12);
            }
            Err(e) => {
                let _ = writeln!(s, "  FLOP-weighted over the step: {e}");
            }
        }
        let _ = writeln!(s);
        for (t, unit, scale) in [
            (&self.attention_forward, "TFLOP/s", 1e12),
            (&self.attention_backward, "TFLOP/s", 1e12),
            (&self.gelu_forward, "GB/s", 1e9),
            (&self.gelu_backward, "GB/s", 1e9),
            (&self.device_copy, "GB/s", 1e9),
            (&self.host_copy, "GB/s", 1e9),
            (&self.host_copy_one_thread, "GB/s", 1e9),
        ] {
            let _ = writeln!(s, "  {:<44} {:>10.4} ms {:>9.1} {unit}", t.what, t.seconds * 1e3, t.rate() / scale);
        }
        let _ = writeln!(
            s,
            "  {:<44} {:>10.4} ms {:>9.3} G params/s",
            self.host_adam.what,
            self.host_adam.seconds * 1e3,
            self.host_adam.rate() / 1e9
        );
        let _ = writeln!(
            s,
            "  {:<44} {:>10.4} ms {:>9.3} G params/s",
            self.shared.adam_alone.what,
            self.shared.adam_alone.seconds * 1e3,
            self.shared.adam_alone.rate() / 1e9
        );
        let _ = writeln!(s, "  attention (forward + backward, overhead off)   {:>22.1} TFLOP/s", self.attention_rate() / 1e12);
        let _ = writeln!(s, "  memory rate (GELU fwd + bwd, overhead off)     {:>22.1} GB/s", self.memory_rate() / 1e9);
        let _ = writeln!(s, "  launch overhead                                {:>22.2} us", self.launch_overhead * 1e6);
        if let Ok(c) = self.large_copy() {
            let _ = writeln!(s, "\n{}", self.shared.report(c));
        }
        let _ = writeln!(s, "device memory");
        let _ = writeln!(s, "  in use after the context                     {:>10.1} MiB", mib(self.device_used_at_start));
        let _ = writeln!(s, "  in use after kernels, cuBLASLt, all work     {:>10.1} MiB", mib(self.device_used_after));
        let _ = writeln!(s, "  of which pool reserved                       {:>10.1} MiB", mib(self.pool_reserved_after));
        let _ = writeln!(s, "  fixed overhead (in use - pool reserved)      {:>10.1} MiB", mib(self.fixed_overhead()));
        let _ = writeln!(
            s,
            "  {} 1-byte allocations: addresses {3} B apart (alloc granularity {4} B), USED +{1} B each, RESERVED +{2} in all (the pool's chunk)",
            self.alloc.allocations,
            self.alloc.used_per_alloc,
            size_label(self.alloc.reserved_growth),
            self.alloc.pointer_spacing,
            self.alloc.granularity()
        );
        let _ = writeln!(
            s,
            "  one allocation of {} reserved {} (reservation unit {}); pinning {} of host memory took {} of device memory ({:.5} per byte)",
            size_label(self.reserve.requested),
            size_label(self.reserve.reserved),
            size_label(self.reserve.granularity()),
            size_label(self.reserve.pinned),
            size_label(self.reserve.pinned_device),
            self.reserve.pinned_fraction()
        );
        for w in self.warnings() {
            let _ = writeln!(s, "check: {w}");
        }
        s
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
    use super::*;
    use crate::gpu::{elapsed_ms, record, Arg, DeviceBuffer, Gemm, Gpu, GpuError, Kernels, Lt, MatType, PinnedBuffer};
    use crate::host::bf16::{bf16, f32_to_bf16};
    use crate::step::{bwd_smem, fwd_smem, fwd_warps, wanted_kernels};
    use cudarc::driver::{CudaEvent, CudaStream};
    use models::config::Attention;
    use rayon::prelude::*;
    use std::sync::Arc;
    use std::time::Instant;

    type R<T> = std::result::Result<T, ExecError>;

    fn bad(m: String) -> ExecError {
        ExecError::Gpu(GpuError::Invalid(format!("calibration: {m}")))
    }

    fn cdiv(a: u64, b: u64) -> u32 {
        a.div_ceil(b) as u32
    }

    fn align256(x: u64) -> u64 {
        x.div_ceil(256) * 256
    }

    /// Seconds between two events; checks the result is a positive, finite time.
    fn secs(start: &CudaEvent, end: &CudaEvent, what: &str) -> R<f64> {
        let ms = elapsed_ms(start, end)? as f64;
        if !(ms.is_finite() && ms > 0.0) {
            return Err(bad(format!("{what}: the events measured {ms} ms")));
        }
        Ok(ms / 1e3)
    }

    fn med(xs: &[f64], what: &str) -> R<f64> {
        median(xs).filter(|m| *m > 0.0).ok_or_else(|| bad(format!("{what}: no valid samples")))
    }

    /// Times `iters` calls of `f` on `stream` between two events; seconds per call.
    fn time_calls(gpu: &Gpu, stream: &CudaStream, iters: u32, what: &str, f: &mut dyn FnMut() -> R<()>) -> R<f64> {
        let (a, b) = (gpu.timing_event()?, gpu.timing_event()?);
        record(&a, stream)?;
        for _ in 0..iters {
            f()?;
        }
        record(&b, stream)?;
        Ok(secs(&a, &b, what)? / iters as f64)
    }

    /// Warm-up (two calls), then the number of calls that makes a sample last `min_s`.
    fn calibrate_iters(gpu: &Gpu, stream: &CudaStream, min_s: f64, what: &str, f: &mut dyn FnMut() -> R<()>) -> R<u32> {
        f()?;
        f()?;
        gpu.synchronize()?;
        let one = time_calls(gpu, stream, 1, what, f)?;
        Ok(((min_s / one).ceil() as u32).clamp(1, 1000))
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

    /// Fills `bytes` of `dst` with random bf16 data copied from `src` (tiled).
    fn fill_from(gpu: &Gpu, dst: &DeviceBuffer, src: &DeviceBuffer) -> R<()> {
        let mut off = 0u64;
        while off < dst.bytes() {
            let n = (dst.bytes() - off).min(src.bytes());
            gpu.copy_d2d(&gpu.compute, dst.ptr() + off, src.ptr(), n as usize)?;
            off += n;
        }
        Ok(())
    }

    /// Downloads the first values of an output and checks they are finite.
    fn check_finite(gpu: &Gpu, ptr: u64, bytes: u64, out: OutType, what: &str) -> R<()> {
        let n = bytes.min(1 << 16) as usize;
        let mut host = vec![0u8; n];
        gpu.download(&gpu.compute, &mut host, ptr)?;
        let bad_count = match out {
            OutType::Bf16 => {
                host.chunks_exact(2).filter(|c| !bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32().is_finite()).count()
            }
            OutType::F32 => host.chunks_exact(4).filter(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()).count(),
        };
        if bad_count > 0 {
            return Err(bad(format!("{what}: {bad_count} of its first {} values are not finite", n as u64 / out.size())));
        }
        Ok(())
    }

    pub fn measure(cfg: &GptConfig, opts: &Options) -> R<Calibration> {
        let t_all = Instant::now();
        let program = Program::build(cfg);
        let inv = &program.inventory;
        let d = cfg.hidden / cfg.heads;
        if cfg.attention == Attention::Fused && ![32, 64, 80, 96, 128].contains(&d) {
            return Err(ExecError::Unsupported(format!(
                "fused attention has kernels for head sizes 32, 64, 80, 96, 128; this config has {d}"
            )));
        }
        if cfg.attention == Attention::Materialized && d > 256 {
            return Err(ExecError::Unsupported(format!("materialised attention supports head sizes up to 256; this config has {d}")));
        }

        let gpu = Gpu::new().map_err(ExecError::opening)?;
        let device = gpu.name()?;
        let driver = gpu.driver_version()?;
        let cc = gpu.compute_capability()?;
        let (free0, total) = gpu.mem_info()?;
        let device_used_at_start = total.saturating_sub(free0);
        tracing::info!(
            "device: {device} (sm_{}{}, driver {driver}), {:.1} GiB, {:.0} MiB in use",
            cc.0,
            cc.1,
            total as f64 / GIB as f64,
            mib(device_used_at_start)
        );

        // ---- allocation granularity: the first pool allocations of the process
        let alloc = {
            gpu.synchronize()?;
            let before = gpu.pool_stats()?;
            const N: u64 = 16;
            let bufs: Vec<DeviceBuffer> = (0..N).map(|_| gpu.alloc(&gpu.compute, 1)).collect::<Result<_, _>>()?;
            gpu.synchronize()?;
            let after = gpu.pool_stats()?;
            let mut ptrs: Vec<u64> = bufs.iter().map(|b| b.ptr()).collect();
            ptrs.sort_unstable();
            let spacing = ptrs.windows(2).map(|w| w[1] - w[0]).filter(|x| *x > 0).min().unwrap_or(0);
            drop(bufs);
            gpu.synchronize()?;
            AllocProbe {
                allocations: N,
                used_per_alloc: after.used_current.saturating_sub(before.used_current) / N,
                reserved_growth: after.reserved_current.saturating_sub(before.reserved_current),
                pointer_spacing: spacing,
            }
        };
        tracing::info!(
            "pool: {N} 1-byte allocations use {} B each, reserve {} in all",
            alloc.used_per_alloc,
            size_label(alloc.reserved_growth),
            N = alloc.allocations
        );

        // ---- one large allocation (an arena) and pinned host memory
        let reserve = {
            gpu.synchronize()?;
            let requested = 1000 * MIB + 1;
            let big = gpu.alloc(&gpu.compute, requested)?;
            gpu.synchronize()?;
            // Absolute, not growth: the pool may keep (and then give up) the chunk of the small
            // allocations above, which made the growth 992 MiB for 1024 MiB reserved on the H100.
            let reserved = gpu.pool_stats()?.reserved_current;
            drop(big);
            gpu.synchronize()?;
            let (free_before, _) = gpu.mem_info()?;
            let pinned = 4096 * MIB;
            let host = gpu.pinned(pinned as usize)?;
            let (free_after, _) = gpu.mem_info()?;
            drop(host);
            ReserveProbe { requested, reserved, pinned, pinned_device: free_before.saturating_sub(free_after) }
        };
        tracing::info!(
            "pool: one allocation of {} reserves {}; {} pinned on the host take {} on the device",
            size_label(reserve.requested),
            size_label(reserve.reserved),
            size_label(reserve.pinned),
            size_label(reserve.pinned_device)
        );

        // ---- kernels and cuBLASLt, as Step::new sets them up
        let wanted = wanted_kernels(cfg);
        let wanted_ref: Vec<(&'static str, &str)> = wanted.iter().map(|(f, n)| (*f, n.as_str())).collect();
        let t0 = Instant::now();
        let kernels = Kernels::compile(&gpu, crate::gpu::KERNEL_FILES, &wanted_ref)?;
        tracing::info!("compiled {} kernels with NVRTC in {:.1} s", wanted.len(), t0.elapsed().as_secs_f64());
        match cfg.attention {
            Attention::Fused => {
                kernels.set_max_dynamic_smem(&format!("flash_attention_forward_d{d}"), fwd_smem(d))?;
                kernels.set_max_dynamic_smem(&format!("flash_attention_backward_d{d}"), bwd_smem(d))?;
            }
            Attention::Materialized => {
                let smem = cfg.seq * 4;
                if smem > 48 * 1024 {
                    kernels.set_max_dynamic_smem("attention_materialized_forward", smem)?;
                    kernels.set_max_dynamic_smem("attention_materialized_backward_dq", smem)?;
                }
            }
        }
        let ws = gpu.alloc(&gpu.compute, inv.tensor(inv.io.workspace).bytes.0)?;
        let lt = Lt::new(&ws)?;
        let s = &gpu.compute;
        let reps = opts.repeats;

        // ---- launch overhead
        let tiny = gpu.alloc(s, 512)?;
        let fill =
            || kernels.launch(s, "fill_bf16", (1, 1, 1), 256, 0, &[Arg::P(tiny.ptr()), Arg::L(256), Arg::F(0.0)]).map_err(ExecError::from);
        for _ in 0..100 {
            fill()?;
        }
        gpu.synchronize()?;
        let mut launch = Vec::new();
        for _ in 0..reps {
            launch.push(time_calls(&gpu, s, opts.launches, "fill_bf16 launches", &mut || fill())?);
        }
        let launch_overhead = med(&launch, "launch overhead")?;
        tracing::info!("launch overhead: {:.2} us per launch ({} back-to-back launches)", launch_overhead * 1e6, opts.launches);

        // ---- random source data for every operand
        let gemms = step_gemms(cfg);
        let operand_bytes = |g: &GemmShape| {
            let a = align256(2 * g.a_elems());
            let b = align256(2 * g.b_elems());
            let c = if g.with_c && !g.c_is_d { align256(2 * g.d_elems()) } else { 0 };
            let bias = if g.bias { align256(2 * g.m) } else { 0 };
            a + b + c + bias
        };
        let src_bytes = gemms.iter().map(operand_bytes).max().unwrap_or(0).max(64 * MIB);
        let d_bytes = gemms.iter().map(|g| g.d_bytes()).max().unwrap_or(0);
        let (free, _) = gpu.mem_info()?;
        let need = src_bytes + d_bytes + 2 * opts.copy_sizes.iter().max().copied().unwrap_or(0).max(opts.device_copy_bytes);
        if need > free / 10 * 9 {
            return Err(ExecError::Unsupported(format!(
                "calibration needs about {:.0} MiB of device memory, {:.0} MiB is free: use --quick or a smaller --model/--batch",
                mib(need),
                mib(free)
            )));
        }
        let src = gpu.alloc(s, src_bytes)?;
        {
            let chunk = random_bf16((16 * MIB / 2) as usize, 0x5eed);
            let mut off = 0u64;
            while off < src_bytes {
                let n = (src_bytes - off).min(chunk.len() as u64) as usize;
                gpu.upload(s, src.ptr() + off, &chunk[..n])?;
                off += n as u64;
            }
        }
        let dbuf = gpu.alloc(s, d_bytes)?;
        gpu.zero(s, dbuf.ptr(), d_bytes as usize)?;

        // ---- products
        let calls: Vec<Gemm> = gemms
            .iter()
            .map(|g| {
                let a = src.ptr();
                let b = a + align256(2 * g.a_elems());
                let mut next = b + align256(2 * g.b_elems());
                let c = if g.c_is_d {
                    Some(dbuf.ptr())
                } else if g.with_c {
                    let p = next;
                    next += align256(2 * g.d_elems());
                    Some(p)
                } else {
                    None
                };
                let bias = g.bias.then_some(next);
                Gemm {
                    m: g.m,
                    n: g.n,
                    k: g.k,
                    trans_a: g.trans_a,
                    trans_b: g.trans_b,
                    a,
                    lda: g.lda,
                    b,
                    ldb: g.ldb,
                    c,
                    d: dbuf.ptr(),
                    ldd: g.ldd,
                    out: match g.out {
                        OutType::Bf16 => MatType::Bf16,
                        OutType::F32 => MatType::F32,
                    },
                    bias,
                }
            })
            .collect();
        tracing::info!("timing {} products of one {} step ...", gemms.len(), cfg.name);
        let mut iters = Vec::new();
        for (g, call) in gemms.iter().zip(&calls) {
            // an accumulating product needs finite values in D: start from zeros
            gpu.zero(s, dbuf.ptr(), d_bytes as usize)?;
            iters.push(calibrate_iters(&gpu, s, opts.min_sample_s, &g.name, &mut || lt.matmul(s, call).map_err(ExecError::from))?);
            gpu.synchronize()?;
            check_finite(&gpu, dbuf.ptr(), g.d_bytes(), g.out, &g.name)?;
        }
        let mut gemm_samples = vec![Vec::new(); gemms.len()];
        for _ in 0..reps {
            for (i, (g, call)) in gemms.iter().zip(&calls).enumerate() {
                gemm_samples[i].push(time_calls(&gpu, s, iters[i], &g.name, &mut || lt.matmul(s, call).map_err(ExecError::from))?);
            }
        }
        let gemm_rows: Vec<GemmRow> = gemms
            .iter()
            .zip(&gemm_samples)
            .map(|(g, xs)| Ok(GemmRow { shape: g.clone(), seconds: med(xs, &g.name)? }))
            .collect::<R<_>>()?;
        drop(dbuf);

        // ---- attention, as step.rs launches it (layer 0's tensors, the inventory's sizes)
        let a0 = inv.acts[0];
        let s0 = inv.scratch[0];
        let buf = |t: models::TensorId| gpu.alloc(s, inv.tensor(t).bytes.0);
        let (qkv, att, atty, datty, datt, dqkv) = (buf(a0.qkv)?, buf(a0.att)?, buf(a0.atty)?, buf(s0.datty)?, buf(s0.datt)?, buf(s0.dqkv)?);
        fill_from(&gpu, &qkv, &src)?;
        fill_from(&gpu, &datty, &src)?;
        let (b, t, nh) = (cfg.batch as u64, cfg.seq as u64, cfg.heads as u64);
        let dd = d as u64;
        let scale = 1.0f32 / (d as f32).sqrt();
        let i32_ = |x: u64| Arg::I(x as i32);
        let p = Arg::P;
        let attn_fwd = || -> R<()> {
            match cfg.attention {
                Attention::Fused => {
                    let nw = fwd_warps(d);
                    kernels.launch(
                        s,
                        &format!("flash_attention_forward_d{d}"),
                        (cdiv(t, 16 * nw as u64), (b * nh) as u32, 1),
                        32 * nw,
                        fwd_smem(d),
                        &[p(atty.ptr()), p(att.ptr()), p(qkv.ptr()), i32_(b), i32_(t), i32_(nh), Arg::F(scale)],
                    )?;
                }
                Attention::Materialized => {
                    kernels.launch(
                        s,
                        "attention_materialized_forward",
                        (t as u32, (b * nh) as u32, 1),
                        128,
                        (t * 4) as u32,
                        &[p(atty.ptr()), p(att.ptr()), p(qkv.ptr()), i32_(b), i32_(t), i32_(nh), i32_(dd), Arg::F(scale)],
                    )?;
                }
            }
            Ok(())
        };
        let attn_bwd = || -> R<()> {
            match cfg.attention {
                Attention::Fused => {
                    kernels.launch(
                        s,
                        "attention_backward_delta",
                        (cdiv(b * nh * t, 8), 1, 1),
                        256,
                        0,
                        &[p(datt.ptr()), p(datty.ptr()), p(atty.ptr()), i32_(b), i32_(t), i32_(nh), i32_(dd)],
                    )?;
                    kernels.launch(
                        s,
                        &format!("flash_attention_backward_d{d}"),
                        (cdiv(t, 64), (b * nh) as u32, 1),
                        128,
                        bwd_smem(d),
                        &[
                            p(dqkv.ptr()),
                            p(datty.ptr()),
                            p(qkv.ptr()),
                            p(att.ptr()),
                            p(datt.ptr()),
                            i32_(b),
                            i32_(t),
                            i32_(nh),
                            Arg::F(scale),
                        ],
                    )?;
                }
                Attention::Materialized => {
                    let grid = (t as u32, (b * nh) as u32, 1);
                    let args = [
                        p(dqkv.ptr()),
                        p(datt.ptr()),
                        p(datty.ptr()),
                        p(qkv.ptr()),
                        p(att.ptr()),
                        i32_(b),
                        i32_(t),
                        i32_(nh),
                        i32_(dd),
                        Arg::F(scale),
                    ];
                    kernels.launch(s, "attention_materialized_backward_dq", grid, 128, (t * 4) as u32, &args)?;
                    kernels.launch(s, "attention_materialized_backward_dkdv", grid, 128, 0, &args)?;
                }
            }
            Ok(())
        };
        let (fwd_flops, _, fwd_launches) =
            program_op(&program, OpKind::Attn(0)).ok_or_else(|| bad("the step program has no attention op".into()))?;
        let (bwd_flops, _, bwd_launches) =
            program_op(&program, OpKind::AttnBwd(0)).ok_or_else(|| bad("the step program has no attention backward op".into()))?;
        let it_f = calibrate_iters(&gpu, s, opts.min_sample_s, "attention forward", &mut || attn_fwd())?;
        let it_b = calibrate_iters(&gpu, s, opts.min_sample_s, "attention backward", &mut || attn_bwd())?;
        gpu.synchronize()?;
        check_finite(&gpu, atty.ptr(), atty.bytes(), OutType::Bf16, "attention forward output")?;
        check_finite(&gpu, dqkv.ptr(), dqkv.bytes(), OutType::Bf16, "attention backward dqkv")?;
        let (mut fs, mut bs) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            fs.push(time_calls(&gpu, s, it_f, "attention forward", &mut || attn_fwd())?);
            bs.push(time_calls(&gpu, s, it_b, "attention backward", &mut || attn_bwd())?);
        }
        let attention_forward = Timed {
            what: format!("attention forward ({:?}, D {d})", cfg.attention),
            amount: fwd_flops,
            seconds: med(&fs, "attention forward")?,
            launches: fwd_launches,
        };
        let attention_backward = Timed {
            what: format!("attention backward ({:?}, D {d})", cfg.attention),
            amount: bwd_flops,
            seconds: med(&bs, "attention backward")?,
            launches: bwd_launches,
        };
        drop((qkv, att, atty, datty, datt, dqkv));

        // ---- memory rate: GELU forward and backward at the step's size
        let (fch, fch_gelu, dfch) = (buf(a0.fch)?, buf(a0.fch_gelu)?, buf(s0.dfch)?);
        fill_from(&gpu, &fch, &src)?;
        fill_from(&gpu, &dfch, &src)?;
        let cnt = inv.tensor(a0.fch).bytes.0 / 2;
        if !cnt.is_multiple_of(8) || inv.tensor(a0.fch_gelu).bytes.0 != 2 * cnt || inv.tensor(s0.dfch).bytes.0 != 2 * cnt {
            return Err(bad(format!("the GELU tensors are not {cnt} bf16 values (a multiple of 8)")));
        }
        let gelu_f = || {
            kernels
                .launch(s, "gelu_forward", (cdiv(cnt / 8, 256), 1, 1), 256, 0, &[p(fch_gelu.ptr()), p(fch.ptr()), Arg::L(cnt as i64)])
                .map_err(ExecError::from)
        };
        // in place on dfch, as the step does; the values stay finite (|gelu'| < 1.13), and a
        // fresh copy each round keeps them from shrinking to zeros
        let gelu_b = || {
            kernels
                .launch(s, "gelu_backward", (cdiv(cnt / 8, 256), 1, 1), 256, 0, &[p(dfch.ptr()), p(fch.ptr()), Arg::L(cnt as i64)])
                .map_err(ExecError::from)
        };
        let (_, gf_bytes, gf_launches) =
            program_op(&program, OpKind::Gelu(0)).ok_or_else(|| bad("the step program has no GELU op".into()))?;
        let (_, gb_bytes, gb_launches) =
            program_op(&program, OpKind::GeluBwd(0)).ok_or_else(|| bad("the step program has no GELU backward op".into()))?;
        let it_gf = calibrate_iters(&gpu, s, opts.min_sample_s, "gelu_forward", &mut || gelu_f())?;
        let it_gb = calibrate_iters(&gpu, s, opts.min_sample_s, "gelu_backward", &mut || gelu_b())?;
        gpu.synchronize()?;
        check_finite(&gpu, fch_gelu.ptr(), fch_gelu.bytes(), OutType::Bf16, "gelu_forward output")?;
        let (mut gfs, mut gbs) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            fill_from(&gpu, &dfch, &src)?;
            gfs.push(time_calls(&gpu, s, it_gf, "gelu_forward", &mut || gelu_f())?);
            gbs.push(time_calls(&gpu, s, it_gb, "gelu_backward", &mut || gelu_b())?);
        }
        let gelu_forward = Timed {
            what: format!("gelu_forward ({} values)", cnt),
            amount: gf_bytes as f64,
            seconds: med(&gfs, "gelu_forward")?,
            launches: gf_launches,
        };
        let gelu_backward = Timed {
            what: format!("gelu_backward ({} values)", cnt),
            amount: gb_bytes as f64,
            seconds: med(&gbs, "gelu_backward")?,
            launches: gb_launches,
        };
        drop((fch, fch_gelu, dfch));

        // ---- fixed overhead: every module has been loaded and every library path has run
        gpu.synchronize()?;
        let (free1, _) = gpu.mem_info()?;
        let device_used_after = total.saturating_sub(free1);
        let pool_reserved_after = gpu.pool_stats()?.reserved_current;
        tracing::info!(
            "device memory: {:.1} MiB in use, {:.1} MiB of it reserved by the pool",
            mib(device_used_after),
            mib(pool_reserved_after)
        );
        if pool_reserved_after > device_used_after {
            return Err(bad(format!("the pool reserves {pool_reserved_after} B but only {device_used_after} B of the device is in use")));
        }

        // ---- pinned copies, and a device-to-device copy
        let max_copy = *opts.copy_sizes.last().expect("checked non-empty");
        let dev_bytes = max_copy.max(opts.device_copy_bytes);
        tracing::info!("allocating 2 x {} of pinned host memory ...", size_label(max_copy));
        let mut h_src: PinnedBuffer = gpu.pinned(max_copy as usize)?;
        let mut h_dst: PinnedBuffer = gpu.pinned(max_copy as usize)?;
        h_src.as_mut_slice().par_chunks_mut(1 << 20).for_each(|c| c.fill(0x3c));
        // 0xff here, zeros on the device: the copies back must overwrite it
        h_dst.as_mut_slice().par_chunks_mut(1 << 20).for_each(|c| c.fill(0xff));
        let d_a = gpu.alloc(s, dev_bytes)?;
        let d_b = gpu.alloc(s, dev_bytes)?;
        gpu.zero(s, d_b.ptr(), dev_bytes as usize)?;
        gpu.synchronize()?;
        // The gate that holds both copy streams until both copies are enqueued: a few GELU
        // launches in place over 64 MiB of zeros on the compute stream (about 0.3 ms on an H100),
        // then an event both copy streams wait for.
        let gate_elems = 32 * MIB;
        let gate_buf = gpu.alloc(s, 2 * gate_elems)?;
        gpu.zero(s, gate_buf.ptr(), (2 * gate_elems) as usize)?;
        gpu.synchronize()?;
        let gate = gpu.timing_event()?;
        let ev = || gpu.timing_event();
        let (h2d, d2h): (&Arc<CudaStream>, &Arc<CudaStream>) = (&gpu.h2d, &gpu.d2h);
        let mut one_round = |bytes: u64| -> R<(f64, f64, f64, f64)> {
            let n = bytes as usize;
            // alone, one way
            let (e0, e1) = (ev()?, ev()?);
            record(&e0, h2d)?;
            gpu.upload_pinned_async(h2d, d_a.ptr(), &h_src, n)?;
            record(&e1, h2d)?;
            let t_h2d = secs(&e0, &e1, "host-to-device copy")?;
            let (e0, e1) = (ev()?, ev()?);
            record(&e0, d2h)?;
            gpu.download_pinned_async(d2h, &mut h_dst, d_b.ptr(), n)?;
            record(&e1, d2h)?;
            let t_d2h = secs(&e0, &e1, "device-to-host copy")?;
            // both at once, behind a gate on the compute stream
            for _ in 0..8 {
                kernels.launch(
                    s,
                    "gelu_forward",
                    (cdiv(gate_elems / 8, 256), 1, 1),
                    256,
                    0,
                    &[p(gate_buf.ptr()), p(gate_buf.ptr()), Arg::L(gate_elems as i64)],
                )?;
            }
            record(&gate, s)?;
            h2d.wait(&gate).map_err(GpuError::from)?;
            d2h.wait(&gate).map_err(GpuError::from)?;
            let (a0, a1, b0, b1) = (ev()?, ev()?, ev()?, ev()?);
            record(&a0, h2d)?;
            record(&b0, d2h)?;
            gpu.upload_pinned_async(h2d, d_a.ptr(), &h_src, n)?;
            gpu.download_pinned_async(d2h, &mut h_dst, d_b.ptr(), n)?;
            record(&a1, h2d)?;
            record(&b1, d2h)?;
            let t_hd = secs(&a0, &a1, "host-to-device copy (duplex)")?;
            let t_dh = secs(&b0, &b1, "device-to-host copy (duplex)")?;
            Ok((t_h2d, t_d2h, t_hd, t_dh))
        };
        for &size in &opts.copy_sizes {
            one_round(size)?; // warm-up
        }
        let mut copy_samples = vec![Vec::new(); opts.copy_sizes.len()];
        for _ in 0..reps {
            for (i, &size) in opts.copy_sizes.iter().enumerate() {
                copy_samples[i].push(one_round(size)?);
            }
        }
        let mut copies = Vec::new();
        for (&size, xs) in opts.copy_sizes.iter().zip(&copy_samples) {
            let col = |f: fn(&(f64, f64, f64, f64)) -> f64| xs.iter().map(f).collect::<Vec<f64>>();
            let what = size_label(size);
            let rate = |v: Vec<f64>, dir: &str| -> R<f64> { Ok(size as f64 / med(&v, &format!("{dir} copy of {what}"))?) };
            copies.push(CopyRow {
                bytes: size,
                h2d: rate(col(|x| x.0), "host-to-device")?,
                d2h: rate(col(|x| x.1), "device-to-host")?,
                h2d_duplex: rate(col(|x| x.2), "duplex host-to-device")?,
                d2h_duplex: rate(col(|x| x.3), "duplex device-to-host")?,
            });
        }
        let back = h_dst.as_slice();
        if back[..16].iter().chain(&back[back.len() - 16..]).any(|&x| x != 0) {
            return Err(bad("the device-to-host copies did not bring back the device's zeros".into()));
        }
        let mut probe = vec![0u8; 16];
        gpu.download(s, &mut probe, d_a.ptr() + max_copy - 16)?;
        if probe.iter().any(|&x| x != 0x3c) {
            return Err(bad("the host-to-device copies did not bring the host's bytes".into()));
        }
        // ---- host AdamW on pinned memory, alone and beside the copies
        tracing::info!("host AdamW over {} M parameters in pinned memory, alone and beside pinned copies ...", opts.host_adam_params >> 20);
        let shared = {
            let big = copies.last().expect("checked non-empty");
            let mut bufs = shared_memory::gpu::CopyBuffers {
                h_src: &h_src,
                h_dst: &mut h_dst,
                d_dst: &d_a,
                d_src: &d_b,
                bytes: max_copy as usize,
                h2d_rate: big.h2d,
                d2h_rate: big.d2h,
            };
            shared_memory::gpu::measure(&gpu, &mut bufs, opts.host_adam_params, reps, rayon::current_num_threads())?
        };
        // device-to-device
        let dcb = opts.device_copy_bytes as usize;
        let copy_d = || gpu.copy_d2d(s, d_b.ptr(), d_a.ptr(), dcb).map_err(ExecError::from);
        let it_dc = calibrate_iters(&gpu, s, opts.min_sample_s, "device copy", &mut || copy_d())?;
        let mut dcs = Vec::new();
        for _ in 0..reps {
            dcs.push(time_calls(&gpu, s, it_dc, "device copy", &mut || copy_d())?);
        }
        let device_copy = Timed {
            what: format!("device-to-device copy of {}", size_label(dcb as u64)),
            amount: 2.0 * dcb as f64,
            seconds: med(&dcs, "device copy")?,
            launches: 1,
        };
        gpu.synchronize()?;
        drop((d_a, d_b, h_src, h_dst, src, tiny, gate_buf));
        gpu.synchronize()?;
        drop(lt);
        drop(ws);
        gpu.synchronize()?;

        // ---- host
        let host_threads = rayon::current_num_threads();
        tracing::info!(
            "host: copies of {} and AdamW over {} M parameters on {host_threads} threads ...",
            size_label(opts.host_copy_bytes as u64),
            opts.host_adam_params >> 20
        );
        let hb = opts.host_copy_bytes;
        let hsrc = vec![1u8; hb];
        let mut hdst = vec![0u8; hb];
        let par_copy = |dst: &mut [u8]| dst.par_chunks_mut(1 << 20).zip(hsrc.par_chunks(1 << 20)).for_each(|(d, s)| d.copy_from_slice(s));
        par_copy(&mut hdst); // first touch
        let (mut hp, mut h1) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let t0 = Instant::now();
            par_copy(&mut hdst);
            hp.push(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            hdst.copy_from_slice(std::hint::black_box(&hsrc));
            h1.push(t0.elapsed().as_secs_f64());
        }
        if hdst[hb - 1] != 1 {
            return Err(bad("the host copy did not copy".into()));
        }
        drop((hsrc, hdst));
        let host_copy = Timed {
            what: format!("host copy of {}, {host_threads} threads", size_label(hb as u64)),
            amount: 2.0 * hb as f64,
            seconds: med(&hp, "host copy")?,
            launches: 0,
        };
        let host_copy_one_thread = Timed {
            what: format!("host copy of {}, 1 thread", size_label(hb as u64)),
            amount: 2.0 * hb as f64,
            seconds: med(&h1, "host copy")?,
            launches: 0,
        };

        let n = opts.host_adam_params;
        let mut w = vec![f32_to_bf16(0.01); n];
        let g = vec![f32_to_bf16(1e-3); n];
        let mut opt = vec![0.0f32; 3 * n];
        opt[..n].par_chunks_mut(1 << 16).for_each(|c| c.fill(0.01));
        let views = vec![models::inventory::View { name: "calibration".into(), shape: vec![n as u64], offset: 0 }];
        let h = crate::host::AdamW::default();
        crate::host::adamw_owner(&mut w, &g, &mut opt, &views, &h, 1).map_err(|e| bad(e.to_string()))?; // warm-up, first touch
        let mut ad = Vec::new();
        for r in 0..reps {
            let t0 = Instant::now();
            crate::host::adamw_owner(&mut w, &g, &mut opt, &views, &h, 2 + r as u32).map_err(|e| bad(e.to_string()))?;
            ad.push(t0.elapsed().as_secs_f64());
        }
        if !opt[..n].iter().step_by(4096).all(|x| x.is_finite() && *x < 0.01) {
            return Err(bad("host AdamW left non-finite or unchanged master weights".into()));
        }
        let host_adam = Timed {
            what: format!("host AdamW, {} M params, {host_threads} threads", n >> 20),
            amount: n as f64,
            seconds: med(&ad, "host AdamW")?,
            launches: 0,
        };
        drop((w, g, opt));

        tracing::info!("calibration took {:.1} s", t_all.elapsed().as_secs_f64());
        Ok(Calibration {
            device,
            driver,
            compute_capability: cc,
            config: format!("{} (B {} x T {})", cfg.name, cfg.batch, cfg.seq),
            repeats: reps,
            memory_total: total,
            copies,
            gemms: gemm_rows,
            attention_forward,
            attention_backward,
            gelu_forward,
            gelu_backward,
            device_copy,
            launch_overhead,
            device_used_at_start,
            device_used_after,
            pool_reserved_after,
            alloc,
            reserve,
            host_copy,
            host_copy_one_thread,
            host_adam,
            shared,
            host_threads,
            unix_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(name: &str) -> GptConfig {
        GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../models/configs/{name}.ron"))).unwrap()
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

    #[test]
    fn step_gemms_count_the_program_matmul_flops() {
        for name in ["gpt2-tiny", "gpt2-124m", "gpt3-1.3b", "gpt3-6.7b"] {
            let base = config(name);
            for k in [1, 2, base.output_chunks] {
                let Ok(cfg) = base.with_shape(None, None, Some(k)) else {
                    continue;
                };
                let program = Program::build(&cfg);
                let ours: f64 = step_gemms(&cfg).iter().map(|g| g.per_step as f64 * g.flops()).sum();
                let theirs = program_matmul_flops(&program);
                assert!((ours - theirs).abs() <= 1e-9 * theirs, "{name} k {k}: {ours} vs {theirs}");
            }
        }
    }

    #[test]
    fn step_gemms_layouts_match_step_rs() {
        let cfg = config("gpt3-1.3b");
        let (n, c) = (cfg.tokens(), cfg.hidden as u64);
        let g = step_gemms(&cfg);
        let by = |name: &str| g.iter().find(|x| x.name == name).unwrap().clone();
        // linear: D (o x rows) = W^T(i x o -> o x i) x inp
        let fc = by("fc");
        assert_eq!(
            (fc.m, fc.n, fc.k, fc.trans_a, fc.trans_b, fc.lda, fc.ldb, fc.ldd),
            (4 * c, n, c, true, false, c as i64, c as i64, 4 * c as i64)
        );
        assert!(fc.bias && !fc.with_c);
        assert_eq!(fc.a_elems(), 4 * c * c);
        assert_eq!(fc.b_elems(), n * c);
        assert_eq!(fc.d_bytes(), 2 * n * 4 * c);
        let ap = by("attproj");
        assert!(ap.with_c && !ap.c_is_d);
        // dx into fp32 dlnf, accumulating for all but the first chunk
        let vc = (cfg.padded_vocab / cfg.output_chunks) as u64;
        let dx = by("out_dx");
        assert_eq!((dx.m, dx.n, dx.k, dx.out, dx.with_c, dx.per_step), (c, n, vc, OutType::F32, false, 1));
        let acc = by("out_dx_acc");
        assert!(acc.with_c && acc.c_is_d);
        assert_eq!(acc.per_step, cfg.output_chunks as u64 - 1);
        assert_eq!(dx.a_elems(), vc * c);
        assert_eq!(dx.b_elems(), n * vc);
        // dw: D (i x o) = x (i x rows) dy^T
        let dw = by("fc_dw");
        assert_eq!(
            (dw.m, dw.n, dw.k, dw.trans_a, dw.trans_b, dw.lda, dw.ldb, dw.ldd),
            (c, 4 * c, n, false, true, c as i64, 4 * c as i64, c as i64)
        );
        assert_eq!(dw.a_elems(), c * n);
        assert_eq!(dw.b_elems(), 4 * c * n);
        // one chunk: no recompute and no accumulation
        let mut one = cfg.clone();
        one.output_chunks = 1;
        let g1 = step_gemms(&one);
        assert!(g1.iter().all(|x| x.name != "out_dx_acc"));
        assert_eq!(g1.iter().find(|x| x.name == "out").unwrap().per_step, 1);
    }

    fn sample() -> Calibration {
        let cfg = config("gpt2-124m");
        let gemms = step_gemms(&cfg);
        // every product at 500 TFLOP/s, except qkv at 250
        let gemm_rows = gemms
            .into_iter()
            .map(|g| {
                let rate = if g.name == "qkv" { 250e12 } else { 500e12 };
                GemmRow { seconds: g.flops() / rate, shape: g }
            })
            .collect();
        let t = |what: &str, amount: f64, seconds: f64, launches: u32| Timed { what: what.into(), amount, seconds, launches };
        Calibration {
            device: "NVIDIA H100 80GB HBM3".into(),
            driver: "13.0".into(),
            compute_capability: (9, 0),
            config: "gpt2-124m (B 8 x T 1024)".into(),
            repeats: 7,
            memory_total: 81559 * MIB,
            copies: vec![
                CopyRow { bytes: 8 * MIB, h2d: 40e9, d2h: 42e9, h2d_duplex: 35e9, d2h_duplex: 36e9 },
                CopyRow { bytes: GIB, h2d: 52e9, d2h: 54e9, h2d_duplex: 47e9, d2h_duplex: 46e9 },
            ],
            gemms: gemm_rows,
            attention_forward: t("attention forward", 100e9, 0.4e-3, 1),
            attention_backward: t("attention backward", 250e9, 1.2e-3, 2),
            gelu_forward: t("gelu_forward", 1e9, 0.5e-3, 1),
            gelu_backward: t("gelu_backward", 1.5e9, 0.75e-3, 1),
            device_copy: t("device copy", 2e9, 0.7e-3, 1),
            launch_overhead: 0.0,
            device_used_at_start: 500 * MIB,
            device_used_after: 1100 * MIB,
            pool_reserved_after: 400 * MIB,
            alloc: AllocProbe { allocations: 16, used_per_alloc: 512, reserved_growth: 2 * MIB, pointer_spacing: 512 },
            reserve: ReserveProbe { requested: 1000 * MIB + 1, reserved: 1024 * MIB, pinned: 4096 * MIB, pinned_device: 8 * MIB },
            host_copy: t("host copy", 2e9, 0.05, 0),
            host_copy_one_thread: t("host copy 1", 2e9, 0.2, 0),
            host_adam: t("host adam", 256e6, 0.128, 0),
            shared: SharedMemory {
                adam_alone: t("host adam pinned", 256e6, 0.128, 0),
                adam_small: t("host adam small", 4e6, 0.0025, 0),
                // every part slowed evenly: to 80%, 90% and 60% of its speed alone
                rows: vec![
                    SharedRow { copies: Copies::HostToDevice, adam: 1.6e9, h2d: 0.8 * 52e9, d2h: 0.0, passes: 20 },
                    SharedRow { copies: Copies::DeviceToHost, adam: 1.8e9, h2d: 0.0, d2h: 0.9 * 54e9, passes: 20 },
                    SharedRow { copies: Copies::Both, adam: 1.2e9, h2d: 0.6 * 47e9, d2h: 0.6 * 46e9, passes: 20 },
                ],
            },
            host_threads: 16,
            unix_time: 1_800_000_000,
        }
    }

    #[test]
    fn profile_from_measurements() {
        let c = sample();
        let hw = c.to_profile("h100-test").unwrap();
        assert_eq!(hw.name, "h100-test");
        assert_eq!(hw.memory, Bytes(81559 * MIB));
        // the largest copy size's rates
        assert_eq!((hw.h2d.0, hw.d2h.0, hw.h2d_duplex.0, hw.d2h_duplex.0), (52e9, 54e9, 47e9, 46e9));
        assert!((hw.attention_flops.0 - 350e9 / 1.6e-3).abs() < 1.0);
        assert!((hw.memory_bandwidth.0 - 2e12).abs() < 1.0);
        assert_eq!(hw.fixed_overhead, Bytes(700 * MIB));
        assert_eq!(hw.alloc_granularity, Bytes(512));
        // what the H100 showed: USED counts requested bytes, addresses 512 apart
        let mut c2 = c.clone();
        c2.alloc = AllocProbe { allocations: 16, used_per_alloc: 1, reserved_growth: 32 * MIB, pointer_spacing: 512 };
        assert_eq!(c2.to_profile("x").unwrap().alloc_granularity, Bytes(512));
        c2.alloc.pointer_spacing = 0;
        assert_eq!(c2.to_profile("x").unwrap().alloc_granularity, Bytes(1));
        assert!(!c2.warnings().is_empty());
        c2.alloc.pointer_spacing = 64 * MIB;
        c2.alloc.used_per_alloc = 0;
        assert_eq!(c2.to_profile("x").unwrap().alloc_granularity, Bytes(1));
        assert!((hw.host_memory_bandwidth.0 - 40e9).abs() < 1.0);
        assert!((hw.host_adam_params_per_second - 2e9).abs() < 1.0);
        // 4e6 params at 2e9/s take 2 ms; the calls took 2.5
        assert!((hw.host_adam_call_overhead.0 - 0.5e-3).abs() < 1e-12);
        let sharing = hw.host_sharing.expect("measured");
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(sharing.beside_h2d.host, 0.8) && near(sharing.beside_h2d.h2d, 0.8) && sharing.beside_h2d.d2h == 1.0);
        assert!(near(sharing.beside_d2h.host, 0.9) && near(sharing.beside_d2h.d2h, 0.9));
        assert!(near(sharing.beside_both.host, 0.6) && near(sharing.beside_both.h2d, 0.6) && near(sharing.beside_both.d2h, 0.6));
        assert_eq!(hw.launch_overhead, Seconds(0.0));
        match &hw.provenance {
            Provenance::Measured(m) => {
                assert!(m.contains("NVIDIA H100 80GB HBM3") && m.contains("13.0") && m.contains("2027-01-15"), "{m}");
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn matmul_rate_is_flop_weighted_over_the_step() {
        let c = sample();
        let total: f64 = c.gemms.iter().map(|g| g.shape.per_step as f64 * g.shape.flops()).sum();
        let qkv: f64 = c.gemms.iter().filter(|g| g.shape.name == "qkv").map(|g| g.shape.per_step as f64 * g.shape.flops()).sum();
        // time = qkv/250 + rest/500
        let expect = total / (qkv / 250e12 + (total - qkv) / 500e12);
        let got = c.matmul_rate().unwrap();
        assert!((got - expect).abs() / expect < 1e-12, "{got} vs {expect}");
        assert!(got > 250e12 && got < 500e12);
        // the per_step count weighs: doubling a shape's count moves the rate toward it
        let mut c2 = c.clone();
        for g in &mut c2.gemms {
            if g.shape.name == "qkv" {
                g.shape.per_step *= 10;
            }
        }
        assert!(c2.matmul_rate().unwrap() < got);
        // launch overhead is taken off each product's time: the rate rises
        let mut c3 = c.clone();
        c3.launch_overhead = 1e-6;
        assert!(c3.matmul_rate().unwrap() > got);
        // a broken sample is an error, not a number
        let mut c4 = c.clone();
        c4.gemms[0].seconds = 0.0;
        assert!(c4.matmul_rate().is_err());
    }

    #[test]
    fn the_written_profile_parses_back() {
        let c = sample();
        let hw = c.to_profile(&default_name(&c.device)).unwrap();
        let text = c.profile_ron(&hw).unwrap();
        let back = HardwareProfile::parse(&text, Path::new("calibrated.ron")).unwrap();
        assert_eq!(back.name, "h100-80gb-hbm3-calibrated");
        assert_eq!(back.memory, hw.memory);
        assert_eq!(back.fixed_overhead, hw.fixed_overhead);
        assert_eq!(back.alloc_granularity, hw.alloc_granularity);
        assert!((back.matmul_flops.0 - hw.matmul_flops.0).abs() <= 1e-9 * hw.matmul_flops.0);
        assert!((back.h2d.0 - hw.h2d.0).abs() <= 1e-9 * hw.h2d.0);
        assert_eq!(back.provenance, hw.provenance);
    }

    #[test]
    fn an_invalid_measurement_is_refused() {
        let mut c = sample();
        c.shared.adam_alone.seconds = 0.0; // infinite rate
        assert!(c.to_profile("x").unwrap_err().contains("host_adam_params_per_second"));
        let mut c = sample();
        c.copies.clear();
        assert!(c.to_profile("x").is_err());
        let mut c = sample();
        c.device_used_after = 90_000 * MIB; // fixed overhead above the device
        assert!(c.to_profile("x").unwrap_err().contains("fixed_overhead"));
    }

    #[test]
    fn report_lists_every_size_and_shape() {
        let c = sample();
        let r = c.report();
        for row in &c.copies {
            assert!(r.contains(&size_label(row.bytes)), "{r}");
        }
        for g in &c.gemms {
            assert!(r.contains(&g.shape.name), "{r}");
        }
        assert!(r.contains("FLOP-weighted"));
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        let mut bad = c.clone();
        bad.copies[1].h2d_duplex = 80e9;
        assert!(!bad.warnings().is_empty());
    }

    #[test]
    fn names_dates_and_sizes() {
        assert_eq!(default_name("NVIDIA H100 80GB HBM3"), "h100-80gb-hbm3-calibrated");
        assert_eq!(default_name("NVIDIA GeForce RTX 4090"), "geforce-rtx-4090-calibrated");
        assert_eq!(default_name(""), "gpu-calibrated");
        assert_eq!(utc_date(1_800_000_000), "2027-01-15 08:00");
        assert_eq!(utc_date(0), "1970-01-01 00:00");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00");
        assert_eq!(size_label(GIB), "1024 MiB");
        assert_eq!(size_label(8 * MIB), "8 MiB");
        assert_eq!(size_label(512), "512 B");
    }
}
