//! `plastic analyze`: figures and tables of a sweep like the paper's: validation curves
//! (mean and spread over seeds), test loss against a swept quantity with 95% intervals,
//! ablation bars, the modulated plasticity rate η(t) along the episode, and a Markdown and
//! CSV table of test mean ± 1.96 × standard error per configuration. For an evaluation
//! sweep (`*_test`): η(t) before clipping, mean ± standard deviation over the test episodes
//! of every seed, per rule and cell, and the test loss per configuration (and against the
//! evaluated delay where the sweep varies it). Either works on whatever runs have finished.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plastic::run;
use plastic::run::sweep::{self, EvalResult, EvalSweep};

use crate::plot::{self, Bar, BarGroup, LineChart, Series};

/// Arguments of `plastic analyze`.
#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// The sweep to analyse.
    name: String,
    /// Folder of the sweeps (as for `plastic sweep`).
    #[arg(long, default_value = "runs/sweeps")]
    out: PathBuf,
    /// Where to write figures and tables (default: OUT/NAME/analysis).
    #[arg(long)]
    figures: Option<PathBuf>,
    /// Test batches per run for the η(t) analysis.
    #[arg(long, default_value_t = 10)]
    eta_batches: usize,
    /// A note for the tables' heading (e.g. "reduced step counts: 2000 instead of 20000").
    #[arg(long)]
    note: Option<String>,
}

/// The finished runs of one configuration (all seeds).
struct Group {
    factors: Vec<(String, String)>,
    dirs: Vec<PathBuf>,
    test: Vec<f64>,
    curves: Vec<Vec<(f64, f64)>>,
}

fn value_string(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Mean and 1.96 × standard error (sample standard deviation; NaN for one value).
pub fn mean_ci(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, f64::NAN);
    }
    let sd = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt();
    (m, 1.96 * sd / n.sqrt())
}

const NUMERIC: [&str; 6] = [
    "delay",
    "seq_length",
    "train_length",
    "p_lr",
    "extra_dim",
    "lr",
];
const ABLATIONS: [&str; 6] = [
    "modulation",
    "extra_dim",
    "inner_lr_mode",
    "p_lr",
    "inner_grad_clip",
    "lr",
];

pub fn run(args: AnalyzeArgs) -> Result<()> {
    if let Some(eval) = sweep::find_eval(&args.name) {
        return analyze_eval(&args, eval);
    }
    if let Some(image) = plastic_vision::sweep::find(&args.name) {
        let root = args.out.join(image.name);
        let figdir = args.figures.unwrap_or_else(|| root.join("analysis"));
        return crate::fsc::analyze(image, &root, &figdir, args.note.as_deref());
    }
    let sw = sweep::find(&args.name)?;
    let root = args.out.join(&args.name);
    let figdir = args
        .figures
        .clone()
        .unwrap_or_else(|| root.join("analysis"));
    std::fs::create_dir_all(&figdir).with_context(|| format!("creating {}", figdir.display()))?;
    let factor_names: Vec<String> = sw.factor_names().iter().map(|s| s.to_string()).collect();
    // collect finished runs, grouped by their factor values
    let mut groups: BTreeMap<Vec<String>, Group> = BTreeMap::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&root)
        .with_context(|| {
            format!(
                "reading {} (run `plastic sweep {}` first)",
                root.display(),
                args.name
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(run::files::CONFIG).exists())
        .collect();
    entries.sort();
    let mut unfinished = 0;
    for dir in entries {
        if !run::is_finished(&dir) {
            unfinished += 1;
            continue;
        }
        let text = std::fs::read_to_string(dir.join(run::files::CONFIG))?;
        let table: toml::Table = toml::from_str(&text)?;
        let values: Vec<String> = factor_names
            .iter()
            .map(|k| table.get(k).map(value_string).unwrap_or_default())
            .collect();
        let summary = run::read_summary(&dir)?;
        let curve = run::read_progress(&dir)?
            .iter()
            .map(|r| (r.step as f64, r.val_loss))
            .collect();
        let g = groups.entry(values.clone()).or_insert_with(|| Group {
            factors: factor_names.iter().cloned().zip(values).collect(),
            dirs: Vec::new(),
            test: Vec::new(),
            curves: Vec::new(),
        });
        g.dirs.push(dir);
        g.test.push(summary.test_loss);
        g.curves.push(curve);
    }
    if groups.is_empty() {
        bail!(
            "no finished runs of {} in {} yet: `plastic sweep {}` trains them",
            args.name,
            root.display(),
            args.name
        );
    }
    let label = |g: &Group, skip: &[&str]| -> String {
        g.factors
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| {
                if k == "rnn" || k == "plasticity" {
                    v.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    // table
    let mut md = format!(
        "# {}: test loss (mean ± 1.96 × standard error over seeds)\n\n",
        args.name
    );
    if let Some(n) = &args.note {
        md += &format!("{n}\n\n");
    }
    md += &format!(
        "| {} | seeds | test loss | ± 95% |\n|{}---|---|---|\n",
        factor_names.join(" | "),
        "---|".repeat(factor_names.len())
    );
    let mut csv = format!("{},seeds,test_mean,ci95\n", factor_names.join(","));
    for g in groups.values() {
        let (m, ci) = mean_ci(&g.test);
        let vals: Vec<&str> = g.factors.iter().map(|(_, v)| v.as_str()).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {m:.5} | {} |",
            vals.join(" | "),
            g.test.len(),
            if ci.is_nan() {
                "–".into()
            } else {
                format!("{ci:.5}")
            }
        );
        let _ = writeln!(
            csv,
            "{},{},{m:.6e},{}",
            vals.join(","),
            g.test.len(),
            if ci.is_nan() {
                String::new()
            } else {
                format!("{ci:.6e}")
            }
        );
    }
    plastic::io::write_atomic(&figdir.join("table.md"), md.as_bytes())?;
    plastic::io::write_atomic(&figdir.join("table.csv"), csv.as_bytes())?;
    let mut written = vec!["table.md".to_string(), "table.csv".to_string()];
    // validation curves: one figure per value of the factors other than cell and rule
    let others: Vec<&str> = factor_names
        .iter()
        .map(String::as_str)
        .filter(|k| *k != "rnn" && *k != "plasticity")
        .collect();
    let mut by_other: BTreeMap<String, Vec<&Group>> = BTreeMap::new();
    for g in groups.values() {
        by_other
            .entry(label(g, &["rnn", "plasticity"]))
            .or_default()
            .push(g);
    }
    for (k, gs) in &by_other {
        let series: Vec<Series> = gs
            .iter()
            .map(|g| curve_series(label(g, &others), &g.curves))
            .collect();
        let (stem, title) = names(
            "curves",
            &args.name,
            k,
            "validation loss (mean, min–max over seeds)",
        );
        chart(
            &figdir,
            &stem,
            &title,
            "training step",
            "validation loss",
            &series,
            false,
        )?;
        written.push(format!("{stem}.png"));
    }
    // test loss against a numeric factor
    for f in others.iter().filter(|f| NUMERIC.contains(f)) {
        let mut lines: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
        for g in groups.values() {
            let x: f64 = g
                .factors
                .iter()
                .find(|(k, _)| k == f)
                .map(|(_, v)| v.parse().unwrap_or(f64::NAN))
                .unwrap_or(f64::NAN);
            let (m, ci) = mean_ci(&g.test);
            lines.entry(label(g, &[f])).or_default().push((
                x,
                m,
                if ci.is_nan() { 0.0 } else { ci },
            ));
        }
        let series: Vec<Series> = lines
            .into_iter()
            .map(|(name, mut pts)| {
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    label: name,
                    points: pts.iter().map(|p| (p.0, p.1)).collect(),
                    band: Some(pts.iter().map(|p| (p.0, p.1 - p.2, p.1 + p.2)).collect()),
                }
            })
            .collect();
        let stem = format!("test_vs_{f}");
        chart(
            &figdir,
            &stem,
            &format!("{}: test loss against {f} (±95%)", args.name),
            f,
            "test loss",
            &series,
            false,
        )?;
        written.push(format!("{stem}.png"));
    }
    // ablation bars
    for f in others.iter().filter(|f| ABLATIONS.contains(f)) {
        let mut bars: BTreeMap<String, Vec<Bar>> = BTreeMap::new();
        for g in groups.values() {
            let v = g
                .factors
                .iter()
                .find(|(k, _)| k == f)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let (m, ci) = mean_ci(&g.test);
            bars.entry(label(g, &[f])).or_default().push(Bar {
                label: format!("{f}={v}"),
                mean: m,
                err: if ci.is_nan() { 0.0 } else { ci },
            });
        }
        let groups_: Vec<BarGroup> = bars
            .into_iter()
            .map(|(name, bars)| BarGroup { name, bars })
            .collect();
        let stem = format!("ablation_{f}");
        plot::bar_chart(
            &format!("{}: test loss by {f} (±95%)", args.name),
            "test loss",
            &groups_,
            &figdir.join(format!("{stem}.png")),
            &figdir.join(format!("{stem}.svg")),
        )?;
        written.push(format!("{stem}.png"));
    }
    // η(t) along the episode for the plastic models
    let overrides = vec![format!("test_batch={}", args.eta_batches)];
    let mut eta_csv = String::from("configuration,step,eta_mean\n");
    for (k, gs) in &by_other {
        let mut series = Vec::new();
        for g in gs.iter().filter(|g| {
            !g.factors
                .iter()
                .any(|(k, v)| k == "plasticity" && v == "none")
        }) {
            let mut acc: Vec<f64> = Vec::new();
            for dir in &g.dirs {
                let r = run::eval::evaluate(dir, &overrides)?;
                if acc.is_empty() {
                    acc = vec![0.0; r.applied_rate.mean.len()];
                }
                for (a, v) in acc.iter_mut().zip(&r.applied_rate.mean) {
                    *a += v / g.dirs.len() as f64;
                }
            }
            let name = label(g, &[]);
            for (t, v) in acc.iter().enumerate() {
                let _ = writeln!(eta_csv, "{},{t},{v:.6e}", name.replace(',', ";"));
            }
            series.push(Series {
                label: label(g, &others),
                points: acc
                    .iter()
                    .enumerate()
                    .map(|(t, v)| (t as f64, *v))
                    .collect(),
                band: None,
            });
        }
        if series.is_empty() {
            continue;
        }
        let (stem, title) = names(
            "eta",
            &args.name,
            k,
            "applied plasticity rate η(t), mean over seeds",
        );
        chart(
            &figdir,
            &stem,
            &title,
            "step in the episode",
            "η(t)",
            &series,
            false,
        )?;
        written.push(format!("{stem}.png"));
    }
    plastic::io::write_atomic(&figdir.join("eta.csv"), eta_csv.as_bytes())?;
    print!("{md}");
    if unfinished > 0 {
        println!("\n({unfinished} runs not finished yet are left out)");
    }
    println!("\nwrote to {}: {}", figdir.display(), written.join(", "));
    Ok(())
}

/// File stem and title of a figure for the group `group` (empty when the sweep has no
/// factor besides cell and rule).
fn names(prefix: &str, sweep: &str, group: &str, what: &str) -> (String, String) {
    if group.is_empty() {
        (prefix.to_string(), format!("{sweep}: {what}"))
    } else {
        (
            format!("{prefix}_{}", slug(group)),
            format!("{sweep}, {group}: {what}"),
        )
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Mean curve over seeds with a min–max band (on the steps all seeds logged).
fn curve_series(label: String, curves: &[Vec<(f64, f64)>]) -> Series {
    let n = curves.iter().map(Vec::len).min().unwrap_or(0);
    let points: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            (
                curves[0][i].0,
                curves.iter().map(|c| c[i].1).sum::<f64>() / curves.len() as f64,
            )
        })
        .collect();
    let band = (curves.len() > 1).then(|| {
        (0..n)
            .map(|i| {
                let v = curves.iter().map(|c| c[i].1);
                (
                    curves[0][i].0,
                    v.clone().fold(f64::INFINITY, f64::min),
                    v.fold(f64::NEG_INFINITY, f64::max),
                )
            })
            .collect()
    });
    Series {
        label,
        points,
        band,
    }
}

fn chart(
    dir: &Path,
    stem: &str,
    title: &str,
    x: &str,
    y: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    plot::line_chart(
        &LineChart {
            title,
            x_label: x,
            y_label: y,
            series,
            log_x: false,
            log_y,
        },
        &dir.join(format!("{stem}.png")),
        &dir.join(format!("{stem}.svg")),
    )
}

/// The finished evaluations of one configuration (all seeds).
struct EvalGroup {
    factors: Vec<(String, String)>,
    results: Vec<EvalResult>,
}

impl EvalGroup {
    fn value(&self, key: &str) -> Option<&str> {
        self.factors
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// η(t) before clipping: mean and standard deviation over the test episodes of every
    /// seed (the seeds' episode counts are equal, so their moments pool by averaging).
    fn eta(&self) -> (Vec<f64>, Vec<f64>) {
        let n = self.results.len() as f64;
        let t = self
            .results
            .iter()
            .map(|r| r.report.plasticity_rate.mean.len())
            .min()
            .unwrap_or(0);
        let mut mean = vec![0.0; t];
        let mut second = vec![0.0; t];
        for r in &self.results {
            let rate = &r.report.plasticity_rate;
            for s in 0..t {
                mean[s] += rate.mean[s] / n;
                second[s] += (rate.sd[s] * rate.sd[s] + rate.mean[s] * rate.mean[s]) / n;
            }
        }
        let sd = mean
            .iter()
            .zip(&second)
            .map(|(m, q)| (q - m * m).max(0.0).sqrt())
            .collect();
        (mean, sd)
    }
}

fn analyze_eval(args: &AnalyzeArgs, eval: &EvalSweep) -> Result<()> {
    let root = args.out.join(eval.name);
    let figdir = args
        .figures
        .clone()
        .unwrap_or_else(|| root.join("analysis"));
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(&root) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(sweep::EVAL_RESULT).exists())
            .collect(),
        Err(_) => Vec::new(),
    };
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "no evaluations of {} in {} yet: `plastic sweep {}` makes them (from the finished \
             runs of `plastic sweep {}`)",
            eval.name,
            root.display(),
            eval.name,
            eval.trained
        );
    }
    std::fs::create_dir_all(&figdir).with_context(|| format!("creating {}", figdir.display()))?;
    let mut groups: BTreeMap<Vec<(String, String)>, EvalGroup> = BTreeMap::new();
    for dir in &dirs {
        let r = sweep::read_eval_result(dir)?;
        groups
            .entry(r.factors.clone())
            .or_insert_with(|| EvalGroup {
                factors: r.factors.clone(),
                results: Vec::new(),
            })
            .results
            .push(r);
    }
    let factor_names: Vec<&str> = eval.factor_values().iter().map(|f| f.0).collect();
    let cell_rule = |g: &EvalGroup| {
        format!(
            "{} {}",
            g.value("rnn").unwrap_or("?"),
            g.value("plasticity").unwrap_or("?")
        )
    };
    // table of test losses
    let mut md = format!(
        "# {}: test loss (mean ± 1.96 × standard error over seeds)\n\n",
        eval.name
    );
    if let Some(n) = &args.note {
        md += &format!("{n}\n\n");
    }
    md += &format!(
        "| {} | seeds | test loss | ± 95% |\n|{}---|---|---|\n",
        factor_names.join(" | "),
        "---|".repeat(factor_names.len())
    );
    let mut csv = format!("{},seeds,test_mean,ci95\n", factor_names.join(","));
    for g in groups.values() {
        let test: Vec<f64> = g.results.iter().map(|r| r.report.test_loss).collect();
        let (m, ci) = mean_ci(&test);
        let vals: Vec<&str> = factor_names
            .iter()
            .map(|k| g.value(k).unwrap_or(""))
            .collect();
        let ci_text = if ci.is_nan() {
            "–".to_string()
        } else {
            format!("{ci:.5}")
        };
        let _ = writeln!(
            md,
            "| {} | {} | {m:.5} | {ci_text} |",
            vals.join(" | "),
            test.len()
        );
        let _ = writeln!(
            csv,
            "{},{},{m:.6e},{}",
            vals.join(","),
            test.len(),
            if ci.is_nan() {
                String::new()
            } else {
                format!("{ci:.6e}")
            }
        );
    }
    plastic::io::write_atomic(&figdir.join("table.md"), md.as_bytes())?;
    plastic::io::write_atomic(&figdir.join("table.csv"), csv.as_bytes())?;
    let mut written = vec!["table.md".to_string(), "table.csv".to_string()];
    // η(t): one figure per cell (and value of the other factors), one series per rule
    let mut eta_csv = String::from("configuration,seeds,step,eta_mean,eta_sd\n");
    let mut figures: BTreeMap<String, Vec<&EvalGroup>> = BTreeMap::new();
    for g in groups.values() {
        let key: Vec<String> = g
            .factors
            .iter()
            .filter(|(k, _)| k != "plasticity")
            .map(|(k, v)| {
                if k == "rnn" {
                    v.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        figures.entry(key.join(" ")).or_default().push(g);
    }
    for (key, gs) in &figures {
        let mut series = Vec::new();
        for g in gs {
            let (mean, sd) = g.eta();
            let label: Vec<String> = g.factors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            for (t, (m, d)) in mean.iter().zip(&sd).enumerate() {
                let _ = writeln!(
                    eta_csv,
                    "{},{},{},{m:.6e},{d:.6e}",
                    label.join(" "),
                    g.results.len(),
                    t + 1
                );
            }
            series.push(Series {
                label: g.value("plasticity").unwrap_or("?").to_string(),
                points: mean
                    .iter()
                    .enumerate()
                    .map(|(t, m)| ((t + 1) as f64, *m))
                    .collect(),
                band: Some(
                    mean.iter()
                        .zip(&sd)
                        .enumerate()
                        .map(|(t, (m, d))| ((t + 1) as f64, m - d, m + d))
                        .collect(),
                ),
            });
        }
        let (stem, title) = names(
            "eta",
            eval.name,
            key,
            "plasticity rate η(t) before clipping, mean ± sd over test episodes",
        );
        chart(
            &figdir,
            &stem,
            &title,
            "step t in the episode",
            "η(t)",
            &series,
            false,
        )?;
        written.push(format!("{stem}.png"));
    }
    plastic::io::write_atomic(&figdir.join("eta.csv"), eta_csv.as_bytes())?;
    // test loss against the varied task key, one series per cell and rule
    if let Some(&(varied, _)) = eval
        .factor_values()
        .last()
        .filter(|_| factor_names.len() > eval.trained_sweep().factor_names().len())
    {
        let mut lines: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
        for g in groups.values() {
            let x: f64 = g
                .value(varied)
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            let test: Vec<f64> = g.results.iter().map(|r| r.report.test_loss).collect();
            let (m, ci) = mean_ci(&test);
            lines
                .entry(cell_rule(g))
                .or_default()
                .push((x, m, if ci.is_nan() { 0.0 } else { ci }));
        }
        let series: Vec<Series> = lines
            .into_iter()
            .map(|(name, mut pts)| {
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    label: name,
                    points: pts.iter().map(|p| (p.0, p.1)).collect(),
                    band: Some(pts.iter().map(|p| (p.0, p.1 - p.2, p.1 + p.2)).collect()),
                }
            })
            .collect();
        let stem = format!("test_vs_{varied}");
        chart(
            &figdir,
            &stem,
            &format!("{}: test loss against {varied} (±95%)", eval.name),
            varied,
            "test loss",
            &series,
            false,
        )?;
        written.push(format!("{stem}.png"));
    }
    print!("{md}");
    println!(
        "\n{} evaluations of {} (finished runs of {}); wrote to {}: {}",
        dirs.len(),
        eval.name,
        eval.trained,
        figdir.display(),
        written.join(", ")
    );
    Ok(())
}
