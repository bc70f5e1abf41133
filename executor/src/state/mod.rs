//! A model's training state, wherever a run keeps it: per owner its bf16 weights, its fp32
//! optimizer state `[master | m | v]`, and the AdamW step count.
//!
//! - [`ModelState`]: the whole state in host memory (for checksums and tests); it is a
//!   [`ParamSource`] (so [`crate::checkpoint::write_checkpoint`] writes it) and a
//!   [`StateSource`] (so a run can start from it), and reads back from a checkpoint.
//! - [`StateHomes`]: where each owner's current weights and optimizer state are between two
//!   steps of a schedule (the device buffer or the pinned host copy), from the schedule's
//!   actions alone, so plain Rust and testable without a GPU.
//! - With the `cuda` feature, `device::LiveState` reads a running step's state from those homes
//!   one owner at a time (device-resident tensors downloaded into host memory, host-resident
//!   ones copied: no device memory beyond what the schedule holds), and `device::load_state`
//!   writes a state into the device buffers and host copies before step 1, in place of the
//!   initializer.

#[cfg(feature = "cuda")]
pub mod device;

use crate::checkpoint::{Checkpoint, CheckpointError, ParamSource};
use crate::init::OwnerInit;
use half::bf16;
use models::inventory::Owner;
use models::program::Program;
use models::schedule::{Action, Schedule};
use models::TensorId;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Where a run starts each owner's state from (one owner at a time, so a large model is never
/// whole in host memory).
pub trait StateSource: Sync {
    /// The weights and `[master | m | v]` of `owner`, as `init::init_params` lays them out.
    fn owner_state(&self, owner: Owner) -> Result<OwnerInit, String>;
}

impl StateSource for Checkpoint {
    fn owner_state(&self, owner: Owner) -> Result<OwnerInit, String> {
        self.owner(owner).map_err(|e| e.to_string())
    }
}

/// The whole training state in host memory, owners in `Inventory::owners()` order.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelState {
    /// AdamW steps done (the next step's bias correction uses `step + 1`).
    pub step: u32,
    pub owners: Vec<OwnerInit>,
}

impl ModelState {
    /// The state of `owner`, if it has one.
    pub fn owner(&self, owner: Owner) -> Option<&OwnerInit> {
        self.owners.iter().find(|o| o.owner == owner)
    }

    /// Every owner of a checkpoint (bit for bit), at `step` (the trainer state's step for a
    /// resumable checkpoint, else 0).
    pub fn from_checkpoint(c: &Checkpoint) -> Result<ModelState, CheckpointError> {
        Ok(ModelState { step: c.state().map(|s| s.step).unwrap_or(0), owners: c.owners()? })
    }

    /// SHA-256 (hex) of every owner's weights bits, in owner order: equal states have equal
    /// digests whatever the schedule kept where.
    pub fn weights_digest(&self) -> String {
        let mut h = Sha256::new();
        for o in &self.owners {
            h.update(o.owner.to_string().as_bytes());
            for w in &o.weights {
                h.update(w.to_bits().to_le_bytes());
            }
        }
        hex(&h.finalize())
    }

    /// SHA-256 (hex) of every owner's optimizer state bits, in owner order.
    pub fn optimizer_digest(&self) -> String {
        let mut h = Sha256::new();
        for o in &self.owners {
            h.update(o.owner.to_string().as_bytes());
            for x in &o.optimizer {
                h.update(x.to_bits().to_le_bytes());
            }
        }
        hex(&h.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl StateSource for ModelState {
    fn owner_state(&self, owner: Owner) -> Result<OwnerInit, String> {
        self.owner(owner).cloned().ok_or_else(|| format!("the state has no {owner}"))
    }
}

impl ParamSource for ModelState {
    fn weights(&self, owner: Owner) -> Result<Cow<'_, [bf16]>, String> {
        self.owners.as_slice().weights(owner)
    }
    fn optimizer(&self, owner: Owner) -> Result<Cow<'_, [f32]>, String> {
        self.owners.as_slice().optimizer(owner)
    }
}

/// Where a tensor's current value is between two steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// Its device buffer (which the step keeps between steps).
    Device,
    /// Its pinned host copy.
    Host,
}

/// Per owner, where its weights and optimizer state are current between two steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateHomes {
    /// (owner, weights' home, optimizer's home), in `Inventory::owners()` order.
    pub owners: Vec<(Owner, Home, Home)>,
}

impl StateHomes {
    /// Everything on the device: the all-on-GPU step.
    pub fn all_on_gpu(program: &Program) -> StateHomes {
        StateHomes { owners: program.inventory.owners().into_iter().map(|o| (o, Home::Device, Home::Device)).collect() }
    }

    /// Where `schedule` leaves each owner's state current at the end of a step (so between
    /// steps), given that at the start of a step every device buffer the step keeps and every
    /// host copy hold it (the initializer writes both; a steady schedule leaves them so or
    /// overwrites the stale one before it reads it). Walks the actions in order: an op on the
    /// GPU writes the device buffer, host work the host copy; a prefetch makes the device as
    /// current as the host, an evict the host as current as the device; an allocation or free
    /// loses the device's value. An error names an owner whose state the step loses.
    pub fn of_schedule(program: &Program, schedule: &Schedule) -> Result<StateHomes, String> {
        let inv = &program.inventory;
        let n = inv.tensors.len();
        let host_copy = {
            let mut v = vec![false; n];
            for t in schedule.pinned_tensors(program) {
                v[t.index()] = true;
            }
            v
        };
        let resident = |t: TensorId| inv.tensor(t).persistent && !schedule.host_resident.contains(&t);
        let mut alive: Vec<bool> = (0..n).map(|i| resident(TensorId(i as u32))).collect();
        let mut dev: Vec<bool> = alive.clone();
        let mut host: Vec<bool> = host_copy.clone();
        for a in &schedule.actions {
            match *a {
                Action::Run(op) | Action::Recompute(op) => {
                    let op = program.op(op);
                    for t in op.writes.iter().chain(&op.allocs) {
                        dev[t.index()] = true;
                        host[t.index()] = false;
                    }
                }
                Action::HostRun(op) => {
                    for t in &program.op(op).writes {
                        host[t.index()] = host_copy[t.index()];
                        dev[t.index()] = false;
                    }
                }
                Action::Prefetch(t) => dev[t.index()] = host[t.index()],
                Action::Evict(t) => host[t.index()] = dev[t.index()] && host_copy[t.index()],
                Action::Alloc(t, _) => {
                    alive[t.index()] = true;
                    dev[t.index()] = false;
                }
                Action::Free(t, _) => {
                    alive[t.index()] = false;
                    dev[t.index()] = false;
                }
                Action::Record(..) | Action::Wait(..) => {}
            }
        }
        let home = |t: TensorId| -> Result<Home, String> {
            let i = t.index();
            if dev[i] && alive[i] && resident(t) {
                Ok(Home::Device)
            } else if host[i] && host_copy[i] {
                Ok(Home::Host)
            } else {
                Err(format!(
                    "the schedule keeps no current copy of {} between steps (neither a device buffer nor a host copy): re-plan it",
                    inv.tensor(t).name
                ))
            }
        };
        let owners = inv
            .owners()
            .into_iter()
            .map(|o| {
                let p = inv.params(o);
                Ok((o, home(p.weights)?, home(p.optimizer)?))
            })
            .collect::<Result<_, String>>()?;
        Ok(StateHomes { owners })
    }

    /// The homes of `owner`'s (weights, optimizer state).
    pub fn of(&self, owner: Owner) -> Option<(Home, Home)> {
        self.owners.iter().find(|(o, ..)| *o == owner).map(|&(_, w, m)| (w, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{write_checkpoint, TrainerState};
    use crate::data::DataPosition;
    use models::GptConfig;

    fn tiny() -> Program {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs/gpt2-tiny.ron");
        Program::build(&GptConfig::load(&path).unwrap())
    }

    /// A state written as a checkpoint reads back bit for bit, step included, and its digests
    /// are those of the state written.
    #[test]
    fn a_state_round_trips_through_a_checkpoint() {
        let p = tiny();
        let inv = &p.inventory;
        let mut owners = crate::init::init_params(inv, p.config.layers, 7);
        // Optimizer state that is not a fresh start's: m and v non-zero, master off the weights.
        for o in &mut owners {
            for (i, x) in o.optimizer.iter_mut().enumerate() {
                *x += (i % 13) as f32 * 1e-3;
            }
        }
        let state = ModelState { step: 12, owners };
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("ck");
        let pos = DataPosition { source: "corpus".into(), seed: 0, epoch: 0, shard: 0, offset: 0, file: String::new() };
        let digest = models::digest::program_digest(&p);
        let ts = TrainerState::new(state.step, 7, &p.config.name, &digest, pos);
        write_checkpoint(&ck, &p.config, inv, &state, Some(&ts)).unwrap();
        let back = ModelState::from_checkpoint(&Checkpoint::open_resume(&ck, &p.config, inv, &digest).unwrap()).unwrap();
        assert_eq!(back.step, 12);
        assert_eq!(back.weights_digest(), state.weights_digest());
        assert_eq!(back.optimizer_digest(), state.optimizer_digest());
        assert!(back == state, "the state read back differs");

        // Weights only: the same weights, a fresh optimizer (master = weights, m = v = 0), step 0.
        let wo = dir.path().join("wo");
        write_checkpoint(&wo, &p.config, inv, &state, None).unwrap();
        let fresh = ModelState::from_checkpoint(&Checkpoint::open_weights(&wo, &p.config, inv).unwrap()).unwrap();
        assert_eq!(fresh.step, 0);
        // The vocabulary's padding rows (V..Vp) are not in a weights-only checkpoint: zero.
        for (a, b) in fresh.owners.iter().zip(&state.owners) {
            let differ = a.weights.iter().zip(&b.weights).filter(|(x, y)| x != y).count();
            let padding = ((p.config.padded_vocab - p.config.vocab) * p.config.hidden) as usize;
            assert!(differ == 0 || (differ <= padding && a.owner.to_string().starts_with("chunk")), "{}: {differ}", a.owner);
        }
        for o in &fresh.owners {
            let n = o.weights.len();
            assert!(o.optimizer[..n].iter().zip(&o.weights).all(|(m, w)| *m == w.to_f32()));
            assert!(o.optimizer[n..].iter().all(|x| *x == 0.0));
        }
    }

    #[test]
    fn all_on_gpu_homes_are_the_device() {
        let p = tiny();
        let h = StateHomes::all_on_gpu(&p);
        assert_eq!(h.owners.len(), p.inventory.owners().len());
        assert!(h.owners.iter().all(|&(_, w, m)| w == Home::Device && m == Home::Device));
    }
}
