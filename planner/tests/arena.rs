//! `models::arena` on the schedules the planner emits: tensors live at the same time never share
//! bytes, the arena stays near the live peak, and the prediction carries its size.

use models::arena::{plan_arena, ArenaPlan};
use models::schedule::{Action, Lane};
use models::{Bytes, GptConfig, HardwareProfile, Program, Seconds};
use planner::strategy::{parse_strategy, strategy_plan};
use planner::{plan, SolveOptions};
use std::path::Path;

fn load(name: &str) -> (Program, HardwareProfile) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = GptConfig::load(&root.join(format!("models/configs/{name}.ron"))).unwrap();
    (Program::build(&cfg), HardwareProfile::load(&root.join("models/hardware/h100-sxm.ron")).unwrap())
}

fn assert_disjoint(plan: &ArenaPlan) {
    for (i, a) in plan.placed.iter().enumerate() {
        for b in &plan.placed[i + 1..] {
            let same_time = a.start <= b.end && b.start <= a.end;
            let same_bytes = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
            assert!(!(same_time && same_bytes), "{a:?} and {b:?} overlap");
        }
    }
}

#[test]
fn every_strategy_lays_out_without_overlap_near_the_live_peak() {
    for (config, names) in [
        ("gpt2-tiny", "keep-all"),
        ("gpt2-tiny", "offload-all"),
        ("gpt2-tiny", "recompute-all,stream-weights"),
        ("gpt2-tiny", "module-queue"),
        ("gpt2-tiny", "offload-first=1"),
        ("gpt2-tiny", "offload-all,host-optimizer,stream-output,streamed-optimizer"),
        ("gpt3-125m", "cpu-embedding,host-optimizer,stream-weights"),
    ] {
        let (p, hw) = load(config);
        let plan = strategy_plan(&p, &hw, Bytes::gib(80.0), names, &parse_strategy(names).unwrap()).unwrap();
        let arena = plan_arena(&p, &plan.schedule, hw.alloc_granularity).unwrap();
        assert_disjoint(&arena);
        assert!(arena.size >= arena.live_peak, "{names}");
        // The simulator's peak is the same count of live bytes (allocator rounding included).
        assert_eq!(arena.live_peak, plan.trace.peak_allocated, "{names}");
        assert!(arena.overhead() < 0.10, "{names}: arena {} for a live peak of {}", arena.size, arena.live_peak);
        // Each allocation action has exactly one place; residents have none.
        let allocs = plan.schedule.actions.iter().filter(|a| matches!(a, Action::Alloc(..))).count();
        assert_eq!(arena.placed.iter().filter(|p| p.alloc_action.is_some()).count(), allocs, "{names}");
        assert_eq!(plan.schedule.prediction.arena, Some(arena.size), "{names}: the prediction carries the arena");
    }
}

#[test]
fn a_tight_plan_fits_its_arena_in_the_budget() {
    let (p, hw) = load("gpt2-124m");
    let opts = SolveOptions::new().with_time_limit(Seconds(8.0)).unwrap().with_gap(0.01).unwrap();
    let floor = planner::feasible_floor(&p, &hw);
    let plan = plan(&p, &hw, floor + Bytes::mib(64.0), &opts).unwrap();
    let pr = &plan.schedule.prediction;
    let arena = pr.arena.expect("planner schedules lay out in an arena");
    assert!(arena >= pr.peak_allocated);
    assert!(pr.peak_device() <= plan.schedule.budget, "device {} over budget {}", pr.peak_device(), plan.schedule.budget);
}

#[test]
fn frees_of_what_is_not_allocated_residents_and_other_lanes_are_refused() {
    let (p, hw) = load("gpt2-tiny");
    let plan = strategy_plan(&p, &hw, Bytes::gib(80.0), "keep-all", &parse_strategy("keep-all").unwrap()).unwrap();
    let mut s = plan.schedule.clone();
    let t = p.inventory.acts[0].ln1;
    s.actions.insert(0, Action::Free(t, Lane::Compute));
    assert!(plan_arena(&p, &s, hw.alloc_granularity).unwrap_err().contains("not allocated"));
    let mut s = plan.schedule.clone();
    let k = s.actions.iter().position(|a| matches!(a, Action::Alloc(..))).unwrap();
    if let Action::Alloc(t, _) = s.actions[k] {
        s.actions[k] = Action::Alloc(t, Lane::HostToDevice);
    }
    assert!(plan_arena(&p, &s, hw.alloc_granularity).unwrap_err().contains("compute lane"));
    let mut s = plan.schedule.clone();
    let w = p.inventory.params(models::Owner::Layer(0)).weights;
    s.actions.push(Action::Free(w, Lane::Compute));
    assert!(plan_arena(&p, &s, hw.alloc_granularity).unwrap_err().contains("when the step starts"));
}

/// First fit as the arena was first written: for each block, largest first, the blocks live at
/// the same time sorted by address, the lowest gap that holds it. `plan_arena` walks the placed
/// blocks kept in address order instead; the layout must be the same.
fn first_fit_by_sorting(arena: &ArenaPlan) -> Vec<u64> {
    let mut placed: Vec<(usize, usize, u64, u64)> = Vec::new();
    let mut offsets = Vec::new();
    for p in &arena.placed {
        let mut taken: Vec<(u64, u64)> = placed.iter().filter(|q| q.0 <= p.end && p.start <= q.1).map(|q| (q.2, q.2 + q.3)).collect();
        taken.sort_unstable();
        let mut offset = 0u64;
        for (a, b) in taken {
            if a >= offset + p.bytes {
                break;
            }
            offset = offset.max(b);
        }
        placed.push((p.start, p.end, offset, p.bytes));
        offsets.push(offset);
    }
    offsets
}

#[test]
fn the_layout_is_first_fit_by_address() {
    for (config, names) in [
        ("gpt2-tiny", "offload-all,host-optimizer,stream-output,streamed-optimizer"),
        ("gpt3-125m", "cpu-embedding,host-optimizer,stream-weights"),
        ("gpt3-125m", "offload-first=5,recompute-all"),
        ("gpt3-1.3b", "module-queue"),
    ] {
        let (p, hw) = load(config);
        let plan = strategy_plan(&p, &hw, Bytes::gib(80.0), names, &parse_strategy(names).unwrap()).unwrap();
        let arena = plan_arena(&p, &plan.schedule, hw.alloc_granularity).unwrap();
        let offsets: Vec<u64> = arena.placed.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, first_fit_by_sorting(&arena), "{config} {names}");
    }
}
