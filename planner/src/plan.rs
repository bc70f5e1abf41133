//! The planner's entry point: floor check, heuristics as a warm start, the MILP, emission, and
//! the simulator's prediction.

use crate::decisions::{ActChoice, Decisions, Group, OwnerChoice};
use crate::heuristics::{heuristic_decisions, Heuristic};
use crate::solve::milp::{enumerate, SolveLimits};
use crate::solve::StageModel;
use models::inventory::Owner;
use models::schedule::SolverReport;
use models::trace::Trace;
use models::{Bytes, HardwareProfile, Placement, Program, Schedule, Seconds};

/// Why no plan came out.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("budget {budget} is below the {floor} floor: {reason}")]
    Infeasible { budget: Bytes, floor: Bytes, reason: String },
    #[error("invalid decisions: {0}")]
    BadDecisions(String),
    #[error("the solver failed: {0}")]
    Solver(String),
    #[error("the emitted schedule does not simulate: {0}")]
    Simulation(Box<crate::SimError>),
}

impl From<crate::SimError> for PlanError {
    fn from(e: crate::SimError) -> Self {
        PlanError::Simulation(Box::new(e))
    }
}

/// How hard to solve.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// Wall-clock limit of the MILP; the best plan found by then is used, with its gap.
    pub time_limit: Seconds,
    /// Stop when the proved gap is at most this.
    pub mip_rel_gap: f64,
    pub threads: u32,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { time_limit: Seconds(60.0), mip_rel_gap: 0.005, threads: 2 }
    }
}

/// A schedule and its simulated trace.
#[derive(Clone, Debug)]
pub struct Plan {
    pub schedule: Schedule,
    pub trace: Trace,
}

/// The leanest choice of every group (each group's smallest memory at its own peak, then its
/// smallest total), the device memory it needs, and what holds memory at its peak.
/// Also returns the device memory that maps the lean plan's pinned host memory (no plan pins
/// more), with the pool's rounding of the arena.
pub fn floor_of(model: &StageModel) -> (Bytes, String, Decisions, Bytes) {
    let program = model.program;
    let mut d = Decisions::all_gpu(program);
    for g in enumerate(model) {
        let best = (0..g.len())
            .min_by_key(|k| {
                let live = &g.contributions[*k].live;
                (live.iter().max().copied().unwrap_or(0), live.iter().sum::<u64>())
            })
            .unwrap_or(0);
        g.apply(best, &mut d);
    }
    let e = model.evaluate(&d);
    // The lean plan pins most of the model on the host, and the driver maps pinned memory in
    // device memory: count that, and the pool's rounding of the arena.
    let hw = model.hw;
    let pinned = crate::emit::emit(program, hw, &d, Bytes(u64::MAX / 4)).map(|s| s.pinned_bytes(program)).unwrap_or(Bytes::ZERO);
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

/// The budget the solver is given for `budget`: less the device memory that would map the
/// lean plan's pinned host memory and the pool's rounding, which its memory rows do not count.
pub fn solver_budget(model: &StageModel, budget: Bytes) -> Bytes {
    budget.saturating_sub(floor_of(model).3)
}

/// The smallest budget any schedule of this planner fits in (device bytes, fixed overhead
/// included).
pub fn feasible_floor(program: &Program, hw: &HardwareProfile) -> Bytes {
    floor_of(&StageModel::new(program, hw)).0
}

/// Candidate starting points: the heuristics that fit, and a few mixed presets, each within
/// the solver's capacity for `budget`.
#[cfg(test)]
pub(crate) fn warm_candidates(model: &StageModel, budget: Bytes) -> Vec<Decisions> {
    let lean = floor_of(model).2;
    candidates(model, budget, lean).into_iter().filter(|d| model.evaluate(d).peak.0 <= model.capacity(budget)).collect()
}

/// The heuristics that can fit `budget` (live peak and fixed overhead within it), a few mixed
/// presets and the lean plan, unfiltered otherwise: `plan()` builds them once and keeps those
/// its solves and its final check need.
fn candidates(model: &StageModel, budget: Bytes, lean: Decisions) -> Vec<Decisions> {
    let program = model.program;
    let mut v: Vec<Decisions> = Heuristic::ALL.iter().filter_map(|h| heuristic_decisions(*h, model, budget)).collect();
    // Streamed optimizer with everything else resident, then with recomputation, then leaner.
    let mut d = Decisions::all_gpu(program).with_optimizer(Placement::Streamed);
    v.push(d.clone());
    d.layers.iter_mut().for_each(|a| *a = ActChoice::RECOMPUTE);
    v.push(d.clone());
    for (o, c) in &mut d.owners {
        if matches!(o, Owner::Layer(_) | Owner::OutputChunk(_)) {
            *c = OwnerChoice { weights: Placement::Streamed, optimizer: c.optimizer };
        }
    }
    v.push(d);
    v.push(lean);
    let mut unique: Vec<Decisions> = Vec::new();
    for d in v {
        if !unique.contains(&d) {
            unique.push(d);
        }
    }
    unique
}

/// Plans one step of `program` on `hw` within `budget` (device bytes, fixed overhead included).
/// The solver counts live bytes; the executor lays them out in one arena (`models::arena`),
/// which a static layout can make slightly larger. When that arena would not fit, the solve is
/// repeated with the capacity cut by the excess, so the schedule's device peak is within budget.
pub fn plan(program: &Program, hw: &HardwareProfile, budget: Bytes, opts: &PlanOptions) -> Result<Plan, PlanError> {
    let model = StageModel::new(program, hw);
    let (floor, reason, lean, outside) = floor_of(&model);
    if budget < floor {
        return Err(PlanError::Infeasible { budget, floor, reason });
    }
    // Built once: every retry and the final check pick from them.
    let pool = candidates(&model, budget, lean);
    let mut target = budget.saturating_sub(outside);
    let mut found: Option<Plan> = None;
    let mut last = None;
    for _ in 0..4 {
        let starts: Vec<Decisions> = pool.iter().filter(|d| model.evaluate(d).peak.0 <= model.capacity(target)).cloned().collect();
        let (decisions, report) = solve_within(&model, target, &starts, opts)?;
        let plan = finish(program, hw, budget, &decisions, Some(report))?;
        let over = plan.schedule.prediction.peak_device().saturating_sub(budget);
        if over == Bytes::ZERO {
            found = Some(plan);
            break;
        }
        last = Some(plan.schedule.prediction.peak_device());
        target = target.saturating_sub(over + hw.alloc_granularity);
        if target + outside < floor {
            break;
        }
    }
    // Never slower than a starting point that fits the budget on the device: the solver's
    // budget leaves room for the most pinned memory any plan could map, which a plan that pins
    // less does not need.
    for d in pool.into_iter().filter(|d| model.evaluate(d).peak + hw.fixed_overhead <= budget) {
        let better = |p: &Plan| found.as_ref().is_none_or(|f| p.schedule.prediction.step_time < f.schedule.prediction.step_time);
        if found.as_ref().is_some_and(|f| model.evaluate(&d).step_time >= f.schedule.prediction.step_time) {
            continue;
        }
        // The report then describes the kept plan: its objective in the solver's model; the
        // solver's bound was for its smaller budget, so it bounds nothing here and is dropped
        // to the objective's (gap unknown: 0 is not claimed, the status says why).
        let objective = model.evaluate(&d).step_time;
        let report = found.as_ref().and_then(|f| f.schedule.prediction.solver.clone()).map(|mut r| {
            r.status = format!("{} (a starting point that fits the device was faster and kept; no bound for it)", r.status);
            r.objective = objective;
            r.bound = Seconds::ZERO;
            r.gap = 1.0;
            r
        });
        if let Ok(p) = finish(program, hw, budget, &d, report) {
            if p.schedule.prediction.peak_device() <= budget && better(&p) {
                found = Some(p);
            }
        }
    }
    found.ok_or_else(|| PlanError::Infeasible {
        budget,
        floor: last.unwrap_or(floor),
        reason: "the plans that fit the budget in live bytes need more once laid out in one arena; give a little more".into(),
    })
}

/// The solver's best decisions for `target` (never worse than its best starting point).
fn solve_within(
    model: &StageModel,
    target: Bytes,
    starts: &[Decisions],
    opts: &PlanOptions,
) -> Result<(Decisions, SolverReport), PlanError> {
    let warm = starts.iter().map(|d| (model.evaluate(d).step_time.0, d)).min_by(|a, b| a.0.total_cmp(&b.0)).map(|(t, d)| (t, d.clone()));
    let limits = SolveLimits { time_limit: opts.time_limit.0, mip_rel_gap: opts.mip_rel_gap, threads: opts.threads };
    let outcome = crate::solve::solve(model, target, starts, &limits)?;
    let mut decisions = outcome.decisions;
    let mut report = outcome.report;
    // Never worse than where the solver started (a time limit can stop it early).
    if let Some((t, w)) = warm {
        if t < model.evaluate(&decisions).step_time.0 {
            decisions = w;
            report.status = format!("{} (warm start kept)", report.status);
        }
    }
    Ok((decisions, report))
}

/// Emits and simulates `decisions`, filling the prediction from the trace.
pub fn finish(
    program: &Program,
    hw: &HardwareProfile,
    budget: Bytes,
    decisions: &Decisions,
    report: Option<SolverReport>,
) -> Result<Plan, PlanError> {
    let mut schedule = crate::emit::emit(program, hw, decisions, budget)?;
    let trace = crate::simulate(program, hw, &schedule)?;
    let mut prediction = crate::prediction_from_trace(&trace, &schedule, program, hw);
    prediction.solver = report;
    schedule.prediction = prediction;
    Ok(Plan { schedule, trace })
}

/// The group a block decision belongs to, for summaries.
pub fn group_of_block(kind: models::BlockKind) -> Option<Group> {
    match kind {
        models::BlockKind::Weights(o) | models::BlockKind::Optimizer(o) | models::BlockKind::Grads(o) => Some(Group::Owner(o)),
        models::BlockKind::LayerInput(l) | models::BlockKind::LayerActivations(l) => Some(Group::Acts(l)),
        _ => None,
    }
}
