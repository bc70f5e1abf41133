//! The repository's shipped configs and profiles, for the planner's tests.

use models::{GptConfig, HardwareProfile, Program};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `models/configs/NAME.ron`.
pub fn config(name: &str) -> GptConfig {
    GptConfig::load(&root().join(format!("models/configs/{name}.ron"))).unwrap()
}

/// The step program of `models/configs/NAME.ron`.
pub fn program(name: &str) -> Program {
    Program::build(&config(name))
}

/// `models/hardware/h100-sxm.ron`.
pub fn h100() -> HardwareProfile {
    HardwareProfile::load(&root().join("models/hardware/h100-sxm.ron")).unwrap()
}
