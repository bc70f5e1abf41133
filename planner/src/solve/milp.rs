//! The MILP: one binary per (group, choice), one continuous time per stage.
//!
//! minimise   sum_s T_s
//! subject to sum_c x[g][c] = 1                                   every group g
//!            base(p) + sum_{g,c} x[g][c] * live[g][c](p) <= cap   every slot p that can bind
//!            T_s >= each lane expression of model.rs (compute, two copy rows, two host rows)
//!
//! Stage times are written exactly per stage instead (the rows above remain only for a stage
//! with more than `HULL_LIMIT` combinations): the groups with a term in stage s, each with its
//! choices split into classes (choices that put the same terms into s), give one weight z[s][c]
//! per combination c of classes, with
//!            sum_{c: class of g in c = q} z[s][c] = sum_{k in q} x[g][k]   every g in s, class q
//!            T_s >= sum_c z[s][c] * stage_time(c)
//! For 0/1 choices one z is 1 and this is the stage time; the relaxation is the convex hull of
//! each stage's max(compute, copies, host) (the rows above let it hide a fraction of every copy
//! behind the compute: a root bound about 6% low on gpt3-2.7b at 24 GiB, 3% with the hull).
//!
//! Structure used for speed: each group's smallest curve goes into the constant (coefficients
//! are what a choice adds over the group's leanest choice); times are in milliseconds and memory
//! in MiB so the rows are well scaled.

use super::problem::{local_hull, GroupChoices, LocalHull, Problem, MS};
use crate::model::{Rates, StageTerms};
use good_lp::{highs, variable, Expression, ProblemVariables, SolverModel, Variable};
use highs::{HighsModelStatus, HighsSolutionStatus};
use std::time::Instant;

/// Most class combinations a stage may have for its exact local formulation.
const HULL_LIMIT: usize = 4096;

/// A lane expression with each group's coefficients shifted: (constant, (group, choice, what
/// the choice adds over the group's smallest)).
type Shifted = (f64, Vec<(usize, usize, f64)>);

/// What one branch and bound gave (times in ms).
pub struct BranchAndBound {
    pub picks: Vec<usize>,
    pub bound: f64,
    /// Whether it proved its answer within the gap (or reached the objective target).
    pub finished: bool,
}

/// How a branch and bound runs: its time, its gap, a target that ends it at the first plan at
/// or below it (ms; the gap is then proved by the caller's bound), its threads.
pub struct MilpLimits {
    pub time_limit: f64,
    pub gap: f64,
    pub target: Option<f64>,
    pub threads: u32,
}

/// Why HiGHS gave no answer.
#[derive(Debug)]
pub enum MilpError {
    /// No combination of choices keeps every slot within the capacity.
    Infeasible,
    /// HiGHS stopped without a plan, or failed.
    NoSolution(String),
}

/// The MILP of the module's top comment with HiGHS, from `warm` (picks).
pub fn branch_and_bound(problem: &Problem, warm: Option<&[usize]>, limits: &MilpLimits) -> Result<BranchAndBound, MilpError> {
    let t0 = Instant::now();
    let (groups, mem_rows, terms) = (&problem.groups, &problem.rows, &problem.stages);
    let n_stages = problem.model.n_stages();
    let r = *problem.rates();
    let mut vars = ProblemVariables::new();
    let x: Vec<Vec<Variable>> = groups.iter().map(|g| (0..g.len()).map(|_| vars.add(variable().binary())).collect()).collect();
    let t: Vec<Variable> = (0..n_stages).map(|_| vars.add(variable().min(0.0))).collect();
    // Column indices, in the order the variables were added (HiGHS columns follow it).
    let mut col = 0usize;
    let xi: Vec<Vec<usize>> = x
        .iter()
        .map(|xs| {
            xs.iter()
                .map(|_| {
                    col += 1;
                    col - 1
                })
                .collect()
        })
        .collect();
    let ti: Vec<usize> = (0..n_stages).map(|s| col + s).collect();
    let objective: Expression = t.iter().copied().sum();
    let mut rows: Vec<good_lp::Constraint> = Vec::new();

    for xs in &x {
        let e: Expression = xs.iter().copied().sum();
        rows.push(e.eq(1.0));
    }

    // Memory rows, a hair below the capacity so that rounding in the solver never lets a plan over it.
    for row in mem_rows {
        let mut e = Expression::from(0.0);
        for (gi, k, c) in &row.terms {
            e += x[*gi][*k] * *c;
        }
        rows.push(e.leq(row.rhs - 1e-6));
    }
    // Stages whose time gets the exact local formulation (see `local_hull`).
    let hulls: Vec<Option<LocalHull>> = terms.iter().map(|stage| local_hull(groups, stage, &r, HULL_LIMIT)).collect();
    let mut z: Vec<Vec<Variable>> = Vec::with_capacity(n_stages);
    let mut zi: Vec<Vec<usize>> = Vec::with_capacity(n_stages);
    let mut zcol = col + n_stages;
    for h in &hulls {
        let n = h.as_ref().map_or(0, |h| h.times.len());
        z.push((0..n).map(|_| vars.add(variable().min(0.0))).collect());
        zi.push(
            (0..n)
                .map(|_| {
                    zcol += 1;
                    zcol - 1
                })
                .collect(),
        );
    }
    for (s, h) in hulls.iter().enumerate() {
        let Some(h) = h else { continue };
        // T_s >= sum_c z_c time_c, and the combinations' marginals are the groups' choices.
        let mut e = Expression::from(0.0);
        for (c, tc) in h.times.iter().enumerate() {
            e += z[s][c] * (tc * MS);
        }
        rows.push((t[s] - e).geq(0.0));
        for (j, (gi, classes)) in h.groups.iter().enumerate() {
            let n_classes = classes.iter().copied().max().map_or(0, |m| m + 1);
            let stride: usize = h.groups[j + 1..].iter().map(|(_, cl)| cl.iter().copied().max().map_or(0, |m| m + 1)).product();
            for q in 0..n_classes {
                if j > 0 && q + 1 == n_classes {
                    continue; // implied by the other classes and the first group's rows
                }
                let mut e = Expression::from(0.0);
                for (c, zc) in z[s].iter().enumerate() {
                    if (c / stride) % n_classes == q {
                        e += *zc;
                    }
                }
                for (k, cl) in classes.iter().enumerate() {
                    if *cl == q {
                        e -= x[*gi][k];
                    }
                }
                rows.push(e.eq(0.0));
            }
        }
    }
    for (s, stage) in terms.iter().enumerate() {
        if hulls[s].is_some() {
            continue;
        }
        let (c0, vs) = (&stage.constant, &stage.terms);
        let lin = |f: &dyn Fn(&StageTerms) -> f64| -> Expression {
            let mut e = Expression::from(f(c0) * MS);
            for (gi, k, st) in vs {
                let v = f(st);
                if v != 0.0 {
                    e += x[*gi][*k] * (v * MS);
                }
            }
            e
        };
        let any = |f: &dyn Fn(&StageTerms) -> f64| f(c0) != 0.0 || vs.iter().any(|(_, _, q)| f(q) != 0.0);
        let copies = any(&|q| q.h2d) || any(&|q| q.d2h);
        let host = any(&|q| q.host) || any(&|q| q.after_host);
        // One row per lane expression (model.rs): compute always, the copy lanes with copies or
        // host work, the host ones with host work.
        let wanted = |i: usize| if Rates::HOST_LANES[i] { host } else { i == 0 || copies || host };
        for i in (0..5).filter(|&i| wanted(i)) {
            rows.push((t[s] - lin(&|q| r.lanes(q)[i])).geq(0.0));
        }
        // Disjunctive cuts: the relaxation may overlap a fraction of a copy with all of a
        // stage's compute; no 0/1 choice can. With each group's coefficients shifted so its
        // smallest is 0 (exact, one choice per group), A(x) = A0 + sum a x and T >= A, T >= B >= B0:
        //   T >= m + sum (a - (m - A0))^+ x,  m = max(A0, B0),
        // valid because a chosen set with any positive term gives at most A(x), and none gives m.
        let fns: [&dyn Fn(&StageTerms) -> f64; 5] =
            [&|q| r.lanes(q)[0], &|q| r.lanes(q)[1], &|q| r.lanes(q)[2], &|q| r.lanes(q)[3], &|q| r.lanes(q)[4]];
        let shifted: Vec<Shifted> = fns.iter().map(|f| shift(groups, c0, vs, *f)).collect();
        let floor_t = shifted.iter().map(|(c, _)| *c).fold(0.0, f64::max);
        for (a0, a) in &shifted {
            {
                let m = floor_t;
                if m <= *a0 {
                    continue; // no stronger than T >= A
                }
                let mut e = Expression::from(m * MS);
                let mut any_term = false;
                for (gi, k, v) in a {
                    let c = v - (m - a0);
                    if c > 0.0 {
                        e += x[*gi][*k] * (c * MS);
                        any_term = true;
                    }
                }
                if any_term {
                    rows.push((t[s] - e).geq(0.0));
                }
            }
        }
    }

    let mut milp = highs(vars.minimise(objective.clone()));
    for row in rows {
        milp.add_constraint(row);
    }
    let mut m = milp.into_inner();
    tracing::debug!("solve: HiGHS model built in {:.2} s", t0.elapsed().as_secs_f64());
    m.set_option("output_flag", false);
    m.set_option("time_limit", (limits.time_limit - t0.elapsed().as_secs_f64()).max(0.01));
    m.set_option("mip_rel_gap", limits.gap);
    // Measured on the benchmark problems: presolve finds little to remove from the exact
    // stage rows and its restarts cost more than they save (2.7b 15-17 s -> 10-12 s, 175b
    // 11 s -> 7.7 s).
    m.set_option("presolve", "off");
    if let Some(t) = limits.target {
        m.set_option("objective_target", t);
    }
    m.set_option("threads", limits.threads.max(1) as i32);
    let n_cols = zcol;
    if let Some(w) = warm {
        let mut cols = vec![0.0; n_cols];
        for (gi, k) in w.iter().enumerate() {
            cols[xi[gi][*k]] = 1.0;
        }
        for (s, h) in hulls.iter().enumerate() {
            if let Some(h) = h {
                let mut c = 0;
                for (gi, classes) in &h.groups {
                    let n_classes = classes.iter().copied().max().map_or(0, |m| m + 1);
                    c = c * n_classes + classes[w[*gi]];
                }
                cols[zi[s][c]] = 1.0;
            }
        }
        for (s, stage) in terms.iter().enumerate() {
            let mut q = stage.constant.clone();
            for (gi, k, st) in &stage.terms {
                if w[*gi] == *k {
                    q = &q + st;
                }
            }
            cols[ti[s]] = r.stage_time(&q) * MS;
        }
        let _ = m.try_set_solution(Some(&cols), None, None, None);
    }
    let solved = m.try_solve().map_err(|e| MilpError::NoSolution(format!("HiGHS: {e:?}")))?;
    tracing::debug!("solve: HiGHS done in {:.2} s", t0.elapsed().as_secs_f64());
    let status = solved.status();
    if matches!(status, HighsModelStatus::Infeasible | HighsModelStatus::UnboundedOrInfeasible) {
        return Err(MilpError::Infeasible);
    }
    let cols = solved.get_solution().columns().to_vec();
    if cols.len() != n_cols || solved.primal_solution_status() != HighsSolutionStatus::Feasible {
        return Err(MilpError::NoSolution(format!("HiGHS found no solution (status {status:?})")));
    }
    let finished = matches!(status, HighsModelStatus::Optimal | HighsModelStatus::ObjectiveTarget);
    let picks: Vec<usize> = groups
        .iter()
        .enumerate()
        .map(|(gi, g)| (0..g.len()).max_by(|a, b| cols[xi[gi][*a]].total_cmp(&cols[xi[gi][*b]])).unwrap_or(0))
        .collect();
    let objective = solved.objective_value();
    let bound = solved.double_info_value(c"mip_dual_bound").unwrap_or(f64::NAN);
    let bound = if bound.is_finite() { bound.min(objective) } else { objective * (1.0 - solved.mip_gap().clamp(0.0, 1.0)) };
    Ok(BranchAndBound { picks, bound, finished })
}

/// A stage's linear term with each group's coefficients shifted so its smallest choice adds 0
/// (the shift goes into the constant; exact because every group takes one choice).
fn shift(groups: &[GroupChoices], c0: &StageTerms, vs: &[(usize, usize, StageTerms)], f: &dyn Fn(&StageTerms) -> f64) -> Shifted {
    let mut per_group: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
    for (gi, k, q) in vs {
        per_group.entry(*gi).or_insert_with(|| vec![0.0; groups[*gi].len()])[*k] += f(q);
    }
    let mut a0 = f(c0);
    let mut terms = Vec::new();
    for (gi, coefs) in per_group {
        let lo = coefs.iter().copied().fold(f64::INFINITY, f64::min);
        a0 += lo;
        for (k, c) in coefs.into_iter().enumerate() {
            if c - lo > 0.0 {
                terms.push((gi, k, c - lo));
            }
        }
    }
    (a0, terms)
}
