//! A static memory plan of a schedule: one offset per allocation in a single arena, so that no
//! two tensors live at the same time share bytes. Where the stream-ordered pool reserves more
//! than it hands out (fragmentation: 3-5% on the H100 records), an arena laid out here would
//! hold the step in exactly `size` bytes, known before the run.
//!
//! Lifetimes are positions in the schedule's action list: every `Alloc` and `Free` is ordered on
//! one lane (the compute lane, as the planner emits them), so a region freed at one position
//! and reused at a later one is safe for the same reason the pool's reuse is: every user of the
//! old tensor is ordered before its `Free`. Persistent tensors that start on the GPU live from
//! the first action to the last.

use crate::schedule::{Action, Lane, Schedule};
use crate::{Bytes, Program, TensorId};

/// The alignment of every range of an arena: the pool's granularity, and more than any kernel
/// or cuBLASLt needs (16 bytes). Planner and executor both lay out with it.
pub const ARENA_ALIGN: Bytes = Bytes(512);

/// One allocation's place in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub tensor: TensorId,
    /// Index of the `Alloc` action that takes it; None for a tensor on the GPU from the start.
    pub alloc_action: Option<usize>,
    /// Action index of its `Alloc` (0 for a tensor resident from the start).
    pub start: usize,
    /// Action index of its `Free` (the action count for one live to the end).
    pub end: usize,
    pub offset: u64,
    pub bytes: u64,
}

/// The arena layout of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct ArenaPlan {
    pub placed: Vec<Placed>,
    /// Bytes the arena needs: the highest end of any placed range.
    pub size: Bytes,
    /// The highest sum of live bytes (each rounded to the alignment): no layout needs less.
    pub live_peak: Bytes,
}

impl ArenaPlan {
    /// The arena's bytes beyond the live peak, as a fraction of the live peak.
    pub fn overhead(&self) -> f64 {
        if self.live_peak.0 == 0 {
            0.0
        } else {
            (self.size.0 - self.live_peak.0) as f64 / self.live_peak.0 as f64
        }
    }
}

/// Lays out every allocation of `schedule` in one arena, each aligned to `align` bytes: largest
/// first, each at the lowest offset free over its whole lifetime. Errors when an allocation or
/// free is ordered on another lane than the compute lane, the list frees what it did not
/// allocate, or it frees a tensor that is on the GPU when the step starts (the next step would
/// find it at its first offset, so it could not move).
pub fn plan_arena(program: &Program, schedule: &Schedule, align: Bytes) -> Result<ArenaPlan, String> {
    let inv = &program.inventory;
    let align = align.0.max(1);
    let round = |b: u64| b.div_ceil(align) * align;
    let n = schedule.actions.len();
    let mut open: Vec<Option<usize>> = vec![None; inv.tensors.len()];
    let mut resident = vec![false; inv.tensors.len()];
    let mut intervals: Vec<(TensorId, usize, usize)> = Vec::new();
    for t in inv.tensors.iter().filter(|t| t.persistent && !schedule.host_resident.contains(&t.id)) {
        open[t.id.index()] = Some(0);
        resident[t.id.index()] = true;
    }
    for (i, a) in schedule.actions.iter().enumerate() {
        match *a {
            Action::Alloc(t, lane) | Action::Free(t, lane) if lane != Lane::Compute => {
                return Err(format!(
                    "action {i} orders {} on the {} lane; an arena plan needs every allocation on the compute lane",
                    inv.tensor(t).name,
                    lane.label()
                ));
            }
            Action::Alloc(t, _) => {
                if open[t.index()].is_some() {
                    return Err(format!("action {i} allocates {}, which is already allocated", inv.tensor(t).name));
                }
                open[t.index()] = Some(i);
            }
            Action::Free(t, _) if resident[t.index()] => {
                return Err(format!(
                    "action {i} frees {}, which is on the GPU when the step starts: an arena cannot move it between steps",
                    inv.tensor(t).name
                ));
            }
            Action::Free(t, _) => match open[t.index()].take() {
                Some(s) => intervals.push((t, s, i)),
                None => return Err(format!("action {i} frees {}, which is not allocated", inv.tensor(t).name)),
            },
            _ => {}
        }
    }
    for (k, s) in open.iter().enumerate() {
        if let Some(s) = s {
            intervals.push((inv.tensors[k].id, *s, n));
        }
    }

    // Live peak over positions (an interval holds [start, end]: freed after its `Free`).
    let mut delta = vec![0i128; n + 2];
    for (t, s, e) in &intervals {
        let b = round(inv.tensor(*t).bytes.0) as i128;
        delta[*s] += b;
        delta[*e + 1] -= b;
    }
    let (mut live, mut live_peak) = (0i128, 0i128);
    for d in &delta {
        live += d;
        live_peak = live_peak.max(live);
    }

    // Largest first; ties by start, so the layout does not depend on the inventory's order.
    let mut order: Vec<usize> = (0..intervals.len()).collect();
    order.sort_by_key(|&k| (std::cmp::Reverse(round(inv.tensor(intervals[k].0).bytes.0)), intervals[k].1, intervals[k].0));
    let mut placed: Vec<Placed> = Vec::with_capacity(intervals.len());
    // The placed blocks by (offset, end offset), kept in order as each is placed, so that
    // first fit walks them in address order without sorting the ones it meets each time.
    let mut by_address: Vec<usize> = Vec::with_capacity(intervals.len());
    for k in order {
        let (tensor, start, end) = intervals[k];
        let bytes = round(inv.tensor(tensor).bytes.0);
        // The lowest offset where `bytes` fit between the blocks live at the same time.
        let mut offset = 0u64;
        for &j in &by_address {
            let p = &placed[j];
            if !(p.start <= end && start <= p.end) {
                continue;
            }
            if p.offset >= offset + bytes {
                break;
            }
            offset = offset.max(p.offset + p.bytes);
        }
        let alloc_action = (!resident[tensor.index()]).then_some(start);
        let key = (offset, offset + bytes);
        let at = by_address.partition_point(|&j| (placed[j].offset, placed[j].offset + placed[j].bytes) <= key);
        by_address.insert(at, placed.len());
        placed.push(Placed { tensor, alloc_action, start, end, offset, bytes });
    }
    let size = placed.iter().map(|p| p.offset + p.bytes).max().unwrap_or(0);
    Ok(ArenaPlan { placed, size: Bytes(size), live_peak: Bytes(live_peak as u64) })
}

// Tested in planner/tests/arena.rs, on the schedules the planner and its strategies emit.
