//! `report.html` of a study report: one self-contained page that works offline (inline CSS, the
//! accuracy chart inlined as SVG, no scripts, no external resources) with the study's name, the
//! summary table, the per-iteration table of each group, the chart and the missing and
//! incomplete points. Every piece of text from the study is HTML-escaped.

use std::fmt::Write as _;

use super::report::{format_stat, Stat, StudyReport};

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1200px;\
padding:0 1em;color:#222;line-height:1.4}h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;\
border-bottom:1px solid #ddd;padding-bottom:.2em}h3{font-size:1.05em;margin-top:1.4em}\
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #d0d0d0;padding:.3em .6em}\
th{background:#f3f3f3;text-align:left;white-space:nowrap}div.wide{overflow-x:auto}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
tr:nth-child(even) td{background:#fafafa}code{background:#f3f3f3;padding:0 .2em}.note{color:#555;font-size:.9em}\
figure{margin:1em 0}figure svg{max-width:100%;height:auto}";

/// A table: header cells and rows of (text, numeric) cells.
fn table(out: &mut String, id: Option<&str>, header: &[String], rows: &[Vec<(String, bool)>]) {
    out.push_str("<div class=\"wide\">");
    match id {
        Some(id) => {
            let _ = write!(out, "<table id=\"{}\">", escape(id));
        }
        None => out.push_str("<table>"),
    }
    out.push_str("<thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for (cell, numeric) in row {
            if *numeric {
                let _ = write!(out, "<td class=\"num\">{}</td>", escape(cell));
            } else {
                let _ = write!(out, "<td>{}</td>", escape(cell));
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

/// Units alive per layer, `300-100-10` style, each layer's mean (one decimal where not whole).
fn units(layers: &[super::report::LayerUnits]) -> String {
    layers
        .iter()
        .map(|l| {
            let m = l.units_alive.mean;
            if (m - m.round()).abs() < 1e-9 {
                format!("{m:.0}")
            } else {
                format!("{m:.1}")
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn stat(s: &Stat, decimals: usize) -> String {
    format_stat(&Some(*s), decimals)
}

/// The page. `svg` is the chart to inline; `plots` says whether plots were asked for (for the
/// note shown when there is no chart).
pub fn render(r: &StudyReport, svg: Option<&str>, plots: bool) -> String {
    let mut out = String::new();
    let title = format!("Study {}", r.study);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body>\n",
        escape(&title)
    );
    let _ = writeln!(out, "<h1>Study <code>{}</code></h1>", escape(&r.study));
    let complete: usize = r.groups.iter().map(|g| g.n).sum();
    let _ = writeln!(
        out,
        "<p class=\"note\">{} points in {} groups: {complete} complete, {} incomplete, {} missing.</p>",
        r.points_total,
        r.groups.len(),
        r.incomplete.len(),
        r.missing.len()
    );

    out.push_str("<h2>Summary</h2>\n");
    let (header, rows) = r.summary_rows();
    let text_cols = 1 + r.varied_keys.len();
    let rows: Vec<Vec<(String, bool)>> = rows
        .into_iter()
        .map(|row| row.into_iter().enumerate().map(|(i, c)| (c, i >= text_cols)).collect())
        .collect();
    table(&mut out, Some("summary"), &header, &rows);
    out.push_str(
        "<p class=\"note\">mean ± sample standard deviation (n − 1) over the complete points (seeds) of \
         each group; – = undefined (n = 1) or no data. Accuracy on the test set after retraining; \
         dense = iteration 0; delta = final − dense, per seed, in percentage points; CR = compression \
         rate of weights and biases.</p>\n",
    );

    out.push_str("<h2>Accuracy against remaining parameters</h2>\n");
    match svg {
        Some(svg) => {
            // The SVG is plotters' output (its text is escaped); drop an XML prolog if any.
            let body = match svg.find("<svg") {
                Some(at) => &svg[at..],
                None => svg,
            };
            let _ = writeln!(out, "<figure>{body}</figure>");
        }
        None if plots => out.push_str("<p class=\"note\">No metrics yet: nothing to plot.</p>\n"),
        None => out.push_str("<p class=\"note\">Plots were not drawn (--no-plots).</p>\n"),
    }

    out.push_str("<h2>Iterations</h2>\n");
    let header: Vec<String> = [
        "iter",
        "n",
        "acc pruned %",
        "acc retrained %",
        "remaining %",
        "CR (x)",
        "FLOPs pruned %",
        "units alive (mean per layer)",
    ]
    .map(String::from)
    .to_vec();
    for (gi, g) in r.groups.iter().enumerate() {
        let _ = writeln!(out, "<h3 id=\"group-{gi}\">{}</h3>", escape(&g.group));
        if g.per_iteration.is_empty() {
            out.push_str("<p class=\"note\">No metrics yet.</p>\n");
            continue;
        }
        let rows: Vec<Vec<(String, bool)>> = g
            .per_iteration
            .iter()
            .map(|it| {
                vec![
                    (it.iteration.to_string(), true),
                    (it.n.to_string(), true),
                    (stat(&it.acc_pruned, 2), true),
                    (stat(&it.acc_retrained, 2), true),
                    (stat(&it.remaining_percent, 2), true),
                    (stat(&it.compression, 2), true),
                    (stat(&it.flops_pruned_percent, 2), true),
                    (units(&it.layers), false),
                ]
            })
            .collect();
        table(&mut out, None, &header, &rows);
    }

    for (title, list) in [("Incomplete points", &r.incomplete), ("Missing points", &r.missing)] {
        let _ = writeln!(out, "<h2>{title}</h2>");
        if list.is_empty() {
            out.push_str("<p class=\"note\">None.</p>\n");
            continue;
        }
        out.push_str("<ul>\n");
        for p in list {
            let _ = writeln!(
                out,
                "<li><code>{}</code> ({}): {}</li>",
                escape(&p.id),
                escape(&p.run_dir.display().to_string()),
                escape(&p.reason)
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }
}
