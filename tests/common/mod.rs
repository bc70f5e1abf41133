//! Helpers the end-to-end tests share: run the built `offplan`, read its output, make a scratch
//! folder. (Each test file uses some of them.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the built `offplan` with `args` in the repository root.
pub fn offplan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_offplan")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("offplan runs")
}

/// Standard output and standard error together.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// An empty folder of this test process.
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("offplan-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A shipped config's path, as the commands take it (relative to the repository root).
pub fn config(name: &str) -> String {
    format!("models/configs/{name}.ron")
}

/// The shipped H100 profile.
pub const H100: &str = "models/hardware/h100-sxm.ron";

/// `offplan plan` of gpt2-tiny on the H100 profile under `budget` (as the flag reads it), into `out`.
pub fn plan_tiny(budget: &str, out: &Path) -> Output {
    offplan(&["plan", "--model", &config("gpt2-tiny"), "--hardware", H100, "--budget", budget, "--out", out.to_str().unwrap()])
}
