//! Checkpoints: the weights as a Hugging Face GPT-2 checkpoint that
//! `transformers.GPT2LMHeadModel.from_pretrained(DIR)` loads, and optionally the whole
//! training state to continue a run from (`--resume`).
//!
//! ```text
//! DIR/config.json            GPT2Config (model_type gpt2, n_embd, n_layer, ..., tie_word_embeddings)
//! DIR/model.safetensors      the bf16 weights, HF names and shapes (hf.rs), V vocabulary rows
//! DIR/optimizer.safetensors  training state only: per HF tensor `NAME.master`, `NAME.exp_avg`,
//!                            `NAME.exp_avg_sq` (fp32, HF orientation, vocabulary tables at all
//!                            Vp rows) and `NAME.padding` (bf16 weights of rows V..Vp)
//! DIR/trainer_state.json     training state only: step, seed, data position, config name,
//!                            program digest (a resume under another one is refused)
//! ```
//! dtype: the weights are offplan's bf16 weights as they are (no conversion, so a resume is bit
//! for bit); config.json says `torch_dtype: bfloat16`; transformers loads them as they are
//! with `torch_dtype="auto"` (or bf16), or widens them exactly to fp32 by default. The optimizer
//! state is fp32 as offplan keeps it. Being keyed by HF name rather than by offplan's owners,
//! a checkpoint does not depend on how the output layer is chunked.
//!
//! Crash safety: a checkpoint is written whole into a temporary sibling folder
//! (`.NAME.tmp-PID`), every file and the folder fsynced, then renamed to its name; a crash or
//! an error (a full disk) while saving leaves any previous checkpoint whole and removes the
//! temporary folder (or leaves it, after a crash, to be cleared by the next
//! [`CheckpointSaver::new`]). [`CheckpointSaver`] keeps `--save DIR` as `DIR/step_NNNNNNNN/`
//! folders and a `DIR/latest` file naming the newest, replaced atomically after the folder is
//! in place.
//!
//! The API takes and returns plain host buffers, per owner of the inventory (`{owner}.weights`,
//! bf16; `{owner}.optimizer`, fp32 `[master | m | v]`): the writer asks a [`ParamSource`] for one
//! owner at a time, so the executor gathers them from wherever a schedule keeps them; the reader
//! gives [`OwnerInit`]s, what `init::init_params` gives for a fresh start. No CUDA here.

pub mod hf;
mod read;
mod write;

pub use hf::{gpt2_tensors, hf_config, HfTensor, Layout};
pub use read::Checkpoint;

use crate::data::writer::sync_dir;
use crate::data::DataPosition;
use crate::init::OwnerInit;
use half::bf16;
use models::inventory::{Inventory, Owner};
use models::GptConfig;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
/// In a `--save` folder: the name of the newest checkpoint folder.
pub const LATEST_FILE: &str = "latest";
pub const STATE_FORMAT: &str = "offplan trainer state";
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot {action} {}: {error}", path.display())]
    Io { path: PathBuf, action: &'static str, error: std::io::Error },
    #[error(
        "the disk is full writing {}: free some space (or save elsewhere); the previous checkpoint is whole and nothing of this one was kept",
        path.display()
    )]
    DiskFull { path: PathBuf, error: std::io::Error },
    #[error("{}: not a checkpoint ({message})", path.display())]
    NotACheckpoint { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("{}: the checkpoint is for another model: {message}; start from a checkpoint of this shape, or use the config it was made for", path.display())]
    OtherConfig { path: PathBuf, message: String },
    #[error("{}: no tensor `{name}`, which {config} needs: not a GPT-2 checkpoint of this config, or an incomplete one", path.display())]
    Missing { path: PathBuf, name: String, config: String },
    #[error("{}: `{name}` has shape {found:?}, {config} needs {expected}: the checkpoint is for another model shape", path.display())]
    Shape { path: PathBuf, name: String, found: Vec<usize>, expected: String, config: String },
    #[error("{}: `{name}` is {found}; offplan reads {expected}", path.display())]
    DType { path: PathBuf, name: String, found: String, expected: String },
    #[error("{}: tensors a GPT-2 of {config} does not have: {names}", path.display())]
    Unexpected { path: PathBuf, names: String, config: String },
    #[error(
        "{}: a weights-only checkpoint (no {STATE_FILE}) cannot be resumed: start from its weights with --init-from instead",
        path.display()
    )]
    NotResumable { path: PathBuf },
    #[error(
        "{}: saved by a run of {saved}, this run is {now}: resume with the config it was saved with, or start from its weights with --init-from",
        path.display()
    )]
    OtherConfigName { path: PathBuf, saved: String, now: String },
    #[error(
        "{}: saved by a run of program {saved}, this run's program is {now} (another micro-batch, sequence length, output chunking or clipping?): resume with the shape and clipping it was saved with, or start from its weights with --init-from",
        path.display()
    )]
    OtherProgram { path: PathBuf, saved: String, now: String },
    #[error("gathering the weights of {owner}: {message}")]
    Source { owner: String, message: String },
    #[error("the checkpoint layout does not cover the inventory: {0}")]
    Unmapped(String),
}

/// An io error while reading or writing `path`; a full disk is [`CheckpointError::DiskFull`].
pub(crate) fn io_error(path: &Path, action: &'static str, error: std::io::Error) -> CheckpointError {
    if error.kind() == std::io::ErrorKind::StorageFull {
        CheckpointError::DiskFull { path: path.to_path_buf(), error }
    } else {
        CheckpointError::Io { path: path.to_path_buf(), action, error }
    }
}

/// Where the checkpoint writer gets each owner's host copy (see the module doc for the layout).
/// Called for one owner at a time, each owner once per file in the usual case (HF names sort by
/// layer), so an implementation may copy from the device on each call.
pub trait ParamSource {
    /// The bf16 weights of `owner`: the inventory's `{owner}.weights`, `params` elements.
    fn weights(&self, owner: Owner) -> Result<Cow<'_, [bf16]>, String>;
    /// The fp32 `[master | m | v]` of `owner`: its `{owner}.optimizer`, 3 x `params` elements.
    /// Only asked for when the training state is saved.
    fn optimizer(&self, owner: Owner) -> Result<Cow<'_, [f32]>, String>;
}

/// Host buffers as `init::init_params` (and [`Checkpoint::owners`]) give them.
impl ParamSource for [OwnerInit] {
    fn weights(&self, owner: Owner) -> Result<Cow<'_, [bf16]>, String> {
        let p = self.iter().find(|p| p.owner == owner).ok_or_else(|| format!("no buffers for {owner}"))?;
        Ok(Cow::Borrowed(&p.weights))
    }
    fn optimizer(&self, owner: Owner) -> Result<Cow<'_, [f32]>, String> {
        let p = self.iter().find(|p| p.owner == owner).ok_or_else(|| format!("no buffers for {owner}"))?;
        Ok(Cow::Borrowed(&p.optimizer))
    }
}

impl ParamSource for Vec<OwnerInit> {
    fn weights(&self, owner: Owner) -> Result<Cow<'_, [bf16]>, String> {
        self.as_slice().weights(owner)
    }
    fn optimizer(&self, owner: Owner) -> Result<Cow<'_, [f32]>, String> {
        self.as_slice().optimizer(owner)
    }
}

/// What a run needs, beyond the weights and optimizer state, to continue exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: String,
    pub version: u32,
    /// Optimizer steps done (AdamW's bias correction goes on from step + 1).
    pub step: u32,
    /// The run's seed (the initial weights; the data order's seed is in `data`).
    pub seed: u64,
    pub config_name: String,
    /// `models::digest::program_digest` of the program trained: a resume under another is refused.
    pub program_digest: String,
    /// The schedule's digest, for people: resuming under another schedule (another budget) is allowed.
    #[serde(default)]
    pub schedule_digest: Option<String>,
    /// Where the training data stream is.
    pub data: DataPosition,
    /// Whatever else the trainer keeps (AdamW's hyper-parameters, the losses so far ...).
    #[serde(default)]
    pub extra: serde_json::Value,
}

impl TrainerState {
    pub fn new(step: u32, seed: u64, config_name: &str, program_digest: &str, data: DataPosition) -> TrainerState {
        TrainerState {
            format: STATE_FORMAT.into(),
            version: STATE_VERSION,
            step,
            seed,
            config_name: config_name.into(),
            program_digest: program_digest.into(),
            schedule_digest: None,
            data,
            extra: serde_json::Value::Null,
        }
    }

    /// Reads `dir/trainer_state.json`.
    pub fn read(dir: &Path) -> Result<TrainerState, CheckpointError> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CheckpointError::NotResumable { path: dir.to_path_buf() }),
            Err(e) => return Err(io_error(&path, "read", e)),
        };
        let s: TrainerState = serde_json::from_str(&text)
            .map_err(|e| CheckpointError::Format { path: path.clone(), message: format!("not a trainer state: {e}") })?;
        if s.format != STATE_FORMAT || s.version != STATE_VERSION {
            return Err(CheckpointError::Format {
                path,
                message: format!("{:?} version {}; this offplan reads {STATE_FORMAT:?} version {STATE_VERSION}", s.format, s.version),
            });
        }
        Ok(s)
    }

    /// Refuses a resume under another config or program.
    pub fn check(&self, dir: &Path, config_name: &str, program_digest: &str) -> Result<(), CheckpointError> {
        if self.config_name != config_name {
            return Err(CheckpointError::OtherConfigName {
                path: dir.to_path_buf(),
                saved: self.config_name.clone(),
                now: config_name.into(),
            });
        }
        if self.program_digest != program_digest {
            return Err(CheckpointError::OtherProgram {
                path: dir.to_path_buf(),
                saved: self.program_digest.clone(),
                now: program_digest.into(),
            });
        }
        Ok(())
    }
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub dir: PathBuf,
    /// Bytes of all its files.
    pub bytes: u64,
    pub files: Vec<String>,
}

/// Writes a checkpoint of `cfg` into `dir` (see the module doc): the weights and config.json,
/// and with `state` the optimizer state and trainer_state.json too. All or nothing: on any
/// error `dir` is as it was. An existing `dir` is replaced only if it is a checkpoint.
pub fn write_checkpoint(
    dir: &Path,
    cfg: &GptConfig,
    inv: &Inventory,
    src: &dyn ParamSource,
    state: Option<&TrainerState>,
) -> Result<CheckpointInfo, CheckpointError> {
    let table = gpt2_tensors(cfg, inv)?;
    let params: HashMap<Owner, u64> = inv.owners().into_iter().map(|o| (o, inv.params(o).params)).collect();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| CheckpointError::NotACheckpoint { path: dir.to_path_buf(), message: "the path names no folder".into() })?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| io_error(&parent, "create", e))?;
    if dir.exists() && !(dir.is_dir() && (dir.join(WEIGHTS_FILE).exists() || is_empty_dir(dir))) {
        return Err(CheckpointError::NotACheckpoint {
            path: dir.to_path_buf(),
            message: "it exists and holds no model.safetensors: refusing to replace it; save elsewhere".into(),
        });
    }
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| io_error(&tmp, "create", e))?;
    let written = (|| {
        let config = serde_json::to_vec_pretty(&hf_config(cfg)).expect("a JSON value serialises");
        let path = tmp.join(CONFIG_FILE);
        models::io::write_atomic(&path, &config).map_err(|e| io_error(&path, "write", e))?;
        let g = write::Gatherer::new(&table, src, &params);
        write::write_file(&tmp.join(WEIGHTS_FILE), &g, write::weight_entries(&table, |t| t.name.clone()))?;
        let mut files = vec![CONFIG_FILE.to_string(), WEIGHTS_FILE.to_string()];
        if let Some(state) = state {
            let g = write::Gatherer::new(&table, src, &params);
            write::write_file(&tmp.join(OPTIMIZER_FILE), &g, write::optimizer_entries(&table))?;
            let text = serde_json::to_vec_pretty(state).expect("the trainer state serialises");
            let path = tmp.join(STATE_FILE);
            models::io::write_atomic(&path, &text).map_err(|e| io_error(&path, "write", e))?;
            files.extend([OPTIMIZER_FILE.to_string(), STATE_FILE.to_string()]);
        }
        sync_dir(&tmp).map_err(|e| io_error(&tmp, "sync", e))?;
        let mut bytes = 0;
        for f in &files {
            bytes += std::fs::metadata(tmp.join(f)).map_err(|e| io_error(&tmp.join(f), "read", e))?.len();
        }
        Ok((files, bytes))
    })();
    let (files, bytes) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    // Into place: a new name is one rename; an old checkpoint of the same name is moved aside
    // first and removed after.
    let old = parent.join(format!(".{name}.old-{pid}"));
    let moved_aside = dir.exists();
    if moved_aside {
        let _ = std::fs::remove_dir_all(&old);
        if let Err(e) = std::fs::rename(dir, &old) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(io_error(dir, "replace", e));
        }
    }
    if let Err(e) = std::fs::rename(&tmp, dir) {
        if moved_aside {
            let _ = std::fs::rename(&old, dir);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(io_error(dir, "rename into place", e));
    }
    sync_dir(&parent).map_err(|e| io_error(&parent, "sync", e))?;
    if moved_aside {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(CheckpointInfo { dir: dir.to_path_buf(), bytes, files })
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false)
}

/// The folder of the checkpoint at `step` in a `--save` folder.
pub fn step_dir_name(step: u32) -> String {
    format!("step_{step:08}")
}

fn parse_step(name: &str) -> Option<u32> {
    name.strip_prefix("step_").filter(|s| s.len() == 8).and_then(|s| s.parse().ok())
}

/// The checkpoint folder `path` names: itself when it holds model.safetensors, or the one its
/// `latest` file names (a `--save` folder).
pub fn resolve(path: &Path) -> Result<PathBuf, CheckpointError> {
    if path.join(WEIGHTS_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    let latest = path.join(LATEST_FILE);
    if let Ok(name) = std::fs::read_to_string(&latest) {
        let dir = path.join(name.trim());
        if dir.join(WEIGHTS_FILE).is_file() {
            return Ok(dir);
        }
        return Err(CheckpointError::NotACheckpoint {
            path: path.to_path_buf(),
            message: format!("{LATEST_FILE} names {}, which holds no {WEIGHTS_FILE}", dir.display()),
        });
    }
    let message = if !path.exists() {
        "no such folder".to_string()
    } else if path.join("model.safetensors.index.json").exists() {
        "a sharded checkpoint (model.safetensors.index.json); save it as one file: save_pretrained(DIR, max_shard_size=\"100GB\")"
            .to_string()
    } else if path.join("pytorch_model.bin").exists() {
        "only pytorch_model.bin; offplan reads safetensors: save it with save_pretrained(DIR, safe_serialization=True)".to_string()
    } else {
        format!("no {WEIGHTS_FILE} and no {LATEST_FILE}")
    };
    Err(CheckpointError::NotACheckpoint { path: path.to_path_buf(), message })
}

/// Saves checkpoints into `root/step_NNNNNNNN/` and keeps `root/latest` naming the newest.
pub struct CheckpointSaver {
    root: PathBuf,
    keep: usize,
}

impl CheckpointSaver {
    /// Saves into `root` (created), keeping the newest `keep` (at least 1) checkpoints; clears
    /// temporary folders a crashed save left.
    pub fn new(root: &Path, keep: usize) -> Result<CheckpointSaver, CheckpointError> {
        std::fs::create_dir_all(root).map_err(|e| io_error(root, "create", e))?;
        for e in std::fs::read_dir(root).map_err(|e| io_error(root, "read", e))?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(".step_") && (n.contains(".tmp-") || n.contains(".old-")) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(CheckpointSaver { root: root.to_path_buf(), keep: keep.max(1) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes the checkpoint of `step` (with the training state when `state` is given), points
    /// `latest` at it, then removes all but the newest `keep` (never the new one; a checkpoint
    /// of a later step left by an earlier run counts as older).
    pub fn save(
        &self,
        step: u32,
        cfg: &GptConfig,
        inv: &Inventory,
        src: &dyn ParamSource,
        state: Option<&TrainerState>,
    ) -> Result<CheckpointInfo, CheckpointError> {
        let name = step_dir_name(step);
        let info = write_checkpoint(&self.root.join(&name), cfg, inv, src, state)?;
        let latest = self.root.join(LATEST_FILE);
        models::io::write_atomic(&latest, format!("{name}\n").as_bytes()).map_err(|e| io_error(&latest, "write", e))?;
        sync_dir(&self.root).map_err(|e| io_error(&self.root, "sync", e))?;
        let mut older: Vec<u32> = std::fs::read_dir(&self.root)
            .map_err(|e| io_error(&self.root, "read", e))?
            .flatten()
            .filter_map(|e| parse_step(&e.file_name().to_string_lossy()))
            .filter(|&s| s != step)
            .collect();
        // newest first: the earlier steps, nearest first, then any later steps
        older.sort_by_key(|&s| if s < step { (0, step - s) } else { (1, s) });
        for s in older.into_iter().skip(self.keep - 1) {
            let _ = std::fs::remove_dir_all(self.root.join(step_dir_name(s)));
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests;
