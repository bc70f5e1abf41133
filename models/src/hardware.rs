//! Hardware profiles (`models/hardware/*.ron`): what the step runs on.

use crate::error::{field_line, ModelError};
use crate::units::{Bytes, BytesPerSecond, FlopsPerSecond, Seconds};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Where a profile's numbers come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Provenance {
    /// Measured on a real device (by `offplan calibrate` or by hand), with what and when.
    Measured(String),
    /// Public figures (data sheets, reviews); not measured here.
    Public(String),
}

/// One GPU and its host link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareProfile {
    pub name: String,
    pub provenance: Provenance,
    /// Device memory in total.
    pub memory: Bytes,
    /// The host's memory in total (None where the profile does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_memory: Option<Bytes>,
    /// Host memory a run may pin for the plan's host copies (pinned blocks, host optimizer
    /// state, staging): the host's memory less what the system and the run's own process need.
    /// None where the profile does not say: plans are then not held to a host limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_pinnable: Option<Bytes>,
    /// How fast the host pins memory (page-locking it for the copy engines), where measured:
    /// a run pins its host copies before the first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_pin_rate: Option<BytesPerSecond>,
    /// Pinned host-to-device copy rate with nothing else on the link.
    pub h2d: BytesPerSecond,
    /// Pinned device-to-host copy rate with nothing else on the link.
    pub d2h: BytesPerSecond,
    /// Host-to-device rate while a device-to-host copy runs at the same time.
    pub h2d_duplex: BytesPerSecond,
    /// Device-to-host rate while a host-to-device copy runs at the same time.
    pub d2h_duplex: BytesPerSecond,
    /// Dense bf16 matrix-product rate (fp32 accumulation) at large shapes.
    pub matmul_flops: FlopsPerSecond,
    /// Rate of the attention kernel (counted causal FLOPs per second).
    pub attention_flops: FlopsPerSecond,
    /// Device memory rate, counting bytes read plus bytes written.
    pub memory_bandwidth: BytesPerSecond,
    /// Time a kernel launch adds beyond its work on the GPU, with the host's launches ahead of
    /// it (back-to-back kernels queued while the stream was held).
    pub launch_overhead: Seconds,
    /// Device memory in use before the step allocates anything: context, modules, library handles.
    pub fixed_overhead: Bytes,
    /// The allocator hands out memory in multiples of this.
    pub alloc_granularity: Bytes,
    /// Host memory rate for host-side work (CPU embedding gather and scatter).
    pub host_memory_bandwidth: BytesPerSecond,
    /// Parameters per second the host's AdamW updates (all cores).
    pub host_adam_params_per_second: f64,
    /// Room the planner's solver leaves beyond a plan's live bytes: this much, plus
    /// `pool_slack_fraction` of the live peak (the arena's layout can exceed the live peak; the
    /// device memory outside the pool varies a little). Read off run records. 0 when absent.
    #[serde(default)]
    pub pool_slack: Bytes,
    #[serde(default)]
    pub pool_slack_fraction: f64,
    /// The pool reserves device memory for one large allocation (the executor's arena) in
    /// multiples of this (32 MiB on the H100). 0 when absent: no rounding.
    #[serde(default)]
    pub pool_reserve_granularity: Bytes,
    /// Device memory the driver takes per byte of pinned host memory: the page tables that map
    /// it for the copy engines (8 bytes per 4 KiB page is 1/512). 0 when absent.
    #[serde(default)]
    pub pinned_device_fraction: f64,
    /// Time one host AdamW call takes beyond its parameters at `host_adam_params_per_second`
    /// (waking the threads, splitting the work): it matters for small owners. 0 when absent.
    #[serde(default)]
    pub host_adam_call_overhead: Seconds,
    /// How host work and copies slow each other (they share host memory). None when absent:
    /// they do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_sharing: Option<HostSharing>,
    /// The links between GPUs that collectives run over (tensor, pipeline and data
    /// parallelism; `models::parallel`). None when absent: one GPU, or a machine whose links
    /// the profile does not know (the collectives' bytes can be counted, not timed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interconnect: Option<Interconnect>,
    /// The host's time to issue each kind of work from the executor's one issuing thread: no
    /// action starts on its lane before the host has issued it and every action before it, so a
    /// step of small kernels runs at the host's pace. None when absent: issuing takes no time
    /// (profiles calibrated before it was measured, whose `launch_overhead` was timed with the
    /// host issuing and so holds the host's pace for small kernels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<IssueCosts>,
    /// Memory-bound kernels as calibrate timed them, by op family (`Ln1Bwd`, `GradNorm`, ...):
    /// each launch's fixed time and the share of `memory_bandwidth` the kernel reaches. A
    /// family not listed costs its bytes at `memory_bandwidth` plus `launch_overhead` per
    /// launch. Products and attention are priced by their rates (which a run's probe measures
    /// at the step's shapes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kernels: BTreeMap<String, KernelCost>,
    /// Time every launch adds when it follows a different kernel, as in a step, beyond what it
    /// costs timed after itself (calibrate runs layer 0's ops in step order against each alone,
    /// at a small micro-batch where it shows). 0 when absent.
    #[serde(default, skip_serializing_if = "Seconds::is_zero")]
    pub sequence_overhead: Seconds,
    /// The host's memory-bound ops (`Embed`, `EmbedBwd`, its table zeroing `EmbedZero`,
    /// `GradNorm` of a gradient made on the host) as calibrate timed the executor's own host
    /// code: each call's fixed time and the share of `host_memory_bandwidth` it reaches. A family not listed costs its bytes at
    /// `host_memory_bandwidth`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_kernels: BTreeMap<String, KernelCost>,
    /// The rate a run's probe measures for the host's memory-bound ops (`ProbeRates::host_ops`),
    /// as calibrate measured it the same way beside `host_kernels`: a run replayed under its
    /// probes scales the host's memory rate by its probe against this. None when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ops_probe: Option<BytesPerSecond>,
    /// Time each copy takes beyond its bytes at the rate, host to device and device to host
    /// (calibrate: copies of 1 MiB queued back to back against one of their bytes). 0 when
    /// absent.
    #[serde(default, skip_serializing_if = "Seconds::is_zero")]
    pub h2d_latency: Seconds,
    #[serde(default, skip_serializing_if = "Seconds::is_zero")]
    pub d2h_latency: Seconds,
    /// What one host op costs beyond its own work: the executor runs each as a host function
    /// on the host lane's stream, and the streams that wait on it see the driver's hand-off
    /// (calibrate: a host function doing nothing between two kernels that wait on it, against
    /// the two kernels alone). 0 when absent.
    #[serde(default, skip_serializing_if = "Seconds::is_zero")]
    pub host_call_latency: Seconds,
}

/// The host op families a profile's `host_kernels` may price.
pub const HOST_KERNEL_FAMILIES: [&str; 4] = ["Embed", "EmbedBwd", EMBED_ZERO, "GradNorm"];

/// The family of the untied token table's zeroing inside the CPU embedding's backward. Where a
/// profile prices it, `EmbedBwd` prices the rest of that op (its scatter of the step's rows);
/// where not, `EmbedBwd` prices the whole op (profiles calibrated before the two were timed apart).
pub const EMBED_ZERO: &str = "EmbedZero";

/// A memory-bound kernel's cost: `per_launch` plus its bytes at `efficiency` x the profile's
/// memory bandwidth.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelCost {
    pub per_launch: Seconds,
    pub efficiency: f64,
}

impl KernelCost {
    /// Fits the cost to one op timed at two sizes: `small` and `large` are (seconds, seconds
    /// of its bytes at the profile's bandwidth), `launches` per op. Two sizes give the fixed
    /// part and the rate; sizes too close together (an optimizer's update, whose bytes do not
    /// grow with the micro-batch) give the rate only, over `launch_overhead` per launch.
    pub fn fit(small: (f64, f64), large: (f64, f64), launches: u32, launch_overhead: Seconds) -> Option<KernelCost> {
        let l = f64::from(launches.max(1));
        let ((ts, rs), (tl, rl)) = (small, large);
        if ![ts, rs, tl, rl].iter().all(|v| v.is_finite() && *v > 0.0) {
            return None;
        }
        let rate_only = |t: f64, r: f64| {
            let work = (t - l * launch_overhead.0).max(0.5 * t);
            KernelCost { per_launch: launch_overhead, efficiency: r / work }
        };
        let cost = if rl > 1.5 * rs {
            let inverse = (tl - ts) / (rl - rs);
            let fixed = (ts - rs * inverse) / l;
            if inverse <= 0.0 || fixed < 0.0 {
                rate_only(tl, rl)
            } else {
                KernelCost { per_launch: Seconds(fixed), efficiency: 1.0 / inverse }
            }
        } else {
            rate_only(tl, rl)
        };
        Some(KernelCost { efficiency: cost.efficiency.clamp(0.01, 2.0), ..cost })
    }
}

/// Host time to issue one piece of work on a stream (`offplan calibrate` times each with the
/// stream held, so the host never waits for the GPU).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueCosts {
    /// One kernel launch (cuLaunchKernel with the executor's arguments).
    pub kernel: Seconds,
    /// One cuBLASLt product (its descriptors, the cached algorithm, the launch).
    pub product: Seconds,
    /// One asynchronous copy between pinned host memory and the device.
    pub copy: Seconds,
    /// Recording an event on a stream, or a stream waiting on one; host work's launch.
    pub event: Seconds,
}

impl IssueCosts {
    fn mean(costs: &[IssueCosts]) -> Option<IssueCosts> {
        let n = costs.len() as f64;
        let m = |f: fn(&IssueCosts) -> Seconds| Seconds(costs.iter().map(|c| f(c).0).sum::<f64>() / n);
        (!costs.is_empty()).then(|| IssueCosts {
            kernel: m(|c| c.kernel),
            product: m(|c| c.product),
            copy: m(|c| c.copy),
            event: m(|c| c.event),
        })
    }
}

/// The GPU-to-GPU links of a machine of `nodes` nodes of `gpus_per_node` GPUs each. Not
/// measured by `offplan calibrate` (it sees one GPU): the shipped figures are public (NVIDIA's
/// data sheets, NCCL's maintainers' numbers), each named in the profile's comments.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interconnect {
    /// GPUs in one node (8 on an HGX board), at least 1.
    pub gpus_per_node: u32,
    /// Between the GPUs of one node (NVLink through NVSwitch on an HGX board; PCIe elsewhere).
    pub intra_node: LinkRate,
    /// Between nodes (InfiniBand, RoCE); None: a single node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_node: Option<LinkRate>,
    /// Nodes in the machine, at least 1: a grid of more than `gpus_per_node * nodes` ranks
    /// does not fit it.
    pub nodes: u32,
    /// Whether collectives and host copies share a link: false where collectives go over
    /// NVLink (the host link is PCIe), true where NCCL goes over PCIe (cards without NVLink).
    /// Nothing reads it yet beside `offplan inspect`; the multi-rank simulator will.
    pub collectives_share_host_link: bool,
}

/// One link's rate for collectives.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRate {
    /// Per GPU, one direction: the bus bandwidth as NCCL's tests report it (`busbw`), so
    /// that the ring formulas of `models::parallel` give NCCL's times.
    pub bandwidth: BytesPerSecond,
    /// Time each step of a ring (or one send) adds beyond its bytes.
    pub latency: Seconds,
}

impl Interconnect {
    /// GPUs in the machine: `gpus_per_node * nodes`.
    pub fn gpus(&self) -> u64 {
        self.gpus_per_node as u64 * self.nodes as u64
    }

    /// The link a group runs over: `intra_node` when all its ranks are in one node, else
    /// `inter_node` (the slowest link of the ring; `intra_node` where the profile names none).
    pub fn link(&self, within_node: bool) -> LinkRate {
        if within_node {
            self.intra_node
        } else {
            self.inter_node.unwrap_or(self.intra_node)
        }
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.gpus_per_node == 0 {
            return Err(("gpus_per_node", "`interconnect.gpus_per_node` must be at least 1".into()));
        }
        if self.nodes == 0 {
            return Err(("nodes", "`interconnect.nodes` must be at least 1".into()));
        }
        let links = [("intra_node", Some(self.intra_node)), ("inter_node", self.inter_node)];
        for (field, link) in links {
            let Some(l) = link else { continue };
            let bw = l.bandwidth.0;
            if !(bw.is_finite() && bw > 0.0) {
                return Err((field, format!("`interconnect.{field}.bandwidth` must be a positive rate, got {bw}")));
            }
            if !(1e6..=1e13).contains(&bw) {
                return Err((
                    field,
                    format!("`interconnect.{field}.bandwidth` is {bw:e}, outside [1e6, 1e13] bytes per second: check its unit"),
                ));
            }
            let lat = l.latency.0;
            if !(lat.is_finite() && (0.0..1e-2).contains(&lat)) {
                return Err((field, format!("`interconnect.{field}.latency` must be in [0, 0.01) s, got {lat}")));
            }
        }
        if self.nodes > 1 && self.inter_node.is_none() {
            return Err((
                "nodes",
                format!("`interconnect.nodes` is {} but `inter_node` is absent: give the link between nodes", self.nodes),
            ));
        }
        Ok(())
    }
}

/// The fractions of their speed alone that host work and copies keep while host work runs
/// beside copies (measured by `offplan calibrate`: host AdamW on pinned memory beside pinned
/// copies). Copies without host work run at the link rates (`h2d`, `h2d_duplex`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSharing {
    /// Host work beside host-to-device copies only.
    pub beside_h2d: Shares,
    /// Host work beside device-to-host copies only.
    pub beside_d2h: Shares,
    /// Host work beside copies both ways (copy shares relative to the duplex rates).
    pub beside_both: Shares,
}

/// Speed kept by each party, 1 = as fast as without host work beside it (or, for host work,
/// without copies). A direction that is idle keeps 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shares {
    pub host: f64,
    pub h2d: f64,
    pub d2h: f64,
}

impl Shares {
    pub const FULL: Shares = Shares { host: 1.0, h2d: 1.0, d2h: 1.0 };
}

impl HostSharing {
    /// Each share's mean over `all` (None for none).
    fn mean(all: &[HostSharing]) -> Option<HostSharing> {
        if all.is_empty() {
            return None;
        }
        let n = all.len() as f64;
        let shares = |f: fn(&HostSharing) -> Shares| {
            let m = |g: fn(&Shares) -> f64| all.iter().map(|h| g(&f(h))).sum::<f64>() / n;
            Shares { host: m(|s| s.host), h2d: m(|s| s.h2d), d2h: m(|s| s.d2h) }
        };
        Some(HostSharing {
            beside_h2d: shares(|h| h.beside_h2d),
            beside_d2h: shares(|h| h.beside_d2h),
            beside_both: shares(|h| h.beside_both),
        })
    }

    /// What each keeps with host work running (`host`) and copies each way busy or not.
    pub fn shares(&self, host: bool, h2d: bool, d2h: bool) -> Shares {
        match (host, h2d, d2h) {
            (false, _, _) | (true, false, false) => Shares::FULL,
            (true, true, false) => self.beside_h2d,
            (true, false, true) => self.beside_d2h,
            (true, true, true) => self.beside_both,
        }
    }
}

/// The rates a step depends on that vary by machine and by minute, as one run measured them
/// with short probes of its own before its first step or after its last (`offplan run`'s
/// record keeps both): each copy direction alone and both at once, the step's products
/// (FLOP-weighted over one step), its attention (forward and backward), host AdamW on pinned
/// memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeRates {
    pub h2d: BytesPerSecond,
    pub d2h: BytesPerSecond,
    pub h2d_duplex: BytesPerSecond,
    pub d2h_duplex: BytesPerSecond,
    pub matmul_flops: FlopsPerSecond,
    pub attention_flops: FlopsPerSecond,
    pub host_adam_params_per_second: f64,
    /// The host's memory-bound op rate: the CPU embedding's gradient norm over a fixed buffer,
    /// the host's threads idle before each call (bytes/s); None in records written before runs
    /// probed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ops: Option<f64>,
    /// The host's issue costs; None in records written before runs probed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<IssueCosts>,
    /// The host lane's hand-off (`HardwareProfile::host_call_latency`), seconds; None in
    /// records written before runs probed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_call: Option<f64>,
    /// Host AdamW beside pinned copies (`HardwareProfile::host_sharing`): one H200 machine's
    /// calibrations measured the host-to-device share beside host work at 0.67 to 0.77 hours
    /// apart, which moved a copy-bound plan's step by 6%. None in records written before runs
    /// probed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_sharing: Option<HostSharing>,
    /// What the probes took.
    pub seconds: f64,
}

/// A run's probes: before its first step and after its last (None where a probe could not
/// run, e.g. with too little device memory left beside the step).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunProbes {
    pub start: Option<ProbeRates>,
    pub end: Option<ProbeRates>,
}

impl RunProbes {
    /// The mean of the probes there are.
    pub fn mean(&self) -> Option<ProbeRates> {
        ProbeRates::mean(&[self.start.as_ref(), self.end.as_ref()].into_iter().flatten().collect::<Vec<_>>())
    }

    /// How much the machine changed between the two probes (None without both).
    pub fn drift(&self) -> Option<f64> {
        Some(self.start.as_ref()?.largest_change(self.end.as_ref()?))
    }
}

impl ProbeRates {
    /// The mean of each rate over `probes` (None for none).
    pub fn mean(probes: &[&ProbeRates]) -> Option<ProbeRates> {
        let n = probes.len() as f64;
        if probes.is_empty() {
            return None;
        }
        let m = |f: &dyn Fn(&ProbeRates) -> f64| probes.iter().map(|p| f(p)).sum::<f64>() / n;
        Some(ProbeRates {
            h2d: BytesPerSecond(m(&|p| p.h2d.0)),
            d2h: BytesPerSecond(m(&|p| p.d2h.0)),
            h2d_duplex: BytesPerSecond(m(&|p| p.h2d_duplex.0)),
            d2h_duplex: BytesPerSecond(m(&|p| p.d2h_duplex.0)),
            matmul_flops: FlopsPerSecond(m(&|p| p.matmul_flops.0)),
            attention_flops: FlopsPerSecond(m(&|p| p.attention_flops.0)),
            host_adam_params_per_second: m(&|p| p.host_adam_params_per_second),
            host_ops: {
                let v: Vec<f64> = probes.iter().filter_map(|p| p.host_ops).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            },
            issue: IssueCosts::mean(&probes.iter().filter_map(|p| p.issue).collect::<Vec<_>>()),
            host_call: {
                let v: Vec<f64> = probes.iter().filter_map(|p| p.host_call).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            },
            host_sharing: HostSharing::mean(&probes.iter().filter_map(|p| p.host_sharing).collect::<Vec<_>>()),
            seconds: m(&|p| p.seconds),
        })
    }

    /// The largest relative difference of any rate between `self` and `other` (of the larger):
    /// how much the machine changed between two probes.
    pub fn largest_change(&self, other: &ProbeRates) -> f64 {
        let pairs = [
            (self.h2d.0, other.h2d.0),
            (self.d2h.0, other.d2h.0),
            (self.h2d_duplex.0, other.h2d_duplex.0),
            (self.d2h_duplex.0, other.d2h_duplex.0),
            (self.matmul_flops.0, other.matmul_flops.0),
            (self.attention_flops.0, other.attention_flops.0),
            (self.host_adam_params_per_second, other.host_adam_params_per_second),
        ];
        let host_ops = match (self.host_ops, other.host_ops) {
            (Some(a), Some(b)) => vec![(a, b)],
            _ => Vec::new(),
        };
        let issue = match (self.issue, other.issue) {
            (Some(a), Some(b)) => vec![(a.kernel.0, b.kernel.0), (a.product.0, b.product.0), (a.copy.0, b.copy.0), (a.event.0, b.event.0)],
            _ => Vec::new(),
        };
        let pairs = pairs.iter().chain(&issue).chain(&host_ops);
        pairs.map(|(a, b)| (a - b).abs() / a.max(*b).max(f64::MIN_POSITIVE)).fold(0.0, f64::max)
    }
}

impl HardwareProfile {
    /// This profile with the rates a run probed in place of its own: the simulator replays the
    /// run under what its machine did at the time.
    pub fn with_probed(&self, p: &ProbeRates) -> HardwareProfile {
        HardwareProfile {
            h2d: p.h2d,
            d2h: p.d2h,
            h2d_duplex: p.h2d_duplex,
            d2h_duplex: p.d2h_duplex,
            matmul_flops: p.matmul_flops,
            attention_flops: p.attention_flops,
            host_adam_params_per_second: p.host_adam_params_per_second,
            // The host ops' machine: the host's memory rate as fast, against calibrate's
            // measurement the same way, as the run's probe found it. Over five H200 record sets
            // (runs 30-34) replayed under two calibrations, one taken while its host ran slow,
            // it brought the CPU embedding's mean step error from 9.0% to 5.9%.
            host_memory_bandwidth: match (p.host_ops, self.host_ops_probe) {
                (Some(now), Some(then)) if now > 0.0 && then.0 > 0.0 => BytesPerSecond(self.host_memory_bandwidth.0 * now / then.0),
                _ => self.host_memory_bandwidth,
            },
            // A profile without issue costs timed its launch overhead with the host's pace in
            // it: the probe's issue costs would count that pace twice.
            issue: self.issue.and(p.issue).or(self.issue),
            host_call_latency: p.host_call.map(Seconds).unwrap_or(self.host_call_latency),
            host_sharing: p.host_sharing.or(self.host_sharing),
            ..self.clone()
        }
    }

    /// The largest pool peak a plan may reach under `budget`: what is left after the fixed
    /// overhead and the room for the pool's fragmentation.
    pub fn pool_capacity(&self, budget: Bytes) -> Bytes {
        let left = budget.saturating_sub(self.fixed_overhead).saturating_sub(self.pool_slack);
        Bytes((left.0 as f64 / (1.0 + self.pool_slack_fraction)).floor() as u64)
    }

    /// Device memory a run holds: the fixed overhead, `tensors` bytes as the pool reserves them,
    /// and the device memory that maps `pinned` bytes of pinned host memory.
    pub fn device_bytes(&self, tensors: Bytes, pinned: Bytes) -> Bytes {
        self.fixed_overhead + self.pool_reserved(tensors) + self.pinned_mapping(pinned)
    }

    /// Device memory that maps `pinned` bytes of pinned host memory.
    pub fn pinned_mapping(&self, pinned: Bytes) -> Bytes {
        Bytes((pinned.0 as f64 * self.pinned_device_fraction).ceil() as u64)
    }

    /// What the pool reserves for one allocation of `bytes`: rounded up to its reservation unit.
    pub fn pool_reserved(&self, bytes: Bytes) -> Bytes {
        let g = self.pool_reserve_granularity.0.max(1);
        Bytes(bytes.0.div_ceil(g) * g)
    }

    /// The budget a pool peak of `peak` needs: the inverse of [`Self::pool_capacity`].
    pub fn budget_for(&self, peak: Bytes) -> Bytes {
        peak + self.fixed_overhead + self.pool_slack + Bytes((peak.0 as f64 * self.pool_slack_fraction).ceil() as u64)
    }

    pub fn load(path: &Path) -> Result<HardwareProfile, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<HardwareProfile, ModelError> {
        let hw: HardwareProfile = ron::from_str(text).map_err(|e| ModelError::parse(path, e, "models/hardware/"))?;
        hw.validate().map_err(|(field, message)| ModelError::Invalid {
            path: path.to_path_buf(),
            line: field_line(text, field),
            message,
        })?;
        Ok(hw)
    }

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let rates = [
            ("h2d", self.h2d.0),
            ("d2h", self.d2h.0),
            ("h2d_duplex", self.h2d_duplex.0),
            ("d2h_duplex", self.d2h_duplex.0),
            ("matmul_flops", self.matmul_flops.0),
            ("attention_flops", self.attention_flops.0),
            ("memory_bandwidth", self.memory_bandwidth.0),
            ("host_memory_bandwidth", self.host_memory_bandwidth.0),
            ("host_adam_params_per_second", self.host_adam_params_per_second),
        ];
        for (field, v) in rates {
            if !(v.is_finite() && v > 0.0) {
                return Err((field, format!("`{field}` must be a positive rate, got {v}")));
            }
        }
        // Rates far outside any machine's would make every time infinite or zero: a typo.
        let ranges = [
            ("h2d", self.h2d.0, 1e6, 1e13),
            ("d2h", self.d2h.0, 1e6, 1e13),
            ("h2d_duplex", self.h2d_duplex.0, 1e6, 1e13),
            ("d2h_duplex", self.d2h_duplex.0, 1e6, 1e13),
            ("matmul_flops", self.matmul_flops.0, 1e9, 1e18),
            ("attention_flops", self.attention_flops.0, 1e9, 1e18),
            ("memory_bandwidth", self.memory_bandwidth.0, 1e8, 1e15),
            ("host_memory_bandwidth", self.host_memory_bandwidth.0, 1e7, 1e14),
            ("host_adam_params_per_second", self.host_adam_params_per_second, 1e3, 1e14),
        ];
        for (field, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return Err((
                    field,
                    format!("`{field}` is {v:e}, outside [{lo:e}, {hi:e}] per second: check its unit (bytes or FLOPs per second)"),
                ));
            }
        }
        if let Some(r) = self.host_pin_rate {
            if !(r.0.is_finite() && (1e6..=1e13).contains(&r.0)) {
                return Err(("host_pin_rate", format!("`host_pin_rate` is {:e}, outside [1e6, 1e13] bytes per second", r.0)));
            }
        }
        if !(self.host_adam_call_overhead.0.is_finite() && (0.0..1.0).contains(&self.host_adam_call_overhead.0)) {
            return Err((
                "host_adam_call_overhead",
                format!("`host_adam_call_overhead` must be in [0, 1) s, got {}", self.host_adam_call_overhead.0),
            ));
        }
        if let Some(h) = &self.host_sharing {
            for (which, sh) in [("beside_h2d", h.beside_h2d), ("beside_d2h", h.beside_d2h), ("beside_both", h.beside_both)] {
                for v in [sh.host, sh.h2d, sh.d2h] {
                    if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                        return Err(("host_sharing", format!("`host_sharing.{which}`: each share must be in (0, 1], got {v}")));
                    }
                }
            }
        }
        if let Some(i) = &self.interconnect {
            i.validate()?;
        }
        for (family, k) in &self.kernels {
            if !crate::program::OpKind::FAMILIES.contains(&family.as_str()) {
                return Err((
                    "kernels",
                    format!("`kernels` names `{family}`, which is no op family (one of {})", crate::program::OpKind::FAMILIES.join(", ")),
                ));
            }
            if !(k.efficiency.is_finite() && k.efficiency > 0.0 && k.efficiency <= 2.0) {
                return Err(("kernels", format!("`kernels.{family}.efficiency` must be in (0, 2], got {}", k.efficiency)));
            }
            if !(k.per_launch.0.is_finite() && (0.0..1e-3).contains(&k.per_launch.0)) {
                return Err(("kernels", format!("`kernels.{family}.per_launch` must be in [0, 1 ms), got {} s", k.per_launch.0)));
            }
        }
        for (family, k) in &self.host_kernels {
            if !HOST_KERNEL_FAMILIES.contains(&family.as_str()) {
                return Err((
                    "host_kernels",
                    format!("`host_kernels` names `{family}`, which is no host op family (one of {})", HOST_KERNEL_FAMILIES.join(", ")),
                ));
            }
            if !(k.efficiency.is_finite() && k.efficiency > 0.0 && k.efficiency <= 2.0) {
                return Err(("host_kernels", format!("`host_kernels.{family}.efficiency` must be in (0, 2], got {}", k.efficiency)));
            }
            if !(k.per_launch.0.is_finite() && (0.0..1e-2).contains(&k.per_launch.0)) {
                return Err((
                    "host_kernels",
                    format!("`host_kernels.{family}.per_launch` must be in [0, 10 ms), got {} s", k.per_launch.0),
                ));
            }
        }
        if let Some(r) = self.host_ops_probe {
            if !(r.0.is_finite() && r.0 > 0.0) {
                return Err(("host_ops_probe", format!("`host_ops_probe` must be a positive rate, got {} B/s", r.0)));
            }
        }
        for (field, v) in
            [("h2d_latency", self.h2d_latency), ("d2h_latency", self.d2h_latency), ("host_call_latency", self.host_call_latency)]
        {
            if !(v.0.is_finite() && (0.0..1e-3).contains(&v.0)) {
                return Err((field, format!("`{field}` must be in [0, 1 ms), got {} s", v.0)));
            }
        }
        if !(self.sequence_overhead.0.is_finite() && (0.0..1e-4).contains(&self.sequence_overhead.0)) {
            return Err(("sequence_overhead", format!("`sequence_overhead` must be in [0, 100 us), got {} s", self.sequence_overhead.0)));
        }
        if self.memory.0 == 0 {
            return Err(("memory", "`memory` must be positive".into()));
        }
        if self.host_memory.is_some_and(|m| m.0 == 0) {
            return Err(("host_memory", "`host_memory` must be positive".into()));
        }
        if let Some(p) = self.host_pinnable {
            if p.0 == 0 {
                return Err(("host_pinnable", "`host_pinnable` must be positive".into()));
            }
            if let Some(m) = self.host_memory.filter(|m| p > *m) {
                return Err(("host_pinnable", format!("`host_pinnable` ({p}) exceeds `host_memory` ({m})")));
            }
        }
        if self.fixed_overhead >= self.memory {
            return Err(("fixed_overhead", "`fixed_overhead` must be below `memory`".into()));
        }
        if !(self.pool_slack_fraction.is_finite() && (0.0..1.0).contains(&self.pool_slack_fraction)) {
            return Err(("pool_slack_fraction", format!("`pool_slack_fraction` must be in [0, 1), got {}", self.pool_slack_fraction)));
        }
        if !(self.pinned_device_fraction.is_finite() && (0.0..0.5).contains(&self.pinned_device_fraction)) {
            return Err((
                "pinned_device_fraction",
                format!("`pinned_device_fraction` must be in [0, 0.5), got {}", self.pinned_device_fraction),
            ));
        }
        if !(self.launch_overhead.0.is_finite() && (0.0..1e-2).contains(&self.launch_overhead.0)) {
            return Err((
                "launch_overhead",
                format!("`launch_overhead` must be a finite number of seconds in [0, 0.01), got {}", self.launch_overhead.0),
            ));
        }
        if self.alloc_granularity.0 == 0 || self.alloc_granularity.0 > (1 << 30) {
            return Err(("alloc_granularity", format!("`alloc_granularity` must be from 1 byte to 1 GiB, got {}", self.alloc_granularity)));
        }
        if self.pool_reserve_granularity.0 > (1 << 30) {
            return Err((
                "pool_reserve_granularity",
                format!("`pool_reserve_granularity` must be at most 1 GiB, got {}", self.pool_reserve_granularity),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_capacity_and_budget_for_are_inverse_and_leave_the_slack() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware");
        let mut hw = HardwareProfile::load(&dir.join("h100-sxm.ron")).unwrap();
        hw.pool_slack = Bytes::mib(256.0);
        hw.pool_slack_fraction = 0.05;
        let budget = Bytes::gib(24.0);
        let cap = hw.pool_capacity(budget);
        assert!(hw.budget_for(cap) <= budget, "the capacity fits the budget");
        assert!(hw.budget_for(cap + Bytes(64)) > budget, "and is the largest that does");
        let room = budget.0 - hw.fixed_overhead.0 - cap.0;
        assert!(room >= Bytes::mib(256.0).0 + cap.0 / 20, "slack of {room} bytes left");
        hw.pool_slack = Bytes::ZERO;
        hw.pool_slack_fraction = 0.0;
        assert_eq!(hw.pool_capacity(budget), budget.saturating_sub(hw.fixed_overhead));
    }

    #[test]
    fn a_kernel_cost_fitted_at_two_sizes_gives_both_back() {
        // 3 launches of 4 us each, and the bytes at half the bandwidth.
        let t = |r: f64| 3.0 * 4e-6 + r / 0.5;
        let c = KernelCost::fit((t(1e-6), 1e-6), (t(40e-6), 40e-6), 3, Seconds(1.6e-6)).unwrap();
        assert!((c.per_launch.0 - 4e-6).abs() < 1e-12 && (c.efficiency - 0.5).abs() < 1e-9, "{c:?}");
        // One size (an update's bytes do not grow with the batch): the rate over the launch overhead.
        let c = KernelCost::fit((t(40e-6), 40e-6), (t(40e-6), 40e-6), 3, Seconds(4e-6)).unwrap();
        assert_eq!(c.per_launch, Seconds(4e-6));
        assert!((c.efficiency - 0.5).abs() < 1e-9);
        // A large op faster than its small one fits no fixed part: the rate only.
        let c = KernelCost::fit((50e-6, 1e-6), (40e-6, 40e-6), 1, Seconds(2e-6)).unwrap();
        assert_eq!(c.per_launch, Seconds(2e-6));
        assert!(KernelCost::fit((0.0, 1e-6), (1e-5, 1e-5), 1, Seconds(2e-6)).is_none());
    }

    #[test]
    fn a_probe_of_the_host_ops_scales_the_host_memory_rate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware");
        let mut hw = HardwareProfile::load(&dir.join("h100-sxm.ron")).unwrap();
        let p = ProbeRates {
            h2d: hw.h2d,
            d2h: hw.d2h,
            h2d_duplex: hw.h2d_duplex,
            d2h_duplex: hw.d2h_duplex,
            matmul_flops: hw.matmul_flops,
            attention_flops: hw.attention_flops,
            host_adam_params_per_second: hw.host_adam_params_per_second,
            host_ops: Some(30e9),
            issue: None,
            host_call: None,
            host_sharing: None,
            seconds: 0.5,
        };
        // Without calibrate's own measurement there is nothing to scale against.
        assert_eq!(hw.with_probed(&p).host_memory_bandwidth, hw.host_memory_bandwidth);
        hw.host_ops_probe = Some(BytesPerSecond(40e9));
        let probed = hw.with_probed(&p);
        assert!((probed.host_memory_bandwidth.0 - hw.host_memory_bandwidth.0 * 0.75).abs() < 1.0);
        // It counts in how much the machine moved between two probes.
        let slower = ProbeRates { host_ops: Some(15e9), ..p.clone() };
        assert!((p.largest_change(&slower) - 0.5).abs() < 1e-12);
        hw.host_ops_probe = Some(BytesPerSecond(0.0));
        assert_eq!(hw.validate().unwrap_err().0, "host_ops_probe");
        // Probed host sharing replaces the profile's; two probes replay at their mean.
        let shares = |x: f64| Shares { host: x, h2d: x, d2h: 1.0 };
        let sharing = |x: f64| HostSharing { beside_h2d: shares(x), beside_d2h: shares(x), beside_both: shares(x) };
        let (a, b) =
            (ProbeRates { host_sharing: Some(sharing(0.6)), ..p.clone() }, ProbeRates { host_sharing: Some(sharing(0.8)), ..p.clone() });
        assert_eq!(hw.with_probed(&a).host_sharing, Some(sharing(0.6)));
        assert_eq!(hw.with_probed(&p).host_sharing, hw.host_sharing, "a record without it keeps the profile's");
        let mean = RunProbes { start: Some(a), end: Some(b) }.mean().unwrap().host_sharing.unwrap();
        assert!((mean.beside_both.h2d - 0.7).abs() < 1e-12 && mean.beside_both.d2h == 1.0);
    }

    #[test]
    fn a_profile_names_only_op_families_in_its_kernels() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware");
        let mut hw = HardwareProfile::load(&dir.join("h100-sxm.ron")).unwrap();
        hw.kernels.insert("Ln1Bwd".into(), KernelCost { per_launch: Seconds(4e-6), efficiency: 0.5 });
        hw.validate().unwrap();
        hw.kernels.insert("LayerNorm".into(), KernelCost { per_launch: Seconds(4e-6), efficiency: 0.5 });
        let (field, m) = hw.validate().unwrap_err();
        assert_eq!(field, "kernels");
        assert!(m.contains("LayerNorm") && m.contains("Ln1Bwd"), "{m}");
        hw.kernels.remove("LayerNorm");
        hw.kernels.insert("Gelu".into(), KernelCost { per_launch: Seconds(4e-6), efficiency: 0.0 });
        assert!(hw.validate().unwrap_err().1.contains("efficiency"));
        hw.kernels.remove("Gelu");
        // Host ops: only the CPU embedding's families; the sequence overhead in range.
        hw.host_kernels.insert("GradNorm".into(), KernelCost { per_launch: Seconds(2e-5), efficiency: 0.6 });
        hw.validate().unwrap();
        hw.host_kernels.insert("Adam".into(), KernelCost { per_launch: Seconds(2e-5), efficiency: 0.6 });
        assert_eq!(hw.validate().unwrap_err().0, "host_kernels");
        hw.host_kernels.remove("Adam");
        hw.sequence_overhead = Seconds(1e-3);
        assert_eq!(hw.validate().unwrap_err().0, "sequence_overhead");
    }

    #[test]
    fn every_family_is_named() {
        use crate::program::OpKind;
        let p =
            crate::Program::build(&crate::GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/gpt2-124m.ron")).unwrap());
        for o in &p.ops {
            assert!(OpKind::FAMILIES.contains(&o.kind.family()), "{}", o.kind.family());
        }
    }

    #[test]
    fn shipped_profiles_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "ron") {
                HardwareProfile::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 3);
    }

    /// The HGX profiles carry their (public) interconnect; the others load without one.
    #[test]
    fn shipped_hgx_profiles_have_an_interconnect() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware");
        for name in ["h100-sxm", "h200"] {
            let hw = HardwareProfile::load(&dir.join(format!("{name}.ron"))).unwrap();
            let i = hw.interconnect.unwrap_or_else(|| panic!("{name} has no interconnect"));
            assert_eq!((i.gpus_per_node, i.nodes, i.gpus()), (8, 1, 8), "{name}");
            assert_eq!(i.intra_node.bandwidth, BytesPerSecond(370e9), "{name}: NCCL's ring busbw over NVLink 4");
            assert_eq!(i.inter_node.unwrap().bandwidth, BytesPerSecond(50e9), "{name}: 400 Gb/s per GPU");
            assert!(!i.collectives_share_host_link);
            assert_eq!(i.link(true), i.intra_node);
            assert_eq!(i.link(false), i.inter_node.unwrap());
        }
        for name in ["rtx-4090", "rtx-5090"] {
            assert!(HardwareProfile::load(&dir.join(format!("{name}.ron"))).unwrap().interconnect.is_none());
        }
    }

    /// A bad interconnect names its field and line.
    #[test]
    fn bad_interconnects_name_the_field_and_line() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware/h100-sxm.ron");
        let good = std::fs::read_to_string(&path).unwrap();
        let line_of = |s: &str| good.lines().position(|l| l.trim_start().starts_with(s)).unwrap() + 1;
        let cases = [
            ("gpus_per_node: 8", "gpus_per_node: 0", "gpus_per_node", "at least 1"),
            ("nodes: 1", "nodes: 0", "nodes", "at least 1"),
            ("bandwidth: 370e9", "bandwidth: -1.0", "intra_node", "positive rate"),
            ("bandwidth: 50e9", "bandwidth: 50.0", "inter_node", "outside"),
            ("latency: 3.4e-6", "latency: 1.0", "intra_node", "latency"),
        ];
        for (from, to, field, says) in cases {
            let text = good.replace(from, to);
            assert_ne!(text, good, "{from}");
            let e = HardwareProfile::parse(&text, &path).unwrap_err();
            let ModelError::Invalid { line, message, .. } = &e else { panic!("{e}") };
            assert_eq!(*line, line_of(&format!("{field}:")), "{to}: {e}");
            assert!(message.contains(says), "{to}: {e}");
        }
        // Several nodes need the link between them.
        let text = good.replace("nodes: 1", "nodes: 8");
        let hw = HardwareProfile::parse(&text, &path).unwrap();
        assert_eq!(hw.interconnect.unwrap().gpus(), 64);
        let mut hw = hw;
        hw.interconnect.as_mut().unwrap().inter_node = None;
        let (field, m) = hw.validate().unwrap_err();
        assert!(field == "nodes" && m.contains("inter_node"), "{m}");
        // An unknown field inside the section is refused, like elsewhere in the profile.
        let e = HardwareProfile::parse(&good.replace("nodes: 1,", "nodes: 1, nvlink: 4,"), &path).unwrap_err();
        assert!(e.to_string().contains("nvlink"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any rates and sizes: validation answers without panicking, and a profile it accepts
        /// gives finite, positive times.
        #[test]
        fn any_values_validate_without_panic(
            rates in proptest::collection::vec(proptest::prelude::prop_oneof![
                proptest::prelude::Just(f64::NAN), proptest::prelude::Just(f64::INFINITY), proptest::prelude::Just(-1.0),
                proptest::prelude::Just(0.0), proptest::prelude::Just(1e-300), proptest::prelude::Just(1e300), 1e3f64..1e16
            ], 10),
            overhead in proptest::prelude::prop_oneof![proptest::prelude::Just(f64::NAN), proptest::prelude::Just(-1e-6), 0.0f64..1e-3],
            memory in 0u64..(1 << 40), fixed in 0u64..(1 << 40), pinnable in proptest::option::of(0u64..(1 << 45))
        ) {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware");
            let mut hw = HardwareProfile::load(&dir.join("h100-sxm.ron")).unwrap();
            hw.h2d.0 = rates[0];
            hw.d2h.0 = rates[1];
            hw.h2d_duplex.0 = rates[2];
            hw.d2h_duplex.0 = rates[3];
            hw.matmul_flops.0 = rates[4];
            hw.attention_flops.0 = rates[5];
            hw.memory_bandwidth.0 = rates[6];
            hw.host_memory_bandwidth.0 = rates[7];
            hw.host_adam_params_per_second = rates[8];
            hw.host_pin_rate = Some(BytesPerSecond(rates[9]));
            hw.launch_overhead = Seconds(overhead);
            hw.memory = Bytes(memory);
            hw.fixed_overhead = Bytes(fixed);
            hw.host_pinnable = pinnable.map(Bytes);
            if hw.validate().is_ok() {
                for r in [hw.h2d.0, hw.d2h.0, hw.matmul_flops.0, hw.memory_bandwidth.0] {
                    proptest::prop_assert!(r.is_finite() && r > 0.0);
                    proptest::prop_assert!((1e9 / r).is_finite());
                }
            }
        }
    }
}
