//! Host-side compute that a schedule may place on the CPU (`models::cost::runs_on_host`):
//! AdamW over one owner's parameters (`OpKind::Adam`), the CPU embedding gather (`OpKind::Embed`)
//! and scatter-add (`OpKind::EmbedBwd`), the partial norms of a gradient (`OpKind::GradNorm`),
//! the global norm and clip scale (`OpKind::ClipScale`), and bf16 conversion.
//!
//! Every function does the GPU kernel's fp32 arithmetic in the kernel's order (adamw.cu,
//! encoder.cu, grad_norm.cu; see `executor/kernels/README.md`), so a step with these ops on the host gives the
//! GPU's numbers (tolerances in each module). All of it runs on the current rayon pool (call
//! inside `ThreadPool::install` to choose the threads); results do not depend on the number of
//! threads (bitwise). No GPU, no `unsafe`: this module builds with and without `cuda`.

pub mod adamw;
pub mod bf16;
pub mod embedding;
pub mod norm;

pub use adamw::{adamw_owner, adamw_range, view_weight_decay, AdamW};
pub use embedding::{
    embedding_backward, embedding_backward_rows, embedding_backward_wpe, embedding_backward_wte, embedding_forward, zero_table, WteScratch,
};
pub use norm::{clip_scale, global_norm, grad_checksum, grad_norm_partials};

/// The elements of a parameter tensor's view `name` (None where it has no such view).
pub fn view_range(views: &[models::inventory::View], name: &str) -> Option<std::ops::Range<usize>> {
    let v = views.iter().find(|v| v.name == name)?;
    Some(v.offset as usize..(v.offset + v.elems()) as usize)
}

/// Two disjoint ranges of `g`, mutable at once (None where they overlap or lie outside it).
pub fn two_ranges<T>(g: &mut [T], a: std::ops::Range<usize>, b: std::ops::Range<usize>) -> Option<(&mut [T], &mut [T])> {
    if a.end > g.len() || b.end > g.len() || a.start > a.end || b.start > b.end {
        return None;
    }
    if a.end <= b.start {
        let (low, high) = g.split_at_mut(b.start);
        Some((&mut low[a], &mut high[..b.end - b.start]))
    } else if b.end <= a.start {
        let (low, high) = g.split_at_mut(a.start);
        Some((&mut high[..a.end - a.start], &mut low[b]))
    } else {
        None
    }
}

/// Bad arguments to a host op (lengths that do not match the shapes, views that do not tile
/// the owner's tensor, a step of 0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("{op}: {what} has {got} elements, expected {expected}")]
    Length { op: &'static str, what: &'static str, expected: usize, got: usize },
    #[error("{op}: {message}")]
    Invalid { op: &'static str, message: String },
}

pub(crate) fn check_len(op: &'static str, what: &'static str, expected: usize, got: usize) -> Result<(), HostError> {
    if expected == got {
        Ok(())
    } else {
        Err(HostError::Length { op, what, expected, got })
    }
}

#[cfg(test)]
mod tests;
