//! Figures of architectures: the block diagram `archc draw` writes and the page `archc
//! report` writes.
//!
//! A figure is computed from `Spec`s alone, in three steps: [`content`] says what each box
//! says (in the words of [`diff`](crate::diff)), [`layout`] places the boxes in columns
//! whose sections line up across models, and [`svg`] writes the scene. The scene is kept
//! readable by construction: boxes are sized from the text's metrics, text is never below
//! [`scene::MIN_TEXT`] pixels and is never shrunk; [`scene::Scene::problems`] checks it.
//! For several models, the facts `archc diff` finds different are marked on the boxes
//! they belong to.

pub mod content;
pub mod layout;
pub mod report;
pub mod scene;
pub mod svg;

use crate::spec::Spec;

/// The most layers a figure draws (its layer strip has a cell per layer).
pub const MAX_LAYERS: u64 = 1024;

/// The laid-out figure of `specs`, side by side in the order given.
pub fn scene(specs: &[Spec]) -> scene::Scene {
    layout::figure(specs)
}

/// The SVG document of the figure of `specs`.
pub fn svg(specs: &[Spec]) -> String {
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    svg::render(&scene(specs), &names.join(" | "))
}
