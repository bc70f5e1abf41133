//! The figures every output of a plan names, each worded once: its memory (live peak, arena,
//! device, headroom, host memory) and its step time as the compute lane spends it. `offplan
//! plan`, `simulate`, `explain`, summary.md and the pictures print these values under these
//! names, so one plan shows one number for one quantity wherever it is read.
//!
//! `MemoryFigures::of` derives the memory from a prediction; the planner fills a `StepBreakdown`
//! from a simulated trace (`planner::simulate::step_breakdown`) and both into `PlanFigures`
//! (`planner::Plan::figures`), which the command hands to every output.

use crate::hardware::HardwareProfile;
use crate::schedule::Prediction;
use crate::units::{Bytes, Seconds};

/// A plan's figures: its memory and its step.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanFigures {
    pub memory: MemoryFigures,
    pub step: StepBreakdown,
}

/// One figure as outputs print it: its name, its value (a number and a unit) and what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub name: &'static str,
    pub value: String,
    pub detail: String,
}

impl Figure {
    /// The figure as a line of text output: name, value right-aligned, what it is.
    pub fn line(&self, indent: usize) -> String {
        let name_w = NAME_WIDTH.saturating_sub(indent);
        format!("{:indent$}{:<name_w$}{:>12}  {}", "", self.name, self.value, self.detail)
    }

    /// The figure as a row of a Markdown table `| name | value | what |`.
    pub fn markdown_row(&self) -> String {
        format!("| {} | {} | {} |", self.name, self.value, self.detail)
    }
}

/// Width of the name column of text output.
const NAME_WIDTH: usize = 21;

/// A plan's memory, from its prediction: the figures every output names.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryFigures {
    /// The highest bytes of live tensors (each rounded to the allocator's granularity).
    pub live_peak: Bytes,
    /// Where the live peak is reached, for people.
    pub peak_at: String,
    /// The one device allocation that holds every tensor at a planned offset (`models::arena`);
    /// the live peak where the schedule has no static layout.
    pub arena: Bytes,
    /// Whether `arena` is a laid-out arena (false: the live peak stands in for it).
    pub laid_out: bool,
    /// Context, modules and libraries (the profile's fixed overhead).
    pub fixed_overhead: Bytes,
    /// What the pool's reservation unit adds to the arena.
    pub pool_rounding: Bytes,
    /// Device memory the driver takes to map the pinned host memory.
    pub pinned_mapping: Bytes,
    /// What the device holds: fixed overhead + the arena as the pool rounds it + the mapping.
    pub device: Bytes,
    pub budget: Bytes,
    /// Pinned host memory the run holds.
    pub host_memory: Bytes,
    /// What the profile lets a run pin, and the profile's name; None where it states no limit.
    pub host_pinnable: Option<(Bytes, String)>,
}

impl MemoryFigures {
    /// The figures of `prediction` under `budget` on `hw` (the profile it was predicted on).
    pub fn of(prediction: &Prediction, budget: Bytes, hw: &HardwareProfile) -> MemoryFigures {
        let arena = prediction.tensor_bytes();
        let device = prediction.peak_device();
        let fixed = prediction.fixed_overhead;
        let pool_rounding = hw.pool_reserved(arena).saturating_sub(arena).min(device.saturating_sub(fixed + arena));
        // The rest of the device figure: so the parts always add up to what is predicted.
        let pinned_mapping = device.saturating_sub(fixed + arena + pool_rounding);
        MemoryFigures {
            live_peak: prediction.peak_allocated,
            peak_at: prediction.peak_at.clone(),
            arena,
            laid_out: prediction.arena.is_some(),
            fixed_overhead: fixed,
            pool_rounding,
            pinned_mapping,
            device,
            budget,
            host_memory: prediction.pinned_host,
            host_pinnable: hw.host_pinnable.map(|b| (b, hw.name.clone())),
        }
    }

    /// Whether the device figure is within the budget.
    pub fn fits(&self) -> bool {
        self.device <= self.budget
    }

    /// The budget less the device figure: under it (positive) or over it (negative), in bytes.
    pub fn headroom(&self) -> i128 {
        self.budget.0 as i128 - self.device.0 as i128
    }

    /// "234.84 MiB under the budget" / "33.305 MiB over the budget".
    pub fn headroom_words(&self) -> String {
        let h = self.headroom();
        format!("{} {} the budget", Bytes(h.unsigned_abs() as u64), if h >= 0 { "under" } else { "over" })
    }

    /// The arena's bytes beyond the live peak, as a fraction of the live peak.
    pub fn arena_over_live_peak(&self) -> f64 {
        (self.arena.0 as f64 - self.live_peak.0 as f64) / (self.live_peak.0 as f64).max(1.0)
    }

    /// Live peak, arena, device, headroom and host memory, as every output prints them.
    pub fn figures(&self) -> Vec<Figure> {
        let arena = if self.laid_out {
            format!(
                "the one device allocation holding every tensor at a planned offset ({:+.2}% over the live peak)",
                100.0 * self.arena_over_live_peak()
            )
        } else {
            "no static layout for this schedule: the live peak stands in for it".to_string()
        };
        let h = self.headroom();
        let pinnable = match &self.host_pinnable {
            Some((b, name)) => format!("pinned, of {b} a run may pin on {name}"),
            None => "pinned (the profile states no host limit)".to_string(),
        };
        vec![
            Figure { name: "live peak", value: self.live_peak.to_string(), detail: format!("of live tensors, at {}", self.peak_at) },
            Figure { name: "arena", value: self.arena.to_string(), detail: arena },
            Figure {
                name: "device",
                value: self.device.to_string(),
                detail: format!(
                    "= {} fixed overhead + {} arena + {} rounding it up to the pool's unit + {} mapping the pinned host memory",
                    self.fixed_overhead, self.arena, self.pool_rounding, self.pinned_mapping
                ),
            },
            Figure {
                name: "headroom",
                value: Bytes(h.unsigned_abs() as u64).to_string(),
                detail: format!("{} the budget {} (budget - device)", if h >= 0 { "under" } else { "over" }, self.budget),
            },
            Figure { name: "host memory", value: self.host_memory.to_string(), detail: pinnable },
        ]
    }

    /// Text lines of [`MemoryFigures::figures`].
    pub fn lines(&self) -> Vec<String> {
        self.figures().iter().map(|f| f.line(0)).collect()
    }
}

/// One step's time as the compute lane spends it. The parts sum to the step time: the compute
/// lane runs from the start of the step, is busy or waits on another lane until its last op,
/// and the step ends when the last lane does.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepBreakdown {
    pub step: Seconds,
    /// Ops and recomputation on the compute lane (kernel launch overhead included).
    pub compute_busy: Seconds,
    /// The part of `compute_busy` that rebuilds activations (not a part of its own).
    pub recompute: Seconds,
    /// The compute lane waiting on events recorded on the host-to-device copy lane.
    pub waiting_on_h2d: Seconds,
    /// The compute lane waiting on events recorded on the device-to-host copy lane.
    pub waiting_on_d2h: Seconds,
    /// The compute lane waiting on events recorded on the host lane (CPU embedding, host AdamW).
    pub waiting_on_host: Seconds,
    /// The compute lane ready but its next op not yet issued by the host (a step of small
    /// kernels runs at the host's pace).
    pub waiting_on_launches: Seconds,
    /// After the compute lane's last op, while other lanes finish the step.
    pub after_compute: Seconds,
}

impl StepBreakdown {
    /// The parts that add up to the step, with their names.
    pub fn parts(&self) -> [(&'static str, Seconds); 6] {
        [
            ("compute busy", self.compute_busy),
            ("waiting on H2D", self.waiting_on_h2d),
            ("waiting on D2H", self.waiting_on_d2h),
            ("waiting on host", self.waiting_on_host),
            ("waiting on launches", self.waiting_on_launches),
            ("after compute", self.after_compute),
        ]
    }

    /// The sum of the parts (the step time, to rounding).
    pub fn sum(&self) -> Seconds {
        self.parts().iter().map(|p| p.1).sum()
    }

    /// Time the compute lane waited on copies: the exposed transfer.
    pub fn exposed_transfer(&self) -> Seconds {
        self.waiting_on_h2d + self.waiting_on_d2h
    }

    /// The step time, then each part, as every output prints them.
    pub fn figures(&self) -> Vec<Figure> {
        let share = |t: Seconds| format!("{:.1}%", 100.0 * t.0 / self.step.0.max(1e-30));
        let what = [
            format!("ops and recomputation, launch overhead included (recomputation {})", self.recompute),
            "the compute lane waiting on host-to-device copies".to_string(),
            "the compute lane waiting on device-to-host copies".to_string(),
            "the compute lane waiting on host work (CPU embedding, host AdamW)".to_string(),
            "the compute lane waiting for the host to issue its next op".to_string(),
            "other lanes finishing after the compute lane's last op".to_string(),
        ];
        let names: Vec<&str> = self.parts().iter().map(|p| p.0).collect();
        let mut v = vec![Figure { name: "step time", value: self.step.to_string(), detail: format!("= {}", names.join(" + ")) }];
        for ((name, t), what) in self.parts().into_iter().zip(what) {
            v.push(Figure { name, value: t.to_string(), detail: format!("{} of the step: {what}", share(t)) });
        }
        v
    }

    /// The step and its parts on one line, for a picture's title.
    pub fn one_line(&self) -> String {
        let parts: Vec<String> = self.parts().iter().map(|(n, t)| format!("{n} {t}")).collect();
        format!("step time {} = {}", self.step, parts.join(" + "))
    }

    /// Text lines: the step time, then its parts indented under it.
    pub fn lines(&self) -> Vec<String> {
        self.figures().iter().enumerate().map(|(i, f)| f.line(if i == 0 { 0 } else { 2 })).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw() -> HardwareProfile {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        HardwareProfile::load(&root.join("hardware/h100-sxm.ron")).unwrap()
    }

    fn prediction(hw: &HardwareProfile, live: Bytes, arena: Bytes, pinned: Bytes) -> Prediction {
        Prediction {
            peak_allocated: live,
            peak_action: 3,
            peak_at: "layer0.fc".into(),
            fixed_overhead: hw.fixed_overhead,
            step_time: Seconds::from_ms(10.0),
            compute_time: Seconds::from_ms(8.0),
            h2d_bytes: Bytes::ZERO,
            d2h_bytes: Bytes::ZERO,
            exposed_transfer: Seconds::ZERO,
            hidden_transfer: Seconds::ZERO,
            solver: None,
            arena: Some(arena),
            pinned_host: pinned,
            device: Some(hw.device_bytes(arena, pinned)),
        }
    }

    #[test]
    fn the_device_figure_is_its_parts() {
        let hw = hw();
        let p = prediction(&hw, Bytes::gib(10.0), Bytes::gib(10.0) + Bytes(512), Bytes::gib(16.0));
        let m = MemoryFigures::of(&p, Bytes::gib(12.0), &hw);
        assert_eq!(m.fixed_overhead + m.arena + m.pool_rounding + m.pinned_mapping, m.device);
        assert_eq!(m.pinned_mapping, hw.pinned_mapping(Bytes::gib(16.0)));
        assert_eq!(m.arena + m.pool_rounding, hw.pool_reserved(m.arena));
        assert!(m.fits() && m.headroom() == (Bytes::gib(12.0).0 - m.device.0) as i128);
        let f = m.figures();
        assert_eq!(f.iter().map(|f| f.name).collect::<Vec<_>>(), ["live peak", "arena", "device", "headroom", "host memory"]);
        assert_eq!(f[2].value, m.device.to_string());
        assert!(f[3].detail.starts_with("under the budget 12 GiB"), "{}", f[3].detail);
        assert!(f[4].detail.contains("a run may pin on h100-sxm"), "{}", f[4].detail);
        // Over the budget, the headroom says so.
        let over = MemoryFigures::of(&p, Bytes::gib(10.0), &hw);
        assert!(!over.fits() && over.headroom_words().ends_with("over the budget"));
        assert!(over.figures()[3].detail.starts_with("over the budget"));
    }

    #[test]
    fn a_schedule_without_a_device_figure_still_adds_up() {
        let hw = hw();
        let mut p = prediction(&hw, Bytes::gib(1.0), Bytes::gib(1.0), Bytes::ZERO);
        (p.arena, p.device) = (None, None);
        let m = MemoryFigures::of(&p, Bytes::gib(2.0), &hw);
        assert_eq!(m.device, p.peak_allocated + p.fixed_overhead);
        assert_eq!(m.fixed_overhead + m.arena + m.pool_rounding + m.pinned_mapping, m.device);
        assert!(m.figures()[1].detail.starts_with("no static layout"));
    }

    #[test]
    fn the_step_is_the_sum_of_its_named_parts() {
        let ms = Seconds::from_ms;
        let b = StepBreakdown {
            step: ms(10.0),
            compute_busy: ms(6.0),
            recompute: ms(1.0),
            waiting_on_h2d: ms(1.5),
            waiting_on_d2h: ms(0.5),
            waiting_on_host: ms(1.0),
            waiting_on_launches: ms(0.5),
            after_compute: ms(0.5),
        };
        assert!((b.sum() - b.step).0.abs() < 1e-12);
        assert_eq!(b.exposed_transfer(), ms(2.0));
        let f = b.figures();
        assert_eq!(f[0].detail, "= compute busy + waiting on H2D + waiting on D2H + waiting on host + waiting on launches + after compute");
        assert_eq!((f[1].name, f[1].value.as_str()), ("compute busy", "6.00 ms"));
        assert!(f[1].detail.starts_with("60.0% of the step") && f[1].detail.contains("recomputation 1.00 ms"), "{}", f[1].detail);
        let lines = b.lines();
        assert!(lines[0].starts_with("step time ") && lines[2].starts_with("  waiting on H2D "), "{lines:?}");
        assert!(b.one_line().starts_with("step time 10.00 ms = compute busy 6.00 ms + waiting on H2D 1.50 ms"));
    }
}
