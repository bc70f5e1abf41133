//! Choosing the decisions: one choice per group (owner, layer activations) minimising the stage
//! model's step time within the budget, with a proved gap.
//!
//! How a solve goes:
//! 1. starting points (heuristics, periodic patterns) improved by local search (`local`): a
//!    first plan;
//! 2. the Lagrangian bound of `dual`: the memory rows priced, the rest minimised exactly by the
//!    stage DP (`dp`), the prices found by column generation, the feasible set split on a large
//!    item (the embedding table) when the bound alone leaves too wide a gap; the master's
//!    mixture of plans rounded along the layers (`local::dither`), made to fit
//!    (`local::repair`) and improved gives the plans (less often while roundings find nothing
//!    better: [`RoundingBackoff`]). When the best plan is within the gap of
//!    that bound, done: the reported bound is the Lagrangian one (valid for any multipliers);
//! 3. otherwise, in a build with the `highs` feature, HiGHS's branch and bound on the MILP
//!    (`milp`), from the best plan, stopping at the first plan the Lagrangian bound proves
//!    (objective target) or at its own gap; the bound reported is the larger of the two. The
//!    default build is pure Rust: the branch and price of step 2 takes the whole time limit and
//!    its work budget, and reports the gap it proved.
//!
//! Each phase counts its work (`effort`) rather than timing it, so a plan is the same on every
//! machine; the time limit is a safety stop.

mod dp;
mod dual;
mod effort;
mod local;
mod master;
#[cfg(feature = "highs")]
mod milp;
mod options;
mod problem;
#[cfg(test)]
mod testing;

pub use options::SolveOptions;

use crate::decisions::Decisions;
use crate::model::StageModel;
use dual::Target;
use effort::Effort;
use models::schedule::{SolveStatus, SolverReport};
use models::{Bytes, Seconds};
use problem::{Problem, MS};
use std::time::{Duration, Instant};

/// Move evaluations of local search on the starting points, shared between them (about 0.05 s
/// on this project's 2-core machine), and after each rounding of the master's mixture (0.1 s).
const LOCAL_SEARCH_WORK: u64 = 150_000;
const ROUND_WORK: u64 = 300_000;
/// Work of the Lagrangian bound and its branch and price: the stage DP's table entries and the
/// master LP's arithmetic (`StageDp::work`, `MasterSolution::work`); 1.5-2 s on this project's
/// 2-core machine for the small configs, whose DP is fastest per unit.
const DUAL_WORK: u64 = 300_000_000;
/// Moves that make a rounded mixture fit, per group.
const REPAIR_MOVES_PER_GROUP: usize = 8;
/// Largest table of the stage DP.
const DP_TABLE_LIMIT: usize = 1 << 16;

/// Most doublings of the roundings passed over after fruitless ones (one in 64 at most).
const ROUND_BACKOFF: u32 = 3;

/// When to round a master's mixture: every time while roundings find better plans, less often
/// after each that does not.
#[derive(Default)]
struct RoundingBackoff {
    /// Best plan (ms) a rounding found so far.
    best: Option<f64>,
    /// Fruitless roundings since the last better one (capped at `ROUND_BACKOFF`).
    fruitless: u32,
    /// Requests to pass over before the next rounding.
    skip: u64,
}

impl RoundingBackoff {
    /// Whether this request rounds.
    fn take_turn(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// What the rounding found (ms), if anything.
    fn found(&mut self, t: Option<f64>) {
        match t {
            Some(t) if self.best.is_none_or(|b| t < b) => {
                self.best = Some(t);
                self.fruitless = 0;
                self.skip = 0;
            }
            _ => {
                self.fruitless = (self.fruitless + 1).min(ROUND_BACKOFF);
                self.skip = (1u64 << self.fruitless) - 1;
            }
        }
    }
}

/// The decisions and how they were found.
pub struct SolveOutcome {
    pub decisions: Decisions,
    pub report: SolverReport,
}

/// Why a solve gave no decisions.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// No combination of choices keeps every slot within the capacity.
    #[error("{0}")]
    Infeasible(String),
    /// The search stopped before it had a plan that fits.
    #[error("no plan found within the time limit")]
    NoPlan,
    /// The MILP back end failed.
    #[cfg(feature = "highs")]
    #[error("{0}")]
    Backend(String),
}

/// The decisions minimising the stage model's step time within `budget`. `starts` must fit;
/// each is improved by local search and the best is the first incumbent.
pub fn solve(model: &StageModel, budget: Bytes, starts: &[Decisions], opts: &SolveOptions) -> Result<SolveOutcome, SolveError> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(opts.time_limit().0);
    let host_cap = model.hw.host_pinnable.map(|b| b.0);
    let problem = Problem::new(model, model.capacity(budget), host_cap).map_err(SolveError::Infeasible)?;
    let groups = &problem.groups;
    tracing::debug!(
        "solve: {} groups, {} choices, {} slots ({} can bind), {} memory rows; built at {:.2} s",
        groups.len(),
        groups.iter().map(|g| g.len()).sum::<usize>(),
        problem.fixed.live.len(),
        problem.binding_slots.len(),
        problem.rows.len(),
        t0.elapsed().as_secs_f64()
    );
    let target = Target { gap: opts.gap() };
    let mut starts: Vec<Vec<usize>> = starts.iter().map(|d| problem.picks_of(d)).collect();
    starts.extend(local::patterns(&problem, &starts));
    let share = opts.scaled(LOCAL_SEARCH_WORK) / starts.len().max(1) as u64;
    let warm: Option<Vec<usize>> = starts
        .iter()
        .filter(|w| problem.feasible(w))
        .map(|w| local::improve(&problem, w, Effort::new(share, deadline)))
        .map(|p| (problem.eval(&p).0, p))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, p)| p);
    tracing::debug!("solve: warm start at {:.2} s", t0.elapsed().as_secs_f64());
    // Best plan known (ms, picks) and best bound proved (ms), with how it was proved.
    let mut best: Option<(f64, Vec<usize>)> = warm.map(|p| (problem.eval(&p).0 * MS, p));
    let mut bound = f64::NEG_INFINITY;
    let mut how: Vec<String> = Vec::new();
    // A Lagrangian bound by dynamic programming over the stages (see `dual`): when it proves the
    // best plan known within the gap, no branch and bound is needed.
    let dp = dp::StageDp::new(groups, &problem.stages, problem.rates(), MS, DP_TABLE_LIMIT);
    tracing::debug!("solve: stage DP built: {} (work {})", dp.is_some(), dp.as_ref().map_or(0, |d| d.work()));
    if let Some(dp) = dp {
        let upper = best.as_ref().map_or(f64::INFINITY, |b| b.0);
        // With a MILP back end, leave it time; alone, the search may take it all.
        let share = if cfg!(feature = "highs") { 0.5 } else { 1.0 };
        let dual_effort = Effort::new(opts.scaled(DUAL_WORK), t0 + Duration::from_secs_f64(opts.time_limit().0 * share));
        // Plans from the master's mixture: rounded along the layers, made to fit, improved.
        // Rounding is most of a branch and price's time (each node's mixture once at least), and
        // most roundings deep in the tree find nothing better: after each that finds nothing
        // new, the next 2^k requests are passed over (k up to ROUND_BACKOFF), and a better plan
        // starts it over.
        let mut rounding = RoundingBackoff::default();
        let mut round = |xbar: &[Vec<f64>]| -> Option<(f64, Vec<usize>)> {
            if xbar.is_empty() || !rounding.take_turn() {
                return None;
            }
            let repair = Effort::new((groups.len() * REPAIR_MOVES_PER_GROUP) as u64, deadline);
            let p = local::repair(&problem, &local::dither(groups, xbar), repair);
            let p = p.map(|p| local::improve(&problem, &p, Effort::new(opts.scaled(ROUND_WORK), deadline)));
            let found = p.filter(|p| problem.feasible(p)).map(|p| (problem.eval(&p).0 * MS, p));
            rounding.found(found.as_ref().map(|f| f.0));
            found
        };
        let res = dual::branch_and_price(&problem, &dp, &starts, upper, &target, dual_effort, &mut round);
        tracing::debug!("solve: dual spent {} work units in {:.3} s", res.work, t0.elapsed().as_secs_f64());
        tracing::debug!(
            "solve: dual done at {:.2} s: bound {:.4} ms after {} iterations",
            t0.elapsed().as_secs_f64(),
            res.bound,
            res.iterations
        );
        if res.bound > bound {
            bound = res.bound;
            how = vec![format!("Lagrangian bound of the memory rows by stage DP ({} columns, {} nodes)", res.iterations, res.nodes)];
        }
        if let Some((t, p)) = res.best {
            if best.as_ref().is_none_or(|b| t < b.0) {
                best = Some((t, p));
            }
        }
    }
    // Whether a MILP back end proved its answer within the gap by its own bound.
    #[cfg(not(feature = "highs"))]
    let finished = false;
    #[cfg(feature = "highs")]
    let mut finished = false;
    #[cfg(feature = "highs")]
    if !best.as_ref().is_some_and(|b| target.met(b.0, bound)) {
        let (picks, hbound, done) = highs_after(&problem, best.as_ref(), bound, opts, t0)?;
        finished = done;
        let t = problem.eval(&picks).0;
        if problem.feasible(&picks) && best.as_ref().is_none_or(|b| t * MS < b.0) {
            best = Some((t * MS, picks));
        }
        if hbound > bound {
            bound = hbound;
            how = vec!["HiGHS branch and bound".into()];
        } else {
            how.push("HiGHS branch and bound".into());
        }
    }
    let (objective, picks) = best.ok_or(SolveError::NoPlan)?;
    let objective = objective / MS;
    let bound = bound.is_finite().then(|| (bound / MS).min(objective));
    let gap = bound.map(|b| if objective > 0.0 { ((objective - b) / objective).max(0.0) } else { 0.0 });
    let proved = gap.is_some_and(|g| g <= opts.gap());
    let status = if proved || finished {
        SolveStatus::Proved
    } else if Instant::now() >= deadline {
        SolveStatus::TimeLimit
    } else {
        SolveStatus::WorkLimit
    };
    let binaries: usize = groups.iter().map(|g| g.len()).sum();
    Ok(SolveOutcome {
        decisions: problem.decisions(&picks),
        report: SolverReport {
            solver: format!(
                "stage model: {binaries} choices, {} stage times, {} memory rows; bound: {}",
                model.n_stages(),
                problem.rows.len(),
                how.join(", ")
            ),
            objective: Seconds(objective),
            bound: bound.map(Seconds),
            gap,
            solve_seconds: t0.elapsed().as_secs_f64(),
            status,
        },
    })
}

/// HiGHS's branch and bound after the Lagrangian bound: its plan, its bound (ms) and whether it
/// proved its answer.
#[cfg(feature = "highs")]
fn highs_after(
    problem: &Problem,
    best: Option<&(f64, Vec<usize>)>,
    bound: f64,
    opts: &SolveOptions,
    t0: Instant,
) -> Result<(Vec<usize>, f64, bool), SolveError> {
    // Any plan at or below this time is proved within the gap by the bound so far.
    let objective_target = bound.is_finite().then(|| bound / (1.0 - opts.gap()) * (1.0 - 1e-9));
    let limits = milp::MilpLimits {
        time_limit: opts.time_limit().0 - t0.elapsed().as_secs_f64(),
        gap: opts.gap(),
        target: objective_target,
        threads: opts.threads(),
    };
    let r = milp::branch_and_bound(problem, best.map(|b| b.1.as_slice()), &limits).map_err(|e| match e {
        milp::MilpError::Infeasible => SolveError::Infeasible("no combination of placements keeps every slot within the budget".into()),
        milp::MilpError::NoSolution(m) => SolveError::Backend(m),
    })?;
    Ok((r.picks, r.bound, r.finished))
}

#[cfg(test)]
mod rounding_tests {
    use super::RoundingBackoff;

    #[test]
    fn rounding_backs_off_after_fruitless_roundings_and_starts_over_on_a_better_plan() {
        let mut r = RoundingBackoff::default();
        assert!(r.take_turn());
        r.found(Some(10.0));
        // A better plan: the next request rounds too.
        assert!(r.take_turn());
        r.found(Some(11.0));
        // Fruitless once: one request passed over; twice: three.
        assert!(!r.take_turn());
        assert!(r.take_turn());
        r.found(None);
        for _ in 0..3 {
            assert!(!r.take_turn());
        }
        assert!(r.take_turn());
        r.found(Some(9.0));
        assert!(r.take_turn());
        // At most one in 2^ROUND_BACKOFF requests rounds.
        for _ in 0..20 {
            r.found(None);
        }
        assert_eq!(r.skip, (1 << super::ROUND_BACKOFF) - 1);
    }
}
