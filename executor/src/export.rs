//! The reference export folder (`executor/reference/README.md`): `manifest.json` plus one raw
//! little-endian file per tensor, read by `executor/reference/gpt_reference.py`.

use models::inventory::View;
use models::GptConfig;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Serialize)]
struct Entry {
    name: String,
    dtype: &'static str,
    shape: Vec<u64>,
    file: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    views: Vec<View>,
}

#[derive(Serialize)]
struct Manifest<'a, H: Serialize> {
    config: &'a GptConfig,
    adamw: &'a H,
    tensors: Vec<Entry>,
    #[serde(flatten)]
    steps: ExportSteps,
}

/// What each exported step did: its loss, its learning rate and, clipped, its gradients' norm.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExportSteps {
    pub losses: Vec<f64>,
    /// The learning rate of each step (f32, as the kernels used it), in step order.
    pub lrs: Vec<f32>,
    /// The largest global gradient norm; 0: unclipped.
    pub grad_clip: f64,
    /// Each step's global gradient norm before clipping (clipped steps only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grad_norms: Vec<f64>,
}

/// Collects tensors, writes the manifest last.
pub struct ExportWriter {
    dir: PathBuf,
    entries: Vec<Entry>,
}

impl ExportWriter {
    pub fn new(dir: &Path) -> std::io::Result<ExportWriter> {
        std::fs::create_dir_all(dir)?;
        Ok(ExportWriter { dir: dir.to_path_buf(), entries: Vec::new() })
    }

    /// Writes one tensor's bytes (dtype "bf16", "f32" or "i32").
    pub fn add(&mut self, name: &str, dtype: &'static str, shape: Vec<u64>, bytes: &[u8], views: Vec<View>) -> std::io::Result<()> {
        let size = match dtype {
            "bf16" => 2,
            _ => 4,
        };
        let elems: u64 = shape.iter().product();
        if elems * size != bytes.len() as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name}: {} bytes for shape {shape:?} of {dtype}", bytes.len()),
            ));
        }
        let file = format!("{}.bin", name.replace('/', "_"));
        models::io::write_atomic(&self.dir.join(&file), bytes)?;
        self.entries.push(Entry { name: name.to_string(), dtype, shape, file, views });
        Ok(())
    }

    /// Writes `manifest.json`: `adamw` (the peak's hyper-parameters) and each step's loss,
    /// learning rate and (clipped) gradient norm.
    pub fn finish<H: Serialize>(self, config: &GptConfig, adamw: &H, steps: ExportSteps) -> std::io::Result<()> {
        let n = steps.losses.len();
        if steps.lrs.len() != n || !(steps.grad_norms.is_empty() || steps.grad_norms.len() == n) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} learning rates and {} norms for {n} losses: one per step", steps.lrs.len(), steps.grad_norms.len()),
            ));
        }
        let m = Manifest { config, adamw, tensors: self.entries, steps };
        let text = serde_json::to_vec_pretty(&m).map_err(std::io::Error::other)?;
        models::io::write_atomic(&self.dir.join("manifest.json"), &text)
    }
}

/// Little-endian bytes of i32 values.
pub fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of bf16 values.
pub fn bf16_bytes(v: &[half::bf16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_manifest_and_raw_files() {
        let dir = std::env::temp_dir().join(format!("offplan-export-test-{}", std::process::id()));
        let cfg = GptConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs/gpt2-tiny.ron")).unwrap();
        let mut w = ExportWriter::new(&dir).unwrap();
        w.add("tokens", "i32", vec![1, 2], &i32_bytes(&[3, 4]), vec![]).unwrap();
        assert!(w.add("bad", "f32", vec![3], &[0u8; 8], vec![]).is_err());
        let steps = ExportSteps { losses: vec![1.5, 1.25], lrs: vec![3e-4, 1.5e-4], grad_clip: 1.0, grad_norms: vec![2.0, 0.5] };
        w.finish(&cfg, &serde_json::json!({"lr": 3e-4}), steps).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["config"]["name"], "gpt2-tiny");
        assert_eq!(m["config"]["attention"], "Materialized");
        assert_eq!(m["tensors"][0]["file"], "tokens.bin");
        assert_eq!(m["losses"][1], 1.25);
        assert_eq!(m["lrs"][1].as_f64().unwrap() as f32, 1.5e-4f32);
        assert_eq!((m["grad_clip"].as_f64(), m["grad_norms"][0].as_f64()), (Some(1.0), Some(2.0)));
        assert_eq!(std::fs::read(dir.join("tokens.bin")).unwrap(), vec![3, 0, 0, 0, 4, 0, 0, 0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
