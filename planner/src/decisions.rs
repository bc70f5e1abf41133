//! What the planner decides: where each placeable block lives.
//!
//! Decisions come in groups that the solver picks one combination for:
//! - per parameter owner (embedding, each layer, final norm, each output chunk): its bf16
//!   weights (Gpu or Streamed; the embedding also Host = CPU embedding) and its optimizer state
//!   (Gpu, Streamed around its Adam op, or Host = host AdamW). Gradients follow the optimizer:
//!   on the GPU unless the update runs on the host, then they go D2H after their last write.
//! - per transformer layer: its input x_in (Gpu or Offloaded) and its other saved activations
//!   (Gpu, Offloaded or Recomputed).

use crate::PlanError;
use models::inventory::{BlockKind, Owner};
use models::schedule::BlockDecision;
use models::{Placement, Program};
use serde::{Deserialize, Serialize};

/// Placement of one owner's weights and optimizer state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OwnerChoice {
    pub weights: Placement,
    pub optimizer: Placement,
}

impl OwnerChoice {
    pub const GPU: OwnerChoice = OwnerChoice { weights: Placement::Gpu, optimizer: Placement::Gpu };

    /// Every combination allowed for `owner` in `program`.
    pub fn all(program: &Program, owner: Owner) -> Vec<OwnerChoice> {
        use Placement::*;
        let mut v = Vec::new();
        for weights in [Gpu, Streamed] {
            for optimizer in [Gpu, Streamed, Host] {
                v.push(OwnerChoice { weights, optimizer });
            }
        }
        // CPU embedding: lookup and scatter on the host; the tied table is also the output
        // layer, which runs on the GPU, so only an untied embedding may live on the host.
        if owner == Owner::Embedding && !program.config.tied_embeddings {
            v.push(OwnerChoice { weights: Host, optimizer: Host });
        }
        v
    }

    /// The gradients' placement implied by the optimizer's.
    pub fn grads(self) -> Placement {
        if self.optimizer == Placement::Host {
            Placement::Host
        } else {
            Placement::Gpu
        }
    }
}

/// Placement of one layer's saved activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActChoice {
    /// x_in: Gpu or Offloaded.
    pub input: Placement,
    /// The other saved activations: Gpu, Offloaded or Recomputed.
    pub inner: Placement,
}

impl ActChoice {
    pub const KEEP: ActChoice = ActChoice { input: Placement::Gpu, inner: Placement::Gpu };
    pub const OFFLOAD: ActChoice = ActChoice { input: Placement::Offloaded, inner: Placement::Offloaded };
    pub const RECOMPUTE: ActChoice = ActChoice { input: Placement::Gpu, inner: Placement::Recomputed };

    pub fn all() -> Vec<ActChoice> {
        use Placement::*;
        let mut v = Vec::new();
        for input in [Gpu, Offloaded] {
            for inner in [Gpu, Offloaded, Recomputed] {
                v.push(ActChoice { input, inner });
            }
        }
        v
    }
}

/// One choice per group: the whole plan before emission.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decisions {
    /// In `Inventory::owners()` order.
    pub owners: Vec<(Owner, OwnerChoice)>,
    /// Indexed by layer.
    pub layers: Vec<ActChoice>,
}

/// A decision group: what one set of mutually exclusive choices is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Owner(Owner),
    Acts(u32),
}

impl Decisions {
    /// Everything on the GPU: the program as written.
    pub fn all_gpu(program: &Program) -> Decisions {
        Decisions {
            owners: program.inventory.owners().into_iter().map(|o| (o, OwnerChoice::GPU)).collect(),
            layers: vec![ActChoice::KEEP; program.config.layers as usize],
        }
    }

    pub fn owner(&self, o: Owner) -> OwnerChoice {
        self.owners.iter().find(|(x, _)| *x == o).map(|(_, c)| *c).unwrap_or(OwnerChoice::GPU)
    }

    pub fn set_owner(&mut self, o: Owner, c: OwnerChoice) {
        if let Some(e) = self.owners.iter_mut().find(|(x, _)| *x == o) {
            e.1 = c;
        }
    }

    /// Sets every owner's optimizer placement.
    pub fn with_optimizer(mut self, p: Placement) -> Decisions {
        for (_, c) in &mut self.owners {
            if c.optimizer != Placement::Host || c.weights != Placement::Host {
                c.optimizer = p;
            }
        }
        self
    }

    /// Checks every choice is allowed for this program.
    pub fn validate(&self, program: &Program) -> Result<(), PlanError> {
        if self.layers.len() != program.config.layers as usize {
            return Err(PlanError::BadDecisions(format!(
                "{} layer choices for a {}-layer model",
                self.layers.len(),
                program.config.layers
            )));
        }
        if self.owners.len() != program.inventory.owners().len() {
            return Err(PlanError::BadDecisions("owner list does not match the inventory".into()));
        }
        for (o, c) in &self.owners {
            if !OwnerChoice::all(program, *o).contains(c) {
                return Err(PlanError::BadDecisions(format!("{o}: {c:?} is not an allowed placement")));
            }
        }
        for (l, a) in self.layers.iter().enumerate() {
            if !ActChoice::all().contains(a) {
                return Err(PlanError::BadDecisions(format!("layer{l}: {a:?} is not an allowed placement")));
            }
        }
        Ok(())
    }

    /// The per-block decisions the schedule file carries (placeable blocks only).
    pub fn block_decisions(&self, program: &Program) -> Vec<BlockDecision> {
        let inv = &program.inventory;
        let distance = |p: Placement| match p {
            Placement::Streamed | Placement::Offloaded => Some(crate::emit::PREFETCH_STAGES),
            _ => None,
        };
        inv.blocks
            .iter()
            .filter(|b| b.kind.placeable())
            .filter_map(|b| {
                let placement = match b.kind {
                    BlockKind::Weights(o) => self.owner(o).weights,
                    BlockKind::Optimizer(o) => self.owner(o).optimizer,
                    BlockKind::Grads(o) => self.owner(o).grads(),
                    BlockKind::LayerInput(l) => self.layers[l as usize].input,
                    BlockKind::LayerActivations(l) => self.layers[l as usize].inner,
                    BlockKind::HeadActivations => Placement::Gpu,
                    _ => return None,
                };
                Some(BlockDecision { block: b.id, name: b.name(), placement, prefetch_distance: distance(placement) })
            })
            .collect()
    }

    /// Groups in a fixed order (owners, then layers' activations).
    pub fn groups(program: &Program) -> Vec<Group> {
        let mut g: Vec<Group> = program.inventory.owners().into_iter().map(Group::Owner).collect();
        g.extend((0..program.config.layers).map(Group::Acts));
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::GptConfig;

    fn tiny() -> Program {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs/gpt2-tiny.ron");
        Program::build(&GptConfig::load(&p).unwrap())
    }

    #[test]
    fn all_gpu_is_valid_and_covers_every_placeable_block() {
        let p = tiny();
        let d = Decisions::all_gpu(&p);
        d.validate(&p).unwrap();
        let n = p.inventory.blocks.iter().filter(|b| b.kind.placeable()).count();
        assert_eq!(d.block_decisions(&p).len(), n);
        assert!(d.block_decisions(&p).iter().all(|b| b.placement == Placement::Gpu));
    }

    #[test]
    fn tied_embedding_cannot_live_on_the_host() {
        let p = tiny();
        assert!(p.config.tied_embeddings);
        let mut d = Decisions::all_gpu(&p);
        d.set_owner(Owner::Embedding, OwnerChoice { weights: Placement::Host, optimizer: Placement::Host });
        assert!(d.validate(&p).is_err());
    }
}
