//! Multimodal checkpoints (Gemma 3, Llama 4, Mistral 3 ... as `*ForConditionalGeneration`)
//! keep the language model under a prefix beside their vision and audio towers. archc runs
//! the text model: [`Checkpoint::text_model`] names the language model's tensors as a text
//! checkpoint would (`model.language_model.layers.0...` and the older
//! `language_model.model.layers.0...` become `model.layers.0...`) and sets the towers
//! aside, so binding can leave them unread with a note while every other stray tensor is
//! still an error.

use super::Checkpoint;
use std::collections::BTreeMap;

/// Where multimodal checkpoints keep the language model, and what a text checkpoint calls
/// the same place. The first two mark a checkpoint as multimodal.
const LANGUAGE_MODEL: [(&str, &str); 3] = [
    ("model.language_model.", "model."),
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
];

/// The parts of a multimodal checkpoint that are not the language model.
const TOWERS: [&str; 10] = [
    "model.vision_tower.",
    "vision_tower.",
    "model.multi_modal_projector.",
    "multi_modal_projector.",
    "model.audio_tower.",
    "audio_tower.",
    "model.embed_vision.",
    "embed_vision.",
    "model.embed_audio.",
    "embed_audio.",
];

impl Checkpoint {
    /// The text model of a multimodal checkpoint under text-checkpoint names, and the
    /// tensors of its towers (set aside, sorted); a text checkpoint comes back unchanged.
    pub fn text_model(self) -> (Checkpoint, Vec<String>) {
        let multimodal = self.names.keys().any(|n| {
            LANGUAGE_MODEL[..2]
                .iter()
                .any(|(prefix, _)| n.starts_with(prefix))
        });
        if !multimodal {
            return (self, Vec::new());
        }
        let Checkpoint {
            files,
            names,
            quantization,
            ..
        } = self;
        let mut renamed = BTreeMap::new();
        let mut alias = BTreeMap::new();
        let mut towers = Vec::new();
        for (stored, file) in &names {
            if TOWERS.iter().any(|p| stored.starts_with(p)) {
                towers.push(stored.clone());
                continue;
            }
            let text = LANGUAGE_MODEL.iter().find_map(|(prefix, to)| {
                stored
                    .strip_prefix(prefix)
                    .map(|rest| format!("{to}{rest}"))
            });
            match text {
                // A name the checkpoint also holds under its text name stays as stored:
                // binding then reports it as unexpected rather than picking one.
                Some(t) if !names.contains_key(&t) => {
                    alias.insert(t.clone(), stored.clone());
                    renamed.insert(t, *file);
                }
                _ => {
                    renamed.insert(stored.clone(), *file);
                }
            }
        }
        (
            Checkpoint {
                files,
                names: renamed,
                alias,
                quantization,
            },
            towers,
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::weights::{Checkpoint, SafetensorsFile};

    fn checkpoint(names: &[&str]) -> Checkpoint {
        let mut header = serde_json::Map::new();
        for (i, n) in names.iter().enumerate() {
            header.insert(
                n.to_string(),
                serde_json::json!({"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}),
            );
        }
        let mut text = serde_json::Value::Object(header).to_string();
        while text.len() % 8 != 0 {
            text.push(' ');
        }
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        for i in 0..names.len() {
            bytes.extend_from_slice(&(i as f32).to_le_bytes());
        }
        let file = SafetensorsFile::from_bytes(std::path::Path::new("m.safetensors"), bytes)
            .expect("a valid image");
        Checkpoint::from_file(file)
    }

    #[test]
    fn the_language_model_is_renamed_and_the_towers_set_aside() {
        let (text, towers) = checkpoint(&[
            "model.language_model.layers.0.mlp.up_proj.weight",
            "model.language_model.embed_tokens.weight",
            "model.vision_tower.vision_model.embeddings.patch_embedding.weight",
            "model.multi_modal_projector.mm_input_projection_weight",
            "lm_head.weight",
        ])
        .text_model();
        let names: Vec<&str> = text.names().collect();
        assert_eq!(
            names,
            [
                "lm_head.weight",
                "model.embed_tokens.weight",
                "model.layers.0.mlp.up_proj.weight"
            ]
        );
        assert_eq!(towers.len(), 2);
        // Reads go to the stored tensor.
        let v = text
            .get("model.embed_tokens.weight")
            .expect("renamed tensor");
        assert_eq!(v.to_f32().expect("f32"), [1.0]);
        // The older layout, and a text checkpoint, which stays as it is.
        let (old, _) = checkpoint(&[
            "language_model.model.norm.weight",
            "language_model.lm_head.weight",
        ])
        .text_model();
        assert_eq!(
            old.names().collect::<Vec<_>>(),
            ["lm_head.weight", "model.norm.weight"]
        );
        let (plain, towers) = checkpoint(&["model.norm.weight", "vision_tower.x"]).text_model();
        assert_eq!(plain.names().count(), 2);
        assert!(towers.is_empty());
    }
}
