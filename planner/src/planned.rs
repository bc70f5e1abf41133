//! A plan: the schedule of a set of decisions, emitted and simulated, with the simulator's
//! prediction.

use crate::decisions::Decisions;
use crate::PlanError;
use models::schedule::{BlockDecision, SolverReport};
use models::trace::Trace;
use models::{Bytes, HardwareProfile, Program, Schedule};

/// A schedule and its simulated trace.
#[derive(Clone, Debug)]
pub struct Plan {
    pub schedule: Schedule,
    pub trace: Trace,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::ActChoice;
    use models::{GptConfig, Placement};

    fn config(name: &str) -> Program {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../models/configs/{name}.ron"));
        Program::build(&GptConfig::load(&p).unwrap())
    }

    #[test]
    fn replan_record_matches_finish() {
        let p = config("gpt2-tiny");
        let hw = models::HardwareProfile::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/hardware/h100-sxm.ron"))
            .unwrap();
        let mut d = Decisions::all_gpu(&p).with_optimizer(Placement::Host);
        d.layers.iter_mut().for_each(|a| *a = ActChoice::RECOMPUTE);
        let budget = models::Bytes(80 << 30);
        let a = replan_record(&p, &hw, budget, &d.block_decisions(&p)).unwrap();
        let b = finish(&p, &hw, budget, &d, None).unwrap();
        assert_eq!(a.schedule.prediction, b.schedule.prediction);
        assert!(a.schedule.prediction.peak_allocated < replan_record(&p, &hw, budget, &[]).unwrap().schedule.prediction.peak_allocated);
    }
}
