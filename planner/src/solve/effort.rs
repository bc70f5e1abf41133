//! Effort budgets: solver phases count their work (move evaluations, column generation
//! iterations) instead of timing it, so that a plan is the same on every machine and under any
//! load; the time limit only stops a phase early as a safety net.

use std::time::Instant;

/// A phase's allowance: units of work, and the wall-clock deadline of the whole solve.
#[derive(Clone, Copy, Debug)]
pub struct Effort {
    work: u64,
    deadline: Instant,
}

impl Effort {
    pub fn new(work: u64, deadline: Instant) -> Effort {
        Effort { work, deadline }
    }

    /// Spends one unit; false once none is left or the deadline has passed.
    pub fn spend(&mut self) -> bool {
        self.spend_units(1)
    }

    /// Spends `n` units (the last ones may be fewer); false once none is left or the deadline
    /// has passed.
    pub fn spend_units(&mut self, n: u64) -> bool {
        if self.spent() {
            self.work = 0;
            return false;
        }
        self.work = self.work.saturating_sub(n);
        true
    }

    /// Units left.
    pub fn left(&self) -> u64 {
        self.work
    }

    pub fn spent(&self) -> bool {
        self.work == 0 || Instant::now() >= self.deadline
    }
}
