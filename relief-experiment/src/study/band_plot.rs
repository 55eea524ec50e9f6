//! `accuracy.svg` of a study report: per group, the mean test accuracy after retraining against
//! the mean remaining parameters (%, log axis, 100 % on the left as in [`crate::plots`]), one
//! marker per iteration, with a shaded band of ±1 sample standard deviation of the accuracy
//! (no band where n = 1). One colour per group, all groups (methods) on the same axes, the
//! legend above the chart.

use anyhow::Result;
use plotters::prelude::*;

use super::report::{IterationStats, StudyReport};
use crate::plots::{accuracy_axes, color, e, legend, legend_height, padded, register_font};

/// Width of the chart in pixels.
const WIDTH: u32 = 1100;
/// Height of the plotting part (the legend comes on top).
const HEIGHT: u32 = 620;

/// `(x = mean remaining %, y = mean accuracy, std of the accuracy or 0)` per iteration.
fn series(its: &[IterationStats]) -> Vec<(f64, f64, f64)> {
    its.iter()
        .filter(|it| it.n > 0 && it.remaining_percent.mean.is_finite() && it.acc_retrained.mean.is_finite())
        .map(|it| (it.remaining_percent.mean, it.acc_retrained.mean, it.acc_retrained.std.unwrap_or(0.0)))
        .collect()
}

/// The legend label of a group: its id and the number of points with data.
fn label(group: &super::report::GroupReport) -> String {
    let n = group.per_iteration.iter().map(|it| it.n).max().unwrap_or(0);
    format!("{} (n = {n})", group.group)
}

/// One group's curve: its legend label and `(remaining %, accuracy mean, accuracy std)` points.
type Curve = (String, Vec<(f64, f64, f64)>);

/// The SVG text of the accuracy chart; `None` when no group has any metrics.
pub fn accuracy_svg(report: &StudyReport) -> Result<Option<String>> {
    let drawn: Vec<Curve> = report
        .groups
        .iter()
        .map(|g| (label(g), series(&g.per_iteration)))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if drawn.is_empty() {
        return Ok(None);
    }
    register_font();
    let labels: Vec<String> = drawn.iter().map(|(l, _)| l.clone()).collect();
    let size = (WIDTH, HEIGHT + legend_height(labels.len()));
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let (top, body) = root.split_vertically(legend_height(labels.len()));
        legend(&top, &labels, false)?;
        let all = drawn.iter().flat_map(|(_, s)| s.iter());
        let min_x = all.clone().map(|p| p.0).fold(100.0f64, f64::min).max(0.001);
        let (y0, y1) = padded(all.flat_map(|&(_, y, s)| [y - s, y + s]), 0.08, (0.0, 100.0));
        let mut chart = accuracy_axes(
            &body,
            "test accuracy after retraining: mean ± 1 std over seeds",
            "remaining parameters (%, log scale; mean over seeds)",
            min_x,
            (y0, y1),
        )?;
        // Bands first, so every line stays visible above every band.
        for (i, (_, s)) in drawn.iter().enumerate() {
            if s.iter().all(|p| p.2 == 0.0) {
                continue;
            }
            let mut outline: Vec<(f64, f64)> = s.iter().map(|&(x, y, sd)| (x, (y + sd).min(y1))).collect();
            outline.extend(s.iter().rev().map(|&(x, y, sd)| (x, (y - sd).max(y0))));
            chart.draw_series(std::iter::once(Polygon::new(outline, color(i).mix(0.18)))).map_err(e)?;
        }
        for (i, (_, s)) in drawn.iter().enumerate() {
            let c = color(i);
            let points: Vec<(f64, f64)> = s.iter().map(|&(x, y, _)| (x, y)).collect();
            chart.draw_series(LineSeries::new(points.clone(), c.stroke_width(3))).map_err(e)?;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled()))).map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    Ok(Some(text))
}
