//! A Lagrangian lower bound on the stage model's optimum, proved without a MILP.
//!
//! The memory rows are moved into the objective with multipliers lambda_p >= 0:
//!   L(lambda) = min over one choice per group of  sum_s T_s(x) + sum_p lambda_p (mem_p(x) - room_p)
//! For every lambda >= 0 and every plan x that fits (mem_p(x) <= room_p), the penalty is <= 0, so
//! L(lambda) <= the best step time of a plan that fits: L(lambda) is a valid lower bound. The
//! minimum over the choices is exact (the stage DP, `dp`). The multipliers come from column
//! generation (`column_generation`), with branching on a large item when needed
//! (`branch_and_price`); the best L seen is the bound. A minimiser that happens to fit is a
//! plan: its step time is an upper bound too. The floating-point sums of the minimisation are
//! exact to ~1e-12 relative; the bound reported is shaved by 1e-9 relative to stay on the safe
//! side. Tested against exhaustive search on a small model (`tests`).

use super::dp::StageDp;
use super::effort::Effort;
use super::master::Master;
use super::problem::{MemRow, Problem, MS};
use crate::decisions::Group;
use models::inventory::Owner;
use std::time::Instant;

/// What a search is asked for: stop once the best plan is within `gap` (relative) of the bound.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub gap: f64,
}

impl Target {
    /// Whether `ub` (ms) is within the gap of `bound`.
    pub fn met(&self, ub: f64, bound: f64) -> bool {
        ub - bound <= self.gap * ub
    }
}

/// One part of the search: the choices it allows (None: all), the rows its branches added
/// (beside the problem's memory rows), plans to seed the master with, and the best time known
/// (ms) so far.
pub struct Node<'s> {
    pub allowed: Option<&'s [Vec<bool>]>,
    pub rows: &'s [MemRow],
    pub starts: &'s [Vec<usize>],
    pub upper: f64,
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
    /// Work units spent.
    pub work: u64,
}

/// A primal heuristic on the master's mixture: a plan that fits and its time (ms), if found.
pub type Rounding<'a> = dyn FnMut(&[Vec<f64>]) -> Option<(f64, Vec<usize>)> + 'a;
/// Column generation iterations between two roundings of the mixture.
const ROUND_EVERY: usize = 20;
/// Most memory rows joining the master at once.
const ROWS_PER_ROUND: usize = 8;
/// Cost of a choice a branch forbids.
const FORBIDDEN: f64 = 1e15;
/// Most nodes of a branch and price.
const MAX_NODES: usize = 4000;

/// The Lagrangian dual by column generation (Dantzig-Wolfe): a master LP mixes known plans
/// (columns) under the memory rows; its row duals price the next plan, found by the stage DP.
/// Every priced multiplier vector gives a valid bound L(lambda) (see the top of the file); the
/// master's value is an upper bound on the best such bound, so the two meeting ends the search.
/// Prices are smoothed (Wentges: halfway between the best multipliers and the master's).
/// (Single-row rounding cuts of the memory rows, tried here, cut off none of the benchmark
/// problems' mixtures; branching on the large items is what closes the gap.)
pub fn column_generation(
    problem: &Problem,
    dp: &StageDp,
    node: &Node,
    target: &Target,
    effort: &mut Effort,
    mut round: Option<&mut Rounding>,
) -> DualResult {
    let t0 = Instant::now();
    let (groups, allowed) = (&problem.groups, node.allowed);
    let rows: Vec<&MemRow> = problem.rows.iter().chain(node.rows).collect();
    // Columns: time (ms), each row's value, picks. (The artificial column has no picks and no
    // memory.)
    let mut cols: Vec<(f64, Vec<f64>, Vec<usize>)> = Vec::new();
    let mut ub = node.upper;
    let mut best_plan: Option<(f64, Vec<usize>)> = None;
    let ok = |pick: &[usize]| allowed.is_none_or(|a| allows(a, pick));
    // An artificial column (no memory, a prohibitive time) keeps the master feasible.
    let big = if node.upper.is_finite() { node.upper * 100.0 } else { 1e12 };
    cols.push((big, vec![0.0; rows.len()], Vec::new()));
    for s in node.starts.iter().filter(|s| ok(s)) {
        let (t, _) = problem.eval(s);
        cols.push((t * MS, rows.iter().map(|r| Problem::row_value(r, s)).collect(), s.clone()));
    }
    let mut best_bound = f64::NEG_INFINITY;
    let mut it = 0;
    // The master, kept between iterations: the convexity row, then each memory row once the
    // master's mixture breaks it (a row left out has multiplier 0, so every L stays a valid
    // bound).
    let mut m = Master::new(cols[0].0);
    // Per memory row: its index among the master's rows once it has joined.
    let mut joined_as: Vec<Option<usize>> = vec![None; rows.len()];
    let entries = |joined_as: &[Option<usize>], values: &[f64]| -> Vec<(usize, f64)> {
        joined_as.iter().zip(values).filter_map(|(h, v)| h.filter(|_| *v != 0.0).map(|r| (r, *v))).collect()
    };
    for c in &cols[1..] {
        m.add_column(c.0, entries(&joined_as, &c.1));
    }
    let mut center: Option<Vec<f64>> = None;
    let mut last_xbar: Vec<Vec<f64>> = Vec::new();
    let (mut t_master, mut t_dp, mut t_round) = (0.0, 0.0, 0.0);
    let mut last_round = 0;
    let mut round_every = ROUND_EVERY;
    loop {
        if effort.spent() {
            break;
        }
        it += 1;
        let tm = Instant::now();
        let Some(solved) = m.solve() else { break };
        effort.spend_units(solved.work);
        t_master += tm.elapsed().as_secs_f64();
        let master = solved.objective;
        let (duals, mu) = (solved.duals, solved.weights);
        last_xbar = groups.iter().map(|g| vec![0.0; g.len()]).collect();
        for (i, w) in mu.iter().enumerate() {
            if *w > 0.0 && i > 0 {
                for (gi, k) in cols[i].2.iter().enumerate() {
                    last_xbar[gi][*k] += w;
                }
            }
        }
        // Rows the mixture breaks join the master, which is solved again before pricing.
        // (the most broken few at a time: most rows never bind, and a dense master is slow).
        let mut broken: Vec<(f64, usize)> = (0..rows.len())
            .filter(|p| joined_as[*p].is_none())
            .map(|p| (mu.iter().zip(&cols).map(|(w, c)| w * c.1[p]).sum::<f64>() - rows[p].rhs, p))
            .filter(|(v, p)| *v > 1e-9 * rows[*p].rhs.abs().max(1.0))
            .collect();
        broken.sort_by(|a, b| b.0.total_cmp(&a.0));
        broken.truncate(ROWS_PER_ROUND);
        let joined = broken.len();
        for (_, p) in broken {
            let in_row: Vec<(usize, f64)> = cols.iter().enumerate().filter(|(_, c)| c.1[p] != 0.0).map(|(j, c)| (j, c.1[p])).collect();
            joined_as[p] = Some(m.add_row(rows[p].rhs, in_row));
        }
        if joined > 0 {
            it -= 1;
            continue;
        }
        let lambda_master: Vec<f64> = (0..rows.len()).map(|p| joined_as[p].map_or(0.0, |i| (-duals[i]).max(0.0))).collect();
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
            effort.spend_units(dp.work());
            t_dp += tdp.elapsed().as_secs_f64();
            let value = v + constant;
            if !ok(&pick) {
                break; // nothing allowed at all (cannot happen with one allowed choice per group)
            }
            if value > best_bound {
                best_bound = value;
                center = Some(lambda.clone());
            }
            let t = problem.eval(&pick).0;
            if problem.feasible(&pick) && t * MS < ub {
                ub = t * MS;
                best_plan = Some((t * MS, pick.clone()));
            }
            if !cols.iter().any(|c| c.2 == pick) {
                let c = (t * MS, rows.iter().map(|r| Problem::row_value(r, &pick)).collect::<Vec<f64>>(), pick);
                m.add_column(c.0, entries(&joined_as, &c.1));
                cols.push(c);
                added = true;
                break;
            }
        }
        if it <= 3 || it % 20 == 0 {
            tracing::trace!(
                "dual: it {it} at {:.2} s: master {master:.4} best {best_bound:.4} ub {ub:.4} gap {:.3}% cols {} priced {priced}",
                t0.elapsed().as_secs_f64(),
                (ub - best_bound) / ub * 100.0,
                cols.len(),
            );
        }
        if target.met(ub, best_bound) {
            break;
        }
        let converged = master - best_bound <= 1e-6 * master.abs() || !added;
        // The dual side is nearly done and the best plan is what keeps the gap open: round.
        if let Some(f) = round.as_mut() {
            if (converged || it >= last_round + round_every) && master - best_bound < 0.3 * (ub - best_bound) {
                last_round = it;
                let mut better = false;
                let tr = Instant::now();
                let rounded = f(&last_xbar);
                t_round += tr.elapsed().as_secs_f64();
                if let Some((t, p)) = rounded {
                    tracing::trace!("dual: it {it} at {:.2} s: rounded mixture {t:.4} ms", t0.elapsed().as_secs_f64());
                    if t < ub {
                        ub = t;
                        best_plan = Some((t, p));
                        better = true;
                    }
                }
                // Rounding again soon only pays while it finds better plans.
                round_every = if better { ROUND_EVERY } else { round_every * 2 };
                if target.met(ub, best_bound) {
                    break;
                }
            }
        }
        if !converged {
            continue;
        }
        break;
    }
    tracing::debug!(
        "dual: column generation ended at {:.2} s after {it} iterations: bound {best_bound:.4} ub {ub:.4} gap {:.3}%; master {t_master:.2} s, dp {t_dp:.2} s, rounding {t_round:.2} s",
        t0.elapsed().as_secs_f64(),
        (ub - best_bound) / ub * 100.0
    );
    let bound = best_bound - 1e-9 * best_bound.abs();
    let columns: Vec<Vec<usize>> = cols.into_iter().skip(1).map(|c| c.2).collect();
    DualResult { bound, best: best_plan, iterations: it, xbar: last_xbar, columns, nodes: 1, work: 0 }
}

/// Branch and price over a few groups: when the Lagrangian bound alone leaves too wide a gap,
/// the feasible set is split by the choice of one group (the mixture's fractional group with
/// the largest memory coefficient, a large item such as the embedding table) and each part gets
/// its own column generation with that choice fixed (other choices forbidden in the DP). The
/// bound is the least over the open parts: each part's L is a lower bound on the plans in it,
/// and the parts cover every plan.
pub fn branch_and_price(
    problem: &Problem,
    dp: &StageDp,
    starts: &[Vec<usize>],
    upper: f64,
    target: &Target,
    mut effort: Effort,
    round: &mut Rounding,
) -> DualResult {
    let t0 = Instant::now();
    let groups = &problem.groups;
    let budget = effort.left();
    let root_node = Node { allowed: None, rows: &[], starts, upper };
    let mut root = column_generation(problem, dp, &root_node, target, &mut effort, Some(round));
    let mut ub = upper;
    let mut best = root.best.clone();
    if let Some((t, _)) = &best {
        ub = ub.min(*t);
    }
    if target.met(ub, root.bound) || root.xbar.is_empty() {
        root.work = budget - effort.left();
        return root;
    }
    // Each group's largest memory coefficient.
    let mut size = vec![0.0f64; groups.len()];
    for row in &problem.rows {
        for (gi, _, c) in &row.terms {
            size[*gi] = size[*gi].max(*c);
        }
    }
    let root_xbar = root.xbar.clone();
    let mut open = vec![Part {
        bound: root.bound,
        allowed: groups.iter().map(|g| vec![true; g.len()]).collect(),
        rows: Vec::new(),
        xbar: std::mem::take(&mut root.xbar),
        columns: std::mem::take(&mut root.columns),
    }];
    let classes = alike_classes(problem);
    let mut closed_min = f64::INFINITY;
    let mut nodes = 1;
    let mut iterations = root.iterations;
    while !effort.spent() && nodes < MAX_NODES {
        let lb = open.iter().map(|n| n.bound).fold(closed_min, f64::min);
        if target.met(ub, lb) || open.is_empty() {
            break;
        }
        let i = (0..open.len()).min_by(|a, b| open[*a].bound.total_cmp(&open[*b].bound)).unwrap();
        let part = open.swap_remove(i);
        let Some(branch) = choose_branch(&part, &classes, &size) else {
            // The mixture is one plan (or the search stopped early): nothing to split on.
            closed_min = closed_min.min(part.bound);
            continue;
        };
        for (label, allowed, rows) in branch.children(&part, groups) {
            let mut seeds: Vec<Vec<usize>> = part.columns.iter().filter(|c| admits(&allowed, &rows, c)).cloned().collect();
            if let Some((_, p)) = &best {
                seeds.push(p.clone());
            }
            let node = Node { allowed: Some(&allowed), rows: &rows, starts: &seeds, upper: ub };
            let r = column_generation(problem, dp, &node, target, &mut effort, Some(&mut *round));
            nodes += 1;
            iterations += r.iterations;
            if let Some((t, p)) = r.best {
                if t < ub {
                    ub = t;
                    best = Some((t, p));
                }
            }
            tracing::trace!(
                "dual: node {nodes} ({label}) at {:.2} s: bound {:.4} ub {ub:.4}",
                t0.elapsed().as_secs_f64(),
                r.bound.max(part.bound)
            );
            // A part's bound is at least its parent's (it holds fewer plans); a part the deadline
            // left unpriced keeps the parent's.
            let bound = r.bound.max(part.bound);
            if target.met(ub, bound) {
                closed_min = closed_min.min(bound);
            } else {
                open.push(Part { bound, allowed, rows, xbar: r.xbar, columns: r.columns });
            }
        }
    }
    let bound = open.iter().map(|n| n.bound).fold(closed_min, f64::min);
    tracing::debug!(
        "dual: branch and price ended at {:.2} s: {nodes} nodes, {} open, bound {bound:.4} ub {ub:.4} gap {:.3}%",
        t0.elapsed().as_secs_f64(),
        open.len(),
        (ub - bound) / ub * 100.0
    );
    DualResult { bound, best, iterations, xbar: root_xbar, columns: Vec::new(), nodes, work: budget - effort.left() }
}

/// An open part of a branch and price.
struct Part {
    bound: f64,
    allowed: Vec<Vec<bool>>,
    /// Rows its branches added (counts of a choice among alike groups).
    rows: Vec<MemRow>,
    xbar: Vec<Vec<f64>>,
    columns: Vec<Vec<usize>>,
}

/// How a part is split.
enum Branch {
    /// One group's choice fixed, a part per allowed choice.
    Group(usize),
    /// Among alike groups (`members`), how many take choice `k`: at most `floor(count)` in one
    /// part, at least `ceil(count)` in the other.
    Count { members: Vec<usize>, k: usize, count: f64 },
}

impl Branch {
    /// Each child part: a label, its allowed choices and its rows.
    fn children(&self, part: &Part, groups: &[super::problem::GroupChoices]) -> Vec<(String, Vec<Vec<bool>>, Vec<MemRow>)> {
        match self {
            Branch::Group(g) => (0..groups[*g].len())
                .filter(|k| part.allowed[*g][*k])
                .map(|k| {
                    let mut allowed = part.allowed.clone();
                    for (j, a) in allowed[*g].iter_mut().enumerate() {
                        *a = j == k;
                    }
                    (format!("{:?} = {k}", groups[*g].group), allowed, part.rows.clone())
                })
                .collect(),
            Branch::Count { members, k, count } => {
                let (lo, hi) = (count.floor(), count.ceil());
                // At most lo take k; at least hi take k, written as at most |members| - hi take
                // another choice (rows stay `<=` with a non-negative right-hand side, which the
                // master's artificial column satisfies).
                let at_most = MemRow { terms: members.iter().map(|g| (*g, *k, 1.0)).collect(), rhs: lo };
                let others = members.iter().flat_map(|g| (0..groups[*g].len()).filter(move |j| j != k).map(move |j| (*g, j, 1.0)));
                let at_least = MemRow { terms: others.collect(), rhs: members.len() as f64 - hi };
                [(format!("count of {k} <= {lo}"), at_most), (format!("count of {k} >= {hi}"), at_least)]
                    .into_iter()
                    .map(|(label, row)| {
                        let mut rows = part.rows.clone();
                        rows.push(row);
                        (label, part.allowed.clone(), rows)
                    })
                    .collect()
            }
        }
    }
}

/// Whether every choice of a plan is allowed.
fn allows(allowed: &[Vec<bool>], pick: &[usize]) -> bool {
    pick.iter().enumerate().all(|(g, k)| allowed[g][*k])
}

/// Whether a plan lies in a part: every choice allowed and every branch row kept.
fn admits(allowed: &[Vec<bool>], rows: &[MemRow], pick: &[usize]) -> bool {
    allows(allowed, pick) && rows.iter().all(|r| Problem::row_value(r, pick) <= r.rhs + 1e-9)
}

/// Groups that are alike, whose choices the mixture tends to average: the transformer layers'
/// owners, and the layers' activations. Each class has the same choices in every member.
fn alike_classes(problem: &Problem) -> Vec<Vec<usize>> {
    let groups = &problem.groups;
    let of = |keep: &dyn Fn(&Group) -> bool| -> Vec<usize> { (0..groups.len()).filter(|g| keep(&groups[*g].group)).collect() };
    let classes = [of(&|g| matches!(g, Group::Owner(Owner::Layer(_)))), of(&|g| matches!(g, Group::Acts(_)))];
    classes.into_iter().filter(|c| c.len() > 1 && c.iter().all(|g| groups[*g].len() == groups[c[0]].len())).collect()
}

/// Where to split a part: the count of one choice among alike groups that is furthest from a
/// whole number, weighted by the groups' memory; or, where a single group outweighs it (a large
/// item such as the embedding table) or every count is whole, the fractional group with the
/// largest memory coefficient. None: the mixture is one plan.
fn choose_branch(part: &Part, classes: &[Vec<usize>], size: &[f64]) -> Option<Branch> {
    let xbar = &part.xbar;
    let fractional = |x: f64| (x - x.floor()).min(x.ceil() - x);
    let frac_group = |g: usize| xbar.get(g).is_some_and(|x| x.iter().any(|v| *v > 1e-6 && *v < 1.0 - 1e-6));
    let in_class = |g: usize| classes.iter().any(|c| c.contains(&g));
    let count = classes
        .iter()
        .flat_map(|c| {
            let n = xbar.get(c[0]).map_or(0, |x| x.len());
            (0..n).map(move |k| (c, k, c.iter().map(|g| xbar[*g][k]).sum::<f64>()))
        })
        .filter(|(_, _, n)| fractional(*n) > 1e-3)
        .map(|(c, k, n)| (fractional(n) * c.iter().map(|g| size[*g]).fold(0.0, f64::max), c, k, n))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let single = (0..size.len())
        .filter(|g| frac_group(*g) && !in_class(*g))
        .map(|g| ((1.0 - xbar[g].iter().copied().fold(0.0, f64::max)) * size[g], g))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match (count, single) {
        (Some(c), s) if s.is_none_or(|s| c.0 >= s.0) => Some(Branch::Count { members: c.1.clone(), k: c.2, count: c.3 }),
        (_, Some((_, g))) => Some(Branch::Group(g)),
        _ => (0..size.len()).filter(|g| frac_group(*g)).max_by(|a, b| size[*a].total_cmp(&size[*b])).map(Branch::Group),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{all_plans, small};
    use super::*;
    use crate::model::StageModel;
    use models::Bytes;

    #[test]
    fn lagrangian_bound_is_below_the_optimum() {
        let (p, hw) = small();
        let model = StageModel::new(&p, &hw);
        let everything = Problem::new(&model, u64::MAX, None).unwrap();
        let plans = all_plans(&everything);
        let mut peaks: Vec<u64> = plans.iter().map(|x| x.2).collect();
        peaks.sort();
        let mut checked = 0;
        for q in [0.02, 0.1, 0.3, 0.6] {
            let budget = hw.budget_for(Bytes(peaks[(peaks.len() as f64 * q) as usize]));
            let cap = model.capacity(budget);
            let Some(opt) = plans.iter().filter(|x| x.2 <= cap).map(|x| x.1).min_by(f64::total_cmp) else { continue };
            let problem = Problem::new(&model, cap, None).unwrap();
            let dp = StageDp::new(&problem.groups, &problem.stages, &model.rates, MS, 1 << 16).unwrap();
            let start = plans.iter().filter(|x| x.2 <= cap).max_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0.clone();
            let upper = problem.eval(&start).0 * MS;
            let effort = Effort::new(u64::MAX, Instant::now() + std::time::Duration::from_secs(20));
            let mut none = |_: &[Vec<f64>]| None;
            let target = Target { gap: 0.0 };
            let r = branch_and_price(&problem, &dp, &[start], upper, &target, effort, &mut none);
            eprintln!(
                "q {q}: {} plans, {} rows, optimum {opt:.4} ms, bound {:.4}, best {:?}",
                plans.len(),
                problem.rows.len(),
                r.bound,
                r.best.as_ref().map(|b| b.0)
            );
            assert!(r.bound <= opt * (1.0 + 1e-9), "q {q}: bound {} above the optimum {opt}", r.bound);
            if let Some((t, pick)) = r.best {
                let (t2, peak) = problem.eval(&pick);
                assert!(peak <= cap && (t2 * MS - t).abs() <= 1e-9 * t && t >= opt * (1.0 - 1e-9));
            }
            checked += 1;
        }
        assert!(checked >= 3);
    }
}
