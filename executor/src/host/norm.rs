//! Clipping by the global norm on the host: one owner's partial sums of squares
//! (`OpKind::GradNorm(owner)` for a gradient made on the host), and the global norm and clip
//! scale from every owner's partials (`OpKind::ClipScale`, always on the host).
//!
//! [`grad_norm_partials`] replays grad_norm.cu's `grad_norm_partials` operation for operation,
//! so partials made here and on the GPU are bitwise the same and the norm does not depend on
//! where a schedule leaves each gradient:
//! ```text
//! NB = 256 blocks, 256 threads; per = ceil(n / 256)
//! block b: the range [b*per, min(n, (b+1)*per))            (empty: the partial is 0.0)
//! thread t: acc = 0.0f32; for i = start + t, start + t + 256, ... < end: x = f32(g[i]); acc = acc + x*x
//! s[t] = acc; for stride = 128, 64, ..., 1: s[t] = s[t] + s[t + stride] (t < stride)
//! partials[b] = s[0]
//! ```
//! Each `*` and `+` is one IEEE f32 operation rounded to nearest (the kernel writes `__fmul_rn`
//! and `__fadd_rn` so that NVRTC cannot fuse them; Rust never does), in the same order: thread
//! `t`'s sum is over the block's elements `t, t + 256, ...` in increasing order (here: row by
//! row of 256, accumulator `t` taking column `t`), then the same tree. Blocks run in parallel on
//! the current rayon pool, each block serial: the result does not depend on the thread count.
//! Bitwise for every input without NaN (a NaN gives NaN on both sides, perhaps another payload).
//!
//! The second half of the partials tensor holds, per block, the exact checksum of its range: the
//! wrapping uint32 sum of `(bits(g[i]) + 1) * (u32(i) * 2654435761 + 0x9E3779B9)` (stored as the
//! bits of an f32); [`grad_checksum`] combines every owner's into one u64 per step, which an
//! equivalence check compares (the norm's rounding can hide a changed low bit; this cannot,
//! but for a 2^-32 chance).
//!
//! [`global_norm`] sums every partial in f64, owner by owner in the order given (the
//! inventory's owner order) and each owner's partials in index order, and takes the square root;
//! [`clip_scale`] is PyTorch's `clip_grad_norm_` coefficient, `min(1, max_norm / (norm + 1e-6))`.

use super::bf16::{bf16, bf16_to_f32};
use super::{check_len, HostError};
use models::inventory::{GRAD_NORM_PARTIALS, GRAD_NORM_WORDS};
use rayon::prelude::*;

/// Threads per block of grad_norm.cu (part of the summation order).
const THREADS: usize = 256;

/// The [`GRAD_NORM_PARTIALS`] partial sums of squares of `grads` and their checksums into
/// `partials`, bitwise those of grad_norm.cu's `grad_norm_partials` (see the module docs for
/// the order). `partials` must hold exactly [`GRAD_NORM_WORDS`] elements; `grads` may have any
/// length, 0 included.
pub fn grad_norm_partials(grads: &[bf16], partials: &mut [f32]) -> Result<(), HostError> {
    const OP: &str = "grad_norm_partials";
    let blocks = GRAD_NORM_PARTIALS as usize;
    check_len(OP, "partials", GRAD_NORM_WORDS as usize, partials.len())?;
    let n = grads.len();
    let per = n.div_ceil(blocks);
    let (sums, checks) = partials.split_at_mut(blocks);
    sums.par_iter_mut().zip(checks.par_iter_mut()).enumerate().for_each(|(b, (out, check))| {
        let start = (b * per).min(n);
        let end = ((b + 1) * per).min(n);
        let (sum, checksum) = block_partial(&grads[start..end], start as u64);
        *out = sum;
        *check = f32::from_bits(checksum);
    });
    Ok(())
}

/// The checksum's weight of element `i`.
fn weight(i: u32) -> u32 {
    i.wrapping_mul(2654435761).wrapping_add(0x9E37_79B9)
}

/// One block of the kernel, in one pass over its range (`first` the global index of its first
/// element): the partial sum of squares, as 256 serial sums (thread `t` takes elements
/// `t, t + 256, ...` in that order) then the shared-memory tree; and the exact checksum.
///
/// The rows are fixed-size arrays so that the 256 sums vectorise (each sum's order is the
/// kernel's either way). The checksum is a wrapping sum, so any order gives its bits; it is
/// taken without a multiply per element: per column `t` of `m` rows, `s1` sums the terms
/// `x = bits + 1` and `s2` the running `s1`, so that the column's `sum x * row` is
/// `m * s1 - s2`, and its weighted sum follows from `weight` being affine in the index.
fn block_partial(g: &[bf16], first: u64) -> (f32, u32) {
    let mut s = [0.0f32; THREADS];
    let (mut s1, mut s2) = ([0u32; THREADS], [0u32; THREADS]);
    let rows = g.chunks_exact(THREADS);
    let tail = rows.remainder();
    let m = (g.len() / THREADS) as u32;
    for row in rows {
        let row: &[bf16; THREADS] = row.try_into().expect("a whole row");
        for t in 0..THREADS {
            let bits = row[t].to_bits();
            let x = bf16_to_f32(row[t]);
            s[t] += x * x;
            s1[t] = s1[t].wrapping_add(bits as u32 + 1);
            s2[t] = s2[t].wrapping_add(s1[t]);
        }
    }
    let first = first as u32;
    let mut checksum = 0u32;
    for t in 0..THREADS {
        // sum over rows r of x_r * weight(first + t + 256 r)
        //   = weight(first + t) * s1 + 2654435761 * 256 * (m * s1 - s2)
        let by_row = m.wrapping_mul(s1[t]).wrapping_sub(s2[t]);
        checksum = checksum
            .wrapping_add(weight(first.wrapping_add(t as u32)).wrapping_mul(s1[t]))
            .wrapping_add(2654435761u32.wrapping_mul(THREADS as u32).wrapping_mul(by_row));
    }
    let tail_first = first.wrapping_add(m.wrapping_mul(THREADS as u32));
    for (t, (acc, x)) in s.iter_mut().zip(tail).enumerate() {
        let v = bf16_to_f32(*x);
        *acc += v * v;
        checksum = checksum.wrapping_add((x.to_bits() as u32 + 1).wrapping_mul(weight(tail_first.wrapping_add(t as u32))));
    }
    let mut stride = THREADS / 2;
    while stride > 0 {
        let (low, high) = s.split_at_mut(stride);
        for (a, b) in low.iter_mut().zip(&high[..stride]) {
            *a += *b;
        }
        stride /= 2;
    }
    (s[0], checksum)
}

/// One step's gradient checksum from every owner's partials tensor (in the inventory's owner
/// order): each owner's block checksums, weighted by the owner's position, summed wrapping.
pub fn grad_checksum<'a>(partials: impl IntoIterator<Item = &'a [f32]>) -> u64 {
    let blocks = GRAD_NORM_PARTIALS as usize;
    let mut total = 0u64;
    for (o, owner) in partials.into_iter().enumerate() {
        for (b, c) in owner.iter().skip(blocks).take(blocks).enumerate() {
            let word = c.to_bits() as u64;
            total = total.wrapping_add(word.wrapping_mul(((o as u64) << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1));
        }
    }
    total
}

/// The global gradient norm: the square root of the sum, in f64, of every partial: the owners'
/// partials in the order given (the inventory's owners), each owner's in index order. A fixed
/// order, so the same partials give the same bits on every run.
pub fn global_norm<'a>(partials: impl IntoIterator<Item = &'a [f32]>) -> f64 {
    let mut total = 0.0f64;
    for owner in partials {
        for p in owner.iter().take(GRAD_NORM_PARTIALS as usize) {
            total += *p as f64;
        }
    }
    total.sqrt()
}

/// The clip scale the updates multiply their gradient by (PyTorch `clip_grad_norm_`):
/// `min(1, max_norm / (norm + 1e-6))`, the ratio in f64, then rounded to f32 (1.0 exactly when
/// the norm is within the limit, so the update is bitwise the unclipped one). `max_norm > 0`.
///
/// A non-finite `norm` (an inf or NaN in some gradient) gives `f32::NAN`: the caller detects it
/// with `is_nan()` and decides (skip the update, stop the run); applied as is, it turns every
/// updated parameter into NaN (loudly, as PyTorch's own clipping does with a NaN norm) rather
/// than silently zeroing or keeping the gradient.
pub fn clip_scale(norm: f64, max_norm: f64) -> f32 {
    if !norm.is_finite() {
        return f32::NAN;
    }
    let ratio = max_norm / (norm + 1e-6);
    if ratio < 1.0 {
        ratio as f32
    } else {
        1.0
    }
}
