//! Reading a checkpoint into offplan's layout: Hugging Face GPT-2 weights (ours, or any that
//! transformers wrote: with or without the `transformer.` prefix, fp32, bf16 or fp16, the
//! attention-mask buffers ignored) and, to resume, the optimizer state. Files are
//! memory-mapped and checked against the config when opened; [`Checkpoint::owner`] then builds
//! one owner's buffers at a time.

use super::hf::{gpt2_tensors, transpose, HfTensor, Layout, LM_HEAD, WTE};
use super::write::{optimizer_shape, padding_rows, piece_rows, Part};
use super::{io_error, resolve, CheckpointError, TrainerState, CONFIG_FILE, OPTIMIZER_FILE, WEIGHTS_FILE};
use crate::host::bf16::f32_to_bf16;
use crate::init::OwnerInit;
use crate::mmap::MappedFile;
use half::bf16;
use models::inventory::{Inventory, Owner};
use models::GptConfig;
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// A mapped safetensors file and its header.
struct Mapped {
    path: PathBuf,
    map: MappedFile,
    /// Byte offset of the data (after the header).
    start: usize,
    tensors: HashMap<String, TensorInfo>,
}

impl Mapped {
    fn open(path: &Path) -> Result<Mapped, CheckpointError> {
        let map = MappedFile::open(path).map_err(|e| io_error(path, "read", e))?;
        let (n, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| CheckpointError::Format { path: path.to_path_buf(), message: format!("not a readable safetensors file: {e}") })?;
        let tensors = meta.tensors().into_iter().map(|(k, v)| (k, v.clone())).collect();
        Ok(Mapped { path: path.to_path_buf(), map, start: 8 + n, tensors })
    }

    fn bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.map[self.start + info.data_offsets.0..self.start + info.data_offsets.1]
    }

    fn get(&self, name: &str, config: &str) -> Result<&TensorInfo, CheckpointError> {
        self.tensors.get(name).ok_or_else(|| CheckpointError::Missing { path: self.path.clone(), name: name.into(), config: config.into() })
    }
}

fn elem_size(d: Dtype) -> usize {
    if d == Dtype::F32 {
        4
    } else {
        2
    }
}

/// Decodes little-endian bf16, fp16 or fp32 into bf16 (fp32 and fp16 rounded to nearest even).
fn decode_bf16(dtype: Dtype, bytes: &[u8], out: &mut [bf16]) {
    debug_assert_eq!(bytes.len(), out.len() * elem_size(dtype));
    match dtype {
        Dtype::BF16 => out.iter_mut().zip(bytes.chunks_exact(2)).for_each(|(o, c)| *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]]))),
        Dtype::F16 => out
            .iter_mut()
            .zip(bytes.chunks_exact(2))
            .for_each(|(o, c)| *o = f32_to_bf16(half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())),
        _ => out.iter_mut().zip(bytes.chunks_exact(4)).for_each(|(o, c)| *o = f32_to_bf16(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
    }
}

fn decode_f32(bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(bytes.len(), out.len() * 4);
    out.iter_mut().zip(bytes.chunks_exact(4)).for_each(|(o, c)| *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
}

/// A checkpoint opened for one config: weights for `--init-from`, or the whole training state
/// for `--resume`.
pub struct Checkpoint {
    dir: PathBuf,
    config: String,
    table: Vec<HfTensor>,
    params: HashMap<Owner, u64>,
    weights: Mapped,
    /// The prefix of names in model.safetensors: "transformer." or "" (the original OpenAI
    /// conversion on the Hugging Face hub has none).
    prefix: &'static str,
    optimizer: Option<Mapped>,
    state: Option<TrainerState>,
}

impl Checkpoint {
    /// Opens the Hugging Face GPT-2 weights in `dir` (or in the newest checkpoint of a
    /// `--save` folder) for `cfg`: `config.json` (if present) and every tensor's name, shape
    /// and dtype are checked; the optimizer starts fresh ([`Checkpoint::owner`]).
    pub fn open_weights(dir: &Path, cfg: &GptConfig, inv: &Inventory) -> Result<Checkpoint, CheckpointError> {
        let dir = resolve(dir)?;
        check_config_json(&dir, cfg)?;
        let weights = Mapped::open(&dir.join(WEIGHTS_FILE))?;
        let prefix = if !weights.tensors.contains_key(WTE) && weights.tensors.contains_key("wte.weight") { "" } else { "transformer." };
        let table = gpt2_tensors(cfg, inv)?;
        let params = inv.owners().into_iter().map(|o| (o, inv.params(o).params)).collect();
        let c = Checkpoint { dir, config: cfg.name.clone(), table, params, weights, prefix, optimizer: None, state: None };
        c.check_weights(cfg)?;
        Ok(c)
    }

    /// Opens a checkpoint saved with its training state to continue it: refused when it was
    /// saved for another config or program (`program_digest`, `models::digest::program_digest`).
    pub fn open_resume(dir: &Path, cfg: &GptConfig, inv: &Inventory, program_digest: &str) -> Result<Checkpoint, CheckpointError> {
        let dir = resolve(dir)?;
        let state = TrainerState::read(&dir)?;
        state.check(&dir, &cfg.name, program_digest)?;
        let mut c = Checkpoint::open_weights(&dir, cfg, inv)?;
        let optimizer = Mapped::open(&dir.join(OPTIMIZER_FILE))?;
        for t in &c.table {
            let shape: Vec<usize> = optimizer_shape(t).iter().map(|&d| d as usize).collect();
            for part in Part::OPTIMIZER {
                let name = format!("{}{}", t.name, part.suffix());
                let info = optimizer.get(&name, &c.config)?;
                expect(&optimizer.path, &name, info, &shape, &[Dtype::F32], &c.config)?;
            }
            let pad = padding_rows(t);
            if pad > 0 {
                let name = format!("{}{}", t.name, Part::Padding.suffix());
                let info = optimizer.get(&name, &c.config)?;
                let file_rows = c.weights.tensors[&c.file_name(t)].shape[0] as u64;
                expect(
                    &optimizer.path,
                    &name,
                    info,
                    &[(t.shape[0] + pad - file_rows) as usize, t.cols() as usize],
                    &[Dtype::BF16],
                    &c.config,
                )?;
            }
        }
        c.optimizer = Some(optimizer);
        c.state = Some(state);
        Ok(c)
    }

    /// The folder read (a `--save` folder resolves to its newest checkpoint).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The training state, for a checkpoint opened with [`Checkpoint::open_resume`].
    pub fn state(&self) -> Option<&TrainerState> {
        self.state.as_ref()
    }

    fn file_name(&self, t: &HfTensor) -> String {
        match t.name.strip_prefix("transformer.") {
            Some(rest) if self.prefix.is_empty() => rest.to_string(),
            _ => t.name.clone(),
        }
    }

    fn check_weights(&self, cfg: &GptConfig) -> Result<(), CheckpointError> {
        let path = &self.weights.path;
        let layer_re = |name: &str| -> Option<u32> {
            let rest = name.strip_prefix(self.prefix)?.strip_prefix("h.")?;
            rest.split('.').next()?.parse().ok()
        };
        let layers = self.weights.tensors.keys().filter_map(|n| layer_re(n)).max().map_or(0, |l| l + 1);
        if layers != cfg.layers {
            return Err(CheckpointError::OtherConfig {
                path: path.clone(),
                message: format!("it has {layers} transformer layers, {} has {}", cfg.name, cfg.layers),
            });
        }
        let mut known: BTreeSet<String> = BTreeSet::new();
        for t in &self.table {
            let name = self.file_name(t);
            let info = self.weights.get(&name, &cfg.name).map_err(|e| match (&e, t.name.as_str()) {
                (CheckpointError::Missing { .. }, LM_HEAD) => CheckpointError::OtherConfig {
                    path: path.clone(),
                    message: format!("it has no lm_head.weight: its output layer is tied to its embedding; {} unties them", cfg.name),
                },
                _ => e,
            })?;
            let ok = [Dtype::F32, Dtype::BF16, Dtype::F16];
            match t.layout {
                Layout::Rows { padded } => {
                    let rows = info.shape.first().copied().unwrap_or(0) as u64;
                    let fits = info.shape.len() == 2 && info.shape[1] as u64 == t.cols() && (t.shape[0]..=padded).contains(&rows);
                    if !fits {
                        return Err(CheckpointError::Shape {
                            path: path.clone(),
                            name,
                            found: info.shape.clone(),
                            expected: format!("[{}, {}] (up to {padded} rows)", t.shape[0], t.cols()),
                            config: cfg.name.clone(),
                        });
                    }
                    expect_dtype(path, &name, info, &ok)?;
                }
                _ => expect(path, &name, info, &t.shape.iter().map(|&d| d as usize).collect::<Vec<_>>(), &ok, &cfg.name)?,
            }
            known.insert(name);
        }
        if cfg.tied_embeddings {
            if let Some(head) = self.weights.tensors.get(LM_HEAD) {
                let wte = self
                    .table
                    .iter()
                    .find(|t| t.name == WTE)
                    .map(|t| &self.weights.tensors[&self.file_name(t)])
                    .expect("tied configs have wte");
                if head.shape != wte.shape || self.weights.bytes(head) != self.weights.bytes(wte) {
                    return Err(CheckpointError::OtherConfig {
                        path: path.clone(),
                        message: format!("its lm_head.weight differs from its token embedding (untied); {} ties them", cfg.name),
                    });
                }
                known.insert(LM_HEAD.into());
            }
        }
        // The causal-mask buffers older transformers saved are not weights.
        let buffer = |n: &str| layer_re(n).is_some() && (n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias"));
        let extra: Vec<&String> =
            self.weights.tensors.keys().filter(|n| !known.contains(*n) && !buffer(n)).collect::<BTreeSet<_>>().into_iter().collect();
        if !extra.is_empty() {
            let mut names: Vec<String> = extra.iter().take(5).map(|s| s.to_string()).collect();
            if extra.len() > 5 {
                names.push(format!("... ({} in all)", extra.len()));
            }
            return Err(CheckpointError::Unexpected { path: path.clone(), names: names.join(", "), config: cfg.name.clone() });
        }
        Ok(())
    }

    /// Fills `dst` (the view of piece `k` of `t`) with its bf16 weights.
    fn fill_weights(&self, t: &HfTensor, k: usize, dst: &mut [bf16]) -> Result<(), CheckpointError> {
        let info = self.weights.get(&self.file_name(t), &self.config)?;
        let bytes = self.weights.bytes(info);
        let v = &t.pieces[k].1;
        match t.layout {
            Layout::Same => decode_bf16(info.dtype, bytes, dst),
            Layout::Transposed => {
                let mut hf = vec![bf16::ZERO; dst.len()];
                decode_bf16(info.dtype, bytes, &mut hf);
                dst.copy_from_slice(&transpose(&hf, v.shape[1] as usize, v.shape[0] as usize));
            }
            Layout::Rows { .. } => {
                let (c, rows) = (t.cols() as usize, piece_rows(t, k));
                let file_rows = info.shape[0] as u64;
                let size = c * elem_size(info.dtype);
                // rows in the file, then padded rows: from the saved padding, or zero
                let hi = rows.end.min(file_rows);
                if rows.start < hi {
                    let n = (hi - rows.start) as usize;
                    decode_bf16(info.dtype, &bytes[rows.start as usize * size..hi as usize * size], &mut dst[..n * c]);
                }
                let lo = rows.start.max(file_rows);
                if let (Some(opt), true) = (&self.optimizer, lo < rows.end) {
                    let name = format!("{}{}", t.name, Part::Padding.suffix());
                    let pad = opt.get(&name, &self.config)?;
                    let pb = opt.bytes(pad);
                    let (a, b) = ((lo - file_rows) as usize, (rows.end - file_rows) as usize);
                    let at = (lo - rows.start) as usize * c;
                    decode_bf16(pad.dtype, &pb[a * c * 2..b * c * 2], &mut dst[at..at + (b - a) * c]);
                }
            }
        }
        Ok(())
    }

    /// Fills `dst` (the view of piece `k` of `t`) with one part of its optimizer state.
    fn fill_optimizer(&self, opt: &Mapped, t: &HfTensor, k: usize, part: Part, dst: &mut [f32]) -> Result<(), CheckpointError> {
        let info = opt.get(&format!("{}{}", t.name, part.suffix()), &self.config)?;
        let bytes = opt.bytes(info);
        let v = &t.pieces[k].1;
        match t.layout {
            Layout::Same => decode_f32(bytes, dst),
            Layout::Transposed => {
                let mut hf = vec![0f32; dst.len()];
                decode_f32(bytes, &mut hf);
                dst.copy_from_slice(&transpose(&hf, v.shape[1] as usize, v.shape[0] as usize));
            }
            Layout::Rows { .. } => {
                let (c, rows) = (t.cols() as usize, piece_rows(t, k));
                decode_f32(&bytes[rows.start as usize * c * 4..rows.end as usize * c * 4], dst);
            }
        }
        Ok(())
    }

    /// The weights and optimizer state of `owner` in offplan's layout. From
    /// [`Checkpoint::open_weights`]: the weights (converted to bf16, the padded vocabulary rows
    /// zero), master = the weights as fp32 exactly, m = v = 0, as a fresh start
    /// (`init::init_params`) has. From [`Checkpoint::open_resume`]: everything as saved, bit for bit.
    pub fn owner(&self, owner: Owner) -> Result<OwnerInit, CheckpointError> {
        let n = *self.params.get(&owner).ok_or_else(|| CheckpointError::Unmapped(format!("{owner} is not in the inventory")))? as usize;
        let mut weights = vec![bf16::ZERO; n];
        let mut optimizer = vec![0f32; 3 * n];
        for t in &self.table {
            for (k, (o, v)) in t.pieces.iter().enumerate() {
                if *o != owner {
                    continue;
                }
                let range = v.offset as usize..(v.offset + v.elems()) as usize;
                self.fill_weights(t, k, &mut weights[range.clone()])?;
                if let Some(opt) = &self.optimizer {
                    for part in Part::OPTIMIZER {
                        let base = part.index() * n;
                        self.fill_optimizer(opt, t, k, part, &mut optimizer[base + range.start..base + range.end])?;
                    }
                }
            }
        }
        if self.optimizer.is_none() {
            for (m, w) in optimizer[..n].iter_mut().zip(&weights) {
                *m = w.to_f32();
            }
        }
        Ok(OwnerInit { owner, weights, optimizer })
    }

    /// Every owner, in inventory order (built in parallel).
    pub fn owners(&self) -> Result<Vec<OwnerInit>, CheckpointError> {
        use rayon::prelude::*;
        let mut owners: Vec<Owner> = self.params.keys().copied().collect();
        owners.sort();
        owners.into_par_iter().map(|o| self.owner(o)).collect()
    }
}

fn expect_dtype(path: &Path, name: &str, info: &TensorInfo, ok: &[Dtype]) -> Result<(), CheckpointError> {
    if !ok.contains(&info.dtype) {
        let want: Vec<String> = ok.iter().map(|d| format!("{d:?}")).collect();
        return Err(CheckpointError::DType {
            path: path.to_path_buf(),
            name: name.into(),
            found: format!("{:?}", info.dtype),
            expected: want.join(" or "),
        });
    }
    Ok(())
}

fn expect(path: &Path, name: &str, info: &TensorInfo, shape: &[usize], ok: &[Dtype], config: &str) -> Result<(), CheckpointError> {
    if info.shape != shape {
        return Err(CheckpointError::Shape {
            path: path.to_path_buf(),
            name: name.into(),
            found: info.shape.clone(),
            expected: format!("{shape:?}"),
            config: config.into(),
        });
    }
    expect_dtype(path, name, info, ok)
}

/// Checks the GPT2Config fields of `dir/config.json`, when there is one, against `cfg`.
fn check_config_json(dir: &Path, cfg: &GptConfig) -> Result<(), CheckpointError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(&path, "read", e)),
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| CheckpointError::Format { path: path.clone(), message: format!("not JSON: {e}") })?;
    let mut off = Vec::new();
    if let Some(t) = v.get("model_type").and_then(|t| t.as_str()) {
        if t != "gpt2" {
            off.push(format!("model_type {t:?} (offplan reads \"gpt2\")"));
        }
    }
    let ints =
        [("n_layer", cfg.layers), ("n_embd", cfg.hidden), ("n_head", cfg.heads), ("n_positions", cfg.max_seq), ("vocab_size", cfg.vocab)];
    for (field, want) in ints {
        if let Some(have) = v.get(field).and_then(|x| x.as_u64()) {
            let fits =
                if field == "vocab_size" { (cfg.vocab as u64..=cfg.padded_vocab as u64).contains(&have) } else { have == want as u64 };
            if !fits {
                off.push(format!("{field} {have} ({} has {want})", cfg.name));
            }
        }
    }
    if let Some(inner) = v.get("n_inner").and_then(|x| x.as_u64()) {
        if inner != 4 * cfg.hidden as u64 {
            off.push(format!("n_inner {inner} ({} has 4 x {})", cfg.name, cfg.hidden));
        }
    }
    // transformers' default is tied
    let tied = v.get("tie_word_embeddings").and_then(|x| x.as_bool()).unwrap_or(true);
    if tied != cfg.tied_embeddings {
        off.push(format!("tie_word_embeddings {tied} ({} has {})", cfg.name, cfg.tied_embeddings));
    }
    if let Some(a) = v.get("activation_function").and_then(|x| x.as_str()) {
        if !["gelu_new", "gelu_pytorch_tanh", "gelu_fast"].contains(&a) {
            off.push(format!("activation_function {a:?} (offplan computes GELU with the tanh approximation, \"gelu_new\")"));
        }
    }
    if let Some(eps) = v.get("layer_norm_epsilon").and_then(|x| x.as_f64()) {
        if (eps - 1e-5).abs() > 1e-12 {
            off.push(format!("layer_norm_epsilon {eps} (offplan uses 1e-5)"));
        }
    }
    if off.is_empty() {
        return Ok(());
    }
    Err(CheckpointError::OtherConfig { path, message: off.join(", ") })
}
