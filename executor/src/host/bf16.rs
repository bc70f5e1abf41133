//! bf16 <-> f32 conversion as the kernels do it: widening is exact (the 16 bits become the top
//! half of an f32); narrowing rounds to nearest, ties to even (`__float2bfloat16_rn`).
//!
//! `f32_to_bf16` is a branch-free form of `half::bf16::from_f32` (bit-for-bit the same on every
//! f32, NaNs included; the tests check it) so that the host loops that call it vectorise.
//! NaN: both keep the payload's top bits and set the quiet bit; the GPU's `cvt.rn.bf16.f32`
//! returns the canonical 0x7FFF instead. Only NaN inputs differ.

pub use half::bf16;
use half::slice::HalfBitsSliceExt;

/// f32 -> bf16, round to nearest, ties to even.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> bf16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
    let nan = (b >> 16) | 0x0040;
    bf16::from_bits(if x.is_nan() { nan } else { rounded } as u16)
}

/// bf16 -> f32, exact.
#[inline(always)]
pub fn bf16_to_f32(x: bf16) -> f32 {
    f32::from_bits((x.to_bits() as u32) << 16)
}

/// Converts `src` into `dst` (same length) with [`f32_to_bf16`].
pub fn f32_slice_to_bf16(src: &[f32], dst: &mut [bf16]) {
    assert_eq!(src.len(), dst.len(), "f32_slice_to_bf16: lengths differ");
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32_to_bf16(*s);
    }
}

/// Converts `src` into `dst` (same length) with [`bf16_to_f32`].
pub fn bf16_slice_to_f32(src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "bf16_slice_to_f32: lengths differ");
    for (d, s) in dst.iter_mut().zip(src) {
        *d = bf16_to_f32(*s);
    }
}

/// Views raw bf16 bits (e.g. a pinned staging buffer handed out as `u16`) as bf16, no copy.
pub fn as_bf16(bits: &[u16]) -> &[bf16] {
    bits.reinterpret_cast()
}

/// Mutable form of [`as_bf16`].
pub fn as_bf16_mut(bits: &mut [u16]) -> &mut [bf16] {
    bits.reinterpret_cast_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(x: f32) {
        assert_eq!(f32_to_bf16(x).to_bits(), bf16::from_f32(x).to_bits(), "{x:e} ({:#010x})", x.to_bits());
    }

    #[test]
    fn rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)).to_bits(), 0x3F80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: goes up to even.
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)).to_bits(), 0x3F82);
        // just above a tie rounds up, just below rounds down
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8001)).to_bits(), 0x3F81);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_7FFF)).to_bits(), 0x3F80);
        // the largest finite f32 rounds to infinity, as in round-to-nearest
        assert_eq!(f32_to_bf16(f32::MAX).to_bits(), 0x7F80);
        assert_eq!(f32_to_bf16(-f32::MAX).to_bits(), 0xFF80);
        assert_eq!(f32_to_bf16(-0.0).to_bits(), 0x8000);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        for x in [0.0f32, 1.5, -2.75, 3.0e38, 1.0e-40, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(bf16_to_f32(f32_to_bf16(x)), bf16::from_f32(x).to_f32());
        }
    }

    #[test]
    fn equals_half_on_sampled_bit_patterns() {
        // every low-16-bit pattern (the rounding part) under a spread of high halves, NaNs and
        // infinities included, and a prime stride through all 2^32 patterns
        for hi in [0x0000u32, 0x0001, 0x3F80, 0x3F81, 0x7F7F, 0x7F80, 0x7FC0, 0x8000, 0xBF80, 0xFF7F, 0xFF80, 0xFFFF] {
            for lo in 0..=0xFFFFu32 {
                same(f32::from_bits(hi << 16 | lo));
            }
        }
        let mut b = 0u64;
        while b < 1 << 32 {
            same(f32::from_bits(b as u32));
            b += 4099;
        }
    }

    #[test]
    #[ignore = "all 2^32 f32 values: run with --ignored in release"]
    fn equals_half_on_every_f32() {
        for b in 0..=u32::MAX {
            same(f32::from_bits(b));
        }
    }

    #[test]
    fn widening_is_exact_and_slices_convert() {
        let bits: Vec<u16> = vec![0x3F80, 0xC040, 0x0001, 0x7F80];
        let h = as_bf16(&bits);
        let mut f = vec![0.0; 4];
        bf16_slice_to_f32(h, &mut f);
        assert_eq!(f, vec![1.0, -3.0, f32::from_bits(0x0001_0000), f32::INFINITY]);
        let mut back = vec![0u16; 4];
        f32_slice_to_bf16(&f, as_bf16_mut(&mut back));
        assert_eq!(back, bits);
    }
}
