//! `plastic bench`: times full training steps (forward, backward, gradient clipping and the
//! optimiser; batch 64; after warm-up) of the reference's benchmark configurations, each in
//! its own process so that its peak memory is its own, and relates them to the reference's
//! figures and to the machine's memory bandwidth.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use plastic::optim::{clip_grad_norm, AdamW, AdamWConfig};
use plastic::run::RunConfig;
use plastic::Network;

/// Arguments of `plastic bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Timed steps per configuration and round (after 2 warm-up steps).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Rounds over all configurations: each round times every configuration once, in its
    /// own process, and the figures are over all rounds' steps, which evens out a machine
    /// whose speed drifts.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Run only the configurations whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Instead of the table: measure time and peak memory against episode length, hidden
    /// size and batch size, and write plots and a CSV into this folder.
    #[arg(long, value_name = "DIR")]
    scaling: Option<PathBuf>,
    /// Instead of the table: time the hot kernels on one 128 × 128 f32 matrix held in the
    /// core's L2 cache (one thread), with the bytes each must move.
    #[arg(long)]
    kernels: bool,
    /// Instead of the table: time the fsc training step (ProtoNet conv4 → RNN, gradient
    /// rule, H 512, batch 64) at CIFAR-FS and miniImageNet image sizes (fsc hook, issue 9).
    #[arg(long)]
    fsc: bool,
    /// Internal: time the fsc step at this data set's image size in this process.
    #[arg(long, hide = true)]
    fsc_child: Option<String>,
    /// Internal: time one configuration (--task, --set) in this process.
    #[arg(long, hide = true)]
    child: bool,
    #[arg(long, hide = true)]
    task: Option<String>,
    #[arg(long = "set", hide = true)]
    set: Vec<String>,
}

/// One benchmark configuration and the reference's figures for it (2 cores, torch CPU).
struct Case {
    name: &'static str,
    task: &'static str,
    overrides: &'static [&'static str],
    reference_s: Option<f64>,
    reference_gb: Option<f64>,
}

const CASES: &[Case] = &[
    Case {
        name: "cue-rnn-gradient-h128",
        task: "cue-reward",
        overrides: &["rnn=rnn", "plasticity=gradient", "hidden_size=128"],
        reference_s: Some(0.84),
        reference_gb: Some(2.2),
    },
    Case {
        name: "cue-rnn-hebbian-h128",
        task: "cue-reward",
        overrides: &["rnn=rnn", "plasticity=hebbian", "hidden_size=128"],
        reference_s: Some(0.84),
        reference_gb: Some(2.1),
    },
    Case {
        name: "cue-rnn-none-h192",
        task: "cue-reward",
        overrides: &["rnn=rnn", "plasticity=none", "hidden_size=192"],
        reference_s: Some(0.035),
        reference_gb: Some(0.7),
    },
    Case {
        name: "cue-lstm-gradient-h128",
        task: "cue-reward",
        overrides: &["rnn=lstm", "plasticity=gradient", "hidden_size=128"],
        reference_s: Some(5.3),
        reference_gb: Some(5.7),
    },
    Case {
        name: "seq-L20-d40-lstm-gradient-h128",
        task: "seq-reproduction",
        overrides: &[
            "rnn=lstm",
            "plasticity=gradient",
            "hidden_size=128",
            "seq_length=20",
            "delay=40",
        ],
        reference_s: Some(19.5),
        reference_gb: Some(21.1),
    },
    Case {
        name: "seq-L20-d60-lstm-gradient-h128",
        task: "seq-reproduction",
        overrides: &[
            "rnn=lstm",
            "plasticity=gradient",
            "hidden_size=128",
            "seq_length=20",
            "delay=60",
        ],
        reference_s: None,
        reference_gb: Some(26.0),
    },
    Case {
        name: "regression-mlp-lstm-gradient-h128",
        task: "regression",
        overrides: &[
            "rnn=lstm",
            "plasticity=gradient",
            "hidden_size=128",
            "task_mode=mlp",
            "n_var=6",
        ],
        reference_s: Some(8.7),
        reference_gb: Some(10.7),
    },
];

/// Figures a child process reports, one `key=value` per line.
#[derive(Default, Debug)]
struct Figures {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    peak_mb: f64,
    plastic_mb: f64,
    steps: usize,
    /// Every timed step, ms.
    times: Vec<f64>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    // fsc hook (issue 9)
    if let Some(dataset) = &args.fsc_child {
        return crate::fsc::bench_child(dataset, args.steps);
    }
    if args.fsc {
        return crate::fsc::bench(args.steps, args.rounds, args.only.as_deref());
    }
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| {
            args.only
                .as_ref()
                .is_none_or(|o| c.name.contains(o.as_str()))
        })
        .collect();
    if cases.is_empty() {
        let names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
        bail!("no configuration matches; valid: {}", names.join(", "));
    }
    if args.child {
        let task = args.task.as_deref().context("--child needs --task")?;
        return child(task, &args.set, args.steps);
    }
    if let Some(dir) = &args.scaling {
        return scaling(dir, args.steps);
    }
    if args.kernels {
        kernel_table();
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let bandwidth = stream_bandwidth_gbs();
    println!(
        "plastic bench: batch 64, f32, {threads} threads, {} kernels; median of {} rounds × {} training steps (each after 2 warm-up steps)",
        format!("{:?}", plastic::kernels::simd()).to_lowercase(),
        args.rounds,
        args.steps
    );
    println!("measured memory bandwidth (triad, {threads} threads): {bandwidth:.1} GB/s\n");
    let mut table = String::new();
    table += "| configuration | ms/step (median, min–max) | peak memory | reference s/step | speed-up | reference peak | plastic state per step | GB/s | of bandwidth |\n";
    table += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    // rounds over all configurations; a configuration's figures pool its rounds' steps
    let mut figures: Vec<Figures> = cases.iter().map(|_| Figures::default()).collect();
    for round in 0..args.rounds {
        for (case, all) in cases.iter().zip(figures.iter_mut()) {
            let overrides: Vec<String> = case.overrides.iter().map(|s| s.to_string()).collect();
            let f = measure(case.task, &overrides, args.steps)
                .with_context(|| format!("benchmark {}", case.name))?;
            eprintln!(
                "round {}/{}: {} {:.1} ms/step",
                round + 1,
                args.rounds,
                case.name,
                f.median_ms
            );
            all.pool(f);
        }
    }
    for (case, f) in cases.iter().zip(figures) {
        let gbs = f.plastic_mb / 1e3 / (f.median_ms / 1e3);
        let row = format!(
            "| {} | {:.1} ({:.1}–{:.1}) | {:.0} MB | {} | {} | {} | {:.0} MB | {:.1} | {:.0}% |",
            case.name,
            f.median_ms,
            f.min_ms,
            f.max_ms,
            f.peak_mb,
            case.reference_s.map_or("–".into(), |s| format!("{s}")),
            case.reference_s
                .map_or("–".into(), |s| format!("{:.0}×", s * 1e3 / f.median_ms)),
            case.reference_gb.map_or("–".into(), |g| format!("{g} GB")),
            f.plastic_mb,
            gbs,
            100.0 * gbs / bandwidth
        );
        println!("{row}");
        table += &row;
        table.push('\n');
    }
    println!(
        "\nplastic state per step: the bytes an ideal implementation must move through the plastic \
         weights (read P and write P' forward; read P, read and write dP backward): 5·B·T·|P|·4 bytes."
    );
    if let Some(path) = args.markdown {
        plastic::io::write_atomic(&path, table.as_bytes())?;
    }
    Ok(())
}

/// Times one configuration in a child process (so that its peak memory is its own).
fn measure(task: &str, overrides: &[String], steps: usize) -> Result<Figures> {
    let exe = std::env::current_exe().context("locating the plastic binary")?;
    let mut cmd = Command::new(&exe);
    if let Some(n) = std::env::args().skip_while(|a| a != "--threads").nth(1) {
        cmd.args(["--threads", &n]);
    }
    cmd.args([
        "bench",
        "--child",
        "--task",
        task,
        "--steps",
        &steps.to_string(),
    ]);
    for o in overrides {
        cmd.args(["--set", o]);
    }
    let out = cmd.output().context("running a benchmark process")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Time and peak memory against T, hidden size and batch size.
fn scaling(dir: &std::path::Path, steps: usize) -> Result<()> {
    use crate::plot::{line_chart, LineChart, Series};
    // (key, axis label, task, [(x, overrides)])
    type Study = (
        &'static str,
        &'static str,
        &'static str,
        Vec<(f64, Vec<String>)>,
    );
    let studies: [Study; 3] = [
        (
            "T",
            "episode length T (sequence reproduction, L 10; LSTM, gradient, hidden 128, batch 64)",
            "seq-reproduction",
            [0usize, 30, 80, 130, 180]
                .iter()
                .map(|&d| {
                    let o = [
                        "rnn=lstm",
                        "plasticity=gradient",
                        "hidden_size=128",
                        "seq_length=10",
                    ];
                    let mut o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
                    o.push(format!("delay={d}"));
                    ((20 + d) as f64, o)
                })
                .collect(),
        ),
        (
            "hidden",
            "hidden size (cue-reward, RNN, gradient, T 20, batch 64)",
            "cue-reward",
            [64usize, 128, 256, 512]
                .iter()
                .map(|&h| {
                    (
                        h as f64,
                        vec!["plasticity=gradient".into(), format!("hidden_size={h}")],
                    )
                })
                .collect(),
        ),
        (
            "batch",
            "batch size (cue-reward, RNN, gradient, hidden 128, T 20)",
            "cue-reward",
            [1usize, 4, 16, 64, 256]
                .iter()
                .map(|&b| {
                    (
                        b as f64,
                        vec!["plasticity=gradient".into(), format!("batch_size={b}")],
                    )
                })
                .collect(),
        ),
    ];
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut csv = String::from("study,x,median_ms,peak_mb\n");
    for (key, label, task, points) in studies {
        let mut time = Vec::new();
        let mut mem = Vec::new();
        for (x, o) in points {
            let f = measure(task, &o, steps)?;
            println!(
                "{key} = {x}: {:.1} ms/step, peak {:.0} MB",
                f.median_ms, f.peak_mb
            );
            csv += &format!("{key},{x},{:.3},{:.1}\n", f.median_ms, f.peak_mb);
            time.push((x, f.median_ms));
            mem.push((x, f.peak_mb));
        }
        for (what, unit, pts) in [
            ("time", "ms per training step", time),
            ("memory", "peak memory (MB)", mem),
        ] {
            let series = [Series {
                label: format!("{what} (measured)"),
                points: pts,
                band: None,
            }];
            let stem = format!("scaling_{key}_{what}");
            line_chart(
                &LineChart {
                    title: &format!("{what} against {key}"),
                    x_label: label,
                    y_label: unit,
                    series: &series,
                    log_x: key != "T",
                    log_y: key != "T",
                },
                &dir.join(format!("{stem}.png")),
                &dir.join(format!("{stem}.svg")),
            )?;
        }
    }
    plastic::io::write_atomic(&dir.join("scaling.csv"), csv.as_bytes())?;
    println!("wrote plots and scaling.csv to {}", dir.display());
    Ok(())
}

impl Figures {
    /// Adds another process's figures: its step times join these, its peak memory counts
    /// if higher, and the median, min and max are taken over all steps.
    fn pool(&mut self, other: Figures) {
        self.times.extend(other.times);
        self.times.sort_by(|a, b| a.total_cmp(b));
        let n = self.times.len();
        self.median_ms = if n % 2 == 1 {
            self.times[n / 2]
        } else {
            0.5 * (self.times[n / 2 - 1] + self.times[n / 2])
        };
        self.min_ms = self.times[0];
        self.max_ms = self.times[n - 1];
        self.peak_mb = self.peak_mb.max(other.peak_mb);
        self.plastic_mb = other.plastic_mb;
        self.steps = n;
    }
}

fn parse(text: &str) -> Result<Figures> {
    let mut f = Figures::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() == "times_ms" {
            for t in v.split(',') {
                f.times.push(
                    t.trim()
                        .parse()
                        .with_context(|| format!("bad figure line `{line}`"))?,
                );
            }
            continue;
        }
        let v: f64 = v
            .trim()
            .parse()
            .with_context(|| format!("bad figure line `{line}`"))?;
        match k.trim() {
            "median_ms" => f.median_ms = v,
            "min_ms" => f.min_ms = v,
            "max_ms" => f.max_ms = v,
            "peak_mb" => f.peak_mb = v,
            "plastic_mb" => f.plastic_mb = v,
            "steps" => f.steps = v as usize,
            _ => {}
        }
    }
    if f.steps == 0 || f.times.len() != f.steps {
        bail!("the benchmark process reported nothing:\n{text}");
    }
    Ok(f)
}

/// Times one configuration in this process and prints its figures.
fn child(task: &str, overrides: &[String], steps: usize) -> Result<()> {
    let cfg = RunConfig::defaults(task)?.with_overrides(overrides)?;
    let mut net = Network::<f32>::new(cfg.network_config(), 0)?;
    let mask = net.layout().trainable_mask();
    let mut opt = AdamW::new(AdamWConfig::default(), mask.clone());
    let mut times = Vec::new();
    for step in 0..steps + 2 {
        let t0 = Instant::now();
        let ep = cfg
            .task
            .generate::<f32>(&mut plastic::run::train_rng(0, step), cfg.train.batch_size);
        let mut g = net.loss_and_grad(&ep, cfg.task.loss())?;
        clip_grad_norm(&mut g.grads, &mask, cfg.train.grad_clip);
        opt.update(net.params_mut(), &g.grads);
        if step >= 2 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let plastic_bytes = 5.0
        * (cfg.train.batch_size
            * cfg.task.steps()
            * net.layout().plastic_len
            * std::mem::size_of::<f32>()) as f64;
    println!("median_ms={}", times[times.len() / 2]);
    println!("min_ms={}", times[0]);
    println!("max_ms={}", times[times.len() - 1]);
    println!("peak_mb={}", peak_rss_mb());
    println!("plastic_mb={}", plastic_bytes / 1e6);
    println!("steps={}", times.len());
    let list: Vec<String> = times.iter().map(|t| t.to_string()).collect();
    println!("times_ms={}", list.join(","));
    Ok(())
}

/// Peak resident memory of this process (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb * 1024.0 / 1e6)
}

/// Times the kernels on L2-resident 128 × 128 f32 data: median µs per call and the GB/s
/// of the matrix traffic each must do (`passes` matrix-sized reads or writes).
fn kernel_table() {
    use plastic::kernels::{self as k, DeferredAlpha, LazyAdjoint};
    let (rows, cols) = (128usize, 128usize);
    let n = rows * cols;
    let fill = |seed: usize, len: usize| -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 1000.0 - 0.5) * 0.1)
            .collect()
    };
    let (w, p, alpha) = (fill(1, n), fill(2, n), fill(3, n));
    let (mut dst, mut s, mut da) = (fill(4, n), fill(5, n), fill(6, n));
    let (v, pre, delta) = (fill(7, cols), fill(8, rows), fill(9, cols));
    let (mut x, mut y) = (vec![0.0f32; rows], vec![0.0f32; cols]);
    let (mut d_pre, mut d_delta) = (vec![0.0f32; rows], vec![0.0f32; cols]);
    let time = |f: &mut dyn FnMut()| -> f64 {
        let mut runs = Vec::new();
        for _ in 0..7 {
            let t0 = Instant::now();
            for _ in 0..2000 {
                f();
            }
            runs.push(t0.elapsed().as_secs_f64() / 2000.0);
        }
        runs.sort_by(|a, b| a.total_cmp(b));
        runs[3]
    };
    println!(
        "kernels on one 128 × 128 f32 matrix in L2, one thread, {:?} kernels; median of 7 × 2000 calls\n",
        k::simd()
    );
    println!("| kernel | µs per call | matrix passes | GB/s |\n| --- | --- | --- | --- |");
    let row = |name: &str, passes: f64, f: &mut dyn FnMut()| {
        let t = time(f);
        println!(
            "| {name} | {:.2} | {passes} | {:.0} |",
            t * 1e6,
            passes * (n * 4) as f64 / t / 1e9
        );
    };
    row("mat_vec (W + P)·v", 2.0, &mut || {
        k::mat_vec(&w, Some(&p), &v, &mut x)
    });
    row("vec_mat x·(W + P)", 2.0, &mut || {
        k::vec_mat(&pre, &w, Some(&p), &mut y)
    });
    row("plastic_update", 3.0, &mut || {
        k::plastic_update(&mut dst, &p, &alpha, &pre, Some(&delta), 0.1, 0.01, None)
    });
    row("plastic_update_vec_mat (fused)", 4.0, &mut || {
        k::plastic_update_vec_mat(
            &mut dst, &p, &alpha, &pre, &delta, 0.1, 0.01, None, &pre, &w, &mut y,
        )
    });
    for with_alpha in [false, true] {
        let (la, lb) = ([&pre[..], &pre[..]], [&v[..], &delta[..]]);
        let lazy = LazyAdjoint {
            kappa: 0.5, // keeps the stored adjoint bounded over the repeated calls
            a: &la,
            b: &lb,
        };
        let def = DeferredAlpha {
            eta: 0.1,
            pre: &pre,
            delta: &delta,
        };
        let name = if with_alpha {
            "update adjoint, 2 lazy terms, with dα"
        } else {
            "update adjoint, 2 lazy terms, dα deferred"
        };
        row(name, if with_alpha { 6.0 } else { 4.0 }, &mut || {
            k::plastic_update_backward(
                &mut s,
                &lazy,
                &p,
                &alpha,
                with_alpha.then_some(&mut da[..]),
                with_alpha.then_some(&def),
                &pre,
                Some(&delta),
                &mut d_pre,
                &mut d_delta,
                0.1,
                0.01,
                None,
            );
        });
    }
    std::hint::black_box((&x, &y, &dst, &s, &da, &d_pre, &d_delta));
}

/// Sustained memory bandwidth of a triad `a = b + s·c` over 3 × 64 MiB arrays, split over
/// the thread pool, best of 5 (bytes read and written per second).
fn stream_bandwidth_gbs() -> f64 {
    use rayon::prelude::*;
    let n = 16 << 20;
    let b = vec![1.0f32; n];
    let c = vec![2.0f32; n];
    let mut a = vec![0.0f32; n];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        a.par_chunks_mut(1 << 16)
            .zip(b.par_chunks(1 << 16))
            .zip(c.par_chunks(1 << 16))
            .for_each(|((a, b), c)| {
                for k in 0..a.len() {
                    a[k] = b[k] + 0.5 * c[k];
                }
            });
        best = best.min(t0.elapsed().as_secs_f64());
    }
    std::hint::black_box(&a);
    (3 * n * 4) as f64 / best / 1e9
}
