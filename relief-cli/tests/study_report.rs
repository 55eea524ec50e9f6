//! The study report on a synthetic study directory: means, sample stds and n per group and
//! iteration against hand-computed values, the per-seed delta, the CSV/JSON files parsed back,
//! missing and incomplete points, errors naming bad files, `relief report STUDY_DIR`, and the
//! HTML page rendered by headless Chromium (skipped when there is none, unless
//! `RELIEF_REQUIRE_CHROMIUM=1`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use relief_experiment::config::{Config, Method};
use relief_experiment::metrics::{self, IterationMetrics, LayerMetrics};
use relief_experiment::study::points::{PointEntry, PointsFile};
use relief_experiment::study::report::{self, StudyReport};

const STUDY: &str = "demo <sweep> & co";
const NNRELIEF: &str = "model=lenet300-100,method=nnrelief";
const MAGNITUDE: &str = "model=lenet300-100,method=magnitude";
const SINGLE: &str = "model=lenet5,method=nnrelief";

/// One metrics row: accuracies, remaining %, compression, FLOPs pruned % and units alive of
/// layers `fc1`, `fc2`.
fn row(
    iteration: usize,
    acc: (f64, f64),
    remaining: f64,
    cr: f64,
    flops: f64,
    units: [i64; 2],
) -> IterationMetrics {
    IterationMetrics {
        iteration,
        acc_pruned: acc.0,
        acc_retrained: acc.1,
        val_acc: None,
        selected_epoch: 1,
        params_alive: (remaining * 100.0) as i64,
        params_total: 10_000,
        compression: cr,
        remaining_percent: remaining,
        flops: 0,
        flops_dense: 0,
        flops_pruned_percent: flops,
        layers: units
            .iter()
            .zip(["fc1", "fc2"])
            .map(|(&u, name)| LayerMetrics {
                name: name.into(),
                units_alive: u,
                units_total: 300,
                params_alive: u,
                params_total: 300,
            })
            .collect(),
        wall_time_s: 1.0,
    }
}

fn dense(acc: f64) -> IterationMetrics {
    row(0, (acc, acc), 100.0, 1.0, 0.0, [300, 100])
}

struct Point {
    model: &'static str,
    method: Method,
    seed: u64,
    iterations: usize,
    /// `None`: the point never started (no run directory).
    rows: Option<Vec<IterationMetrics>>,
}

fn group_of(p: &Point) -> String {
    let m = if p.method == Method::Nnrelief { "nnrelief" } else { "magnitude" };
    format!("model={},method={m}", p.model)
}

/// Writes a study directory: run directories with `config.resolved.toml` and `metrics.json`,
/// and `points.json`.
fn write_study(dir: &Path, name: &str, points: &[Point]) {
    let mut entries = Vec::new();
    for (index, p) in points.iter().enumerate() {
        let group = group_of(p);
        let id = format!("{group},seed={}", p.seed);
        let run_dir = PathBuf::from("runs").join(&id);
        let mut cfg = Config { model: p.model.into(), seed: p.seed, ..Config::default() };
        cfg.prune.method = p.method;
        cfg.prune.iterations = p.iterations;
        if let Some(rows) = &p.rows {
            let abs = dir.join(&run_dir);
            std::fs::create_dir_all(&abs).unwrap();
            std::fs::write(abs.join("config.resolved.toml"), cfg.to_toml()).unwrap();
            if !rows.is_empty() {
                metrics::write(&abs, rows).unwrap();
            }
        }
        let method = if p.method == Method::Nnrelief { "\"nnrelief\"" } else { "\"magnitude\"" };
        let values: BTreeMap<String, String> = [
            ("model".to_string(), format!("\"{}\"", p.model)),
            ("prune.method".to_string(), method.to_string()),
            ("seed".to_string(), p.seed.to_string()),
            ("device".to_string(), "\"cpu\"".to_string()),
        ]
        .into_iter()
        .collect();
        entries.push(PointEntry {
            index,
            id,
            group,
            hash: cfg.hash(),
            run_dir,
            values,
            seed: p.seed,
            depends_on: None,
        });
    }
    PointsFile { study: name.into(), points: entries }.write(dir).unwrap();
}

/// NNrelief (2 iterations) x seeds 1-3 plus an incomplete seed 4, magnitude (1 iteration) x
/// seeds 1-3 plus a seed 4 that never started, LeNet-5 with one seed (n = 1).
fn synthetic(dir: &Path) {
    let nn =
        |seed: u64, d: f64, it1: (f64, f64), it2: (f64, f64), rem: f64, cr: f64, fl: f64, u: i64| Point {
            model: "lenet300-100",
            method: Method::Nnrelief,
            seed,
            iterations: 2,
            rows: Some(vec![
                dense(d),
                row(1, it1, 50.0, 2.0, 30.0, [250, 90]),
                row(2, it2, rem, cr, fl, [u, 80]),
            ]),
        };
    let mag = |seed: u64, d: f64, last: f64| Point {
        model: "lenet300-100",
        method: Method::Magnitude,
        seed,
        iterations: 1,
        rows: Some(vec![dense(d), row(1, (last - 10.0, last), 50.0, 2.0, 40.0, [300, 100])]),
    };
    let points = vec![
        nn(1, 98.0, (80.0, 97.0), (70.0, 90.0), 10.0, 10.0, 50.0, 200),
        nn(2, 98.5, (82.0, 97.5), (72.0, 92.0), 12.0, 8.0, 60.0, 210),
        nn(3, 99.0, (84.0, 98.0), (74.0, 94.0), 14.0, 6.0, 70.0, 220),
        Point {
            model: "lenet300-100",
            method: Method::Nnrelief,
            seed: 4,
            iterations: 2,
            rows: Some(vec![dense(99.5), row(1, (86.0, 98.5), 50.0, 2.0, 30.0, [250, 90])]),
        },
        mag(1, 97.0, 95.0),
        mag(2, 97.0, 96.0),
        mag(3, 97.0, 97.0),
        Point { model: "lenet300-100", method: Method::Magnitude, seed: 4, iterations: 1, rows: None },
        Point {
            model: "lenet5",
            method: Method::Nnrelief,
            seed: 1,
            iterations: 1,
            rows: Some(vec![dense(99.0), row(1, (95.0, 98.75), 20.0, 5.0, 55.0, [6, 16])]),
        },
    ];
    write_study(dir, STUDY, &points);
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn assert_stat(s: &Option<report::Stat>, mean: f64, std: Option<f64>, n: usize) {
    let s = s.unwrap_or_else(|| panic!("no statistic, expected {mean} ± {std:?}"));
    assert!(close(s.mean, mean), "mean {} != {mean}", s.mean);
    match (s.std, std) {
        (Some(a), Some(b)) => assert!(close(a, b), "std {a} != {b}"),
        (a, b) => assert_eq!(a, b),
    }
    assert_eq!(s.n, n);
}

fn group<'a>(r: &'a StudyReport, id: &str) -> &'a report::GroupReport {
    r.groups.iter().find(|g| g.group == id).unwrap_or_else(|| panic!("no group {id}"))
}

#[test]
fn groups_are_aggregated_over_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic(tmp.path());
    let r = report::report(tmp.path(), None, true).unwrap();
    assert_eq!(r.study, STUDY);
    assert_eq!(r.points_total, 9);
    assert_eq!(r.varied_keys, vec!["model".to_string(), "prune.method".to_string()]);
    assert_eq!(
        r.groups.iter().map(|g| g.group.as_str()).collect::<Vec<_>>(),
        vec![NNRELIEF, MAGNITUDE, SINGLE]
    );

    let nn = group(&r, NNRELIEF);
    assert_eq!(nn.values["model"], "lenet300-100");
    assert_eq!(nn.values["prune.method"], "nnrelief");
    assert_eq!((nn.n, nn.iterations, nn.seeds.clone()), (3, Some(2), vec![1, 2, 3]));
    assert_eq!(nn.points.len(), 4);
    assert_stat(&nn.dense_acc, 98.5, Some(0.5), 3);
    assert_stat(&nn.final_acc, 92.0, Some(2.0), 3);
    // Per seed: 90 - 98, 92 - 98.5, 94 - 99 = -8, -6.5, -5.
    assert_stat(&nn.delta, -6.5, Some(1.5), 3);
    assert_stat(&nn.remaining_percent, 12.0, Some(2.0), 3);
    assert_stat(&nn.compression, 8.0, Some(2.0), 3);
    assert_stat(&nn.flops_pruned_percent, 60.0, Some(10.0), 3);
    // Iterations 0 and 1 include the incomplete seed 4; iteration 2 does not.
    let its = &nn.per_iteration;
    assert_eq!(its.iter().map(|i| (i.iteration, i.n)).collect::<Vec<_>>(), vec![(0, 4), (1, 4), (2, 3)]);
    assert_eq!(its[1].seeds, vec![1, 2, 3, 4]);
    assert_stat(&Some(its[0].acc_retrained), 98.75, Some((1.25f64 / 3.0).sqrt()), 4);
    assert_stat(&Some(its[1].acc_pruned), 83.0, Some((20.0f64 / 3.0).sqrt()), 4);
    assert_stat(&Some(its[2].acc_pruned), 72.0, Some(2.0), 3);
    assert_stat(&Some(its[2].acc_retrained), 92.0, Some(2.0), 3);
    assert_eq!(its[2].layers.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), vec!["fc1", "fc2"]);
    assert_stat(&Some(its[2].layers[0].units_alive), 210.0, Some(10.0), 3);
    assert_stat(&Some(its[2].layers[1].units_alive), 80.0, Some(0.0), 3);
    assert_eq!(its[2].layers[0].units_total, 300);

    let mag = group(&r, MAGNITUDE);
    assert_eq!((mag.n, mag.iterations), (3, Some(1)));
    assert_stat(&mag.dense_acc, 97.0, Some(0.0), 3);
    assert_stat(&mag.final_acc, 96.0, Some(1.0), 3);
    assert_stat(&mag.delta, -1.0, Some(1.0), 3);

    let single = group(&r, SINGLE);
    assert_stat(&single.final_acc, 98.75, None, 1);
    assert_stat(&single.delta, -0.25, None, 1);

    assert_eq!(r.incomplete.len(), 1);
    assert_eq!(r.incomplete[0].id, format!("{NNRELIEF},seed=4"));
    assert_eq!((r.incomplete[0].iterations_done, r.incomplete[0].iterations), (Some(1), Some(2)));
    assert_eq!(r.missing.len(), 1);
    assert_eq!(r.missing[0].id, format!("{MAGNITUDE},seed=4"));
    assert!(r.missing[0].reason.contains("not started"), "{}", r.missing[0].reason);

    // The Markdown summary: a GitHub table (header, rule, one row per group).
    let md = &r.summary_markdown;
    let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(table.len(), 2 + 3, "{md}");
    let rule: Vec<&str> = table[1].trim_matches('|').split('|').collect();
    assert_eq!(rule.len(), table[0].trim_matches('|').split('|').count());
    assert!(rule.iter().all(|c| c.trim_end_matches(':').chars().all(|ch| ch == '-')), "{}", table[1]);
    let line = md.lines().find(|l| l.starts_with(&format!("| {NNRELIEF} "))).expect("NNrelief row");
    for cell in [
        "lenet300-100",
        "nnrelief",
        "98.50 ± 0.50",
        "92.00 ± 2.00",
        "-6.50 ± 1.50",
        "12.00 ± 2.00",
        "8.00 ± 2.00",
        "60.00 ± 10.00",
    ] {
        assert!(line.contains(cell), "{cell} missing in {line}");
    }
    let line = md.lines().find(|l| l.starts_with(&format!("| {SINGLE} "))).expect("LeNet-5 row");
    assert!(line.contains("98.75 ± –") && line.contains("-0.25 ± –"), "{line}");
    assert!(md.contains(&format!("`{NNRELIEF},seed=4`: iteration 1 of 2 done")), "{md}");
    assert!(md.contains(&format!("`{MAGNITUDE},seed=4`")), "{md}");
    let out = tmp.path().join("report");
    assert_eq!(std::fs::read_to_string(out.join("summary.md")).unwrap(), *md);
    for f in ["summary.md", "summary.csv", "summary.json", "iterations.csv", "accuracy.svg", "report.html"] {
        assert!(r.files.contains(&out.join(f)), "{f} not reported as written");
        assert!(out.join(f).is_file(), "{f} not written");
    }
}

/// A minimal RFC 4180 reader (quoted cells with commas and doubled quotes).
fn parse_csv(text: &str) -> Vec<BTreeMap<String, String>> {
    fn cells(line: &str) -> Vec<String> {
        let (mut out, mut cur, mut quoted, mut chars) =
            (Vec::new(), String::new(), false, line.chars().peekable());
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => out.push(std::mem::take(&mut cur)),
                (c, _) => cur.push(c),
            }
        }
        out.push(cur);
        out
    }
    let mut lines = text.lines();
    let header = cells(lines.next().expect("a header"));
    lines
        .map(|l| {
            let c = cells(l);
            assert_eq!(c.len(), header.len(), "row {l} has {} cells, header {}", c.len(), header.len());
            header.iter().cloned().zip(c).collect()
        })
        .collect()
}

fn num(row: &BTreeMap<String, String>, key: &str) -> f64 {
    row.get(key)
        .unwrap_or_else(|| panic!("no column {key}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key}: {}", row[key]))
}

#[test]
fn csv_and_json_files_parse_back() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic(tmp.path());
    let out = tmp.path().join("elsewhere");
    report::report(tmp.path(), Some(&out), false).unwrap();
    assert!(!out.join("accuracy.svg").exists(), "no plots were asked for");

    let summary = parse_csv(&std::fs::read_to_string(out.join("summary.csv")).unwrap());
    assert_eq!(summary.len(), 3);
    let nn = &summary[0];
    assert_eq!(nn["group"], NNRELIEF);
    assert_eq!((nn["model"].as_str(), nn["prune.method"].as_str()), ("lenet300-100", "nnrelief"));
    assert_eq!((nn["n"].as_str(), nn["iterations"].as_str()), ("3", "2"));
    for (key, want) in [
        ("dense_acc_mean", 98.5),
        ("dense_acc_std", 0.5),
        ("final_acc_mean", 92.0),
        ("final_acc_std", 2.0),
        ("delta_mean", -6.5),
        ("delta_std", 1.5),
        ("remaining_percent_mean", 12.0),
        ("compression_mean", 8.0),
        ("flops_pruned_percent_std", 10.0),
    ] {
        assert!(close(num(nn, key), want), "{key}: {} != {want}", nn[key]);
    }
    assert_eq!(summary[2]["final_acc_std"], "", "n = 1: no std");
    assert!(close(num(&summary[2], "final_acc_mean"), 98.75));

    let iters = parse_csv(&std::fs::read_to_string(out.join("iterations.csv")).unwrap());
    // NNrelief 0..=2, magnitude 0..=1, LeNet-5 0..=1.
    assert_eq!(iters.len(), 7);
    let it2 = iters.iter().find(|r| r["group"] == NNRELIEF && r["iteration"] == "2").unwrap();
    assert_eq!(it2["n"], "3");
    assert!(close(num(it2, "acc_retrained_mean"), 92.0) && close(num(it2, "acc_retrained_std"), 2.0));
    assert!(close(num(it2, "acc_pruned_mean"), 72.0));
    assert!(close(num(it2, "units.fc1_mean"), 210.0) && close(num(it2, "units.fc1_std"), 10.0));
    let it1 = iters.iter().find(|r| r["group"] == NNRELIEF && r["iteration"] == "1").unwrap();
    assert_eq!(it1["n"], "4");
    assert!(close(num(it1, "acc_retrained_mean"), 97.75));

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["study"], STUDY);
    assert_eq!(json["points_total"], 9);
    let g = &json["groups"][0];
    assert_eq!(g["group"], NNRELIEF);
    assert_eq!(g["final_acc"]["mean"].as_f64(), Some(92.0));
    assert_eq!(g["final_acc"]["std"].as_f64(), Some(2.0));
    assert_eq!(g["final_acc"]["n"], 3);
    assert_eq!(g["delta"]["mean"].as_f64(), Some(-6.5));
    assert_eq!(g["per_iteration"].as_array().unwrap().len(), 3);
    assert_eq!(g["per_iteration"][2]["layers"][0]["units_alive"]["mean"].as_f64(), Some(210.0));
    assert!(json["groups"][2]["final_acc"]["std"].is_null());
    assert_eq!(json["incomplete"][0]["id"], format!("{NNRELIEF},seed=4"));
    assert_eq!(json["missing"][0]["id"], format!("{MAGNITUDE},seed=4"));

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("--no-plots") && !html.contains("<svg"));
}

#[test]
fn the_html_page_is_self_contained_and_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic(tmp.path());
    let r = report::report(tmp.path(), None, true).unwrap();
    let html = std::fs::read_to_string(r.out.join("report.html")).unwrap();
    assert!(html.contains("demo &lt;sweep&gt; &amp; co"));
    assert!(!html.contains("<sweep>"));
    for external in ["<script", "<link", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "external resource: {external}");
    }
    assert!(html.contains("<table id=\"summary\">"));
    assert!(html.contains("92.00 ± 2.00"));
    let svg = std::fs::read_to_string(r.out.join("accuracy.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polygon"), "bands drawn as polygons");
    assert!(svg.contains(&format!("{NNRELIEF} (n = 4)")), "legend names the groups");
    assert!(html.contains("<svg"), "the chart is inlined");
    // One iteration table per group, and the missing and incomplete points.
    assert_eq!(html.matches("<h3 id=\"group-").count(), 3);
    assert!(html.contains(&format!("<code>{NNRELIEF},seed=4</code>")));
    assert!(html.contains(&format!("<code>{MAGNITUDE},seed=4</code>")));
}

#[test]
fn a_study_without_metrics_lists_every_point_as_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |seed, rows| Point { model: "lenet300-100", method: Method::Nnrelief, seed, iterations: 3, rows };
    write_study(tmp.path(), "fresh", &[p(1, None), p(2, Some(Vec::new()))]);
    let r = report::report(tmp.path(), None, true).unwrap();
    assert_eq!(r.missing.len(), 2);
    assert!(r.missing[1].reason.contains("no metrics.json"), "{}", r.missing[1].reason);
    assert_eq!(r.missing[1].iterations, Some(3));
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].n, 0);
    assert!(r.groups[0].final_acc.is_none());
    assert!(!r.out.join("accuracy.svg").exists());
    assert!(r.summary_markdown.contains("2 points: 0 complete, 0 incomplete, 2 missing"));
    assert!(r.out.join("report.html").is_file());
}

#[test]
fn bad_files_are_errors_that_name_them() {
    let tmp = tempfile::tempdir().unwrap();
    let err = report::report(tmp.path(), None, false).unwrap_err();
    assert!(format!("{err:#}").contains("points.json"), "{err:#}");

    std::fs::write(tmp.path().join("points.json"), "{ not json").unwrap();
    let err = report::report(tmp.path(), None, false).unwrap_err();
    assert!(format!("{err:#}").contains("points.json"), "{err:#}");

    synthetic(tmp.path());
    let bad = tmp.path().join("runs").join(format!("{MAGNITUDE},seed=2")).join("metrics.json");
    std::fs::write(&bad, "[{\"iteration\": ").unwrap();
    let err = format!("{:#}", report::report(tmp.path(), None, false).unwrap_err());
    assert!(err.contains(&bad.display().to_string()), "{err}");
}

#[test]
fn relief_report_delegates_study_directories() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic(tmp.path());
    let out = tmp.path().join("out");
    let args = relief_cli::cmd_report::ReportArgs {
        runs: vec![tmp.path().to_path_buf()],
        out: Some(out.clone()),
        no_plots: true,
    };
    relief_cli::cmd_report::run(args).unwrap();
    assert!(out.join("summary.md").is_file() && out.join("report.html").is_file());
    assert!(!out.join("summary.txt").exists(), "the run report did not run");

    let run = tmp.path().join("runs").join(format!("{MAGNITUDE},seed=1"));
    let args = relief_cli::cmd_report::ReportArgs {
        runs: vec![tmp.path().to_path_buf(), run],
        out: None,
        no_plots: true,
    };
    let err = relief_cli::cmd_report::run(args).unwrap_err();
    assert!(err.to_string().contains("study directory"), "{err}");
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|bin| Command::new("which").arg(bin).output().map(|o| o.status.success()).unwrap_or(false))
}

/// Runs headless Chromium on `url` with `extra` arguments (a fresh profile in `dir`); tries
/// `--headless=new` when plain `--headless` fails.
fn run_chromium(bin: &str, dir: &Path, extra: &[String], url: &str) -> std::process::Output {
    let mut last = None;
    for headless in ["--headless", "--headless=new"] {
        let out = Command::new(bin)
            .args([headless, "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium runs");
        if out.status.success() {
            return out;
        }
        last = Some(out);
    }
    let out = last.unwrap();
    panic!("{bin} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

#[test]
fn headless_chromium_renders_the_page() {
    let Some(bin) = chromium() else {
        if std::env::var("RELIEF_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!("RELIEF_REQUIRE_CHROMIUM=1 but neither chromium nor chromium-browser is on PATH");
        }
        println!("skipped: no Chromium");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    synthetic(tmp.path());
    let r = report::report(tmp.path(), None, true).unwrap();
    let page = r.out.join("report.html").canonicalize().unwrap();
    let url = format!("file://{}", page.display());

    let dom = run_chromium(bin, tmp.path(), &["--dump-dom".into()], &url);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let start = dom.find("<table id=\"summary\">").expect("the summary table is in the rendered DOM");
    let table = &dom[start..start + dom[start..].find("</table>").unwrap()];
    let row = table
        .split("<tr>")
        .find(|r| r.contains(&format!("<td>{NNRELIEF}</td>")))
        .expect("the NNrelief row is in the summary table");
    for cell in
        ["98.50 ± 0.50", "92.00 ± 2.00", "-6.50 ± 1.50", "12.00 ± 2.00", "8.00 ± 2.00", "60.00 ± 10.00"]
    {
        assert!(row.contains(&format!(">{cell}</td>")), "{cell} not in {row}");
    }
    assert!(dom.contains("<svg"), "the chart is in the DOM");
    assert!(dom.contains("demo &lt;sweep&gt; &amp; co"));

    let png = tmp.path().join("report.png");
    run_chromium(
        bin,
        tmp.path(),
        &[format!("--screenshot={}", png.display()), "--window-size=1280,1600".into()],
        &url,
    );
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    assert!(bytes.len() > 10_000, "screenshot of {} bytes is trivially small", bytes.len());
}
