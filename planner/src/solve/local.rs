//! Plans without proofs: local search from a starting point, making a plan fit, rounding a
//! mixture of plans, and periodic patterns that single moves cannot reach.

use super::effort::Effort;
use super::problem::{GroupChoices, Problem};
use crate::decisions::Group;
use crate::model::StageTerms;

/// One choice per group with its live bytes at every slot and its terms in every stage, kept
/// up to date as groups move.
struct State<'p, 'm, 'a> {
    problem: &'p Problem<'m, 'a>,
    pick: Vec<usize>,
    live: Vec<i64>,
    /// `live` at the problem's binding slots.
    binding: Vec<i64>,
    terms: Vec<StageTerms>,
    /// Pinned host bytes.
    pinned: i64,
}

impl<'p, 'm, 'a> State<'p, 'm, 'a> {
    fn new(problem: &'p Problem<'m, 'a>, pick: &[usize]) -> Self {
        let (live, terms) = problem.totals(pick);
        let binding = problem.binding_slots.iter().map(|p| live[*p]).collect();
        State { problem, pick: pick.to_vec(), live, binding, terms, pinned: problem.pinned(pick) as i64 }
    }

    fn groups(&self) -> &'p [GroupChoices] {
        &self.problem.groups
    }

    /// Time change of moving groups to new choices (exact over the stages they touch).
    fn delta(&self, moves: &[(usize, usize)]) -> f64 {
        let groups = self.groups();
        let r = self.problem.rates();
        let mut touched: Vec<usize> = moves
            .iter()
            .flat_map(|(gi, k)| groups[*gi].contributions[self.pick[*gi]].stages.iter().chain(&groups[*gi].contributions[*k].stages))
            .map(|(s, _)| *s)
            .collect();
        touched.sort();
        touched.dedup();
        let mut delta = 0.0;
        for s in touched {
            let mut t = self.terms[s].clone();
            let before = r.stage_time(&t);
            for (gi, k) in moves {
                if let Some((_, q)) = groups[*gi].contributions[self.pick[*gi]].stages.iter().find(|(x, _)| *x == s) {
                    t = &t - q;
                }
                if let Some((_, q)) = groups[*gi].contributions[*k].stages.iter().find(|(x, _)| *x == s) {
                    t = &t + q;
                }
            }
            delta += r.stage_time(&t) - before;
        }
        delta
    }

    /// Live bytes at slot `p` after the moves.
    fn live_after(&self, p: usize, moves: &[(usize, usize)]) -> i64 {
        let groups = self.groups();
        let mut l = self.live[p];
        for (gi, k) in moves {
            l += groups[*gi].contributions[*k].live[p] as i64 - groups[*gi].contributions[self.pick[*gi]].live[p] as i64;
        }
        l
    }

    /// Pinned host bytes after the moves.
    fn pinned_after(&self, moves: &[(usize, usize)]) -> i64 {
        let groups = self.groups();
        let mut h = self.pinned;
        for (gi, k) in moves {
            h += groups[*gi].contributions[*k].pinned as i64 - groups[*gi].contributions[self.pick[*gi]].pinned as i64;
        }
        h
    }

    /// Whether every slot stays within the problem's capacity, and the pinned memory within
    /// the host's, after the moves (checked at the slots that can bind: the others follow).
    fn fits(&self, moves: &[(usize, usize)]) -> bool {
        self.problem.host_cap.is_none_or(|h| self.pinned_after(moves) <= h as i64) && self.fits_binding(moves)
    }

    /// Whether the live bytes at every binding slot stay within the capacity after the moves.
    fn fits_binding(&self, moves: &[(usize, usize)]) -> bool {
        let (bl, cap) = (&self.problem.binding_live, self.problem.cap as i64);
        match moves {
            [(g, k)] => {
                let (new, old) = (&bl[*g][*k], &bl[*g][self.pick[*g]]);
                self.binding.iter().zip(new).zip(old).all(|((l, n), o)| l + n - o <= cap)
            }
            _ => (0..self.binding.len())
                .all(|j| self.binding[j] + moves.iter().map(|(g, k)| bl[*g][*k][j] - bl[*g][self.pick[*g]][j]).sum::<i64>() <= cap),
        }
    }

    /// Bytes over `cap`, summed over the slots, and over the host's limit, after the moves.
    fn excess_after(&self, moves: &[(usize, usize)], cap: i64) -> i64 {
        let host = self.problem.host_cap.map_or(0, |h| (self.pinned_after(moves) - h as i64).max(0));
        host + (0..self.live.len()).map(|p| (self.live_after(p, moves) - cap).max(0)).sum::<i64>()
    }

    fn apply(&mut self, moves: &[(usize, usize)]) {
        let groups = self.groups();
        for (gi, k) in moves {
            let (old, new) = (&groups[*gi].contributions[self.pick[*gi]], &groups[*gi].contributions[*k]);
            for (p, l) in self.live.iter_mut().enumerate() {
                *l += new.live[p] as i64 - old.live[p] as i64;
            }
            let bl = &self.problem.binding_live[*gi];
            for (j, l) in self.binding.iter_mut().enumerate() {
                *l += bl[*k][j] - bl[self.pick[*gi]][j];
            }
            for (s, q) in &old.stages {
                self.terms[*s] = &self.terms[*s] - q;
            }
            for (s, q) in &new.stages {
                self.terms[*s] = &self.terms[*s] + q;
            }
            self.pinned += new.pinned as i64 - old.pinned as i64;
            self.pick[*gi] = *k;
        }
    }
}

/// Local search from `start`: move one group at a time to the choice that lowers the step time
/// most while every slot stays within the capacity, then pairs of moves (a faster choice that
/// does not fit alone, with another group giving way), until no move helps or `effort` (move
/// evaluations) is spent.
pub fn improve(problem: &Problem, start: &[usize], mut effort: Effort) -> Vec<usize> {
    let groups = &problem.groups;
    let mut st = State::new(problem, start);
    let delta = |st: &State, moves: &[(usize, usize)], effort: &mut Effort| if effort.spend() { st.delta(moves) } else { 0.0 };
    for _pass in 0..50 {
        if effort.spent() {
            break;
        }
        let mut improved = false;
        // Single moves that fit.
        for (gi, g) in groups.iter().enumerate() {
            let mut best: Option<(f64, usize)> = None;
            for k in 0..g.len() {
                if k == st.pick[gi] || !st.fits(&[(gi, k)]) {
                    continue;
                }
                let d = delta(&st, &[(gi, k)], &mut effort);
                if d < -1e-12 && best.is_none_or(|(b, _)| d < b) {
                    best = Some((d, k));
                }
            }
            if let Some((_, k)) = best {
                st.apply(&[(gi, k)]);
                improved = true;
            }
        }
        if improved {
            continue;
        }
        // Pair moves.
        let mut best: Option<(f64, [(usize, usize); 2])> = None;
        for gi in 0..groups.len() {
            if effort.spent() {
                break;
            }
            for k in 0..groups[gi].len() {
                if k == st.pick[gi] || delta(&st, &[(gi, k)], &mut effort) >= -1e-12 {
                    continue;
                }
                for (hj, h) in groups.iter().enumerate() {
                    if hj == gi {
                        continue;
                    }
                    for k2 in 0..h.len() {
                        if k2 == st.pick[hj] {
                            continue;
                        }
                        let moves = [(gi, k), (hj, k2)];
                        let d = delta(&st, &moves, &mut effort);
                        if d < -1e-12 && best.is_none_or(|(b, _)| d < b) && st.fits(&moves) {
                            best = Some((d, moves));
                        }
                    }
                }
            }
        }
        match best {
            Some((_, moves)) if !effort.spent() => st.apply(&moves),
            Some((_, moves)) => {
                st.apply(&moves);
                break;
            }
            None => break,
        }
    }
    st.pick
}

/// Makes a plan fit: while some slot is over the capacity, takes the move (one group to another
/// choice) with the least time added per byte of excess removed. None if no move helps or
/// `effort` (moves) runs out first.
pub fn repair(problem: &Problem, start: &[usize], mut effort: Effort) -> Option<Vec<usize>> {
    let cap = problem.cap as i64;
    let mut st = State::new(problem, start);
    let mut ex = st.excess_after(&[], cap);
    while ex > 0 {
        if !effort.spend() {
            return None;
        }
        let mut best: Option<(f64, usize, usize)> = None;
        for (gi, g) in problem.groups.iter().enumerate() {
            for k in 0..g.len() {
                if k == st.pick[gi] {
                    continue;
                }
                let e = st.excess_after(&[(gi, k)], cap);
                if e >= ex {
                    continue;
                }
                let score = st.delta(&[(gi, k)]) / (ex - e) as f64;
                if best.is_none_or(|(b, _, _)| score < b) {
                    best = Some((score, gi, k));
                }
            }
        }
        let (_, gi, k) = best?;
        st.apply(&[(gi, k)]);
        ex = st.excess_after(&[], cap);
    }
    Some(st.pick)
}

/// Rounds a mixture of plans (each group's weight on each choice) to one plan by error
/// diffusion along the layers: a choice with weight 0.25 on every layer's owner goes to every
/// fourth layer, spread out as the mixture suggests (layer groups of one kind share the error;
/// other groups take their heaviest choice).
pub fn dither(groups: &[GroupChoices], xbar: &[Vec<f64>]) -> Vec<usize> {
    let mut owner_err: Vec<f64> = Vec::new();
    let mut acts_err: Vec<f64> = Vec::new();
    let mut pick = Vec::with_capacity(groups.len());
    for (g, x) in groups.iter().zip(xbar) {
        let err = match g.group {
            Group::Owner(models::Owner::Layer(_)) => Some(&mut owner_err),
            Group::Acts(_) => Some(&mut acts_err),
            _ => None,
        };
        let k = match err {
            Some(e) => {
                e.resize(x.len(), 0.0);
                let k = (0..x.len()).max_by(|a, b| (e[*a] + x[*a]).total_cmp(&(e[*b] + x[*b]))).unwrap_or(0);
                for (j, v) in x.iter().enumerate() {
                    e[j] += v - if j == k { 1.0 } else { 0.0 };
                }
                k
            }
            None => (0..x.len()).max_by(|a, b| x[*a].total_cmp(&x[*b])).unwrap_or(0),
        };
        pick.push(k);
    }
    pick
}

/// Periodic starting points: every layer's owner choice alternating between two choices (odd and
/// even layers), with one activation choice for every layer, the other groups as in the best
/// start or at their leanest. Single-group moves cannot reach such patterns (the optimum of a
/// budget that binds often alternates: a layer streaming its weights next to one streaming its
/// optimizer state shares the link best). Returns the two fastest that fit.
pub fn patterns(problem: &Problem, starts: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let groups = &problem.groups;
    let best = starts.iter().map(|p| (problem.eval(p).0, p)).min_by(|a, b| a.0.total_cmp(&b.0)).map(|(_, p)| p);
    let mut bases = vec![problem.leanest()];
    if let Some(b) = best {
        bases.push(b.clone());
    }
    let is_layer_owner = |g: &GroupChoices| matches!(g.group, Group::Owner(models::Owner::Layer(_)));
    let Some(proto) = groups.iter().find(|g| is_layer_owner(g)) else { return Vec::new() };
    let n_owner = proto.len();
    let n_acts = crate::decisions::ActChoice::all().len();
    let mut found: Vec<(f64, Vec<usize>)> = Vec::new();
    for base in &bases {
        for a in 0..n_owner {
            for b in 0..n_owner {
                for u in 0..n_acts {
                    let mut pick = base.clone();
                    for (gi, g) in groups.iter().enumerate() {
                        match g.group {
                            Group::Owner(models::Owner::Layer(l)) if g.len() == n_owner => pick[gi] = if l % 2 == 0 { a } else { b },
                            Group::Acts(_) => pick[gi] = u,
                            _ => {}
                        }
                    }
                    if problem.feasible(&pick) {
                        found.push((problem.eval(&pick).0, pick));
                    }
                }
            }
        }
    }
    found.sort_by(|x, y| x.0.total_cmp(&y.0));
    found.dedup_by(|x, y| x.1 == y.1);
    found.into_iter().take(2).map(|(_, pick)| pick).collect()
}
