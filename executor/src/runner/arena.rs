//! The step's tensors in one device allocation: every tensor at the offset `models::arena`
//! plans for it, so the device holds exactly the arena's bytes for tensors, whatever the pool
//! would have fragmented. The arena is taken once, before the persistent tensors, and lives
//! until every range of it is dropped.

use crate::gpu::{DeviceBuffer, Gpu};
use crate::ExecError;
use models::arena::{plan_arena, ARENA_ALIGN};
use models::{Program, Schedule, TensorId};
use std::collections::HashMap;
use std::sync::Arc;

pub struct Arena {
    base: Arc<DeviceBuffer>,
    /// Offset of each tensor on the GPU when the step starts.
    resident: Vec<Option<u64>>,
    /// Offset of the tensor each `Alloc` action takes, by action index.
    at_action: HashMap<usize, u64>,
    /// Bytes of tensors live in the arena now (what the memory samples report).
    live: u64,
}

impl Arena {
    /// Lays out `schedule` and takes its arena from the pool on the compute stream. Refuses a
    /// schedule whose layout differs from the one its prediction counted (another offplan
    /// wrote it) or that does not fit in `free` device bytes.
    pub fn take(gpu: &Gpu, program: &Program, schedule: &Schedule, free: u64) -> Result<Arena, ExecError> {
        let plan = plan_arena(program, schedule, ARENA_ALIGN)
            .map_err(|e| ExecError::Refused(format!("the schedule cannot be laid out in one arena ({e}); run it with --allocator pool")))?;
        if let Some(predicted) = schedule.prediction.arena {
            if predicted != plan.size {
                return Err(ExecError::Refused(format!(
                    "the schedule predicts an arena of {predicted}, this offplan lays it out in {}: re-plan it (offplan plan ...)",
                    plan.size
                )));
            }
        }
        if plan.size.0 > free {
            return Err(ExecError::Refused(format!(
                "its tensors need an arena of {}, but the device has only {} free: plan again with a smaller budget",
                plan.size,
                models::Bytes(free)
            )));
        }
        let base = Arc::new(gpu.alloc(&gpu.compute, plan.size.0)?);
        let mut resident = vec![None; program.inventory.tensors.len()];
        let mut at_action = HashMap::new();
        for p in &plan.placed {
            match p.alloc_action {
                Some(i) => {
                    at_action.insert(i, p.offset);
                }
                None => resident[p.tensor.index()] = Some(p.offset),
            }
        }
        Ok(Arena { base, resident, at_action, live: 0 })
    }

    pub fn bytes(&self) -> u64 {
        self.base.bytes()
    }

    pub fn live(&self) -> u64 {
        self.live
    }

    /// The range of a tensor on the GPU from the start.
    pub fn resident(&mut self, t: &models::Tensor) -> Result<DeviceBuffer, ExecError> {
        let offset = self.resident[t.id.index()].ok_or_else(|| ExecError::Refused(format!("{} has no place in the arena", t.name)))?;
        self.range(offset, t.bytes.0)
    }

    /// The range the `Alloc` at `action` takes for `t`.
    pub fn at_action(&mut self, action: usize, t: &models::Tensor) -> Result<DeviceBuffer, ExecError> {
        let offset = *self
            .at_action
            .get(&action)
            .ok_or_else(|| ExecError::Refused(format!("action {action} (allocating {}) has no place in the arena", t.name)))?;
        self.range(offset, t.bytes.0)
    }

    /// Counts `t`'s bytes as no longer live (its range is dropped with its buffer).
    pub fn freed(&mut self, t: TensorId, program: &Program) {
        self.live -= program.inventory.tensor(t).bytes.0;
    }

    fn range(&mut self, offset: u64, bytes: u64) -> Result<DeviceBuffer, ExecError> {
        self.live += bytes;
        Ok(DeviceBuffer::arena_range(&self.base, offset, bytes)?)
    }
}
