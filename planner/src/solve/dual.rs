//! A Lagrangian lower bound on the stage model's optimum, proved without branch and bound.
//!
//! The memory rows are moved into the objective with multipliers lambda_p >= 0:
//!   L(lambda) = min over one choice per group of  sum_s T_s(x) + sum_p lambda_p (mem_p(x) - room_p)
//! For every lambda >= 0 and every plan x that fits (mem_p(x) <= room_p), the penalty is <= 0, so
//! L(lambda) <= the best step time of a plan that fits: L(lambda) is a valid lower bound.
//! Without the memory rows the problem is a sum of stage times, each a function of the few groups
//! with a term in that stage (a chain along the layers: a layer's backward stage touches four
//! neighbouring owners and two layers' activations), plus a per-choice penalty. It is minimised
//! exactly by variable elimination (a dynamic program over the groups in a small-width order):
//! each step takes the tables (factors) that mention one group, minimises their sum plus that
//! group's penalty over its choices for every combination of the other groups they mention, and
//! leaves the result as a new table. Tables are indexed by classes (choices that put the same
//! terms into the stages of that table), so a layer's six owner choices often count as two.
//! The multipliers come from column generation (`column_generation`), with branching on a large
//! item when needed (`branch_and_price`); the best L seen is the bound. A minimiser that
//! happens to fit is a plan: its step time is an upper bound too. The floating-point sums of the
//! minimisation are exact to ~1e-12 relative; the bound reported is shaved by 1e-9 relative to
//! stay on the safe side. Tested against exhaustive search on a small model (`tests`).

use super::milp::{eval_picks, local_hull, GroupChoices};
use super::model::{Contribution, StageModel, StageTerms};
use good_lp::{highs, Expression, ProblemVariables};
use std::time::Instant;

/// A table over the classes of a few groups (first group most significant).
#[derive(Clone, Debug)]
struct Factor {
    scope: Vec<usize>,
    /// Per scope group: its choices' class in this table.
    parts: Vec<Vec<usize>>,
    radix: Vec<usize>,
    table: Vec<f64>,
}

impl Factor {
    fn strides(&self) -> Vec<usize> {
        let mut s = vec![1; self.radix.len()];
        for i in (0..self.radix.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * self.radix[i + 1];
        }
        s
    }
}

/// One elimination: the group, the factors it consumes and the shape of the factor it leaves.
#[derive(Clone, Debug)]
struct Step {
    group: usize,
    inputs: Vec<usize>,
    scope: Vec<usize>,
    parts: Vec<Vec<usize>>,
    radix: Vec<usize>,
    /// Per scope group, a choice of each of its classes.
    reps: Vec<Vec<usize>>,
}

/// The structure of the minimisation: stage factors, a constant, and the elimination steps.
pub struct StageDp {
    factors: Vec<Factor>,
    constant: f64,
    steps: Vec<Step>,
    n_choices: Vec<usize>,
}

/// Joins partitions of one group's choices (each `raw -> class`) into their common refinement.
fn join(parts: &[&Vec<usize>], n: usize) -> (Vec<usize>, Vec<usize>) {
    let mut keys: Vec<Vec<usize>> = Vec::new();
    let mut out = Vec::with_capacity(n);
    let mut reps = Vec::new();
    for k in 0..n {
        let key: Vec<usize> = parts.iter().map(|p| p[k]).collect();
        match keys.iter().position(|x| *x == key) {
            Some(c) => out.push(c),
            None => {
                out.push(keys.len());
                reps.push(k);
                keys.push(key);
            }
        }
    }
    (out, reps)
}

impl StageDp {
    /// Builds the stage factors (times in `scale` units) and an elimination order. None when a
    /// table would exceed `limit` entries.
    pub fn new(
        groups: &[GroupChoices],
        stage_terms: &[(StageTerms, Vec<(usize, usize, StageTerms)>)],
        r: &super::model::Rates,
        scale: f64,
        limit: usize,
    ) -> Option<StageDp> {
        let mut factors = Vec::new();
        let mut constant = 0.0;
        for (c0, vs) in stage_terms {
            match local_hull(groups, c0, vs, r, limit) {
                Some(h) => {
                    let scope: Vec<usize> = h.groups.iter().map(|(g, _)| *g).collect();
                    let parts: Vec<Vec<usize>> = h.groups.iter().map(|(_, c)| c.clone()).collect();
                    let radix: Vec<usize> = parts.iter().map(|p| p.iter().copied().max().map_or(1, |m| m + 1)).collect();
                    factors.push(Factor { scope, parts, radix, table: h.times.iter().map(|t| t * scale).collect() });
                }
                None => {
                    // Either no group changes this stage (a constant) or too many combinations.
                    let mut per: std::collections::BTreeMap<usize, Vec<StageTerms>> = Default::default();
                    for (gi, k, q) in vs {
                        let e = per.entry(*gi).or_insert_with(|| vec![StageTerms::default(); groups[*gi].len()]);
                        e[*k] = super::milp::add_terms(&e[*k], q);
                    }
                    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * (1.0 + x.abs().max(y.abs()));
                    let same = |a: &StageTerms, b: &StageTerms| {
                        close(a.compute, b.compute)
                            && close(a.h2d, b.h2d)
                            && close(a.d2h, b.d2h)
                            && close(a.feed, b.feed)
                            && close(a.host, b.host)
                            && close(a.after_host, b.after_host)
                    };
                    if per.values().any(|ts| ts.iter().any(|t| !same(t, &ts[0]))) {
                        return None;
                    }
                    let mut t = c0.clone();
                    for ts in per.values() {
                        t = super::milp::add_terms(&t, &ts[0]);
                    }
                    constant += r.stage_time(&t) * scale;
                }
            }
        }
        let n_choices: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        // Greedy order: the group whose elimination makes the smallest table.
        let mut active: Vec<Option<(Vec<usize>, Vec<Vec<usize>>)>> =
            factors.iter().map(|f| Some((f.scope.clone(), f.parts.clone()))).collect();
        let mut left: Vec<bool> = vec![true; groups.len()];
        let mut steps = Vec::new();
        for _ in 0..groups.len() {
            let mut best: Option<(usize, usize)> = None;
            for g in (0..groups.len()).filter(|g| left[*g]) {
                let cost = Self::shape(&active, g, &n_choices).map(|s| s.radix.iter().product::<usize>() * n_choices[g]);
                if let Some(c) = cost {
                    if best.is_none_or(|(bc, _)| c < bc) {
                        best = Some((c, g));
                    }
                }
            }
            let (c, g) = best?;
            if c > limit {
                return None;
            }
            let step = Self::shape(&active, g, &n_choices).unwrap();
            for i in &step.inputs {
                active[*i] = None;
            }
            active.push(Some((step.scope.clone(), step.parts.clone())));
            left[g] = false;
            steps.push(step);
        }
        Some(StageDp { factors, constant, steps, n_choices })
    }

    fn shape(active: &[Option<(Vec<usize>, Vec<Vec<usize>>)>], g: usize, n_choices: &[usize]) -> Option<Step> {
        let inputs: Vec<usize> =
            active.iter().enumerate().filter(|(_, f)| f.as_ref().is_some_and(|(s, _)| s.contains(&g))).map(|(i, _)| i).collect();
        let mut scope: Vec<usize> =
            inputs.iter().flat_map(|i| active[*i].as_ref().unwrap().0.iter().copied()).filter(|h| *h != g).collect();
        scope.sort();
        scope.dedup();
        let mut parts = Vec::new();
        let mut radix = Vec::new();
        let mut reps = Vec::new();
        for h in &scope {
            let ps: Vec<&Vec<usize>> = inputs
                .iter()
                .filter_map(|i| {
                    let (s, p) = active[*i].as_ref().unwrap();
                    s.iter().position(|x| x == h).map(|j| &p[j])
                })
                .collect();
            let (p, r) = join(&ps, n_choices[*h]);
            radix.push(r.len());
            parts.push(p);
            reps.push(r);
        }
        let size = radix.iter().try_fold(1usize, |a, r| a.checked_mul(*r))?;
        let _ = size;
        Some(Step { group: g, inputs, scope, parts, radix, reps })
    }

    /// min over one choice per group of the stage times plus `unary[g][k]`; returns the value
    /// and a minimiser.
    pub fn minimise(&self, unary: &[Vec<f64>]) -> (f64, Vec<usize>) {
        let n_stage = self.factors.len();
        // Tables made by the eliminations, after the stage factors.
        let mut made: Vec<Factor> = Vec::with_capacity(self.steps.len());
        let mut total = self.constant;
        let mut argmins: Vec<Vec<u8>> = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let g = step.group;
            let nk = self.n_choices[g];
            let size: usize = step.radix.iter().product();
            let ins: Vec<&Factor> =
                step.inputs.iter().map(|i| if *i < n_stage { &self.factors[*i] } else { &made[*i - n_stage] }).collect();
            // Per input: the offset each choice of g adds, and per new scope position and class
            // the offset that position adds (0 where the input does not mention the group).
            let mut gk: Vec<usize> = Vec::with_capacity(ins.len() * nk);
            let mut offs: Vec<Vec<Vec<usize>>> = Vec::with_capacity(ins.len());
            for f in &ins {
                let st = f.strides();
                let jg = f.scope.iter().position(|x| *x == g).unwrap();
                gk.extend((0..nk).map(|k| st[jg] * f.parts[jg][k]));
                offs.push(
                    step.scope
                        .iter()
                        .enumerate()
                        .map(|(j, h)| match f.scope.iter().position(|x| x == h) {
                            Some(q) => step.reps[j].iter().map(|rep| st[q] * f.parts[q][*rep]).collect(),
                            None => vec![0; step.radix[j]],
                        })
                        .collect(),
                );
            }
            let mut table = vec![0.0; size];
            let mut arg = vec![0u8; size];
            let mut digits = vec![0usize; step.scope.len()];
            let mut base = vec![0usize; ins.len()];
            let un = &unary[g];
            for e in 0..size {
                let mut best = f64::INFINITY;
                let mut bk = 0;
                for k in 0..nk {
                    let mut v = un[k];
                    for (fi, f) in ins.iter().enumerate() {
                        v += f.table[base[fi] + gk[fi * nk + k]];
                    }
                    if v < best {
                        best = v;
                        bk = k;
                    }
                }
                table[e] = best;
                arg[e] = bk as u8;
                // Next combination (last digit fastest), the inputs' offsets kept up to date.
                for j in (0..digits.len()).rev() {
                    let old = digits[j];
                    digits[j] += 1;
                    if digits[j] == step.radix[j] {
                        digits[j] = 0;
                    }
                    for (fi, o) in offs.iter().enumerate() {
                        base[fi] = base[fi] + o[j][digits[j]] - o[j][old];
                    }
                    if digits[j] != 0 {
                        break;
                    }
                }
            }
            argmins.push(arg);
            if step.scope.is_empty() {
                total += table[0];
                made.push(Factor { scope: Vec::new(), parts: Vec::new(), radix: Vec::new(), table: vec![0.0] });
            } else {
                made.push(Factor { scope: step.scope.clone(), parts: step.parts.clone(), radix: step.radix.clone(), table });
            }
        }
        // Back-substitution in reverse elimination order.
        let mut pick = vec![usize::MAX; self.n_choices.len()];
        for (step, arg) in self.steps.iter().zip(&argmins).rev() {
            let mut e = 0;
            for (j, h) in step.scope.iter().enumerate() {
                e = e * step.radix[j] + step.parts[j][pick[*h]];
            }
            pick[step.group] = arg[e] as usize;
        }
        (total, pick)
    }
}

/// A memory row: sum of coefficients of the chosen choices <= rhs (same units as the MILP).
#[derive(Clone, Debug)]
pub struct MemRow {
    pub terms: Vec<(usize, usize, f64)>,
    pub rhs: f64,
}

pub struct DualResult {
    /// Best lower bound (ms), shaved for rounding.
    pub bound: f64,
    /// Best plan found that fits, with its step time (ms).
    pub best: Option<(f64, Vec<usize>)>,
    pub iterations: usize,
    /// The master's mixture: each group's weight on each choice.
    pub xbar: Vec<Vec<f64>>,
    /// Every plan the master had.
    pub columns: Vec<Vec<usize>>,
    /// Branch and price: nodes solved.
    pub nodes: usize,
}

/// The Lagrangian dual by column generation (Dantzig-Wolfe): a master LP mixes known plans
/// (columns) under the memory rows; its row duals price the next plan, found by the stage DP.
/// Every priced multiplier vector gives a valid bound L(lambda) (see the top of the file); the
/// master's value is an upper bound on the best such bound, so the two meeting ends the search.
/// Prices are smoothed (Wentges: halfway between the best multipliers and the master's).
/// (Single-row rounding cuts of the memory rows, tried here, cut off none of the benchmark
/// problems' mixtures; branching on the large items is what closes the gap.)
#[allow(clippy::too_many_arguments)]
pub fn column_generation(
    model: &StageModel,
    fixed: &Contribution,
    groups: &[GroupChoices],
    dp: &StageDp,
    rows: &[MemRow],
    allowed: Option<&[Vec<bool>]>,
    cap: u64,
    starts: &[Vec<usize>],
    upper: f64,
    gap: f64,
    threads: u32,
    effort: &mut super::milp::Effort,
    trace: bool,
    mut round: Option<&mut Rounding>,
) -> DualResult {
    const MS: f64 = 1e3;
    let t0 = Instant::now();
    // (The artificial column has no picks and no memory.)
    let value_of = |row: &MemRow, pick: &[usize]| -> f64 {
        if pick.is_empty() {
            0.0
        } else {
            row.terms.iter().filter(|(gi, k, _)| pick[*gi] == *k).map(|t| t.2).sum()
        }
    };
    // Columns: time (ms), each row's value, picks.
    let mut cols: Vec<(f64, Vec<f64>, Vec<usize>)> = Vec::new();
    let mut ub = upper;
    let mut best_plan: Option<(f64, Vec<usize>)> = None;
    let ok = |pick: &[usize]| allowed.is_none_or(|a| pick.iter().enumerate().all(|(gi, k)| a[gi][*k]));
    // An artificial column (no memory, a prohibitive time) keeps the master feasible.
    let big = if upper.is_finite() { upper * 100.0 } else { 1e12 };
    cols.push((big, vec![0.0; rows.len()], Vec::new()));
    for s in starts.iter().filter(|s| ok(s)) {
        let (t, _) = eval_picks(model, fixed, groups, s);
        cols.push((t * MS, rows.iter().map(|r| value_of(r, s)).collect(), s.clone()));
    }
    let mut best_bound = f64::NEG_INFINITY;
    let mut it = 0;
    // The master, kept between iterations (HiGHS restarts from its basis when a column comes).
    // HiGHS rows: the convexity row, then each memory row (or cut) once the master's mixture
    // breaks it (a row left out has multiplier 0, so every L stays a valid bound).
    let mut m = highs(ProblemVariables::new().minimise(Expression::from(0.0))).into_inner();
    m.set_option("output_flag", false);
    m.set_option("threads", threads.max(1) as i32);
    // Each solve restarts from the last basis; presolve would throw it away.
    m.set_option("presolve", "off");
    let first = m.add_col(cols[0].0, 0.0.., Vec::new());
    let mut col_h = vec![first];
    let conv = m.add_row(1.0..=1.0, [(first, 1.0)]);
    let mut hrow = vec![None; rows.len()];
    let mut n_hrows = 1usize;
    macro_rules! add {
        ($m:expr, $c:expr) => {
            $m.add_col(
                $c.0,
                0.0..,
                hrow.iter()
                    .zip(&$c.1)
                    .filter_map(|(h, v): (&Option<(_, usize)>, &f64)| h.filter(|_| *v != 0.0).map(|(r, _)| (r, *v)))
                    .chain(std::iter::once((conv, 1.0))),
            )
        };
    }
    for c in &cols[1..] {
        col_h.push(add!(m, c));
    }
    let mut center: Option<Vec<f64>> = None;
    let mut last_xbar: Vec<Vec<f64>> = Vec::new();
    let (mut t_master, mut t_dp) = (0.0, 0.0);
    let mut last_round = 0;
    let mut round_every = ROUND_EVERY;
    loop {
        if !effort.spend() {
            break;
        }
        it += 1;
        let tm = Instant::now();
        let solved = match m.try_solve() {
            Ok(s) => s,
            Err(_) => break,
        };
        t_master += tm.elapsed().as_secs_f64();
        let master = solved.objective_value();
        let sol = solved.get_solution();
        let duals = sol.dual_rows().to_vec();
        let mu: Vec<f64> = sol.columns().to_vec();
        last_xbar = groups.iter().map(|g| vec![0.0; g.len()]).collect();
        for (i, w) in mu.iter().enumerate() {
            if *w > 0.0 && i > 0 {
                for (gi, k) in cols[i].2.iter().enumerate() {
                    last_xbar[gi][*k] += w;
                }
            }
        }
        m = solved.into();
        // Rows the mixture breaks join the master, which is solved again before pricing.
        // (the most broken few at a time: most rows never bind, and a dense master is slow).
        let mut broken: Vec<(f64, usize)> = (0..rows.len())
            .filter(|p| hrow[*p].is_none())
            .map(|p| (mu.iter().zip(&cols).map(|(w, c)| w * c.1[p]).sum::<f64>() - rows[p].rhs, p))
            .filter(|(v, p)| *v > 1e-9 * rows[*p].rhs.abs().max(1.0))
            .collect();
        broken.sort_by(|a, b| b.0.total_cmp(&a.0));
        broken.truncate(ROWS_PER_ROUND);
        let mut joined = 0;
        for (_, p) in broken {
            {
                let entries: Vec<_> = cols.iter().zip(&col_h).filter(|(c, _)| c.1[p] != 0.0).map(|(c, h)| (*h, c.1[p])).collect();
                hrow[p] = Some((m.add_row(..=rows[p].rhs, entries), n_hrows));
                n_hrows += 1;
                joined += 1;
            }
        }
        if joined > 0 {
            it -= 1;
            continue;
        }
        let lambda_master: Vec<f64> = (0..rows.len()).map(|p| hrow[p].map_or(0.0, |(_, i)| (-duals[i]).max(0.0))).collect();
        if let Some(c) = center.as_mut() {
            c.resize(rows.len(), 0.0);
        }
        let mut priced = 0;
        let mut added = false;
        for smooth in [0.5, 0.0] {
            let lambda: Vec<f64> = match &center {
                Some(c) if smooth > 0.0 => c.iter().zip(&lambda_master).map(|(a, b)| smooth * a + (1.0 - smooth) * b).collect(),
                _ if smooth > 0.0 => continue,
                _ => lambda_master.clone(),
            };
            priced += 1;
            let mut unary: Vec<Vec<f64>> = match allowed {
                Some(a) => a.iter().map(|x| x.iter().map(|ok| if *ok { 0.0 } else { FORBIDDEN }).collect()).collect(),
                None => groups.iter().map(|g| vec![0.0; g.len()]).collect(),
            };
            let mut constant = 0.0;
            for (row, l) in rows.iter().zip(&lambda) {
                if *l == 0.0 {
                    continue;
                }
                constant -= l * row.rhs;
                for (gi, k, c) in &row.terms {
                    unary[*gi][*k] += l * c;
                }
            }
            let tdp = Instant::now();
            let (v, pick) = dp.minimise(&unary);
            t_dp += tdp.elapsed().as_secs_f64();
            let value = v + constant;
            if !ok(&pick) {
                break; // nothing allowed at all (cannot happen with one allowed choice per group)
            }
            if value > best_bound {
                best_bound = value;
                center = Some(lambda.clone());
            }
            let (t, peak) = eval_picks(model, fixed, groups, &pick);
            if peak <= cap && t * MS < ub {
                ub = t * MS;
                best_plan = Some((t * MS, pick.clone()));
            }
            if !cols.iter().any(|c| c.2 == pick) {
                let c = (t * MS, rows.iter().map(|r| value_of(r, &pick)).collect::<Vec<f64>>(), pick);
                col_h.push(add!(m, c));
                cols.push(c);
                added = true;
                break;
            }
        }
        if trace && (it <= 3 || it % 20 == 0) {
            eprintln!(
                "dual: it {it} at {:.2} s: master {master:.4} best {best_bound:.4} ub {ub:.4} gap {:.3}% cols {} rows {} priced {priced}",
                t0.elapsed().as_secs_f64(),
                (ub - best_bound) / ub * 100.0,
                cols.len(),
                n_hrows - 1
            );
        }
        if (ub - best_bound) <= gap * ub {
            break;
        }
        let converged = master - best_bound <= 1e-6 * master.abs() || !added;
        // The dual side is nearly done and the best plan is what keeps the gap open: round.
        if let Some(f) = round.as_mut() {
            if (converged || it >= last_round + round_every) && master - best_bound < 0.3 * (ub - best_bound) {
                last_round = it;
                let mut better = false;
                if let Some((t, p)) = f(&last_xbar) {
                    if trace {
                        eprintln!("dual: it {it} at {:.2} s: rounded mixture {t:.4} ms", t0.elapsed().as_secs_f64());
                    }
                    if t < ub {
                        ub = t;
                        best_plan = Some((t, p));
                        better = true;
                    }
                }
                // Rounding again soon only pays while it finds better plans.
                round_every = if better { ROUND_EVERY } else { round_every * 2 };
                if (ub - best_bound) <= gap * ub {
                    break;
                }
            }
        }
        if !converged {
            continue;
        }
        break;
    }
    if trace {
        eprintln!("dual: column generation ended at {:.2} s after {it} iterations: bound {best_bound:.4} ub {ub:.4} gap {:.3}%; master {t_master:.2} s, dp {t_dp:.2} s", t0.elapsed().as_secs_f64(), (ub - best_bound) / ub * 100.0);
    }
    let bound = best_bound - 1e-9 * best_bound.abs();
    let mut lambda = center.unwrap_or_default();
    lambda.resize(rows.len(), 0.0);
    let columns: Vec<Vec<usize>> = cols.into_iter().skip(1).map(|c| c.2).collect();
    DualResult { bound, best: best_plan, iterations: it, xbar: last_xbar, columns, nodes: 1 }
}

/// A primal heuristic on the master's mixture: a plan that fits and its time (ms), if found.
pub type Rounding<'a> = dyn FnMut(&[Vec<f64>]) -> Option<(f64, Vec<usize>)> + 'a;
/// Column generation iterations between two roundings of the mixture.
const ROUND_EVERY: usize = 20;
/// Most memory rows joining the master at once.
const ROWS_PER_ROUND: usize = 8;
/// Cost of a choice a branch forbids.
const FORBIDDEN: f64 = 1e15;

/// Branch and price over a few groups: when the Lagrangian bound alone leaves too wide a gap,
/// the feasible set is split by the choice of one group (the mixture's fractional group with
/// the largest memory coefficient, a large item such as the embedding table) and each part gets
/// its own column generation with that choice fixed (other choices forbidden in the DP). The
/// bound is the least over the open parts: each part's L is a lower bound on the plans in it,
/// and the parts cover every plan.
#[allow(clippy::too_many_arguments)]
pub fn branch_and_price(
    model: &StageModel,
    fixed: &Contribution,
    groups: &[GroupChoices],
    dp: &StageDp,
    rows: &[MemRow],
    cap: u64,
    starts: &[Vec<usize>],
    upper: f64,
    gap: f64,
    threads: u32,
    mut effort: super::milp::Effort,
    trace: bool,
    round: &mut Rounding,
) -> DualResult {
    let t0 = Instant::now();
    let mut root =
        column_generation(model, fixed, groups, dp, rows, None, cap, starts, upper, gap, threads, &mut effort, trace, Some(round));
    let mut ub = upper;
    let mut best = root.best.clone();
    if let Some((t, _)) = &best {
        ub = ub.min(*t);
    }
    if ub - root.bound <= gap * ub || root.xbar.is_empty() {
        return root;
    }
    // Each group's largest memory coefficient.
    let mut size = vec![0.0f64; groups.len()];
    for row in rows {
        for (gi, _, c) in &row.terms {
            size[*gi] = size[*gi].max(*c);
        }
    }
    struct Node {
        bound: f64,
        allowed: Vec<Vec<bool>>,
        xbar: Vec<Vec<f64>>,
        columns: Vec<Vec<usize>>,
    }
    let root_xbar = root.xbar.clone();
    let mut open = vec![Node {
        bound: root.bound,
        allowed: groups.iter().map(|g| vec![true; g.len()]).collect(),
        xbar: std::mem::take(&mut root.xbar),
        columns: std::mem::take(&mut root.columns),
    }];
    let mut closed_min = f64::INFINITY;
    let mut nodes = 1;
    let mut iterations = root.iterations;
    while !effort.spent() && nodes < MAX_NODES {
        let lb = open.iter().map(|n| n.bound).fold(closed_min, f64::min);
        if ub - lb <= gap * ub || open.is_empty() {
            break;
        }
        let i = (0..open.len()).min_by(|a, b| open[*a].bound.total_cmp(&open[*b].bound)).unwrap();
        let node = open.swap_remove(i);
        let frac = |gi: usize| node.xbar.get(gi).is_some_and(|x| x.iter().any(|v| *v > 1e-6 && *v < 1.0 - 1e-6));
        let Some(g) = (0..groups.len()).filter(|gi| frac(*gi)).max_by(|a, b| size[*a].total_cmp(&size[*b])) else {
            // The mixture is one plan (or the search stopped early): nothing to split on.
            closed_min = closed_min.min(node.bound);
            continue;
        };
        for k in (0..groups[g].len()).filter(|k| node.allowed[g][*k]) {
            let mut allowed = node.allowed.clone();
            for (j, a) in allowed[g].iter_mut().enumerate() {
                *a = j == k;
            }
            let mut seeds: Vec<Vec<usize>> = node.columns.iter().filter(|c| c[g] == k).cloned().collect();
            if let Some((_, p)) = &best {
                seeds.push(p.clone());
            }
            let r = column_generation(
                model,
                fixed,
                groups,
                dp,
                rows,
                Some(&allowed),
                cap,
                &seeds,
                ub,
                gap,
                threads,
                &mut effort,
                false,
                Some(&mut *round),
            );
            nodes += 1;
            iterations += r.iterations;
            if let Some((t, p)) = r.best {
                if t < ub {
                    ub = t;
                    best = Some((t, p));
                }
            }
            if trace {
                eprintln!(
                    "dual: node {nodes} ({:?} = {k}) at {:.2} s: bound {:.4} ub {ub:.4}",
                    groups[g].group,
                    t0.elapsed().as_secs_f64(),
                    r.bound.max(node.bound)
                );
            }
            // A part's bound is at least its parent's (it holds fewer plans); a part the deadline
            // left unpriced keeps the parent's.
            let bound = r.bound.max(node.bound);
            if ub - bound <= gap * ub {
                closed_min = closed_min.min(bound);
            } else {
                open.push(Node { bound, allowed, xbar: r.xbar, columns: r.columns });
            }
        }
    }
    let bound = open.iter().map(|n| n.bound).fold(closed_min, f64::min);
    if trace {
        eprintln!(
            "dual: branch and price ended at {:.2} s: {nodes} nodes, {} open, bound {bound:.4} ub {ub:.4} gap {:.3}%",
            t0.elapsed().as_secs_f64(),
            open.len(),
            (ub - bound) / ub * 100.0
        );
    }
    DualResult { bound, best, iterations, xbar: root_xbar, columns: Vec::new(), nodes }
}

/// Most nodes of a branch and price.
const MAX_NODES: usize = 32;

#[cfg(test)]
mod tests {
    use super::super::milp::{enumerate, eval_picks, memory_rows, stage_terms};
    use super::*;
    use models::{Bytes, GptConfig, HardwareProfile, Program};
    use std::path::Path;

    fn small() -> (Program, HardwareProfile) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut cfg = GptConfig::load(&root.join("models/configs/gpt2-tiny.ron")).unwrap();
        cfg.output_chunks = 1;
        cfg.tied_embeddings = false;
        let mut hw = HardwareProfile::load(&root.join("models/hardware/h100-sxm.ron")).unwrap();
        // A slow link so that placement matters for time.
        hw.h2d.0 /= 1000.0;
        hw.d2h.0 /= 1000.0;
        hw.h2d_duplex.0 /= 1000.0;
        hw.d2h_duplex.0 /= 1000.0;
        (Program::build(&cfg), hw)
    }

    /// Every combination of choices, with its time (ms) and peak.
    fn all_plans(model: &StageModel, fixed: &Contribution, groups: &[GroupChoices]) -> Vec<(Vec<usize>, f64, u64)> {
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
                let (t, peak) = eval_picks(model, fixed, groups, &pick);
                (pick, t * 1e3, peak)
            })
            .collect()
    }

    #[test]
    fn stage_dp_is_the_exact_minimum() {
        let (p, hw) = small();
        let model = StageModel::new(&p, &hw);
        let fixed = model.fixed();
        let groups = enumerate(&model);
        let terms = stage_terms(&model, &fixed, &groups);
        let dp = StageDp::new(&groups, &terms, &model.rates, 1e3, 1 << 16).unwrap();
        let plans = all_plans(&model, &fixed, &groups);
        let mut seed = 12345u64;
        for _ in 0..5 {
            let unary: Vec<Vec<f64>> = groups
                .iter()
                .map(|g| {
                    (0..g.len())
                        .map(|_| {
                            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                            (seed >> 40) as f64 / (1u64 << 24) as f64 * 50.0
                        })
                        .collect()
                })
                .collect();
            let cost = |pick: &[usize], t: f64| t + pick.iter().enumerate().map(|(g, k)| unary[g][*k]).sum::<f64>();
            let brute = plans.iter().map(|(pick, t, _)| cost(pick, *t)).fold(f64::INFINITY, f64::min);
            let (v, pick) = dp.minimise(&unary);
            let at = cost(&pick, plans.iter().find(|x| x.0 == pick).unwrap().1);
            assert!((v - brute).abs() <= 1e-9 * brute, "dp {v} vs exhaustive {brute}");
            assert!((at - brute).abs() <= 1e-9 * brute, "dp's minimiser costs {at} vs {brute}");
        }
    }

    #[test]
    fn lagrangian_bound_is_below_the_optimum() {
        let (p, hw) = small();
        let model = StageModel::new(&p, &hw);
        let fixed = model.fixed();
        let groups = enumerate(&model);
        let terms = stage_terms(&model, &fixed, &groups);
        let dp = StageDp::new(&groups, &terms, &model.rates, 1e3, 1 << 16).unwrap();
        let plans = all_plans(&model, &fixed, &groups);
        let mut peaks: Vec<u64> = plans.iter().map(|x| x.2).collect();
        peaks.sort();
        let mut checked = 0;
        for q in [0.02, 0.1, 0.3, 0.6] {
            let budget = hw.budget_for(Bytes(peaks[(peaks.len() as f64 * q) as usize]));
            let cap = model.capacity(budget);
            let Some(opt) = plans.iter().filter(|x| x.2 <= cap).map(|x| x.1).min_by(f64::total_cmp) else { continue };
            let rows = memory_rows(&model, budget, &fixed, &groups).unwrap();
            let start = plans.iter().filter(|x| x.2 <= cap).max_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0.clone();
            let upper = eval_picks(&model, &fixed, &groups, &start).0 * 1e3;
            let effort = super::super::milp::Effort::new(u64::MAX, Instant::now() + std::time::Duration::from_secs(20));
            let mut none = |_: &[Vec<f64>]| None;
            let r = branch_and_price(&model, &fixed, &groups, &dp, &rows, cap, &[start], upper, 0.0, 1, effort, false, &mut none);
            eprintln!(
                "q {q}: {} plans, {} rows, optimum {opt:.4} ms, bound {:.4}, best {:?}",
                plans.len(),
                rows.len(),
                r.bound,
                r.best.as_ref().map(|b| b.0)
            );
            assert!(r.bound <= opt * (1.0 + 1e-9), "q {q}: bound {} above the optimum {opt}", r.bound);
            if let Some((t, pick)) = r.best {
                let (t2, peak) = eval_picks(&model, &fixed, &groups, &pick);
                assert!(peak <= cap && (t2 * 1e3 - t).abs() <= 1e-9 * t && t >= opt * (1.0 - 1e-9));
            }
            checked += 1;
        }
        assert!(checked >= 3);
    }
}
