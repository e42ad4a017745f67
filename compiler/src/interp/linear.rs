//! The linear-attention ops of the reference interpreter (Gated DeltaNet, Kimi Delta
//! Attention): the depthwise convolution, the decay gate and the gated delta rule, each
//! the textbook formula; the delta rule runs token by token, which is exact (the chunked
//! form HF uses for prompts is the same recurrence, reassociated).

use super::kernels::{broadcast2, Arg};
use super::{error, InterpError, Tensor};

/// `y[t, c] = Σ_j w[c, 0, j] * x[t + j, c]` for `t` in `[0, m - K + 1)`.
pub(super) fn depthwise_conv(
    x: &Tensor,
    w: &Tensor,
    shape: &[usize],
) -> Result<Tensor, InterpError> {
    let (m, c) = match x.shape.as_slice() {
        [m, c] => (*m, *c),
        s => return Err(error(format!("depthwise_conv of x {s:?}, not [m, C]"))),
    };
    let k = w.shape.last().copied().unwrap_or(0);
    if k == 0 || m + 1 < k || w.data.len() != c * k {
        return Err(error(format!(
            "depthwise_conv of x {:?} with w {:?}",
            x.shape, w.shape
        )));
    }
    let rows = m + 1 - k;
    let mut out = vec![0.0f32; rows * c];
    for t in 0..rows {
        for ch in 0..c {
            let mut acc = 0.0f32;
            for j in 0..k {
                acc += w.data[ch * k + j] * x.data[(t + j) * c + ch];
            }
            out[t * c + ch] = acc;
        }
    }
    Ok(Tensor::new(shape.to_vec(), out))
}

/// torch's `softplus` (beta 1, threshold 20): `ln(1 + e^x)`, and `x` itself above 20.
fn softplus(x: f64) -> f64 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// `g = -exp(a_log) * softplus(a + dt_bias)`, broadcast to the shape of `a`.
pub(super) fn decay_gate(a: &[Arg<'_>], shape: &[usize]) -> Tensor {
    let (x, a_log, dt_bias) = (a[0].tensor(), a[1].tensor(), a[2].tensor());
    let shifted = broadcast2(&x, &dt_bias, shape, |x, b| x + b);
    broadcast2(&shifted, &a_log, shape, |x, l| {
        (-(l as f64).exp() * softplus(x as f64)) as f32
    })
}

/// The gated delta rule (see `Op::DeltaRule`): outputs `[s, H, dv]` then the final state
/// `[dk, H, dv]`, stacked along axis 0.
pub(super) fn delta_rule(a: &[Arg<'_>], shape: &[usize]) -> Result<Tensor, InterpError> {
    let [q, k, v, g, beta, state] = [0, 1, 2, 3, 4, 5].map(|i| a[i].tensor());
    let (s, hk, dk) = match q.shape.as_slice() {
        [s, hk, dk] => (*s, *hk, *dk),
        other => return Err(error(format!("delta_rule q {other:?} is not [s, Hk, dk]"))),
    };
    let (h, dv) = match v.shape.as_slice() {
        [_, h, dv] => (*h, *dv),
        other => return Err(error(format!("delta_rule v {other:?} is not [s, H, dv]"))),
    };
    if hk == 0 || h % hk != 0 || state.data.len() != dk * h * dv {
        return Err(error(format!(
            "delta_rule with q {:?}, v {:?}, state {:?}",
            q.shape, v.shape, state.shape
        )));
    }
    let per_channel = g.shape.len() == 3;
    let group = h / hk;
    // The state per head as [dk, dv], from the operand's [dk, H, dv] layout.
    let mut st = vec![0.0f32; h * dk * dv];
    for i in 0..dk {
        for head in 0..h {
            for e in 0..dv {
                st[(head * dk + i) * dv + e] = state.data[(i * h + head) * dv + e];
            }
        }
    }
    let mut out = vec![0.0f32; (s + dk) * h * dv];
    let mut u = vec![0.0f32; dv];
    for t in 0..s {
        for head in 0..h {
            let kh = head / group;
            let qr = &q.data[(t * hk + kh) * dk..(t * hk + kh + 1) * dk];
            let kr = &k.data[(t * hk + kh) * dk..(t * hk + kh + 1) * dk];
            let vr = &v.data[(t * h + head) * dv..(t * h + head + 1) * dv];
            let b = beta.data[t * h + head];
            let sh = &mut st[head * dk * dv..(head + 1) * dk * dv];
            for i in 0..dk {
                let gi = if per_channel {
                    g.data[(t * h + head) * dk + i]
                } else {
                    g.data[t * h + head]
                };
                let decay = gi.exp();
                for x in &mut sh[i * dv..(i + 1) * dv] {
                    *x *= decay;
                }
            }
            // u = beta * (v - Sᵀ k)
            for (e, ue) in u.iter_mut().enumerate() {
                let mut kv = 0.0f32;
                for i in 0..dk {
                    kv += sh[i * dv + e] * kr[i];
                }
                *ue = (vr[e] - kv) * b;
            }
            for i in 0..dk {
                for e in 0..dv {
                    sh[i * dv + e] += kr[i] * u[e];
                }
            }
            let o = &mut out[(t * h + head) * dv..(t * h + head + 1) * dv];
            for (e, oe) in o.iter_mut().enumerate() {
                let mut acc = 0.0f32;
                for i in 0..dk {
                    acc += sh[i * dv + e] * qr[i];
                }
                *oe = acc;
            }
        }
    }
    for i in 0..dk {
        for head in 0..h {
            for e in 0..dv {
                out[((s + i) * h + head) * dv + e] = st[(head * dk + i) * dv + e];
            }
        }
    }
    Ok(Tensor::new(shape.to_vec(), out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::weights::Rows;

    fn arg(t: &Tensor) -> Arg<'_> {
        Arg {
            shape: t.shape.clone(),
            rows: Rows::F32(&t.data),
        }
    }

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), data.to_vec())
    }

    #[test]
    fn depthwise_conv_slides_over_the_rows() {
        // Two channels, kernel 2: y[t] = w0 * x[t] + w1 * x[t + 1].
        let x = t(&[3, 2], &[1.0, 10.0, 2.0, 20.0, 3.0, 30.0]);
        let w = t(&[2, 1, 2], &[1.0, 2.0, 0.5, -1.0]);
        let y = depthwise_conv(&x, &w, &[2, 2]).expect("fits");
        assert_eq!(y.data, vec![5.0, -15.0, 8.0, -20.0]);
    }

    #[test]
    fn decay_gate_is_minus_exp_a_log_times_softplus() {
        let a = t(&[1, 2], &[0.0, 30.0]);
        let a_log = t(&[2], &[0.0, 2f32.ln()]);
        let dt = t(&[2], &[0.0, -5.0]);
        let g = decay_gate(&[arg(&a), arg(&a_log), arg(&dt)], &[1, 2]);
        // softplus(0) = ln 2; above 20 softplus is the identity: 2 * 25.
        assert!((g.data[0] + 2f32.ln()).abs() < 1e-6, "{}", g.data[0]);
        assert!((g.data[1] + 50.0).abs() < 1e-4, "{}", g.data[1]);
    }

    #[test]
    fn delta_rule_follows_the_recurrence_by_hand() {
        // One head, dk = 1, dv = 2, two tokens, per-head decay exp(g) = 0.5, beta 0.5,
        // starting from S = [1, 2].
        let q = t(&[2, 1, 1], &[1.0, 2.0]);
        let k = t(&[2, 1, 1], &[1.0, 1.0]);
        let v = t(&[2, 1, 2], &[3.0, 4.0, 0.0, 1.0]);
        let g = t(&[2, 1], &[0.5f32.ln(), 0.5f32.ln()]);
        let beta = t(&[2, 1], &[0.5, 0.5]);
        let s0 = t(&[1, 1, 2], &[1.0, 2.0]);
        let out = delta_rule(
            &[arg(&q), arg(&k), arg(&v), arg(&g), arg(&beta), arg(&s0)],
            &[3, 1, 2],
        )
        .expect("fits");
        // Token 0: S = [0.5, 1]; u = 0.5 * ([3, 4] - [0.5, 1]) = [1.25, 1.5];
        // S = [1.75, 2.5]; o = S * 1.
        // Token 1: S = [0.875, 1.25]; u = 0.5 * ([0, 1] - S) = [-0.4375, -0.125];
        // S = [0.4375, 1.125]; o = 2 * S.
        let want = [1.75, 2.5, 0.875, 2.25, 0.4375, 1.125];
        for (x, y) in out.data.iter().zip(want) {
            assert!((x - y).abs() < 1e-6, "{:?} vs {want:?}", out.data);
        }
    }

    #[test]
    fn delta_rule_shares_key_heads_and_decays_per_channel() {
        // Two value heads on one key head (dk = 2, dv = 1), per-channel decay: channel 0
        // forgets everything, channel 1 keeps all of it.
        let q = t(&[1, 1, 2], &[1.0, 1.0]);
        let k = t(&[1, 1, 2], &[0.0, 0.0]);
        let v = t(&[1, 2, 1], &[5.0, 7.0]);
        let g = t(&[1, 2, 2], &[-1000.0, 0.0, -1000.0, 0.0]);
        let beta = t(&[1, 2], &[1.0, 1.0]);
        // State [dk, H, dv]: channel 0 holds 1 and 2, channel 1 holds 3 and 4.
        let s0 = t(&[2, 2, 1], &[1.0, 2.0, 3.0, 4.0]);
        let out = delta_rule(
            &[arg(&q), arg(&k), arg(&v), arg(&g), arg(&beta), arg(&s0)],
            &[3, 2, 1],
        )
        .expect("fits");
        // With k = 0 nothing is written: o = q · (decayed S) = channel 1 only.
        assert_eq!(out.data, vec![3.0, 4.0, 0.0, 0.0, 3.0, 4.0]);
    }
}
