//! The record of one real run on a GPU: what was run (config, schedule and its digest), where
//! (device, driver, commit), what was predicted and what was measured (peak memory by the
//! pool's and the driver's counts, step times, losses). Written as RON, atomically.

use models::GptConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Format version of [`Record`].
pub const RECORD_VERSION: u32 = 1;

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

/// One step as measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u32,
    pub loss: f64,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        let cfg = GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs/gpt2-tiny.ron")).unwrap();
        let steps: Vec<StepRecord> = (1..=4).map(|i| StepRecord { step: i, loss: 11.0 - i as f64, ms: 10.0 + i as f64, tokens_per_s: 1e5, mfu: 0.1 }).collect();
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
}
