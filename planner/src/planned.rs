//! A plan: the schedule of a set of decisions, emitted and simulated, with the simulator's
//! prediction.

use crate::decisions::Decisions;
use crate::PlanError;
use models::figures::{MemoryFigures, PlanFigures};
use models::schedule::{BlockDecision, Prediction, SolverReport};
use models::trace::Trace;
use models::{Bytes, HardwareProfile, Program, Schedule};

/// A schedule and its simulated trace.
#[derive(Clone, Debug)]
pub struct Plan {
    pub schedule: Schedule,
    pub trace: Trace,
}

impl Plan {
    /// The figures every output prints for this plan (`hw`: the profile it was planned on).
    pub fn figures(&self, hw: &HardwareProfile) -> PlanFigures {
        figures(hw, &self.schedule, &self.schedule.prediction, &self.trace)
    }
}

/// The figures of `schedule` with `prediction` (its stored one, or today's) and its simulated
/// `trace` on `hw`: memory from the prediction, the step's parts from the trace.
pub fn figures(hw: &HardwareProfile, schedule: &Schedule, prediction: &Prediction, trace: &Trace) -> PlanFigures {
    PlanFigures { memory: MemoryFigures::of(prediction, schedule.budget, hw), step: crate::step_breakdown(schedule, trace) }
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

/// Emits and simulates a recorded schedule's block decisions again with today's code (a run
/// record's `decisions`; empty = all on the GPU) under `budget`: [`finish`] of
/// [`Decisions::from_block_decisions`].
pub fn replan_record(program: &Program, hw: &HardwareProfile, budget: Bytes, decisions: &[BlockDecision]) -> Result<Plan, PlanError> {
    let d = Decisions::from_block_decisions(program, decisions)?;
    finish(program, hw, budget, &d, None)
}

/// [`replan_record`] for setting a plan against what its run measured: where today's plan of
/// the decisions exceeds `budget`, they are planned again without a cap, so that the comparison
/// still shows which term grew; the over-budget error comes back beside that plan.
pub fn replan_uncapped(
    program: &Program,
    hw: &HardwareProfile,
    budget: Bytes,
    decisions: &[BlockDecision],
) -> Result<(Plan, Option<String>), PlanError> {
    match replan_record(program, hw, budget, decisions) {
        Ok(plan) => Ok((plan, None)),
        Err(PlanError::Simulation(e)) if matches!(*e, crate::SimError::OverBudget { .. }) => {
            Ok((replan_record(program, hw, Bytes::UNLIMITED, decisions)?, Some(e.to_string())))
        }
        Err(e) => Err(e),
    }
}

/// What clipping costs a plan: the best plan of the unclipped step under the same budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClippingCost {
    pub clipped_step: models::Seconds,
    pub unclipped_step: models::Seconds,
}

impl ClippingCost {
    /// One line for people.
    pub fn line(&self) -> String {
        let dt = (self.clipped_step.0 - self.unclipped_step.0) * 1e3;
        format!(
            "{dt:+.2} ms per step: the best unclipped plan under the same budget takes {:.2} ms (every update waits for every gradient's norm; --grad-clip 0 plans without clipping, which changes the numbers)",
            self.unclipped_step.0 * 1e3
        )
    }
}

/// [`ClippingCost`] of a clipped plan (None for an unclipped program): the unclipped step
/// planned under the schedule's budget with `opts`.
pub fn clipping_cost(
    program: &Program,
    hw: &HardwareProfile,
    schedule: &Schedule,
    opts: &crate::SolveOptions,
) -> Result<Option<ClippingCost>, PlanError> {
    if program.clipping == models::program::Clipping::Off {
        return Ok(None);
    }
    let plain = Program::build_accumulating(&program.config, models::program::Clipping::Off, program.micro_batches);
    let unclipped = crate::plan(&plain, hw, schedule.budget, opts)?;
    Ok(Some(ClippingCost { clipped_step: schedule.prediction.step_time, unclipped_step: unclipped.schedule.prediction.step_time }))
}

/// A schedule read from a file, checked against today's code: its decisions emit exactly its
/// actions, and today's simulation gives the prediction, which may differ from the one the file
/// stores (an older offplan's model): the differences are named.
pub struct Checked {
    pub trace: Trace,
    /// Today's prediction of the schedule.
    pub today: Prediction,
    /// The simulator's over-budget error, where today's model puts the peak over the budget.
    pub over_budget: Option<String>,
    /// Each figure today's model predicts otherwise than the file, "what: stored -> today".
    pub differences: Vec<String>,
}

impl Checked {
    /// The figures of today's prediction of `schedule` (the one checked) on `hw`.
    pub fn figures(&self, hw: &HardwareProfile, schedule: &Schedule) -> PlanFigures {
        figures(hw, schedule, &self.today, &self.trace)
    }
}

/// Checks `schedule` against `program` (whose digest the caller has checked) on `hw`.
pub fn check_schedule(program: &Program, hw: &HardwareProfile, schedule: &Schedule) -> Result<Checked, PlanError> {
    let d = Decisions::from_block_decisions(program, &schedule.decisions)?;
    let emitted = crate::emit::emit(program, hw, &d, schedule.budget)?;
    if emitted.actions != schedule.actions || emitted.host_resident != schedule.host_resident {
        return Err(PlanError::BadDecisions(
            "its actions are not the ones its decisions make (a file edited, or written by another offplan): re-plan".into(),
        ));
    }
    let (trace, over_budget) = match crate::simulate(program, hw, schedule) {
        Ok(t) => (t, None),
        Err(crate::SimError::OverBudget { trace, peak, fixed_overhead, budget, .. }) => {
            (*trace, Some(format!("{} allocated + {fixed_overhead} fixed overhead exceeds the budget {budget}", peak)))
        }
        Err(e) => return Err(e.into()),
    };
    let today = crate::prediction_from_trace(&trace, schedule, program, hw);
    let stored = &schedule.prediction;
    let mut differences = Vec::new();
    let rel = |a: f64, b: f64| (a - b).abs() > 1e-9 * a.abs().max(b.abs());
    if rel(stored.step_time.0, today.step_time.0) {
        differences.push(format!("step time: {} -> {}", stored.step_time, today.step_time));
    }
    for (what, a, b) in [
        ("live peak", stored.peak_allocated, today.peak_allocated),
        ("arena", stored.tensor_bytes(), today.tensor_bytes()),
        ("device", stored.peak_device(), today.peak_device()),
        ("host memory", stored.pinned_host, today.pinned_host),
    ] {
        if a != b {
            differences.push(format!("{what}: {a} -> {b}"));
        }
    }
    Ok(Checked { trace, today, over_budget, differences })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::ActChoice;
    use models::Placement;

    use crate::shipped::{h100, program as config};

    #[test]
    fn replan_record_matches_finish() {
        let p = config("gpt2-tiny");
        let hw = h100();
        let mut d = Decisions::all_gpu(&p).with_optimizer(Placement::Host);
        d.layers.iter_mut().for_each(|a| *a = ActChoice::RECOMPUTE);
        let budget = models::Bytes(80 << 30);
        let a = replan_record(&p, &hw, budget, &d.block_decisions(&p)).unwrap();
        let b = finish(&p, &hw, budget, &d, None).unwrap();
        assert_eq!(a.schedule.prediction, b.schedule.prediction);
        assert!(a.schedule.prediction.peak_allocated < replan_record(&p, &hw, budget, &[]).unwrap().schedule.prediction.peak_allocated);
    }

    #[test]
    fn a_schedule_is_checked_against_its_decisions_and_todays_model() {
        let p = config("gpt2-tiny");
        let hw = h100();
        let mut d = Decisions::all_gpu(&p).with_optimizer(Placement::Host);
        d.layers[0] = ActChoice::OFFLOAD;
        let plan = finish(&p, &hw, models::Bytes::UNLIMITED, &d, None).unwrap();
        let c = check_schedule(&p, &hw, &plan.schedule).unwrap();
        assert!(c.differences.is_empty() && c.over_budget.is_none());
        assert_eq!(c.today, plan.schedule.prediction);
        // A stored prediction today's model does not make is named, not refused.
        let mut old = plan.schedule.clone();
        old.prediction.step_time = models::Seconds(old.prediction.step_time.0 * 2.0);
        let c = check_schedule(&p, &hw, &old).unwrap();
        assert_eq!(c.differences.len(), 1, "{:?}", c.differences);
        assert!(c.differences[0].starts_with("step time"));
        // Actions that are not the decisions' are refused.
        let mut edited = plan.schedule.clone();
        edited.actions.pop();
        assert!(matches!(check_schedule(&p, &hw, &edited), Err(PlanError::BadDecisions(_))));
        let mut edited = plan.schedule.clone();
        edited.decisions.retain(|b| b.placement == Placement::Gpu);
        assert!(check_schedule(&p, &hw, &edited).is_err());
    }
}
