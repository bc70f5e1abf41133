//! The stage-time formula: a stage's linear quantities ([`StageTerms`]) and the rates that turn
//! them into the time of its slowest lane ([`Rates`]).
//!
//! A stage lasts as long as its slowest lane (the emitted schedule makes every lane finish a
//! stage's work before the next stage starts):
//!   T_s = max( compute_s,
//!              both copy lanes together: max(b/d2h + a*k1, a/h2d + b*k2)  (duplex, exact for
//!              two copies that start together: k1 = (1 - d2h_dup/d2h)/h2d_dup, k2 likewise),
//!              host chain: host-bound copies at the duplex rate + host work + copies that wait
//!              for it )
//! with a, b the stage's H2D and D2H bytes; where the profile says host work and copies slow
//! each other (`host_sharing`), the copy lanes and the host chain take the extra time of running
//! beside each other ([`Rates::lanes`]).

use models::hardware::{HostSharing, Shares};
use models::HardwareProfile;

/// Linear per-stage quantities of one group choice (or of the fixed part).
#[derive(Clone, Debug, Default)]
pub struct StageTerms {
    /// Compute-lane seconds (host-run ops subtract their GPU time, recomputation adds).
    pub compute: f64,
    pub h2d: f64,
    pub d2h: f64,
    /// D2H bytes host work of this stage reads.
    pub feed: f64,
    /// Host seconds.
    pub host: f64,
    /// H2D bytes that wait for this stage's host work.
    pub after_host: f64,
}

impl StageTerms {
    /// Adds `k` times `o`.
    pub fn add_scaled(&mut self, o: &StageTerms, k: f64) {
        self.compute += k * o.compute;
        self.h2d += k * o.h2d;
        self.d2h += k * o.d2h;
        self.feed += k * o.feed;
        self.host += k * o.host;
        self.after_host += k * o.after_host;
    }
}

impl StageTerms {
    /// Equal up to rounding (1e-12 relative): two choices that put these terms into a stage
    /// are one class there.
    pub fn approx_eq(&self, o: &StageTerms) -> bool {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * (1.0 + x.abs().max(y.abs()));
        close(self.compute, o.compute)
            && close(self.h2d, o.h2d)
            && close(self.d2h, o.d2h)
            && close(self.feed, o.feed)
            && close(self.host, o.host)
            && close(self.after_host, o.after_host)
    }
}

impl std::ops::Add<&StageTerms> for &StageTerms {
    type Output = StageTerms;
    fn add(self, o: &StageTerms) -> StageTerms {
        let mut t = self.clone();
        t.add_scaled(o, 1.0);
        t
    }
}

impl std::ops::Sub<&StageTerms> for &StageTerms {
    type Output = StageTerms;
    fn sub(self, o: &StageTerms) -> StageTerms {
        let mut t = self.clone();
        t.add_scaled(o, -1.0);
        t
    }
}

/// Rate constants of the stage-time formula.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    pub h2d: f64,
    pub d2h: f64,
    pub h2d_dup: f64,
    pub d2h_dup: f64,
    pub k1: f64,
    pub k2: f64,
    /// Host work beside copies one way (`HardwareProfile::host_sharing`; all 1 without): the
    /// shares of their speed host work and the copies keep.
    pub beside_h2d: Shares,
    pub beside_d2h: Shares,
}

impl Rates {
    pub fn new(hw: &HardwareProfile) -> Rates {
        let (h2d, d2h, h2d_dup, d2h_dup) = (hw.h2d.0, hw.d2h.0, hw.h2d_duplex.0, hw.d2h_duplex.0);
        let sharing = hw.host_sharing;
        let pick = |f: fn(&HostSharing) -> Shares| sharing.as_ref().map(f).unwrap_or(Shares::FULL);
        Rates {
            h2d,
            d2h,
            h2d_dup,
            d2h_dup,
            k1: (1.0 - d2h_dup / d2h).max(0.0) / h2d_dup,
            k2: (1.0 - h2d_dup / h2d).max(0.0) / d2h_dup,
            beside_h2d: pick(|h| h.beside_h2d),
            beside_d2h: pick(|h| h.beside_d2h),
        }
    }

    /// The stage's lane expressions, each linear in the terms; the stage lasts as long as the
    /// largest (the host ones only count with host work). Copies and host work beside them slow
    /// each other: for two parties started together, one keeping share s1 and the other s2, the
    /// last ends at max(W1 + W2 (1 - s1)/s2, W2 + W1 (1 - s2)/s1) (W: time alone), exact like
    /// the duplex rows; host work is paired with each direction's copies that do not feed it
    /// or wait for it, at the shares measured beside that direction alone.
    pub fn lanes(&self, t: &StageTerms) -> [f64; 5] {
        // Host work starts once its feed is in: the H2D copies that started with the stage have
        // run that long already (negative means none left beside it; the D2H row then binds,
        // as it is never below the chain). The D2H lane moves the feed first, so the rest of
        // its copies all run beside the host work.
        let h2d_beside = (t.h2d - t.after_host) / self.h2d_dup - t.feed / self.d2h_dup;
        let d2h_beside = (t.d2h - t.feed) / self.d2h_dup;
        let chain = t.feed / self.d2h_dup + t.host + t.after_host / self.h2d_dup;
        let (h, d) = (self.beside_h2d, self.beside_d2h);
        [
            t.compute,
            t.d2h / self.d2h + t.h2d * self.k1 + t.host * (1.0 - d.d2h) / d.host,
            t.h2d / self.h2d + t.d2h * self.k2 + t.host * (1.0 - h.h2d) / h.host,
            chain + h2d_beside * (1.0 - h.host) / h.h2d,
            chain + d2h_beside * (1.0 - d.host) / d.d2h,
        ]
    }

    /// Which of [`Self::lanes`] are host lanes (zero without host work).
    pub const HOST_LANES: [bool; 5] = [false, false, false, true, true];

    /// Time for both copy lanes to finish a stage's copies started together (no host work).
    pub fn copies(&self, a: f64, b: f64) -> f64 {
        (b / self.d2h + a * self.k1).max(a / self.h2d + b * self.k2)
    }

    pub fn stage_time(&self, t: &StageTerms) -> f64 {
        let host = t.host > 0.0 || t.after_host > 0.0;
        self.lanes(t).iter().zip(Self::HOST_LANES).filter(|(_, h)| host || !h).map(|(x, _)| *x).fold(0.0, f64::max)
    }
}
