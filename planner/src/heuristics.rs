//! The placements people choose by hand today, as decision presets emitted like any plan.

use crate::decisions::{ActChoice, Decisions};
use crate::model::StageModel;
use crate::PlanError;
use models::inventory::Owner;
use models::{Bytes, HardwareProfile, Placement, Program, Schedule};

/// A hand-made placement policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Heuristic {
    /// Everything on the GPU.
    KeepAll,
    /// Activation checkpointing: every layer keeps its input and recomputes the rest.
    RecomputeAll,
    /// Every layer's activations go to the host after forward and come back for backward.
    OffloadAll,
    /// The first N layers' activations offloaded, with the best N that fits.
    OffloadFirstN,
    /// Each layer's weights leave after forward and return for backward, the output layer is
    /// streamed in 4 vocabulary chunks, optimizer state as the budget needs (GPU, streamed,
    /// then host).
    ModuleQueue,
}

impl Heuristic {
    pub const ALL: [Heuristic; 5] =
        [Heuristic::KeepAll, Heuristic::RecomputeAll, Heuristic::OffloadAll, Heuristic::OffloadFirstN, Heuristic::ModuleQueue];

    pub fn label(self) -> &'static str {
        match self {
            Heuristic::KeepAll => "keep everything",
            Heuristic::RecomputeAll => "recompute every layer",
            Heuristic::OffloadAll => "offload every layer",
            Heuristic::OffloadFirstN => "offload the first N layers",
            Heuristic::ModuleQueue => "module queue",
        }
    }
}

/// The first `n` layers' activations offloaded, the rest kept, everything else on the GPU.
pub fn offload_first(program: &Program, n: u32) -> Decisions {
    let mut d = Decisions::all_gpu(program);
    for l in 0..n.min(program.config.layers) {
        d.layers[l as usize] = ActChoice::OFFLOAD;
    }
    d
}

/// Layer weights and output chunks streamed, activations kept, optimizer on the GPU.
pub fn module_queue(program: &Program) -> Decisions {
    Decisions::all_gpu(program).with_streamed_weights(|o| matches!(o, Owner::Layer(_) | Owner::OutputChunk(_)))
}

/// Whether `d` can fit `budget`: its live peak and the fixed overhead within it (what any
/// schedule needs at least; `heuristic_schedule` checks the finished schedule's device peak).
fn fits(model: &StageModel, d: &Decisions, budget: Bytes) -> bool {
    model.evaluate(d).peak + model.hw.fixed_overhead <= budget
}

/// The decisions of `h` for `model`'s program under `budget`, or None when they do not fit.
pub fn heuristic_decisions(h: Heuristic, model: &StageModel, budget: Bytes) -> Option<Decisions> {
    let program = model.program;
    let one = |d: Decisions| fits(model, &d, budget).then_some(d);
    match h {
        Heuristic::KeepAll => one(Decisions::all_gpu(program)),
        Heuristic::RecomputeAll => {
            let mut d = Decisions::all_gpu(program);
            d.layers.iter_mut().for_each(|a| *a = ActChoice::RECOMPUTE);
            one(d)
        }
        Heuristic::OffloadAll => one(offload_first(program, program.config.layers)),
        // Each candidate evaluated once, for its fit and its time; the first of equal step
        // times wins.
        Heuristic::OffloadFirstN => (0..=program.config.layers)
            .map(|n| offload_first(program, n))
            .map(|d| (model.evaluate(&d), d))
            .filter(|(e, _)| e.peak + model.hw.fixed_overhead <= budget)
            .min_by(|a, b| a.0.step_time.0.total_cmp(&b.0.step_time.0))
            .map(|(_, d)| d),
        Heuristic::ModuleQueue => [Placement::Gpu, Placement::Streamed, Placement::Host]
            .into_iter()
            .map(|p| module_queue(program).with_optimizer(p))
            .find(|d| fits(model, d, budget)),
    }
}

/// The schedule of heuristic `h` (the module queue plans the 4-chunk program), with the
/// simulator's prediction; `Infeasible` when the policy does not fit in `budget`.
pub fn heuristic_schedule(h: Heuristic, program: &Program, hw: &HardwareProfile, budget: Bytes) -> Result<Schedule, PlanError> {
    let rechunked;
    let program = if h == Heuristic::ModuleQueue && program.config.output_chunks != 4 {
        let cfg = program.config.with_shape(None, None, Some(4)).map_err(PlanError::BadDecisions)?;
        rechunked = Program::build_accumulating(&cfg, program.clipping, program.micro_batches);
        &rechunked
    } else {
        program
    };
    let model = StageModel::new(program, hw);
    let d = heuristic_decisions(h, &model, budget).ok_or_else(|| {
        let floor = crate::floor::floor_of(&model).0;
        PlanError::Infeasible { budget, floor, reason: format!("{} does not fit in {budget} on {}", h.label(), hw.name) }
    })?;
    let mut s = crate::planned::finish(program, hw, budget, &d, None)?.schedule;
    s.strategy = h.label().into();
    // Fits as the device counts it: the arena as reserved, the fixed overhead, the mapping of
    // its pinned memory.
    if s.prediction.peak_device() > budget {
        return Err(PlanError::Infeasible {
            budget,
            floor: s.prediction.peak_device(),
            reason: format!("{} needs {} on the device", h.label(), s.prediction.peak_device()),
        });
    }
    Ok(s)
}
