//! The time model: how long an op, a host op or a transfer takes on a hardware profile.
//!
//! A roofline per op: the larger of its arithmetic time (at the matrix or attention rate) and its
//! memory time, plus launch overhead per kernel. Calibration (`offplan calibrate`) fits the
//! profile's rates so that these predictions match the device. Beside the GPU, the host issues
//! every action from one thread (`issue_time`): the simulator starts none before the host has
//! issued it, which is what bounds a step of small kernels.

use crate::hardware::{HardwareProfile, IssueCosts, EMBED_ZERO};
use crate::inventory::Owner;
use crate::program::{embed_table_zero_bytes, Op, OpKind, Program, WorkClass};
use crate::schedule::Action;
use crate::units::{Bytes, Seconds};
use serde::{Deserialize, Serialize};

/// Direction of a host-device copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    HostToDevice,
    DeviceToHost,
}

/// Time of a GPU op on the compute stream: its roofline (or its family's calibrated kernel cost)
/// and its launches' overheads, each launch also paying what following a different kernel costs.
pub fn op_time(op: &Op, hw: &HardwareProfile) -> Seconds {
    let arithmetic = match op.work {
        WorkClass::Matmul => op.flops / hw.matmul_flops,
        WorkClass::Attention => op.flops / hw.attention_flops,
        WorkClass::Memory => Seconds::ZERO,
    };
    let in_sequence = hw.sequence_overhead * op.launches as f64;
    if op.work == WorkClass::Memory {
        if let Some(k) = hw.kernels.get(op.kind.family()) {
            return op.bytes / hw.memory_bandwidth * (1.0 / k.efficiency) + k.per_launch * op.launches as f64 + in_sequence;
        }
    }
    let memory = op.bytes / hw.memory_bandwidth;
    arithmetic.max(memory) + hw.launch_overhead * op.launches as f64 + in_sequence
}

/// The host's time to issue action `a` of a schedule on its lane: each launch of an op (its
/// products at the product rate), a copy, an event or host work; allocations in the executor's
/// arena take none.
pub fn issue_time(a: &Action, program: &Program, costs: &IssueCosts) -> Seconds {
    match *a {
        Action::Run(o) | Action::Recompute(o) => {
            let op = program.op(o);
            costs.kernel * op.launches.saturating_sub(op.products) as f64 + costs.product * op.products as f64
        }
        Action::Prefetch(_) | Action::Evict(_) => costs.copy,
        Action::Record(..) | Action::Wait(..) | Action::HostRun(_) => costs.event,
        Action::Alloc(..) | Action::Free(..) => Seconds::ZERO,
    }
}

/// Whether an op may run on the host instead of the GPU (CPU embedding, host AdamW, the partial
/// norm of a gradient made on the host) or always does (the clip scale).
pub fn runs_on_host(kind: OpKind) -> bool {
    matches!(kind, OpKind::Embed | OpKind::EmbedBwd | OpKind::Adam(_) | OpKind::GradNorm(_) | OpKind::ClipScale)
}

/// Time of an op run on the host: the CPU embedding gather/scatter, or AdamW over the owner's
/// parameters on all host cores, plus the host lane's hand-off (`host_call_latency`). None for
/// ops that only run on the GPU.
pub fn host_op_time(op: &Op, program: &Program, hw: &HardwareProfile) -> Option<Seconds> {
    Some(host_work_time(op, program, hw)? + hw.host_call_latency)
}

/// The host op's own work, without the host lane's hand-off.
fn host_work_time(op: &Op, program: &Program, hw: &HardwareProfile) -> Option<Seconds> {
    match op.kind {
        // Memory-bound passes, at the rate calibrate timed the executor's host code at where it
        // did; the clip scale reads a few KiB per owner.
        OpKind::EmbedBwd if hw.host_kernels.contains_key(EMBED_ZERO) => {
            // Zeroing the table and adding the step's rows run at rates of their own (a pass
            // over V x C against a gather over B x T rows), so calibrate fits each apart.
            // Only the first micro-batch zeroes the table; later ones add into it.
            let zero = if op.micro == 0 { embed_table_zero_bytes(&program.config) } else { Bytes::ZERO };
            Some(host_pass_time(Bytes(op.bytes.0.saturating_sub(zero.0)), op.kind.family(), hw) + host_pass_time(zero, EMBED_ZERO, hw))
        }
        OpKind::Embed | OpKind::EmbedBwd | OpKind::GradNorm(_) | OpKind::ClipScale => Some(host_pass_time(op.bytes, op.kind.family(), hw)),
        OpKind::Adam(owner) => {
            Some(hw.host_adam_call_overhead + Seconds(host_adam_params(program, owner) as f64 / hw.host_adam_params_per_second))
        }
        _ => None,
    }
}

/// `bytes` of a memory-bound host pass of `family`, at its calibrated fit where the profile has
/// one.
fn host_pass_time(bytes: Bytes, family: &str, hw: &HardwareProfile) -> Seconds {
    let plain = bytes / hw.host_memory_bandwidth;
    match hw.host_kernels.get(family) {
        Some(k) => plain * (1.0 / k.efficiency) + k.per_launch,
        None => plain,
    }
}

/// Host memory bytes one parameter's AdamW update reads and writes: the bf16 gradient read, the
/// bf16 weight written, fp32 master, m and v each read and written (executor/src/host/adamw.rs).
pub const HOST_ADAM_BYTES_PER_PARAM: u64 = 2 + 2 + 2 * 12;

fn host_adam_params(program: &Program, owner: Owner) -> u64 {
    program.inventory.params(owner).params
}

/// Time to copy `bytes` one way; `duplex` when a copy the other way runs at the same time: the
/// copy's latency, then its bytes at the rate.
pub fn transfer_time(bytes: Bytes, dir: Direction, duplex: bool, hw: &HardwareProfile) -> Seconds {
    let rate = match (dir, duplex) {
        (Direction::HostToDevice, false) => hw.h2d,
        (Direction::HostToDevice, true) => hw.h2d_duplex,
        (Direction::DeviceToHost, false) => hw.d2h,
        (Direction::DeviceToHost, true) => hw.d2h_duplex,
    };
    copy_latency(dir, hw) + bytes / rate
}

/// What one copy takes beyond its bytes.
pub fn copy_latency(dir: Direction, hw: &HardwareProfile) -> Seconds {
    match dir {
        Direction::HostToDevice => hw.h2d_latency,
        Direction::DeviceToHost => hw.d2h_latency,
    }
}

/// A copy of `bytes` as the bytes that take as long at the rate alone: its bytes and its
/// latency's worth (the simulator and the solver move copies as bytes at changing rates).
pub fn copy_work_bytes(bytes: f64, dir: Direction, hw: &HardwareProfile) -> f64 {
    let rate = match dir {
        Direction::HostToDevice => hw.h2d.0,
        Direction::DeviceToHost => hw.d2h.0,
    };
    bytes + copy_latency(dir, hw).0 * rate
}

/// Compute-stream time of the whole program with everything on the GPU.
pub fn all_gpu_step_time(program: &Program, hw: &HardwareProfile) -> Seconds {
    program.ops.iter().map(|o| op_time(o, hw)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::KernelCost;
    use std::path::Path;

    #[test]
    fn a_memory_op_of_a_calibrated_family_costs_its_fit() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let p = Program::build(&crate::GptConfig::load(&dir.join("configs/gpt2-124m.ron")).unwrap());
        let mut hw = HardwareProfile::load(&dir.join("hardware/h100-sxm.ron")).unwrap();
        let ln = p.find(OpKind::Ln1Bwd(3)).unwrap();
        let plain = op_time(ln, &hw);
        assert_eq!(plain, (ln.bytes / hw.memory_bandwidth) + hw.launch_overhead * 3.0);
        hw.kernels.insert("Ln1Bwd".into(), KernelCost { per_launch: Seconds(5e-6), efficiency: 0.5 });
        let fitted = op_time(ln, &hw);
        assert!((fitted.0 - (2.0 * (ln.bytes / hw.memory_bandwidth).0 + 15e-6)).abs() < 1e-12);
        // Products keep their rate.
        let qkv = p.find(OpKind::Qkv(0)).unwrap();
        hw.kernels.insert("Qkv".into(), KernelCost { per_launch: Seconds(1e-3), efficiency: 0.01 });
        assert!(op_time(qkv, &hw).0 < 1e-3);
        // A host op of a calibrated family costs its fit.
        let clipped = Program::build_with(&p.config, crate::program::Clipping::GlobalNorm);
        let norm = clipped.find(OpKind::GradNorm(Owner::Embedding)).unwrap();
        let plain = host_op_time(norm, &clipped, &hw).unwrap();
        hw.host_kernels.insert("GradNorm".into(), KernelCost { per_launch: Seconds(1e-4), efficiency: 0.5 });
        assert!((host_op_time(norm, &clipped, &hw).unwrap().0 - (2.0 * plain.0 + 1e-4)).abs() < 1e-12);
        // The CPU embedding's backward: one fit for the whole op until the table's zeroing has
        // its own, then the zeroing at that one and the rows at the op's.
        let untied = Program::build(&crate::GptConfig { tied_embeddings: false, ..p.config.clone() });
        let bwd = untied.find(OpKind::EmbedBwd).unwrap();
        let zero = crate::program::embed_table_zero_bytes(&untied.config);
        assert!(zero > Bytes::ZERO && zero < bwd.bytes);
        hw.host_kernels.insert("EmbedBwd".into(), KernelCost { per_launch: Seconds(1e-4), efficiency: 0.5 });
        let whole = host_op_time(bwd, &untied, &hw).unwrap();
        assert!((whole.0 - (2.0 * (bwd.bytes / hw.host_memory_bandwidth).0 + 1e-4)).abs() < 1e-12);
        hw.host_kernels.insert(EMBED_ZERO.into(), KernelCost { per_launch: Seconds::ZERO, efficiency: 0.25 });
        let rows = Bytes(bwd.bytes.0 - zero.0);
        let apart = 2.0 * (rows / hw.host_memory_bandwidth).0 + 1e-4 + 4.0 * (zero / hw.host_memory_bandwidth).0;
        assert!((host_op_time(bwd, &untied, &hw).unwrap().0 - apart).abs() < 1e-12);
        // Every host op pays the host lane's hand-off once, the clip scale too.
        let scale = clipped.clip_scale_op().unwrap();
        let (norm_before, scale_before) = (host_op_time(norm, &clipped, &hw).unwrap(), host_op_time(scale, &clipped, &hw).unwrap());
        hw.host_call_latency = Seconds(30e-6);
        assert!((host_op_time(norm, &clipped, &hw).unwrap().0 - norm_before.0 - 30e-6).abs() < 1e-12);
        assert!((host_op_time(scale, &clipped, &hw).unwrap().0 - scale_before.0 - 30e-6).abs() < 1e-12);
        hw.host_call_latency = Seconds::ZERO;
        // Every launch pays the overhead of following another kernel.
        let before = op_time(ln, &hw);
        hw.sequence_overhead = Seconds(2e-6);
        assert!((op_time(ln, &hw).0 - before.0 - 6e-6).abs() < 1e-12);
    }
}
