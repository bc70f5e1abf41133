//! A small plan built by hand for the report tests: gpt2-tiny on h100-sxm, every op on the
//! compute lane in program order, memory from the program's own allocs and frees, plus one
//! offloaded activation block (evict, host, prefetch, with a compute wait) and one recomputed
//! block, so every lane and every block state has something to draw.

#![allow(dead_code)]

use models::cost::op_time;
use models::figures::{MemoryFigures, PlanFigures, StepBreakdown};
use models::inventory::{BlockKind, MemoryCategory};
use models::schedule::{Action, BlockDecision, Lane, Placement, Prediction, Schedule, SCHEDULE_FORMAT_VERSION};
use models::trace::{BlockSpan, BlockState, MemorySample, Span, SpanKind, Trace};
use models::{Bytes, GptConfig, HardwareProfile, OpKind, Program, Seconds};
use std::collections::BTreeMap;
use std::path::Path;

pub struct Fixture {
    pub program: Program,
    pub hw: HardwareProfile,
    pub schedule: Schedule,
    pub trace: Trace,
    /// Its figures: memory from the prediction, the step by hand (the one wait is on the
    /// prefetch).
    pub figures: PlanFigures,
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

pub fn fixture() -> Fixture {
    let cfg = GptConfig::load(&root().join("models/configs/gpt2-tiny.ron")).unwrap();
    let hw = HardwareProfile::load(&root().join("models/hardware/h100-sxm.ron")).unwrap();
    let program = Program::build(&cfg);
    let inv = &program.inventory;

    // Memory and compute spans, op by op: allocations at the op's start, frees at its end.
    let mut live: BTreeMap<MemoryCategory, Bytes> = BTreeMap::new();
    for t in inv.tensors.iter().filter(|t| t.persistent) {
        *live.entry(t.category).or_default() += t.bytes;
    }
    let mut memory = vec![MemorySample { time: Seconds::ZERO, by_category: live.clone() }];
    let mut spans = Vec::new();
    let mut t = Seconds::ZERO;
    let mut op_start = Vec::new();
    let (mut peak, mut peak_time, mut peak_action) = (live.values().copied().sum::<Bytes>(), Seconds::ZERO, 0);
    let prefetch_wait = Seconds::from_ms(0.05);
    let bwd0 = program.find(OpKind::FcProjBwd(0)).unwrap().id.index();
    for (i, op) in program.ops.iter().enumerate() {
        if i == bwd0 {
            // The prefetch of layer0's activations is late: the compute lane waits for it.
            spans.push(Span {
                lane: Lane::Compute,
                kind: SpanKind::Wait,
                start: t,
                end: t + prefetch_wait,
                label: "wait prefetch".into(),
                action: i,
            });
            t += prefetch_wait;
        }
        op_start.push(t);
        for a in &op.allocs {
            let tensor = inv.tensor(*a);
            *live.entry(tensor.category).or_default() += tensor.bytes;
        }
        if !op.allocs.is_empty() {
            memory.push(MemorySample { time: t, by_category: live.clone() });
        }
        let total: Bytes = live.values().copied().sum();
        if total > peak {
            (peak, peak_time, peak_action) = (total, t, i);
        }
        let d = op_time(op, &hw);
        spans.push(Span { lane: Lane::Compute, kind: SpanKind::Op, start: t, end: t + d, label: op.name.clone(), action: i });
        t += d;
        for f in &op.frees {
            let tensor = inv.tensor(*f);
            *live.get_mut(&tensor.category).unwrap() -= tensor.bytes;
        }
        if !op.frees.is_empty() {
            memory.push(MemorySample { time: t, by_category: live.clone() });
        }
    }
    let step = t;

    // The offloaded block's copies, and every placeable block's residency.
    let fwd_end = op_start[program.find(OpKind::FcProj(0)).unwrap().id.index() + 1];
    let evict_end = fwd_end + Seconds::from_ms(0.02);
    let bwd_start = op_start[bwd0];
    let prefetch_start = bwd_start - Seconds::from_ms(0.03);
    spans.push(Span {
        lane: Lane::DeviceToHost,
        kind: SpanKind::Evict,
        start: fwd_end,
        end: evict_end,
        label: "layer0.activations".into(),
        action: 0,
    });
    spans.push(Span {
        lane: Lane::HostToDevice,
        kind: SpanKind::Prefetch,
        start: prefetch_start,
        end: bwd_start,
        label: "layer0.activations".into(),
        action: 0,
    });
    spans.push(Span {
        lane: Lane::Host,
        kind: SpanKind::HostOp,
        start: Seconds::ZERO,
        end: Seconds::from_ms(0.01),
        label: "embed".into(),
        action: 0,
    });
    let mut blocks = Vec::new();
    let mut decisions = Vec::new();
    let off = inv.find_block(BlockKind::LayerActivations(0)).unwrap().id;
    let rec = inv.find_block(BlockKind::LayerActivations(1)).unwrap().id;
    for b in inv.blocks.iter().filter(|b| b.kind.placeable()) {
        let placement = if b.id == off {
            Placement::Offloaded
        } else if b.id == rec {
            Placement::Recomputed
        } else {
            Placement::Gpu
        };
        decisions.push(BlockDecision { block: b.id, name: b.name(), placement, prefetch_distance: None });
        let span = |state, start, end| BlockSpan { block: b.id, state, start, end };
        if b.id == off {
            blocks.push(span(BlockState::Gpu, Seconds::ZERO, fwd_end));
            blocks.push(span(BlockState::InFlight, fwd_end, evict_end));
            blocks.push(span(BlockState::Host, evict_end, prefetch_start));
            blocks.push(span(BlockState::InFlight, prefetch_start, bwd_start));
            blocks.push(span(BlockState::Gpu, bwd_start, step));
        } else if b.id == rec {
            let back = op_start[program.find(OpKind::FcProjBwd(1)).unwrap().id.index()];
            blocks.push(span(BlockState::Gpu, Seconds::ZERO, fwd_end));
            blocks.push(span(BlockState::Recomputed, fwd_end, back));
            blocks.push(span(BlockState::Gpu, back, step));
        } else {
            blocks.push(span(BlockState::Gpu, Seconds::ZERO, step));
        }
    }
    let trace = Trace { step_time: step, peak_allocated: peak, peak_time, peak_action, memory, spans, blocks };
    let prediction = Prediction {
        peak_allocated: peak,
        peak_action,
        peak_at: program.ops[peak_action].name.clone(),
        fixed_overhead: hw.fixed_overhead,
        step_time: step,
        compute_time: step - prefetch_wait,
        h2d_bytes: inv.block(off).bytes,
        d2h_bytes: inv.block(off).bytes,
        exposed_transfer: prefetch_wait,
        hidden_transfer: Seconds::from_ms(0.02),
        solver: None,
        arena: None,
        pinned_host: models::Bytes(0),
        device: None,
    };
    let schedule = Schedule {
        format_version: SCHEDULE_FORMAT_VERSION,
        inventory_digest: models::digest::program_digest(&program),
        setup: models::TrainingSetup::gpt3(&cfg),
        model: cfg,
        hardware: hw.name.clone(),
        budget: peak + hw.fixed_overhead + Bytes::mib(64.0),
        strategy: String::new(),
        decisions,
        host_resident: Vec::new(),
        actions: program.ops.iter().map(|o| Action::Run(o.id)).collect(),
        prediction,
        checksum: String::new(),
    };
    let memory = MemoryFigures::of(&schedule.prediction, schedule.budget, &hw);
    let step = StepBreakdown { step, compute_busy: step - prefetch_wait, waiting_on_h2d: prefetch_wait, ..StepBreakdown::default() };
    Fixture { program, hw, schedule, trace, figures: PlanFigures { memory, step } }
}

/// A minimal well-formedness check: every tag closes in order and there is one root element.
pub fn check_xml(text: &str) -> Result<String, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut root = None;
    let mut rest = text;
    while let Some(i) = rest.find('<') {
        let after = &rest[i + 1..];
        let j = after.find('>').ok_or("unclosed tag")?;
        let tag = &after[..j];
        rest = &after[j + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("</{name}> with nothing open"))?;
            if open != name.trim() {
                return Err(format!("</{name}> closes <{open}>"));
            }
            continue;
        }
        let name: String = tag.chars().take_while(|c| !c.is_whitespace() && *c != '/').collect();
        if stack.is_empty() {
            if root.is_some() {
                return Err("two root elements".into());
            }
            root = Some(name.clone());
        }
        if !tag.ends_with('/') {
            stack.push(name);
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed: {stack:?}"));
    }
    root.ok_or("no element".into())
}
