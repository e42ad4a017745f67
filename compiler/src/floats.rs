//! The narrow float encodings archc stores and computes with, as bits: bf16, IEEE half and
//! f8 e4m3fn to f32 (exact), and f32 to bf16 and half rounding to nearest even as PyTorch
//! does. One definition serves the kernel interpreter, the graph interpreter's weight
//! reads and the runtime's conversion of parameters, so every engine rounds alike.

/// f8 e4m3fn bits to `f32` (exact): 1 sign bit, 4 exponent bits with bias 7, 3 mantissa
/// bits; exponent 0 is zero or subnormal (`m * 2^-9`), `s.1111.111` is NaN (quiet, sign
/// kept), and there are no infinities (`s.1111.110` is ±448).
pub fn f8e4m3_to_f32(b: u8) -> f32 {
    let sign = u32::from(b >> 7) << 31;
    let exp = u32::from((b >> 3) & 0xf);
    let man = u32::from(b & 0x7);
    match (exp, man) {
        (0, _) => {
            // Zero or subnormal: man * 2^-9, exact in f32.
            let mag = man as f32 * f32::from_bits(0x3b00_0000);
            if sign != 0 {
                -mag
            } else {
                mag
            }
        }
        (15, 7) => f32::from_bits(sign | 0x7fc0_0000),
        // Rebias 7 → 127 and move the 3 mantissa bits to the top of f32's 23.
        _ => f32::from_bits(sign | ((exp + 120) << 23) | (man << 20)),
    }
}

/// `bf16` bits to `f32` (exact).
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// `f32` to `bf16` bits, rounding to nearest even; NaN stays NaN (sign kept, quietened).
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) as u16) | 0x0040;
    }
    let lsb = (b >> 16) & 1;
    (b.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// IEEE half bits to `f32` (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    match exp {
        0 => {
            // Zero or subnormal: man * 2^-24, exact in f32.
            let mag = man as f32 * f32::from_bits(0x3380_0000);
            if sign != 0 {
                -mag
            } else {
                mag
            }
        }
        31 => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (man << 13)),
    }
}

/// `f32` to IEEE half bits, rounding to nearest even (overflow to infinity, gradual
/// underflow to subnormals); NaN stays NaN (sign kept, quietened).
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return if man == 0 {
            sign | 0x7c00
        } else {
            sign | 0x7e00 | (man >> 13) as u16
        };
    }
    // The exponent in half's bias.
    let e = exp - 127 + 15;
    if e >= 31 {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // A half subnormal (or zero): the significand with its implicit bit, in units of
        // 2^-24, is `m >> (14 - e)`.
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let halfway = 1 << (shift - 1);
        let up = rem > halfway || (rem == halfway && half & 1 == 1);
        // A carry out of the subnormal range correctly yields the smallest normal.
        return sign | (half + u32::from(up)) as u16;
    }
    let half = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    let up = rem > 0x1000 || (rem == 0x1000 && half & 1 == 1);
    // A carry into the exponent is right, including the one to infinity.
    sign | (half + u32::from(up)) as u16
}
