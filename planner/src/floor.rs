//! The feasible floor: the smallest budget any plan of this planner fits in, and the lean plan
//! that sets it.

use crate::decisions::{ActChoice, Decisions, Group, OwnerChoice};
use crate::model::StageModel;
use models::{Bytes, HardwareProfile, Program};

/// The leanest choice of every group (each group's smallest memory at its own peak, then its
/// smallest total), the device memory it needs, and what holds memory at its peak.
/// Also returns the device memory that maps the lean plan's pinned host memory (no plan pins
/// more), with the pool's rounding of the arena.
pub fn floor_of(model: &StageModel) -> (Bytes, String, Decisions, Bytes) {
    let program = model.program;
    let mut d = Decisions::all_gpu(program);
    let router = &model.router;
    for g in Decisions::groups(program) {
        // Each choice's own peak and total, from its items: no curve over every slot per choice.
        match g {
            Group::Owner(o) => {
                let all = OwnerChoice::all(program, o);
                let best = all.iter().min_by_key(|c| model.live_extent(&router.owner_items(o, **c))).copied();
                d.set_owner(o, best.unwrap_or(OwnerChoice::GPU));
            }
            Group::Acts(l) => {
                let best = ActChoice::all().into_iter().min_by_key(|c| model.live_extent(&router.act_items(l, *c)));
                d.layers[l as usize] = best.unwrap_or(ActChoice::KEEP);
            }
        }
    }
    let e = model.evaluate(&d);
    // The lean plan pins most of the model on the host, and the driver maps pinned memory in
    // device memory: count that, and the pool's rounding of the arena.
    let hw = model.hw;
    let pinned = crate::emit::emit(program, hw, &d, Bytes::UNLIMITED).map(|s| s.pinned_bytes(program)).unwrap_or(Bytes::ZERO);
    let outside = hw.pinned_mapping(pinned) + hw.pool_reserve_granularity;
    let floor = hw.budget_for(e.peak) + outside;
    // What sets it: the largest op working set, and where the lean plan peaks.
    let inv = &program.inventory;
    let (op, ws) = program
        .ops
        .iter()
        .filter(|o| !models::cost::runs_on_host(o.kind))
        .map(|o| {
            let mut ts: Vec<_> = o.touches().collect();
            ts.sort();
            ts.dedup();
            (o, ts.iter().map(|t| inv.tensor(*t).bytes).sum::<Bytes>())
        })
        .max_by_key(|(_, b)| *b)
        .expect("a program has ops");
    let reason = format!(
        "with every layer's weights streamed, optimizer state on the host and activations recomputed from an offloaded input, the peak is {} at {} (plus {} fixed overhead and {} for the arena's layout, the pool's rounding and the device memory that maps pinned host memory); the largest single op, {}, needs {} of operands",
        e.peak,
        model.slot_label(e.peak_slot),
        model.hw.fixed_overhead,
        floor.saturating_sub(e.peak + model.hw.fixed_overhead),
        op.name,
        ws
    );
    (floor, reason, d, outside)
}

/// The smallest budget any schedule of this planner fits in (device bytes, fixed overhead
/// included).
pub fn feasible_floor(program: &Program, hw: &HardwareProfile) -> Bytes {
    floor_of(&StageModel::new(program, hw)).0
}
