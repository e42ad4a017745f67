//! Placing the boxes: a model becomes a column of sections (title, layer strip, embedding,
//! block variants, head, numbers), and the columns of several models share one row height
//! per section so the same part of each model sits at the same height.

use super::content::{self, Marks};
use super::scene::{Item, Line, Scene, TextBox, Tone, ADD_R, SHADES};
use crate::spec::{Block, Placement, Spec};

/// Vertical room for an arrow between two boxes.
const GAP: f64 = 18.0;
/// Width of the lane on a frame's left where the residual path runs.
const LANE: f64 = 28.0;
/// Inner margin of a frame.
const INSET: f64 = 12.0;
/// Space between block frames, and between model columns.
const BETWEEN_FRAMES: f64 = 24.0;
const BETWEEN_COLUMNS: f64 = 48.0;
/// Space between the sections of a column.
const BETWEEN_SECTIONS: f64 = 26.0;
const MARGIN: f64 = 24.0;

/// A laid-out part in its own coordinates, with where the residual stream enters at its
/// top and leaves at its bottom (x), when it carries the stream.
#[derive(Debug, Clone, Default)]
struct Piece {
    w: f64,
    h: f64,
    items: Vec<Item>,
    stream: Option<(f64, f64)>,
}

impl Piece {
    /// Adds `other` with its origin at (x, y).
    fn place(&mut self, mut other: Piece, x: f64, y: f64) {
        for mut i in other.items.drain(..) {
            i.shift(x, y);
            self.items.push(i);
        }
    }

    fn boxed(mut b: TextBox, x: f64, y: f64) -> Item {
        b.x = x;
        b.y = y;
        Item::Text(b)
    }
}

fn wire(points: Vec<(f64, f64)>) -> Item {
    Item::Wire {
        points,
        arrow: true,
    }
}

/// A chain of boxes of one width, centred on `cx` from `y` down, joined by arrows; returns
/// the y below the last box.
fn chain(items: &mut Vec<Item>, boxes: Vec<TextBox>, cx: f64, mut y: f64, w: f64) -> f64 {
    let n = boxes.len();
    for (i, mut b) in boxes.into_iter().enumerate() {
        b.w = w;
        let h = b.h;
        items.push(Piece::boxed(b, cx - w / 2.0, y));
        y += h;
        if i + 1 < n {
            items.push(wire(vec![(cx, y), (cx, y + GAP)]));
            y += GAP;
        }
    }
    y
}

/// One sublayer (mixer or feed-forward) with its norms where `placement` puts them. The
/// residual stream runs down the lane at `lane`; the sublayer branches off it to the right
/// (boxes centred on `cx`, `w` wide) and adds back into it. Starts at `y` on the lane;
/// returns the y where the stream leaves it.
#[allow(clippy::too_many_arguments)]
fn sublayer(
    items: &mut Vec<Item>,
    op: TextBox,
    block: &Block,
    marked_norms: bool,
    lane: f64,
    cx: f64,
    y: f64,
    w: f64,
) -> f64 {
    let norm = |what: &str| {
        let mut b = content::norm(&block.norm, what);
        b.differs = marked_norms;
        b
    };
    let (before, after): (Vec<TextBox>, Option<TextBox>) = match block.placement {
        Placement::Pre => (vec![norm(""), op], None),
        Placement::Post => (vec![op, norm("")], None),
        Placement::Sandwich => (vec![norm(""), op, norm("post")], None),
        Placement::PostLn => (vec![op], Some(norm(""))),
    };
    let branch = y + 8.0;
    items.push(Item::Dot { x: lane, y: branch });
    items.push(wire(vec![(lane, branch), (cx, branch), (cx, branch + GAP)]));
    let bottom = chain(items, before, cx, branch + GAP, w);
    let add = bottom + GAP;
    items.push(wire(vec![(cx, bottom), (cx, add), (lane + ADD_R, add)]));
    items.push(wire(vec![(lane, y), (lane, add - ADD_R)]));
    items.push(Item::Add { x: lane, y: add });
    let mut out = add + ADD_R;
    if let Some(n) = after {
        // Post-LN: the norm sits on the stream itself, after the addition.
        let turn = out + 8.0;
        items.push(wire(vec![
            (lane, out),
            (lane, turn),
            (cx, turn),
            (cx, turn + GAP),
        ]));
        let end = chain(items, vec![n], cx, turn + GAP, w);
        items.push(Item::Wire {
            points: vec![(cx, end), (cx, end + 10.0), (lane, end + 10.0)],
            arrow: false,
        });
        out = end + 10.0;
    }
    out
}

/// A block variant in a frame: its header, the mixer and the feed-forward sublayers, the
/// residual stream down the frame's left lane.
fn frame(spec: &Spec, index: usize, block: &Block, marks: &Marks) -> Piece {
    let mut op = content::mixer(&block.mixer, spec.learned_positions.is_some());
    op.differs = marks.mixer;
    let mut ffn = content::ffn(&block.ffn, spec.hidden);
    ffn.differs = marks.ffn;
    let norm_w = content::norm(&block.norm, "post").w;
    let header = content::block_header(spec, index, block);
    let w = op.w.max(ffn.w).max(norm_w);
    let lane = INSET + LANE / 2.0;
    let cx = INSET + LANE + w / 2.0;
    let fw = (INSET + LANE + w + INSET)
        .max(lane + 6.0 + header.w + INSET)
        .ceil();
    let mut items = vec![Item::Frame {
        x: 0.0,
        y: 0.0,
        w: fw,
        h: 0.0,
        differs: false,
    }];
    let hh = header.h;
    items.push(Piece::boxed(header, lane + 6.0, INSET));
    let mut y = INSET + hh + 4.0;
    items.push(Item::Wire {
        points: vec![(lane, 0.0), (lane, y)],
        arrow: false,
    });
    y = sublayer(&mut items, op, block, marks.norms, lane, cx, y, w);
    y = sublayer(&mut items, ffn, block, marks.norms, lane, cx, y, w);
    let fh = y + INSET;
    items.push(Item::Wire {
        points: vec![(lane, y), (lane, fh)],
        arrow: false,
    });
    if let Some(Item::Frame { h, .. }) = items.first_mut() {
        *h = fh;
    }
    Piece {
        w: fw,
        h: fh,
        items,
        stream: Some((lane, lane)),
    }
}

/// The block variants side by side; with several, the stream fans out to each and back.
fn blocks(spec: &Spec, marks: &Marks) -> Piece {
    let used: Vec<usize> = first_uses(spec);
    let frames: Vec<Piece> = used
        .iter()
        .map(|&i| frame(spec, i, &spec.blocks[i], marks))
        .collect();
    let single = frames.len() == 1;
    let bus = if single { 0.0 } else { 20.0 };
    let w = frames.iter().map(|f| f.w).sum::<f64>()
        + BETWEEN_FRAMES * (frames.len().saturating_sub(1)) as f64;
    let h = frames.iter().map(|f| f.h).fold(0.0, f64::max) + 2.0 * bus;
    let mut piece = Piece {
        w,
        h,
        ..Piece::default()
    };
    let mut x = 0.0;
    let mut centres = Vec::new();
    for f in frames {
        let (cx, _) = f.stream.unwrap_or((f.w / 2.0, f.w / 2.0));
        let fh = f.h;
        centres.push((x + cx, fh));
        let fw = f.w;
        piece.place(f, x, bus);
        x += fw + BETWEEN_FRAMES;
    }
    if single {
        piece.stream = Some((centres[0].0, centres[0].0));
        return piece;
    }
    let mid = w / 2.0;
    let (lo, hi) = (centres[0].0, centres[centres.len() - 1].0);
    piece.items.push(Item::Wire {
        points: vec![(mid, 0.0), (mid, bus / 2.0)],
        arrow: false,
    });
    piece.items.push(Item::Wire {
        points: vec![(lo, bus / 2.0), (hi, bus / 2.0)],
        arrow: false,
    });
    piece.items.push(Item::Wire {
        points: vec![(lo, h - bus / 2.0), (hi, h - bus / 2.0)],
        arrow: false,
    });
    for (cx, fh) in &centres {
        piece.items.push(wire(vec![(*cx, bus / 2.0), (*cx, bus)]));
        piece.items.push(Item::Wire {
            points: vec![(*cx, bus + fh), (*cx, h - bus / 2.0)],
            arrow: false,
        });
    }
    piece.items.push(Item::Wire {
        points: vec![(mid, h - bus / 2.0), (mid, h)],
        arrow: false,
    });
    piece.stream = Some((mid, mid));
    piece
}

/// The block variants in the order the schedule first uses them.
fn first_uses(spec: &Spec) -> Vec<usize> {
    let mut used = Vec::new();
    for &b in &spec.schedule {
        if !used.contains(&b) && b < spec.blocks.len() {
            used.push(b);
        }
    }
    used
}

/// The layer strip: one cell per layer shaded by its block variant, the first and last
/// layer numbers under it, and a legend.
fn strip(spec: &Spec, marked: bool, width: f64) -> Piece {
    let used = first_uses(spec);
    let n = spec.schedule.len().max(1);
    let cell = (width / n as f64).floor().clamp(3.0, 16.0);
    let sw = cell * n as f64;
    let mut p = Piece::default();
    let title = TextBox::new(
        Tone::Label,
        vec![Line::body(format!(
            "layer schedule, {} layers",
            spec.layers
        ))],
    )
    .left();
    let th = title.h;
    p.items.push(Piece::boxed(title, -10.0, 0.0));
    let top = th + 2.0;
    for (l, &b) in spec.schedule.iter().enumerate() {
        let shade = used.iter().position(|&u| u == b).unwrap_or(0) % SHADES.len();
        p.items.push(Item::Cell {
            x: l as f64 * cell,
            y: top,
            w: cell,
            h: 18.0,
            shade,
        });
    }
    if marked {
        p.items.push(Item::Frame {
            x: -3.0,
            y: top - 3.0,
            w: sw + 6.0,
            h: 24.0,
            differs: true,
        });
    }
    let mut y = top + 22.0;
    let first = TextBox::new(Tone::Label, vec![Line::body("0")]).left();
    let last_text = format!("{}", n - 1);
    let last = TextBox::new(Tone::Label, vec![Line::body(last_text)]).left();
    let lw = last.w;
    let ticks_h = first.h;
    p.items.push(Piece::boxed(first, -10.0, y));
    if n > 1 {
        p.items.push(Piece::boxed(last, sw - lw + 10.0, y));
    }
    y += ticks_h + 2.0;
    // The legend: a swatch and the variant's name and count, wrapping at the strip's width.
    let avail = sw.max(260.0);
    let (mut x, mut row_h) = (0.0, 0.0f64);
    let mut right = sw;
    for (k, &b) in used.iter().enumerate() {
        let count = spec.schedule.iter().filter(|&&s| s == b).count();
        let label = TextBox::new(
            Tone::Label,
            vec![Line::body(format!(
                "{} ({count}): {}",
                spec.blocks[b].name,
                content::variant_kind(&spec.blocks[b], spec.learned_positions.is_some())
            ))],
        )
        .left();
        let entry_w = 16.0 + label.w;
        if x > 0.0 && x + entry_w > avail {
            x = 0.0;
            y += row_h + 2.0;
            row_h = 0.0;
        }
        let lh = label.h;
        p.items.push(Item::Cell {
            x,
            y: y + (lh - 14.0) / 2.0,
            w: 14.0,
            h: 14.0,
            shade: k % SHADES.len(),
        });
        let lw = label.w;
        p.items.push(Piece::boxed(label, x + 16.0 - 10.0 + 4.0, y));
        right = right.max(x + 10.0 + lw);
        x += entry_w + 12.0;
        row_h = row_h.max(lh);
    }
    p.w = right;
    p.h = y + row_h;
    // Everything so far started at x = -10 for left-aligned labels; move it right.
    for i in &mut p.items {
        i.shift(10.0, 0.0);
    }
    p.w += 10.0;
    p
}

/// Tokens, the embedding and its norm, as a chain.
fn embedding(spec: &Spec, marks: &Marks) -> Piece {
    let mut emb = content::embedding(spec);
    emb.differs = marks.embedding;
    let mut boxes = vec![content::io("Tokens"), emb];
    if let Some(n) = &spec.embed_norm {
        let mut b = content::norm(n, "embedding");
        b.differs = marks.embedding;
        boxes.push(b);
    }
    column_chain(boxes)
}

/// The final norm, the head and the logits, as a chain.
fn head(spec: &Spec, marks: &Marks) -> Piece {
    let mut boxes = Vec::new();
    if let Some(n) = &spec.final_norm {
        let mut b = content::norm(n, "final");
        b.differs = marks.final_norm;
        boxes.push(b);
    }
    let mut h = content::head(spec);
    h.differs = marks.head;
    boxes.push(h);
    boxes.push(content::io("Logits"));
    column_chain(boxes)
}

fn column_chain(boxes: Vec<TextBox>) -> Piece {
    let w = boxes.iter().map(|b| b.w).fold(0.0, f64::max);
    let mut items = Vec::new();
    let h = chain(&mut items, boxes, w / 2.0, 0.0, w);
    Piece {
        w,
        h,
        items,
        stream: Some((w / 2.0, w / 2.0)),
    }
}

fn single(b: TextBox) -> Piece {
    Piece {
        w: b.w,
        h: b.h,
        items: vec![Piece::boxed(b, 0.0, 0.0)],
        stream: None,
    }
}

/// The figure of one or more models, side by side.
pub fn figure(specs: &[Spec]) -> Scene {
    let marks = content::marks(specs);
    let mut columns: Vec<Vec<Piece>> = Vec::new();
    for spec in specs {
        let blocks = blocks(spec, &marks);
        let numbers = content::numbers(spec);
        let panel = content::panel(&numbers, &marks.numbers);
        let sections = vec![
            single(content::title(spec)),
            strip(spec, marks.schedule, blocks.w.max(panel.w)),
            embedding(spec, &marks),
            blocks,
            head(spec, &marks),
            single(panel),
        ];
        columns.push(sections);
    }
    let rows = columns.first().map_or(0, Vec::len);
    let heights: Vec<f64> = (0..rows)
        .map(|r| columns.iter().map(|c| c[r].h).fold(0.0, f64::max))
        .collect();
    let mut scene = Scene {
        w: 0.0,
        h: 0.0,
        items: Vec::new(),
    };
    let mut top = MARGIN;
    if specs.len() > 1 {
        let note = TextBox::new(
            Tone::Label,
            vec![Line::body(
                "Thick dashed outline, bold numbers: differs between the models",
            )],
        )
        .left();
        let nh = note.h;
        scene.items.push(Piece::boxed(note, MARGIN - 10.0, top));
        scene.w = scene.w.max(MARGIN + 400.0);
        top += nh + 12.0;
    }
    let mut x = MARGIN;
    for col in columns {
        let cw = col.iter().map(|p| p.w).fold(0.0, f64::max);
        let mut y = top;
        let mut last_exit: Option<(f64, f64)> = None;
        for (r, piece) in col.into_iter().enumerate() {
            let px = x + (cw - piece.w) / 2.0;
            if let Some((entry, exit)) = piece.stream {
                if let Some((ex, ey)) = last_exit {
                    let mid = (ey + y) / 2.0;
                    scene.items.push(wire(vec![
                        (ex, ey),
                        (ex, mid),
                        (px + entry, mid),
                        (px + entry, y),
                    ]));
                }
                last_exit = Some((px + exit, y + piece.h));
            }
            let mut p = piece;
            for mut i in p.items.drain(..) {
                i.shift(px, y);
                scene.items.push(i);
            }
            y += heights[r] + BETWEEN_SECTIONS;
        }
        scene.h = scene.h.max(y - BETWEEN_SECTIONS + MARGIN);
        x += cw + BETWEEN_COLUMNS;
    }
    scene.w = scene.w.max(x - BETWEEN_COLUMNS + MARGIN).ceil();
    scene.h = scene.h.ceil();
    scene
}
