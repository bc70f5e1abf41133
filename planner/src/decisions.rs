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

/// How many stages ahead of its first use a streamed or offloaded block is fetched.
pub const PREFETCH_STAGES: u32 = 1;

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

    /// Streams the weights of every owner `which` selects, keeping its optimizer placement
    /// (the module queue streams layers and output chunks).
    pub fn with_streamed_weights(mut self, which: impl Fn(Owner) -> bool) -> Decisions {
        for (o, c) in &mut self.owners {
            if which(*o) {
                c.weights = Placement::Streamed;
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
            Placement::Streamed | Placement::Offloaded => Some(PREFETCH_STAGES),
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

    /// The inverse of [`Decisions::block_decisions`]: the decisions a schedule file (or a run
    /// record) carries, back as one choice per group. Blocks are found by name (ids may shift
    /// when the inventory changes); a placeable block the list leaves out stays on the GPU, so
    /// an empty list is [`Decisions::all_gpu`]. Prefetch distances are the emitter's own and are
    /// not read. Errors: a block this program does not have, a block listed twice with
    /// different placements, gradients that disagree with their optimizer's placement, or a
    /// combination [`Decisions::validate`] refuses.
    pub fn from_block_decisions(program: &Program, decisions: &[BlockDecision]) -> Result<Decisions, PlanError> {
        let inv = &program.inventory;
        let mut d = Decisions::all_gpu(program);
        let mut grads: Vec<(Owner, Placement, String)> = Vec::new();
        let mut seen: std::collections::HashMap<BlockKind, Placement> = std::collections::HashMap::new();
        for bd in decisions {
            let block = inv.blocks.iter().find(|b| b.kind.placeable() && b.name() == bd.name).ok_or_else(|| {
                PlanError::BadDecisions(format!("{}: no placeable block of that name in {} (re-plan)", bd.name, program.config.name))
            })?;
            if let Some(p) = seen.insert(block.kind, bd.placement) {
                if p != bd.placement {
                    return Err(PlanError::BadDecisions(format!(
                        "{} is listed twice, {} and {}",
                        bd.name,
                        p.label(),
                        bd.placement.label()
                    )));
                }
            }
            let bad = |what: &str| PlanError::BadDecisions(format!("{}: {} is not a placement for {what}", bd.name, bd.placement.label()));
            match block.kind {
                BlockKind::Weights(o) => {
                    let c = d.owner(o);
                    d.set_owner(o, OwnerChoice { weights: bd.placement, ..c });
                }
                BlockKind::Optimizer(o) => {
                    let c = d.owner(o);
                    d.set_owner(o, OwnerChoice { optimizer: bd.placement, ..c });
                }
                BlockKind::Grads(o) => grads.push((o, bd.placement, bd.name.clone())),
                BlockKind::LayerInput(l) => d.layers[l as usize].input = bd.placement,
                BlockKind::LayerActivations(l) => d.layers[l as usize].inner = bd.placement,
                BlockKind::HeadActivations => {
                    if bd.placement != Placement::Gpu {
                        return Err(bad("the head's activations (always on the GPU)"));
                    }
                }
                BlockKind::Io | BlockKind::Workspace | BlockKind::Scratch | BlockKind::Clipping => {
                    unreachable!("only placeable blocks are looked up")
                }
            }
        }
        for (o, p, name) in grads {
            let implied = d.owner(o).grads();
            if p != implied {
                return Err(PlanError::BadDecisions(format!(
                    "{name}: gradients are {} but the optimizer placement {} implies {}",
                    p.label(),
                    d.owner(o).optimizer.label(),
                    implied.label()
                )));
            }
        }
        d.validate(program)?;
        Ok(d)
    }

    /// Groups in a fixed order (owners, then layers' activations).
    pub fn groups(program: &Program) -> Vec<Group> {
        let mut g: Vec<Group> = program.inventory.owners().into_iter().map(Group::Owner).collect();
        g.extend((0..program.config.layers).map(Group::Acts));
        g
    }
}

/// Decision sets for tests that touch every kind of choice: owner `i` takes allowed choice
/// `i * owner_step + shift` and layer `l` activation choice `l * layer_step + shift`, cycling.
#[cfg(test)]
pub(crate) fn varied(p: &Program, shift: usize, (owner_step, layer_step): (usize, usize)) -> Decisions {
    let mut d = Decisions::all_gpu(p);
    for (i, (o, c)) in d.owners.iter_mut().enumerate() {
        let all = OwnerChoice::all(p, *o);
        *c = all[(i * owner_step + shift) % all.len()];
    }
    let acts = ActChoice::all();
    for (l, a) in d.layers.iter_mut().enumerate() {
        *a = acts[(l * layer_step + shift) % acts.len()];
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::shipped::program as config;

    fn tiny() -> Program {
        config("gpt2-tiny")
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

    #[test]
    fn block_decisions_round_trip() {
        for name in ["gpt2-tiny", "gpt2-124m", "gpt3-1.3b"] {
            let p = config(name);
            let mut sets = vec![
                Decisions::all_gpu(&p),
                Decisions::all_gpu(&p).with_optimizer(Placement::Host),
                Decisions::all_gpu(&p).with_optimizer(Placement::Streamed),
            ];
            let mut streamed = Decisions::all_gpu(&p);
            for (_, c) in &mut streamed.owners {
                c.weights = Placement::Streamed;
            }
            streamed.layers.iter_mut().for_each(|a| *a = ActChoice::OFFLOAD);
            sets.push(streamed);
            let mut recompute = Decisions::all_gpu(&p);
            recompute.layers.iter_mut().for_each(|a| *a = ActChoice::RECOMPUTE);
            sets.push(recompute);
            for shift in 0..7 {
                sets.push(varied(&p, shift, (1, 1)));
            }
            if !p.config.tied_embeddings {
                let mut cpu_emb = Decisions::all_gpu(&p);
                cpu_emb.set_owner(Owner::Embedding, OwnerChoice { weights: Placement::Host, optimizer: Placement::Host });
                assert_eq!(cpu_emb.owner(Owner::Embedding).weights, Placement::Host);
                sets.push(cpu_emb);
            }
            for d in sets {
                d.validate(&p).unwrap();
                let blocks = d.block_decisions(&p);
                let back = Decisions::from_block_decisions(&p, &blocks).unwrap();
                assert_eq!(back, d, "{name}");
                assert_eq!(back.block_decisions(&p), blocks);
            }
            assert_eq!(Decisions::from_block_decisions(&p, &[]).unwrap(), Decisions::all_gpu(&p));
        }
        // gpt3-1.3b is untied, so the CPU embedding case above ran.
        assert!(!config("gpt3-1.3b").config.tied_embeddings);
    }

    #[test]
    fn bad_block_decisions_are_refused() {
        let p = config("gpt3-1.3b");
        let d = Decisions::all_gpu(&p).with_optimizer(Placement::Host);
        let blocks = d.block_decisions(&p);
        // An unknown block.
        let mut b = blocks.clone();
        b[0].name = "layer999.weights".into();
        let e = Decisions::from_block_decisions(&p, &b).unwrap_err().to_string();
        assert!(e.contains("layer999.weights"), "{e}");
        // Gradients on the GPU while the update runs on the host.
        let mut b = blocks.clone();
        let g = b.iter_mut().find(|x| matches!(p.inventory.block(x.block).kind, BlockKind::Grads(_))).unwrap();
        g.placement = Placement::Gpu;
        assert!(Decisions::from_block_decisions(&p, &b).is_err());
        // A placement the group does not allow (weights recomputed).
        let mut b = blocks.clone();
        let w = b.iter_mut().find(|x| matches!(p.inventory.block(x.block).kind, BlockKind::Weights(Owner::Layer(_)))).unwrap();
        w.placement = Placement::Recomputed;
        assert!(Decisions::from_block_decisions(&p, &b).is_err());
        // The same block twice, placed two ways.
        let mut b = blocks.clone();
        let mut dup = b.iter().find(|x| matches!(p.inventory.block(x.block).kind, BlockKind::LayerActivations(0))).unwrap().clone();
        dup.placement = Placement::Recomputed;
        b.push(dup);
        assert!(Decisions::from_block_decisions(&p, &b).unwrap_err().to_string().contains("twice"));
    }
}
