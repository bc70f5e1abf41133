//! Choosing the decisions: a MILP over one choice per group (owner, layer activations) on the
//! stage model, warm-started from the best heuristic; its gap proved by a Lagrangian bound
//! (`dual`: a dynamic program over the stages) or by HiGHS's branch and bound.

pub mod dual;
pub mod milp;
pub mod model;

pub use milp::{solve, SolveOutcome};
pub use model::{Evaluation, StageModel};

#[cfg(test)]
mod timing {
    //! `cargo test -p planner --release --lib solve::timing -- --ignored --nocapture`:
    //! solve time and gap of the benchmark problems. OFFPLAN_SOLVE_LIMIT (s), OFFPLAN_REPS,
    //! OFFPLAN_WHICH (name filter), OFFPLAN_BUDGET (GiB for gpt3-2.7b), OFFPLAN_RESOLVE (solve
    //! again from the answer, print it), OFFPLAN_BREAKDOWN (time plan()'s other phases).
    use crate::{plan, PlanOptions};
    use models::{Bytes, GptConfig, HardwareProfile, Program, Seconds};
    use std::path::Path;

    fn load(name: &str) -> (Program, HardwareProfile) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cfg = GptConfig::load(&root.join(format!("models/configs/{name}.ron"))).unwrap();
        let hw = HardwareProfile::load(&root.join("models/hardware/h100-sxm.ron")).unwrap();
        (Program::build(&cfg), hw)
    }

    #[test]
    #[ignore]
    fn solve_times() {
        let limit: f64 = std::env::var("OFFPLAN_SOLVE_LIMIT").ok().and_then(|s| s.parse().ok()).unwrap_or(60.0);
        let reps: usize = std::env::var("OFFPLAN_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        let which = std::env::var("OFFPLAN_WHICH").unwrap_or_default();
        let opts = PlanOptions { time_limit: Seconds(limit), mip_rel_gap: 0.01, threads: 2 };
        let extra: f64 = std::env::var("OFFPLAN_BUDGET").ok().and_then(|s| s.parse().ok()).unwrap_or(0.0);
        for (name, budget) in [("gpt3-2.7b", if extra > 0.0 { extra } else { 24.0 }), ("gpt3-175b", 80.0)] {
            if !which.is_empty() && !name.contains(&which) {
                continue;
            }
            let (p, hw) = load(name);
            for _ in 0..reps {
                let t = std::time::Instant::now();
                let once = plan(&p, &hw, Bytes::gib(budget), &opts).unwrap();
                let r = once.schedule.prediction.solver.clone().unwrap();
                eprintln!(
                    "{name} @ {budget} GiB: objective {:.6} s (simulated {:.6}), bound {:.6}, gap {:.3}%, solve {:.2} s, plan {:.2} s, {} | {}",
                    r.objective.0, once.schedule.prediction.step_time.0, r.bound.0, r.gap * 100.0, r.solve_seconds, t.elapsed().as_secs_f64(), r.status, r.solver
                );
                if std::env::var("OFFPLAN_BREAKDOWN").is_ok() {
                    // Where plan() spends its time besides the solve.
                    let t = std::time::Instant::now();
                    let model = super::StageModel::new(&p, &hw);
                    let t_model = t.elapsed().as_secs_f64();
                    let _ = crate::plan::floor_of(&model);
                    let t_floor = t.elapsed().as_secs_f64() - t_model;
                    let starts = crate::plan::warm_candidates(&model, Bytes::gib(budget));
                    let t_starts = t.elapsed().as_secs_f64() - t_model - t_floor;
                    let t2 = std::time::Instant::now();
                    let _ = crate::plan::finish(&p, &hw, Bytes::gib(budget), &starts[0], None);
                    eprintln!("  plan() besides the solve: stage model {t_model:.2} s, floor {t_floor:.2} s, starting points {t_starts:.2} s ({}), emit + simulate + arena {:.2} s", starts.len(), t2.elapsed().as_secs_f64());
                }
                if std::env::var("OFFPLAN_RESOLVE").is_ok() {
                    let model = super::StageModel::new(&p, &hw);
                    let starts = crate::plan::warm_candidates(&model, Bytes::gib(budget));
                    let limits = super::milp::SolveLimits { time_limit: limit, mip_rel_gap: 0.01, threads: 2 };
                    let first = super::solve(&model, Bytes::gib(budget), &starts, &limits).unwrap();
                    let again = super::solve(&model, Bytes::gib(budget), &[first.decisions.clone()], &limits).unwrap();
                    for d in &first.decisions.layers {
                        eprint!("{:?}/{:?} ", d.input, d.inner);
                    }
                    eprintln!();
                    for (o, c) in &first.decisions.owners {
                        eprint!("{o}:{:?}/{:?} ", c.weights, c.optimizer);
                    }
                    eprintln!();
                    let r = again.report;
                    eprintln!(
                        "  re-solved from its own answer: objective {:.6} bound {:.6} gap {:.3}% solve {:.2} s",
                        r.objective.0,
                        r.bound.0,
                        r.gap * 100.0,
                        r.solve_seconds
                    );
                }
            }
        }
    }
}
