//! Named placement strategies a user can ask for instead of the solver's plan, to run one
//! technique on its own (every layer offloaded, host AdamW, CPU embedding, ...) or a mix of
//! them. `offload-all,host-optimizer` applies the presets left to right.

use crate::decisions::{ActChoice, Decisions, OwnerChoice};
use crate::heuristics::offload_first;
use crate::planned::{finish, Plan};
use crate::PlanError;
use models::inventory::Owner;
use models::{Bytes, HardwareProfile, Placement, Program};

/// One preset: a change to every block it is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Everything on the GPU.
    KeepAll,
    /// Every layer keeps its input and recomputes the rest in backward.
    RecomputeAll,
    /// Every layer's activations offloaded.
    OffloadAll,
    /// The first N layers' activations offloaded.
    OffloadFirst(u32),
    /// Layer weights and output chunks streamed (the module queue, optimizer kept).
    ModuleQueue,
    /// Every layer's weights streamed in for each use.
    StreamWeights,
    /// Every output chunk's weights streamed in for each use.
    StreamOutput,
    /// Optimizer state in pinned memory, streamed around each GPU update.
    StreamedOptimizer,
    /// AdamW on the host for every owner (gradients go to the host).
    HostOptimizer,
    /// Embedding lookup and its gradient on the host (untied embeddings only).
    CpuEmbedding,
}

/// Names `parse` accepts, for messages.
pub const PRESET_NAMES: &str =
    "keep-all, recompute-all, offload-all, offload-first=N, module-queue, stream-weights, stream-output, streamed-optimizer, host-optimizer, cpu-embedding";

impl Preset {
    pub fn parse(s: &str) -> Result<Preset, String> {
        Ok(match s.trim() {
            "keep-all" => Preset::KeepAll,
            "recompute-all" => Preset::RecomputeAll,
            "offload-all" => Preset::OffloadAll,
            "module-queue" => Preset::ModuleQueue,
            "stream-weights" => Preset::StreamWeights,
            "stream-output" => Preset::StreamOutput,
            "streamed-optimizer" => Preset::StreamedOptimizer,
            "host-optimizer" => Preset::HostOptimizer,
            "cpu-embedding" => Preset::CpuEmbedding,
            other => match other.strip_prefix("offload-first=").map(str::parse::<u32>) {
                Some(Ok(n)) => Preset::OffloadFirst(n),
                _ => return Err(format!("unknown strategy `{other}`: use one of {PRESET_NAMES}, or several joined by commas")),
            },
        })
    }

    /// Applies the preset to `d`.
    pub fn apply(self, program: &Program, d: &mut Decisions) -> Result<(), PlanError> {
        match self {
            Preset::KeepAll => *d = Decisions::all_gpu(program),
            Preset::RecomputeAll => d.layers.iter_mut().for_each(|a| *a = ActChoice::RECOMPUTE),
            Preset::OffloadAll | Preset::OffloadFirst(_) => {
                let n = if let Preset::OffloadFirst(n) = self { n } else { program.config.layers };
                if n > program.config.layers {
                    return Err(PlanError::BadDecisions(format!("offload-first={n}, but the model has {} layers", program.config.layers)));
                }
                d.layers[..n as usize].copy_from_slice(&offload_first(program, n).layers[..n as usize]);
            }
            Preset::ModuleQueue => *d = d.clone().with_streamed_weights(|o| matches!(o, Owner::Layer(_) | Owner::OutputChunk(_))),
            Preset::StreamWeights => *d = d.clone().with_streamed_weights(|o| matches!(o, Owner::Layer(_))),
            Preset::StreamOutput => *d = d.clone().with_streamed_weights(|o| matches!(o, Owner::OutputChunk(_))),
            Preset::StreamedOptimizer => *d = d.clone().with_optimizer(Placement::Streamed),
            Preset::HostOptimizer => *d = d.clone().with_optimizer(Placement::Host),
            Preset::CpuEmbedding => {
                if program.config.tied_embeddings {
                    return Err(PlanError::BadDecisions(format!(
                        "cpu-embedding needs an untied embedding, and {} ties it to the output layer (which runs on the GPU): use a gpt3-* config",
                        program.config.name
                    )));
                }
                d.set_owner(Owner::Embedding, OwnerChoice { weights: Placement::Host, optimizer: Placement::Host });
            }
        }
        Ok(())
    }
}

/// A comma-separated list of presets.
pub fn parse_strategy(s: &str) -> Result<Vec<Preset>, String> {
    s.split(',').map(Preset::parse).collect()
}

/// The decisions of `presets` applied in order to everything-on-the-GPU.
pub fn strategy_decisions(program: &Program, presets: &[Preset]) -> Result<Decisions, PlanError> {
    let mut d = Decisions::all_gpu(program);
    for p in presets {
        p.apply(program, &mut d)?;
    }
    d.validate(program)?;
    Ok(d)
}

/// The schedule of a strategy, simulated; `Infeasible` when its device peak (the arena its
/// tensors are laid out in, and the fixed overhead) exceeds `budget`.
pub fn strategy_plan(program: &Program, hw: &HardwareProfile, budget: Bytes, name: &str, presets: &[Preset]) -> Result<Plan, PlanError> {
    let d = strategy_decisions(program, presets)?;
    // Simulated without a cap, so that an over-budget strategy is reported with its peak.
    let mut plan = finish(program, hw, Bytes::UNLIMITED, &d, None)?;
    plan.schedule.budget = budget;
    plan.schedule.strategy = name.to_string();
    let need = plan.schedule.prediction.peak_device();
    if need > budget {
        return Err(PlanError::Infeasible {
            budget,
            floor: need,
            reason: format!("strategy {name} needs {need} at {}", plan.schedule.prediction.peak_at),
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::shipped::{h100, program};

    #[test]
    fn presets_parse_and_apply_left_to_right() {
        let p = program("gpt3-1.3b");
        let ps = parse_strategy("offload-first=3,host-optimizer,cpu-embedding").unwrap();
        let d = strategy_decisions(&p, &ps).unwrap();
        assert_eq!(d.layers.iter().filter(|a| **a == ActChoice::OFFLOAD).count(), 3);
        assert!(d.owners.iter().all(|(_, c)| c.optimizer == Placement::Host));
        assert_eq!(d.owner(Owner::Embedding).weights, Placement::Host);
        let e = parse_strategy("offload-some").unwrap_err();
        assert!(e.contains("offload-first=N"), "{e}");
    }

    #[test]
    fn cpu_embedding_is_refused_for_tied_models() {
        let p = program("gpt2-tiny");
        let e = strategy_decisions(&p, &[Preset::CpuEmbedding]).unwrap_err().to_string();
        assert!(e.contains("untied"), "{e}");
    }

    #[test]
    fn a_strategy_over_budget_is_infeasible_and_names_its_peak() {
        let p = program("gpt2-tiny");
        let hw = h100();
        let ok = strategy_plan(&p, &hw, Bytes::gib(80.0), "offload-all", &[Preset::OffloadAll]).unwrap();
        assert!(ok.schedule.prediction.h2d_bytes.0 > 0, "offloading copies something back");
        let need = ok.schedule.prediction.peak_device();
        let tight = Bytes(need.0 - 1);
        match strategy_plan(&p, &hw, tight, "offload-all", &[Preset::OffloadAll]) {
            Err(PlanError::Infeasible { floor, .. }) => assert_eq!(floor, need),
            other => panic!("expected Infeasible, got {:?}", other.map(|_| ())),
        }
    }
}
