//! How hard a solve tries: typed options with validating constructors.

use models::Seconds;

/// Options of one solve.
#[derive(Clone, Debug, PartialEq)]
pub struct SolveOptions {
    time_limit: Seconds,
    gap: f64,
    threads: u32,
    effort: f64,
}

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions { time_limit: Seconds(60.0), gap: 0.01, threads: 2, effort: 1.0 }
    }
}

impl SolveOptions {
    /// The defaults: 60 s, a proved gap of 1%, two threads, the default effort.
    pub fn new() -> SolveOptions {
        SolveOptions::default()
    }

    /// Wall-clock limit of the whole solve; the best plan found by then is used, with its gap.
    /// A positive, finite number of seconds, at most a day.
    pub fn with_time_limit(mut self, t: Seconds) -> Result<SolveOptions, String> {
        if !(t.0.is_finite() && t.0 > 0.0 && t.0 <= 86_400.0) {
            return Err(format!("the time limit must be a positive number of seconds, at most 86400 (a day), got {}", t.0));
        }
        self.time_limit = t;
        Ok(self)
    }

    /// Stop once the plan is proved within this fraction of the optimum: in [0, 1).
    pub fn with_gap(mut self, gap: f64) -> Result<SolveOptions, String> {
        if !(gap.is_finite() && (0.0..1.0).contains(&gap)) {
            return Err(format!("the gap must be a fraction in [0, 1) (0.005 is 0.5%), got {gap}"));
        }
        self.gap = gap;
        Ok(self)
    }

    /// How much work the search may do before it stops with the gap it has proved, as a
    /// multiple of the default (the search counts its work, so its answer does not depend on
    /// the machine): from 0.01 to 1000.
    pub fn with_effort(mut self, effort: f64) -> Result<SolveOptions, String> {
        if !(effort.is_finite() && (0.01..=1000.0).contains(&effort)) {
            return Err(format!("the effort must be a multiple of the default from 0.01 to 1000, got {effort}"));
        }
        self.effort = effort;
        Ok(self)
    }

    /// Threads the MILP back end may use: 1 to 256.
    pub fn with_threads(mut self, threads: u32) -> Result<SolveOptions, String> {
        if !(1..=256).contains(&threads) {
            return Err(format!("threads must be from 1 to 256, got {threads}"));
        }
        self.threads = threads;
        Ok(self)
    }

    pub fn time_limit(&self) -> Seconds {
        self.time_limit
    }
    pub fn gap(&self) -> f64 {
        self.gap
    }
    pub fn threads(&self) -> u32 {
        self.threads
    }
    pub fn effort(&self) -> f64 {
        self.effort
    }
    /// `work` units scaled by the effort.
    pub fn scaled(&self, work: u64) -> u64 {
        (work as f64 * self.effort).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused_with_the_range() {
        for t in [-5.0, 0.0, f64::NAN, f64::INFINITY, 1e9] {
            let e = SolveOptions::new().with_time_limit(Seconds(t)).unwrap_err();
            assert!(e.contains("time limit"), "{e}");
        }
        for g in [-1.0, 1.0, f64::NAN] {
            assert!(SolveOptions::new().with_gap(g).unwrap_err().contains("gap"));
        }
        assert!(SolveOptions::new().with_threads(0).is_err());
        let o = SolveOptions::new().with_time_limit(Seconds(8.0)).unwrap().with_gap(0.01).unwrap();
        assert_eq!((o.time_limit(), o.gap(), o.threads()), (Seconds(8.0), 0.01, 2));
    }
}
