//! Type rules: the result type of every `Op` from its operand types, or why they do not fit.
//!
//! Lowering uses these rules to type new nodes and the verifier re-runs them, so a graph
//! whose stored types disagree with its operands cannot pass verification.

use super::{AttnOp, BinaryOp, DType, Dim, MlaAttn, NormOp, Op, Type};

/// The result type of `op` applied to operands of types `ins`.
pub fn infer(op: &Op, ins: &[Type]) -> Result<Type, String> {
    match op {
        Op::Input { .. } => Err("an input's type is given, not inferred".to_string()),
        Op::Gather => {
            arity(ins, 2)?;
            let (table, ids) = (&ins[0], &ins[1]);
            int(ids, "ids")?;
            if table.shape.is_empty() {
                return Err("gather table must have rank >= 1".into());
            }
            let mut shape = ids.shape.clone();
            shape.extend_from_slice(&table.shape[1..]);
            Ok(Type::new(shape, DType::F32))
        }
        Op::MatMul => {
            arity(ins, 2)?;
            let (x, w) = (&ins[0], &ins[1]);
            float(x, "x")?;
            float(w, "w")?;
            if w.shape.len() != 2 || x.shape.is_empty() {
                return Err(format!(
                    "matmul wants x [..., k] and w [n, k], found {x} and {w}"
                ));
            }
            if x.shape[x.shape.len() - 1] != w.shape[1] {
                return Err(format!("matmul inner dims differ: x {x}, w {w}"));
            }
            let mut shape = x.shape.clone();
            *shape.last_mut().expect("rank checked above") = w.shape[0];
            Ok(Type::new(shape, DType::F32))
        }
        Op::ExpertMatMul => {
            arity(ins, 3)?;
            let (x, w, idx) = (&ins[0], &ins[1], &ins[2]);
            float(x, "x")?;
            float(w, "w")?;
            int(idx, "indices")?;
            if w.shape.len() != 3 || idx.shape.len() != 2 {
                return Err(format!(
                    "expert_matmul wants w [E, n, k] and indices [s, slots], found {w} and {idx}"
                ));
            }
            let k = w.shape[2];
            let ok = match x.shape.as_slice() {
                [s, kk] => *s == idx.shape[0] && *kk == k,
                [s, slots, kk] => *s == idx.shape[0] && *slots == idx.shape[1] && *kk == k,
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "expert_matmul operands do not fit: x {x}, w {w}, indices {idx}"
                ));
            }
            Ok(Type::new(
                vec![idx.shape[0], idx.shape[1], w.shape[1]],
                DType::F32,
            ))
        }
        Op::Unary(_) => {
            arity(ins, 1)?;
            float(&ins[0], "x")?;
            Ok(Type::new(ins[0].shape.clone(), DType::F32))
        }
        Op::Binary(b) => {
            arity(ins, 2)?;
            float(&ins[0], "lhs")?;
            float(&ins[1], "rhs")?;
            broadcast(&ins[0].shape, &ins[1].shape)
                .map(|s| Type::new(s, DType::F32))
                .ok_or_else(|| {
                    format!(
                        "{} operands do not broadcast: {} and {}",
                        binary_name(*b),
                        ins[0],
                        ins[1]
                    )
                })
        }
        Op::Norm(n) => norm(n, ins),
        Op::Reshape { shape } => {
            arity(ins, 1)?;
            if !same_size(&ins[0].shape, shape) {
                return Err(format!(
                    "reshape of {} to {} changes the element count",
                    ins[0],
                    Type::new(shape.clone(), ins[0].dtype)
                ));
            }
            Ok(Type::new(shape.clone(), ins[0].dtype))
        }
        Op::Slice { axis, start, end } => {
            arity(ins, 1)?;
            let x = &ins[0];
            let d = *x
                .shape
                .get(*axis)
                .ok_or_else(|| format!("slice axis {axis} out of range for {x}"))?;
            let n = d
                .as_const()
                .ok_or_else(|| format!("slice along symbolic axis {axis} of {x}"))?;
            if start >= end || *end > n {
                return Err(format!(
                    "slice [{start}..{end}) out of range for axis {axis} of {x}"
                ));
            }
            let mut shape = x.shape.clone();
            shape[*axis] = Dim::c(end - start);
            Ok(Type::new(shape, x.dtype))
        }
        Op::LastRow => {
            arity(ins, 1)?;
            let x = &ins[0];
            let n = *x
                .shape
                .first()
                .ok_or_else(|| format!("last_row of a scalar {x}"))?;
            if n == Dim::c(0) {
                return Err(format!("last_row of {x}, which has no rows"));
            }
            let mut shape = x.shape.clone();
            shape[0] = Dim::c(1);
            Ok(Type::new(shape, x.dtype))
        }
        Op::TailRows { n } => {
            arity(ins, 1)?;
            let x = &ins[0];
            rows_at_least(x, *n, "tail_rows")?;
            let mut shape = x.shape.clone();
            shape[0] = Dim::c(*n);
            Ok(Type::new(shape, x.dtype))
        }
        Op::DropTailRows { n } => {
            arity(ins, 1)?;
            let x = &ins[0];
            let m = rows_at_least(x, *n, "drop_tail_rows")?;
            let mut shape = x.shape.clone();
            shape[0] = Dim {
                konst: m.konst - n,
                ..m
            };
            Ok(Type::new(shape, x.dtype))
        }
        Op::DepthwiseConv => {
            arity(ins, 2)?;
            let (x, w) = (&ins[0], &ins[1]);
            float(x, "x")?;
            float(w, "w")?;
            let bad =
                || format!("depthwise_conv wants x [m, C] and w [C, 1, K], found {x} and {w}");
            let ([_, c], [wc, one, k]) = (x.shape.as_slice(), w.shape.as_slice()) else {
                return Err(bad());
            };
            let Some(k) = k.as_const() else {
                return Err(bad());
            };
            if c != wc || *one != Dim::c(1) || k == 0 {
                return Err(bad());
            }
            let m = rows_at_least(x, k - 1, "depthwise_conv")?;
            Ok(Type::new(
                vec![
                    Dim {
                        konst: m.konst - (k - 1),
                        ..m
                    },
                    *c,
                ],
                DType::F32,
            ))
        }
        Op::DecayGate => {
            arity(ins, 3)?;
            for (t, what) in ins.iter().zip(["a", "a_log", "dt_bias"]) {
                float(t, what)?;
            }
            let all =
                broadcast(&ins[0].shape, &ins[1].shape).and_then(|s| broadcast(&s, &ins[2].shape));
            if all.as_deref() != Some(ins[0].shape.as_slice()) {
                return Err(format!(
                    "decay_gate operands do not broadcast to a: a {}, a_log {}, dt_bias {}",
                    ins[0], ins[1], ins[2]
                ));
            }
            Ok(Type::new(ins[0].shape.clone(), DType::F32))
        }
        Op::DeltaRule => delta_rule(ins),
        Op::Expand { shape } => {
            arity(ins, 1)?;
            if broadcast(&ins[0].shape, shape).as_deref() != Some(shape.as_slice()) {
                return Err(format!(
                    "{} does not broadcast to {}",
                    ins[0],
                    Type::new(shape.clone(), ins[0].dtype)
                ));
            }
            Ok(Type::new(shape.clone(), ins[0].dtype))
        }
        Op::Concat { axis } => {
            arity(ins, 2)?;
            let (a, b) = (&ins[0], &ins[1]);
            let ok = a.dtype == b.dtype
                && a.shape.len() == b.shape.len()
                && *axis < a.shape.len()
                && a.shape
                    .iter()
                    .zip(&b.shape)
                    .enumerate()
                    .all(|(i, (x, y))| i == *axis || x == y);
            if !ok {
                return Err(format!("concat along axis {axis} of {a} and {b}"));
            }
            let mut shape = a.shape.clone();
            shape[*axis] = a.shape[*axis].plus(b.shape[*axis]);
            Ok(Type::new(shape, a.dtype))
        }
        Op::Sum { axis } => {
            arity(ins, 1)?;
            float(&ins[0], "x")?;
            if *axis >= ins[0].shape.len() {
                return Err(format!("sum axis {axis} out of range for {}", ins[0]));
            }
            let mut shape = ins[0].shape.clone();
            shape.remove(*axis);
            Ok(Type::new(shape, DType::F32))
        }
        Op::Rope(r) => {
            arity(ins, 2)?;
            let (x, pos) = (&ins[0], &ins[1]);
            float(x, "x")?;
            int(pos, "positions")?;
            let ok = x.shape.len() == 3
                && pos.shape.len() == 1
                && x.shape[0] == pos.shape[0]
                && r.dims % 2 == 0
                && r.dims > 0
                && x.shape[2].as_const().is_some_and(|d| r.dims <= d);
            if !ok {
                return Err(format!("rope of {} dims wants x [s, heads, d >= dims] and positions [s], found {x} and {pos}", r.dims));
            }
            Ok(Type::new(x.shape.clone(), DType::F32))
        }
        Op::Attention(a) => {
            arity(ins, if a.sinks { 5 } else { 4 })?;
            if let Some(m) = a.mla {
                return mla_attention(a, m, ins);
            }
            let (q, k, v, pos) = (&ins[0], &ins[1], &ins[2], &ins[3]);
            for (t, what) in [(q, "q"), (k, "k"), (v, "v")] {
                float(t, what)?;
                if t.shape.len() != 3 {
                    return Err(format!(
                        "attention {what} must be [tokens, heads, dim], found {t}"
                    ));
                }
            }
            int(pos, "positions")?;
            let heads = q.shape[1].as_const().unwrap_or(0);
            let kv = k.shape[1].as_const().unwrap_or(0);
            let ok = pos.shape == [q.shape[0]]
                && k.shape[0] == v.shape[0]
                && k.shape[1] == v.shape[1]
                && q.shape[2] == k.shape[2]
                && kv > 0
                && heads % kv == 0;
            if !ok {
                return Err(format!(
                    "attention operands do not fit: q {q}, k {k}, v {v}, positions {pos}"
                ));
            }
            if a.sinks {
                float(&ins[4], "sinks")?;
                if ins[4].shape != [q.shape[1]] {
                    return Err(format!("attention sinks must be [heads], found {}", ins[4]));
                }
            }
            Ok(Type::new(
                vec![q.shape[0], q.shape[1], v.shape[2]],
                DType::F32,
            ))
        }
        Op::AttnTemperature { .. } => {
            arity(ins, 1)?;
            int(&ins[0], "positions")?;
            if ins[0].shape.len() != 1 {
                return Err(format!(
                    "attn_temperature wants positions [s], found {}",
                    ins[0]
                ));
            }
            Ok(Type::new(
                vec![ins[0].shape[0], Dim::c(1), Dim::c(1)],
                DType::F32,
            ))
        }
        Op::RouterSelect(r) => {
            arity(ins, if r.correction_bias { 2 } else { 1 })?;
            let logits = &ins[0];
            float(logits, "logits")?;
            let e = match logits.shape.as_slice() {
                [_, e] => e.as_const().unwrap_or(0),
                _ => 0,
            };
            if e == 0 || r.top_k == 0 || r.top_k > e {
                return Err(format!(
                    "router_select of top {} wants logits [s, E >= k], found {logits}",
                    r.top_k
                ));
            }
            if r.correction_bias && ins[1].shape != [Dim::c(e)] {
                return Err(format!(
                    "router correction bias must be [{e}], found {}",
                    ins[1]
                ));
            }
            if let Some((count, keep)) = r.groups {
                if count == 0 || e % count != 0 || keep == 0 || keep > count || e / count < 2 {
                    return Err(format!(
                        "router groups {count} (keep {keep}) do not divide {e} experts"
                    ));
                }
            }
            Ok(Type::new(
                vec![logits.shape[0], Dim::c(r.top_k)],
                DType::I32,
            ))
        }
        Op::RouterWeights(_) => {
            arity(ins, 2)?;
            let (logits, idx) = (&ins[0], &ins[1]);
            float(logits, "logits")?;
            int(idx, "indices")?;
            if logits.shape.len() != 2 || idx.shape.len() != 2 || logits.shape[0] != idx.shape[0] {
                return Err(format!("router_weights wants logits [s, E] and indices [s, k], found {logits} and {idx}"));
            }
            Ok(Type::new(idx.shape.clone(), DType::F32))
        }
        Op::ClampedSwiglu { .. } => {
            arity(ins, 2)?;
            float(&ins[0], "gate")?;
            float(&ins[1], "up")?;
            if ins[0].shape != ins[1].shape {
                return Err(format!(
                    "clamped_swiglu operands differ: {} and {}",
                    ins[0], ins[1]
                ));
            }
            Ok(Type::new(ins[0].shape.clone(), DType::F32))
        }
        Op::Linear(l) => super::fused::infer_linear(l, ins),
        Op::Elementwise(e) => super::fused::infer_elementwise(e, ins),
        Op::NormRope(n) => super::fused::infer_norm_rope(n, ins),
        Op::FlashAttention(f) => super::fused::infer_flash(f, ins),
        Op::Moe(m) => super::fused::infer_moe(m, ins),
    }
}

/// `Op::Attention` over MLA's latent cache (see `MlaAttn`): `q [s, H, nope + rope]`,
/// `kv [t, 1, rank + rope]`, `w [H * (nope + v), rank]`, `positions [s]`, `[sinks [H]]`.
fn mla_attention(a: &AttnOp, m: MlaAttn, ins: &[Type]) -> Result<Type, String> {
    let (q, kv, w, pos) = (&ins[0], &ins[1], &ins[2], &ins[3]);
    float(q, "q")?;
    float(kv, "latent kv")?;
    float(w, "kv_b weight")?;
    int(pos, "positions")?;
    let bad = || {
        format!(
            "mla attention (rank {}, nope {}, v {}) wants q [s, H, nope + rope], kv [t, 1, rank + rope], \
             w [H * (nope + v), rank] and positions [s], found q {q}, kv {kv}, w {w}, positions {pos}",
            m.rank, m.nope, m.v
        )
    };
    let ([s, h, qd], [_, one, kd], [rows, cols], [ps]) = (
        q.shape.as_slice(),
        kv.shape.as_slice(),
        w.shape.as_slice(),
        pos.shape.as_slice(),
    ) else {
        return Err(bad());
    };
    let (Some(heads), Some(qd), Some(kd)) = (h.as_const(), qd.as_const(), kd.as_const()) else {
        return Err(bad());
    };
    let ok = ps == s
        && *one == Dim::c(1)
        && m.rank > 0
        && m.v > 0
        && qd >= m.nope
        && kd >= m.rank
        && qd - m.nope == kd - m.rank
        && *rows == Dim::c(heads * (m.nope + m.v))
        && *cols == Dim::c(m.rank);
    if !ok {
        return Err(bad());
    }
    if a.sinks {
        float(&ins[4], "sinks")?;
        if ins[4].shape != [*h] {
            return Err(format!("attention sinks must be [heads], found {}", ins[4]));
        }
    }
    Ok(Type::new(vec![*s, *h, Dim::c(m.v)], DType::F32))
}

/// The rows of `x` along axis 0, which must be at least `n` for every binding.
fn rows_at_least(x: &Type, n: u64, what: &str) -> Result<Dim, String> {
    let m = *x
        .shape
        .first()
        .ok_or_else(|| format!("{what} of a scalar {x}"))?;
    if m.konst < n {
        return Err(format!(
            "{what} needs at least {n} rows along axis 0 of {x} for every seq and past"
        ));
    }
    Ok(m)
}

/// `Op::DeltaRule`: `q [s, Hk, dk]`, `k [s, Hk, dk]`, `v [s, H, dv]`, `g [s, H]` or
/// `[s, H, dk]`, `beta [s, H]`, `state [dk, H, dv]` → `[s + dk, H, dv]`.
fn delta_rule(ins: &[Type]) -> Result<Type, String> {
    arity(ins, 6)?;
    for (t, what) in ins.iter().zip(["q", "k", "v", "g", "beta", "state"]) {
        float(t, what)?;
    }
    let (q, k, v, g, beta, state) = (&ins[0], &ins[1], &ins[2], &ins[3], &ins[4], &ins[5]);
    let bad = || {
        format!(
            "delta_rule wants q [s, Hk, dk], k [s, Hk, dk], v [s, H, dv], g [s, H] or [s, H, dk], \
             beta [s, H] and state [dk, H, dv] with H a multiple of Hk, found q {q}, k {k}, v {v}, \
             g {g}, beta {beta}, state {state}"
        )
    };
    let ([s, hk, dk], [s_v, h, dv]) = (q.shape.as_slice(), v.shape.as_slice()) else {
        return Err(bad());
    };
    let (Some(heads), Some(kh), Some(kd)) = (h.as_const(), hk.as_const(), dk.as_const()) else {
        return Err(bad());
    };
    let g_ok = g.shape == [*s, *h] || g.shape == [*s, *h, *dk];
    let ok = k.shape == q.shape
        && s_v == s
        && g_ok
        && beta.shape == [*s, *h]
        && state.shape == [*dk, *h, *dv]
        && kh > 0
        && kd > 0
        && heads % kh == 0;
    if !ok {
        return Err(bad());
    }
    Ok(Type::new(vec![s.plus(*dk), *h, *dv], DType::F32))
}

fn norm(n: &NormOp, ins: &[Type]) -> Result<Type, String> {
    arity(ins, 1 + n.weight as usize + n.bias as usize)?;
    let x = &ins[0];
    float(x, "x")?;
    let last = *x.shape.last().ok_or("norm of a scalar")?;
    for t in &ins[1..] {
        float(t, "norm weight")?;
        if t.shape != [last] {
            return Err(format!(
                "norm weight/bias must be [{last}] to match x {x}, found {t}"
            ));
        }
    }
    if n.bias && n.kind != super::NormKind::Layer {
        return Err("only layernorm has a bias".into());
    }
    Ok(Type::new(x.shape.clone(), DType::F32))
}

fn arity(ins: &[Type], n: usize) -> Result<(), String> {
    if ins.len() == n {
        Ok(())
    } else {
        Err(format!("expected {n} operands, found {}", ins.len()))
    }
}

fn int(t: &Type, what: &str) -> Result<(), String> {
    if t.dtype == DType::I32 {
        Ok(())
    } else {
        Err(format!("{what} must be i32, found {t}"))
    }
}

fn float(t: &Type, what: &str) -> Result<(), String> {
    if t.dtype.is_float() {
        Ok(())
    } else {
        Err(format!("{what} must be a float tensor, found {t}"))
    }
}

fn binary_name(b: BinaryOp) -> &'static str {
    match b {
        BinaryOp::Add => "add",
        BinaryOp::Mul => "mul",
    }
}

/// Numpy broadcasting of two shapes, aligned at the trailing dims.
pub(crate) fn broadcast(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let n = a.len().max(b.len());
    let one = Dim::c(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let x = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            one
        };
        let y = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            one
        };
        out.push(if x == y || y == one {
            x
        } else if x == one {
            y
        } else {
            return None;
        });
    }
    Some(out)
}

/// Whether two shapes hold the same number of elements: their symbolic dims must match
/// as a multiset and their concrete dims must have the same product.
fn same_size(a: &[Dim], b: &[Dim]) -> bool {
    fn split(s: &[Dim]) -> (u64, Vec<(u64, u64, u64)>) {
        let mut prod = 1u64;
        let mut syms = Vec::new();
        for d in s {
            match d.as_const() {
                Some(n) => prod = prod.saturating_mul(n),
                None => syms.push((d.konst, d.seq, d.past)),
            }
        }
        syms.sort_unstable();
        (prod, syms)
    }
    split(a) == split(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32(shape: &[Dim]) -> Type {
        Type::new(shape.to_vec(), DType::F32)
    }

    const SEQ: Dim = Dim::SEQ;

    #[test]
    fn row_ops_need_rows_for_every_binding() {
        let x = f32(&[SEQ.plus(Dim::c(3)), Dim::c(5)]);
        let t = infer(&Op::TailRows { n: 3 }, std::slice::from_ref(&x)).expect("fits");
        assert_eq!(t.to_string(), "[3, 5] f32");
        let t = infer(&Op::DropTailRows { n: 3 }, std::slice::from_ref(&x)).expect("fits");
        assert_eq!(t.to_string(), "[seq, 5] f32");
        // `seq + 3` rows may be fewer than 4.
        let e = infer(&Op::TailRows { n: 4 }, &[x]).expect_err("too few");
        assert!(e.contains("at least 4 rows"), "{e}");
    }

    #[test]
    fn depthwise_conv_shortens_by_the_kernel() {
        let x = f32(&[SEQ.plus(Dim::c(3)), Dim::c(8)]);
        let w = f32(&[Dim::c(8), Dim::c(1), Dim::c(4)]);
        let t = infer(&Op::DepthwiseConv, &[x.clone(), w]).expect("fits");
        assert_eq!(t.to_string(), "[seq, 8] f32");
        let wrong = f32(&[Dim::c(7), Dim::c(1), Dim::c(4)]);
        assert!(infer(&Op::DepthwiseConv, &[x, wrong]).is_err());
    }

    #[test]
    fn decay_gate_broadcasts_to_a() {
        let a = f32(&[SEQ, Dim::c(4), Dim::c(6)]);
        let per_head = f32(&[Dim::c(4), Dim::c(1)]);
        let per_channel = f32(&[Dim::c(4), Dim::c(6)]);
        let t = infer(&Op::DecayGate, &[a.clone(), per_head.clone(), per_channel]).expect("fits");
        assert_eq!(t, a);
        // An operand that would widen the result is refused.
        let wider = f32(&[Dim::c(2), SEQ, Dim::c(4), Dim::c(6)]);
        assert!(infer(&Op::DecayGate, &[a, per_head, wider]).is_err());
    }

    #[test]
    fn delta_rule_stacks_outputs_and_state() {
        let c = Dim::c;
        let q = f32(&[SEQ, c(2), c(8)]);
        let v = f32(&[SEQ, c(4), c(6)]);
        let g = f32(&[SEQ, c(4)]);
        let state = f32(&[c(8), c(4), c(6)]);
        let ins = [q.clone(), q.clone(), v, g.clone(), g.clone(), state.clone()];
        let t = infer(&Op::DeltaRule, &ins).expect("fits");
        assert_eq!(t.to_string(), "[seq+8, 4, 6] f32");
        // Per-channel decay fits too; 3 value heads cannot share 2 key heads.
        let mut per_channel = ins.clone();
        per_channel[3] = f32(&[SEQ, c(4), c(8)]);
        assert!(infer(&Op::DeltaRule, &per_channel).is_ok());
        let odd = [
            q.clone(),
            q,
            f32(&[SEQ, c(3), c(6)]),
            f32(&[SEQ, c(3)]),
            f32(&[SEQ, c(3)]),
            f32(&[c(8), c(3), c(6)]),
        ];
        let e = infer(&Op::DeltaRule, &odd).expect_err("refused");
        assert!(e.contains("multiple of Hk"), "{e}");
    }
}
