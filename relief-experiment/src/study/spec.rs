//! The study file and its expansion into points.
//!
//! ```toml
//! name = "sample-lenets"
//! base = "../demo.toml"            # an ordinary relief config (relative to this file), or [base]
//! match = "nnrelief"               # optional: magnitude points keep the NNrelief budget
//!
//! [grid]                           # dotted config keys -> lists; the Cartesian product
//! model = ["lenet300-100", "lenet5"]
//! "prune.method" = ["nnrelief", "magnitude"]
//! seed = [0, 1, 2]
//!
//! [[point]]                        # explicit extra points (single values)
//! model = "lenet5"
//! "prune.alpha_fc" = 0.99
//!
//! [slurm]                          # defaults of `relief study submit --slurm`
//! partition = "gpu"
//! ```
//!
//! Every point is an ordinary [`Config`]: the base with the point's values set at their
//! dotted keys, validated through the same [`Plan`] validation as `relief run` before any work
//! starts. Relative paths (`data.dir`, `pretrained`, `init`, a spec file's `model`) are made
//! absolute against the directory the study was created from (`workdir`, kept in
//! `study.resolved.toml`), so a point
//! runs the same from any directory, locally or on a Slurm node.
//!
//! Point ids are built from the varied values in grid order with `seed` last
//! (`model=lenet5,method=nnrelief,seed=1`): the last component of each dotted key unless two
//! varied keys share it (`train.lr`, `retrain.lr`), characters other than `[A-Za-z0-9._+=,-]`
//! replaced by `_`, and ids longer than [`MAX_ID`] cut with a short hash of the whole id.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::points::{PointEntry, PointsFile};
use super::{cut_error, cut_long_lines, cut_quote, MAX_QUOTE};
use crate::config::{insert, Config, Method, Override};
use crate::plan::{Plan, Stages};

/// Ids longer than this are cut and given a hash suffix.
pub const MAX_ID: usize = 96;

/// The longest study name (it names the default directory `studies/<name>`).
pub const MAX_NAME: usize = 128;

/// At most this many problems are listed in one error (the rest are counted).
pub const MAX_LISTED: usize = 30;

/// The base config of a study: a file, or an inline table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BaseSpec {
    /// Path of an ordinary relief config, relative to the study file.
    Path(PathBuf),
    /// An inline `[base]` table (an ordinary relief config).
    Inline(toml::Table),
}

/// `[slurm]`: defaults of `relief study submit --slurm` (flags win).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmDefaults {
    /// `--partition`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `--account`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `--gpus-per-task`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus_per_task: Option<u32>,
    /// `--cpus-per-task`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus_per_task: Option<u32>,
    /// `--mem`, e.g. `16G`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    /// `--time`, e.g. `12:00:00`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// At most this many array tasks at once (`--array=...%K`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Extra `#SBATCH` lines, verbatim (e.g. `"--qos=normal"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
}

/// A study file as written (`deny_unknown_fields`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyFile {
    /// The study's name (default study directory `studies/<name>`).
    pub name: String,
    /// The config every point starts from.
    pub base: BaseSpec,
    /// `"nnrelief"`: every magnitude point keeps, per iteration and layer, as many weights as
    /// the NNrelief point with the same other values (`prune.magnitude_match`), and runs after it.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_method: Option<String>,
    /// Dotted config keys -> lists of values.
    #[serde(default)]
    pub grid: toml::Table,
    /// Explicit extra points.
    #[serde(default, rename = "point", skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<toml::Table>,
    /// Slurm defaults.
    #[serde(default, skip_serializing_if = "is_default")]
    pub slurm: SlurmDefaults,
    /// Directory relative paths resolve against (set when the study is resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
}

fn is_default(s: &SlurmDefaults) -> bool {
    s == &SlurmDefaults::default()
}

/// One expanded point.
#[derive(Debug, Clone)]
pub struct Point {
    /// Its index entry (`points.json`).
    pub entry: PointEntry,
    /// The point's resolved config.
    pub config: Config,
}

/// A resolved study: the study file with its base inlined, and its points in run order.
#[derive(Debug, Clone)]
pub struct Study {
    /// The resolved study file (`study.resolved.toml`).
    pub file: StudyFile,
    /// The points, in run order (index = position).
    pub points: Vec<Point>,
}

/// Flattens nested tables into dotted keys; `leaf_arrays`: arrays are leaves (grid values).
fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            other => out.push((key, other.clone())),
        }
    }
}

/// A value as it appears in an id: strings bare, everything else as TOML.
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._+=,-".contains(c) { c } else { '_' }).collect()
}

fn short_hash(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Builds an id from `(label, value)` pairs, cutting long ones.
fn make_id(parts: &[(String, String)]) -> String {
    // Keys and values lose `,` and `=` too, so the id splits back into its parts.
    let part = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "._+-".contains(c) { c } else { '_' }).collect()
    };
    let full = parts.iter().map(|(k, v)| format!("{}={}", part(k), part(v))).collect::<Vec<_>>().join(",");
    if full.is_empty() {
        return "base".into();
    }
    if full.len() <= MAX_ID {
        return full;
    }
    let hash = short_hash(&full);
    let mut cut = full[..MAX_ID - 9].to_string();
    while cut.ends_with([',', '=']) {
        cut.pop();
    }
    format!("{cut}-{hash}")
}

/// The short label of each key: its last component, unless another key shares it.
fn labels(keys: &[String]) -> BTreeMap<String, String> {
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for k in keys {
        *count.entry(last(k)).or_default() += 1;
    }
    keys.iter().map(|k| (k.clone(), if count[&last(k)] > 1 { k.clone() } else { last(k) })).collect()
}

/// Keys that do not distinguish a magnitude point from its NNrelief partner.
fn ignored_for_match(key: &str) -> bool {
    key == "prune.method" || key == "name" || key.starts_with("prune.magnitude_")
}

/// `dir` made absolute and free of symbolic links (the part that exists is canonicalised), so
/// the study directory has one spelling whichever way it was named.
pub fn canonical_dir(workdir: &Path, dir: &Path) -> PathBuf {
    let abs = absolute(workdir, dir);
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(c, |acc: PathBuf, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return abs,
        }
    }
}

fn absolute(workdir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        workdir.join(p)
    }
}

impl StudyFile {
    /// Parses a study file; errors name the file and the field.
    /// A parse error quotes the offending line cut to a readable length.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text)
            .map_err(|e| anyhow!(cut_long_lines(&format!("{origin}: {}", e.to_string().trim_end()))))
    }

    /// The resolved form: base inlined (read relative to `file_dir`), `overrides` applied to
    /// it (every point), `workdir` set.
    fn resolve(
        mut self,
        file_dir: &Path,
        workdir: &Path,
        overrides: &[Override],
        origin: &str,
    ) -> Result<Self> {
        if let BaseSpec::Path(p) = &self.base {
            let path = absolute(file_dir, p);
            let shown = cut_quote(&p.display().to_string(), MAX_QUOTE);
            if path.is_dir() {
                bail!(
                    "{origin}: base = {shown:?}: {} is a directory; expected a relief config file (TOML)",
                    path.display()
                );
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{origin}: base = {shown:?}: cannot read {}", path.display()))?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| {
                anyhow!(cut_long_lines(&format!(
                    "{origin}: base = {shown:?}: {}: {}",
                    path.display(),
                    e.to_string().trim_end()
                )))
            })?;
            self.base = BaseSpec::Inline(table);
        }
        if let BaseSpec::Inline(table) = &mut self.base {
            for o in overrides {
                insert(table, &o.key, o.value.clone())?;
            }
        }
        if self.workdir.is_none() {
            self.workdir = Some(workdir.to_path_buf());
        }
        Ok(self)
    }

    /// The resolved TOML (`study.resolved.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a study file always serialises")
    }
}

/// The values of one point before it becomes a config.
struct Raw {
    values: Vec<(String, toml::Value)>,
    explicit: Option<usize>,
}

impl Study {
    /// Reads, resolves, expands and validates a study file, with `overrides` (`--set`) applied
    /// to its base. Relative paths resolve against the current directory; `out` is the study
    /// directory (for matched run directories).
    /// Errors quote user input cut to a readable length ([`cut_long_lines`]).
    pub fn load(path: &Path, out: &Path, overrides: &[Override]) -> Result<Self> {
        Self::load_uncut(path, out, overrides).map_err(cut_error)
    }

    fn load_uncut(path: &Path, out: &Path, overrides: &[Override]) -> Result<Self> {
        let origin = path.display().to_string();
        let text = read_study_file(path)?;
        let file = StudyFile::parse(&text, &origin)?;
        let cwd = std::env::current_dir().context("current directory")?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => absolute(&cwd, p),
            _ => cwd.clone(),
        };
        let file = file.resolve(&dir, &cwd, overrides, &origin)?;
        Self::expand(file, out, &origin)
    }

    /// Re-expands a study directory's `study.resolved.toml` (what `run-point` runs).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_uncut(dir).map_err(cut_error)
    }

    fn open_uncut(dir: &Path) -> Result<Self> {
        let path = dir.join(super::points::STUDY_FILE);
        if !dir.join(super::points::POINTS_FILE).is_file() {
            bail!("{}: not a relief study directory (no {})", dir.display(), super::points::POINTS_FILE);
        }
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot read {} (the study directory was changed by hand; `relief study run \
                 STUDY.toml --out {}` with the study file writes it again)",
                dir.display(),
                path.display(),
                dir.display()
            )
        })?;
        let file = StudyFile::parse(&text, &path.display().to_string())?;
        if !matches!(file.base, BaseSpec::Inline(_)) || file.workdir.is_none() {
            bail!("{}: not a resolved study file (base must be inline and workdir set)", path.display());
        }
        Self::expand(file, dir, &path.display().to_string())
    }

    /// The index (`points.json`).
    pub fn points_file(&self) -> PointsFile {
        PointsFile {
            study: self.file.name.clone(),
            points: self.points.iter().map(|p| p.entry.clone()).collect(),
        }
    }

    /// Expands a resolved study file into validated points.
    pub fn expand(file: StudyFile, out: &Path, origin: &str) -> Result<Self> {
        let workdir = file.workdir.clone().expect("resolved");
        let out_abs = canonical_dir(&workdir, out);
        let BaseSpec::Inline(base) = &file.base else { unreachable!("resolved") };
        let mut problems = Vec::new();
        let name = cut_quote(&file.name, MAX_QUOTE);
        if file.name.trim().is_empty() || clean(&file.name) != file.name {
            problems.push(format!("name = {name:?}: expected letters, digits and ._+=,- only"));
        } else if file.name == "." || file.name == ".." {
            problems.push(format!(
                "name = {name:?}: not a directory name (the study directory is studies/<name>)"
            ));
        } else if file.name.chars().count() > MAX_NAME {
            problems.push(format!("name = {name:?}: longer than {MAX_NAME} characters"));
        }
        for (field, value, why) in super::slurm::check_resources(&file.slurm) {
            problems.push(format!("[slurm] {field} = {value}: {why}"));
        }
        // The base alone must be a config (names its own mistakes).
        if let Err(e) = toml::Value::Table(base.clone()).try_into::<Config>() {
            problems.push(format!("base: {}", e.message()));
        }
        // Grid: dotted keys -> non-empty lists, each key and value checked on its own.
        let mut grid: Vec<(String, Vec<toml::Value>)> = Vec::new();
        let mut flat = Vec::new();
        flatten("", &file.grid, &mut flat);
        for key in repeated_keys(&flat) {
            problems
                .push(format!("[grid] {key}: given twice (as a dotted key and in a nested table); keep one"));
        }
        for (key, value) in flat {
            match value {
                toml::Value::Array(list) if !list.is_empty() => {
                    for v in &list {
                        if let Err(e) = check_key(&key, v) {
                            problems.push(format!("[grid] {key} = {}: {e}", v));
                        }
                    }
                    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                    for v in &list {
                        *seen.entry(v.to_string()).or_default() += 1;
                    }
                    for v in list.iter().map(|v| v.to_string()) {
                        match seen.remove(&v) {
                            Some(n) if n > 1 => problems.push(format!(
                                "[grid] {key}: the value {v} is listed {n} times; each value makes its \
                                 points once, so remove the repeats"
                            )),
                            _ => {}
                        }
                    }
                    grid.push((key, list));
                }
                toml::Value::Array(_) => problems.push(format!("[grid] {key}: empty list")),
                other => problems.push(format!(
                    "[grid] {key} = {other}: expected a list of values, e.g. {key} = [{other}]"
                )),
            }
        }
        let mut explicit = Vec::new();
        for (i, t) in file.points.iter().enumerate() {
            let mut flat = Vec::new();
            flatten("", t, &mut flat);
            if flat.is_empty() {
                problems.push(format!("[[point]] #{}: empty", i + 1));
            }
            for key in repeated_keys(&flat) {
                problems.push(format!(
                    "[[point]] #{}: {key} given twice (as a dotted key and in a nested table); keep one",
                    i + 1
                ));
            }
            for (key, v) in &flat {
                if let Err(e) = check_key(key, v) {
                    problems.push(format!("[[point]] #{}: {key} = {v}: {e}", i + 1));
                }
            }
            explicit.push(flat);
        }
        if let Some(m) = &file.match_method {
            if m != "nnrelief" {
                problems.push(format!("match = {m:?}: expected \"nnrelief\""));
            }
        }
        if !problems.is_empty() {
            bail!("{origin}: {}", listing(&problems));
        }
        // The Cartesian product, first key slowest.
        let mut raws: Vec<Raw> = vec![Raw { values: Vec::new(), explicit: None }];
        for (key, list) in &grid {
            raws = raws
                .into_iter()
                .flat_map(|r| {
                    list.iter().map(move |v| {
                        let mut values = r.values.clone();
                        values.push((key.clone(), v.clone()));
                        Raw { values, explicit: None }
                    })
                })
                .collect();
        }
        if grid.is_empty() && !explicit.is_empty() {
            raws.clear();
        }
        raws.extend(explicit.into_iter().enumerate().map(|(i, values)| Raw { values, explicit: Some(i) }));
        // Keys that vary name the points: grid keys with several values, every explicit key.
        let mut varied: Vec<String> =
            grid.iter().filter(|(_, l)| l.len() > 1).map(|(k, _)| k.clone()).collect();
        for r in raws.iter().filter(|r| r.explicit.is_some()) {
            for (k, _) in &r.values {
                if !varied.contains(k) {
                    varied.push(k.clone());
                }
            }
        }
        if let Some(pos) = varied.iter().position(|k| k == "seed") {
            let s = varied.remove(pos);
            varied.push(s);
        }
        let label = labels(&varied);
        let mut points: Vec<Point> = Vec::new();
        // What made each point (`point ID` or `[[point]] #N (ID)`), for duplicates.
        let mut made_by: Vec<String> = Vec::new();
        let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_config: BTreeMap<String, usize> = BTreeMap::new();
        for raw in raws {
            let lookup: BTreeMap<&str, &toml::Value> =
                raw.values.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let parts: Vec<(String, String)> = varied
                .iter()
                .filter_map(|k| lookup.get(k.as_str()).map(|v| (label[k].clone(), value_text(v))))
                .collect();
            let id = make_id(&parts);
            let group_parts: Vec<(String, String)> =
                parts.iter().filter(|(k, _)| k != "seed").cloned().collect();
            let group = if group_parts.is_empty() { file.name.clone() } else { make_id(&group_parts) };
            let what = match raw.explicit {
                Some(i) => format!("[[point]] #{} ({id})", i + 1),
                None => format!("point {id}"),
            };
            let mut tree = base.clone();
            if let Some(e) = raw.values.iter().find_map(|(k, v)| insert(&mut tree, k, v.clone()).err()) {
                problems.push(format!("{what}: {e}"));
                continue;
            }
            let mut config: Config = match toml::Value::Table(tree).try_into() {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("{what}: {}", e.message()));
                    continue;
                }
            };
            if !lookup.contains_key("name") {
                config.name = Some(id.clone());
            }
            absolutize(&mut config, &workdir);
            let values: BTreeMap<String, String> =
                raw.values.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            let entry = PointEntry {
                index: 0,
                id: id.clone(),
                group,
                hash: String::new(),
                run_dir: PathBuf::from("runs").join(&id),
                values,
                seed: config.seed,
                depends_on: None,
            };
            if let Some(&j) = by_id.get(&id) {
                problems.push(if points[j].config == config {
                    format!("{what} repeats {}: the same values twice; remove one", made_by[j])
                } else {
                    format!(
                        "{what} has the id of {} but another config (ids keep only letters, digits and \
                         ._+-); give the points values that differ in the id, or a `name`",
                        made_by[j]
                    )
                });
                continue;
            }
            // The same config under another id (`1` and `1.0`): one experiment twice.
            let mut anonymous = config.clone();
            if !lookup.contains_key("name") {
                anonymous.name = None;
            }
            let same = anonymous.hash();
            if let Some(&j) = by_config.get(&same) {
                problems.push(format!(
                    "{what} has the same config as {} (values written differently); remove one",
                    made_by[j]
                ));
                continue;
            }
            by_config.insert(same, points.len());
            by_id.insert(id, points.len());
            made_by.push(what);
            points.push(Point { entry, config });
        }
        if !problems.is_empty() {
            bail!("{origin}: {}", listing(&problems));
        }
        if file.match_method.is_some() {
            match_magnitude(&mut points, &out_abs, &mut problems);
        }
        // Run order: points others depend on first (stable otherwise).
        let deps: BTreeSet<String> =
            points.iter().filter_map(|p| p.entry.depends_on.map(|j| points[j].entry.id.clone())).collect();
        let mut order: Vec<usize> = (0..points.len()).collect();
        order.sort_by_key(|&i| {
            (points[i].entry.depends_on.is_some() && !deps.contains(&points[i].entry.id)) as u8
        });
        let old_to_new: BTreeMap<usize, usize> =
            order.iter().enumerate().map(|(new, &old)| (old, new)).collect();
        let mut ordered: Vec<Point> = order.iter().map(|&i| points[i].clone()).collect();
        for (i, p) in ordered.iter_mut().enumerate() {
            p.entry.index = i;
            p.entry.depends_on = p.entry.depends_on.map(|j| old_to_new[&j]);
        }
        for p in &mut ordered {
            p.entry.hash = p.config.hash();
            let origin = format!("{origin}: point {}", p.entry.id);
            if let Err(e) = validate(&p.config, &origin) {
                problems.push(format!("{e:#}"));
            }
        }
        if !problems.is_empty() {
            let n = problems.len();
            let mut shown: Vec<String> = problems.iter().take(MAX_LISTED).cloned().collect();
            if n > MAX_LISTED {
                shown.push(format!("... and {} more", n - MAX_LISTED));
            }
            bail!(
                "{n} of {} point{} invalid; nothing was run:\n{}",
                ordered.len(),
                if ordered.len() == 1 { " is" } else { "s are" },
                shown.join("\n")
            );
        }
        if ordered.is_empty() {
            bail!("{origin}: the study has no points (add a [grid] or [[point]] tables)");
        }
        Ok(Self { file, points: ordered })
    }
}

/// The one validation of `relief run`, for a point (a magnitude point's matched run may not
/// exist yet: that check waits until the point runs).
fn validate(config: &Config, origin: &str) -> Result<()> {
    Plan::new_deferring_match(config.clone(), Stages::All, origin).map(|_| ())
}

/// Checks one dotted key and value against the config schema on their own.
fn check_key(key: &str, value: &toml::Value) -> Result<()> {
    let mut t = toml::Table::new();
    insert(&mut t, key, value.clone())?;
    toml::Value::Table(t).try_into::<Config>().map(|_| ()).map_err(|e| anyhow!("{}", e.message()))
}

fn listing(problems: &[String]) -> String {
    let n = problems.len();
    let mut shown: Vec<&str> = problems.iter().take(MAX_LISTED).map(String::as_str).collect();
    let more = format!("... and {} more", n.saturating_sub(MAX_LISTED));
    if n > MAX_LISTED {
        shown.push(&more);
    }
    format!("{n} problem{} in the study:\n  - {}", if n == 1 { "" } else { "s" }, shown.join("\n  - "))
}

/// Dotted keys that occur more than once (`"prune.alpha_fc"` and `[grid.prune] alpha_fc`).
fn repeated_keys(flat: &[(String, toml::Value)]) -> Vec<String> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, _) in flat {
        *count.entry(k.as_str()).or_default() += 1;
    }
    count.into_iter().filter(|(_, n)| *n > 1).map(|(k, _)| k.to_string()).collect()
}

/// Reads a study file, saying what a directory is instead of the OS error.
pub fn read_study_file(path: &Path) -> Result<String> {
    let origin = path.display();
    if path.is_dir() {
        if path.join(super::points::POINTS_FILE).is_file() {
            bail!(
                "{origin}: is a study directory, not a study file (`relief study status/report {origin}` \
                 show it; `relief study run` takes the study's TOML file)"
            );
        }
        bail!("{origin}: is a directory; expected a study file (TOML)");
    }
    std::fs::read_to_string(path).with_context(|| format!("{origin}: cannot read the study file"))
}

/// Makes the config's relative paths absolute against `workdir`.
fn absolutize(config: &mut Config, workdir: &Path) {
    let dir = config.data_dir();
    config.data.dir = Some(absolute(workdir, &dir));
    for p in
        [&mut config.pretrained, &mut config.init, &mut config.prune.magnitude_match].into_iter().flatten()
    {
        *p = absolute(workdir, p);
    }
    if relief_models::names_spec_file(&config.model) {
        config.model = absolute(workdir, Path::new(&config.model)).display().to_string();
    }
}

/// Pairs every magnitude point with the NNrelief point of the same other values.
fn match_magnitude(points: &mut [Point], out: &Path, problems: &mut Vec<String>) {
    let key = |p: &Point| -> BTreeMap<String, String> {
        let mut k: BTreeMap<String, String> = p
            .entry
            .values
            .iter()
            .filter(|(k, _)| !ignored_for_match(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // The seed and model always count, even when not varied.
        k.insert("seed".into(), p.config.seed.to_string());
        k.insert("model".into(), p.config.model.clone());
        k
    };
    for i in 0..points.len() {
        if points[i].config.prune.method != Method::Magnitude {
            continue;
        }
        let want = key(&points[i]);
        let partners: Vec<usize> = (0..points.len())
            .filter(|&j| points[j].config.prune.method == Method::Nnrelief && key(&points[j]) == want)
            .collect();
        match partners.as_slice() {
            [j] => {
                let dir = out.join(&points[*j].entry.run_dir);
                points[i].config.prune.magnitude_match = Some(dir);
                points[i].entry.depends_on = Some(*j);
            }
            [] => problems.push(format!(
                "point {}: match = \"nnrelief\" but no NNrelief point has the same other values",
                points[i].entry.id
            )),
            _ => problems.push(format!(
                "point {}: match = \"nnrelief\" but several NNrelief points have the same other values: {}",
                points[i].entry.id,
                partners.iter().map(|&j| points[j].entry.id.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_readable_and_cut_when_long() {
        let parts = vec![("model".to_string(), "lenet5".to_string()), ("seed".to_string(), "1".to_string())];
        assert_eq!(make_id(&parts), "model=lenet5,seed=1");
        assert_eq!(make_id(&[("milestones".into(), "[20, 40]".into())]), "milestones=_20__40_");
        let long: Vec<(String, String)> = (0..20).map(|i| (format!("key{i}"), "value".to_string())).collect();
        let id = make_id(&long);
        assert!(id.len() <= MAX_ID, "{id}");
        let hash = id.rsplit('-').next().unwrap();
        assert!(hash.len() == 8 && hash.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert_ne!(make_id(&long), make_id(&long[..19]));
        assert_eq!(make_id(&long), make_id(&long), "stable");
    }

    #[test]
    fn labels_use_the_last_component_unless_shared() {
        let l = labels(&["prune.alpha_fc".into(), "train.lr".into(), "retrain.lr".into(), "seed".into()]);
        assert_eq!(l["prune.alpha_fc"], "alpha_fc");
        assert_eq!(l["train.lr"], "train.lr");
        assert_eq!(l["retrain.lr"], "retrain.lr");
        assert_eq!(l["seed"], "seed");
    }
}
