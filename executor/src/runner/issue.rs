//! Issues a schedule's actions on the device's lanes, step after step, and measures one step
//! action by action.

use super::arena::Arena;
use super::{Allocator, MemoryPoint, ScheduleRunResult};
use crate::data::Batches;
use crate::export::{bf16_bytes, f32_bytes};
use crate::gpu::{elapsed_ms, record, Gpu, HostView, PinnedBuffer};
use crate::host::bf16::{as_bf16, as_bf16_mut};
use crate::host::{self, AdamW, WteScratch};
use crate::init::init_owner;
use crate::step::Step;
use crate::train::{RunOptions, RunResult, StepReport};
use crate::ExecError;
use cudarc::driver::{CudaEvent, CudaStream};
use models::inventory::View;
use models::program::{OpKind, Program};
use models::schedule::{Action, Lane, Schedule};
use models::trace::StepTimes;
use models::{OpId, TensorId};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One CUDA stream per lane.
struct Lanes {
    compute: Arc<CudaStream>,
    h2d: Arc<CudaStream>,
    d2h: Arc<CudaStream>,
    host: Arc<CudaStream>,
}

impl Lanes {
    fn of(&self, lane: Lane) -> &Arc<CudaStream> {
        match lane {
            Lane::Compute => &self.compute,
            Lane::HostToDevice => &self.h2d,
            Lane::DeviceToHost => &self.d2h,
            Lane::Host => &self.host,
        }
    }
}

/// What host work reports back: its errors and its busy time.
#[derive(Default)]
struct HostSink {
    errors: Mutex<Vec<String>>,
    nanos: AtomicU64,
}

/// Pinned host copies of the tensors that need one.
struct HostCopies {
    bufs: Vec<Option<PinnedBuffer>>,
}

impl HostCopies {
    fn view(&self, program: &Program, t: TensorId) -> Result<HostView, ExecError> {
        self.bufs[t.index()]
            .as_ref()
            .map(|b| b.view())
            .ok_or_else(|| ExecError::Refused(format!("{} has no host copy", program.inventory.tensor(t).name)))
    }
}

/// Timing events of the measured step: (lane kind, before, after) per timed action.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timed {
    Compute,
    H2d,
    D2h,
    Wait,
}

struct Sampler {
    spans: Vec<(Timed, CudaEvent, CudaEvent)>,
    memory: Vec<(usize, CudaEvent, u64)>,
    h2d_bytes: u64,
    d2h_bytes: u64,
}

pub fn run(
    program: &Program,
    schedule: &Schedule,
    opts: &RunOptions,
    allocator: Allocator,
    mut batches: Batches,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<ScheduleRunResult, ExecError> {
    let cfg = &program.config;
    let inv = &program.inventory;
    let gpu = Gpu::new().map_err(ExecError::opening)?;
    let device = gpu.name()?;
    let driver = gpu.driver_version()?;
    let (free0, total) = gpu.mem_info()?;
    let pool_budget = schedule.budget.0.saturating_sub(schedule.prediction.fixed_overhead.0);
    tracing::info!(
        "device: {device} (driver {driver}), {:.1} GiB, {:.0} MiB in use, {:.0} MiB free",
        gib(total),
        mib(total - free0),
        mib(free0)
    );
    if pool_budget > free0 {
        return Err(ExecError::Refused(format!(
            "its budget is {} of which {} is for tensors (the rest is the {} fixed overhead it assumes), but the device has only {} free: plan again with a budget of at most {}",
            schedule.budget,
            models::Bytes(pool_budget),
            schedule.prediction.fixed_overhead,
            models::Bytes(free0),
            models::Bytes(free0 + schedule.prediction.fixed_overhead.0)
        )));
    }
    gpu.reset_pool_highs()?;

    let mut arena = match allocator {
        Allocator::Arena => {
            let a = Arena::take(&gpu, program, schedule, free0)?;
            tracing::info!("took one arena of {:.1} MiB for every tensor of the step", mib(a.bytes()));
            Some(a)
        }
        Allocator::Pool => None,
    };
    let mut step = match arena.as_mut() {
        Some(a) => Step::with_allocator(&gpu, program, opts.adamw, &schedule.host_resident, &mut |t| {
            a.resident(t).map_err(|e| crate::gpu::GpuError::Invalid(e.to_string()))
        })?,
        None => Step::with_host_resident(&gpu, program, opts.adamw, &schedule.host_resident)?,
    };
    let lanes = Lanes { compute: gpu.compute.clone(), h2d: gpu.h2d.clone(), d2h: gpu.d2h.clone(), host: gpu.new_stream()? };

    // Pinned host copies.
    let t0 = Instant::now();
    let mut copies = HostCopies { bufs: (0..inv.tensors.len()).map(|_| None).collect() };
    let mut pinned_bytes = 0u64;
    for t in schedule.pinned_tensors(program) {
        let bytes = inv.tensor(t).bytes.0;
        copies.bufs[t.index()] = Some(gpu.pinned(bytes as usize)?);
        pinned_bytes += bytes;
    }
    tracing::info!("pinned {:.1} MiB of host memory for off-GPU blocks in {:.1} s", mib(pinned_bytes), t0.elapsed().as_secs_f64());

    // Initial weights and optimizer state, wherever the step starts them.
    // Made 16 owners at a time in parallel, so a large model's initial state is never all in
    // host memory at once.
    let t0 = Instant::now();
    let owners: Vec<(usize, models::Owner)> = inv.owners().into_iter().enumerate().collect();
    for group in owners.chunks(16) {
        let made: Vec<_> = group.par_iter().map(|(i, o)| init_owner(inv, cfg.layers, opts.seed, *i, *o)).collect();
        for p in made {
            let t = inv.params(p.owner);
            for (tensor, bytes) in [(t.weights, bf16_bytes(&p.weights)), (t.optimizer, f32_bytes(&p.optimizer))] {
                if !schedule.host_resident.contains(&tensor) {
                    step.upload(&gpu, tensor, &bytes)?;
                }
                if let Some(buf) = copies.bufs[tensor.index()].as_mut() {
                    buf.as_mut_slice().copy_from_slice(&bytes);
                }
            }
        }
    }
    tracing::info!("initial weights and optimizer state in place in {:.1} s", t0.elapsed().as_secs_f64());

    let n_events =
        schedule.actions.iter().filter_map(|a| if let Action::Record(e, _) = a { Some(e.0 as usize + 1) } else { None }).max().unwrap_or(0);
    let events: Vec<CudaEvent> = (0..n_events).map(|_| gpu.sync_event()).collect::<Result<_, _>>()?;
    let start = gpu.timing_event()?;
    let ends: Vec<CudaEvent> = (0..4).map(|_| gpu.timing_event()).collect::<Result<_, _>>()?;
    let sink = Arc::new(HostSink::default());

    let flops = program.model_flops().0;
    let mut reports = Vec::new();
    let mut device_used_high = 0u64;
    let measured_step = opts.steps + 1;
    let mut lane_times = StepTimes::default();
    let mut memory = Vec::new();
    for s in 1..=measured_step {
        let batch = batches.next_batch();
        step.upload_batch(&gpu, &batch)?;
        let tokens = Arc::new(batch.inputs);
        let mut sampler = (s == measured_step).then(|| Sampler { spans: Vec::new(), memory: Vec::new(), h2d_bytes: 0, d2h_bytes: 0 });
        sink.nanos.store(0, Ordering::Relaxed);
        record(&start, &lanes.compute)?;
        for (i, a) in schedule.actions.iter().enumerate() {
            issue(
                &gpu,
                program,
                &lanes,
                &mut step,
                arena.as_mut(),
                &copies,
                &events,
                &sink,
                &tokens,
                &opts.adamw,
                s,
                i,
                a,
                sampler.as_mut(),
            )?;
        }
        for (lane, end) in Lane::ALL.iter().zip(&ends) {
            record(end, lanes.of(*lane))?;
        }
        for lane in Lane::ALL {
            lanes.of(lane).synchronize().map_err(crate::gpu::GpuError::from)?;
        }
        let errors = std::mem::take(&mut *sink.errors.lock().expect("host sink"));
        if !errors.is_empty() {
            return Err(ExecError::Host(errors.join("; ")));
        }
        let mut ms = 0f64;
        for end in &ends {
            ms = ms.max(elapsed_ms(&start, end)? as f64);
        }
        let loss = step.mean_loss(&gpu)?;
        if !loss.is_finite() {
            return Err(ExecError::Diverged { step: s, loss });
        }
        let (free, _) = gpu.mem_info()?;
        device_used_high = device_used_high.max(total - free);
        match sampler {
            None => {
                let r = StepReport::new(s, loss, ms, cfg.tokens(), flops, opts.peak_flops);
                on_step(&r);
                reports.push(r);
            }
            Some(smp) => {
                lane_times = StepTimes {
                    step_ms: ms,
                    host_ms: sink.nanos.load(Ordering::Relaxed) as f64 / 1e6,
                    h2d_bytes: smp.h2d_bytes,
                    d2h_bytes: smp.d2h_bytes,
                    ..StepTimes::default()
                };
                for (kind, before, after) in &smp.spans {
                    let d = elapsed_ms(before, after)? as f64;
                    match kind {
                        Timed::Compute => lane_times.compute_ms += d,
                        Timed::H2d => lane_times.h2d_ms += d,
                        Timed::D2h => lane_times.d2h_ms += d,
                        Timed::Wait => lane_times.compute_wait_ms += d,
                    }
                }
                for (action, ev, used) in &smp.memory {
                    memory.push(MemoryPoint { action: *action, ms: elapsed_ms(&start, ev)? as f64, used: *used });
                }
            }
        }
    }
    let pool = gpu.pool_stats()?;
    Ok(ScheduleRunResult {
        run: RunResult {
            device,
            driver,
            steps: reports,
            pool_used_high: pool.used_high,
            pool_reserved_high: pool.reserved_high,
            device_used_high,
            device_used_at_start: total - free0,
            device_total: total,
            corpus_tokens: batches.len_tokens(),
        },
        device_free_at_start: free0,
        allocator,
        arena_bytes: arena.as_ref().map(|a| a.bytes()),
        pinned_bytes,
        measured_step,
        lanes: lane_times,
        memory,
    })
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}
fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Issues one action on its lane; with a sampler, times it (and samples the pool after
/// allocations and frees).
#[allow(clippy::too_many_arguments)]
fn issue(
    gpu: &Gpu,
    program: &Program,
    lanes: &Lanes,
    step: &mut Step,
    mut arena: Option<&mut Arena>,
    copies: &HostCopies,
    events: &[CudaEvent],
    sink: &Arc<HostSink>,
    tokens: &Arc<Vec<i32>>,
    adamw: &AdamW,
    s: u32,
    i: usize,
    a: &Action,
    mut sampler: Option<&mut Sampler>,
) -> Result<(), ExecError> {
    let timed = |sampler: &mut Option<&mut Sampler>,
                 kind: Timed,
                 stream: &CudaStream,
                 f: &mut dyn FnMut() -> Result<(), ExecError>|
     -> Result<(), ExecError> {
        match sampler {
            Some(smp) => {
                let (before, after) = (gpu.timing_event()?, gpu.timing_event()?);
                record(&before, stream)?;
                f()?;
                record(&after, stream)?;
                smp.spans.push((kind, before, after));
                Ok(())
            }
            None => f(),
        }
    };
    let inv = &program.inventory;
    match *a {
        Action::Run(op) | Action::Recompute(op) => {
            let op = program.op(op);
            timed(&mut sampler, Timed::Compute, &lanes.compute, &mut || Ok(step.dispatch(gpu, op, s)?))?;
        }
        Action::HostRun(op) => {
            let work = host_work(program, op, copies, tokens.clone(), *adamw, s, sink.clone())?;
            gpu.launch_host(&lanes.host, work)?;
        }
        Action::Alloc(t, lane) | Action::Free(t, lane) => {
            match (a, arena.as_deref_mut()) {
                (Action::Alloc(..), Some(arena)) => step.put_tensor(t, arena.at_action(i, inv.tensor(t))?)?,
                (Action::Alloc(..), None) => step.alloc_tensor(gpu, t, lanes.of(lane))?,
                (_, Some(arena)) => {
                    step.free_tensor(t, lanes.of(lane))?;
                    arena.freed(t, program);
                }
                (_, None) => step.free_tensor(t, lanes.of(lane))?,
            }
            if let Some(smp) = sampler {
                let ev = gpu.timing_event()?;
                record(&ev, lanes.of(lane))?;
                let used = match arena {
                    Some(a) => a.live(),
                    None => gpu.pool_stats()?.used_current,
                };
                smp.memory.push((i, ev, used));
            }
        }
        Action::Prefetch(t) => {
            let v = copies.view(program, t)?;
            let dst = step.buffer(t)?;
            timed(&mut sampler, Timed::H2d, &lanes.h2d, &mut || Ok(gpu.copy_view_to_device(&lanes.h2d, dst, v)?))?;
            if let Some(smp) = sampler {
                smp.h2d_bytes += inv.tensor(t).bytes.0;
            }
        }
        Action::Evict(t) => {
            let v = copies.view(program, t)?;
            let src = step.buffer(t)?;
            timed(&mut sampler, Timed::D2h, &lanes.d2h, &mut || Ok(gpu.copy_device_to_view(&lanes.d2h, v, src)?))?;
            if let Some(smp) = sampler {
                smp.d2h_bytes += inv.tensor(t).bytes.0;
            }
        }
        Action::Record(e, lane) => record(&events[e.0 as usize], lanes.of(lane))?,
        Action::Wait(e, lane) => {
            let stream = lanes.of(lane);
            let wait = &mut || Ok(stream.wait(&events[e.0 as usize]).map_err(crate::gpu::GpuError::from)?);
            if lane == Lane::Compute {
                timed(&mut sampler, Timed::Wait, stream, wait)?;
            } else {
                wait()?;
            }
        }
    }
    Ok(())
}

/// The slice of a parameter tensor's view `name` (in elements of the slice's type).
fn view_range(views: &[View], name: &str) -> Result<std::ops::Range<usize>, ExecError> {
    let v = views.iter().find(|v| v.name == name).ok_or_else(|| ExecError::Refused(format!("no view {name}")))?;
    Ok(v.offset as usize..(v.offset + v.elems()) as usize)
}

/// The host work of one `HostRun`: the CPU embedding's gather or scatter, or AdamW of one owner,
/// on the pinned host copies. Errors go to `sink` (host work cannot return them).
fn host_work(
    program: &Program,
    op: OpId,
    copies: &HostCopies,
    tokens: Arc<Vec<i32>>,
    h: AdamW,
    step: u32,
    sink: Arc<HostSink>,
) -> Result<Box<dyn FnOnce() + Send>, ExecError> {
    let inv = &program.inventory;
    let cfg = &program.config;
    let op = program.op(op);
    let name = op.name.clone();
    let (t, c, vp, max_seq) = (cfg.seq as usize, cfg.hidden as usize, cfg.padded_vocab as usize, cfg.max_seq as usize);
    let b = cfg.batch as usize;
    let emb = inv.embedding;
    let job: Box<dyn FnOnce() -> Result<(), host::HostError> + Send> = match op.kind {
        OpKind::Adam(o) => {
            let p = inv.params(o);
            let (w, g, opt) = (copies.view(program, p.weights)?, copies.view(program, p.grads)?, copies.view(program, p.optimizer)?);
            let views = inv.tensor(p.weights).views.clone();
            Box::new(move || host::adamw_owner(as_bf16_mut(w.u16s_mut()), as_bf16(g.u16s()), opt.f32s_mut(), &views, &h, step))
        }
        OpKind::Embed if !cfg.tied_embeddings => {
            let out =
                copies.view(program, *op.allocs.first().ok_or_else(|| ExecError::Refused("the embedding op allocates nothing".into()))?)?;
            let w = copies.view(program, emb.weights)?;
            let views = inv.tensor(emb.weights).views.clone();
            let (wte, wpe) = (view_range(&views, "wte")?, view_range(&views, "wpe")?);
            Box::new(move || {
                let w = as_bf16(w.u16s());
                host::embedding_forward(as_bf16_mut(out.u16s_mut()), &tokens, &w[wte], 0, vp, &w[wpe], t, c)
            })
        }
        OpKind::EmbedBwd if !cfg.tied_embeddings => {
            let dres = copies.view(program, inv.head.dres)?;
            let g = copies.view(program, emb.grads)?;
            let views = inv.tensor(emb.grads).views.clone();
            let (wte, wpe) = (view_range(&views, "wte")?, view_range(&views, "wpe")?);
            Box::new(move || {
                let g = as_bf16_mut(g.u16s_mut());
                let dres = as_bf16(dres.u16s());
                // The table is large (V x C): zero it on all threads.
                g[wte.clone()].par_chunks_mut(1 << 16).for_each(|rows| rows.fill(half::bf16::ZERO));
                host::embedding_backward_wte(&mut g[wte], dres, &tokens, 0, vp, c, &mut WteScratch::with_capacity(b * t))?;
                host::embedding_backward_wpe(&mut g[wpe], dres, b, t, c, max_seq)
            })
        }
        _ => return Err(ExecError::Refused(format!("{} cannot run on the host (the tied embedding is the output layer's)", op.name))),
    };
    Ok(Box::new(move || {
        let t0 = Instant::now();
        if let Err(e) = job() {
            sink.errors.lock().expect("host sink").push(format!("{name}: {e}"));
        }
        sink.nanos.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }))
}
