//! Writing safetensors files tensor by tensor: each Hugging Face tensor is gathered from its
//! owners' buffers only when the safetensors writer asks for its bytes, and at most one owner's
//! weights and one owner's optimizer state are held at a time, so the host never holds a second
//! copy of the model.

use super::hf::{transpose, HfTensor, Layout};
use super::{io_error, CheckpointError, ParamSource};
use half::bf16;
use models::inventory::Owner;
use safetensors::{Dtype, View};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

/// What of a tensor an entry of a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// The bf16 weights (model.safetensors).
    Weights,
    /// fp32 master weights, Adam m, Adam v (optimizer.safetensors; vocabulary tables keep
    /// their padded rows).
    Master,
    ExpAvg,
    ExpAvgSq,
    /// The bf16 weights of the padded vocabulary rows, which model.safetensors leaves out.
    Padding,
}

impl Part {
    pub(crate) const OPTIMIZER: [Part; 3] = [Part::Master, Part::ExpAvg, Part::ExpAvgSq];

    /// Name in optimizer.safetensors: the HF name and this suffix.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Part::Weights => "",
            Part::Master => ".master",
            Part::ExpAvg => ".exp_avg",
            Part::ExpAvgSq => ".exp_avg_sq",
            Part::Padding => ".padding",
        }
    }

    /// Index of the part in `[master | m | v]`.
    pub(crate) fn index(self) -> usize {
        match self {
            Part::ExpAvg => 1,
            Part::ExpAvgSq => 2,
            _ => 0,
        }
    }
}

/// Rows of the stacked vocabulary table that piece `k` holds (all elements of other layouts,
/// counted as rows of one).
pub(crate) fn piece_rows(t: &HfTensor, k: usize) -> Range<u64> {
    let rows = |i: usize| t.pieces[i].1.shape[0];
    let start: u64 = (0..k).map(rows).sum();
    start..start + rows(k)
}

/// Shape of a tensor's optimizer state: the HF shape, with vocabulary tables at their padded rows.
pub(crate) fn optimizer_shape(t: &HfTensor) -> Vec<u64> {
    match t.layout {
        Layout::Rows { padded } => vec![padded, t.cols()],
        _ => t.shape.clone(),
    }
}

/// Rows of a vocabulary table beyond those in model.safetensors.
pub(crate) fn padding_rows(t: &HfTensor) -> u64 {
    match t.layout {
        Layout::Rows { padded } => padded - t.shape[0],
        _ => 0,
    }
}

/// Appends what piece `k` of `t` holds (rows `rows` of a vocabulary table) from `seg`, the
/// piece's owner's flat buffer (weights, or one part of its optimizer state).
fn append<T: Copy>(t: &HfTensor, k: usize, seg: &[T], rows: &Range<u64>, out: &mut Vec<T>) {
    let v = &t.pieces[k].1;
    let view = &seg[v.offset as usize..(v.offset + v.elems()) as usize];
    match t.layout {
        Layout::Same => out.extend_from_slice(view),
        Layout::Transposed => out.extend(transpose(view, v.shape[0] as usize, v.shape[1] as usize)),
        Layout::Rows { .. } => {
            let (c, have) = (t.cols(), piece_rows(t, k));
            let (lo, hi) = (rows.start.max(have.start), rows.end.min(have.end));
            if lo < hi {
                out.extend_from_slice(&view[((lo - have.start) * c) as usize..((hi - have.start) * c) as usize]);
            }
        }
    }
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start.max(b.start) < a.end.min(b.end)
}

/// One tensor of a file being written: which, what part, and its size.
pub(crate) struct Entry {
    pub tensor: usize,
    pub part: Part,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub rows: Range<u64>,
}

impl Entry {
    fn bytes(&self) -> usize {
        let size = if self.dtype == Dtype::F32 { 4 } else { 2 };
        self.shape.iter().product::<usize>() * size
    }
}

/// Fetches owners' buffers from the source, one owner of each kind at a time.
pub(crate) struct Gatherer<'a> {
    table: &'a [HfTensor],
    src: &'a dyn ParamSource,
    params: &'a HashMap<Owner, u64>,
    weights: RefCell<Option<(Owner, Cow<'a, [bf16]>)>>,
    optimizer: RefCell<Option<(Owner, Cow<'a, [f32]>)>>,
    error: RefCell<Option<CheckpointError>>,
}

impl<'a> Gatherer<'a> {
    pub(crate) fn new(table: &'a [HfTensor], src: &'a dyn ParamSource, params: &'a HashMap<Owner, u64>) -> Gatherer<'a> {
        Gatherer { table, src, params, weights: RefCell::new(None), optimizer: RefCell::new(None), error: RefCell::new(None) }
    }

    fn expect_len(&self, owner: Owner, what: &str, got: usize, per_param: u64) -> Result<(), CheckpointError> {
        let want = self.params[&owner] * per_param;
        if got as u64 != want {
            return Err(CheckpointError::Source {
                owner: owner.to_string(),
                message: format!("{what}: {got} elements, the inventory has {want}"),
            });
        }
        Ok(())
    }

    fn with_weights(&self, owner: Owner, f: impl FnOnce(&[bf16])) -> Result<(), CheckpointError> {
        let mut cache = self.weights.borrow_mut();
        match &*cache {
            Some((o, w)) if *o == owner => f(w),
            _ => {
                *cache = None; // the previous owner's copy goes before the next is fetched
                let w = self.src.weights(owner).map_err(|message| CheckpointError::Source { owner: owner.to_string(), message })?;
                self.expect_len(owner, "weights", w.len(), 1)?;
                f(&w);
                *cache = Some((owner, w));
            }
        }
        Ok(())
    }

    fn with_optimizer(&self, owner: Owner, f: impl FnOnce(&[f32])) -> Result<(), CheckpointError> {
        let mut cache = self.optimizer.borrow_mut();
        match &*cache {
            Some((o, s)) if *o == owner => f(s),
            _ => {
                *cache = None;
                let s = self.src.optimizer(owner).map_err(|message| CheckpointError::Source { owner: owner.to_string(), message })?;
                self.expect_len(owner, "optimizer state", s.len(), 3)?;
                f(&s);
                *cache = Some((owner, s));
            }
        }
        Ok(())
    }

    fn gather(&self, e: &Entry) -> Result<Vec<u8>, CheckpointError> {
        let t = &self.table[e.tensor];
        let mut bytes = Vec::with_capacity(e.bytes());
        let pieces = (0..t.pieces.len()).filter(|&k| !matches!(t.layout, Layout::Rows { .. }) || overlaps(&piece_rows(t, k), &e.rows));
        match e.part {
            Part::Weights | Part::Padding => {
                let mut vals = Vec::new();
                for k in pieces {
                    self.with_weights(t.pieces[k].0, |w| append(t, k, w, &e.rows, &mut vals))?;
                }
                bytes.extend(vals.iter().flat_map(|x| x.to_bits().to_le_bytes()));
            }
            part => {
                let mut vals = Vec::new();
                for k in pieces {
                    self.with_optimizer(t.pieces[k].0, |s| {
                        let n = s.len() / 3;
                        append(t, k, &s[part.index() * n..(part.index() + 1) * n], &e.rows, &mut vals)
                    })?;
                }
                bytes.extend(vals.iter().flat_map(|x| x.to_le_bytes()));
            }
        }
        if bytes.len() != e.bytes() {
            return Err(CheckpointError::Unmapped(format!(
                "{}{}: gathered {} bytes, expected {}",
                t.name,
                e.part.suffix(),
                bytes.len(),
                e.bytes()
            )));
        }
        Ok(bytes)
    }

    /// The bytes of `e`; after an error (kept for [`Gatherer::finish`]), zeros of the right size.
    fn bytes(&self, e: &Entry) -> Vec<u8> {
        if self.error.borrow().is_none() {
            match self.gather(e) {
                Ok(b) => return b,
                Err(err) => *self.error.borrow_mut() = Some(err),
            }
        }
        vec![0; e.bytes()]
    }
}

struct Lazy<'g, 'a> {
    g: &'g Gatherer<'a>,
    e: Entry,
}

impl View for Lazy<'_, '_> {
    fn dtype(&self) -> Dtype {
        self.e.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.e.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.g.bytes(&self.e))
    }
    fn data_len(&self) -> usize {
        self.e.bytes()
    }
}

/// Writes `entries` (named `names`) to the safetensors file `path`, with the metadata
/// transformers expects (`format: pt`), and fsyncs it.
pub(crate) fn write_file(path: &Path, g: &Gatherer, entries: Vec<(String, Entry)>) -> Result<(), CheckpointError> {
    let views = entries.into_iter().map(|(name, e)| (name, Lazy { g, e }));
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let result = safetensors::serialize_to_file(views, Some(meta), path);
    if let Some(e) = g.error.borrow_mut().take() {
        return Err(e);
    }
    result.map_err(|e| match e {
        safetensors::SafeTensorError::IoError(source) => io_error(path, "write", source),
        other => CheckpointError::Format { path: path.to_path_buf(), message: other.to_string() },
    })?;
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| io_error(path, "sync", e))
}

/// The entries of model.safetensors: every tensor's bf16 weights at its HF shape.
pub(crate) fn weight_entries(table: &[HfTensor], name: impl Fn(&HfTensor) -> String) -> Vec<(String, Entry)> {
    table
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let rows = match t.layout {
                Layout::Rows { .. } => 0..t.shape[0],
                _ => 0..1,
            };
            (
                name(t),
                Entry { tensor: i, part: Part::Weights, dtype: Dtype::BF16, shape: t.shape.iter().map(|&d| d as usize).collect(), rows },
            )
        })
        .collect()
}

/// The entries of optimizer.safetensors: master, m and v of every tensor (fp32, padded rows
/// included) and the bf16 weights of the padded rows.
pub(crate) fn optimizer_entries(table: &[HfTensor]) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    for (i, t) in table.iter().enumerate() {
        let shape: Vec<usize> = optimizer_shape(t).iter().map(|&d| d as usize).collect();
        let all = 0..shape[0] as u64;
        for part in Part::OPTIMIZER {
            out.push((
                format!("{}{}", t.name, part.suffix()),
                Entry { tensor: i, part, dtype: Dtype::F32, shape: shape.clone(), rows: all.clone() },
            ));
        }
        let pad = padding_rows(t);
        if pad > 0 {
            let e = Entry {
                tensor: i,
                part: Part::Padding,
                dtype: Dtype::BF16,
                shape: vec![pad as usize, t.cols() as usize],
                rows: t.shape[0]..t.shape[0] + pad,
            };
            out.push((format!("{}{}", t.name, Part::Padding.suffix()), e));
        }
    }
    out
}
