//! The record of one real run on a GPU: what was run (config, schedule and its digest), where
//! (device, driver, commit), what was predicted and what was measured (peak memory by the
//! pool's and the driver's counts, step times, losses). Written as RON, atomically.
//!
//! Version 2 adds what re-planning a record needs (hardware profile, budget, strategy, the
//! schedule's block decisions) and the step time broken into lanes, predicted and measured.
//! Every v2 field has a serde default, so v1 files load as all-on-GPU runs on "h100-sxm".

use models::schedule::BlockDecision;
use models::GptConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Format version of [`Record`].
pub const RECORD_VERSION: u32 = 2;

/// The hardware profile a v1 record (which did not name one) was planned for.
pub const V1_HARDWARE: &str = "h100-sxm";

/// The strategy of a record with no schedule.
pub const ALL_ON_GPU: &str = "all-on-gpu";

/// Memory figures in bytes, predicted or measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryPeaks {
    /// Bytes handed out by the stream-ordered pool at its highest (CU_MEMPOOL_ATTR_USED_MEM_HIGH;
    /// predicted: the lifetime graph's peak of live tensor bytes).
    pub allocated_bytes: u64,
    /// Pool backing memory at its highest (RESERVED_MEM_HIGH); predicted: as allocated.
    pub reserved_bytes: u64,
    /// Device memory the process uses (cuMemGetInfo total - free); predicted: allocated plus
    /// the hardware profile's fixed overhead.
    pub device_bytes: u64,
}

pub use models::trace::StepTimes;

/// Errors reading records.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read the record {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is not a run record (format v{RECORD_VERSION} or older): {message}; records are written by `offplan run`, move it out of the records folder or re-run", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{} was written by a newer offplan (record format v{version}, this one reads up to v{RECORD_VERSION}); update offplan", path.display())]
    TooNew { path: PathBuf, version: u32 },
    #[error("the records folder {} does not exist or is not a folder: give the folder that holds the `run-*.ron` records `offplan run --out` wrote (e.g. reports/records)", path.display())]
    NoDir { path: PathBuf },
}

/// One step as measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u32,
    pub loss: f64,
    /// The learning rate the step's updates used; None in records written before the setup.
    #[serde(default)]
    pub lr: Option<f64>,
    /// The global norm of the step's gradients before clipping; None unclipped (and in
    /// records written before clipping).
    #[serde(default)]
    pub grad_norm: Option<f64>,
    pub ms: f64,
    pub tokens_per_s: f64,
    pub mfu: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// The command that produced it.
    pub command: String,
    pub config: GptConfig,
    /// "all-on-gpu" or the schedule file's path.
    pub schedule: String,
    /// `models::digest::program_digest` of the program run.
    pub schedule_digest: String,
    pub device: String,
    pub driver: String,
    /// `git rev-parse HEAD` where the binary was built or run, or "unknown".
    pub commit: String,
    /// UTC seconds since the Unix epoch when the record was written.
    pub unix_time: u64,
    pub predicted: MemoryPeaks,
    pub measured: MemoryPeaks,
    /// Device memory in use before the run allocated anything (context, modules).
    pub device_bytes_at_start: u64,
    /// Peak bf16 FLOP/s used for MFU.
    pub peak_flops: f64,
    /// Model FLOPs per step (`Program::model_flops`).
    pub model_flops: f64,
    pub steps: Vec<StepRecord>,
    /// Median step time over steps after the first (the first includes warm-up), ms.
    pub median_ms: f64,
    pub median_tokens_per_s: f64,
    /// Free-form notes (e.g. what ran besides).
    pub notes: Vec<String>,
    /// Hardware profile name planned for (`models/hardware/<name>.ron`); "" in v1 records
    /// (see [`Record::hardware_name`]).
    #[serde(default)]
    pub hardware: String,
    /// The schedule's budget, device bytes; None for an all-on-GPU run.
    #[serde(default)]
    pub budget_bytes: Option<u64>,
    /// "all-on-gpu", "planner", or a strategy name such as "offload-all"; "" in v1 records
    /// (see [`Record::strategy_name`]).
    #[serde(default)]
    pub strategy: String,
    /// The schedule's block decisions; empty = everything on the GPU.
    #[serde(default)]
    pub decisions: Vec<BlockDecision>,
    /// The step time the plan predicted, by lane.
    #[serde(default)]
    pub predicted_time: Option<StepTimes>,
    /// The step time measured, by lane.
    #[serde(default)]
    pub measured_time: Option<StepTimes>,
    /// How the run gave tensors device memory: "arena" (one allocation at planned offsets, so
    /// the measured pool peak is the arena) or "pool" (an allocation per tensor); "" in records
    /// written before arenas, which all used the pool (see [`Record::allocator_name`]).
    #[serde(default)]
    pub allocator: String,
    /// How long each start-up phase took and the time to the first step; None in records
    /// written before they were timed.
    #[serde(default)]
    pub startup: Option<models::trace::Startup>,
    /// The machine's rates probed before the first step and after the last; None in records
    /// written before runs probed.
    #[serde(default)]
    pub probe: Option<models::hardware::RunProbes>,
    /// What the run trained on, where it started from and the checkpoints it saved; None in
    /// records written before `--data` and checkpoints.
    #[serde(default)]
    pub training: Option<TrainingRecord>,
    /// The step's clipping; `Off` in records written before clipping, which did not clip.
    #[serde(default)]
    pub clipping: models::program::Clipping,
    /// A step's compute actions by op kind, against what the record's profile prices them at:
    /// spans of the first step with the GPU held ahead of the host (runs from device run 24 on;
    /// before, the measured step's spans, which a host-bound step stretches to its issue pace);
    /// empty in records written before ops were timed one by one.
    #[serde(default)]
    pub op_times: Vec<OpKindTime>,
    /// The measured step's host ops by kind (CPU embedding, host AdamW, host norms), each as it
    /// timed itself, against what the record's profile prices them at; empty in records written
    /// before host ops were timed one by one, and in steps without host work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_op_times: Vec<HostOpKindTime>,
    /// Median host time to issue a timed step's actions, ms; None in records written before.
    #[serde(default)]
    pub issue_ms: Option<f64>,
}

/// The row of `rows` that `is` picks, added from `new` where there is none yet: the rows stay in
/// the order their kinds first came.
fn row_of<R>(rows: &mut Vec<R>, is: impl Fn(&R) -> bool, new: impl FnOnce() -> R) -> &mut R {
    let i = match rows.iter().position(is) {
        Some(i) => i,
        None => {
            rows.push(new());
            rows.len() - 1
        }
    };
    &mut rows[i]
}

impl OpKindTime {
    /// The table of a measured step's compute actions `(op, span ms, issue ms)`, a row per op
    /// kind in the order the kinds first ran, each priced under `hw`.
    pub fn table(
        program: &models::Program,
        hw: &models::HardwareProfile,
        spans: impl IntoIterator<Item = (models::OpId, f64, f64)>,
    ) -> Vec<OpKindTime> {
        let mut rows: Vec<OpKindTime> = Vec::new();
        for (id, measured, issue) in spans {
            let op = program.op(id);
            let kind = op.kind.family();
            let r = row_of(
                &mut rows,
                |r| r.kind == kind,
                || OpKindTime { kind: kind.into(), runs: 0, launches: 0, measured_ms: 0.0, issue_ms: 0.0, predicted_ms: 0.0 },
            );
            r.runs += 1;
            r.launches += op.launches;
            r.measured_ms += measured;
            r.issue_ms += issue;
            r.predicted_ms += models::cost::op_time(op, hw).0 * 1e3;
        }
        rows
    }
}

impl HostOpKindTime {
    /// The table of a measured step's host ops `(op, ms)`, a row per op kind in the order the
    /// kinds first ended, each priced under `hw` (`models::cost::host_op_time`).
    pub fn table(
        program: &models::Program,
        hw: &models::HardwareProfile,
        spans: impl IntoIterator<Item = (models::OpId, f64)>,
    ) -> Vec<HostOpKindTime> {
        let mut rows: Vec<HostOpKindTime> = Vec::new();
        for (id, measured) in spans {
            let op = program.op(id);
            let kind = op.kind.family();
            let r = row_of(
                &mut rows,
                |r| r.kind == kind,
                || HostOpKindTime { kind: kind.into(), runs: 0, measured_ms: 0.0, predicted_ms: 0.0 },
            );
            r.runs += 1;
            r.measured_ms += measured;
            r.predicted_ms += models::cost::host_op_time(op, program, hw).map_or(0.0, |t| t.0 * 1e3);
        }
        rows
    }
}

/// One kind of host op in the measured step (every owner's host AdamW together).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostOpKindTime {
    /// The kind without its owner: "Adam", "EmbedBwd", "GradNorm".
    pub kind: String,
    /// Ops of the kind.
    pub runs: u32,
    /// Their own times on the host, summed.
    pub measured_ms: f64,
    /// `models::cost::host_op_time` of each under the record's hardware profile, summed.
    pub predicted_ms: f64,
}

/// One op kind's compute actions in the measured step (every layer's `Fc` together; a
/// recomputed op counts again).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpKindTime {
    /// The kind without its layer or owner: "Fc", "AttnBwd", "Adam".
    pub kind: String,
    /// Actions of the kind.
    pub runs: u32,
    /// Kernel launches of those actions (`Op::launches`).
    pub launches: u32,
    /// Their spans on the compute stream, CUDA events before and after each, summed.
    pub measured_ms: f64,
    /// The host's time to issue them, summed.
    pub issue_ms: f64,
    /// `models::cost::op_time` of each under the record's hardware profile, summed.
    pub predicted_ms: f64,
}

impl Record {
    /// The step program the run ran (its config and clipping).
    pub fn program(&self) -> models::Program {
        models::Program::build_with(&self.config, self.clipping)
    }
}

/// A run's data, start and checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// `--data`'s pattern; None: the shipped corpus (`executor/corpus`).
    pub data_pattern: Option<String>,
    /// Token files read (0 for the shipped corpus).
    pub data_shards: usize,
    /// Tokens of the training data.
    pub data_tokens: u64,
    /// The first step (1 unless resumed).
    pub first_step: u32,
    /// "seed N", "weights of DIR" (`--init-from`) or "resumed from DIR at step N".
    pub start: String,
    /// (step, folder) of each checkpoint saved.
    #[serde(default)]
    pub checkpoints: Vec<(u32, String)>,
    /// `--val-data`'s pattern, if the run validated.
    #[serde(default)]
    pub val_pattern: Option<String>,
    /// (step, mean validation loss).
    #[serde(default)]
    pub validation: Vec<(u32, f64)>,
}

/// The median of `xs` (NaN-free); 0 for none.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Median step time of the steps after the first (all of them if there is only one).
pub fn steady_median_ms(steps: &[StepRecord]) -> f64 {
    let ms: Vec<f64> = steps.iter().map(|s| s.ms).collect();
    if ms.len() > 1 {
        median(&ms[1..])
    } else {
        median(&ms)
    }
}

impl Record {
    /// A file name that says what and where: `run-<config>-<device>-<unix time>.ron`.
    pub fn file_name(&self) -> String {
        let slug = |s: &str| -> String {
            let s: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c.to_ascii_lowercase() } else { '-' }).collect();
            s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
        };
        format!("run-{}-{}-{}.ron", slug(&self.config.name), slug(&self.device), self.unix_time)
    }

    pub fn to_ron(&self) -> Result<String, ron::Error> {
        ron::ser::to_string_pretty(self, ron::ser::PrettyConfig::default())
    }

    pub fn from_ron(text: &str) -> Result<Record, ron::error::SpannedError> {
        ron::from_str(text)
    }

    /// The hardware profile's name: [`V1_HARDWARE`] where the record names none.
    pub fn hardware_name(&self) -> &str {
        if self.hardware.is_empty() {
            V1_HARDWARE
        } else {
            &self.hardware
        }
    }

    /// The strategy: [`ALL_ON_GPU`] where the record names none (v1).
    pub fn strategy_name(&self) -> &str {
        if self.strategy.is_empty() {
            ALL_ON_GPU
        } else {
            &self.strategy
        }
    }

    /// The allocator of the run: "pool" where the record names none (written before arenas).
    pub fn allocator_name(&self) -> &str {
        if self.allocator.is_empty() {
            "pool"
        } else {
            &self.allocator
        }
    }

    /// Whether the run laid its tensors out in one arena.
    pub fn used_arena(&self) -> bool {
        self.allocator_name() == "arena"
    }

    /// Reads one record.
    pub fn load(path: &Path) -> Result<Record, RecordError> {
        let text = std::fs::read_to_string(path).map_err(|e| RecordError::Io { path: path.to_path_buf(), source: e })?;
        let r = Record::from_ron(&text).map_err(|e| RecordError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        if r.version > RECORD_VERSION {
            return Err(RecordError::TooNew { path: path.to_path_buf(), version: r.version });
        }
        Ok(r)
    }

    /// Writes the record into `dir` (created if missing) under [`Record::file_name`],
    /// atomically; returns the path.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(self.file_name());
        let text = self.to_ron().map_err(std::io::Error::other)?;
        models::io::write_atomic(&path, text.as_bytes())?;
        Ok(path)
    }
}

/// Every `*.ron` record in `dir`, sorted by file name (other files are left alone). An empty
/// folder gives an empty list; a file that does not parse is an error naming it.
pub fn load_dir(dir: &Path) -> Result<Vec<(PathBuf, Record)>, RecordError> {
    if !dir.is_dir() {
        return Err(RecordError::NoDir { path: dir.to_path_buf() });
    }
    let entries = std::fs::read_dir(dir).map_err(|e| RecordError::Io { path: dir.to_path_buf(), source: e })?;
    let mut paths = Vec::new();
    for e in entries {
        let p = e.map_err(|e| RecordError::Io { path: dir.to_path_buf(), source: e })?.path();
        if p.is_file() && p.extension().is_some_and(|x| x == "ron") {
            paths.push(p);
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    paths.into_iter().map(|p| Record::load(&p).map(|r| (p, r))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        let cfg = GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs/gpt2-tiny.ron")).unwrap();
        let steps: Vec<StepRecord> = (1..=4)
            .map(|i| StepRecord {
                step: i,
                loss: 11.0 - i as f64,
                lr: None,
                grad_norm: None,
                ms: 10.0 + i as f64,
                tokens_per_s: 1e5,
                mfu: 0.1,
            })
            .collect();
        Record {
            version: RECORD_VERSION,
            command: "offplan run".into(),
            config: cfg,
            schedule: "all-on-gpu".into(),
            schedule_digest: "abc".into(),
            device: "NVIDIA H100 80GB HBM3".into(),
            driver: "13.0".into(),
            commit: "unknown".into(),
            unix_time: 1_800_000_000,
            predicted: MemoryPeaks { allocated_bytes: 1, reserved_bytes: 1, device_bytes: 2 },
            measured: MemoryPeaks { allocated_bytes: 1, reserved_bytes: 3, device_bytes: 4 },
            device_bytes_at_start: 5,
            peak_flops: 989e12,
            model_flops: 1e12,
            median_ms: steady_median_ms(&steps),
            median_tokens_per_s: 1e5,
            steps,
            notes: vec![],
            hardware: "h100-sxm".into(),
            budget_bytes: Some(40 << 30),
            strategy: "offload-all".into(),
            decisions: vec![BlockDecision {
                block: models::inventory::BlockId(3),
                name: "layer0.weights".into(),
                placement: models::Placement::Streamed,
                prefetch_distance: Some(2),
            }],
            predicted_time: Some(StepTimes { step_ms: 12.0, compute_ms: 10.0, h2d_bytes: 7, ..StepTimes::default() }),
            measured_time: None,
            allocator: String::new(),
            startup: None,
            probe: None,
            clipping: Default::default(),
            training: None,
            op_times: Vec::new(),
            host_op_times: Vec::new(),
            issue_ms: None,
        }
    }

    #[test]
    fn round_trips_and_names_the_device() {
        let r = sample();
        assert_eq!(r.median_ms, 13.0);
        assert_eq!(Record::from_ron(&r.to_ron().unwrap()).unwrap(), r);
        assert_eq!(r.file_name(), "run-gpt2-tiny-nvidia-h100-80gb-hbm3-1800000000.ron");
        let dir = std::env::temp_dir().join(format!("offplan-record-{}", std::process::id()));
        let p = r.write(&dir).unwrap();
        assert_eq!(Record::from_ron(&std::fs::read_to_string(&p).unwrap()).unwrap(), r);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
    }

    fn records_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("records")
    }

    #[test]
    fn v1_records_load_as_all_on_gpu_runs_on_the_h100() {
        let all = load_dir(&records_dir()).unwrap();
        assert!(!all.is_empty());
        let names: Vec<_> = all.iter().map(|(p, _)| p.file_name().unwrap().to_owned()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for (p, r) in &all {
            assert!(p.extension().unwrap() == "ron");
            if r.version == 1 {
                assert_eq!(r.hardware, "");
                assert_eq!(r.hardware_name(), V1_HARDWARE);
                assert_eq!(r.strategy_name(), ALL_ON_GPU);
                assert!(r.decisions.is_empty() && r.budget_bytes.is_none() && r.measured_time.is_none());
            }
            // What is written back is v2 and reads back the same.
            let mut v2 = r.clone();
            v2.version = RECORD_VERSION;
            assert_eq!(Record::from_ron(&v2.to_ron().unwrap()).unwrap(), v2);
        }
    }

    #[test]
    fn load_errors_name_the_file_and_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_dir(dir.path()).unwrap().is_empty());
        let missing = dir.path().join("nope");
        let e = load_dir(&missing).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
        let r = sample();
        r.write(dir.path()).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a record").unwrap();
        assert_eq!(load_dir(dir.path()).unwrap().len(), 1);
        std::fs::write(dir.path().join("a-broken.ron"), "(version: 2, command: ").unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a-broken.ron") && e.contains("not a run record"), "{e}");
        std::fs::remove_file(dir.path().join("a-broken.ron")).unwrap();
        let mut newer = r.clone();
        newer.version = RECORD_VERSION + 1;
        std::fs::write(dir.path().join("b-newer.ron"), newer.to_ron().unwrap()).unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("b-newer.ron") && e.contains("newer offplan"), "{e}");
    }
}
