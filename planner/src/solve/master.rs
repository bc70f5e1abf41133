//! The restricted master LP of column generation:
//!   minimise sum_j c_j mu_j  subject to  sum_j mu_j = 1 (row 0, the convexity row),
//!   sum_j a_pj mu_j <= b_p for the memory rows that have joined (b_p >= 0), mu >= 0,
//! grown a column or a row at a time.
//!
//! A dense revised primal simplex of our own: the master is small (a row per binding memory
//! slot, a column per plan priced so far), and it always has a feasible basis to start from:
//! the first column (an artificial plan that uses no memory, at a prohibitive cost) with every
//! row's slack. A new column keeps the basis and the search goes on from it; a new row restarts
//! from that basis. Dantzig pricing, Bland's rule after a run of degenerate pivots (no cycling),
//! and the basis inverse recomputed every `REFACTOR` pivots. Only the bound's convergence
//! depends on the master: every Lagrangian bound is valid for any multipliers.

/// Pivots between two recomputations of the basis inverse from the basis.
const REFACTOR: usize = 64;
/// Degenerate pivots in a row before Bland's rule takes over.
const DEGENERATE_RUN: usize = 32;
/// Most pivots of one solve.
const MAX_PIVOTS: usize = 50_000;
/// Relative tolerance of reduced costs, pivots and feasibility.
const TOL: f64 = 1e-9;

/// The master LP.
pub struct Master {
    /// Per column: its cost and its coefficients in the memory rows (row p at index p - 1).
    cost: Vec<f64>,
    coef: Vec<Vec<f64>>,
    /// Right-hand sides of the memory rows.
    rhs: Vec<f64>,
    /// Basic variable of each row: a column (< n) or row p's slack (n + p - 1). Rebuilt after
    /// a row joins.
    basis: Vec<Var>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    Column(usize),
    Slack(usize),
}

/// A solved master: its objective, each column's weight and each row's dual (row 0 the
/// convexity row; a memory row's dual is at most 0, as for any <= row of a minimisation).
pub struct MasterSolution {
    pub objective: f64,
    pub weights: Vec<f64>,
    pub duals: Vec<f64>,
    /// Arithmetic the solve took: rows times variables priced, summed over its pivots, and
    /// the basis inversions (a deterministic measure of its time).
    pub work: u64,
}

impl Master {
    /// A master with one column of cost `first_cost` in the convexity row only (an artificial
    /// column that keeps it feasible).
    pub fn new(first_cost: f64) -> Master {
        Master { cost: vec![first_cost], coef: vec![Vec::new()], rhs: Vec::new(), basis: vec![Var::Column(0)] }
    }

    fn rows(&self) -> usize {
        1 + self.rhs.len()
    }

    /// Adds a column of cost `cost` with coefficient 1 in the convexity row and `entries`
    /// (row index >= 1, coefficient) in joined rows; returns its index.
    pub fn add_column(&mut self, cost: f64, entries: impl IntoIterator<Item = (usize, f64)>) -> usize {
        let mut a = vec![0.0; self.rhs.len()];
        for (r, v) in entries {
            a[r - 1] += v;
        }
        self.cost.push(cost);
        self.coef.push(a);
        self.cost.len() - 1
    }

    /// Adds the row sum of `entries` (column index, coefficient) <= `rhs`; returns its index.
    /// The search restarts from the artificial column and the slacks.
    pub fn add_row(&mut self, rhs: f64, entries: impl IntoIterator<Item = (usize, f64)>) -> usize {
        for a in &mut self.coef {
            a.push(0.0);
        }
        for (c, v) in entries {
            *self.coef[c].last_mut().expect("every column has the new row") += v;
        }
        self.rhs.push(rhs.max(0.0));
        self.basis = std::iter::once(Var::Column(0)).chain((1..=self.rhs.len()).map(Var::Slack)).collect();
        self.rows() - 1
    }

    /// Column `v` of the constraint matrix (convexity row first).
    fn column(&self, v: Var) -> Vec<f64> {
        let m = self.rows();
        let mut a = vec![0.0; m];
        match v {
            Var::Column(j) => {
                a[0] = 1.0;
                a[1..].copy_from_slice(&self.coef[j]);
            }
            Var::Slack(p) => a[p] = 1.0,
        }
        a
    }

    fn cost_of(&self, v: Var) -> f64 {
        match v {
            Var::Column(j) => self.cost[j],
            Var::Slack(_) => 0.0,
        }
    }

    /// The inverse of the basis matrix (row-major), by Gauss-Jordan elimination with partial
    /// pivoting; None when the basis is singular.
    fn invert(&self) -> Option<Vec<Vec<f64>>> {
        let m = self.rows();
        let cols: Vec<Vec<f64>> = self.basis.iter().map(|v| self.column(*v)).collect();
        // a[i][k]: row i, basis position k.
        let mut a: Vec<Vec<f64>> = (0..m).map(|i| (0..m).map(|k| cols[k][i]).collect()).collect();
        let mut inv: Vec<Vec<f64>> = (0..m).map(|i| (0..m).map(|k| if i == k { 1.0 } else { 0.0 }).collect()).collect();
        for k in 0..m {
            let p = (k..m).max_by(|x, y| a[*x][k].abs().total_cmp(&a[*y][k].abs()))?;
            if a[p][k].abs() < 1e-12 {
                return None;
            }
            a.swap(k, p);
            inv.swap(k, p);
            let d = a[k][k];
            for j in 0..m {
                a[k][j] /= d;
                inv[k][j] /= d;
            }
            for i in 0..m {
                if i != k && a[i][k] != 0.0 {
                    let f = a[i][k];
                    for j in 0..m {
                        a[i][j] -= f * a[k][j];
                        inv[i][j] -= f * inv[k][j];
                    }
                }
            }
        }
        Some(inv)
    }

    /// Solves the master from the current basis; None when the simplex fails (a singular basis
    /// or the pivot limit), which ends column generation with the bound found so far.
    pub fn solve(&mut self) -> Option<MasterSolution> {
        let m = self.rows();
        let n = self.cost.len();
        let b: Vec<f64> = std::iter::once(1.0).chain(self.rhs.iter().copied()).collect();
        let mut inv = self.invert()?;
        let mut degenerate = 0usize;
        let mut work = (m * m * m) as u64;
        for pivot in 0..MAX_PIVOTS {
            if pivot > 0 && pivot % REFACTOR == 0 {
                inv = self.invert()?;
                work += (m * m * m) as u64;
            }
            work += (m * (n + m)) as u64;
            let x: Vec<f64> = (0..m).map(|i| (0..m).map(|k| inv[i][k] * b[k]).sum()).collect();
            let cb: Vec<f64> = self.basis.iter().map(|v| self.cost_of(*v)).collect();
            let y: Vec<f64> = (0..m).map(|k| (0..m).map(|i| cb[i] * inv[i][k]).sum()).collect();
            // Entering variable: the most negative reduced cost (the first, under Bland's rule).
            let bland = degenerate >= DEGENERATE_RUN;
            let mut entering: Option<(Var, f64)> = None;
            let candidates = (0..n).map(Var::Column).chain((1..m).map(Var::Slack));
            for v in candidates {
                if self.basis.contains(&v) {
                    continue;
                }
                let d = match v {
                    Var::Column(j) => self.cost[j] - y[0] - self.coef[j].iter().zip(&y[1..]).map(|(a, y)| a * y).sum::<f64>(),
                    Var::Slack(p) => -y[p],
                };
                let scale = self.cost_of(v).abs().max(1.0);
                if d < -TOL * scale && entering.is_none_or(|(_, best)| !bland && d < best) {
                    entering = Some((v, d));
                    if bland {
                        break;
                    }
                }
            }
            let Some((q, _)) = entering else {
                let mut weights = vec![0.0; n];
                for (i, v) in self.basis.iter().enumerate() {
                    if let Var::Column(j) = v {
                        weights[*j] = x[i].max(0.0);
                    }
                }
                let objective = weights.iter().zip(&self.cost).map(|(w, c)| w * c).sum();
                return Some(MasterSolution { objective, weights, duals: y, work });
            };
            let aq = self.column(q);
            let w: Vec<f64> = (0..m).map(|i| (0..m).map(|k| inv[i][k] * aq[k]).sum()).collect();
            // Ratio test (ties to the lowest basis position under Bland's rule, else the
            // largest pivot).
            let wmax = w.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(1.0);
            let mut leave: Option<(usize, f64)> = None;
            for i in 0..m {
                if w[i] > TOL * wmax {
                    let t = x[i].max(0.0) / w[i];
                    let better = match leave {
                        None => true,
                        Some((r, best)) => {
                            t < best - 1e-12 * best.abs().max(1.0) || (t <= best + 1e-12 * best.abs().max(1.0) && !bland && w[i] > w[r])
                        }
                    };
                    if better {
                        leave = Some((i, t));
                    }
                }
            }
            // Every variable is bounded by the convexity row and the slacks' rows: a column
            // with no positive entry cannot price negative unless the inverse has drifted.
            let (r, t) = leave?;
            degenerate = if t <= 1e-12 { degenerate + 1 } else { 0 };
            let pr = w[r];
            inv[r].iter_mut().for_each(|v| *v /= pr);
            let pivot_row = inv[r].clone();
            for (i, row) in inv.iter_mut().enumerate() {
                if i != r && w[i] != 0.0 {
                    row.iter_mut().zip(&pivot_row).for_each(|(v, p)| *v -= w[i] * p);
                }
            }
            self.basis[r] = q;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The optimum of a small master by trying every mixture of at most `rows` columns
    /// (the optimum of an LP is at a vertex: a basis of at most `rows` columns and slacks).
    fn brute(cost: &[f64], coef: &[Vec<f64>], rhs: &[f64]) -> f64 {
        let n = cost.len();
        let mut best = f64::INFINITY;
        // Pairs and triples of columns on a fine grid of weights.
        let steps = 200;
        for i in 0..n {
            for j in i..n {
                for k in j..n {
                    for a in 0..=steps {
                        for bb in 0..=(steps - a) {
                            let wi = a as f64 / steps as f64;
                            let wj = bb as f64 / steps as f64;
                            let wk = 1.0 - wi - wj;
                            let fits = (0..rhs.len()).all(|p| wi * coef[i][p] + wj * coef[j][p] + wk * coef[k][p] <= rhs[p] + 1e-9);
                            if fits {
                                best = best.min(wi * cost[i] + wj * cost[j] + wk * cost[k]);
                            }
                        }
                    }
                }
            }
        }
        best
    }

    #[test]
    fn matches_a_brute_force_optimum_and_its_duals_hold() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for _case in 0..12 {
            let rows = 2;
            let n = 6;
            let rhs: Vec<f64> = (0..rows).map(|_| 2.0 + 3.0 * rnd()).collect();
            let mut m = Master::new(1e4);
            let mut cost = vec![1e4];
            let mut coef = vec![vec![0.0; rows]];
            for _ in 0..rows {
                m.add_row(rhs[m.rows() - 1], []);
            }
            for _ in 0..n {
                let c = 10.0 * rnd();
                // Cheaper columns use more memory.
                let a: Vec<f64> = (0..rows).map(|_| (10.0 - c) * rnd()).collect();
                m.add_column(c, a.iter().enumerate().map(|(p, v)| (p + 1, *v)));
                cost.push(c);
                coef.push(a);
                // Warm after each column.
                m.solve().unwrap();
            }
            let s = m.solve().unwrap();
            let want = brute(&cost, &coef, &rhs);
            assert!((s.objective - want).abs() <= 1e-3 * want.max(1.0) + 0.06, "simplex {} vs brute force {want}", s.objective);
            assert!(s.objective <= want + 1e-6, "brute force on a grid cannot beat the optimum");
            // Feasible and optimal: weights sum to 1 and fit; strong duality; dual feasible.
            assert!((s.weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            for p in 0..rows {
                let used: f64 = s.weights.iter().zip(&coef).map(|(w, a)| w * a[p]).sum();
                assert!(used <= rhs[p] + 1e-7);
                assert!(s.duals[p + 1] <= 1e-9, "a <= row's dual is at most 0");
            }
            let dual_obj = s.duals[0] + rhs.iter().zip(&s.duals[1..]).map(|(b, y)| b * y).sum::<f64>();
            assert!((dual_obj - s.objective).abs() <= 1e-7 * s.objective.abs().max(1.0));
            for (c, a) in cost.iter().zip(&coef) {
                let d = c - s.duals[0] - a.iter().zip(&s.duals[1..]).map(|(a, y)| a * y).sum::<f64>();
                assert!(d >= -1e-7 * c.abs().max(1.0), "reduced cost {d} < 0 at the optimum");
            }
        }
    }

    #[test]
    fn rows_join_after_columns() {
        // Two plans: a fast one over the memory row, a slow one within it.
        let mut m = Master::new(1e3);
        let fast = m.add_column(1.0, []);
        let slow = m.add_column(5.0, []);
        let s = m.solve().unwrap();
        assert!((s.objective - 1.0).abs() < 1e-12 && s.weights[fast] == 1.0);
        m.add_row(2.0, [(fast, 4.0), (slow, 1.0)]);
        let s = m.solve().unwrap();
        // Mixture w*4 + (1-w)*1 <= 2: w = 1/3, time 1/3 + 10/3.
        assert!((s.objective - 11.0 / 3.0).abs() < 1e-9, "{}", s.objective);
        assert!((s.weights[fast] - 1.0 / 3.0).abs() < 1e-9 && (s.weights[slow] - 2.0 / 3.0).abs() < 1e-9);
        // The row's price: -4/3 ms per unit of memory.
        assert!((s.duals[1] + 4.0 / 3.0).abs() < 1e-9, "{:?}", s.duals);
    }
}
