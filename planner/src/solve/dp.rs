//! The stage DP: the stage model's step time plus a per-choice penalty, minimised exactly over
//! one choice per group by variable elimination (a dynamic program over the groups in a
//! small-width order). Without the memory rows the problem is a sum of stage times, each a
//! function of the few groups with a term in that stage (a chain along the layers: a layer's
//! backward stage touches four neighbouring owners and two layers' activations). Each step
//! takes the tables (factors) that mention one group, minimises their sum plus that group's
//! penalty over its choices for every combination of the other groups they mention, and leaves
//! the result as a new table. Tables are indexed by classes (choices that put the same terms
//! into the stages of that table), so a layer's six owner choices often count as two.

use super::problem::{local_hull, per_group_terms, GroupChoices, StageLinear};
use crate::model::Rates;

/// The scope of a factor still to be eliminated: its groups and, per group, its choices' class.
type Scope = (Vec<usize>, Vec<Vec<usize>>);

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

/// One minimisation: stage factors, a constant, and the elimination steps.
struct Elimination {
    factors: Vec<Factor>,
    constant: f64,
    steps: Vec<Step>,
    n_choices: Vec<usize>,
}

/// The minimisation, either one elimination or, where the tables would grow past the limit
/// (a group that touches both ends of the step, such as a tied embedding), one elimination per
/// class of that group with the group fixed (conditioning): the minimum over the classes.
pub struct StageDp {
    parts: Vec<(Option<Cut>, Elimination)>,
}

/// A group fixed to one of its classes: the group and the choices of that class.
type Cut = (usize, Vec<usize>);

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

impl Factor {
    /// This factor with group `g` fixed to its class `q` here: the entries where g's digit is
    /// q, and g left out of the scope.
    fn slice(&self, g: usize, q: usize) -> Factor {
        let Some(j) = self.scope.iter().position(|x| *x == g) else { return self.clone() };
        let st = self.strides();
        let table = (0..self.table.len()).filter(|e| (e / st[j]) % self.radix[j] == q).map(|e| self.table[e]).collect();
        let drop = |v: &[usize]| v.iter().enumerate().filter(|(i, _)| *i != j).map(|(_, x)| *x).collect::<Vec<_>>();
        let parts = self.parts.iter().enumerate().filter(|(i, _)| *i != j).map(|(_, p)| p.clone()).collect();
        Factor { scope: drop(&self.scope), parts, radix: drop(&self.radix), table }
    }
}

impl StageDp {
    /// Builds the stage factors (times in `scale` units) and an elimination order, conditioning
    /// on one group if it must. None when a table would still exceed `limit` entries.
    pub fn new(groups: &[GroupChoices], stages: &[StageLinear], r: &Rates, scale: f64, limit: usize) -> Option<StageDp> {
        let (factors, constant) = stage_factors(groups, stages, r, scale, limit)?;
        let n_choices: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if let Some(e) = Elimination::order(factors.clone(), constant, n_choices.clone(), None, limit) {
            return Some(StageDp { parts: vec![(None, e)] });
        }
        // Condition on the group in the most factors.
        let g = (0..groups.len()).max_by_key(|g| factors.iter().filter(|f| f.scope.contains(g)).count())?;
        Self::conditioned(&factors, constant, &n_choices, g, limit)
    }

    /// One elimination per class of group `g`, with `g` fixed to that class.
    fn conditioned(factors: &[Factor], constant: f64, n_choices: &[usize], g: usize, limit: usize) -> Option<StageDp> {
        let mentions: Vec<&Factor> = factors.iter().filter(|f| f.scope.contains(&g)).collect();
        let own: Vec<&Vec<usize>> = mentions.iter().map(|f| &f.parts[f.scope.iter().position(|x| *x == g).unwrap()]).collect();
        let (class_of, reps) = join(&own, n_choices[g]);
        let mut parts = Vec::with_capacity(reps.len());
        for (c, rep) in reps.iter().enumerate() {
            let mut constant = constant;
            let mut sliced = Vec::with_capacity(factors.len());
            for f in factors {
                match f.scope.iter().position(|x| *x == g) {
                    Some(j) => {
                        let s = f.slice(g, f.parts[j][*rep]);
                        if s.scope.is_empty() {
                            constant += s.table[0];
                        } else {
                            sliced.push(s);
                        }
                    }
                    None => sliced.push(f.clone()),
                }
            }
            let choices: Vec<usize> = (0..n_choices[g]).filter(|k| class_of[*k] == c).collect();
            parts.push((Some((g, choices)), Elimination::order(sliced, constant, n_choices.to_vec(), Some(g), limit)?));
        }
        Some(StageDp { parts })
    }

    /// Table entries one minimisation computes, times the choices each weighs: its work.
    pub fn work(&self) -> u64 {
        self.parts.iter().flat_map(|(_, e)| e.steps.iter().map(|s| (s.radix.iter().product::<usize>() * e.n_choices[s.group]) as u64)).sum()
    }

    /// min over one choice per group of the stage times plus `unary[g][k]`; returns the value
    /// and a minimiser.
    pub fn minimise(&self, unary: &[Vec<f64>]) -> (f64, Vec<usize>) {
        let mut best: Option<(f64, Vec<usize>)> = None;
        for (cut, e) in &self.parts {
            let (mut v, mut pick) = e.minimise(unary);
            if let Some((g, choices)) = cut {
                let k = *choices.iter().min_by(|a, b| unary[*g][**a].total_cmp(&unary[*g][**b])).expect("a class has a choice");
                v += unary[*g][k];
                pick[*g] = k;
            }
            if best.as_ref().is_none_or(|(b, _)| v < *b) {
                best = Some((v, pick));
            }
        }
        best.expect("at least one part")
    }
}

/// Each stage as a factor over the groups that change its time (times in `scale` units), and
/// the constant of the stages no group changes. None when a stage has more than `limit`
/// combinations of its groups' classes.
fn stage_factors(groups: &[GroupChoices], stages: &[StageLinear], r: &Rates, scale: f64, limit: usize) -> Option<(Vec<Factor>, f64)> {
    let mut factors = Vec::new();
    let mut constant = 0.0;
    for stage in stages {
        match local_hull(groups, stage, r, limit) {
            Some(h) => {
                let scope: Vec<usize> = h.groups.iter().map(|(g, _)| *g).collect();
                let parts: Vec<Vec<usize>> = h.groups.iter().map(|(_, c)| c.clone()).collect();
                let radix: Vec<usize> = parts.iter().map(|p| p.iter().copied().max().map_or(1, |m| m + 1)).collect();
                factors.push(Factor { scope, parts, radix, table: h.times.iter().map(|t| t * scale).collect() });
            }
            None => {
                // Either no group changes this stage (a constant) or too many combinations.
                let per = per_group_terms(groups, stage);
                if per.values().any(|ts| ts.iter().any(|t| !t.approx_eq(&ts[0]))) {
                    return None;
                }
                let mut t = stage.constant.clone();
                for ts in per.values() {
                    t = &t + &ts[0];
                }
                constant += r.stage_time(&t) * scale;
            }
        }
    }
    Some((factors, constant))
}

impl Elimination {
    /// A greedy elimination order (the group whose elimination makes the smallest table), all
    /// groups but `skip`; None when a table would exceed `limit` entries.
    fn order(factors: Vec<Factor>, constant: f64, n_choices: Vec<usize>, skip: Option<usize>, limit: usize) -> Option<Elimination> {
        // Greedy order: the group whose elimination makes the smallest table.
        let mut active: Vec<Option<Scope>> = factors.iter().map(|f| Some((f.scope.clone(), f.parts.clone()))).collect();
        let mut left: Vec<bool> = (0..n_choices.len()).map(|g| Some(g) != skip).collect();
        let mut steps = Vec::new();
        while left.iter().any(|l| *l) {
            let mut best: Option<(usize, usize)> = None;
            for g in (0..n_choices.len()).filter(|g| left[*g]) {
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
        Some(Elimination { factors, constant, steps, n_choices })
    }

    fn shape(active: &[Option<Scope>], g: usize, n_choices: &[usize]) -> Option<Step> {
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

#[cfg(test)]
mod tests {
    use super::super::problem::{Problem, MS};
    use super::super::testing::{all_plans, small};
    use super::*;
    use crate::model::StageModel;

    #[test]
    fn stage_dp_is_the_exact_minimum() {
        let (p, hw) = small();
        let model = StageModel::new(&p, &hw);
        let problem = Problem::new(&model, u64::MAX, None).unwrap();
        let dp = StageDp::new(&problem.groups, &problem.stages, &model.rates, MS, 1 << 16).unwrap();
        let plans = all_plans(&problem);
        let mut seed = 12345u64;
        for _ in 0..5 {
            let unary: Vec<Vec<f64>> = problem
                .groups
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
            // Conditioned on any one group, the same minimum.
            let (factors, constant) = stage_factors(&problem.groups, &problem.stages, &model.rates, MS, 1 << 16).unwrap();
            let n_choices: Vec<usize> = problem.groups.iter().map(|g| g.len()).collect();
            for g in 0..problem.groups.len() {
                let c = StageDp::conditioned(&factors, constant, &n_choices, g, 1 << 16).unwrap();
                let (vc, pc) = c.minimise(&unary);
                assert!((vc - brute).abs() <= 1e-9 * brute, "conditioned on group {g}: {vc} vs exhaustive {brute}");
                let atc = cost(&pc, plans.iter().find(|x| x.0 == pc).unwrap().1);
                assert!((atc - brute).abs() <= 1e-9 * brute);
            }
        }
    }
}
