//! Host AdamW over one owner's flat parameters (`OpKind::Adam(owner)` on the CPU).
//!
//! Layout (models/src/inventory.rs): `weights` and `grads` are the owner's bf16 tensors of `n`
//! elements with the parameter views inside; `optimizer` is one fp32 tensor `[master | m | v]`,
//! `n` elements each. Each view gets its own weight decay: the configured value for 2-D views
//! (matrices), 0 for 1-D views (biases, layer-norm weights), as the runtime launches
//! `adamw_update` per view.
//!
//! Arithmetic: that of adamw.cu, operation for operation, in f32:
//! ```text
//! bc1 = 1 - b1^step; bc2 = 1 - b2^step; step_size = lr / bc1; bc2_sqrt = sqrt(bc2)
//! decay = 1 - lr*wd
//! g = f32(grad) * scale                       (the clip scale; 1 unclipped: g exactly)
//! p = master*decay; m = b1*m + (1-b1)*g; v = b2*v + ((1-b2)*g)*g
//! p = p - (step_size*m) / (sqrt(v)/bc2_sqrt + eps); master = p; weights = bf16_rn(p)
//! ```
//! Bitwise the GPU's: the scalars (the powers, `step_size`, `bc2_sqrt`, `decay`) are computed
//! once here ([`AdamwScalars`]) and handed to the kernel, which does each operation with an
//! explicitly rounded intrinsic (no fused multiply-add); Rust never fuses, and its division and
//! square root are IEEE like the kernel's. The host result is the same for any thread count.
//! `scale` is the clip scale of a step clipped by the global norm (`adamw_update_clipped`, the
//! `clip_scale` tensor; [`super::norm::clip_scale`]), 1.0 otherwise (`adamw_update`): with 1.0
//! the update is bitwise the unclipped one.

use super::bf16::{bf16, bf16_to_f32, f32_to_bf16};
use super::{check_len, HostError};
pub use crate::kernels::AdamwScalars;
use models::inventory::View;
use rayon::prelude::*;

/// AdamW hyper-parameters (PyTorch AdamW, no amsgrad), for the GPU kernel and the host alike.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Applied to 2-D views only (see [`view_weight_decay`]).
    pub weight_decay: f32,
}

impl Default for AdamW {
    /// lr 3e-4, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 (GPT-3's betas; the kernel
    /// self-test and the PyTorch reference use the same).
    fn default() -> Self {
        AdamW { lr: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }
}

impl AdamW {
    /// The scalars of the update at `step` (from 1) with `weight_decay`, for the kernel and the
    /// host alike.
    pub fn scalars(&self, weight_decay: f32, step: u32) -> AdamwScalars {
        AdamwScalars::new(self.lr, self.beta1, self.beta2, self.eps, weight_decay, step)
    }
}

/// Weight decay of one view: the configured value for matrices (2-D views: qkv_w, attproj_w,
/// fc_w, fcproj_w, wte, wpe, output chunks), 0 for 1-D views (biases, layer-norm weights).
pub fn view_weight_decay(view: &View, weight_decay: f32) -> f32 {
    if view.shape.len() == 2 {
        weight_decay
    } else {
        0.0
    }
}

/// Elements per rayon task: 28 bytes each read + written, ~0.9 MiB of traffic per task.
pub const CHUNK: usize = 32 * 1024;

/// The inner loop over one range with one set of scalars (serial), equal-length slices: the
/// kernel's IEEE fp32 operations in the kernel's order (Rust neither contracts a * b + c into a
/// fused multiply-add nor approximates division or square root), so bitwise its update.
#[inline(always)]
fn update(w: &mut [bf16], master: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[bf16], s: AdamwScalars, scale: f32) {
    let n = w.len();
    let (master, m, v, g) = (&mut master[..n], &mut m[..n], &mut v[..n], &g[..n]);
    for i in 0..n {
        let gi = bf16_to_f32(g[i]) * scale;
        let p = master[i] * s.decay;
        let mi = s.beta1 * m[i] + s.one_minus_beta1 * gi;
        let vi = s.beta2 * v[i] + (s.one_minus_beta2 * gi) * gi;
        let denom = vi.sqrt() / s.bc2_sqrt + s.eps;
        let p = p - (s.step_size * mi) / denom;
        m[i] = mi;
        v[i] = vi;
        master[i] = p;
        w[i] = f32_to_bf16(p);
    }
}

/// AdamW over one flat range with one weight decay, on the calling thread: `adamw_update` of
/// adamw.cu (`adamw_update_clipped` with the gradient times `scale`, the clip scale; 1.0 for an
/// unclipped step). All slices have the same length. `step >= 1`.
#[allow(clippy::too_many_arguments)]
pub fn adamw_range(
    weights: &mut [bf16],
    master: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grads: &[bf16],
    h: &AdamW,
    weight_decay: f32,
    step: u32,
    scale: f32,
) -> Result<(), HostError> {
    const OP: &str = "adamw_range";
    let n = weights.len();
    check_len(OP, "master", n, master.len())?;
    check_len(OP, "m", n, m.len())?;
    check_len(OP, "v", n, v.len())?;
    check_len(OP, "grads", n, grads.len())?;
    check_step(OP, step)?;
    update(weights, master, m, v, grads, h.scalars(weight_decay, step), scale);
    Ok(())
}

/// AdamW over one owner: `weights`/`grads` of `n` elements, `optimizer` = `[master | m | v]` of
/// `3n`, `views` the owner's parameter views (in order, tiling `0..n` exactly, as the inventory
/// emits them), each with [`view_weight_decay`]; `scale` the clip scale every gradient element
/// is multiplied by (1.0 for an unclipped step: bitwise the unclipped update). Runs on all
/// threads of the current rayon pool, in tasks of [`CHUNK`] elements; allocates nothing.
pub fn adamw_owner(
    weights: &mut [bf16],
    grads: &[bf16],
    optimizer: &mut [f32],
    views: &[View],
    h: &AdamW,
    step: u32,
    scale: f32,
) -> Result<(), HostError> {
    const OP: &str = "adamw_owner";
    let n = weights.len();
    check_len(OP, "grads", n, grads.len())?;
    check_len(OP, "optimizer [master | m | v]", 3 * n, optimizer.len())?;
    check_step(OP, step)?;
    let mut end = 0u64;
    for view in views {
        if view.offset != end {
            return Err(HostError::Invalid {
                op: OP,
                message: format!(
                    "view {} starts at element {}, expected {end}: views must tile the tensor in order",
                    view.name, view.offset
                ),
            });
        }
        end += view.elems();
    }
    if end != n as u64 {
        return Err(HostError::Invalid { op: OP, message: format!("views cover {end} elements, the tensor has {n}") });
    }

    // Views get the configured decay or none (view_weight_decay): two sets of scalars.
    let (decayed, undecayed) = (h.scalars(h.weight_decay, step), h.scalars(0.0, step));
    let (master, rest) = optimizer.split_at_mut(n);
    let (m, v) = rest.split_at_mut(n);
    weights
        .par_chunks_mut(CHUNK)
        .zip(master.par_chunks_mut(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(grads.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(i, ((((w, ma), mm), vv), g))| {
            let start = i * CHUNK;
            let stop = start + w.len();
            for view in views {
                let a = (view.offset as usize).max(start);
                let b = ((view.offset + view.elems()) as usize).min(stop);
                if a < b {
                    let r = a - start..b - start;
                    let s = if view_weight_decay(view, h.weight_decay) == 0.0 { undecayed } else { decayed };
                    update(&mut w[r.clone()], &mut ma[r.clone()], &mut mm[r.clone()], &mut vv[r.clone()], &g[r], s, scale);
                }
            }
        });
    Ok(())
}

fn check_step(op: &'static str, step: u32) -> Result<(), HostError> {
    if step == 0 {
        Err(HostError::Invalid { op, message: "step counts from 1 (bias correction divides by 1 - beta^step)".into() })
    } else {
        Ok(())
    }
}
