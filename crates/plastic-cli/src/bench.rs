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
use plastic::{Engine, Network};

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
    /// Instead of the table: time the fsc training step (ProtoNet conv4 or ResNet-12 →
    /// RNN, gradient rule, H 512, batch 64) at CIFAR-FS and miniImageNet image sizes, and
    /// with a frozen CNN uncached and cached, beside the reference's step (`--only` picks
    /// rows, e.g. `--only frozen`, `--only resnet12-nodrop`).
    #[arg(long)]
    fsc: bool,
    /// With --fsc: episodes per batch instead of the paper's 64, to time a heavy row (a
    /// ResNet-12 at miniImageNet size needs about 13 GiB at 64) on a machine short of memory
    /// or time; the output then says that the figures are not the full step's, and shows
    /// the reference's only where it was timed at the same batch.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    fsc_batch: Option<u64>,
    /// With --fsc: untimed warm-up steps in each process before the timed ones.
    #[arg(long, value_name = "N", default_value_t = 2)]
    fsc_warmup: usize,
    /// Internal: time the fsc step at this data set's image size in this process.
    #[arg(long, hide = true)]
    fsc_child: Option<String>,
    /// Also time every configuration on the per-episode path (`Engine::per_episode`; it
    /// differs from the default only for `plasticity = none`), alternating with the default
    /// path within each round, so that both see the same machine load (A/B).
    #[arg(long)]
    with_per_episode: bool,
    /// Internal: time one configuration (--task, --set) in this process.
    #[arg(long, hide = true)]
    child: bool,
    /// Internal: the child times the per-episode path.
    #[arg(long, hide = true)]
    per_episode: bool,
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
        name: "cue-lstm-none-h128",
        task: "cue-reward",
        overrides: &["rnn=lstm", "plasticity=none", "hidden_size=128"],
        reference_s: None,
        reference_gb: None,
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
    /// CPU time (all threads) per timed step, ms, per process.
    cpu_ms: Vec<f64>,
    /// The model's amounts per step (see [`traffic_model`]): FLOPs, L2 bytes, DRAM bytes.
    flops: f64,
    l2_bytes: f64,
    dram_bytes: f64,
}

pub fn run(args: BenchArgs) -> Result<()> {
    // fsc hook (issue 9)
    if let Some(dataset) = &args.fsc_child {
        return crate::fsc::bench_child(dataset, args.steps, args.fsc_warmup);
    }
    if args.fsc {
        return crate::fsc::bench(crate::fsc::FscBenchOptions {
            steps: args.steps,
            rounds: args.rounds,
            only: args.only.as_deref(),
            batch: args.fsc_batch.map(|b| b as usize),
            warmup: args.fsc_warmup,
        });
    }
    if args.fsc_batch.is_some() {
        bail!("--fsc-batch applies to --fsc only");
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
        return child(task, &args.set, args.steps, args.per_episode);
    }
    if let Some(dir) = &args.scaling {
        return scaling(dir, args.steps);
    }
    if args.kernels {
        kernel_table();
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    // rates per second of wall time and per second of CPU time (of one thread): on a machine
    // shared with other work the second is the hardware's, and the bound is taken in CPU time
    let (bandwidth, dram_cpu) = stream_bandwidth_gbs();
    let (l2_bandwidth, l2_cpu) = l2_bandwidth_gbs();
    let (gemm_rate, gemm_cpu) = gemm_gflops();
    println!(
        "plastic bench: batch 64, f32, {threads} threads, {} kernels; median of {} rounds × {} training steps (each after 2 warm-up steps)",
        format!("{:?}", plastic::kernels::simd()).to_lowercase(),
        args.rounds,
        args.steps
    );
    println!(
        "measured memory bandwidth (triad, {threads} threads): {bandwidth:.1} GB/s; {dram_cpu:.1} GB per CPU second"
    );
    println!(
        "measured L2 bandwidth (triad on 3 × 64 KiB per thread, {threads} threads): {l2_bandwidth:.0} GB/s; {l2_cpu:.0} GB per CPU second"
    );
    println!(
        "measured GEMM rate (the engine's fixed-order gemm_nn, 16 × 192 · 192 × 192, {threads} threads): {gemm_rate:.1} GFLOP/s; {gemm_cpu:.1} GFLOP per CPU second\n"
    );
    let mut table = String::new();
    table += "| configuration | ms/step (median, min–max) | CPU ms/step | peak memory | reference s/step | speed-up | reference peak | plastic state per step | GB/s | of bandwidth | GFLOP/step | bound, CPU ms: FLOPs / L2 / DRAM | bound by | CPU time / bound |\n";
    table +=
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    // rounds over all configurations; a configuration's figures pool its rounds' steps
    // (with --with-per-episode, each configuration is followed by its per-episode run)
    let variants: Vec<(&Case, bool)> = cases
        .iter()
        .flat_map(|&c| {
            std::iter::once((c, false)).chain(args.with_per_episode.then_some((c, true)))
        })
        .collect();
    let mut figures: Vec<Figures> = variants.iter().map(|_| Figures::default()).collect();
    for round in 0..args.rounds {
        for (&(case, per_episode), all) in variants.iter().zip(figures.iter_mut()) {
            let overrides: Vec<String> = case.overrides.iter().map(|s| s.to_string()).collect();
            let f = measure(case.task, &overrides, args.steps, per_episode)
                .with_context(|| format!("benchmark {}", case.name))?;
            eprintln!(
                "round {}/{}: {}{} {:.1} ms/step",
                round + 1,
                args.rounds,
                case.name,
                if per_episode { " (per-episode)" } else { "" },
                f.median_ms
            );
            all.pool(f);
        }
    }
    for (&(case, per_episode), f) in variants.iter().zip(figures) {
        let gbs = f.plastic_mb / 1e3 / (f.median_ms / 1e3);
        // the model's time for each resource, and the one that bounds
        let bound = [
            ("FLOPs", f.flops / (gemm_cpu * 1e9) * 1e3),
            ("L2", f.l2_bytes / (l2_cpu * 1e9) * 1e3),
            ("DRAM", f.dram_bytes / (dram_cpu * 1e9) * 1e3),
        ];
        let (by, bound_ms) = bound
            .iter()
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        let cpu = {
            let mut c = f.cpu_ms.clone();
            c.sort_by(|a, b| a.total_cmp(b));
            c[c.len() / 2]
        };
        let name = if per_episode {
            format!("{} (per-episode)", case.name)
        } else {
            case.name.to_string()
        };
        let row = format!(
            "| {} | {:.1} ({:.1}–{:.1}) | {:.1} | {:.0} MB | {} | {} | {} | {:.0} MB | {:.1} | {:.0}% | {:.3} | {:.2} / {:.2} / {:.2} | {} | {:.1}× |",
            name,
            f.median_ms,
            f.min_ms,
            f.max_ms,
            cpu,
            f.peak_mb,
            case.reference_s.map_or("–".into(), |s| format!("{s}")),
            case.reference_s
                .map_or("–".into(), |s| format!("{:.0}×", s * 1e3 / f.median_ms)),
            case.reference_gb.map_or("–".into(), |g| format!("{g} GB")),
            f.plastic_mb,
            gbs,
            100.0 * gbs / bandwidth,
            f.flops / 1e9,
            bound[0].1,
            bound[1].1,
            bound[2].1,
            by,
            cpu / bound_ms
        );
        println!("{row}");
        table += &row;
        table.push('\n');
    }
    println!(
        "\nplastic state per step: the bytes an ideal implementation must move through the plastic \
         weights (read P and write P' forward; read P, read and write dP backward): 5·B·T·|P|·4 bytes."
    );
    println!(
        "bound: the CPU time each resource needs by a simple model (FLOPs of the matrix products at the \
         measured GEMM rate, L2 and DRAM bytes at the measured bandwidths, each per CPU second; README, \
         Speed and memory); \"CPU time / bound\": the step's CPU time over the largest of the three. \
         CPU ms/step: all threads' CPU time per timed step (median over the processes)."
    );
    if let Some(path) = args.markdown {
        plastic::io::write_atomic(&path, table.as_bytes())?;
    }
    Ok(())
}

/// Times one configuration in a child process (so that its peak memory is its own).
fn measure(task: &str, overrides: &[String], steps: usize, per_episode: bool) -> Result<Figures> {
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
    if per_episode {
        cmd.arg("--per-episode");
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
            let f = measure(task, &o, steps, false)?;
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
        self.cpu_ms.extend(other.cpu_ms);
        (self.flops, self.l2_bytes, self.dram_bytes) =
            (other.flops, other.l2_bytes, other.dram_bytes);
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
            "cpu_ms" => f.cpu_ms.push(v),
            "flops" => f.flops = v,
            "l2_bytes" => f.l2_bytes = v,
            "dram_bytes" => f.dram_bytes = v,
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
fn child(task: &str, overrides: &[String], steps: usize, per_episode: bool) -> Result<()> {
    let cfg = RunConfig::defaults(task)?.with_overrides(overrides)?;
    let mut net = Network::<f32>::new(cfg.network_config(), 0)?;
    let mask = net.layout().trainable_mask();
    let mut opt = AdamW::new(AdamWConfig::default(), mask.clone());
    let engine = if per_episode {
        Engine::per_episode()
    } else {
        Engine::new()
    };
    let mut times = Vec::new();
    let mut cpu0 = 0.0;
    for step in 0..steps + 2 {
        if step == 2 {
            cpu0 = cpu_ms();
        }
        let t0 = Instant::now();
        let ep = cfg
            .task
            .generate::<f32>(&mut plastic::run::train_rng(0, step), cfg.train.batch_size);
        let mut g = engine.loss_and_grad(&net, &ep, cfg.task.loss())?;
        clip_grad_norm(&mut g.grads, &mask, cfg.train.grad_clip);
        opt.update(net.params_mut(), &g.grads);
        if step >= 2 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let cpu_per_step = (cpu_ms() - cpu0) / steps as f64;
    times.sort_by(|a, b| a.total_cmp(b));
    let (flops, l2_bytes, dram_bytes) =
        traffic_model(&net, cfg.train.batch_size, cfg.task.steps(), per_episode);
    println!("cpu_ms={cpu_per_step}");
    println!("flops={flops}");
    println!("l2_bytes={l2_bytes}");
    println!("dram_bytes={dram_bytes}");
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

/// CPU time of all this process's threads so far, in ms.
fn cpu_ms() -> f64 {
    crate::bench_peak::process_cpu_ms()
}

/// CPU time of the calling thread so far, in ms.
fn thread_cpu_ms() -> f64 {
    crate::bench_peak::thread_cpu_ms()
}

/// The simple model of one training step's cost (README, "Speed and memory"): the FLOPs of
/// its matrix products, the bytes it must move through L2 and through main memory.
///
/// - FLOPs: `2·B·T·Σ_l r_l·c_l` per product with each weight matrix (`r_l × c_l`): three
///   products (forward, input adjoint, weight gradient), five for the output and recurrent
///   input matrices of the gradient rule (its inner errors, forward and adjoint).
/// - L2: plastic rules keep an episode's `P` and `dP` in L2 and pass over them 11 times per
///   step (the fused update and mat-vec 4 matrix passes of `W`, `P`, `α`, `P'`; the update's
///   adjoint 5 on average; the transposed mat-vec 2); `none` on the per-episode path reads
///   every weight matrix 3 times per episode and step, batched once per chunk of 16
///   episodes.
/// - DRAM: the per-step records (written forward, read backward: `2·B·T·(10H + 3gH + 2D)`
///   floats) and, for plastic rules, the snapshots of `P` (`2·B·T·|P|` floats).
fn traffic_model(
    net: &Network<f32>,
    batch: usize,
    steps: usize,
    per_episode: bool,
) -> (f64, f64, f64) {
    let c = net.config();
    let lay = net.layout();
    let (bt, f) = ((batch * steps) as f64, 4.0);
    let (h, gh, d) = (
        c.hidden_size as f64,
        (c.gates() * c.hidden_size) as f64,
        c.full_output_size() as f64,
    );
    let second = c.is_plastic() && c.plasticity == plastic::Rule::Gradient;
    let mut macs = 0.0;
    let mut weights = 0.0;
    for id in plastic::LayerId::ALL {
        let l = lay.layer(id);
        let n = (l.rows * l.cols) as f64;
        weights += n;
        let products = if second && matches!(id, plastic::LayerId::Out | plastic::LayerId::RecI) {
            5.0
        } else {
            3.0
        };
        macs += products * n;
    }
    let flops = 2.0 * bt * macs;
    let plen = lay.plastic_len as f64;
    let l2 = if c.is_plastic() {
        11.0 * bt * plen * f
    } else if per_episode {
        3.0 * bt * weights * f
    } else {
        3.0 * (batch.div_ceil(16) * steps) as f64 * weights * f
    };
    let dram = 2.0 * bt * (10.0 * h + 3.0 * gh + 2.0 * d) * f + 2.0 * bt * plen * f;
    (flops, l2, dram)
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
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_or((f64::NAN, f64::NAN), |p| p.install(gemm_gflops));
    let all = gemm_gflops();
    println!(
        "\nfixed-order GEMM (gemm_nn, 16 × 192 · 192 × 192 f32, B in L2; plain multiply and add): \
         {:.1} GFLOP/s on one thread ({:.1} per CPU second), {:.1} GFLOP/s on {} threads at once \
         ({:.1} per CPU second)",
        one.0,
        one.1,
        all.0,
        rayon::current_num_threads(),
        all.1
    );
    crate::bench_peak::peak_table();
}

/// L2 bandwidth: a triad `a = b + s·c` over 3 × 64 KiB arrays per thread (in L2, not in
/// L1), on every thread at once, best of 5 (bytes read and written per second, all threads).
fn l2_bandwidth_gbs() -> (f64, f64) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let n = 16 << 10;
    let reps = 2000;
    let mut best = f64::MAX;
    let mut best_cpu = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        let cpu: f64 = (0..threads)
            .into_par_iter()
            .map(|_| {
                let b = vec![1.0f32; n];
                let c = vec![2.0f32; n];
                let mut a = vec![0.0f32; n];
                let c0 = thread_cpu_ms();
                for r in 0..reps {
                    let s = std::hint::black_box(0.5 + r as f32 * 1e-9);
                    for ((x, &y), &z) in a.iter_mut().zip(&b).zip(&c) {
                        *x = y + s * z;
                    }
                    std::hint::black_box(a.as_mut_slice());
                }
                thread_cpu_ms() - c0
            })
            .sum();
        best = best.min(t0.elapsed().as_secs_f64());
        best_cpu = best_cpu.min(cpu / 1e3);
    }
    let bytes = (threads * reps * 3 * n * 4) as f64;
    (bytes / best / 1e9, bytes / best_cpu / 1e9)
}

/// The GEMM rate of the engine's fixed-order kernel at the shape of one chunk of the batched
/// non-plastic step at hidden 192 (`16 × 192 · 192 × 192`, `B` in L2), on every thread at
/// once, best of 5, in GFLOP/s (2 per multiply-add).
pub(crate) fn gemm_gflops() -> (f64, f64) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let (m, n, k) = (16usize, 192usize, 192usize);
    let reps = 400;
    let mut best = f64::MAX;
    let mut best_cpu = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        let cpu: f64 = (0..threads)
            .into_par_iter()
            .map(|_| {
                let a = vec![0.5f32; m * k];
                let b = vec![0.25f32; k * n];
                let mut c = vec![0.0f32; m * n];
                let c0 = thread_cpu_ms();
                for _ in 0..reps {
                    plastic::matmul::gemm_nn(&mut c, n, &a, k, &b, m, n, k);
                    std::hint::black_box(&mut c);
                }
                thread_cpu_ms() - c0
            })
            .sum();
        best = best.min(t0.elapsed().as_secs_f64());
        best_cpu = best_cpu.min(cpu / 1e3);
    }
    let flops = (threads * reps * 2 * m * n * k) as f64;
    (flops / best / 1e9, flops / best_cpu / 1e9)
}

/// Sustained memory bandwidth of a triad `a = b + s·c` over 3 × 64 MiB arrays, split over
/// the thread pool, best of 5 (bytes read and written per second of wall time and per
/// second of CPU time).
fn stream_bandwidth_gbs() -> (f64, f64) {
    use rayon::prelude::*;
    let n = 16 << 20;
    let b = vec![1.0f32; n];
    let c = vec![2.0f32; n];
    let mut a = vec![0.0f32; n];
    let mut best = f64::MAX;
    let mut best_cpu = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        let c0 = cpu_ms();
        a.par_chunks_mut(1 << 16)
            .zip(b.par_chunks(1 << 16))
            .zip(c.par_chunks(1 << 16))
            .for_each(|((a, b), c)| {
                for k in 0..a.len() {
                    a[k] = b[k] + 0.5 * c[k];
                }
            });
        best = best.min(t0.elapsed().as_secs_f64());
        best_cpu = best_cpu.min((cpu_ms() - c0) / 1e3);
    }
    std::hint::black_box(&a);
    let bytes = (3 * n * 4) as f64;
    (bytes / best / 1e9, bytes / best_cpu / 1e9)
}
