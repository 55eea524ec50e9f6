//! Plots of one or several runs, as SVG and PNG (text drawn with an embedded DejaVu Sans, so
//! PNGs look the same on any machine):
//!
//! - `accuracy.{svg,png}`: test accuracy against remaining parameters (log axis, 100 % on the
//!   left, so iterations progress to the right), one line per run, one numbered marker per
//!   iteration; left panel after retraining, right panel right after pruning.
//! - `layers.{svg,png}`: remaining parameters per layer at each run's last iteration, grouped
//!   bars (one colour per run).

use std::path::{Path, PathBuf};
use std::sync::Once;

use ab_glyph::{Font, FontRef, ScaleFont};
use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;
use plotters_backend::{
    BackendColor, BackendCoord, BackendTextStyle, DrawingBackend as Backend, DrawingErrorKind,
};

use crate::checkpoint::write_atomic;
use crate::report::RunSummary;

pub(crate) const FONT: &str = "sans-serif";
static REGISTER: Once = Once::new();
const FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

pub(crate) fn register_font() {
    REGISTER.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
}

/// A bitmap backend that draws text itself, glyph by glyph on a common baseline (plotters'
/// own ab_glyph path rounds each glyph's vertical offset separately, which lifts `.` and `,`
/// at small sizes).
struct CrispText<'a> {
    inner: BitMapBackend<'a>,
    font: FontRef<'static>,
}

impl CrispText<'_> {
    /// The font at `size`, scaled as plotters' own layout code scales it (so legend boxes and
    /// label areas fit the text).
    fn scaled(&self, size: f64) -> ab_glyph::PxScaleFont<&FontRef<'static>> {
        self.font.as_scaled(size as f32)
    }

    /// Width, ascent and height of `text` at `size`.
    fn measure(&self, text: &str, size: f64) -> (f32, f32, f32) {
        let f = self.scaled(size);
        let mut width = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                width += f.kern(p, id);
            }
            width += f.h_advance(id);
            prev = Some(id);
        }
        (width, f.ascent(), f.ascent() - f.descent())
    }
}

impl<'a> Backend for CrispText<'a> {
    type ErrorType = <BitMapBackend<'a> as Backend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }
    fn draw_pixel(
        &mut self,
        p: BackendCoord,
        c: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(p, c)
    }
    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(a, b, style, fill)
    }
    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }
    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }
    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (w, _, h) = self.measure(text, style.size());
        Ok((w.ceil() as u32, h.ceil() as u32))
    }
    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let (width, ascent, height) = self.measure(text, style.size());
        let dx = match style.anchor().h_pos {
            HPos::Left => 0.0,
            HPos::Right => -width,
            HPos::Center => -width / 2.0,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0.0,
            VPos::Center => -height / 2.0,
            VPos::Bottom => -height,
        };
        let trans = style.transform();
        let (w, h) = self.get_size();
        let f = self.scaled(style.size());
        let mut pixels = Vec::new();
        let mut caret = 0.0f32;
        let mut prev = None;
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                caret += f.kern(p, id);
            }
            prev = Some(id);
            let glyph =
                id.with_scale_and_position(f.scale(), ab_glyph::point(caret + dx, (ascent + dy).round()));
            caret += f.h_advance(id);
            if let Some(outline) = self.font.outline_glyph(glyph) {
                let b = outline.px_bounds();
                outline.draw(|x, y, coverage| {
                    if coverage > 0.0 {
                        pixels.push((b.min.x as i32 + x as i32, b.min.y as i32 + y as i32, coverage));
                    }
                });
            }
        }
        for (x, y, coverage) in pixels {
            let (tx, ty) = trans.transform(x, y);
            let (px, py) = (pos.0 + tx, pos.1 + ty);
            if px >= 0 && py >= 0 && (px as u32) < w && (py as u32) < h {
                let c = BackendColor { alpha: color.alpha * coverage.min(1.0) as f64, rgb: color.rgb };
                self.inner.draw_pixel((px, py), c)?;
            }
        }
        Ok(())
    }
}

/// matplotlib's tab10 colours.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub(crate) fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

pub(crate) fn e<E: std::fmt::Debug>(err: E) -> anyhow::Error {
    anyhow!("drawing failed: {err:?}")
}

/// `100`, `12.5`, `3.13`, `0.5` — short labels for a log axis.
pub(crate) fn pct_label(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        let s = format!("{v:.1}");
        s.trim_end_matches(".0").to_string()
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `(lo, hi)` with a margin, never empty.
pub(crate) fn padded(values: impl Iterator<Item = f64>, pad: f64, clamp: (f64, f64)) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return clamp;
    }
    let span = (hi - lo).max(1.0);
    ((lo - pad * span).max(clamp.0), (hi + pad * span).min(clamp.1))
}

/// Tick values `c * 10^k` (coarsest ladder giving at least four ticks) within `[lo, hi]`.
pub(crate) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let ladders: [&[f64]; 3] =
        [&[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 5.0, 7.0], &[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]];
    let mut ticks = Vec::new();
    for ladder in ladders {
        ticks.clear();
        for k in -4..=3 {
            for &c in ladder {
                let v = c * 10f64.powi(k);
                if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                    ticks.push(v);
                }
            }
        }
        if ticks.len() >= 4 {
            break;
        }
    }
    ticks
}

/// The remaining-parameters axis: logarithmic and reversed (`hi` at the left), with `ticks`
/// as its key points.
#[derive(Clone)]
pub(crate) struct RemainingAxis {
    pub(crate) lo: f64,
    pub(crate) hi: f64,
    pub(crate) ticks: Vec<f64>,
}

impl Ranged for RemainingAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let frac = (self.hi.ln() - value.max(1e-12).ln()) / (self.hi.ln() - self.lo.ln());
        limit.0 + ((limit.1 - limit.0) as f64 * frac).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// The accuracy-against-remaining-parameters axes (100 % on the left, fewer parameters to the
/// right, log scale; accuracy from `y0` to `y1`), drawn with their mesh and labels: what the
/// run plots and the study's band plot share.
pub(crate) fn accuracy_axes<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    x_desc: &str,
    min_x: f64,
    (y0, y1): (f64, f64),
) -> Result<ChartContext<'a, DB, Cartesian2d<RemainingAxis, plotters::coord::types::RangedCoordf64>>> {
    let (lo, hi) = (min_x * 0.8, 100.0 * 1.12);
    let x_range = RemainingAxis { lo, hi, ticks: log_ticks(lo, hi) };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, y0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("test accuracy (%)")
        .x_label_formatter(&|v| pct_label(*v))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .y_labels(8)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(245, 245, 245))
        .bold_line_style(RGBColor(220, 220, 220))
        .draw()
        .map_err(e)?;
    Ok(chart)
}

fn accuracy_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    runs: &[RunSummary],
    title: &str,
    value: fn(&crate::metrics::IterationMetrics) -> f64,
) -> Result<()> {
    let all = runs.iter().flat_map(|r| r.rows.iter());
    let min_x = all.clone().map(|r| r.remaining_percent).fold(100.0f64, f64::min).max(0.001);
    let (y0, y1) = padded(all.map(value), 0.08, (0.0, 100.0));
    let mut chart = accuracy_axes(area, title, "remaining parameters (%, log scale)", min_x, (y0, y1))?;
    for (i, run) in runs.iter().enumerate() {
        let c = color(i);
        let points: Vec<(f64, f64)> = run.rows.iter().map(|r| (r.remaining_percent, value(r))).collect();
        chart.draw_series(LineSeries::new(points.clone(), c.stroke_width(3))).map_err(e)?;
        // A marker per iteration, numbered above it (even iterations) or below it (odd ones), so
        // the numbers of neighbouring points do not collide.
        let above = (FONT, 13).into_font().color(&c).pos(Pos::new(HPos::Center, VPos::Bottom));
        let below = (FONT, 13).into_font().color(&c).pos(Pos::new(HPos::Center, VPos::Top));
        chart
            .draw_series(run.rows.iter().zip(&points).map(|(r, &p)| {
                let (offset, style) =
                    if r.iteration % 2 == 0 { ((0, -8), above.clone()) } else { ((0, 8), below.clone()) };
                EmptyElement::at(p)
                    + Circle::new((0, 0), 5, c.filled())
                    + Text::new(r.iteration.to_string(), offset, style)
            }))
            .map_err(e)?;
    }
    Ok(())
}

/// Height of the legend strip above the charts.
pub(crate) fn legend_height(runs: usize) -> u32 {
    20 + 24 * runs.max(1) as u32
}

/// One legend line per run, above the charts (never over the data): a line sample with a
/// marker (`bars = false`) or a filled box, then the label.
pub(crate) fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    labels: &[String],
    bars: bool,
) -> Result<()> {
    let style = (FONT, 15).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, label) in labels.iter().enumerate() {
        let c = color(i);
        let (x, y) = (90, 16 + 24 * i as i32);
        if bars {
            area.draw(&Rectangle::new([(x + 8, y - 7), (x + 22, y + 7)], c.filled())).map_err(e)?;
        } else {
            area.draw(&PathElement::new(vec![(x, y), (x + 30, y)], c.stroke_width(3))).map_err(e)?;
            area.draw(&Circle::new((x + 15, y), 5, c.filled())).map_err(e)?;
        }
        area.draw(&Text::new(label.clone(), (x + 42, y), style.clone())).map_err(e)?;
    }
    Ok(())
}

fn draw_accuracy<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[RunSummary]) -> Result<()> {
    root.fill(&WHITE).map_err(e)?;
    let (top, body) = root.split_vertically(legend_height(runs.len()));
    let labels: Vec<String> = runs
        .iter()
        .map(|r| format!("{} — {}, test accuracy by iteration (numbered)", r.name(), r.method_label()))
        .collect();
    legend(&top, &labels, false)?;
    let (left, right) = body.split_horizontally(body.dim_in_pixel().0 / 2);
    accuracy_panel(&left, runs, "after retraining", |r| r.acc_retrained)?;
    accuracy_panel(&right, runs, "right after pruning (before retraining)", |r| r.acc_pruned)?;
    root.present().map_err(e)?;
    Ok(())
}

fn draw_layers<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[RunSummary]) -> Result<()> {
    root.fill(&WHITE).map_err(e)?;
    let (top, body) = root.split_vertically(legend_height(runs.len()));
    let labels: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let last = r.rows.last()?;
            Some(format!(
                "{} — {}, iteration {}: {:.2} % of parameters remain",
                r.name(),
                r.method_label(),
                last.iteration,
                last.remaining_percent
            ))
        })
        .collect();
    legend(&top, &labels, true)?;
    let root = &body;
    let names: Vec<String> = runs
        .iter()
        .filter_map(|r| r.rows.last())
        .max_by_key(|r| r.layers.len())
        .map(|r| r.layers.iter().map(|l| l.name.clone()).collect())
        .unwrap_or_default();
    let n = names.len().max(1);
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(4);
    let rotate = n > 8;
    let label_area = if rotate { 30 + 8 * longest as u32 } else { 48 };
    let mut chart = ChartBuilder::on(root)
        .caption("remaining parameters per layer (last iteration)", (FONT, 22))
        .margin(16)
        .x_label_area_size(label_area)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..105f64)
        .map_err(e)?;
    // Many layers: the names are drawn below, rotated; plotters centres rotated axis labels on
    // the axis, so they are placed by hand.
    let fmt = |v: &f64| {
        let i = v.round();
        if !rotate && (v - i).abs() < 1e-6 && i >= 0.0 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&fmt)
        .y_desc("remaining parameters (%)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(11)
        .label_style((FONT, 15))
        .x_label_style((FONT, 14))
        .axis_desc_style((FONT, 17))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(220, 220, 220))
        .draw()
        .map_err(e)?;
    if rotate {
        let style = (FONT, 14)
            .into_font()
            .transform(FontTransform::Rotate90)
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        let base = root.get_base_pixel();
        for (i, name) in names.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64, 0.0));
            root.draw(&Text::new(name.clone(), (x - base.0, y - base.1 + 8), style.clone())).map_err(e)?;
        }
    }
    let k = runs.len().max(1) as f64;
    let width = 0.8 / k;
    let annotate = n * runs.len() <= 16;
    for (ri, run) in runs.iter().enumerate() {
        let c = color(ri);
        let Some(last) = run.rows.last() else { continue };
        let bars: Vec<(f64, f64)> = last
            .layers
            .iter()
            .enumerate()
            .map(|(li, l)| (li as f64 - 0.4 + width * ri as f64, l.remaining_percent()))
            .collect();
        chart
            .draw_series(
                bars.iter().map(|&(x0, y)| Rectangle::new([(x0, 0.0), (x0 + width * 0.92, y)], c.filled())),
            )
            .map_err(e)?
            .label(format!(
                "{} — iteration {} ({:.2} % remain)",
                run.name(),
                last.iteration,
                last.remaining_percent
            ))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        if annotate {
            let style = (FONT, 13).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
            chart
                .draw_series(bars.iter().map(|&(x0, y)| {
                    EmptyElement::at((x0 + width * 0.46, y))
                        + Text::new(format!("{y:.1}"), (0, -4), style.clone())
                }))
                .map_err(e)?;
        }
    }
    root.present().map_err(e)?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Chart {
    Accuracy,
    Layers,
}

fn draw<DB: DrawingBackend>(chart: Chart, root: &DrawingArea<DB, Shift>, runs: &[RunSummary]) -> Result<()> {
    match chart {
        Chart::Accuracy => draw_accuracy(root, runs),
        Chart::Layers => draw_layers(root, runs),
    }
}

fn render(stem: &Path, size: (u32, u32), runs: &[RunSummary], chart: Chart) -> Result<Vec<PathBuf>> {
    let svg_path = stem.with_extension("svg");
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        draw(chart, &root, runs)?;
    }
    write_atomic(&svg_path, text.as_bytes())?;
    let png_path = stem.with_extension("png");
    let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let inner = BitMapBackend::with_buffer(&mut buf, size);
        let font = FontRef::try_from_slice(FONT_BYTES).map_err(|err| anyhow!("embedded font: {err}"))?;
        let root = CrispText { inner, font }.into_drawing_area();
        draw(chart, &root, runs)?;
    }
    let mut bytes = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut bytes),
        &buf,
        size.0,
        size.1,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|err| anyhow!("{}: PNG encoding failed: {err}", png_path.display()))?;
    write_atomic(&png_path, &bytes)?;
    Ok(vec![svg_path, png_path])
}

/// Writes `accuracy.{svg,png}` and `layers.{svg,png}` for `runs` into `dir`; returns the files.
pub fn write_all(dir: &Path, runs: &[RunSummary]) -> Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut files =
        render(&dir.join("accuracy"), (1500, 600 + legend_height(runs.len())), runs, Chart::Accuracy)?;
    let n_layers = runs.iter().filter_map(|r| r.rows.last()).map(|r| r.layers.len()).max().unwrap_or(1);
    let per_layer = (16 * runs.len() as u32 + 18).max(48);
    let width = (160 + per_layer * n_layers as u32).clamp(900, 4000);
    files.extend(render(&dir.join("layers"), (width, 600 + legend_height(runs.len())), runs, Chart::Layers)?);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(pct_label(100.0), "100");
        assert_eq!(pct_label(2.0), "2");
        assert_eq!(pct_label(2.5), "2.5");
        assert_eq!(pct_label(0.5), "0.5");
        assert_eq!(padded([1.0, 2.0].into_iter(), 0.0, (0.0, 100.0)), (1.0, 2.0));
        assert_eq!(padded(std::iter::empty(), 0.1, (0.0, 100.0)), (0.0, 100.0));
        assert_eq!(log_ticks(1.0, 100.0), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        assert_eq!(log_ticks(30.0, 110.0), vec![30.0, 50.0, 70.0, 100.0]);
        assert_eq!(log_ticks(60.0, 110.0), vec![60.0, 70.0, 80.0, 100.0]);
    }
}
