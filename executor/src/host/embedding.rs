//! CPU embedding (`OpKind::Embed` / `OpKind::EmbedBwd` on the host): the token table stays in
//! host memory, the gather writes the B x T x C rows into a (pinned) staging buffer that the
//! runtime copies to the GPU, and the backward scatter-adds dout (copied back) into the table's
//! gradient rows.
//!
//! Same semantics and summation order as encoder.cu, so the results are bitwise those of the
//! kernels (fp32 sums, one bf16 rounding per output element, round to nearest even):
//! - [`embedding_forward`]: `out[n] = bf16(wte[tok - v_begin] + wpe[n % T])` for the rows whose
//!   token lies in `[v_begin, v_begin + v_count)`; other rows untouched (tied embeddings: one
//!   call per output chunk, as one launch per chunk).
//! - [`embedding_backward_wpe`]: `dwpe[t] = bf16(sum over b of dout[b, t])` in b order for
//!   t < T, 0 for T <= t < max_seq.
//! - [`embedding_backward_wte`]: ADDS: `dwte[v] = bf16(dwte[v] + (sum over positions n with
//!   token v, increasing n, of dout[n]))`, the fp32 sum starting from 0.
//!
//! Threads: rows are split across the current rayon pool; every output row is written by one
//! task, in a fixed order, so results do not depend on the thread count.

use super::bf16::{bf16, bf16_to_f32, f32_to_bf16};
use super::{check_len, HostError};
use rayon::prelude::*;

/// Channels summed at once in the backward passes (an f32 accumulator tile on the stack).
/// (C <= 4096, every model here, sums a row in one pass.)
const TILE: usize = 4096;
/// Output rows per forward task.
const FWD_ROWS: usize = 16;
/// Positions below which the wte scatter stops splitting and runs serially.
const WTE_GRAIN: usize = 64;

fn check_tokens_range(op: &'static str, v_begin: i32, v_count: usize) -> Result<(), HostError> {
    if v_begin < 0 || v_count > i32::MAX as usize {
        return Err(HostError::Invalid { op, message: format!("token range begins at {v_begin} with {v_count} rows") });
    }
    Ok(())
}

fn check_c(op: &'static str, c: usize) -> Result<(), HostError> {
    if c == 0 {
        return Err(HostError::Invalid { op, message: "C is 0".into() });
    }
    Ok(())
}

/// Forward gather into `out` (N x C, N = tokens.len()): rows whose token lies in
/// `[v_begin, v_begin + v_count)` get `bf16(wte[tok - v_begin] + wpe[n % t])`; the others are left
/// as they are. `wte` is `v_count x C` (the whole untied table, or one tied output chunk),
/// `wpe` at least `t x C` (the `max_seq x C` view). Multithreaded by rows.
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward(
    out: &mut [bf16],
    tokens: &[i32],
    wte: &[bf16],
    v_begin: i32,
    v_count: usize,
    wpe: &[bf16],
    t: usize,
    c: usize,
) -> Result<(), HostError> {
    const OP: &str = "embedding_forward";
    check_c(OP, c)?;
    check_tokens_range(OP, v_begin, v_count)?;
    let n = tokens.len();
    check_len(OP, "out (N x C)", n * c, out.len())?;
    check_len(OP, "wte (v_count x C)", v_count * c, wte.len())?;
    if t == 0 || !n.is_multiple_of(t) || wpe.len() < t * c {
        return Err(HostError::Invalid {
            op: OP,
            message: format!("N = {n} is not a multiple of T = {t}, or wpe ({} elements) has fewer than T rows of C = {c}", wpe.len()),
        });
    }
    out.par_chunks_mut(FWD_ROWS * c).enumerate().for_each(|(i, rows)| {
        for (r, row) in rows.chunks_exact_mut(c).enumerate() {
            let pos = i * FWD_ROWS + r;
            let tok = tokens[pos] as i64 - v_begin as i64;
            if tok < 0 || tok >= v_count as i64 {
                continue;
            }
            let tok = tok as usize;
            let p = (pos % t) * c;
            kernels::sum_rows(row, &wte[tok * c..tok * c + c], &wpe[p..p + c]);
        }
    });
    Ok(())
}

/// The untied CPU embedding's whole backward, as a step runs it: the token table's gradient
/// zeroed on all threads, then [`embedding_backward_wte`] into it and
/// [`embedding_backward_wpe`] (which overwrites) into the position table's. `dout` is
/// B x T x C, `tokens` B x T.
#[allow(clippy::too_many_arguments)]
pub fn embedding_backward(
    dwte: &mut [bf16],
    dwpe: &mut [bf16],
    dout: &[bf16],
    tokens: &[i32],
    v_count: usize,
    b: usize,
    t: usize,
    c: usize,
    max_seq: usize,
    scratch: &mut WteScratch,
) -> Result<(), HostError> {
    zero_table(dwte);
    embedding_backward_rows(dwte, dwpe, dout, tokens, v_count, b, t, c, max_seq, scratch)
}

/// The untied token table's gradient zeroed before the backward adds the step's rows: a pass
/// over V x C on all threads, which calibrate times apart from the rows (its rate is the host's
/// write rate, theirs a gather's).
pub fn zero_table(dwte: &mut [bf16]) {
    dwte.par_chunks_mut(1 << 16).for_each(|rows| rows.fill(bf16::ZERO));
}

/// [`embedding_backward`] after the zeroing: the token table's rows of the step added, the
/// position table overwritten.
#[allow(clippy::too_many_arguments)]
pub fn embedding_backward_rows(
    dwte: &mut [bf16],
    dwpe: &mut [bf16],
    dout: &[bf16],
    tokens: &[i32],
    v_count: usize,
    b: usize,
    t: usize,
    c: usize,
    max_seq: usize,
    scratch: &mut WteScratch,
) -> Result<(), HostError> {
    embedding_backward_wte(dwte, dout, tokens, 0, v_count, c, scratch)?;
    embedding_backward_wpe(dwpe, dout, b, t, c, max_seq)
}

/// Position-table gradient: `dwpe` (`max_seq x C`) gets, for t < T, the sum over the batch of
/// `dout[b, t]` (`dout` is B x T x C; fp32 in b order, one bf16 rounding), and 0 for the rows
/// `T..max_seq`. Overwrites (as the kernel does). Multithreaded by positions.
pub fn embedding_backward_wpe(dwpe: &mut [bf16], dout: &[bf16], b: usize, t: usize, c: usize, max_seq: usize) -> Result<(), HostError> {
    const OP: &str = "embedding_backward_wpe";
    check_c(OP, c)?;
    check_len(OP, "dout (B x T x C)", b * t * c, dout.len())?;
    check_len(OP, "dwpe (max_seq x C)", max_seq * c, dwpe.len())?;
    if t > max_seq {
        return Err(HostError::Invalid { op: OP, message: format!("T = {t} exceeds max_seq = {max_seq}") });
    }
    dwpe.par_chunks_mut(c).enumerate().for_each_init(
        || [0.0f32; TILE],
        |acc, (pos, row)| {
            if pos >= t {
                row.fill(bf16::ZERO);
                return;
            }
            for (k, out) in row.chunks_mut(TILE).enumerate() {
                let c0 = k * TILE;
                let acc = &mut acc[..out.len()];
                acc.fill(0.0);
                for bi in 0..b {
                    let base = (bi * t + pos) * c + c0;
                    kernels::accumulate(acc, &dout[base..base + out.len()]);
                }
                kernels::store(out, acc);
            }
        },
    );
    Ok(())
}

/// Reusable scratch of [`embedding_backward_wte`]: the positions sorted by (token, position).
/// Keep one per runtime so the backward allocates nothing once it has seen the largest N.
#[derive(Debug, Default, Clone)]
pub struct WteScratch {
    keys: Vec<u64>,
}

impl WteScratch {
    pub fn with_capacity(positions: usize) -> WteScratch {
        WteScratch { keys: Vec::with_capacity(positions) }
    }
}

#[inline]
fn key_row(key: u64) -> usize {
    (key >> 32) as usize
}
#[inline]
fn key_pos(key: u64) -> usize {
    (key & 0xFFFF_FFFF) as usize
}

/// Token-table gradient: ADDS into `dwte` (`v_count x C`, rows of tokens
/// `[v_begin, v_begin + v_count)`): for each token v in range that occurs in `tokens`,
/// `dwte[v - v_begin] = bf16(dwte[v - v_begin] + sum)` where `sum` is the fp32 sum of `dout[n]`
/// (N x C) over the positions n with that token, in increasing n. Rows of tokens that do not
/// occur are untouched (untied: zero the table gradient first, as the GPU path does).
/// Multithreaded by token rows (each row summed by one task: deterministic).
pub fn embedding_backward_wte(
    dwte: &mut [bf16],
    dout: &[bf16],
    tokens: &[i32],
    v_begin: i32,
    v_count: usize,
    c: usize,
    scratch: &mut WteScratch,
) -> Result<(), HostError> {
    const OP: &str = "embedding_backward_wte";
    check_c(OP, c)?;
    check_tokens_range(OP, v_begin, v_count)?;
    let n = tokens.len();
    if n > u32::MAX as usize {
        return Err(HostError::Invalid { op: OP, message: format!("{n} positions: at most 2^32") });
    }
    check_len(OP, "dout (N x C)", n * c, dout.len())?;
    check_len(OP, "dwte (v_count x C)", v_count * c, dwte.len())?;
    let keys = &mut scratch.keys;
    keys.clear();
    for (pos, &tok) in tokens.iter().enumerate() {
        let row = tok as i64 - v_begin as i64;
        if row >= 0 && row < v_count as i64 {
            keys.push((row as u64) << 32 | pos as u64);
        }
    }
    // Keys are distinct, so the order is the same whatever the sort: by row, then position.
    if keys.len() > 1 << 14 {
        keys.par_sort_unstable();
    } else {
        keys.sort_unstable();
    }
    scatter(keys, dwte, 0, dout, c);
    Ok(())
}

/// Adds the groups of `keys` (sorted; rows in `row0..row0 + rows.len()/c`) into `rows`, splitting
/// the work in two at a row boundary while it is large (rayon::join on disjoint row ranges).
fn scatter(keys: &[u64], rows: &mut [bf16], row0: usize, dout: &[bf16], c: usize) {
    if keys.len() > WTE_GRAIN {
        let mid_row = key_row(keys[keys.len() / 2]);
        let mut split = keys.partition_point(|k| key_row(*k) < mid_row);
        if split == 0 {
            split = keys.partition_point(|k| key_row(*k) <= mid_row);
        }
        if split > 0 && split < keys.len() {
            let boundary = key_row(keys[split]);
            let (lo, hi) = rows.split_at_mut((boundary - row0) * c);
            let (klo, khi) = keys.split_at(split);
            rayon::join(|| scatter(klo, lo, row0, dout, c), || scatter(khi, hi, boundary, dout, c));
            return;
        }
    }
    let mut acc = [0.0f32; TILE];
    let mut i = 0;
    while i < keys.len() {
        let row = key_row(keys[i]);
        let mut j = i + 1;
        while j < keys.len() && key_row(keys[j]) == row {
            j += 1;
        }
        let group = &keys[i..j];
        let dst = &mut rows[(row - row0) * c..(row - row0 + 1) * c];
        for (k, out) in dst.chunks_mut(TILE).enumerate() {
            let c0 = k * TILE;
            let acc = &mut acc[..out.len()];
            acc.fill(0.0);
            for key in group {
                let base = key_pos(*key) * c + c0;
                kernels::accumulate(acc, &dout[base..base + out.len()]);
            }
            kernels::add_store(out, acc);
        }
        i = j;
    }
}

/// The row loops: element-wise f32 adds and bf16 rounding only.
mod kernels {
    use super::{bf16, bf16_to_f32, f32_to_bf16};

    // Portable loops only: `unsafe` (target features, prefetch intrinsics) lives in the gpu
    // module alone.
    macro_rules! dispatched {
        ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
            $(#[$doc])*
            #[inline]
            pub(super) fn $name($($arg: $ty),*) $body
        };
    }

    dispatched! {
        /// `out = bf16(a + b)` (f32 sum).
        fn sum_rows(out: &mut [bf16], a: &[bf16], b: &[bf16]) {
            for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
                *o = f32_to_bf16(bf16_to_f32(*x) + bf16_to_f32(*y));
            }
        }
    }

    dispatched! {
        /// `acc += x`.
        fn accumulate(acc: &mut [f32], x: &[bf16]) {
            for (s, v) in acc.iter_mut().zip(x) {
                *s += bf16_to_f32(*v);
            }
        }
    }

    dispatched! {
        /// `out = bf16(acc)`.
        fn store(out: &mut [bf16], acc: &[f32]) {
            for (o, s) in out.iter_mut().zip(acc) {
                *o = f32_to_bf16(*s);
            }
        }
    }

    dispatched! {
        /// `out = bf16(out + acc)`.
        fn add_store(out: &mut [bf16], acc: &[f32]) {
            for (o, s) in out.iter_mut().zip(acc) {
                *o = f32_to_bf16(bf16_to_f32(*o) + *s);
            }
        }
    }
}
