//! A running step's state, read from and written to where the schedule keeps it: device
//! buffers through host staging (pageable host memory; no device memory is taken), host copies
//! by plain copies. Call only between steps (every lane idle), as the runners do.

use super::{Home, ModelState, StateHomes, StateSource};
use crate::checkpoint::ParamSource;
use crate::gpu::lanes::Lanes;
use crate::gpu::{Gpu, GpuError};
use crate::step::Step;
use half::bf16;
use models::inventory::Owner;
use models::TensorId;
use std::borrow::Cow;

/// Reads the state of a running step: each owner's weights and optimizer state from its
/// [`Home`], one owner at a time. A [`ParamSource`], so the checkpoint writer gathers through
/// it without the whole model in host memory; [`LiveState::gather`] takes it all.
pub struct LiveState<'a, 'p, 's> {
    gpu: &'a Gpu,
    step: &'a Step<'p>,
    lanes: Option<&'a Lanes<'s>>,
    homes: &'a StateHomes,
}

impl<'a, 'p, 's> LiveState<'a, 'p, 's> {
    /// The state of `step` (and of the host copies `lanes` holds, for a schedule run) as
    /// `homes` places it (`StateHomes::all_on_gpu` or `StateHomes::of_schedule`).
    pub fn new(gpu: &'a Gpu, step: &'a Step<'p>, lanes: Option<&'a Lanes<'s>>, homes: &'a StateHomes) -> Self {
        LiveState { gpu, step, lanes, homes }
    }

    /// The bytes of tensor `t` from `home`.
    fn bytes(&self, t: TensorId, home: Home) -> Result<Vec<u8>, GpuError> {
        match home {
            Home::Device => self.step.download(self.gpu, t),
            Home::Host => {
                let lanes = self.lanes.ok_or_else(|| GpuError::Invalid("a host-resident tensor without the schedule's lanes".into()))?;
                Ok(lanes.copy(t)?.to_vec())
            }
        }
    }

    fn homes(&self, owner: Owner) -> Result<(Home, Home), GpuError> {
        self.homes.of(owner).ok_or_else(|| GpuError::Invalid(format!("no home for {owner}")))
    }

    /// The bf16 weights of `owner`.
    pub fn owner_weights(&self, owner: Owner) -> Result<Vec<bf16>, GpuError> {
        let t = self.step.program.inventory.params(owner).weights;
        Ok(to_bf16(&self.bytes(t, self.homes(owner)?.0)?))
    }

    /// The fp32 `[master | m | v]` of `owner`.
    pub fn owner_optimizer(&self, owner: Owner) -> Result<Vec<f32>, GpuError> {
        let t = self.step.program.inventory.params(owner).optimizer;
        Ok(to_f32(&self.bytes(t, self.homes(owner)?.1)?))
    }

    /// The bf16 gradient of `owner` if the step still holds it: its device buffer when
    /// allocated, else its host copy when it has one (its last value there); None otherwise.
    pub fn gradient(&self, owner: Owner) -> Result<Option<Vec<bf16>>, GpuError> {
        let g = self.step.program.inventory.params(owner).grads;
        if self.step.buffer(g).is_ok() {
            return Ok(Some(to_bf16(&self.step.download(self.gpu, g)?)));
        }
        match self.lanes {
            Some(l) if l.has_copy(g) => Ok(Some(to_bf16(l.copy(g)?))),
            _ => Ok(None),
        }
    }

    /// The whole state in host memory, at AdamW step `step`.
    pub fn gather(&self, step: u32) -> Result<ModelState, GpuError> {
        let owners = self
            .step
            .program
            .inventory
            .owners()
            .into_iter()
            .map(|o| Ok(crate::init::OwnerInit { owner: o, weights: self.owner_weights(o)?, optimizer: self.owner_optimizer(o)? }))
            .collect::<Result<_, GpuError>>()?;
        Ok(ModelState { step, owners })
    }
}

impl ParamSource for LiveState<'_, '_, '_> {
    fn weights(&self, owner: Owner) -> Result<Cow<'_, [bf16]>, String> {
        self.owner_weights(owner).map(Cow::Owned).map_err(|e| e.to_string())
    }
    fn optimizer(&self, owner: Owner) -> Result<Cow<'_, [f32]>, String> {
        self.owner_optimizer(owner).map(Cow::Owned).map_err(|e| e.to_string())
    }
}

/// Writes `src`'s state of every owner into `step`'s device buffers (those it holds at the
/// start of a step) and into the host copies `lanes` holds, as the initializer does: before
/// step 1, in place of it. One owner at a time, through host staging.
pub fn load_state(gpu: &Gpu, step: &Step, mut lanes: Option<&mut Lanes>, src: &dyn StateSource) -> Result<(), GpuError> {
    let inv = &step.program.inventory;
    for owner in inv.owners() {
        let p = inv.params(owner);
        let s = src.owner_state(owner).map_err(|e| GpuError::Invalid(format!("the state of {owner}: {e}")))?;
        let n = p.params as usize;
        if s.owner != owner || s.weights.len() != n || s.optimizer.len() != 3 * n {
            return Err(GpuError::Invalid(format!(
                "the state of {owner} has {} weights and {} optimizer values; it needs {n} and {}",
                s.weights.len(),
                s.optimizer.len(),
                3 * n
            )));
        }
        let weights: Vec<u8> = s.weights.iter().flat_map(|w| w.to_bits().to_le_bytes()).collect();
        let optimizer: Vec<u8> = s.optimizer.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect();
        for (t, bytes) in [(p.weights, &weights), (p.optimizer, &optimizer)] {
            if let Ok(buf) = step.buffer(t) {
                gpu.upload(&gpu.compute, buf, bytes)?;
            }
            if let Some(l) = lanes.as_deref_mut() {
                if l.has_copy(t) {
                    let copy = l.copy_mut(t)?;
                    if copy.len() != bytes.len() {
                        return Err(GpuError::Invalid(format!("the host copy of {owner} holds {} bytes, not {}", copy.len(), bytes.len())));
                    }
                    copy.copy_from_slice(bytes);
                }
            }
        }
    }
    gpu.synchronize()
}

fn to_bf16(bytes: &[u8]) -> Vec<bf16> {
    bytes.chunks_exact(2).map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect()
}

fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}
