//! Multi-token-prediction (MTP) layers: the extra layers DeepSeek V3, GLM-4.5 and
//! Qwen3-Next checkpoints carry for speculative decoding and training, which archc does not
//! run. The model's `mtp = N` says how many there are; this module lists their stored
//! tensors (so binding can leave exactly those unread, and still refuse any other extra
//! tensor) and counts their parameters (which `stats` reports apart from the model's).
//!
//! Each MTP layer is one more decoder layer of the model's last layer variant, plus:
//! - DeepSeek V3, GLM-4.5: under `model.layers.{layers + k}.`, the norms `enorm` and
//!   `hnorm`, the projection `eh_proj` `[hidden, 2 * hidden]`, `shared_head.norm`, and
//!   copies of the embedding (`embed_tokens`) and head (`shared_head.head`);
//! - Qwen3-Next: under `mtp.`, `pre_fc_norm_embedding`, `pre_fc_norm_hidden`, `fc`
//!   `[hidden, 2 * hidden]` and `norm`, with the decoder layers at `mtp.layers.{k}.`.

use crate::spec::{Family, Spec};
use crate::tensors::tensors;

/// The families whose MTP tensor layout archc knows.
pub const MTP_FAMILIES: [Family; 3] = [Family::DeepseekV3, Family::Glm4Moe, Family::Qwen3Next];

/// Whether `family`'s checkpoints have an MTP layout archc knows.
pub fn has_mtp_layout(family: Family) -> bool {
    MTP_FAMILIES.contains(&family)
}

/// One stored tensor of an MTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtpTensor {
    /// Its name in an HF checkpoint.
    pub name: String,
    /// Parameters it holds (for a fused tensor, the part archc's layer would read).
    pub params: u64,
}

/// Every stored tensor of the spec's MTP layers in an HF checkpoint, in a stable order;
/// empty when `spec.mtp` is zero or the family has no known layout.
pub fn mtp_tensors(spec: &Spec) -> Vec<MtpTensor> {
    let Some(&last) = spec.schedule.last() else {
        return Vec::new();
    };
    if spec.mtp == 0 || !has_mtp_layout(spec.family) {
        return Vec::new();
    }
    let layers = spec.layers as usize;
    let mtp = spec.mtp as usize;
    // The MTP layers as more layers of the last variant: their tensors and stored names.
    let mut longer = spec.clone();
    longer.mtp = 0;
    longer.layers += spec.mtp;
    longer.schedule.extend(std::iter::repeat_n(last, mtp));
    let qwen = spec.family == Family::Qwen3Next;
    let stored = |layer: usize, name: &str| -> String {
        let own = format!("model.layers.{layer}.");
        match name.strip_prefix(&own) {
            Some(rest) if qwen => format!("mtp.layers.{}.{rest}", layer - layers),
            _ => name.to_string(),
        }
    };
    let mut out: Vec<MtpTensor> = Vec::new();
    for t in tensors(&longer) {
        let Some(layer) = t.layer.filter(|&l| l >= layers) else {
            continue;
        };
        let Some(source) = &t.hf else { continue };
        let names = source.names();
        let each = t.numel() / names.len().max(1) as u64;
        for n in names {
            let name = stored(layer, &n);
            match out.iter_mut().find(|m| m.name == name) {
                // Fused tensors (one stored tensor for several canonical ones) add up.
                Some(m) => m.params += each,
                None => out.push(MtpTensor { name, params: each }),
            }
        }
    }
    let (h, v) = (spec.hidden, spec.vocab);
    let mut extra = |name: String, params: u64| out.push(MtpTensor { name, params });
    if qwen {
        extra("mtp.pre_fc_norm_embedding.weight".into(), h);
        extra("mtp.pre_fc_norm_hidden.weight".into(), h);
        extra("mtp.fc.weight".into(), 2 * h * h);
        extra("mtp.norm.weight".into(), h);
    } else {
        for k in 0..mtp {
            let p = format!("model.layers.{}.", layers + k);
            extra(format!("{p}enorm.weight"), h);
            extra(format!("{p}hnorm.weight"), h);
            extra(format!("{p}eh_proj.weight"), 2 * h * h);
            extra(format!("{p}shared_head.norm.weight"), h);
            extra(format!("{p}shared_head.head.weight"), v * h);
            extra(format!("{p}embed_tokens.weight"), v * h);
        }
    }
    out
}

/// Parameters of the MTP layers (what `stats` reports apart).
pub fn mtp_params(spec: &Spec) -> u64 {
    mtp_tensors(spec).iter().map(|t| t.params).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deepseek() -> Spec {
        let src = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/configs/deepseek-v3/config.json"
        ))
        .unwrap();
        crate::import::from_config_json(&src, "deepseek-v3").unwrap()
    }

    #[test]
    fn deepseek_v3_mtp_layer_is_layer_61_with_its_extras() {
        let spec = deepseek();
        assert_eq!(spec.mtp, 1);
        let t = mtp_tensors(&spec);
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        for n in [
            "model.layers.61.self_attn.kv_b_proj.weight",
            "model.layers.61.mlp.experts.255.down_proj.weight",
            "model.layers.61.eh_proj.weight",
            "model.layers.61.shared_head.head.weight",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        assert!(names.iter().all(|n| n.starts_with("model.layers.61.")));
        // One MoE layer (about 11.7B), its projection and norms, and the copies of the
        // embedding and head (0.93B each): DeepSeek's published 14B.
        let p = mtp_params(&spec);
        assert!((13_000_000_000..15_000_000_000).contains(&p), "{p}");
    }

    #[test]
    fn no_mtp_lists_nothing() {
        let mut spec = deepseek();
        spec.mtp = 0;
        assert!(mtp_tensors(&spec).is_empty());
    }
}
