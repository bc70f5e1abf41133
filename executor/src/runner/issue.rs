//! Issues a schedule's actions on the device's lanes, step after step, and measures one step
//! action by action.

use super::arena::Arena;
use super::{Allocator, HostOpSpan, MemoryPoint, OpSpan, ScheduleRunResult, SlowLanes};
use crate::gpu::lanes::{Access, HostAccess, HostCopies, HostJob, Lanes};
use crate::gpu::{elapsed_ms, record, Gpu, GpuError, KernelImages, Kernels, Target};
use crate::host::{self, AdamW, WteScratch};
use crate::kernel_cache::KernelCache;
use crate::kernels::KernelSet;
use crate::startup::StartClock;
use crate::state::device::{load_state, LiveState};
use crate::state::StateHomes;
use crate::step::Step;
use crate::train::{Phase, Progress, RunOptions, RunResult, StepReport};
use crate::training::{StartFrom, Training, ValidationLoss};
use crate::ExecError;
use cudarc::driver::{CudaEvent, CudaStream};
use models::inventory::View;
use models::program::{OpKind, Program};
use models::schedule::{Action, Lane, Schedule};
use models::trace::StepTimes;
use models::{OpId, TensorId};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What host work reports back: its errors and each op's own time.
#[derive(Default)]
struct HostSink {
    errors: Mutex<Vec<String>>,
    /// Each host op's own time in this step (op, ms), in the order they ended.
    ops: Mutex<Vec<(OpId, f64)>>,
    /// The step's global gradient norm and exact gradient checksum, from its clip scale op.
    grad_norm: Mutex<Option<(f64, u64)>>,
}

/// Timing events of the measured step: (lane kind, before, after) per timed action.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timed {
    Compute(OpId),
    H2d,
    D2h,
    Wait,
}

struct Sampler {
    /// (what, before, after, the host's time to issue it).
    spans: Vec<(Timed, CudaEvent, CudaEvent, std::time::Duration)>,
    memory: Vec<(usize, CudaEvent, u64)>,
    h2d_bytes: u64,
    d2h_bytes: u64,
    /// Holds the compute lane ahead of the host (the op-timing step): its ops' spans time the
    /// GPU alone, not the host's pace of issuing them.
    hold: Option<Hold>,
    /// Compute actions issued so far.
    computes: usize,
}

impl Sampler {
    fn new(hold: Option<Hold>) -> Sampler {
        Sampler { spans: Vec::new(), memory: Vec::new(), h2d_bytes: 0, d2h_bytes: 0, hold, computes: 0 }
    }
}

/// A spin kernel of `ns` before every `every`-th compute action: long enough for the host to
/// issue the next `every` actions while the GPU waits, and few enough actions that their
/// launches and events fit in the driver's queue (about a thousand entries) so the host never
/// waits on it.
#[derive(Clone, Copy)]
struct Hold {
    every: usize,
    ns: u64,
}

/// 32 compute actions take the host at most about 25 us each to issue with their two events
/// (a product 12 us, a linear backward's four launches more): a 1 ms hold covers them.
const OP_TIMING_HOLD: Hold = Hold { every: 32, ns: 1_000_000 };

#[allow(clippy::too_many_arguments)]
pub fn run(
    program: &Program,
    schedule: &Schedule,
    opts: &RunOptions,
    allocator: Allocator,
    slow: Option<SlowLanes>,
    mut training: Training,
    homes: &StateHomes,
    progress: &mut dyn FnMut(Progress),
) -> Result<ScheduleRunResult, ExecError> {
    let cfg = &program.config;
    let mut clock = StartClock::new(progress);
    let (gpu, device) = crate::train::open_device()?;
    // The probe before the first step runs on the empty device, as the one after the last does:
    // beside a step planned to the card's edge there is no room for its tensors.
    clock.phase(Phase::Probing, progress);
    let start_probe = crate::startup::probe_or_warn(&gpu, program, "before the first step");
    let total = device.total;
    let free0 = gpu.mem_info()?.0;
    let pool_budget = schedule.budget.0.saturating_sub(schedule.prediction.fixed_overhead.0);
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

    // NVRTC compiles (or the cache gives) the kernels on another thread while this one pins the
    // host copies: compiling needs no driver, and pinning holds the driver's locks, so device
    // allocation and module loading wait until it is done.
    let pin_bytes: u64 = schedule.pinned_tensors(program).iter().map(|t| program.inventory.tensor(*t).bytes.0).sum();
    let set = KernelSet::for_config(cfg).map_err(ExecError::Unsupported)?;
    let target = Target::of(&gpu)?;
    clock.phase(Phase::Pinning(pin_bytes), progress);
    let (host, images) = std::thread::scope(|scope| {
        let compiling = scope.spawn(|| KernelImages::prepare(&set, &target, KernelCache::user_default().as_ref()));
        let t0 = Instant::now();
        let host = HostCopies::pin(&gpu.ctx, program, schedule);
        let pin_s = t0.elapsed().as_secs_f64();
        let images = compiling.join().map_err(|_| GpuError::Invalid("the compiling thread panicked".into())).and_then(|r| r);
        (host.map(|h| (h, pin_s)), images)
    });
    let (host, pin_s) = host?;
    clock.pinned(pin_s);
    tracing::info!("pinned {:.1} MiB of host memory for off-GPU blocks in {:.2} s", mib(host.bytes()), pin_s);
    let images = images?;
    clock.compiled(images.stats(), progress);

    clock.phase(Phase::Allocating, progress);
    let kernels = Kernels::load(&gpu, images)?;
    let mut arena = match allocator {
        Allocator::Arena => {
            let a = Arena::take(&gpu, program, schedule, free0)?;
            tracing::info!("took one arena of {:.1} MiB for every tensor of the step", mib(a.bytes()));
            Some(a)
        }
        Allocator::Pool => None,
    };
    let step = match arena.as_mut() {
        Some(a) => Step::with_kernels(
            program,
            opts.adamw_at(1, 1),
            &schedule.host_resident,
            &mut |t| a.resident(t).map_err(|e| GpuError::Invalid(e.to_string())),
            kernels,
        )?,
        None => {
            Step::with_kernels(program, opts.adamw_at(1, 1), &schedule.host_resident, &mut |t| gpu.alloc(&gpu.compute, t.bytes.0), kernels)?
        }
    };
    let mut step = step;
    let mut lanes = Lanes::new(&gpu, program, schedule, host)?;
    let pinned_bytes = lanes.pinned_bytes();

    // Initial weights and optimizer state, made on the GPU wherever the step starts them, and
    // in the host copies; the scratch comes from what the arena left free.
    clock.phase(Phase::Initializing, progress);
    match &training.from {
        StartFrom::Seed => {
            let (free, _) = gpu.mem_info()?;
            crate::start::initialize(&gpu, &step, Some(&mut lanes), opts.seed, free.saturating_sub(256 << 20).min(1 << 30))?;
        }
        // Host staging only: the state goes into the buffers the step already holds.
        StartFrom::Weights(c) | StartFrom::Resume(c) => load_state(&gpu, &step, Some(&mut lanes), c)?,
    }
    gpu.reset_pool_highs()?;
    let startup = clock.training(progress);

    let start = gpu.timing_event()?;
    let ends: Vec<CudaEvent> = (0..4).map(|_| gpu.timing_event()).collect::<Result<_, _>>()?;
    let sink = Arc::new(HostSink::default());

    let flops = program.model_flops().0;
    let mut reports = Vec::new();
    let mut device_used_high = 0u64;
    let first = training.first_step();
    let measured_step = first + opts.steps;
    let mut lane_times = StepTimes::default();
    let mut memory = Vec::new();
    let (mut ops, mut issue_ms, mut host_ops) = (Vec::new(), Vec::new(), Vec::new());
    // The first step (left out of the median) times each compute action with the GPU held
    // ahead of the host; the measured step times the lanes as they run.
    let mut held_ops: Option<Vec<f64>> = None;
    for s in first..=measured_step {
        let batch = training.next_batch()?;
        step.upload_batch(&gpu, &batch)?;
        // One AdamW per step, the GPU's updates and the host's alike: the step's learning rate.
        let adamw = opts.adamw_at(s, first);
        step.adamw = adamw;
        let issuer = Issuer {
            gpu: &gpu,
            program,
            lanes: &lanes,
            sink: &sink,
            tokens: Arc::new(batch.inputs),
            adamw,
            step: s,
            slow,
            update: true,
            max_grad_norm: opts.setup.grad_clip,
        };
        let op_timing = s == first && first < measured_step;
        let mut sampler = if s == measured_step {
            Some(Sampler::new(None))
        } else if op_timing {
            Some(Sampler::new(Some(OP_TIMING_HOLD)))
        } else {
            None
        };
        sink.ops.lock().expect("host sink").clear();
        *sink.grad_norm.lock().expect("host sink") = None;
        record(&start, lanes.stream(Lane::Compute))?;
        let t0 = Instant::now();
        issuer.issue_step(schedule, &mut step, arena.as_mut(), sampler.as_mut())?;
        if sampler.is_none() && s > first {
            issue_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        for (lane, end) in Lane::ALL.iter().zip(&ends) {
            record(end, lanes.stream(*lane))?;
        }
        lanes.end_step()?;
        issuer.host_errors()?;
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
            Some(smp) if op_timing => {
                let mut gpu_ms = Vec::new();
                for (kind, before, after, _) in &smp.spans {
                    if let Timed::Compute(_) = kind {
                        gpu_ms.push(elapsed_ms(before, after)? as f64);
                    }
                }
                held_ops = Some(gpu_ms);
                let (norm, checksum) = sink.grad_norm.lock().expect("host sink").take().unzip();
                let r = StepReport::new(s, loss, adamw.lr, ms, cfg.tokens(), flops, opts.peak_flops).with_gradients(norm, checksum);
                progress(Progress::Step(&r));
                reports.push(r);
            }
            None => {
                let (norm, checksum) = sink.grad_norm.lock().expect("host sink").take().unzip();
                let r = StepReport::new(s, loss, adamw.lr, ms, cfg.tokens(), flops, opts.peak_flops).with_gradients(norm, checksum);
                progress(Progress::Step(&r));
                reports.push(r);
            }
            Some(smp) => {
                host_ops =
                    std::mem::take(&mut *sink.ops.lock().expect("host sink")).into_iter().map(|(op, ms)| HostOpSpan { op, ms }).collect();
                lane_times = StepTimes {
                    step_ms: ms,
                    host_ms: host_ops.iter().map(|h| h.ms).sum(),
                    h2d_bytes: smp.h2d_bytes,
                    d2h_bytes: smp.d2h_bytes,
                    ..StepTimes::default()
                };
                for (kind, before, after, issued) in &smp.spans {
                    let d = elapsed_ms(before, after)? as f64;
                    match *kind {
                        Timed::Compute(op) => {
                            lane_times.compute_ms += d;
                            ops.push(OpSpan { op, gpu_ms: d, issue_ms: issued.as_secs_f64() * 1e3 });
                        }
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
        if let Some(batches) = training.validation_due(s, measured_step) {
            // The schedule's own step with its updates left out, so every block is where the
            // schedule keeps it and the budget holds: a whole step per batch, not a forward.
            let mut sum = 0.0;
            for b in batches {
                step.upload_batch(&gpu, b)?;
                let issuer = Issuer {
                    gpu: &gpu,
                    program,
                    lanes: &lanes,
                    sink: &sink,
                    tokens: Arc::new(b.inputs.clone()),
                    adamw,
                    step: s,
                    slow,
                    update: false,
                    max_grad_norm: opts.setup.grad_clip,
                };
                issuer.issue_step(schedule, &mut step, arena.as_mut(), None)?;
                lanes.end_step()?;
                issuer.host_errors()?;
                sum += step.mean_loss(&gpu)?;
            }
            let v = ValidationLoss { step: s, loss: sum / batches.len() as f64, batches: batches.len() };
            progress(Progress::Validated(&v));
            training.validated(v);
        }
        // Between steps every lane is idle (end_step waited for them): the state is read from
        // where the schedule keeps it, through host memory.
        let live = LiveState::new(&gpu, &step, Some(&lanes), homes);
        if let Some(saved) = training.after_step(s, measured_step, program, &live, opts.seed, &adamw, Some(&schedule.checksum))? {
            progress(Progress::Saved(&saved));
        }
    }
    // The same schedule issues the same compute actions every step.
    if let Some(held) = held_ops.filter(|h| h.len() == ops.len()) {
        for (o, gpu_ms) in ops.iter_mut().zip(held) {
            o.gpu_ms = gpu_ms;
        }
    }
    let pool = gpu.pool_stats()?;
    let arena_bytes = arena.as_ref().map(|a| a.bytes());
    // The run's memory is given back before the last probe, which needs some of its own.
    gpu.synchronize()?;
    drop(lanes);
    drop(step);
    drop(arena);
    gpu.synchronize()?;
    gpu.trim_pool()?;
    let end_probe = crate::startup::probe_or_warn(&gpu, program, "after the last step");
    let probes = models::hardware::RunProbes { start: start_probe, end: end_probe };
    Ok(ScheduleRunResult {
        run: RunResult::measured(&device, reports, &pool, device_used_high, &mut training, startup, probes),
        device_free_at_start: free0,
        allocator,
        arena_bytes,
        pinned_bytes,
        measured_step,
        lanes: lane_times,
        memory,
        ops,
        host_ops,
        issue_ms,
    })
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// What issuing one step's actions needs besides the step and the sampler.
struct Issuer<'a> {
    gpu: &'a Gpu,
    program: &'a Program,
    lanes: &'a Lanes<'a>,
    sink: &'a Arc<HostSink>,
    /// The batch's token ids, for the CPU embedding.
    tokens: Arc<Vec<i32>>,
    adamw: AdamW,
    /// The step, from 1.
    step: u32,
    /// Debug delays before lane work.
    slow: Option<SlowLanes>,
    /// False for a validation batch: AdamW (GPU and host) is left out, nothing else.
    update: bool,
    /// The setup's largest global gradient norm (a clipped program).
    max_grad_norm: f64,
}

impl Issuer<'_> {
    /// Issues every action of one step; the caller ends the step (`Lanes::end_step`).
    fn issue_step(
        &self,
        schedule: &Schedule,
        step: &mut Step,
        mut arena: Option<&mut Arena>,
        mut sampler: Option<&mut Sampler>,
    ) -> Result<(), ExecError> {
        self.lanes.begin_step()?;
        for (i, a) in schedule.actions.iter().enumerate() {
            self.issue(step, arena.as_deref_mut(), i, a, sampler.as_deref_mut())?;
        }
        Ok(())
    }

    /// The errors host work reported during the step just ended.
    fn host_errors(&self) -> Result<(), ExecError> {
        let errors = std::mem::take(&mut *self.sink.errors.lock().expect("host sink"));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ExecError::Host(errors.join("; ")))
        }
    }

    fn is_update(&self, op: OpId) -> bool {
        matches!(self.program.op(op).kind, OpKind::Adam(_))
    }

    /// Issues action `i` on its lane; with a sampler, times it (and samples the memory in use
    /// after allocations and frees).
    fn issue(
        &self,
        step: &mut Step,
        mut arena: Option<&mut Arena>,
        i: usize,
        a: &Action,
        mut sampler: Option<&mut Sampler>,
    ) -> Result<(), ExecError> {
        let (gpu, lanes) = (self.gpu, self.lanes);
        let timed = |sampler: &mut Option<&mut Sampler>,
                     kind: Timed,
                     stream: &CudaStream,
                     f: &mut dyn FnMut() -> Result<(), ExecError>|
         -> Result<(), ExecError> {
            match sampler {
                Some(smp) => {
                    let (before, after) = (gpu.timing_event()?, gpu.timing_event()?);
                    record(&before, stream)?;
                    let t0 = Instant::now();
                    f()?;
                    let issued = t0.elapsed();
                    record(&after, stream)?;
                    smp.spans.push((kind, before, after, issued));
                    Ok(())
                }
                None => f(),
            }
        };
        let inv = &self.program.inventory;
        if let Some(slow) = self.slow {
            let lane = match *a {
                Action::Run(_) | Action::Recompute(_) => Some(Lane::Compute),
                Action::Prefetch(_) => Some(Lane::HostToDevice),
                Action::Evict(_) => Some(Lane::DeviceToHost),
                Action::HostRun(_) => Some(Lane::Host),
                _ => None,
            };
            if let Some((lane, ns)) = lane.and_then(|l| slow.delay_ns(self.step, i, l).map(|ns| (l, ns))) {
                step.kernels().spin(lanes.stream(lane), ns)?;
            }
        }
        match *a {
            Action::Run(op) if !self.update && self.is_update(op) => {}
            Action::HostRun(op) if !self.update && self.is_update(op) => lanes.host_run(i, &[], Box::new(|_| {}))?,
            Action::Run(id) | Action::Recompute(id) => {
                let op = self.program.op(id);
                if let Some(smp) = sampler.as_deref_mut() {
                    if let Some(h) = smp.hold.filter(|h| smp.computes % h.every == 0) {
                        step.kernels().spin(lanes.stream(Lane::Compute), h.ns)?;
                    }
                    smp.computes += 1;
                }
                timed(&mut sampler, Timed::Compute(id), lanes.stream(Lane::Compute), &mut || Ok(step.dispatch(gpu, op, self.step)?))?;
            }
            Action::HostRun(op) => {
                let (uses, job) =
                    host_work(self.program, op, self.tokens.clone(), self.adamw, self.step, self.max_grad_norm, self.sink.clone())?;
                lanes.host_run(i, &uses, job)?;
            }
            Action::Alloc(t, lane) | Action::Free(t, lane) => {
                match (a, arena.as_deref_mut()) {
                    (Action::Alloc(..), Some(arena)) => step.put_tensor(t, arena.at_action(i, inv.tensor(t))?)?,
                    (Action::Alloc(..), None) => step.alloc_tensor(gpu, t, lanes.stream(lane))?,
                    (_, Some(arena)) => {
                        step.free_tensor(t, lanes.stream(lane))?;
                        arena.freed(t, self.program);
                    }
                    (_, None) => step.free_tensor(t, lanes.stream(lane))?,
                }
                if let Some(smp) = sampler {
                    let ev = gpu.timing_event()?;
                    record(&ev, lanes.stream(lane))?;
                    let used = match arena {
                        Some(a) => a.live(),
                        None => gpu.pool_stats()?.used_current,
                    };
                    smp.memory.push((i, ev, used));
                }
            }
            Action::Prefetch(t) => {
                let dst = step.buffer(t)?;
                timed(&mut sampler, Timed::H2d, lanes.stream(Lane::HostToDevice), &mut || Ok(lanes.prefetch(i, dst)?))?;
                if let Some(smp) = sampler {
                    smp.h2d_bytes += inv.tensor(t).bytes.0;
                }
            }
            Action::Evict(t) => {
                let src = step.buffer(t)?;
                timed(&mut sampler, Timed::D2h, lanes.stream(Lane::DeviceToHost), &mut || Ok(lanes.evict(i, src)?))?;
                if let Some(smp) = sampler {
                    smp.d2h_bytes += inv.tensor(t).bytes.0;
                }
            }
            Action::Record(..) => lanes.record(i)?,
            Action::Wait(_, lane) => {
                let wait = &mut || Ok(lanes.wait(i)?);
                if lane == Lane::Compute {
                    timed(&mut sampler, Timed::Wait, lanes.stream(lane), wait)?;
                } else {
                    wait()?;
                }
            }
        }
        Ok(())
    }
}

/// The slice of a parameter tensor's view `name` (in elements of the slice's type).
fn view_range(views: &[View], name: &str) -> Result<std::ops::Range<usize>, ExecError> {
    host::view_range(views, name).ok_or_else(|| ExecError::Refused(format!("no view {name}")))
}

/// Host work one op does on its host copies.
type OpWork = Box<dyn for<'a> FnOnce(&mut HostAccess<'a>) -> Result<(), String> + Send>;

fn op_work(f: impl for<'a> FnOnce(&mut HostAccess<'a>) -> Result<(), String> + Send + 'static) -> OpWork {
    Box::new(f)
}

/// The host work of one `HostRun`: the CPU embedding's gather or scatter, or AdamW of one owner,
/// on the pinned host copies it uses. Errors go to `sink` (host work cannot return them).
#[allow(clippy::too_many_arguments)]
fn host_work(
    program: &Program,
    op: OpId,
    tokens: Arc<Vec<i32>>,
    h: AdamW,
    step: u32,
    max_grad_norm: f64,
    sink: Arc<HostSink>,
) -> Result<(Vec<(TensorId, Access)>, HostJob), ExecError> {
    let inv = &program.inventory;
    let cfg = &program.config;
    let id = op;
    let op = program.op(op);
    let name = op.name.clone();
    let (t, c, vp, max_seq) = (cfg.seq as usize, cfg.hidden as usize, cfg.padded_vocab as usize, cfg.max_seq as usize);
    let b = cfg.batch as usize;
    let emb = inv.embedding;
    let host = |e: host::HostError| e.to_string();
    let (uses, work): (Vec<(TensorId, Access)>, OpWork) = match op.kind {
        OpKind::Adam(o) => {
            let p = *inv.params(o);
            let views = inv.tensor(p.weights).views.clone();
            let scale_t = inv.clip.as_ref().map(|c| c.scale);
            let mut uses = vec![(p.weights, Access::Write), (p.grads, Access::Read), (p.optimizer, Access::Write)];
            uses.extend(scale_t.map(|t| (t, Access::Read)));
            (
                uses,
                op_work(move |acc| {
                    let scale = match scale_t {
                        Some(t) => acc.f32(t)?.first().copied().ok_or("the clip scale is empty")?,
                        None => 1.0,
                    };
                    let (w, g, opt) = (acc.bf16_mut(p.weights)?, acc.bf16(p.grads)?, acc.f32_mut(p.optimizer)?);
                    host::adamw_owner(w, g, opt, &views, &h, step, scale).map_err(host)
                }),
            )
        }
        OpKind::GradNorm(o) => {
            let g = inv.params(o).grads;
            let partials = inv.grad_norm(o).ok_or_else(|| ExecError::Refused(format!("{}: the program is unclipped", op.name)))?;
            (
                vec![(g, Access::Read), (partials, Access::Write)],
                op_work(move |acc| {
                    let (g, out) = (acc.bf16(g)?, acc.f32_mut(partials)?);
                    host::grad_norm_partials(g, out).map_err(host)
                }),
            )
        }
        OpKind::ClipScale => {
            let clip = inv.clip.clone().ok_or_else(|| ExecError::Refused("clip_scale in an unclipped program".into()))?;
            let mut uses: Vec<(TensorId, Access)> = clip.norms.iter().map(|t| (*t, Access::Read)).collect();
            uses.push((clip.scale, Access::Write));
            let norm_out = sink.clone();
            (
                uses,
                op_work(move |acc| {
                    let mut partials = Vec::with_capacity(clip.norms.len());
                    for t in &clip.norms {
                        partials.push(acc.f32(*t)?);
                    }
                    let norm = host::global_norm(partials.iter().copied());
                    acc.f32_mut(clip.scale)?[0] = host::clip_scale(norm, max_grad_norm);
                    let checksum = host::grad_checksum(partials.iter().copied());
                    *norm_out.grad_norm.lock().expect("host sink") = Some((norm, checksum));
                    Ok(())
                }),
            )
        }
        OpKind::Embed if !cfg.tied_embeddings => {
            let out = *op.allocs.first().ok_or_else(|| ExecError::Refused("the embedding op allocates nothing".into()))?;
            let views = inv.tensor(emb.weights).views.clone();
            let (wte, wpe) = (view_range(&views, "wte")?, view_range(&views, "wpe")?);
            (
                vec![(out, Access::Write), (emb.weights, Access::Read)],
                op_work(move |acc| {
                    let (out, w) = (acc.bf16_mut(out)?, acc.bf16(emb.weights)?);
                    host::embedding_forward(out, &tokens, &w[wte], 0, vp, &w[wpe], t, c).map_err(host)
                }),
            )
        }
        OpKind::EmbedBwd if !cfg.tied_embeddings => {
            let dres_t = inv.head.dres;
            let views = inv.tensor(emb.grads).views.clone();
            let (wte, wpe) = (view_range(&views, "wte")?, view_range(&views, "wpe")?);
            (
                vec![(dres_t, Access::Read), (emb.grads, Access::Write)],
                op_work(move |acc| {
                    let (g, dres) = (acc.bf16_mut(emb.grads)?, acc.bf16(dres_t)?);
                    let (dwte, dwpe) = host::two_ranges(g, wte, wpe).ok_or("the token and position tables overlap")?;
                    host::embedding_backward(dwte, dwpe, dres, &tokens, vp, b, t, c, max_seq, &mut WteScratch::with_capacity(b * t))
                        .map_err(host)
                }),
            )
        }
        _ => return Err(ExecError::Refused(format!("{} cannot run on the host (the tied embedding is the output layer's)", op.name))),
    };
    let job: HostJob = Box::new(move |mut acc| {
        let t0 = Instant::now();
        if let Err(e) = work(&mut acc) {
            sink.errors.lock().expect("host sink").push(format!("{name}: {e}"));
        }
        sink.ops.lock().expect("host sink").push((id, t0.elapsed().as_secs_f64() * 1e3));
    });
    Ok((uses, job))
}
