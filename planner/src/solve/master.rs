//! The restricted master LP of column generation:
//!   minimise sum_j c_j mu_j  subject to  sum_j mu_j = 1,  sum_j a_pj mu_j <= b_p (rows that
//!   have joined),  mu >= 0,
//! grown a column or a row at a time and solved again from the last basis (HiGHS).

use good_lp::{highs, Expression, ProblemVariables};

/// The master LP. Row 0 is the convexity row; rows join in order after it.
pub struct Master {
    model: Option<highs::Model>,
    cols: Vec<highs::Col>,
    rows: Vec<highs::Row>,
}

/// A solved master: its objective, each column's weight and each row's dual (row 0 the
/// convexity row).
pub struct MasterSolution {
    pub objective: f64,
    pub weights: Vec<f64>,
    pub duals: Vec<f64>,
}

impl Master {
    /// A master with one column of cost `first_cost` in the convexity row only (an artificial
    /// column that keeps it feasible).
    pub fn new(first_cost: f64, threads: u32) -> Master {
        let mut m = highs(ProblemVariables::new().minimise(Expression::from(0.0))).into_inner();
        m.set_option("output_flag", false);
        m.set_option("threads", threads.max(1) as i32);
        // Each solve restarts from the last basis; presolve would throw it away.
        m.set_option("presolve", "off");
        let first = m.add_col(first_cost, 0.0.., Vec::new());
        let conv = m.add_row(1.0..=1.0, [(first, 1.0)]);
        Master { model: Some(m), cols: vec![first], rows: vec![conv] }
    }

    /// Adds a column of cost `cost` with coefficient 1 in the convexity row and `entries`
    /// (row index, coefficient) in joined rows; returns its index.
    pub fn add_column(&mut self, cost: f64, entries: impl IntoIterator<Item = (usize, f64)>) -> usize {
        let m = self.model.as_mut().expect("the master is kept between solves");
        let rows = &self.rows;
        let col = m.add_col(cost, 0.0.., entries.into_iter().map(|(r, v)| (rows[r], v)).chain(std::iter::once((rows[0], 1.0))));
        self.cols.push(col);
        self.cols.len() - 1
    }

    /// Adds the row sum of `entries` (column index, coefficient) <= `rhs`; returns its index.
    pub fn add_row(&mut self, rhs: f64, entries: impl IntoIterator<Item = (usize, f64)>) -> usize {
        let m = self.model.as_mut().expect("the master is kept between solves");
        let cols = &self.cols;
        let row = m.add_row(..=rhs, entries.into_iter().map(|(c, v)| (cols[c], v)).collect::<Vec<_>>());
        self.rows.push(row);
        self.rows.len() - 1
    }

    /// Solves the master; None when the LP solver fails.
    pub fn solve(&mut self) -> Option<MasterSolution> {
        let m = self.model.take()?;
        let solved = m.try_solve().ok()?;
        let objective = solved.objective_value();
        let sol = solved.get_solution();
        let out = MasterSolution { objective, weights: sol.columns().to_vec(), duals: sol.dual_rows().to_vec() };
        self.model = Some(solved.into());
        Some(out)
    }
}
