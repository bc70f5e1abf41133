//! Compiled kernels on disk, so a second run compiles nothing. A file's name is a hash of
//! everything its machine code depends on: the kernel source, the compile options (the
//! architecture among them), NVRTC's version and the driver's. A changed source, an updated
//! toolkit or driver gives another name, so a stale entry is never used; the folder is safe to
//! delete at any time. Files are written under a temporary name and renamed.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The folder of compiled kernels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelCache {
    dir: PathBuf,
}

impl KernelCache {
    pub fn new(dir: impl Into<PathBuf>) -> KernelCache {
        KernelCache { dir: dir.into() }
    }

    /// The user's cache folder: `$XDG_CACHE_HOME/offplan/kernels`, else `~/.cache/offplan/kernels`;
    /// None where neither is known (then every run compiles).
    pub fn user_default() -> Option<KernelCache> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| Path::new(&h).join(".cache")))?;
        Some(KernelCache::new(base.join("offplan").join("kernels")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `file`'s machine code under these inputs.
    pub fn path(&self, file: &str, source: &str, options: &[String], nvrtc: &str, driver: &str) -> PathBuf {
        let mut h = Sha256::new();
        for part in [file, source, &options.join("\u{1f}"), nvrtc, driver] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        let hex: String = h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
        let stem = file.strip_suffix(".cu").unwrap_or(file);
        self.dir.join(format!("{stem}-{hex}.cubin"))
    }

    /// The cached bytes at `path`, if any.
    pub fn read(path: &Path) -> Option<Vec<u8>> {
        std::fs::read(path).ok().filter(|b| !b.is_empty())
    }

    /// Stores `bytes` at `path`; a cache that cannot be written is only a slower next run, so
    /// the failure is logged, not returned.
    pub fn write(path: &Path, bytes: &[u8]) {
        let result = (|| -> std::io::Result<()> {
            let dir = path.parent().expect("cache files are in the cache folder");
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".{}.{}.tmp", path.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            tracing::warn!("could not cache a compiled kernel at {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_name_and_entries_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = KernelCache::new(dir.path().join("k"));
        let opts = vec!["--gpu-architecture=sm_90".to_string(), "-std=c++17".to_string()];
        let base = c.path("misc.cu", "src", &opts, "13.0", "580.1");
        assert!(base.file_name().unwrap().to_string_lossy().starts_with("misc-"));
        let other_arch = vec!["--gpu-architecture=sm_89".to_string(), "-std=c++17".to_string()];
        for p in [
            c.path("gelu.cu", "src", &opts, "13.0", "580.1"),
            c.path("misc.cu", "src2", &opts, "13.0", "580.1"),
            c.path("misc.cu", "src", &other_arch, "13.0", "580.1"),
            c.path("misc.cu", "src", &opts, "13.1", "580.1"),
            c.path("misc.cu", "src", &opts, "13.0", "580.2"),
        ] {
            assert_ne!(p, base);
        }
        assert_eq!(KernelCache::read(&base), None);
        KernelCache::write(&base, b"cubin");
        assert_eq!(KernelCache::read(&base).as_deref(), Some(&b"cubin"[..]));
        assert_eq!(std::fs::read_dir(dir.path().join("k")).unwrap().count(), 1, "no temporary file left");
    }
}
