//! What a schedule guarantees whatever the timing: which action happens before which (lane order
//! plus `Record` -> `Wait`, as vector clocks), data races on tensors, and the worst peak any
//! timing can reach.

use super::error::SimError;
use super::labels::{action_label, lane_index};
use models::schedule::Action;
use models::{Bytes, HardwareProfile, Program, Schedule, TensorId};
use std::collections::HashMap;

/// Happens-before of a schedule's actions.
pub(crate) struct Order {
    /// Lane (as index) of each action.
    pub lane: Vec<u8>,
    /// 1-based position of each action on its lane.
    pub pos: Vec<u32>,
    /// For a `Wait`: the `Record` it binds to (the latest earlier one of its event).
    pub wait_record: Vec<Option<usize>>,
    /// Per action, per lane: the position of the latest action of that lane that happens before
    /// (or is) this one.
    clocks: Vec<[u32; 4]>,
}

impl Order {
    /// Binds waits to records and computes the clocks; refuses unknown ids and waits on events
    /// not recorded earlier in the list.
    pub fn build(program: &Program, actions: &[Action]) -> Result<Order, SimError> {
        let n = actions.len();
        let mut lane = Vec::with_capacity(n);
        let mut pos = Vec::with_capacity(n);
        let mut wait_record = vec![None; n];
        let mut clocks = Vec::with_capacity(n);
        let mut lane_clock = [[0u32; 4]; 4];
        let mut last_record: HashMap<u32, usize> = HashMap::new();
        for (i, a) in actions.iter().enumerate() {
            check_ids(program, i, a)?;
            let l = lane_index(a.lane());
            let mut c = lane_clock[l];
            match *a {
                Action::Record(e, _) => {
                    last_record.insert(e.0, i);
                }
                Action::Wait(e, w) => {
                    let Some(&r) = last_record.get(&e.0) else {
                        return Err(SimError::UnrecordedEvent { action: i, label: action_label(program, a), event: e.0, lane: w.label() });
                    };
                    wait_record[i] = Some(r);
                    let rc: &[u32; 4] = &clocks[r];
                    for k in 0..4 {
                        c[k] = c[k].max(rc[k]);
                    }
                }
                _ => {}
            }
            c[l] += 1;
            lane_clock[l] = c;
            lane.push(l as u8);
            pos.push(c[l]);
            clocks.push(c);
        }
        Ok(Order { lane, pos, wait_record, clocks })
    }

    /// Whether action `p` happens before action `q` (or is it) under every timing.
    pub fn happens_before(&self, p: usize, q: usize) -> bool {
        p == q || self.clocks[q][self.lane[p] as usize] >= self.pos[p]
    }

    /// Every two accesses of a tensor's device buffer (alloc, free, prefetch, evict, ops) or of
    /// its host copy (evict, prefetch, host ops), one of them a write, must be ordered.
    pub fn check_races(&self, program: &Program, actions: &[Action]) -> Result<(), SimError> {
        let n_t = program.inventory.tensors.len();
        // Location 2t: device buffer of tensor t; 2t+1: its host copy.
        let mut locs: Vec<Access> = vec![Access::default(); 2 * n_t];
        let mut check = |me: &Order, loc: usize, a: usize, write: bool| -> Result<(), SimError> {
            let acc = &mut locs[loc];
            let reads = if write { &acc.reads[..] } else { &[] };
            let unordered = acc.write.iter().chain(reads.iter().flatten()).find(|&&o| !me.happens_before(o, a));
            if let Some(&o) = unordered {
                let t = TensorId((loc / 2) as u32);
                return Err(SimError::Race {
                    action: a,
                    label: action_label(program, &actions[a]),
                    other: o,
                    other_label: action_label(program, &actions[o]),
                    tensor: program.inventory.tensor(t).name.clone(),
                    place: if loc.is_multiple_of(2) { "its GPU buffer" } else { "its host copy" },
                });
            }
            if write {
                acc.write = Some(a);
                acc.reads = [None; 4];
            } else {
                acc.reads[me.lane[a] as usize] = Some(a);
            }
            Ok(())
        };
        let dev = |t: TensorId| 2 * t.index();
        let host = |t: TensorId| 2 * t.index() + 1;
        for (i, a) in actions.iter().enumerate() {
            match *a {
                Action::Alloc(t, _) | Action::Free(t, _) => check(self, dev(t), i, true)?,
                Action::Prefetch(t) => {
                    check(self, host(t), i, false)?;
                    check(self, dev(t), i, true)?;
                }
                Action::Evict(t) => {
                    check(self, dev(t), i, false)?;
                    check(self, host(t), i, true)?;
                }
                Action::Run(o) | Action::Recompute(o) | Action::HostRun(o) => {
                    let op = program.op(o);
                    let loc = |t: TensorId| if matches!(a, Action::HostRun(_)) { host(t) } else { dev(t) };
                    for t in &op.reads {
                        check(self, loc(*t), i, false)?;
                    }
                    for t in op.writes.iter().chain(&op.allocs) {
                        check(self, loc(*t), i, true)?;
                    }
                }
                Action::Record(..) | Action::Wait(..) => {}
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Default)]
struct Access {
    write: Option<usize>,
    /// The latest read on each lane since the write.
    reads: [Option<usize>; 4],
}

fn check_ids(program: &Program, i: usize, a: &Action) -> Result<(), SimError> {
    let bad = |what: String| SimError::UnknownId { action: i, label: format!("{a:?}"), what };
    match *a {
        Action::Run(o) | Action::Recompute(o) | Action::HostRun(o) if o.index() >= program.ops.len() => Err(bad(format!("op #{}", o.0))),
        Action::Alloc(t, _) | Action::Free(t, _) | Action::Prefetch(t) | Action::Evict(t)
            if t.index() >= program.inventory.tensors.len() =>
        {
            Err(bad(format!("tensor #{}", t.0)))
        }
        _ => Ok(()),
    }
}

/// The highest allocated bytes any timing allowed by the schedule's happens-before order can
/// reach, and the action (an `Alloc`) where: an allocation counts as live at another's moment
/// unless it certainly comes after it, or its free certainly comes before. An upper bound on
/// `simulate_with_timing`'s peak for every `scale` (exact when all memory actions are on one
/// lane). Quadratic in the number of allocations.
pub fn worst_case_peak(program: &Program, hw: &HardwareProfile, schedule: &Schedule) -> Result<(Bytes, usize), SimError> {
    let order = Order::build(program, &schedule.actions)?;
    let inv = &program.inventory;
    let g = hw.alloc_granularity;
    // Live intervals: (alloc action or None = at start, free action or None = at end, bytes).
    let mut intervals: Vec<(Option<usize>, Option<usize>, u64)> = Vec::new();
    let mut open: HashMap<TensorId, usize> = HashMap::new();
    let host_start: std::collections::HashSet<TensorId> = schedule.host_resident.iter().copied().collect();
    for t in &inv.tensors {
        if t.persistent && !host_start.contains(&t.id) {
            open.insert(t.id, intervals.len());
            intervals.push((None, None, t.bytes.round_up(g).0));
        }
    }
    for (i, a) in schedule.actions.iter().enumerate() {
        match *a {
            Action::Alloc(t, _) => {
                open.insert(t, intervals.len());
                intervals.push((Some(i), None, inv.tensor(t).bytes.round_up(g).0));
            }
            Action::Free(t, _) => {
                if let Some(k) = open.remove(&t) {
                    intervals[k].1 = Some(i);
                }
            }
            _ => {}
        }
    }
    let start: u64 = intervals.iter().filter(|x| x.0.is_none()).map(|x| x.2).sum();
    // Resident all step long (most of a step's bytes): live at every moment.
    let always: u64 = intervals.iter().filter(|x| x.0.is_none() && x.1.is_none()).map(|x| x.2).sum();
    intervals.retain(|x| x.0.is_some() || x.1.is_some());
    let mut best = (start, 0usize);
    for &(a, _, _) in &intervals {
        let Some(a) = a else { continue };
        let live: u64 = always
            + intervals
                .iter()
                .filter(|(s, f, _)| {
                    let after = s.is_some_and(|s| s != a && order.happens_before(a, s));
                    let freed = f.is_some_and(|f| order.happens_before(f, a));
                    !after && !freed
                })
                .map(|x| x.2)
                .sum::<u64>();
        if live > best.0 {
            best = (live, a);
        }
    }
    Ok((Bytes(best.0), best.1))
}
