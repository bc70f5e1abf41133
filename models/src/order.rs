//! What a schedule guarantees whatever the timing: which action happens before which (each lane
//! runs its actions in order; a `Wait` follows everything before the latest earlier `Record` of
//! its event), as vector clocks, and the data races that order leaves: two accesses of one
//! tensor's device buffer or host copy, at least one a write, neither before the other.
//!
//! The executor refuses a schedule whose host copies race (its host memory would be read and
//! written at once); the simulator checks both places.

use crate::inventory::TensorId;
use crate::program::Program;
use crate::schedule::Action;
use std::collections::HashMap;

/// Why a schedule has no order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("action {action} waits on event {event}, which no earlier action records")]
    Unrecorded { action: usize, event: u32 },
    #[error("action {action} names {what}, which the program does not have")]
    UnknownId { action: usize, what: String },
    #[error("actions {first} and {second} access the host copy of {tensor} with nothing ordering them")]
    HostRace { first: usize, second: usize, tensor: String },
}

/// Refuses `actions` unless they have an order in which no two accesses of a host copy race.
pub fn check_host_copies(program: &Program, actions: &[Action]) -> Result<(), OrderError> {
    let order = Order::build(program, actions)?;
    match order.first_race(program, actions, &[Place::Host]) {
        Some(r) => Err(OrderError::HostRace { first: r.other, second: r.action, tensor: program.inventory.tensor(r.tensor).name.clone() }),
        None => Ok(()),
    }
}

/// Where a tensor's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Its GPU buffer.
    Device,
    /// Its pinned host copy.
    Host,
}

impl Place {
    pub fn label(self) -> &'static str {
        match self {
            Place::Device => "its GPU buffer",
            Place::Host => "its host copy",
        }
    }
}

/// Two accesses of one place of a tensor that no order separates, one a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Race {
    pub action: usize,
    pub other: usize,
    pub tensor: TensorId,
    pub place: Place,
}

/// Happens-before of a schedule's actions.
pub struct Order {
    /// Lane (as index) of each action.
    lane: Vec<u8>,
    /// 1-based position of each action on its lane.
    pos: Vec<u32>,
    /// For a `Wait`: the `Record` it binds to (the latest earlier one of its event).
    wait_record: Vec<Option<usize>>,
    /// Per action, per lane: the position of the latest action of that lane that happens before
    /// (or is) this one.
    clocks: Vec<[u32; 4]>,
}

impl Order {
    /// Binds waits to records and computes the clocks; refuses unknown ids and waits on events
    /// not recorded earlier in the list.
    pub fn build(program: &Program, actions: &[Action]) -> Result<Order, OrderError> {
        let n = actions.len();
        let mut lane = Vec::with_capacity(n);
        let mut pos = Vec::with_capacity(n);
        let mut wait_record = vec![None; n];
        let mut clocks: Vec<[u32; 4]> = Vec::with_capacity(n);
        let mut lane_clock = [[0u32; 4]; 4];
        let mut last_record: HashMap<u32, usize> = HashMap::new();
        for (i, a) in actions.iter().enumerate() {
            check_ids(program, i, a)?;
            let l = a.lane().index();
            let mut c = lane_clock[l];
            match *a {
                Action::Record(e, _) => {
                    last_record.insert(e.0, i);
                }
                Action::Wait(e, _) => {
                    let &r = last_record.get(&e.0).ok_or(OrderError::Unrecorded { action: i, event: e.0 })?;
                    wait_record[i] = Some(r);
                    for (k, rc) in clocks[r].iter().enumerate() {
                        c[k] = c[k].max(*rc);
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

    /// Lane (0 compute, 1 H2D, 2 D2H, 3 host) of action `i`.
    pub fn lane(&self, i: usize) -> usize {
        self.lane[i] as usize
    }

    /// 1-based position of action `i` on its lane.
    pub fn position(&self, i: usize) -> u32 {
        self.pos[i]
    }

    /// For a `Wait`: the `Record` it binds to.
    pub fn wait_record(&self, i: usize) -> Option<usize> {
        self.wait_record[i]
    }

    /// Whether action `p` happens before action `q` (or is it) under every timing.
    pub fn happens_before(&self, p: usize, q: usize) -> bool {
        p == q || self.clocks[q][self.lane[p] as usize] >= self.pos[p]
    }

    /// The first race among the accesses of `places`: of a tensor's device buffer by `Alloc`,
    /// `Free`, `Prefetch`, `Evict` and the ops on the GPU; of its host copy by `Prefetch`
    /// (read), `Evict` (write) and the ops on the host (their reads and writes).
    pub fn first_race(&self, program: &Program, actions: &[Action], places: &[Place]) -> Option<Race> {
        let n_t = program.inventory.tensors.len();
        let (dev, host) = (places.contains(&Place::Device), places.contains(&Place::Host));
        // Location 2t: device buffer of tensor t; 2t+1: its host copy.
        let mut locs: Vec<Access> = vec![Access::default(); 2 * n_t];
        let mut check = |loc: usize, a: usize, write: bool| -> Option<Race> {
            let on = if loc.is_multiple_of(2) { dev } else { host };
            if !on {
                return None;
            }
            let acc = &mut locs[loc];
            let reads = if write { &acc.reads[..] } else { &[] };
            if let Some(&o) = acc.write.iter().chain(reads.iter().flatten()).find(|&&o| !self.happens_before(o, a)) {
                let place = if loc.is_multiple_of(2) { Place::Device } else { Place::Host };
                return Some(Race { action: a, other: o, tensor: TensorId((loc / 2) as u32), place });
            }
            if write {
                acc.write = Some(a);
                acc.reads = [None; 4];
            } else {
                acc.reads[self.lane[a] as usize] = Some(a);
            }
            None
        };
        let dev_of = |t: TensorId| 2 * t.index();
        let host_of = |t: TensorId| 2 * t.index() + 1;
        for (i, a) in actions.iter().enumerate() {
            let race = match *a {
                Action::Alloc(t, _) | Action::Free(t, _) => check(dev_of(t), i, true),
                Action::Prefetch(t) => check(host_of(t), i, false).or_else(|| check(dev_of(t), i, true)),
                Action::Evict(t) => check(dev_of(t), i, false).or_else(|| check(host_of(t), i, true)),
                Action::Run(o) | Action::Recompute(o) | Action::HostRun(o) => {
                    let op = program.op(o);
                    let loc = |t: TensorId| if matches!(a, Action::HostRun(_)) { host_of(t) } else { dev_of(t) };
                    op.reads
                        .iter()
                        .find_map(|t| check(loc(*t), i, false))
                        .or_else(|| op.writes.iter().chain(&op.allocs).find_map(|t| check(loc(*t), i, true)))
                }
                Action::Record(..) | Action::Wait(..) => None,
            };
            if race.is_some() {
                return race;
            }
        }
        None
    }
}

#[derive(Clone, Copy, Default)]
struct Access {
    write: Option<usize>,
    /// The latest read on each lane since the write.
    reads: [Option<usize>; 4],
}

fn check_ids(program: &Program, i: usize, a: &Action) -> Result<(), OrderError> {
    let bad = |what: String| OrderError::UnknownId { action: i, what };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Attention;
    use crate::inventory::Owner;
    use crate::program::OpKind;
    use crate::schedule::{EventId, Lane};

    fn program() -> Program {
        Program::build(&crate::inventory::tests::cfg(Attention::Fused, false))
    }

    #[test]
    fn waits_order_lanes_and_races_are_found_per_place() {
        let p = program();
        let adam = p.find(OpKind::Adam(Owner::Layer(0))).unwrap().id;
        let w = p.inventory.layers[0].weights;
        // host AdamW writes the host copy of the weights, then H2D copies it in
        let racy = vec![Action::HostRun(adam), Action::Prefetch(w)];
        let order = Order::build(&p, &racy).unwrap();
        assert!(!order.happens_before(0, 1));
        let race = order.first_race(&p, &racy, &[Place::Host]).unwrap();
        assert_eq!((race.action, race.other, race.tensor, race.place), (1, 0, w, Place::Host));
        assert_eq!(order.first_race(&p, &racy, &[Place::Device]), None);
        let ordered = vec![
            Action::HostRun(adam),
            Action::Record(EventId(0), Lane::Host),
            Action::Wait(EventId(0), Lane::HostToDevice),
            Action::Prefetch(w),
        ];
        let order = Order::build(&p, &ordered).unwrap();
        assert!(order.happens_before(0, 3) && !order.happens_before(3, 0));
        assert_eq!(order.wait_record(2), Some(1));
        assert_eq!((order.lane(3), order.position(3)), (1, 2));
        assert_eq!(order.first_race(&p, &ordered, &[Place::Host, Place::Device]), None);
        let unrecorded = vec![Action::Wait(EventId(3), Lane::Compute)];
        assert_eq!(Order::build(&p, &unrecorded).err(), Some(OrderError::Unrecorded { action: 0, event: 3 }));
    }
}
