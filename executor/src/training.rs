//! What a run trains on and keeps, beside [`crate::RunOptions`]: the training data
//! ([`TrainData`]: the shipped corpus or `--data` shards), where step 1 starts ([`StartFrom`]:
//! the seed's initial state, `--init-from` weights, or `--resume`), and the checkpoints it
//! saves ([`SavePlan`]). Plain Rust: everything here is checked before a device is opened, so
//! bad data or a checkpoint of another model fails the same way with and without a GPU.

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointSaver, ParamSource, TrainerState};
use crate::data::{Batch, TrainData, ValidationSet};
use crate::host::AdamW;
use crate::init::OwnerInit;
use crate::state::ModelState;
use crate::ExecError;
use models::program::Program;
use serde::Serialize;
use std::path::PathBuf;

/// Where a run's state comes from before step 1.
pub enum StartFrom {
    /// The initial state made from the run's seed (`RunOptions::seed`).
    Seed,
    /// Hugging Face GPT-2 weights (`Checkpoint::open_weights`): a fresh optimizer, step 0.
    Weights(Checkpoint),
    /// A checkpoint saved with its training state (`Checkpoint::open_resume`): weights,
    /// optimizer state, step count and data position as saved.
    Resume(Checkpoint),
}

/// Checkpoints to save: into `dir/step_NNNNNNNN/` (with `dir/latest`), every `every` steps
/// (if given) and after the last step.
#[derive(Clone, Debug)]
pub struct SavePlan {
    pub dir: PathBuf,
    /// Save after every step that is a multiple of this (at least 1).
    pub every: Option<u32>,
    /// Weights and config.json only (to share; cannot be resumed).
    pub weights_only: bool,
    /// Checkpoints kept in `dir` (the newest; at least 1).
    pub keep: usize,
}

/// One checkpoint a run saved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SavedCheckpoint {
    pub step: u32,
    pub dir: PathBuf,
    pub bytes: u64,
    pub weights_only: bool,
}

/// The mean validation loss after a step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ValidationLoss {
    pub step: u32,
    pub loss: f64,
    /// Batches it is the mean over.
    pub batches: usize,
}

/// What a run trained on, and from where.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrainingSummary {
    /// `--data`'s pattern; None: the shipped corpus.
    pub pattern: Option<String>,
    /// One line: the files (or the corpus) and their tokens.
    pub data: String,
    /// Files read (0 for the corpus).
    pub shards: usize,
    /// Tokens of the training data.
    pub tokens: u64,
    /// The step the run began with (1 unless resumed).
    pub first_step: u32,
    /// "seed N", "weights of DIR" or "resumed from DIR at step N".
    pub start: String,
    pub checkpoints: Vec<SavedCheckpoint>,
    /// `--val-data`'s pattern, if any.
    pub val_pattern: Option<String>,
    pub validation: Vec<ValidationLoss>,
}

/// Validation every `every` steps over fixed batches.
struct Validation {
    batches: Vec<Batch>,
    every: u32,
}

/// The data, the start and the saves of one run.
// Without `cuda` no runner reads it (the runs answer NoGpu): still built, so the checks hold.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub struct Training {
    data: TrainData,
    /// The first batch, read before the device opens (a bad shard or token fails early).
    first: Option<Batch>,
    pub(crate) from: StartFrom,
    save: Option<SavePlan>,
    saver: Option<CheckpointSaver>,
    validation: Option<Validation>,
    /// Keep the state after the last step ([`Training::keep_final_state`]).
    keep_state: bool,
    pub(crate) final_state: Option<ModelState>,
    summary: TrainingSummary,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl Training {
    /// Training on `data` (opened for the program's batch shape; `pattern` is `--data`'s, for
    /// the record) from `from`, saving as `save` says. A resume moves the data to its saved
    /// position (refused on other data). Reads the first batch now.
    pub fn new(
        mut data: TrainData,
        pattern: Option<String>,
        from: StartFrom,
        save: Option<SavePlan>,
        seed: u64,
    ) -> Result<Training, ExecError> {
        if let Some(s) = &save {
            if s.every == Some(0) {
                return Err(ExecError::Refused("--save-every must be at least 1".into()));
            }
        }
        let (first_step, start) = match &from {
            StartFrom::Seed => (1, format!("seed {seed}")),
            StartFrom::Weights(c) => (1, format!("weights of {}", c.dir().display())),
            StartFrom::Resume(c) => {
                let state = c.state().ok_or_else(|| ExecError::Refused(format!("{} holds no training state", c.dir().display())))?;
                data.seek(&state.data)?;
                (state.step + 1, format!("resumed from {} at step {}", c.dir().display(), state.step))
            }
        };
        let first = Some(data.next_batch()?);
        let shards = match &data {
            TrainData::Corpus(_) => 0,
            TrainData::Shards(s) => s.set().len(),
        };
        let summary = TrainingSummary {
            pattern,
            data: data.describe(),
            shards,
            tokens: data.len_tokens(),
            first_step,
            start,
            checkpoints: Vec::new(),
            val_pattern: None,
            validation: Vec::new(),
        };
        Ok(Training { data, first, from, save, saver: None, validation: None, keep_state: false, final_state: None, summary })
    }

    /// The shipped corpus from the seed's initial state, saving nothing: what a run did before
    /// `--data` and checkpoints.
    pub fn corpus(program: &Program, seed: u64) -> Result<Training, ExecError> {
        let cfg = &program.config;
        let data = TrainData::open(None, Default::default(), cfg.batch, cfg.seq, cfg.vocab, seed)?;
        Training::new(data, None, StartFrom::Seed, None, seed)
    }

    /// Also the mean loss over `set`'s batches (all read now, so a bad file fails before the
    /// device opens) after every `every`-th step and the last (`pattern` for the record).
    /// Forward only; all-on-GPU runs only for now.
    pub fn with_validation(mut self, set: &ValidationSet, pattern: &str, every: u32) -> Result<Training, ExecError> {
        if every == 0 {
            return Err(ExecError::Refused("--val-every must be at least 1".into()));
        }
        if set.is_empty() {
            return Err(ExecError::Refused(format!("{pattern}: no whole validation batch in it")));
        }
        let batches = set.batches().collect::<Result<Vec<_>, _>>()?;
        self.validation = Some(Validation { batches, every });
        self.summary.val_pattern = Some(pattern.to_string());
        Ok(self)
    }

    /// Also hand back the whole state after the last step (`RunResult::final_state`, read
    /// from where the schedule keeps it), for checks such as weight checksums across schedules.
    pub fn keep_final_state(mut self) -> Training {
        self.keep_state = true;
        self
    }

    /// Whether the run reads its state back (to save checkpoints or keep the final state).
    pub fn reads_state(&self) -> bool {
        self.save.is_some() || self.keep_state
    }

    /// The validation batches if validation is due after `step` of a run ending at `last`.
    pub(crate) fn validation_due(&self, step: u32, last: u32) -> Option<&[Batch]> {
        let v = self.validation.as_ref()?;
        (step == last || step.is_multiple_of(v.every)).then_some(&v.batches[..])
    }

    /// Keeps a validation loss for the summary.
    pub(crate) fn validated(&mut self, v: ValidationLoss) {
        self.summary.validation.push(v);
    }

    /// The step the run begins with (1 unless resumed).
    pub fn first_step(&self) -> u32 {
        self.summary.first_step
    }

    pub fn summary(&self) -> &TrainingSummary {
        &self.summary
    }

    /// The next batch.
    pub(crate) fn next_batch(&mut self) -> Result<Batch, ExecError> {
        match self.first.take() {
            Some(b) => Ok(b),
            None => Ok(self.data.next_batch()?),
        }
    }

    /// After step `step` of a run whose last step is `last`: saves a checkpoint if one is due,
    /// gathering the state through `src`. The data position saved is the next batch's.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn after_step(
        &mut self,
        step: u32,
        last: u32,
        program: &Program,
        src: &dyn ParamSource,
        seed: u64,
        adamw: &AdamW,
        schedule_digest: Option<&str>,
    ) -> Result<Option<SavedCheckpoint>, ExecError> {
        if step == last && self.keep_state {
            let owners = program
                .inventory
                .owners()
                .into_iter()
                .map(|o| {
                    let source = |message| CheckpointError::Source { owner: o.to_string(), message };
                    Ok(OwnerInit {
                        owner: o,
                        weights: src.weights(o).map_err(source)?.into_owned(),
                        optimizer: src.optimizer(o).map_err(source)?.into_owned(),
                    })
                })
                .collect::<Result<_, CheckpointError>>()?;
            self.final_state = Some(ModelState { step, owners });
        }
        let Some(plan) = &self.save else { return Ok(None) };
        let due = step == last || plan.every.is_some_and(|e| step.is_multiple_of(e));
        if !due {
            return Ok(None);
        }
        if self.saver.is_none() {
            self.saver = Some(CheckpointSaver::new(&plan.dir, plan.keep)?);
        }
        let saver = self.saver.as_ref().expect("made above");
        let state = (!plan.weights_only).then(|| {
            let cfg = &program.config;
            let mut s = TrainerState::new(step, seed, &cfg.name, &models::digest::program_digest(program), self.data.position());
            s.schedule_digest = schedule_digest.map(str::to_string);
            s.extra = serde_json::json!({ "adamw": adamw });
            s
        });
        let info = saver.save(step, &program.config, &program.inventory, src, state.as_ref())?;
        let saved = SavedCheckpoint { step, dir: info.dir, bytes: info.bytes, weights_only: plan.weights_only };
        self.summary.checkpoints.push(saved.clone());
        Ok(Some(saved))
    }
}
