//! The SVG text of a scene. The output is a pure function of the scene: fixed attribute
//! order, coordinates rounded to a tenth of a pixel, no timestamps or random ids.

use super::scene::{fill, Align, Item, Scene, TextBox, ADD_R, FONT, SHADES};
use std::fmt::Write as _;

/// Colours of lines and text, and of the outline that marks a difference.
const INK: &str = "#1f1f1f";
const WIRE: &str = "#555555";
const FRAME_FILL: &str = "#f6f6f6";
const DIFFERS: &str = "#b00020";

/// A coordinate with at most one decimal, `12`, `12.5`.
fn n(x: f64) -> String {
    let r = (x * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{}", r as i64)
    } else {
        format!("{r:.1}")
    }
}

/// Text with the five XML specials escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole SVG document of `scene`; `title` becomes its `<title>`.
pub fn render(scene: &Scene, title: &str) -> String {
    let (w, h) = (n(scene.w), n(scene.h));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}" fill="{INK}">"#
    );
    let _ = writeln!(s, "<title>{}</title>", escape(title));
    let _ = writeln!(
        s,
        r#"<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="8" markerHeight="8" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="{WIRE}"/></marker></defs>"#
    );
    let _ = writeln!(s, r##"<rect width="{w}" height="{h}" fill="#ffffff"/>"##);
    for item in &scene.items {
        item_svg(&mut s, item);
    }
    s.push_str("</svg>\n");
    s
}

fn item_svg(s: &mut String, item: &Item) {
    match item {
        Item::Text(b) => text_box(s, b),
        Item::Frame {
            x,
            y,
            w,
            h,
            differs,
        } => {
            let (fill, stroke) = if *differs {
                ("none", outline(true))
            } else {
                (
                    FRAME_FILL,
                    r##"stroke="#9a9a9a" stroke-width="1""##.to_string(),
                )
            };
            let _ = writeln!(
                s,
                r#"<rect class="frame" x="{}" y="{}" width="{}" height="{}" rx="8" fill="{fill}" {stroke}/>"#,
                n(*x),
                n(*y),
                n(*w),
                n(*h)
            );
        }
        Item::Cell { x, y, w, h, shade } => {
            let _ = writeln!(
                s,
                r##"<rect class="cell" x="{}" y="{}" width="{}" height="{}" fill="{}" stroke="#3a3a3a" stroke-width="0.6"/>"##,
                n(*x),
                n(*y),
                n(*w),
                n(*h),
                SHADES[*shade % SHADES.len()]
            );
        }
        Item::Wire { points, arrow } => {
            let pts: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{},{}", n(*x), n(*y)))
                .collect();
            let marker = if *arrow {
                r#" marker-end="url(#arrow)""#
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{WIRE}" stroke-width="1.5"{marker}/>"#,
                pts.join(" ")
            );
        }
        Item::Add { x, y } => {
            let r = ADD_R;
            let _ = writeln!(
                s,
                r##"<g class="add"><circle cx="{}" cy="{}" r="{}" fill="#ffffff" stroke="{WIRE}" stroke-width="1.5"/><path d="M{},{} h{} M{},{} v{}" stroke="{WIRE}" stroke-width="1.5"/></g>"##,
                n(*x),
                n(*y),
                n(r),
                n(x - r + 3.0),
                n(*y),
                n(2.0 * r - 6.0),
                n(*x),
                n(y - r + 3.0),
                n(2.0 * r - 6.0)
            );
        }
        Item::Dot { x, y } => {
            let _ = writeln!(
                s,
                r#"<circle cx="{}" cy="{}" r="3" fill="{WIRE}"/>"#,
                n(*x),
                n(*y)
            );
        }
    }
}

/// The stroke of a box: thin and dark, or thick, dashed and red where the models differ
/// (the dashes keep it apart in grayscale).
fn outline(differs: bool) -> String {
    if differs {
        format!(r#"stroke="{DIFFERS}" stroke-width="3" stroke-dasharray="7 4""#)
    } else {
        format!(r#"stroke="{INK}" stroke-width="1""#)
    }
}

fn text_box(s: &mut String, b: &TextBox) {
    let class = if b.differs {
        format!("{} differs", b.tone.class())
    } else {
        b.tone.class().to_string()
    };
    let _ = write!(s, r#"<g class="{class}">"#);
    match fill(b.tone) {
        Some(f) => {
            let _ = write!(
                s,
                r#"<rect x="{}" y="{}" width="{}" height="{}" rx="4" fill="{f}" {}/>"#,
                n(b.x),
                n(b.y),
                n(b.w),
                n(b.h),
                outline(b.differs)
            );
        }
        // A label's box is not drawn; it is there so its extent can be checked.
        None => {
            let _ = write!(
                s,
                r#"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="none"/>"#,
                n(b.x),
                n(b.y),
                n(b.w),
                n(b.h)
            );
        }
    }
    let anchor = match b.align {
        Align::Center => "middle",
        Align::Left => "start",
    };
    for (line, (x, y)) in b.lines.iter().zip(b.anchors()) {
        let weight = if line.bold {
            r#" font-weight="bold""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" font-size="{}" text-anchor="{anchor}"{weight} xml:space="preserve">{}</text>"#,
            n(x),
            n(y),
            n(line.size),
            escape(&line.text)
        );
    }
    s.push_str("</g>\n");
}
