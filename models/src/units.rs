//! Typed units that cross crate boundaries: bytes, seconds, rates.
//!
//! Sizes parse from and print as human strings (`24GiB`, `22.5GB`, `512MiB`); a plain number is bytes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, Sub, SubAssign};
use std::str::FromStr;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// A number of bytes. Serialised as a human string (`"24 GiB"`) so that files stay readable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

impl Bytes {
    /// A budget with no limit (a quarter of the range, so that sums of a few never overflow).
    pub const UNLIMITED: Bytes = Bytes(u64::MAX / 4);
    pub const ZERO: Bytes = Bytes(0);

    pub fn gib(x: f64) -> Bytes {
        Bytes((x * GIB as f64).round() as u64)
    }
    pub fn mib(x: f64) -> Bytes {
        Bytes((x * MIB as f64).round() as u64)
    }
    pub fn as_gib(self) -> f64 {
        self.0 as f64 / GIB as f64
    }
    pub fn as_mib(self) -> f64 {
        self.0 as f64 / MIB as f64
    }
    pub fn as_f64(self) -> f64 {
        self.0 as f64
    }
    pub fn saturating_sub(self, o: Bytes) -> Bytes {
        Bytes(self.0.saturating_sub(o.0))
    }
    /// Rounds up to a multiple of `granule` (allocator granularity).
    pub fn round_up(self, granule: Bytes) -> Bytes {
        if granule.0 <= 1 {
            return self;
        }
        Bytes(self.0.div_ceil(granule.0) * granule.0)
    }
}

impl Add for Bytes {
    type Output = Bytes;
    fn add(self, o: Bytes) -> Bytes {
        Bytes(self.0 + o.0)
    }
}
impl AddAssign for Bytes {
    fn add_assign(&mut self, o: Bytes) {
        self.0 += o.0
    }
}
impl Sub for Bytes {
    type Output = Bytes;
    fn sub(self, o: Bytes) -> Bytes {
        Bytes(self.0 - o.0)
    }
}
impl SubAssign for Bytes {
    fn sub_assign(&mut self, o: Bytes) {
        self.0 -= o.0
    }
}
impl Mul<u64> for Bytes {
    type Output = Bytes;
    fn mul(self, k: u64) -> Bytes {
        Bytes(self.0 * k)
    }
}
impl Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(it: I) -> Bytes {
        Bytes(it.map(|b| b.0).sum())
    }
}
impl<'a> Sum<&'a Bytes> for Bytes {
    fn sum<I: Iterator<Item = &'a Bytes>>(it: I) -> Bytes {
        Bytes(it.map(|b| b.0).sum())
    }
}
impl Div<BytesPerSecond> for Bytes {
    type Output = Seconds;
    fn div(self, r: BytesPerSecond) -> Seconds {
        Seconds(self.0 as f64 / r.0)
    }
}

impl fmt::Display for Bytes {
    /// Binary units with three significant decimals at most: `1.5 GiB`, `384 MiB`, `12 B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        let (v, unit) = if b >= GIB {
            (b as f64 / GIB as f64, "GiB")
        } else if b >= MIB {
            (b as f64 / MIB as f64, "MiB")
        } else if b >= KIB {
            (b as f64 / KIB as f64, "KiB")
        } else {
            return write!(f, "{b} B");
        };
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        write!(f, "{s} {unit}")
    }
}

/// Error for a size string that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseBytesError {
    #[error("`{input}` is not a size: write a number with a unit, such as 24GiB, 22.5GB, 512MiB or 1000000 (bytes)")]
    NotASize { input: String },
    #[error("`{input}` is more than 4 EiB: no machine has that much memory")]
    TooLarge { input: String },
}

impl FromStr for Bytes {
    type Err = ParseBytesError;
    fn from_str(s: &str) -> Result<Bytes, ParseBytesError> {
        let err = || ParseBytesError::NotASize { input: s.to_string() };
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: f64 = num.replace('_', "").parse().map_err(|_| err())?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kib" | "k" => KIB as f64,
            "mib" | "m" => MIB as f64,
            "gib" | "g" => GIB as f64,
            "tib" | "t" => (GIB * 1024) as f64,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "tb" => 1e12,
            _ => return Err(err()),
        };
        if !num.is_finite() || num < 0.0 {
            return Err(err());
        }
        let bytes = num * mult;
        if bytes > Bytes::UNLIMITED.0 as f64 {
            return Err(ParseBytesError::TooLarge { input: s.to_string() });
        }
        Ok(Bytes(bytes.round() as u64))
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Exact byte counts: a readable unit only when it is exact.
        let b = self.0;
        let text = if b > 0 && b.is_multiple_of(GIB) {
            format!("{}GiB", b / GIB)
        } else if b > 0 && b.is_multiple_of(MIB) {
            format!("{}MiB", b / MIB)
        } else {
            format!("{b}")
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(Bytes(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

impl Seconds {
    pub const ZERO: Seconds = Seconds(0.0);
    pub fn is_zero(&self) -> bool {
        self.0 == 0.0
    }
    pub fn ms(self) -> f64 {
        self.0 * 1e3
    }
    pub fn from_ms(ms: f64) -> Seconds {
        Seconds(ms * 1e-3)
    }
    pub fn max(self, o: Seconds) -> Seconds {
        Seconds(self.0.max(o.0))
    }
    pub fn min(self, o: Seconds) -> Seconds {
        Seconds(self.0.min(o.0))
    }
}
impl Add for Seconds {
    type Output = Seconds;
    fn add(self, o: Seconds) -> Seconds {
        Seconds(self.0 + o.0)
    }
}
impl AddAssign for Seconds {
    fn add_assign(&mut self, o: Seconds) {
        self.0 += o.0
    }
}
impl Sub for Seconds {
    type Output = Seconds;
    fn sub(self, o: Seconds) -> Seconds {
        Seconds(self.0 - o.0)
    }
}
impl Mul<f64> for Seconds {
    type Output = Seconds;
    fn mul(self, k: f64) -> Seconds {
        Seconds(self.0 * k)
    }
}
impl Sum for Seconds {
    fn sum<I: Iterator<Item = Seconds>>(it: I) -> Seconds {
        Seconds(it.map(|s| s.0).sum())
    }
}
impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.abs() >= 1.0 {
            write!(f, "{s:.3} s")
        } else if s.abs() >= 1e-3 {
            write!(f, "{:.2} ms", s * 1e3)
        } else {
            write!(f, "{:.1} us", s * 1e6)
        }
    }
}

/// A transfer or memory rate.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BytesPerSecond(pub f64);

impl BytesPerSecond {
    pub fn gb_per_s(x: f64) -> Self {
        BytesPerSecond(x * 1e9)
    }
    pub fn as_gb_per_s(self) -> f64 {
        self.0 / 1e9
    }
}

/// A count of floating-point operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Flops(pub f64);

impl Add for Flops {
    type Output = Flops;
    fn add(self, o: Flops) -> Flops {
        Flops(self.0 + o.0)
    }
}
impl Sum for Flops {
    fn sum<I: Iterator<Item = Flops>>(it: I) -> Flops {
        Flops(it.map(|s| s.0).sum())
    }
}
impl Div<FlopsPerSecond> for Flops {
    type Output = Seconds;
    fn div(self, r: FlopsPerSecond) -> Seconds {
        Seconds(self.0 / r.0)
    }
}

/// An arithmetic rate.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FlopsPerSecond(pub f64);

impl FlopsPerSecond {
    pub fn tflops(x: f64) -> Self {
        FlopsPerSecond(x * 1e12)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!("24GiB".parse::<Bytes>().unwrap(), Bytes(24 * GIB));
        assert_eq!("22.5GB".parse::<Bytes>().unwrap(), Bytes(22_500_000_000));
        assert_eq!("512 MiB".parse::<Bytes>().unwrap(), Bytes(512 * MIB));
        assert_eq!("1000".parse::<Bytes>().unwrap(), Bytes(1000));
        assert!("twelve".parse::<Bytes>().is_err());
        assert!("12 parsecs".parse::<Bytes>().is_err());
        assert!("-3GiB".parse::<Bytes>().is_err());
    }

    #[test]
    fn displays_sizes() {
        assert_eq!(Bytes(24 * GIB).to_string(), "24 GiB");
        assert_eq!(Bytes(3 * GIB / 2).to_string(), "1.5 GiB");
        assert_eq!(Bytes(12).to_string(), "12 B");
    }

    #[test]
    fn round_trips_through_ron() {
        for b in [Bytes(0), Bytes(7), Bytes(3 * MIB), Bytes(24 * GIB), Bytes(GIB + 1)] {
            let s = ron::to_string(&b).unwrap();
            assert_eq!(ron::from_str::<Bytes>(&s).unwrap(), b, "{s}");
        }
    }

    #[test]
    fn rounds_up_to_granule() {
        assert_eq!(Bytes(1).round_up(Bytes(512)), Bytes(512));
        assert_eq!(Bytes(512).round_up(Bytes(512)), Bytes(512));
        assert_eq!(Bytes(513).round_up(Bytes(512)), Bytes(1024));
    }
}
