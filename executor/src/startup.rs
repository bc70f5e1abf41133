//! Timing a run's start-up phase by phase, and telling the caller as each begins.

use crate::train::{Phase, Progress};
use models::trace::Startup;
use std::time::Instant;

/// How the kernels were made: compiled now, or read from the on-disk cache.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KernelStats {
    pub compiled: u32,
    pub cached: u32,
    pub seconds: f64,
}

/// The clock of one run's start-up: from its creation to the start of step 1.
// Only the runners (behind `cuda`) start one.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct StartClock {
    t0: Instant,
    current: (Phase, Instant),
    times: Startup,
    kernels: KernelStats,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl StartClock {
    /// Starts with [`Phase::Opening`].
    pub fn new(progress: &mut dyn FnMut(Progress)) -> StartClock {
        progress(Progress::Phase(Phase::Opening));
        let now = Instant::now();
        StartClock { t0: now, current: (Phase::Opening, now), times: Startup::default(), kernels: KernelStats::default() }
    }

    /// Ends the current phase and begins `next`.
    pub fn phase(&mut self, next: Phase, progress: &mut dyn FnMut(Progress)) {
        self.close();
        self.current = (next, Instant::now());
        progress(Progress::Phase(next));
    }

    /// The kernels are made; the rest of the phase is allocation.
    pub fn compiled(&mut self, stats: KernelStats, progress: &mut dyn FnMut(Progress)) {
        self.kernels = stats;
        self.times.kernels_compiled = stats.compiled;
        self.times.kernels_cached = stats.cached;
        let _ = progress;
    }

    /// Pinning took `seconds` on its own thread (beside the phases the clock times).
    pub fn pinned(&mut self, seconds: f64) {
        self.times.pin_s = seconds;
    }

    /// Ends start-up: step 1 begins now.
    pub fn training(mut self, progress: &mut dyn FnMut(Progress)) -> Startup {
        self.close();
        self.times.time_to_first_step_s = self.t0.elapsed().as_secs_f64();
        progress(Progress::Phase(Phase::Training));
        self.times
    }

    fn close(&mut self) {
        let (phase, since) = self.current;
        let s = since.elapsed().as_secs_f64();
        let t = &mut self.times;
        match phase {
            Phase::Opening => t.open_s += s,
            // Step creation compiles, then allocates the persistent tensors.
            Phase::Compiling => {
                t.compile_s += self.kernels.seconds.min(s);
                t.allocate_s += (s - self.kernels.seconds).max(0.0);
            }
            Phase::Allocating => t.allocate_s += s,
            // Pinning with the kernels compiling beside it: pin_s and compile_s say what each
            // took; the phase lasts the longer.
            Phase::Pinning(_) => {
                t.compile_s = self.kernels.seconds;
                t.pin_wait_s += (s - self.kernels.seconds).max(0.0);
            }
            Phase::Initializing => t.init_s += s,
            Phase::Probing => t.probe_s += s,
            Phase::Training => {}
        }
    }
}

/// The run's probe of `gpu` at `program`'s shapes (`calibrate::probe`), or None with a warning
/// saying why (`when`: before the first step, after the last): a run without probes still runs.
#[cfg(feature = "cuda")]
pub(crate) fn probe_or_warn(gpu: &crate::gpu::Gpu, program: &models::Program, when: &str) -> Option<models::hardware::ProbeRates> {
    match crate::calibrate::probe(gpu, program) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("no probe {when}: {e}");
            None
        }
    }
}
