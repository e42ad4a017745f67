//! RoPE frequency tables: the inverse frequencies and cos/sin attention factor of every
//! scaling scheme, following HF transformers' `modeling_rope_utils.py` formulas.

use super::RopeOp;
use archc_spec::RopeScaling;
use std::f64::consts::PI;

/// The `dims / 2` inverse frequencies of a rotary embedding and the factor its cos and
/// sin are multiplied by (1 except for YaRN).
pub fn inv_freq(r: &RopeOp) -> (Vec<f64>, f64) {
    let dim = r.dims as f64;
    let half = (r.dims / 2) as usize;
    let base: Vec<f64> = (0..half)
        .map(|i| 1.0 / r.theta.powf((2 * i) as f64 / dim))
        .collect();
    match &r.scaling {
        RopeScaling::None => (base, 1.0),
        RopeScaling::Linear { factor } => (base.iter().map(|f| f / factor).collect(), 1.0),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        } => {
            let old = *original_context as f64;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            let freqs = base
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (freqs, 1.0)
        }
        RopeScaling::Yarn {
            factor,
            original_context,
            beta_fast,
            beta_slow,
            mscale,
            mscale_all_dim,
            attention_factor,
            truncate,
        } => {
            let attn = match attention_factor {
                Some(a) => *a,
                None if *mscale != 0.0 && *mscale_all_dim != 0.0 => {
                    yarn_mscale(*factor, *mscale) / yarn_mscale(*factor, *mscale_all_dim)
                }
                None => yarn_mscale(*factor, 1.0),
            };
            let correction_dim = |rotations: f64| {
                dim * (*original_context as f64 / (rotations * 2.0 * PI)).ln()
                    / (2.0 * r.theta.ln())
            };
            let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
            if *truncate {
                low = low.floor();
                high = high.ceil();
            }
            let low = low.max(0.0);
            let mut high = high.min(dim - 1.0);
            if low == high {
                high += 0.001;
            }
            let freqs = base
                .iter()
                .enumerate()
                .map(|(i, &extrapolation)| {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let keep = 1.0 - ramp;
                    let interpolation = extrapolation / factor;
                    interpolation * (1.0 - keep) + extrapolation * keep
                })
                .collect();
            (freqs, attn)
        }
    }
}

/// YaRN's magnitude correction `0.1 * mscale * ln(scale) + 1` (1 for scale <= 1).
pub fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}
