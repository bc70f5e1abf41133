//! The event loop: four lanes taking their actions in order, copies sharing the link, and the
//! state of every tensor (allocated, where its current data is) checked as ops start.

use super::error::SimError;
use super::labels::action_label;
use super::record::Recorder;
use models::cost::{host_op_time, issue_time, op_time, Direction};
use models::hardware::Shares;
use models::inventory::TensorClass;
use models::order::Order;
use models::schedule::{Action, Lane};
use models::trace::{BlockState, SpanKind, Trace};
use models::{HardwareProfile, Program, Schedule, Seconds, TensorId};

/// Where a tensor's device data is (meaningful while allocated).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dev {
    /// Allocated, nothing written or copied in yet.
    Empty,
    /// A prefetch (the action) is copying it in.
    Arriving(usize),
    Valid,
    /// A host op updated the host copy since; the GPU copy is out of date.
    Stale,
}

#[derive(Clone, Copy, Debug)]
struct TState {
    allocated: bool,
    dev: Dev,
    /// The host copy holds the current data.
    host_current: bool,
    /// An eviction (the action) is copying it out.
    evicting: Option<usize>,
    /// Ops and copies using the device buffer now, and the latest of them.
    users: u32,
    last_user: usize,
    /// Freed without a host copy, to be rebuilt by a `Recompute`.
    dropped: bool,
}

#[derive(Clone, Copy, Debug)]
enum LaneState {
    Ready,
    Busy {
        action: usize,
        start: f64,
        end: f64,
    },
    Copy {
        action: usize,
        start: f64,
        remaining: f64,
        dir: Direction,
    },
    /// Host work: `remaining` seconds at full speed (copies beside it slow it).
    Host {
        action: usize,
        start: f64,
        remaining: f64,
    },
    Waiting {
        action: usize,
        since: f64,
    },
    Done,
}

pub(crate) struct Engine<'a> {
    program: &'a Program,
    hw: &'a HardwareProfile,
    schedule: &'a Schedule,
    order: &'a Order,
    scale: &'a dyn Fn(usize) -> f64,
    lanes: [Vec<usize>; 4],
    cursor: [usize; 4],
    state: [LaneState; 4],
    recorded: Vec<bool>,
    /// When the host has issued each action (and every one before it): none starts earlier.
    issued: Vec<f64>,
    /// When each lane last became ready: a lane held back by issuing idles from then.
    ready_since: [f64; 4],
    now: f64,
    tensors: Vec<TState>,
    /// Tensors some `Recompute` in the schedule rebuilds.
    recomputable: Vec<bool>,
    /// Where each tensor started: allocated on the GPU; listed as living on the host.
    start: Vec<(bool, bool)>,
    rec: Recorder,
}

const LANES: [Lane; 4] = Lane::ALL;

impl<'a> Engine<'a> {
    pub fn new(
        program: &'a Program,
        hw: &'a HardwareProfile,
        schedule: &'a Schedule,
        order: &'a Order,
        scale: &'a dyn Fn(usize) -> f64,
    ) -> Engine<'a> {
        let inv = &program.inventory;
        let mut lanes: [Vec<usize>; 4] = Default::default();
        for (i, _) in schedule.actions.iter().enumerate() {
            lanes[order.lane(i)].push(i);
        }
        let mut host_start = vec![false; inv.tensors.len()];
        for t in &schedule.host_resident {
            host_start[t.index()] = true;
        }
        let mut rec = Recorder::new(program, hw.alloc_granularity);
        let mut tensors = Vec::with_capacity(inv.tensors.len());
        let mut start = Vec::with_capacity(inv.tensors.len());
        for t in &inv.tensors {
            let on_gpu = t.persistent && !host_start[t.id.index()];
            // The data loader fills tokens and targets on the host as well.
            let host = host_start[t.id.index()] || (t.persistent && t.class == TensorClass::Io);
            if on_gpu {
                rec.resident_at_start(t.id);
            }
            tensors.push(TState {
                allocated: on_gpu,
                dev: if on_gpu { Dev::Valid } else { Dev::Empty },
                host_current: host,
                evicting: None,
                users: 0,
                last_user: 0,
                dropped: false,
            });
            start.push((on_gpu, host_start[t.id.index()]));
        }
        rec.start();
        let mut clock = 0.0;
        let issued = schedule
            .actions
            .iter()
            .map(|a| {
                clock += hw.issue.map_or(0.0, |c| issue_time(a, program, &c).0);
                clock
            })
            .collect();
        let mut recomputable = vec![false; inv.tensors.len()];
        for a in &schedule.actions {
            if let Action::Recompute(o) = a {
                let op = program.op(*o);
                for t in op.allocs.iter().chain(&op.writes) {
                    recomputable[t.index()] = true;
                }
            }
        }
        let mut e = Engine {
            program,
            hw,
            schedule,
            order,
            scale,
            lanes,
            cursor: [0; 4],
            state: [LaneState::Ready; 4],
            recorded: vec![false; schedule.actions.len()],
            issued,
            ready_since: [0.0; 4],
            now: 0.0,
            tensors,
            recomputable,
            start,
            rec,
        };
        for b in 0..inv.blocks.len() {
            e.update_block(models::BlockId(b as u32));
        }
        e
    }

    pub fn run(mut self) -> Result<Trace, SimError> {
        loop {
            // Everything that can happen at `now`, in list (issue) order across lanes; a record
            // on one lane may release another.
            while let Some(l) = self.next_lane() {
                self.advance(l)?;
            }
            if self.state.iter().all(|s| matches!(s, LaneState::Done)) {
                break;
            }
            self.step()?;
        }
        self.check_periodic()?;
        Ok(self.rec.finish(self.now))
    }

    /// Advances time to the next completion and completes what finishes then.
    fn step(&mut self) -> Result<(), SimError> {
        let link = [self.rate(Direction::HostToDevice), self.rate(Direction::DeviceToHost)];
        let link = |d: Direction| if d == Direction::HostToDevice { link[0] } else { link[1] };
        // Host work and copies share host memory: each keeps its share of its speed.
        let busy = |l: Lane| matches!(self.state[l as usize], LaneState::Copy { .. } | LaneState::Host { .. });
        let shares = match &self.hw.host_sharing {
            Some(h) => h.shares(busy(Lane::Host), busy(Lane::HostToDevice), busy(Lane::DeviceToHost)),
            None => Shares::FULL,
        };
        let share = shares.host;
        let rate = |d: Direction| link(d) * if d == Direction::HostToDevice { shares.h2d } else { shares.d2h };
        let mut finish = [f64::INFINITY; 4];
        for (l, s) in self.state.iter().enumerate() {
            finish[l] = match *s {
                LaneState::Busy { end, .. } => end,
                LaneState::Copy { remaining, dir, .. } => self.now + remaining / rate(dir),
                LaneState::Host { remaining, .. } => self.now + remaining / share,
                _ => f64::INFINITY,
            };
        }
        // A ready lane whose next action the host has not issued yet moves when it has.
        for (l, f) in finish.iter_mut().enumerate() {
            if let (LaneState::Ready, Some(&a)) = (self.state[l], self.lanes[l].get(self.cursor[l])) {
                *f = f.min(self.issued[a]);
            }
        }
        let next = finish.iter().copied().fold(f64::INFINITY, f64::min);
        if !next.is_finite() {
            let l = (0..4).find(|&l| matches!(self.state[l], LaneState::Waiting { .. })).unwrap_or(0);
            let a = self.lanes[l].get(self.cursor[l]).copied().unwrap_or(0);
            return Err(SimError::Deadlock { action: a, label: self.label(a), lane: LANES[l].label() });
        }
        let dt = next - self.now;
        self.now = next;
        for l in 0..4 {
            match &mut self.state[l] {
                LaneState::Copy { remaining, dir, .. } => *remaining = (*remaining - rate(*dir) * dt).max(0.0),
                LaneState::Host { remaining, .. } => *remaining = (*remaining - share * dt).max(0.0),
                _ => {}
            }
        }
        for (l, f) in finish.iter().enumerate() {
            if *f <= next && !matches!(self.state[l], LaneState::Ready) {
                self.complete(l);
            }
        }
        Ok(())
    }

    fn rate(&self, dir: Direction) -> f64 {
        let other = match dir {
            Direction::HostToDevice => 2,
            Direction::DeviceToHost => 1,
        };
        let duplex = matches!(self.state[other], LaneState::Copy { .. });
        match (dir, duplex) {
            (Direction::HostToDevice, false) => self.hw.h2d.0,
            (Direction::HostToDevice, true) => self.hw.h2d_duplex.0,
            (Direction::DeviceToHost, false) => self.hw.d2h.0,
            (Direction::DeviceToHost, true) => self.hw.d2h_duplex.0,
        }
    }

    /// The lane that can move at `now` whose next action comes first in the list.
    fn next_lane(&self) -> Option<usize> {
        (0..4)
            .filter_map(|l| match self.state[l] {
                LaneState::Ready => match self.lanes[l].get(self.cursor[l]).copied() {
                    Some(a) => (self.issued[a] <= self.now).then_some((a, l)),
                    None => Some((usize::MAX, l)),
                },
                LaneState::Waiting { action, .. } => {
                    let r = self.order.wait_record(action).expect("waits are bound");
                    self.recorded[r].then_some((action, l))
                }
                _ => None,
            })
            .min()
            .map(|(_, l)| l)
    }

    /// Moves lane `l` by one action at `now` (it is ready, or its wait is satisfied).
    fn advance(&mut self, l: usize) -> Result<(), SimError> {
        match self.state[l] {
            LaneState::Waiting { action, since } => {
                if self.now > since {
                    let label = self.label(action);
                    self.rec.span(LANES[l], SpanKind::Wait, since, self.now, label, action);
                }
                self.cursor[l] += 1;
                self.state[l] = LaneState::Ready;
                self.ready_since[l] = self.now;
            }
            LaneState::Ready => match self.lanes[l].get(self.cursor[l]) {
                Some(&a) => {
                    if self.now > self.ready_since[l] {
                        let label = self.label(a);
                        self.rec.span(LANES[l], SpanKind::Issue, self.ready_since[l], self.now, label, a);
                    }
                    self.ready_since[l] = self.now;
                    self.start(l, a)?
                }
                None => self.state[l] = LaneState::Done,
            },
            _ => {}
        }
        Ok(())
    }

    fn label(&self, a: usize) -> String {
        action_label(self.program, &self.schedule.actions[a])
    }

    fn name(&self, t: TensorId) -> String {
        self.program.inventory.tensor(t).name.clone()
    }

    /// Starts action `a` on lane `l` (the lane is ready and `a` is next on it).
    fn start(&mut self, l: usize, a: usize) -> Result<(), SimError> {
        let now = self.now;
        let scale = (self.scale)(a);
        match self.schedule.actions[a] {
            Action::Record(..) => {
                self.recorded[a] = true;
                self.cursor[l] += 1;
            }
            Action::Wait(..) => {
                let r = self.order.wait_record(a).expect("waits are bound");
                if self.recorded[r] {
                    self.cursor[l] += 1;
                } else {
                    self.state[l] = LaneState::Waiting { action: a, since: now };
                }
            }
            Action::Alloc(t, _) => {
                let s = &mut self.tensors[t.index()];
                if s.allocated {
                    return Err(SimError::DoubleAlloc { action: a, label: self.label(a), tensor: self.name(t) });
                }
                s.allocated = true;
                s.dev = Dev::Empty;
                s.dropped = false;
                self.rec.alloc(t, now, a);
                self.update_block_of(t);
                self.cursor[l] += 1;
            }
            Action::Free(t, _) => {
                let s = self.tensors[t.index()];
                if !s.allocated {
                    return Err(SimError::DoubleFree { action: a, label: self.label(a), tensor: self.name(t) });
                }
                if s.users > 0 {
                    return Err(SimError::FreedInUse {
                        action: a,
                        label: self.label(a),
                        tensor: self.name(t),
                        user: s.last_user,
                        user_label: self.label(s.last_user),
                    });
                }
                let persistent = self.program.inventory.tensor(t).persistent;
                if persistent && !s.host_current {
                    return Err(SimError::LostData { action: a, label: self.label(a), tensor: self.name(t) });
                }
                let s = &mut self.tensors[t.index()];
                s.allocated = false;
                s.dropped = !persistent && !s.host_current && self.recomputable[t.index()];
                self.rec.free(t, now);
                self.update_block_of(t);
                self.cursor[l] += 1;
            }
            Action::Run(o) | Action::Recompute(o) => {
                let op = self.program.op(o);
                for t in op.touches() {
                    if !self.tensors[t.index()].allocated {
                        return Err(SimError::NotAllocated { action: a, label: self.label(a), op: op.name.clone(), tensor: self.name(t) });
                    }
                }
                for &t in &op.reads {
                    let why = match self.tensors[t.index()].dev {
                        Dev::Valid => continue,
                        Dev::Arriving(p) => format!("its prefetch (action {p}) is still copying it in"),
                        Dev::Empty => "it was allocated but never written or prefetched".to_string(),
                        Dev::Stale => "a host op updated it since it was brought in; prefetch it again".to_string(),
                    };
                    return Err(SimError::NotArrived {
                        action: a,
                        label: self.label(a),
                        op: op.name.clone(),
                        tensor: self.name(t),
                        at: Seconds(now),
                        why,
                    });
                }
                for t in op.touches() {
                    self.use_start(t, a);
                }
                let end = now + op_time(op, self.hw).0 * scale;
                self.state[l] = LaneState::Busy { action: a, start: now, end };
                self.cursor[l] += 1;
            }
            Action::HostRun(o) => {
                let op = self.program.op(o);
                let Some(d) = host_op_time(op, self.program, self.hw) else {
                    return Err(SimError::NotAHostOp { action: a, label: self.label(a), op: op.name.clone() });
                };
                for &t in &op.reads {
                    let s = self.tensors[t.index()];
                    if s.host_current {
                        continue;
                    }
                    let why = match s.evicting {
                        Some(e) => format!("its eviction (action {e}) is still copying it out"),
                        None => "it was written on the GPU since it was last evicted, or never copied to the host".into(),
                    };
                    return Err(SimError::NotOnHost { action: a, label: self.label(a), op: op.name.clone(), tensor: self.name(t), why });
                }
                self.state[l] = LaneState::Host { action: a, start: now, remaining: d.0 * scale };
                self.cursor[l] += 1;
            }
            Action::Prefetch(t) => {
                let s = self.tensors[t.index()];
                if !s.allocated {
                    return Err(SimError::PrefetchUnallocated { action: a, label: self.label(a), tensor: self.name(t) });
                }
                if !s.host_current {
                    return Err(SimError::NoHostCopy { action: a, label: self.label(a), tensor: self.name(t) });
                }
                self.tensors[t.index()].dev = Dev::Arriving(a);
                self.use_start(t, a);
                let bytes =
                    models::cost::copy_work_bytes(self.program.inventory.tensor(t).bytes.as_f64(), Direction::HostToDevice, self.hw)
                        * scale;
                self.state[l] = LaneState::Copy { action: a, start: now, remaining: bytes, dir: Direction::HostToDevice };
                self.update_block_of(t);
                self.cursor[l] += 1;
            }
            Action::Evict(t) => {
                let s = self.tensors[t.index()];
                if !s.allocated {
                    return Err(SimError::EvictUnallocated { action: a, label: self.label(a), tensor: self.name(t) });
                }
                let why = match s.dev {
                    Dev::Valid => None,
                    Dev::Arriving(p) => Some(format!("its prefetch (action {p}) is still copying it in")),
                    Dev::Empty => Some("it was allocated but never written or prefetched".into()),
                    Dev::Stale => Some("a host op updated the host copy since".into()),
                };
                if let Some(why) = why {
                    return Err(SimError::EvictEmpty { action: a, label: self.label(a), tensor: self.name(t), why });
                }
                let s = &mut self.tensors[t.index()];
                s.host_current = false;
                s.evicting = Some(a);
                self.use_start(t, a);
                let bytes =
                    models::cost::copy_work_bytes(self.program.inventory.tensor(t).bytes.as_f64(), Direction::DeviceToHost, self.hw)
                        * scale;
                self.state[l] = LaneState::Copy { action: a, start: now, remaining: bytes, dir: Direction::DeviceToHost };
                self.update_block_of(t);
                self.cursor[l] += 1;
            }
        }
        Ok(())
    }

    fn use_start(&mut self, t: TensorId, a: usize) {
        let s = &mut self.tensors[t.index()];
        s.users += 1;
        s.last_user = a;
    }

    fn use_end(&mut self, t: TensorId) {
        let s = &mut self.tensors[t.index()];
        s.users -= 1;
    }

    /// Finishes lane `l`'s running op or copy at `now`.
    fn complete(&mut self, l: usize) {
        let now = self.now;
        let (a, start) = match self.state[l] {
            LaneState::Busy { action, start, .. } | LaneState::Copy { action, start, .. } | LaneState::Host { action, start, .. } => {
                (action, start)
            }
            _ => return,
        };
        self.state[l] = LaneState::Ready;
        self.ready_since[l] = now;
        let label = self.label(a);
        match self.schedule.actions[a] {
            Action::Run(o) | Action::Recompute(o) => {
                let op = self.program.op(o);
                for t in op.writes.iter().chain(&op.allocs) {
                    let s = &mut self.tensors[t.index()];
                    s.dev = Dev::Valid;
                    s.host_current = false;
                }
                for t in op.touches() {
                    self.use_end(t);
                }
                let kind = if matches!(self.schedule.actions[a], Action::Run(_)) { SpanKind::Op } else { SpanKind::Recompute };
                self.rec.span(LANES[l], kind, start, now, op.name.clone(), a);
            }
            Action::HostRun(o) => {
                let op = self.program.op(o);
                for t in op.writes.iter().chain(&op.allocs) {
                    let s = &mut self.tensors[t.index()];
                    s.host_current = true;
                    if s.allocated && s.dev == Dev::Valid {
                        s.dev = Dev::Stale;
                    }
                    self.update_block_of(*t);
                }
                self.rec.span(LANES[l], SpanKind::HostOp, start, now, op.name.clone(), a);
            }
            Action::Prefetch(t) => {
                let s = &mut self.tensors[t.index()];
                if s.dev == Dev::Arriving(a) {
                    s.dev = Dev::Valid;
                }
                self.use_end(t);
                self.update_block_of(t);
                self.rec.span(LANES[l], SpanKind::Prefetch, start, now, self.name(t), a);
            }
            Action::Evict(t) => {
                let s = &mut self.tensors[t.index()];
                s.host_current = true;
                s.evicting = None;
                self.use_end(t);
                self.update_block_of(t);
                self.rec.span(LANES[l], SpanKind::Evict, start, now, self.name(t), a);
            }
            _ => unreachable!("only ops and copies take time: {label}"),
        }
    }

    fn update_block_of(&mut self, t: TensorId) {
        self.update_block(self.program.inventory.tensor(t).block);
    }

    fn update_block(&mut self, b: models::BlockId) {
        let block = self.program.inventory.block(b);
        if !block.kind.placeable() {
            return;
        }
        let ts = || block.tensors.iter().map(|t| &self.tensors[t.index()]);
        let state = if ts().any(|s| s.evicting.is_some() || (s.allocated && matches!(s.dev, Dev::Arriving(_)))) {
            Some(BlockState::InFlight)
        } else if ts().any(|s| s.allocated) {
            Some(BlockState::Gpu)
        } else if ts().any(|s| s.host_current) {
            Some(BlockState::Host)
        } else if ts().any(|s| s.dropped) {
            Some(BlockState::Recomputed)
        } else {
            None
        };
        self.rec.block(b, state, self.now);
    }

    /// The next step starts where this one ends: same tensors allocated, their copies current.
    fn check_periodic(&self) -> Result<(), SimError> {
        for (i, s) in self.tensors.iter().enumerate() {
            let (on_gpu, host_resident) = self.start[i];
            let why = if on_gpu && !s.allocated {
                Some("it starts the step on the GPU but ends it freed")
            } else if !on_gpu && s.allocated {
                Some("it is still allocated on the GPU at the end of the step")
            } else if on_gpu && s.dev != Dev::Valid {
                Some("its GPU copy is out of date at the end (a host op updated it; prefetch it again)")
            } else if host_resident && !s.host_current {
                Some("it lives on the host but its host copy is out of date at the end (evict it after its update)")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(SimError::NotPeriodic { tensor: self.name(TensorId(i as u32)), why: why.into() });
            }
        }
        Ok(())
    }
}
