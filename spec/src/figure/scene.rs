//! What a figure is drawn from: text boxes, frames, layer cells and wires in one coordinate
//! space, with the text metrics that size every box and the checks that no text leaves its
//! box or touches another.
//!
//! Text is set in DejaVu Sans Mono, whose every glyph advances 0.602 em and whose line box
//! is 0.928 em above the baseline and 0.236 em below. Boxes are sized from slightly wider
//! and taller figures than those ([`ADVANCE`], [`ASCENT`], [`DESCENT`]), so a text fits its
//! box with the named font and with any monospace fallback no wider than 0.61 em. Text is
//! never shrunk to fit: a box grows, or a line wraps.

/// The font stack of every text.
pub const FONT: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";
/// Advance of one glyph, in em (DejaVu Sans Mono: 0.602).
pub const ADVANCE: f64 = 0.61;
/// Height of the line box above the baseline, in em (DejaVu Sans Mono: 0.928).
pub const ASCENT: f64 = 0.94;
/// Depth of the line box below the baseline, in em (DejaVu Sans Mono: 0.236).
pub const DESCENT: f64 = 0.25;
/// Distance between baselines, in em.
pub const LEADING: f64 = 1.3;
/// Space between a box's edge and its text.
pub const PAD_X: f64 = 10.0;
pub const PAD_Y: f64 = 6.0;
/// The smallest text size; nothing is set smaller.
pub const MIN_TEXT: f64 = 12.0;
/// Body text, headings inside boxes, and model titles.
pub const BODY: f64 = 13.0;
pub const HEADING: f64 = 14.0;
pub const TITLE: f64 = 20.0;

/// What a box shows; it picks the fill. Tones that can sit side by side differ in
/// grayscale lightness (see [`fill`]), so a figure printed in gray still tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Text with no visible box (titles, frame headers, legends, tick labels).
    Label,
    Norm,
    Attention,
    /// A recurrent or linear-attention mixer.
    Recurrent,
    Mlp,
    Moe,
    /// Embedding, output head, tokens and logits.
    Io,
    /// The panel of numbers.
    Panel,
}

impl Tone {
    /// The CSS class of the box's group in the SVG.
    pub fn class(self) -> &'static str {
        match self {
            Tone::Label => "label",
            Tone::Norm => "norm",
            Tone::Attention => "attention",
            Tone::Recurrent => "recurrent",
            Tone::Mlp => "mlp",
            Tone::Moe => "moe",
            Tone::Io => "io",
            Tone::Panel => "panel",
        }
    }
}

/// The fill of a tone (`None`: not drawn). Luma (0.299 R + 0.587 G + 0.114 B) of the
/// drawn ones: Io and Panel 255, Norm 241, Mlp 218, Moe 199, Attention 173, Recurrent 144.
pub fn fill(tone: Tone) -> Option<&'static str> {
    match tone {
        Tone::Label => None,
        Tone::Io | Tone::Panel => Some("#ffffff"),
        Tone::Norm => Some("#fdf3c4"),
        Tone::Mlp => Some("#f9d3a8"),
        Tone::Moe => Some("#f3bd8a"),
        Tone::Attention => Some("#8fb3e0"),
        Tone::Recurrent => Some("#6aa583"),
    }
}

/// The fills of the layer strip's cells, one per block variant in order of first use,
/// from light to dark, each at least 35 luma steps from the next.
pub const SHADES: [&str; 6] = [
    "#e8eef5", "#b3c3d6", "#7f97b3", "#52698a", "#2f4460", "#0d1622",
];

/// Grayscale luma (0..255) of a `#rrggbb` colour.
pub fn luma(hex: &str) -> f64 {
    let channel = |i: usize| {
        hex.get(1 + 2 * i..3 + 2 * i)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .map_or(0.0, f64::from)
    };
    0.299 * channel(0) + 0.587 * channel(1) + 0.114 * channel(2)
}

/// One line of text.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub text: String,
    pub size: f64,
    pub bold: bool,
}

impl Line {
    pub fn body(text: impl Into<String>) -> Line {
        Line {
            text: text.into(),
            size: BODY,
            bold: false,
        }
    }

    pub fn heading(text: impl Into<String>) -> Line {
        Line {
            text: text.into(),
            size: HEADING,
            bold: true,
        }
    }

    pub fn title(text: impl Into<String>) -> Line {
        Line {
            text: text.into(),
            size: TITLE,
            bold: true,
        }
    }

    /// The width the line is given: every glyph at [`ADVANCE`].
    pub fn width(&self) -> f64 {
        self.text.chars().count() as f64 * ADVANCE * self.size
    }
}

/// How the lines of a box are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Center,
    Left,
}

/// A rectangle with lines of text inside it.
#[derive(Debug, Clone, PartialEq)]
pub struct TextBox {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub tone: Tone,
    pub align: Align,
    pub lines: Vec<Line>,
    /// Drawn with the outline that marks a difference between the models of a figure.
    pub differs: bool,
}

impl TextBox {
    /// A box at the origin just large enough for its lines.
    pub fn new(tone: Tone, lines: Vec<Line>) -> TextBox {
        let w = lines.iter().map(Line::width).fold(0.0, f64::max) + 2.0 * PAD_X;
        let h = lines.iter().map(|l| LEADING * l.size).sum::<f64>() + 2.0 * PAD_Y;
        TextBox {
            x: 0.0,
            y: 0.0,
            w,
            h,
            tone,
            align: Align::Center,
            lines,
            differs: false,
        }
    }

    pub fn left(mut self) -> TextBox {
        self.align = Align::Left;
        self
    }

    /// Each line's anchor point (x, baseline y), in order.
    pub fn anchors(&self) -> Vec<(f64, f64)> {
        let mut top = self.y + PAD_Y;
        let x = match self.align {
            Align::Center => self.x + self.w / 2.0,
            Align::Left => self.x + PAD_X,
        };
        self.lines
            .iter()
            .map(|l| {
                // The spare leading goes above the text, half of it, and below.
                let spare = (LEADING - ASCENT - DESCENT) * l.size;
                let baseline = top + spare / 2.0 + ASCENT * l.size;
                top += LEADING * l.size;
                (x, baseline)
            })
            .collect()
    }

    /// The rectangle each line's glyphs occupy: (left, top, right, bottom).
    pub fn text_extents(&self) -> Vec<(f64, f64, f64, f64)> {
        self.anchors()
            .into_iter()
            .zip(&self.lines)
            .map(|((x, base), l)| {
                let w = l.width();
                let left = match self.align {
                    Align::Center => x - w / 2.0,
                    Align::Left => x,
                };
                (
                    left,
                    base - ASCENT * l.size,
                    left + w,
                    base + DESCENT * l.size,
                )
            })
            .collect()
    }
}

/// One thing drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Text(TextBox),
    /// The outline around a block variant or a group (no text of its own).
    Frame {
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        differs: bool,
    },
    /// A filled square without text: a layer of the strip or a legend swatch.
    Cell {
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        shade: usize,
    },
    /// A connection along the points, with an arrowhead at the end when `arrow`.
    Wire {
        points: Vec<(f64, f64)>,
        arrow: bool,
    },
    /// The residual addition: a circle with a plus sign.
    Add {
        x: f64,
        y: f64,
    },
    /// A branch point of the residual stream.
    Dot {
        x: f64,
        y: f64,
    },
}

/// The radius of the residual addition's circle.
pub const ADD_R: f64 = 8.0;

impl Item {
    /// Moves the item by (dx, dy).
    pub fn shift(&mut self, dx: f64, dy: f64) {
        match self {
            Item::Text(b) => {
                b.x += dx;
                b.y += dy;
            }
            Item::Frame { x, y, .. } | Item::Cell { x, y, .. } => {
                *x += dx;
                *y += dy;
            }
            Item::Wire { points, .. } => {
                for p in points {
                    p.0 += dx;
                    p.1 += dy;
                }
            }
            Item::Add { x, y } | Item::Dot { x, y } => {
                *x += dx;
                *y += dy;
            }
        }
    }
}

/// A whole figure: its size and what is drawn, back to front.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub w: f64,
    pub h: f64,
    pub items: Vec<Item>,
}

impl Scene {
    /// The text boxes, in drawing order.
    pub fn texts(&self) -> impl Iterator<Item = &TextBox> {
        self.items.iter().filter_map(|i| match i {
            Item::Text(b) => Some(b),
            _ => None,
        })
    }

    /// What is wrong with the figure's text by its own metrics: a line outside its box, two
    /// lines that overlap, text below [`MIN_TEXT`], a box outside the figure. Empty when
    /// the figure is readable; the browser test checks the same with real fonts.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut spans: Vec<(f64, f64, f64, f64, &str)> = Vec::new();
        for b in self.texts() {
            if b.x < 0.0 || b.y < 0.0 || b.x + b.w > self.w || b.y + b.h > self.h {
                out.push(format!("box of `{}` leaves the figure", first(b)));
            }
            for (l, e) in b.lines.iter().zip(b.text_extents()) {
                if l.size < MIN_TEXT {
                    out.push(format!("`{}` is set at {} px", l.text, l.size));
                }
                let inside = e.0 >= b.x && e.1 >= b.y && e.2 <= b.x + b.w && e.3 <= b.y + b.h;
                if !inside {
                    out.push(format!("`{}` overflows its box", l.text));
                }
                spans.push((e.0, e.1, e.2, e.3, &l.text));
            }
        }
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                if b.0 >= a.2 {
                    break;
                }
                if b.1 < a.3 && a.1 < b.3 {
                    out.push(format!("`{}` overlaps `{}`", a.4, b.4));
                }
            }
        }
        out
    }
}

fn first(b: &TextBox) -> &str {
    b.lines.first().map_or("", |l| l.text.as_str())
}

/// Splits `text` into lines of at most `max` characters, breaking after spaces or commas;
/// a word longer than `max` is cut.
pub fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(8);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_inclusive(' ') {
        if line.chars().count() + word.trim_end().chars().count() > max && !line.is_empty() {
            lines.push(line.trim_end().to_string());
            line.clear();
        }
        let mut word = word;
        while word.chars().count() > max {
            let cut = word.char_indices().nth(max).map_or(word.len(), |(i, _)| i);
            lines.push(word[..cut].to_string());
            word = &word[cut..];
        }
        line.push_str(word);
    }
    if !line.trim().is_empty() {
        lines.push(line.trim_end().to_string());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tones_and_shades_differ_in_gray() {
        let drawn = [
            Tone::Io,
            Tone::Norm,
            Tone::Mlp,
            Tone::Moe,
            Tone::Attention,
            Tone::Recurrent,
        ];
        let lumas: Vec<f64> = drawn.iter().map(|&t| luma(fill(t).unwrap())).collect();
        for (i, a) in lumas.iter().enumerate() {
            for b in &lumas[i + 1..] {
                assert!((a - b).abs() >= 13.0, "{lumas:?}");
            }
        }
        for w in SHADES.windows(2) {
            assert!(luma(w[0]) - luma(w[1]) >= 35.0, "{w:?}");
        }
    }

    #[test]
    fn boxes_hold_their_lines() {
        let b = TextBox::new(
            Tone::Attention,
            vec![Line::heading("Grouped-query attention"), Line::body("x")],
        );
        let s = Scene {
            w: b.w,
            h: b.h,
            items: vec![Item::Text(b.clone())],
        };
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        let mut narrow = b;
        narrow.w -= 2.0 * PAD_X + 1.0;
        let s = Scene {
            w: 400.0,
            h: 400.0,
            items: vec![Item::Text(narrow)],
        };
        assert_eq!(s.problems().len(), 1, "{:?}", s.problems());
    }

    #[test]
    fn wrapping_breaks_at_spaces() {
        assert_eq!(
            wrap("sigmoid, selection bias, groups 4 of 8", 20),
            ["sigmoid, selection", "bias, groups 4 of 8"]
        );
        assert_eq!(wrap("abcdefghijkl", 8), ["abcdefgh", "ijkl"]);
    }
}
