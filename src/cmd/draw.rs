//! `archc draw MODEL... [-o FILE.svg|FILE.png]`: the block diagram of one model, or of
//! several side by side with their differences marked. SVG goes to standard output
//! without `-o`; a `.png` output is rendered in-process.

use crate::failure::Failure;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The models: .arch files, config.json files, model directories or .gguf files.
    #[arg(required = true, value_name = "MODEL")]
    pub models: Vec<PathBuf>,
    /// Write the figure here: FILE.svg, or FILE.png to render it (default: SVG on stdout).
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Pixels per SVG pixel in a PNG (default 2: crisp on high-density screens).
    #[arg(long, value_name = "N", default_value_t = 2.0)]
    pub scale: f32,
}

/// The most models one figure draws side by side.
pub const MAX_MODELS: usize = 12;
/// The most pixels a PNG may have (width x height, after scaling).
const MAX_PIXELS: f64 = 200e6;

pub fn run(args: Args) -> ExitCode {
    let specs = match super::load::specs(&args.models, "draw") {
        Ok(s) => s,
        Err(code) => return ExitCode::from(code),
    };
    crate::failure::exit(draw(&specs, args.out.as_deref(), args.scale), "draw")
}

fn draw(specs: &[archc_spec::Spec], out: Option<&Path>, scale: f32) -> Result<(), Failure> {
    check_drawable(specs)?;
    let svg = archc_spec::figure::svg(specs);
    match out {
        None => crate::io::write_all(&mut std::io::stdout().lock(), svg.as_bytes()),
        Some(path) => {
            let bytes = match extension(path).as_deref() {
                Some("svg") => svg.into_bytes(),
                Some("png") => png(&svg, scale)?,
                _ => {
                    return Err(Failure::new(format!(
                        "{}: the output must end in .svg or .png",
                        path.display()
                    )))
                }
            };
            archc_runtime::outfile::write_atomic(path, &bytes)
                .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))
        }
    }
}

/// Refuses what a figure cannot show readably: too many models or layers.
pub fn check_drawable(specs: &[archc_spec::Spec]) -> Result<(), Failure> {
    if specs.len() > MAX_MODELS {
        return Err(Failure::new(format!(
            "{} models; one figure draws at most {MAX_MODELS} side by side",
            specs.len()
        )));
    }
    let limit = archc_spec::figure::MAX_LAYERS;
    for s in specs {
        if s.layers > limit {
            return Err(Failure::new(format!(
                "{}: {} layers; figures draw at most {limit}",
                s.name, s.layers
            )));
        }
    }
    Ok(())
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// Renders the SVG to PNG with the system's fonts.
fn png(svg: &str, scale: f32) -> Result<Vec<u8>, Failure> {
    if !(scale.is_finite() && (0.25..=8.0).contains(&scale)) {
        return Err(Failure::new(format!(
            "--scale {scale}: expected a number from 0.25 to 8"
        )));
    }
    let mut options = resvg::usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    let font = archc_spec::figure::scene::FONT;
    let has_font = options.fontdb.faces().any(|f| {
        f.families
            .iter()
            .any(|(name, _)| font.split(", ").any(|want| want == name))
    });
    if !has_font {
        return Err(Failure::new(format!(
            "no font of `{font}` is installed, so the text of a PNG cannot be drawn; \
             install one (Debian: fonts-dejavu-core) or write SVG"
        )));
    }
    options.font_family = "DejaVu Sans Mono".to_string();
    let tree = resvg::usvg::Tree::from_str(svg, &options)
        .map_err(|e| Failure::new(format!("cannot read the figure's SVG: {e}")))?;
    let size = tree.size();
    let (w, h) = (
        (size.width() * scale).ceil(),
        (size.height() * scale).ceil(),
    );
    if f64::from(w) * f64::from(h) > MAX_PIXELS {
        return Err(Failure::new(format!(
            "a {w} x {h} pixel PNG is too large; lower --scale or write SVG"
        )));
    }
    let mut pixmap = resvg::tiny_skia::Pixmap::new(w as u32, h as u32)
        .ok_or_else(|| Failure::new(format!("cannot make a {w} x {h} pixel image")))?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| Failure::new(format!("cannot encode the PNG: {e}")))
}
