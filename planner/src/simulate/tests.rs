//! Hand-built schedules with times and memory worked out by hand, every error, the all-on-GPU
//! schedule against the lifetime graph, and perturbed timings of offload schedules.

use super::*;
use crate::LifetimeGraph;
use models::cost::{all_gpu_step_time, op_time};
use models::inventory::{MemoryCategory, Owner};
use models::schedule::{Action, Lane};
use models::schedule::{EventId, Prediction, SCHEDULE_FORMAT_VERSION};
use models::trace::Trace;
use models::trace::{BlockState, SpanKind};
use models::units::GIB;
use models::{Bytes, Seconds};
use models::{BytesPerSecond, FlopsPerSecond, OpKind, TensorId};
use proptest::prelude::*;

use crate::shipped::config;

fn tiny() -> Program {
    Program::build(&config("gpt2-tiny"))
}

/// Round rates, so times can be worked out by hand; duplex slower both ways.
fn hw() -> HardwareProfile {
    HardwareProfile {
        name: "test".into(),
        provenance: models::hardware::Provenance::Public("test".into()),
        memory: Bytes(80 * GIB),
        host_memory: None,
        host_pinnable: None,
        host_pin_rate: None,
        h2d: BytesPerSecond(10e9),
        d2h: BytesPerSecond(8e9),
        h2d_duplex: BytesPerSecond(6e9),
        d2h_duplex: BytesPerSecond(4e9),
        matmul_flops: FlopsPerSecond(100e12),
        attention_flops: FlopsPerSecond(50e12),
        memory_bandwidth: BytesPerSecond(1e12),
        launch_overhead: Seconds(4e-6),
        fixed_overhead: Bytes(GIB),
        alloc_granularity: Bytes(512),
        host_memory_bandwidth: BytesPerSecond(20e9),
        host_adam_params_per_second: 1e9,
        pool_slack: Bytes::ZERO,
        pool_slack_fraction: 0.0,
        pool_reserve_granularity: Bytes::ZERO,
        pinned_device_fraction: 0.0,
        host_adam_call_overhead: Seconds::ZERO,
        host_sharing: None,
        interconnect: None,
        issue: None,
        kernels: Default::default(),
        sequence_overhead: Seconds::ZERO,
        host_kernels: Default::default(),
        host_ops_probe: None,
        h2d_latency: Seconds::ZERO,
        d2h_latency: Seconds::ZERO,
        host_call_latency: Seconds::ZERO,
    }
}

fn schedule(p: &Program, actions: Vec<Action>, host_resident: Vec<TensorId>) -> Schedule {
    Schedule {
        format_version: SCHEDULE_FORMAT_VERSION,
        inventory_digest: models::digest::program_digest(p),
        model: p.config.clone(),
        setup: models::TrainingSetup::gpt3_for(p),
        hardware: "test".into(),
        budget: Bytes(80 * GIB),
        strategy: String::new(),
        decisions: Vec::new(),
        host_resident,
        actions,
        prediction: Prediction {
            peak_allocated: Bytes::ZERO,
            peak_action: 0,
            peak_at: String::new(),
            fixed_overhead: Bytes::ZERO,
            step_time: Seconds::ZERO,
            compute_time: Seconds::ZERO,
            h2d_bytes: Bytes::ZERO,
            d2h_bytes: Bytes::ZERO,
            exposed_transfer: Seconds::ZERO,
            hidden_transfer: Seconds::ZERO,
            solver: None,
            arena: None,
            pinned_host: models::Bytes(0),
            device: None,
        },
        checksum: String::new(),
    }
}

/// The program's own order on the compute lane: allocs, run, frees.
fn all_gpu_actions(p: &Program) -> Vec<Action> {
    let mut v = Vec::new();
    for op in &p.ops {
        v.extend(op.allocs.iter().map(|t| Action::Alloc(*t, Lane::Compute)));
        v.push(Action::Run(op.id));
        v.extend(op.frees.iter().map(|t| Action::Free(*t, Lane::Compute)));
    }
    v
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-9)
}

fn op(p: &Program, k: OpKind) -> &models::Op {
    p.find(k).unwrap()
}

fn bytes(p: &Program, t: TensorId) -> f64 {
    p.inventory.tensor(t).bytes.as_f64()
}

fn resident_bytes(p: &Program, g: Bytes, host: &[TensorId]) -> u64 {
    p.inventory.tensors.iter().filter(|t| t.persistent && !host.contains(&t.id)).map(|t| t.bytes.round_up(g).0).sum()
}

#[test]
fn all_gpu_peak_and_step_time_match_the_lifetime_graph_and_cost_model() {
    for name in ["gpt2-tiny", "gpt2-124m", "gpt3-1.3b"] {
        let p = Program::build(&config(name));
        let s = schedule(&p, all_gpu_actions(&p), vec![]);
        let g = LifetimeGraph::build(&p);
        // Granularity 1: exactly the lifetime graph's live bytes.
        let mut h = hw();
        h.alloc_granularity = Bytes(1);
        let t = simulate(&p, &h, &s).unwrap();
        let (peak, at) = g.peak();
        assert_eq!(t.peak_allocated, peak, "{name}");
        assert!(matches!(s.actions[t.peak_action], Action::Alloc(..)));
        let next_run = s.actions[t.peak_action..].iter().find_map(|a| if let Action::Run(o) = a { Some(*o) } else { None });
        assert_eq!(next_run, Some(at), "{name}: the peak is reached allocating for the lifetime graph's peak op");
        assert!(close(t.step_time.0, all_gpu_step_time(&p, &h).0), "{name}: {} vs {}", t.step_time, all_gpu_step_time(&p, &h));
        // Granularity 512: the same walk with every tensor rounded up.
        let h = hw();
        let t = simulate(&p, &h, &s).unwrap();
        let r = |x: &TensorId| p.inventory.tensor(*x).bytes.round_up(h.alloc_granularity).0;
        let mut live = resident_bytes(&p, h.alloc_granularity, &[]);
        let mut want = live;
        for op in &p.ops {
            live += op.allocs.iter().map(r).sum::<u64>();
            want = want.max(live);
            live -= op.frees.iter().map(r).sum::<u64>();
        }
        assert_eq!(t.peak_allocated, Bytes(want), "{name}");
        assert_eq!(t.memory.last().unwrap().total(), t.memory[0].total(), "{name}: ends where it began");
        assert_eq!(worst_case_peak(&p, &h, &s).unwrap().0, t.peak_allocated, "one lane: the worst case is the case");
        let pr = prediction_from_trace(&t, &s, &p, &h);
        assert!(close(pr.compute_time.0, pr.step_time.0));
        assert_eq!((pr.h2d_bytes, pr.d2h_bytes, pr.exposed_transfer), (Bytes::ZERO, Bytes::ZERO, Seconds::ZERO));
        assert_eq!(pr.peak_at, format!("{} ({})", p.op(at).name, action_label(&p, &s.actions[t.peak_action])));
    }
}

/// A copy takes its latency and then its bytes at the rate, each direction its own.
#[test]
fn a_copy_pays_its_latency_before_its_bytes() {
    use Action::*;
    let p = tiny();
    let mut h = hw();
    h.h2d_latency = Seconds(5e-6);
    h.d2h_latency = Seconds(3e-6);
    let w0 = p.inventory.layers[0].weights;
    let opt1 = p.inventory.layers[1].optimizer;
    let s = schedule(&p, vec![Alloc(w0, Lane::HostToDevice), Prefetch(w0), Free(w0, Lane::HostToDevice)], vec![w0]);
    let t = simulate(&p, &h, &s).unwrap();
    let want = 5e-6 + bytes(&p, w0) / h.h2d.0;
    assert!(close(t.spans.iter().find(|s| s.kind == SpanKind::Prefetch).unwrap().end.0, want));
    let s = schedule(&p, vec![Evict(opt1)], vec![]);
    let t = simulate(&p, &h, &s).unwrap();
    let want = 3e-6 + bytes(&p, opt1) / h.d2h.0;
    assert!(close(t.spans.iter().find(|s| s.kind == SpanKind::Evict).unwrap().end.0, want));
}

/// embed on the compute lane while layer 0's weights come in; ln1 waits for them.
fn prefetch_then_ln1(p: &Program) -> (Vec<Action>, Vec<TensorId>) {
    use Action::*;
    let (c, h) = (Lane::Compute, Lane::HostToDevice);
    let w0 = p.inventory.layers[0].weights;
    let a = p.inventory.acts[0];
    let embed = op(p, OpKind::Embed).id;
    let ln1 = op(p, OpKind::Ln1(0)).id;
    let actions = vec![
        Alloc(a.x_in, c),
        Run(embed),
        Alloc(w0, h),
        Prefetch(w0),
        Record(EventId(1), h),
        Wait(EventId(1), c),
        Alloc(a.ln1, c),
        Alloc(a.ln1_stats, c),
        Run(ln1),
        Free(a.ln1, c),
        Free(a.ln1_stats, c),
        Free(a.x_in, c),
        Free(w0, c),
    ];
    (actions, vec![w0])
}

#[test]
fn a_prefetch_overlaps_an_op_and_the_wait_exposes_the_rest() {
    let p = tiny();
    let h = hw();
    let (actions, host) = prefetch_then_ln1(&p);
    let s = schedule(&p, actions, host.clone());
    let t = simulate(&p, &h, &s).unwrap();
    let embed = op_time(op(&p, OpKind::Embed), &h).0;
    let copy = bytes(&p, host[0]) / h.h2d.0;
    let ln1 = op_time(op(&p, OpKind::Ln1(0)), &h).0;
    assert!(copy > embed, "the case this test means: the copy outlasts the op");
    assert!(close(t.step_time.0, copy + ln1), "{} vs {}", t.step_time.0, copy + ln1);
    let wait = t.spans.iter().find(|s| s.kind == SpanKind::Wait).unwrap();
    assert_eq!(wait.lane, Lane::Compute);
    assert!(close(wait.start.0, embed) && close(wait.end.0, copy));
    let run = t.spans.iter().find(|s| s.label == "layer0.ln1").unwrap();
    assert!(close(run.start.0, copy));
    // Memory: resident tensors, then x_in, w0, ln1 and its stats at once.
    let a = p.inventory.acts[0];
    let g = h.alloc_granularity;
    let want = resident_bytes(&p, g, &host)
        + [a.x_in, host[0], a.ln1, a.ln1_stats].iter().map(|x| p.inventory.tensor(*x).bytes.round_up(g).0).sum::<u64>();
    assert_eq!(t.peak_allocated, Bytes(want));
    assert!(close(t.peak_time.0, copy), "ln1's allocations come after the wait");
    assert_eq!(t.memory.last().unwrap().total(), Bytes(resident_bytes(&p, g, &host)));
    let weights = |m: &models::trace::MemorySample| m.by_category[&MemoryCategory::Weights];
    let most = t.memory.iter().map(weights).max().unwrap();
    assert_eq!(most, weights(&t.memory[0]) + p.inventory.tensor(host[0]).bytes.round_up(g), "layer 0's weights counted as weights");
    // Layer 0's weights: on the host, in flight, on the GPU, back on the host.
    let b = p.inventory.tensor(host[0]).block;
    // (Allocated and freed at the step's edges: no host time in this step.)
    let spans: Vec<_> = t.blocks.iter().filter(|x| x.block == b).collect();
    assert_eq!(spans.iter().map(|x| x.state).collect::<Vec<_>>(), vec![BlockState::InFlight, BlockState::Gpu]);
    assert!(spans[0].start.0 == 0.0 && close(spans[0].end.0, copy) && close(spans[1].end.0, t.step_time.0));
    let pr = prediction_from_trace(&t, &s, &p, &h);
    assert!(close(pr.exposed_transfer.0, copy - embed));
    assert!(close(pr.hidden_transfer.0, embed));
    assert_eq!(pr.h2d_bytes, p.inventory.tensor(host[0]).bytes);
    assert!(close(pr.compute_time.0, embed + ln1));
}

#[test]
fn copies_both_ways_share_the_link_at_the_duplex_rate() {
    use Action::*;
    let p = tiny();
    let h = hw();
    let w0 = p.inventory.layers[0].weights;
    let opt1 = p.inventory.layers[1].optimizer;
    let (a, b) = (bytes(&p, w0), bytes(&p, opt1));
    // Both start at 0; the prefetch (smaller) ends first, then the evict speeds up.
    let s = schedule(&p, vec![Alloc(w0, Lane::HostToDevice), Prefetch(w0), Evict(opt1), Free(w0, Lane::HostToDevice)], vec![w0]);
    let t = simulate(&p, &h, &s).unwrap();
    let t1 = a / h.h2d_duplex.0;
    assert!(t1 < b / h.d2h_duplex.0);
    let end = t1 + (b - h.d2h_duplex.0 * t1) / h.d2h.0;
    let span = |k: SpanKind| t.spans.iter().find(|s| s.kind == k).unwrap().clone();
    assert!(close(span(SpanKind::Prefetch).end.0, t1));
    assert!(close(span(SpanKind::Evict).end.0, end));
    assert!(close(t.step_time.0, end));

    // The evict starts when embed ends (a wait on a compute event): the prefetch runs alone at
    // first, then both at the duplex rate, then the evict alone.
    let embed = op(&p, OpKind::Embed);
    let e = op_time(embed, &h).0;
    let x0 = p.inventory.acts[0].x_in;
    let (c, d) = (Lane::Compute, Lane::DeviceToHost);
    let s = schedule(
        &p,
        vec![
            Alloc(w0, Lane::HostToDevice),
            Prefetch(w0),
            Alloc(x0, c),
            Run(embed.id),
            Record(EventId(7), c),
            Wait(EventId(7), d),
            Evict(opt1),
            Free(x0, c),
            Free(w0, Lane::HostToDevice),
        ],
        vec![w0],
    );
    let t = simulate(&p, &h, &s).unwrap();
    let t1 = e + (a - h.h2d.0 * e) / h.h2d_duplex.0;
    let end = t1 + (b - h.d2h_duplex.0 * (t1 - e)) / h.d2h.0;
    assert!(close(span_of(&t, SpanKind::Evict).start.0, e));
    assert!(close(span_of(&t, SpanKind::Prefetch).end.0, t1), "{} vs {t1}", span_of(&t, SpanKind::Prefetch).end.0);
    assert!(close(t.step_time.0, end));
    let wait = span_of(&t, SpanKind::Wait);
    assert_eq!((wait.lane, wait.start.0), (Lane::DeviceToHost, 0.0));
    assert!(close(wait.end.0, e));
    let pr = prediction_from_trace(&t, &s, &p, &h);
    assert_eq!(pr.exposed_transfer, Seconds::ZERO, "the compute lane never waited on a copy");
    assert_eq!((pr.h2d_bytes, pr.d2h_bytes), (Bytes(a as u64), Bytes(b as u64)));
}

fn span_of(t: &Trace, k: SpanKind) -> models::trace::Span {
    t.spans.iter().find(|s| s.kind == k).unwrap().clone()
}

#[test]
fn scale_multiplies_each_duration() {
    let p = tiny();
    let h = hw();
    let s = schedule(&p, all_gpu_actions(&p), vec![]);
    let t = simulate_with_timing(&p, &h, &s, &|_| 3.0).unwrap();
    assert!(close(t.step_time.0, 3.0 * all_gpu_step_time(&p, &h).0));
    let (actions, host) = prefetch_then_ln1(&p);
    let s = schedule(&p, actions, host.clone());
    // Copy twice as slow, ops as modelled.
    let t = simulate_with_timing(&p, &h, &s, &|i| if i == 3 { 2.0 } else { 1.0 }).unwrap();
    let copy = 2.0 * bytes(&p, host[0]) / h.h2d.0;
    assert!(close(t.step_time.0, copy + op_time(op(&p, OpKind::Ln1(0)), &h).0));
}

fn err(p: &Program, actions: Vec<Action>, host: Vec<TensorId>) -> SimError {
    simulate(p, &hw(), &schedule(p, actions, host)).unwrap_err()
}

#[test]
fn each_broken_schedule_gets_its_own_error_naming_action_op_and_tensor() {
    use Action::*;
    let p = tiny();
    let c = Lane::Compute;
    let (good, host) = prefetch_then_ln1(&p);
    let a = p.inventory.acts[0];

    // ln1 without waiting for the prefetch: data not there when it starts.
    let mut v = good.clone();
    v.remove(5);
    let e = err(&p, v, host.clone());
    assert!(matches!(e, SimError::NotArrived { action: 7, .. }), "{e}");
    let m = e.to_string();
    assert!(m.contains("layer0.ln1") && m.contains("layer0.weights") && m.contains("action 3"), "{m}");

    // ... and with a copy fast enough to make it in time, still a race.
    let mut v = good.clone();
    v.remove(5);
    let s = schedule(&p, v, host.clone());
    let e = simulate_with_timing(&p, &hw(), &s, &|i| if i == 3 { 1e-6 } else { 1.0 }).unwrap_err();
    assert!(matches!(e, SimError::Race { action: 7, other: 3, .. }), "{e}");

    // Never prefetched at all.
    let mut v = good.clone();
    v.drain(3..6);
    let e = err(&p, v, host.clone());
    assert!(matches!(&e, SimError::NotArrived { why, .. } if why.contains("never")), "{e}");

    // ln1 without its output allocated.
    let mut v = good.clone();
    v.remove(6);
    v.retain(|x| *x != Free(a.ln1, c));
    let e = err(&p, v, host.clone());
    assert!(matches!(&e, SimError::NotAllocated { op, tensor, .. } if op == "layer0.ln1" && tensor == "layer0.ln1"), "{e}");

    // Prefetch with no allocation.
    let mut v = good.clone();
    v.remove(2);
    let e = err(&p, v, host.clone());
    assert!(matches!(&e, SimError::PrefetchUnallocated { tensor, .. } if tensor == "layer0.weights"), "{e}");

    // Double alloc, double free.
    let mut v = good.clone();
    v.insert(1, Alloc(a.x_in, c));
    assert!(matches!(err(&p, v, host.clone()), SimError::DoubleAlloc { action: 1, .. }));
    let mut v = good.clone();
    v.push(Free(a.x_in, c));
    assert!(matches!(err(&p, v, host.clone()), SimError::DoubleFree { action: 13, .. }));

    // A wait on an event never recorded (before it in the list): deadlock.
    let mut v = good.clone();
    v[5] = Wait(EventId(9), c);
    let e = err(&p, v, host.clone());
    assert!(matches!(e, SimError::UnrecordedEvent { action: 5, event: 9, .. }), "{e}");
    assert!(e.to_string().contains("deadlock"));

    // Freeing the only current copy of a persistent tensor: layer 0's weights on the GPU.
    let e = err(&p, vec![Free(p.inventory.layers[0].weights, c)], vec![]);
    assert!(matches!(e, SimError::LostData { .. }), "{e}");

    // Freeing while a copy reads the buffer.
    let opt1 = p.inventory.layers[1].optimizer;
    let e = err(&p, vec![Evict(opt1), Free(opt1, c), Alloc(opt1, c)], vec![]);
    assert!(matches!(e, SimError::FreedInUse { action: 1, user: 0, .. }), "{e}");

    // Not periodic: a temporary left allocated.
    let mut v = good.clone();
    v.pop();
    let e = err(&p, v, host.clone());
    assert!(matches!(&e, SimError::NotPeriodic { tensor, .. } if tensor == "layer0.weights"), "{e}");

    // Over budget: carries the trace.
    let mut s = schedule(&p, good.clone(), host.clone());
    s.budget = Bytes(GIB);
    match simulate(&p, &hw(), &s).unwrap_err() {
        SimError::OverBudget { peak, trace, at, .. } => {
            assert_eq!(peak, trace.peak_allocated);
            assert!(at.contains("layer0.ln1"), "{at}");
        }
        e => panic!("{e}"),
    }

    // A GPU-only op on the host.
    let e = err(&p, vec![HostRun(op(&p, OpKind::Qkv(0)).id)], vec![]);
    assert!(matches!(e, SimError::NotAHostOp { .. }), "{e}");
}

#[test]
fn host_ops_need_current_host_copies() {
    use Action::*;
    let p = tiny();
    let (c, d) = (Lane::Compute, Lane::DeviceToHost);
    let o = Owner::Layer(1);
    let pt = p.inventory.params(o);
    let adam = op(&p, OpKind::Adam(o)).id;
    // Host AdamW reading gradients that never went to the host.
    let e = err(&p, vec![HostRun(adam)], vec![pt.optimizer]);
    assert!(matches!(&e, SimError::NotOnHost { tensor, op, .. } if tensor == "layer1.grads" && op == "layer1.adam"), "{e}");
    // Evicting a buffer nothing was written into.
    let v = vec![Alloc(pt.grads, c), Record(EventId(1), c), Wait(EventId(1), d), Evict(pt.grads), Free(pt.grads, d)];
    let e = err(&p, v, vec![]);
    assert!(matches!(&e, SimError::EvictEmpty { tensor, .. } if tensor == "layer1.grads"), "{e}");
}

/// A hand-made offload schedule: each tensor in `streamed` lives on the GPU only around its
/// uses (runs of ops at most 3 apart). Before a run, the H2D lane waits until compute reaches
/// the op `lookahead` ops earlier (and for the tensor's last release), allocates, prefetches
/// and records; compute waits for that before the run. After a run, a tensor written since its
/// host copy was made goes back on the D2H lane (evict, free), otherwise compute frees it. A
/// tensor produced inside the step starts on the GPU at its producer, as in the program.
fn offload_schedule(p: &Program, streamed: &[TensorId], lookahead: usize) -> Schedule {
    use Action::*;
    let (c, h2d, d2h) = (Lane::Compute, Lane::HostToDevice, Lane::DeviceToHost);
    let n = p.ops.len();
    let inv = &p.inventory;
    let is_streamed = |t: &TensorId| streamed.contains(t);
    // Per op: the H2D work issued before it, what compute waits for, and the releases after it.
    let mut issue: Vec<Vec<(TensorId, usize)>> = vec![Vec::new(); n]; // (tensor, run start op)
    let mut runs_of: Vec<Vec<(usize, usize)>> = Vec::new();
    for &t in streamed {
        let uses: Vec<usize> = p.ops.iter().filter(|o| o.touches().any(|x| x == t)).map(|o| o.id.index()).collect();
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for u in uses {
            match runs.last_mut() {
                Some(r) if u - r.1 <= 3 => r.1 = u,
                _ => runs.push((u, u)),
            }
        }
        for (k, r) in runs.iter().enumerate() {
            let produced = p.ops[r.0].allocs.contains(&t);
            if !produced {
                let floor = if k == 0 { 0 } else { runs[k - 1].1 + 1 };
                issue[r.0.saturating_sub(lookahead).max(floor)].push((t, r.0));
            }
        }
        runs_of.push(runs);
    }
    let host: Vec<TensorId> = streamed.iter().copied().filter(|t| inv.tensor(*t).persistent).collect();
    let mut ev = 0u32;
    let mut next = || {
        ev += 1;
        EventId(ev)
    };
    let mut v = Vec::new();
    let mut ready: Vec<Option<EventId>> = vec![None; inv.tensors.len()];
    let mut released: Vec<Option<EventId>> = vec![None; inv.tensors.len()];
    // Written on the GPU since the host copy was made.
    let mut dirty: Vec<bool> = vec![false; inv.tensors.len()];
    for (i, op) in p.ops.iter().enumerate() {
        if !issue[i].is_empty() {
            let reached = next();
            v.push(Record(reached, c));
            v.push(Wait(reached, h2d));
            for &(t, _) in &issue[i] {
                if let Some(e) = released[t.index()] {
                    v.push(Wait(e, h2d));
                }
                v.push(Alloc(t, h2d));
                v.push(Prefetch(t));
                let e = next();
                v.push(Record(e, h2d));
                ready[t.index()] = Some(e);
            }
        }
        for t in op.touches() {
            if let Some(e) = ready[t.index()].take() {
                v.push(Wait(e, c));
            }
        }
        v.extend(op.allocs.iter().map(|t| Alloc(*t, c)));
        v.push(Run(op.id));
        for t in op.writes.iter().chain(&op.allocs) {
            dirty[t.index()] = true;
        }
        v.extend(op.frees.iter().filter(|t| !is_streamed(t)).map(|t| Free(*t, c)));
        for (k, &t) in streamed.iter().enumerate() {
            let Some(r) = runs_of[k].iter().position(|r| r.1 == i) else { continue };
            let last = r + 1 == runs_of[k].len();
            if last && op.frees.contains(&t) {
                v.push(Free(t, c));
            } else if dirty[t.index()] {
                let done = next();
                v.push(Record(done, c));
                v.push(Wait(done, d2h));
                v.push(Evict(t));
                v.push(Free(t, d2h));
                let e = next();
                v.push(Record(e, d2h));
                released[t.index()] = Some(e);
                dirty[t.index()] = false;
            } else {
                v.push(Free(t, c));
                let e = next();
                v.push(Record(e, c));
                released[t.index()] = Some(e);
            }
        }
    }
    schedule(p, v, host)
}

/// Layer weights (streamed) and saved activations (offloaded) of the chosen layers.
fn offload_choice(p: &Program, weights: &[bool], acts: &[bool]) -> Vec<TensorId> {
    let inv = &p.inventory;
    let mut s = Vec::new();
    for l in 0..p.config.layers as usize {
        if weights[l % weights.len()] {
            s.push(inv.layers[l].weights);
        }
        if acts[l % acts.len()] {
            let a = inv.acts[l];
            s.extend([a.x_in, a.ln1, a.qkv, a.att, a.atty, a.x_mid, a.ln2, a.fch, a.fch_gelu]);
        }
    }
    s
}

#[test]
fn a_hand_made_offload_schedule_saves_memory_and_costs_copies() {
    let p = tiny();
    let h = hw();
    let all = simulate(&p, &h, &schedule(&p, all_gpu_actions(&p), vec![])).unwrap();
    let s = offload_schedule(&p, &offload_choice(&p, &[true], &[true]), 4);
    let t = simulate(&p, &h, &s).unwrap();
    assert!(t.peak_allocated < all.peak_allocated, "{} vs {}", t.peak_allocated, all.peak_allocated);
    assert!(t.step_time.0 > all.step_time.0);
    let pr = prediction_from_trace(&t, &s, &p, &h);
    assert!(pr.h2d_bytes > Bytes::ZERO && pr.d2h_bytes > Bytes::ZERO);
    assert!(close(
        (pr.exposed_transfer + pr.hidden_transfer).0,
        t.spans.iter().filter(|x| matches!(x.kind, SpanKind::Prefetch | SpanKind::Evict)).map(|x| (x.end - x.start).0).sum()
    ));
    let (worst, _) = worst_case_peak(&p, &h, &s).unwrap();
    assert!(worst >= t.peak_allocated);
    // Every block that moves has host and GPU spans.
    let b = p.inventory.tensor(p.inventory.acts[0].fch).block;
    let states: std::collections::HashSet<_> = t.blocks.iter().filter(|x| x.block == b).map(|x| x.state).collect();
    assert!(
        states.contains(&BlockState::Host) && states.contains(&BlockState::Gpu) && states.contains(&BlockState::InFlight),
        "{states:?}"
    );
}

/// A seed for `scale_of`: every action's duration gets its own factor.
fn scales() -> impl Strategy<Value = u64> {
    any::<u64>()
}

/// A factor in 0.2..5.0 for action `i`, log-uniform (splitmix64 of seed and index).
fn scale_of(seed: u64, i: usize) -> f64 {
    let mut z = seed.wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    (0.2f64.ln() + u * (5.0f64.ln() - 0.2f64.ln())).exp()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Invariants 1 and 2 on hand-made offload schedules: under any durations, no op runs
    /// before its inputs arrive, and the peak stays within the happens-before bound, which
    /// is the budget.
    #[test]
    fn perturbed_hand_made_offload_schedules_keep_their_invariants(
        weights in prop::collection::vec(any::<bool>(), 1..4),
        acts in prop::collection::vec(any::<bool>(), 1..4),
        lookahead in 1usize..8,
        scale in scales(),
    ) {
        let p = tiny();
        let h = hw();
        let mut s = offload_schedule(&p, &offload_choice(&p, &weights, &acts), lookahead);
        let (worst, _) = worst_case_peak(&p, &h, &s).unwrap();
        s.budget = worst + h.fixed_overhead;
        let nominal = simulate(&p, &h, &s).unwrap();
        prop_assert!(nominal.peak_allocated <= worst);
        let t = simulate_with_timing(&p, &h, &s, &|i| scale_of(scale, i));
        prop_assert!(t.is_ok(), "{}", t.unwrap_err());
        let t = t.unwrap();
        prop_assert!(t.peak_allocated <= worst);
        prop_assert!(t.peak_allocated + h.fixed_overhead <= s.budget);
    }
}

/// Random planner decisions for `p`: every owner and layer group picks one allowed choice.
fn random_decisions(p: &Program, picks: &[usize]) -> crate::Decisions {
    let mut d = crate::Decisions::all_gpu(p);
    let mut k = 0;
    let mut pick = |n: usize| {
        k += 1;
        picks[k % picks.len()] % n
    };
    for o in p.inventory.owners() {
        let all = crate::decisions::OwnerChoice::all(p, o);
        d.set_owner(o, all[pick(all.len())]);
    }
    let acts = crate::decisions::ActChoice::all();
    for l in 0..d.layers.len() {
        d.layers[l] = acts[pick(acts.len())];
    }
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Invariants 1 and 2 on the planner's own schedules (planner::emit of random decisions):
    /// under any durations no op runs before its inputs arrive, and the peak never exceeds the
    /// simulated plan's.
    #[test]
    fn perturbed_planner_schedules_keep_their_invariants(
        picks in prop::collection::vec(0usize..64, 1..40),
        untied in any::<bool>(),
        clipped in any::<bool>(),
        scale in scales(),
    ) {
        let mut cfg = config("gpt2-tiny");
        cfg.tied_embeddings = !untied;
        let clipping = if clipped { models::program::Clipping::GlobalNorm } else { models::program::Clipping::Off };
        let p = Program::build_with(&cfg, clipping);
        let h = hw();
        let d = random_decisions(&p, &picks);
        let mut s = crate::emit::emit(&p, &h, &d, Bytes(80 * GIB)).unwrap();
        let nominal = simulate(&p, &h, &s);
        prop_assert!(nominal.is_ok(), "{:?}: {}", d, nominal.unwrap_err());
        let nominal = nominal.unwrap();
        // The planner orders every allocation after the frees it reuses: no timing can do worse.
        let (worst, _) = worst_case_peak(&p, &h, &s).unwrap();
        prop_assert_eq!(nominal.peak_allocated, worst);
        s.budget = nominal.peak_allocated + h.fixed_overhead;
        let t = simulate_with_timing(&p, &h, &s, &|i| scale_of(scale, i));
        prop_assert!(t.is_ok(), "{:?}: {}", d, t.unwrap_err());
    }
}

#[test]
fn recomputed_and_offloaded_activations_show_in_block_residency() {
    let p = tiny();
    let h = hw();
    let block = |k: models::BlockKind| p.inventory.find_block(k).unwrap().id;
    let inner = block(models::BlockKind::LayerActivations(0));
    let states =
        |t: &Trace| -> std::collections::HashSet<BlockState> { t.blocks.iter().filter(|x| x.block == inner).map(|x| x.state).collect() };
    let mut d = crate::Decisions::all_gpu(&p);
    d.layers[0] = crate::decisions::ActChoice::RECOMPUTE;
    let s = crate::emit::emit(&p, &h, &d, Bytes(80 * GIB)).unwrap();
    let t = simulate(&p, &h, &s).unwrap();
    assert!(states(&t).contains(&BlockState::Recomputed), "{:?}", states(&t));
    assert!(t.spans.iter().any(|x| x.kind == SpanKind::Recompute && x.lane == Lane::Compute));
    let pr = prediction_from_trace(&t, &s, &p, &h);
    assert!(pr.compute_time.0 > all_gpu_step_time(&p, &h).0, "recomputation adds compute");

    d.layers[0] = crate::decisions::ActChoice::OFFLOAD;
    let s = crate::emit::emit(&p, &h, &d, Bytes(80 * GIB)).unwrap();
    let t = simulate(&p, &h, &s).unwrap();
    let st = states(&t);
    assert!(st.contains(&BlockState::Host) && st.contains(&BlockState::InFlight) && !st.contains(&BlockState::Recomputed), "{st:?}");
    // Spans of a block never overlap and lie within the step.
    let mut spans: Vec<_> = t.blocks.iter().filter(|x| x.block == inner).collect();
    spans.sort_by(|a, b| a.start.0.total_cmp(&b.start.0));
    for w in spans.windows(2) {
        assert!(w[0].end.0 <= w[1].start.0 + 1e-15);
    }
    assert!(spans.last().unwrap().end.0 <= t.step_time.0);
}

#[test]
fn host_work_and_copies_beside_it_keep_their_measured_shares() {
    use models::hardware::{HostSharing, Shares};
    use Action::*;
    let p = tiny();
    let o = Owner::Layer(1);
    let pt = p.inventory.params(o);
    let adam = op(&p, OpKind::Adam(o));
    let w0 = p.inventory.layers[0].weights;
    let h2d = Lane::HostToDevice;
    let s = schedule(&p, vec![HostRun(adam.id), Alloc(w0, h2d), Prefetch(w0), Free(w0, h2d)], vec![w0, pt.weights, pt.grads, pt.optimizer]);
    let ta = pt.params as f64 / hw().host_adam_params_per_second;
    let tc = bytes(&p, w0) / hw().h2d.0;
    assert!(tc < ta);
    let ends = |sharing: Option<HostSharing>| {
        let mut h = hw();
        h.host_sharing = sharing;
        let t = simulate(&p, &h, &s).unwrap();
        (span_of(&t, SpanKind::HostOp).end.0, span_of(&t, SpanKind::Prefetch).end.0)
    };
    let (a, c) = ends(None);
    assert!(close(a, ta) && close(c, tc), "{a} {c} vs {ta} {tc}");
    // Beside H2D copies AdamW keeps 80% and the copy 50%; the D2H and both-way entries do not
    // apply. Once the copy is done, AdamW runs at its full speed.
    let other = Shares { host: 0.1, h2d: 0.1, d2h: 0.1 };
    let sharing = HostSharing { beside_h2d: Shares { host: 0.8, h2d: 0.5, d2h: 1.0 }, beside_d2h: other, beside_both: other };
    let (a, c) = ends(Some(sharing));
    assert!(close(c, tc / 0.5), "{c} vs {}", tc / 0.5);
    assert!(close(a, c + (ta - 0.8 * c)), "{a} vs {}", c + (ta - 0.8 * c));
    assert_eq!(sharing.shares(false, true, true), Shares::FULL);
    assert_eq!(sharing.shares(true, false, false), Shares::FULL);
    assert_eq!(sharing.shares(true, true, true), other);
}

/// With the host's issue costs, no action starts before the host has issued it and every action
/// before it: a step of kernels faster than their launches runs at the host's pace, the compute
/// lane waits on launches, and the step's parts still add up; with costs of nothing it is the
/// step without them.
#[test]
fn the_host_issues_every_action_before_it_starts() {
    let p = tiny();
    let s = schedule(&p, all_gpu_actions(&p), vec![]);
    let plain = simulate(&p, &hw(), &s).unwrap();
    let mut h = hw();
    h.issue = Some(models::IssueCosts { kernel: Seconds::ZERO, product: Seconds::ZERO, copy: Seconds::ZERO, event: Seconds::ZERO });
    assert!(close(simulate(&p, &h, &s).unwrap().step_time.0, plain.step_time.0));
    // Issuing far slower than the GPU runs: the step is the host's issue time plus the last op.
    let k = Seconds(1e-3);
    h.issue = Some(models::IssueCosts { kernel: k, product: Seconds(2e-3), copy: k, event: k });
    let t = simulate(&p, &h, &s).unwrap();
    let issue: f64 = s.actions.iter().map(|a| models::cost::issue_time(a, &p, &h.issue.unwrap()).0).sum();
    let last = s.actions.iter().rev().find_map(|a| if let Action::Run(o) = a { Some(*o) } else { None }).unwrap();
    assert!(close(t.step_time.0, issue + models::cost::op_time(p.op(last), &h).0), "{} vs {issue}", t.step_time);
    let products: u32 = p.ops.iter().map(|o| o.products).sum();
    let launches: u32 = p.ops.iter().map(|o| o.launches).sum();
    assert!(close(issue, 1e-3 * (launches - products) as f64 + 2e-3 * products as f64));
    let b = crate::step_breakdown(&s, &t);
    assert!(b.waiting_on_launches.0 > 0.9 * (t.step_time - plain.step_time).0, "{b:?}");
    assert!((b.sum() - b.step).0.abs() < 1e-9, "{b:?}");
    assert!(t.spans.iter().any(|x| x.kind == SpanKind::Issue && x.lane == Lane::Compute));
}
