//! What one calibration measured ([`Calibration`]), and what it makes: the report text, the
//! warnings, and the hardware profile (checked, and as a RON file).

use super::memory::{AllocProbe, ReserveProbe};
use super::products::GemmRow;
use super::{work_seconds, CopyRow, HostMemory, SharedMemory, Timed, GIB, MIB};
use crate::kernels::MatType;
use models::hardware::{KernelCost, Provenance};
use models::program::WorkClass;
use models::{Bytes, BytesPerSecond, FlopsPerSecond, HardwareProfile, Seconds};
use serde::Serialize;

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
    /// Layer 0's ops each alone at the step's shapes, and at a small micro-batch
    /// (`small_config`): what a kernel costs beyond the roofline.
    pub op_kernels: Vec<super::ops::OpKernel>,
    pub small_config: String,
    pub small_op_kernels: Vec<super::ops::OpKernel>,
    /// Those ops one after another in the step's order (seconds), at each size.
    #[serde(default)]
    pub op_sequence: f64,
    #[serde(default)]
    pub small_op_sequence: f64,
    /// The CPU embedding's host ops at the step's shapes and at the small micro-batch, as the
    /// executor's host code runs them (none for a tied embedding).
    #[serde(default)]
    pub host_ops: Vec<super::ops::OpKernel>,
    #[serde(default)]
    pub small_host_ops: Vec<super::ops::OpKernel>,
    /// The host ops' probe rate as a run's probe takes it (bytes/s; 0 where not measured).
    #[serde(default)]
    pub host_ops_probe: f64,
    /// Seconds each copy takes beyond its bytes, queued (host to device, device to host).
    #[serde(default)]
    pub copy_latency: (f64, f64),
    /// The host's time to issue each kind of work, a kernel's and a product's at the pace of
    /// layer 0's ops issued in step order.
    pub issue: models::IssueCosts,
    /// That sequence's issue time, launches and products.
    #[serde(default)]
    pub in_order_issue: Option<super::ops::InOrderIssue>,
    /// The costs as one kernel, or one product, issued back to back after itself.
    #[serde(default)]
    pub back_to_back_issue: Option<models::IssueCosts>,
    /// Seconds a host function costs between two kernels that wait on it.
    #[serde(default)]
    pub host_call_latency: f64,
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
    /// The host's memory when calibrate ran (None where /proc/meminfo could not be read).
    pub host_memory: Option<HostMemory>,
    pub unix_time: u64,
}

pub(super) fn gb(x: f64) -> f64 {
    x / 1e9
}

pub(super) fn mib(x: u64) -> f64 {
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

/// Step FLOPs of the products `gemms` over their time per step, `launch_overhead` taken off
/// each: the profile's `matmul_flops`.
pub fn matmul_rate(gemms: &[GemmRow], launch_overhead: f64) -> Result<f64, String> {
    let mut flops = 0.0;
    let mut secs = 0.0;
    for g in gemms {
        if !(g.seconds.is_finite() && g.seconds > 0.0) {
            return Err(format!("product {} has no valid time ({} s)", g.shape.name, g.seconds));
        }
        flops += g.shape.per_step as f64 * g.shape.flops();
        secs += g.shape.per_step as f64 * work_seconds(g.seconds, 1, launch_overhead);
    }
    if flops <= 0.0 || secs <= 0.0 {
        return Err("no products were measured".into());
    }
    Ok(flops / secs)
}

/// The amount of a forward and backward pair over their time, launch overhead taken off.
pub fn pair_rate(f: &Timed, b: &Timed, launch_overhead: f64) -> f64 {
    (f.amount + b.amount) / (work_seconds(f.seconds, f.launches, launch_overhead) + work_seconds(b.seconds, b.launches, launch_overhead))
}

impl Calibration {
    /// The largest copy size's row (the one the profile takes).
    pub fn large_copy(&self) -> Result<&CopyRow, String> {
        self.copies.iter().max_by_key(|r| r.bytes).ok_or_else(|| "no copy sizes were measured".to_string())
    }

    /// Step FLOPs of all products over their time per step (launch overhead taken off each).
    pub fn matmul_rate(&self) -> Result<f64, String> {
        matmul_rate(&self.gemms, self.launch_overhead)
    }

    /// Attention FLOPs (forward + backward) over their time, launch overhead taken off.
    pub fn attention_rate(&self) -> f64 {
        pair_rate(&self.attention_forward, &self.attention_backward, self.launch_overhead)
    }

    /// GELU forward + backward bytes over their time, launch overhead taken off.
    pub fn memory_rate(&self) -> f64 {
        pair_rate(&self.gelu_forward, &self.gelu_backward, self.launch_overhead)
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
            host_memory: self.host_memory.map(|m| Bytes(m.total)),
            host_pinnable: self.host_memory.map(|m| Bytes(m.pinnable())),
            host_pin_rate: (self.reserve.pin_seconds > 0.0).then(|| BytesPerSecond(self.reserve.pinned as f64 / self.reserve.pin_seconds)),
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
            // One GPU measures no links between GPUs.
            interconnect: None,
            issue: Some(self.issue),
            kernels: self.kernel_costs(),
            sequence_overhead: Seconds(self.sequence_overhead()),
            host_kernels: self.host_kernel_costs(),
            host_ops_probe: (self.host_ops_probe > 0.0).then_some(BytesPerSecond(self.host_ops_probe)),
            host_call_latency: Seconds(self.host_call_latency),
            h2d_latency: Seconds(self.copy_latency.0),
            d2h_latency: Seconds(self.copy_latency.1),
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

    /// Each memory-bound op family timed at both sizes, fitted (see [`KernelCost::fit`]).
    pub fn kernel_costs(&self) -> std::collections::BTreeMap<String, KernelCost> {
        let memory = self.op_kernels.iter().filter(|k| k.work == WorkClass::Memory);
        fit_families(memory, &self.small_op_kernels, self.memory_rate(), |k| k.launches, Seconds(self.launch_overhead))
    }

    /// Each host op family timed at both sizes, fitted against the host's memory rate (see
    /// [`KernelCost::fit`]; one call each, whose fixed time is what the small size shows).
    pub fn host_kernel_costs(&self) -> std::collections::BTreeMap<String, KernelCost> {
        fit_families(&self.host_ops, &self.small_host_ops, self.host_copy.rate(), |_| 1, Seconds::ZERO)
    }

    /// The CPU embedding's host ops at both sizes against the host's memory rate.
    fn host_op_report(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        if self.host_ops.is_empty() {
            return s;
        }
        let bw = self.host_copy.rate();
        let costs = self.host_kernel_costs();
        let _ = writeln!(s, "\nthe CPU embedding's host ops (the executor's host code): measured, at the host memory rate");
        let _ = writeln!(s, "  {:<12} {:>21}  {:>21}", "", self.config, self.small_config);
        let _ = writeln!(s, "  {:<12} {:>10} {:>10}  {:>10} {:>10}", "op", "us", "at rate", "us", "at rate");
        for k in &self.host_ops {
            let mut line = format!("  {:<12} {:>10.1} {:>10.1}", k.kind, k.seconds * 1e6, k.bytes as f64 / bw * 1e6);
            if let Some(x) = self.small_host_ops.iter().find(|x| x.kind == k.kind) {
                let _ = write!(line, "  {:>10.1} {:>10.1}", x.seconds * 1e6, x.bytes as f64 / bw * 1e6);
            }
            if let Some(c) = costs.get(&k.kind) {
                let _ = write!(line, "  fit: {:.1} us per call, {:.0}% of the rate", c.per_launch.0 * 1e6, 100.0 * c.efficiency);
            }
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s, "  the host ops' probe (a run measures it the same way): {:.1} GB/s", self.host_ops_probe / 1e9);
        s
    }

    /// What a launch costs following a different kernel, from layer 0's ops in step order at
    /// the small size (at the step's size the ops' own run-to-run spread hides it).
    pub fn sequence_overhead(&self) -> f64 {
        super::ops::sequence_overhead(&self.small_op_kernels, self.small_op_sequence)
    }

    /// Layer 0's ops alone at both sizes: measured, the roofline at the calibrated rates, and
    /// the time beyond it per launch.
    fn op_kernel_report(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        if self.op_kernels.is_empty() {
            return s;
        }
        let (mm, att, bw) = (self.matmul_rate().unwrap_or(f64::NAN), self.attention_rate(), self.memory_rate());
        let costs = self.kernel_costs();
        let _ = writeln!(s, "\nlayer 0's ops, each alone on the GPU: measured, roofline at the rates above, time beyond it per launch");
        let _ = writeln!(s, "  {:<12} {:>8}  {:>32}  {:>32}", "", "", self.config, self.small_config);
        let _ = writeln!(
            s,
            "  {:<12} {:>8}  {:>10} {:>10} {:>10}  {:>10} {:>10} {:>10}",
            "op", "launches", "us", "roofline", "beyond/l", "us", "roofline", "beyond/l"
        );
        for k in &self.op_kernels {
            let small = self.small_op_kernels.iter().find(|x| x.kind == k.kind);
            let mut line = format!(
                "  {:<12} {:>8}  {:>10.2} {:>10.2} {:>10.2}",
                k.kind,
                k.launches,
                k.seconds * 1e6,
                k.roofline(mm, att, bw) * 1e6,
                k.beyond_per_launch(mm, att, bw) * 1e6
            );
            if let Some(x) = small {
                let _ = write!(
                    line,
                    "  {:>10.2} {:>10.2} {:>10.2}",
                    x.seconds * 1e6,
                    x.roofline(mm, att, bw) * 1e6,
                    x.beyond_per_launch(mm, att, bw) * 1e6
                );
            }
            if let Some(c) = costs.get(&k.kind) {
                let _ = write!(line, "  fit: {:.2} us per launch, {:.0}% of the bandwidth", c.per_launch.0 * 1e6, 100.0 * c.efficiency);
            }
            let _ = writeln!(s, "{line}");
        }
        let (a, d) = super::ops::in_order_beyond_alone(&self.op_kernels, self.op_sequence);
        let (sa, sd) = super::ops::in_order_beyond_alone(&self.small_op_kernels, self.small_op_sequence);
        let _ = writeln!(
            s,
            "  in step order: {:.2} us against {:.2} alone ({:+.2} per launch); at the small size {:.2} against {:.2} ({:+.2} per launch: sequence_overhead {:.2} us)",
            self.op_sequence * 1e6,
            a * 1e6,
            d * 1e6,
            self.small_op_sequence * 1e6,
            sa * 1e6,
            sd * 1e6,
            self.sequence_overhead() * 1e6
        );
        s
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
        let _ = writeln!(
            s,
            "  each copy queued behind another takes {:.2} us (H2D) and {:.2} us (D2H) beyond its bytes ({} of 1 MiB against one of {} MiB)",
            self.copy_latency.0 * 1e6,
            self.copy_latency.1 * 1e6,
            super::copies::QUEUED_COPIES,
            super::copies::QUEUED_COPIES
        );
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
                sh.layout.m,
                sh.layout.n,
                sh.layout.k,
                if sh.layout.trans_a { "T" } else { "N" },
                if sh.layout.trans_b { "T" } else { "N" },
                match sh.layout.out {
                    MatType::Bf16 => "bf16",
                    MatType::F32 => "f32",
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
        let _ = writeln!(s, "  launch overhead (GPU, per kernel)              {:>22.2} us", self.launch_overhead * 1e6);
        let i = &self.issue;
        let _ = writeln!(
            s,
            "  host issue: kernel / product / copy / event    {:>6.2} / {:.2} / {:.2} / {:.2} us",
            i.kernel.0 * 1e6,
            i.product.0 * 1e6,
            i.copy.0 * 1e6,
            i.event.0 * 1e6
        );
        if let (Some(o), Some(b)) = (&self.in_order_issue, &self.back_to_back_issue) {
            let _ = writeln!(
                s,
                "    layer 0 issued in step order: {:.2} us for {} kernels and {} products ({:.2}x their back-to-back {:.2} / {:.2} us)",
                o.seconds * 1e6,
                o.kernels,
                o.products,
                o.factor(b.kernel.0, b.product.0).unwrap_or(1.0),
                b.kernel.0 * 1e6,
                b.product.0 * 1e6
            );
        }
        let _ =
            writeln!(s, "  a host function between two kernels            {:>22.2} us (host_call_latency)", self.host_call_latency * 1e6);
        let _ = write!(s, "{}", self.op_kernel_report());
        let _ = write!(s, "{}", self.host_op_report());
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
        let _ = writeln!(
            s,
            "host memory\n  pinning {} took {:.2} s as runs pin ({:.2} GB/s), {:.2} s by cuMemHostAlloc ({:.2} GB/s)",
            size_label(self.reserve.pinned),
            self.reserve.pin_seconds,
            gb(self.reserve.pinned as f64 / self.reserve.pin_seconds.max(1e-9)),
            self.reserve.one_piece_seconds,
            gb(self.reserve.pinned as f64 / self.reserve.one_piece_seconds.max(1e-9))
        );
        match self.host_memory {
            Some(m) => {
                let _ = writeln!(
                    s,
                    "  /proc/meminfo: {} in total, {} available; a run may pin {} (the rest is room for the system and the run's own process)",
                    size_label(m.total),
                    size_label(m.available),
                    size_label(m.pinnable())
                );
            }
            None => {
                let _ =
                    writeln!(s, "  /proc/meminfo could not be read: the profile states no host memory (give --host-memory when planning)");
            }
        }
        for w in self.warnings() {
            let _ = writeln!(s, "check: {w}");
        }
        s
    }
}

/// The family of each op in `large` also timed in `small`, fitted to a [`KernelCost`] at `rate`
/// (bytes/s), with `calls(op)` launches per op over `overhead` each (see [`KernelCost::fit`]).
fn fit_families<'a>(
    large: impl IntoIterator<Item = &'a super::ops::OpKernel>,
    small: &[super::ops::OpKernel],
    rate: f64,
    calls: impl Fn(&super::ops::OpKernel) -> u32,
    overhead: Seconds,
) -> std::collections::BTreeMap<String, KernelCost> {
    let at = |k: &super::ops::OpKernel| (k.seconds, k.bytes as f64 / rate);
    large
        .into_iter()
        .filter_map(|l| {
            let s = small.iter().find(|k| k.kind == l.kind)?;
            Some((l.kind.clone(), KernelCost::fit(at(s), at(l), calls(l), overhead)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::products::step_gemms;
    use crate::calibrate::{Copies, SharedRow};
    use models::GptConfig;
    use std::path::Path;

    fn config(name: &str) -> GptConfig {
        GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../models/configs/{name}.ron"))).unwrap()
    }

    fn sample() -> Calibration {
        let cfg = config("gpt2-124m");
        let gemms = step_gemms(&cfg);
        // every product at 500 TFLOP/s, except qkv at 250
        let gemm_rows = gemms
            .into_iter()
            .map(|g| {
                let rate = if g.name == "qkv" { 250e12 } else { 500e12 };
                GemmRow { seconds: g.flops() / rate, issue_seconds: 12e-6, shape: g }
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
            op_kernels: Vec::new(),
            small_config: String::new(),
            small_op_kernels: Vec::new(),
            op_sequence: 0.0,
            small_op_sequence: 0.0,
            host_ops: Vec::new(),
            small_host_ops: Vec::new(),
            copy_latency: (5e-6, 3e-6),
            host_ops_probe: 30e9,
            issue: models::IssueCosts { kernel: Seconds(4e-6), product: Seconds(12e-6), copy: Seconds(5e-6), event: Seconds(1e-6) },
            in_order_issue: None,
            back_to_back_issue: None,
            host_call_latency: 25e-6,
            device_used_at_start: 500 * MIB,
            device_used_after: 1100 * MIB,
            pool_reserved_after: 400 * MIB,
            alloc: AllocProbe { allocations: 16, used_per_alloc: 512, reserved_growth: 2 * MIB, pointer_spacing: 512 },
            reserve: ReserveProbe {
                requested: 1000 * MIB + 1,
                reserved: 1024 * MIB,
                pinned: 4096 * MIB,
                pinned_device: 8 * MIB,
                pin_seconds: 1.0,
                one_piece_seconds: 2.0,
            },
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
            host_memory: Some(HostMemory { total: 128 << 30, available: 120 << 30 }),
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
        assert_eq!((hw.h2d_latency, hw.d2h_latency), (Seconds(5e-6), Seconds(3e-6)));
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
