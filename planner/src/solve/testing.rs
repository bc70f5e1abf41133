//! A small problem the solvers' tests search exhaustively.

use super::problem::{Problem, MS};
use models::{HardwareProfile, Program};

/// gpt2-tiny, untied, one output chunk, on the H100 profile with a link 1000 times slower (so
/// that placement matters for time).
pub fn small() -> (Program, HardwareProfile) {
    let mut cfg = crate::shipped::config("gpt2-tiny");
    cfg.output_chunks = 1;
    cfg.tied_embeddings = false;
    let mut hw = crate::shipped::h100();
    hw.h2d.0 /= 1000.0;
    hw.d2h.0 /= 1000.0;
    hw.h2d_duplex.0 /= 1000.0;
    hw.d2h_duplex.0 /= 1000.0;
    (Program::build(&cfg), hw)
}

/// Every combination of choices, with its time (ms) and peak.
pub fn all_plans(problem: &Problem) -> Vec<(Vec<usize>, f64, u64)> {
    let groups = &problem.groups;
    let total: usize = groups.iter().map(|g| g.len()).product();
    (0..total)
        .map(|mut idx| {
            let pick: Vec<usize> = groups
                .iter()
                .map(|g| {
                    let k = idx % g.len();
                    idx /= g.len();
                    k
                })
                .collect();
            let (t, peak) = problem.eval(&pick);
            (pick, t * MS, peak)
        })
        .collect()
}
