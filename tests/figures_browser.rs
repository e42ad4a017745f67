//! `archc draw` figures as a browser shows them: headless Chromium lays out every example's
//! SVG (and two side-by-side figures) and a script checks that each text sits inside its
//! box, that no two texts overlap, and that none is smaller than 11 px.
//!
//! All figures go into one HTML page, so that each test starts Chromium only once. Each
//! figure lives in its own shadow root, so a `<style>` in one figure cannot restyle another.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the page's script found: violations as `figure: kind: detail`, and how many
/// texts it checked in each figure.
#[derive(Debug)]
struct Report {
    violations: Vec<String>,
    texts: BTreeMap<String, u64>,
}

/// The longest Chromium may take for one page before the test gives up on it.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(120);

/// The checks, run on load in the page. Coordinates in messages are the figure's own user
/// units (1 unit = 1 px once the size check passes). The JSON it writes escapes `<`, `>`,
/// `&` and non-ASCII as `\uXXXX`, so the dumped DOM holds it without HTML entities.
const CHECK_SCRIPT: &str = r#"
function checkFigure(name, svg, out) {
  const bad = (kind, msg) => out.push(name + ': ' + kind + ': ' + msg);
  const vb = svg.viewBox.baseVal;
  const sr = svg.getBoundingClientRect();
  const kx = vb.width / sr.width || 1, ky = vb.height / sr.height || 1;
  const ux = x => +((x - sr.left) * kx + vb.x).toFixed(1);
  const uy = y => +((y - sr.top) * ky + vb.y).toFixed(1);
  const box = r => `[${ux(r.left)}, ${uy(r.top)}, ${ux(r.right)}, ${uy(r.bottom)}]`;
  const px = s => s !== null && /^\s*[0-9]+(\.[0-9]+)?(px)?\s*$/.test(s) ? parseFloat(s) : NaN;
  const w = svg.getAttribute('width'), h = svg.getAttribute('height');
  if (!svg.hasAttribute('viewBox') || !(Math.abs(px(w) - vb.width) < 0.01)
      || !(Math.abs(px(h) - vb.height) < 0.01)) {
    bad('size', `width="${w}" height="${h}" differ from viewBox="${svg.getAttribute('viewBox')}"`);
  } else if (Math.abs(sr.width - vb.width) > 0.5 || Math.abs(sr.height - vb.height) > 0.5) {
    bad('size', `rendered at ${sr.width}x${sr.height} px, not ${vb.width}x${vb.height}`);
  }
  const all = svg.querySelectorAll('text'), texts = [];
  for (const t of all) {
    const r = t.getBoundingClientRect();
    const s = (t.textContent || '').trim();
    const label = JSON.stringify(s.length > 60 ? s.slice(0, 57) + '...' : s) + ' ' + box(r);
    if (s === '') {
      bad('empty', `text without content at ${box(r)}`);
      continue;
    }
    const size = getComputedStyle(t).fontSize;
    if (!(parseFloat(size) >= 11)) bad('font-size', `${label} is ${size}, under 11px`);
    const g = t.parentElement;
    const isG = g && g.localName === 'g' && g.namespaceURI === svg.namespaceURI;
    const rects = isG ? [...g.children].filter(c => c.localName === 'rect') : [];
    if (rects.length !== 1) {
      const where = isG ? `a <g> with ${rects.length} <rect> children` : `<${g.localName}>`;
      bad('parent', `${label} is a child of ${where}, not of a <g> with one <rect>`);
    } else {
      const b = rects[0].getBoundingClientRect();
      if (r.left < b.left - 0.5 || r.top < b.top - 0.5 || r.right > b.right + 0.5
          || r.bottom > b.bottom + 0.5) bad('overflow', `${label} overflows its box ${box(b)}`);
    }
    texts.push({ r, label });
  }
  // Sweep by left edge: a text leaves the active list once every later one starts past it.
  texts.sort((a, b) => a.r.left - b.r.left);
  let active = [];
  for (const a of texts) {
    active = active.filter(b => b.r.right - a.r.left > 0.5);
    for (const b of active) {
      const ow = Math.min(a.r.right, b.r.right) - a.r.left;
      const oh = Math.min(a.r.bottom, b.r.bottom) - Math.max(a.r.top, b.r.top);
      if (ow > 0.5 && oh > 0.5) bad('overlap', `${b.label} overlaps ${a.label}`);
    }
    active.push(a);
  }
  return all.length;
}
function checkAll() {
  let result;
  try {
    const violations = [], texts = {};
    for (const div of document.querySelectorAll('div[data-name]')) {
      const name = div.dataset.name;
      const svg = div.shadowRoot && div.shadowRoot.querySelector('svg');
      if (!svg) { violations.push(name + ': svg: no <svg> element rendered'); continue; }
      texts[name] = checkFigure(name, svg, violations);
    }
    result = { violations, texts };
  } catch (e) {
    result = { error: String(e && e.stack || e) };
  }
  document.getElementById('result').textContent = JSON.stringify(result)
    .replace(/[<>&\u007f-\uffff]/g, c => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}
window.addEventListener('load', () => document.fonts.ready.then(checkAll));
"#;

/// Lays out every `(name, svg file)` in one page in headless Chromium and returns what
/// the contract checks found; `Err` when the page could not be built or checked at all.
fn check_svgs(files: &[(String, PathBuf)]) -> Result<Report, String> {
    let chromium = find_chromium()?;
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let mut page = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <style>body { margin: 0 } div { margin-bottom: 20px }</style></head><body>\n",
    );
    for (name, path) in files {
        let svg = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // The XML declaration and doctype have no place inside an HTML page.
        let start = svg
            .find("<svg")
            .ok_or_else(|| format!("{} has no <svg> element", path.display()))?;
        page += &format!(
            "<div data-name=\"{}\"><template shadowrootmode=\"open\">{}</template></div>\n",
            escape_html(name),
            &svg[start..]
        );
    }
    page += &format!(
        "<pre id=\"result\">pending</pre>\n<script>{CHECK_SCRIPT}</script>\n</body></html>\n"
    );
    let page_path = dir.path().join("figures.html");
    std::fs::write(&page_path, page)
        .map_err(|e| format!("cannot write {}: {e}", page_path.display()))?;

    let dom = run_chromium(&chromium, dir.path(), &page_path)?;
    let open = "<pre id=\"result\">";
    let json = dom
        .find(open)
        .and_then(|at| dom[at + open.len()..].split("</pre>").next())
        .ok_or_else(|| format!("no <pre id=\"result\"> in Chromium's DOM:\n{}", tail(&dom)))?;
    let json = unescape_html(json);
    let value: Value = serde_json::from_str(&json)
        .map_err(|e| format!("the page's script did not finish (result {json:?}): {e}"))?;
    if let Some(error) = value.get("error") {
        return Err(format!("the page's script failed: {error}"));
    }
    let violations = value["violations"]
        .as_array()
        .ok_or_else(|| format!("result has no violations list: {json}"))?
        .iter()
        .map(|v| v.as_str().unwrap_or("(not a string)").to_string())
        .collect();
    let texts = value["texts"]
        .as_object()
        .ok_or_else(|| format!("result has no text counts: {json}"))?
        .iter()
        .map(|(name, n)| (name.clone(), n.as_u64().unwrap_or(0)))
        .collect();
    Ok(Report { violations, texts })
}

/// `ARCHC_CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`.
fn find_chromium() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ARCHC_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            if dir.join(name).is_file() {
                return Ok(dir.join(name));
            }
        }
    }
    Err(
        "no Chromium found (set ARCHC_CHROMIUM, or put `chromium` on PATH): install it \
         with `apt-get install chromium fonts-dejavu-core`, as tools/test.sh does"
            .to_string(),
    )
}

/// Loads `page` headless and returns the DOM after its scripts ran.
fn run_chromium(chromium: &Path, scratch: &Path, page: &Path) -> Result<String, String> {
    let (out, err) = (scratch.join("dom.html"), scratch.join("chromium.log"));
    let create = |p: &Path| {
        std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))
    };
    let started = Instant::now();
    let mut child = Command::new(chromium)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu"])
        .arg("--virtual-time-budget=10000")
        // Debian's launcher adds this only when its /dev/shm probe works; containers
        // often have a 64 MB /dev/shm that a page this size can exhaust.
        .arg("--disable-dev-shm-usage")
        // A profile of its own, so that parallel tests do not share (and lock) one.
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(create(&out)?)
        .stderr(create(&err)?)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {} (install chromium or fix ARCHC_CHROMIUM): {e}",
                chromium.display()
            )
        })?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > CHROMIUM_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} took over {CHROMIUM_TIMEOUT:?}",
                    chromium.display()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for {}: {e}", chromium.display())),
        }
    };
    eprintln!(
        "chromium laid out {} in {:?}",
        page.display(),
        started.elapsed()
    );
    let log = std::fs::read_to_string(&err).unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "{} failed ({status}):\n{}",
            chromium.display(),
            tail(&log)
        ));
    }
    std::fs::read_to_string(&out).map_err(|e| format!("cannot read Chromium's DOM: {e}"))
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The script's JSON has no `<`, `>` or `&`; this only undoes what a serializer might add.
fn unescape_html(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The last 40 lines of `s`.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs `archc draw MODELS... -o out` from the repository root.
fn draw(models: &[&str], out: &Path) -> Result<(), String> {
    let o = Command::new(env!("CARGO_BIN_EXE_archc"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("draw")
        .args(models)
        .arg("-o")
        .arg(out)
        .output()
        .map_err(|e| format!("cannot run archc: {e}"))?;
    if o.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&o.stderr);
    Err(format!(
        "`archc draw {} -o {}` failed ({}):\n{stderr}",
        models.join(" "),
        out.display(),
        o.status
    ))
}

#[test]
fn every_figure_fits_its_boxes_in_chromium() {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut stems: Vec<String> = std::fs::read_dir(&examples)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", examples.display()))
        .map(|entry| entry.expect("examples/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    stems.sort();
    assert!(
        stems.len() >= 10,
        "only {} examples under {}",
        stems.len(),
        examples.display()
    );
    let arch = |m: &str| format!("examples/{m}.arch");
    let mut figures: Vec<(String, Vec<String>)> =
        stems.iter().map(|s| (s.clone(), vec![arch(s)])).collect();
    let side = ["deepseek-v3", "llama-4-maverick"].map(arch);
    let three = ["gemma-3-27b", "qwen3-next-80b-a3b", "gpt-oss-20b"].map(arch);
    figures.push(("side".to_string(), side.to_vec()));
    figures.push(("three".to_string(), three.to_vec()));

    let mut files = Vec::new();
    let mut failures = Vec::new();
    for (name, models) in &figures {
        let out = dir.path().join(format!("{name}.svg"));
        let models: Vec<&str> = models.iter().map(String::as_str).collect();
        match draw(&models, &out) {
            Ok(()) => files.push((name.clone(), out)),
            // The first failures in full, then only their command lines.
            Err(e) if failures.len() < 3 => failures.push(e),
            Err(e) => failures.push(e.lines().next().unwrap_or_default().to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} draws failed:\n{}",
        failures.len(),
        figures.len(),
        failures.join("\n")
    );

    let report = check_svgs(&files).unwrap_or_else(|e| panic!("{e}"));
    let mut problems = report.violations.clone();
    for (name, _) in &files {
        match report.texts.get(name) {
            Some(&n) if n >= 10 => {}
            n => problems.push(format!(
                "{name}: texts: {} checked, fewer than 10",
                n.copied().unwrap_or(0)
            )),
        }
    }
    if problems.len() > 50 {
        let more = problems.len() - 50;
        problems.truncate(50);
        problems.push(format!("... and {more} more"));
    }
    assert!(
        problems.is_empty(),
        "the figures as Chromium lays them out:\n{}",
        problems.join("\n")
    );
}

/// A figure in the house style: `(x, y, w, h, text, font size)` per box, the text inset
/// by 6 px and set on the box's baseline.
fn figure(width: u32, boxes: &[(u32, u32, u32, u32, &str, u32)]) -> String {
    let mut svg = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{width}\" height=\"200\" viewBox=\"0 0 {width} 200\" \
         font-family=\"DejaVu Sans Mono, monospace\">\n"
    );
    for &(x, y, w, h, text, size) in boxes {
        svg += &format!(
            "<g><rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"black\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"{size}\">{text}</text></g>\n",
            x + 6,
            y + h - 8
        );
    }
    svg + "</svg>\n"
}

#[test]
fn the_checker_catches_overflow_and_overlap() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 12 px DejaVu Sans Mono: 7.2 px a character, 14 px a line; a 24 px box holds one line.
    let good = figure(
        400,
        &[
            (10, 10, 160, 24, "attention", 12),
            (10, 50, 160, 24, "mlp &amp; gate", 12),
            (200, 10, 190, 24, "rmsnorm × 2", 14),
        ],
    );
    let bad = figure(
        400,
        &[
            (10, 10, 60, 24, "too long → &lt;here&gt;", 12),
            (10, 100, 160, 24, "attention", 12),
            (40, 102, 160, 24, "experts", 12),
            (250, 150, 100, 24, "tiny", 9),
        ],
    );
    // Breaks the rules the other two keep: size, parent and content.
    let broken = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"200\" height=\"100\" \
        viewBox=\"0 0 400 200\" font-family=\"DejaVu Sans Mono, monospace\" font-size=\"12\">\
        <text x=\"10\" y=\"20\">loose</text>\
        <g><rect x=\"0\" y=\"40\" width=\"200\" height=\"30\"/><rect x=\"0\" y=\"40\" width=\"9\" height=\"9\"/>\
        <text x=\"10\" y=\"60\">two boxes</text></g>\
        <g><rect x=\"0\" y=\"100\" width=\"200\" height=\"30\"/><text x=\"10\" y=\"120\"> </text></g></svg>";
    let mut files = Vec::new();
    for (name, svg) in [
        ("good", good.as_str()),
        ("bad", bad.as_str()),
        ("broken", broken),
    ] {
        let path = dir.path().join(format!("{name}.svg"));
        std::fs::write(&path, svg).expect("write svg");
        files.push((name.to_string(), path));
    }
    let report = check_svgs(&files).unwrap_or_else(|e| panic!("{e}"));
    let kinds = |figure: &str| -> Vec<String> {
        let prefix = format!("{figure}: ");
        let mut kinds: Vec<String> = report
            .violations
            .iter()
            .filter_map(|v| v.strip_prefix(&prefix))
            .map(|v| v.split(": ").next().unwrap_or_default().to_string())
            .collect();
        kinds.sort();
        kinds
    };
    let all = report.violations.join("\n");
    assert_eq!(kinds("good"), Vec::<String>::new(), "{all}");
    assert_eq!(kinds("bad"), ["font-size", "overflow", "overlap"], "{all}");
    assert_eq!(
        kinds("broken"),
        ["empty", "parent", "parent", "size"],
        "{all}"
    );
    let counts: Vec<(&str, u64)> = report.texts.iter().map(|(k, &v)| (k.as_str(), v)).collect();
    assert_eq!(counts, [("bad", 4), ("broken", 3), ("good", 3)]);
    // The messages name the text and where it is, in the figure's own units; the widths
    // are DejaVu Sans Mono's (7.2 px a character at 12 px), the font the figures ask for.
    assert!(
        all.contains("bad: overlap: \"attention\" [16, 105, 81, 119]"),
        "{all}\n(is fonts-dejavu-core installed? Chromium may have picked another font)"
    );
    assert!(all.contains("broken: parent: \"loose\" [10, 8, "), "{all}");
    assert!(
        all.contains("bad: overflow: \"too long → <here>\" ["),
        "{all}"
    );
}
