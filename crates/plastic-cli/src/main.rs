//! `plastic`: train, evaluate and benchmark plastic RNNs from the command line. A thin
//! layer over the `plastic` library: argument parsing, progress display and figures.

mod analyze;
mod bench;
mod fsc; // fsc hook (issue 9)
mod plot;
mod progress;
mod sweep;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use plastic::run::{self, files, RunConfig, Start};

#[derive(Parser)]
#[command(
    name = "plastic",
    version,
    about = "Plastic RNNs with Hebbian and gradient-based plasticity (Duan et al., ICLR 2023)"
)]
struct Cli {
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Meta-train a network on a task (or resume a run with --resume DIR).
    Train(TrainArgs),
    /// Evaluate a trained run, optionally on a changed task, and write η(t) along the episode.
    Eval {
        /// The run folder.
        dir: PathBuf,
        /// Task overrides, e.g. --set delay=60 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Where to write the JSON report (default: DIR/eval[-overrides].json).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The reference's demo: cue-reward, RNN × {gradient, hebbian, none}, 5000 steps each,
    /// then a figure of validation loss against step.
    Demo {
        /// Folder of the three runs and the figure.
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// Training steps per run.
        #[arg(long, default_value_t = 5000)]
        steps: usize,
        /// Seed of the three runs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Start over instead of reusing finished or resuming unfinished runs.
        #[arg(long)]
        overwrite: bool,
    },
    /// Time training steps of the reference's benchmark configurations.
    Bench(bench::BenchArgs),
    /// Run one of the paper's experiments (all its runs), locally or on Slurm.
    Sweep(sweep::SweepArgs),
    /// Figures and tables of a sweep's finished runs.
    Analyze(analyze::AnalyzeArgs),
    /// fsc hook (issue 9): one-shot image classification on the procedural data set, about
    /// ten minutes on two cores; accuracy against the raw-pixel 1-NN baseline, and a figure.
    FscDemo(fsc::DemoArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Task: cue-reward, seq-reproduction, regression or fsc.
    #[arg(long, required_unless_present = "resume")]
    task: Option<String>,
    /// Cell: rnn or lstm.
    #[arg(long)]
    rnn: Option<String>,
    /// Plasticity rule: gradient, hebbian or none.
    #[arg(long)]
    plasticity: Option<String>,
    /// Training steps (max_batch).
    #[arg(long)]
    steps: Option<usize>,
    /// Seed of every random number of the run.
    #[arg(long)]
    seed: Option<u64>,
    /// Run folder (default: runs/TASK-RNN-PLASTICITY-sSEED).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A configuration file (TOML) to start from instead of the task's defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides of any configuration key, e.g. --set hidden_size=64 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Replace an existing run folder.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Continue the killed or unfinished run in this folder.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["task", "config", "set", "rnn", "plasticity", "steps", "seed"])]
    resume: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = real_main(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting up the thread pool")?;
    }
    match cli.command {
        Command::Train(args) => train(args),
        Command::Eval { dir, set, out } => eval(&dir, &set, out),
        Command::Demo {
            out,
            steps,
            seed,
            overwrite,
        } => demo(&out, steps, seed, overwrite),
        Command::Bench(args) => bench::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::FscDemo(args) => fsc::demo(args), // fsc hook (issue 9)
    }
}

/// The configuration a `train` command asks for.
fn resolve_config(args: &TrainArgs) -> Result<RunConfig> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            RunConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => RunConfig::defaults(args.task.as_deref().unwrap_or_default())?,
    };
    if let Some(task) = &args.task {
        if task != cfg.task.name() {
            bail!(
                "--task {task} disagrees with the configuration file's task {}",
                cfg.task.name()
            );
        }
    }
    let mut overrides = Vec::new();
    if let Some(v) = &args.rnn {
        overrides.push(format!("rnn={v}"));
    }
    if let Some(v) = &args.plasticity {
        overrides.push(format!("plasticity={v}"));
    }
    if let Some(v) = args.steps {
        overrides.push(format!("max_batch={v}"));
    }
    if let Some(v) = args.seed {
        overrides.push(format!("seed={v}"));
    }
    overrides.extend(args.set.iter().cloned());
    cfg = cfg.with_overrides(&overrides)?;
    Ok(cfg)
}

fn default_dir(cfg: &RunConfig) -> PathBuf {
    PathBuf::from("runs").join(format!(
        "{}-{}-{}-s{}",
        cfg.task.name(),
        cfg.network.rnn,
        cfg.network.plasticity,
        cfg.seed
    ))
}

fn train(args: TrainArgs) -> Result<()> {
    // fsc hook (issue 9): one-shot image classification has its own configuration and trainer
    if fsc::wants(args.task.as_deref(), args.resume.as_deref()) {
        return fsc::train(fsc::TrainRequest {
            config: args.config,
            rnn: args.rnn,
            plasticity: args.plasticity,
            steps: args.steps,
            seed: args.seed,
            set: args.set,
            out: args.out,
            overwrite: args.overwrite,
            resume: args.resume,
        });
    }
    let (dir, start) = match &args.resume {
        Some(dir) => (dir.clone(), Start::Resume),
        None => {
            let cfg = resolve_config(&args)?;
            let dir = args.out.clone().unwrap_or_else(|| default_dir(&cfg));
            (
                dir,
                Start::New {
                    config: Box::new(cfg),
                    overwrite: args.overwrite,
                },
            )
        }
    };
    let label = dir.display().to_string();
    let mut obs = progress::Progress::new(&label);
    let summary = run::train(&dir, start, &mut obs)?;
    obs.finish();
    println!(
        "{}: test loss {:.5} (best validation {:.5} at step {}), {:.0} s; results in {}",
        label,
        summary.test_loss,
        summary.best_val_loss,
        summary.best_step,
        summary.elapsed_s,
        dir.display()
    );
    Ok(())
}

fn eval(dir: &Path, set: &[String], out: Option<PathBuf>) -> Result<()> {
    let report = run::eval::evaluate(dir, set)?;
    let out = out.unwrap_or_else(|| {
        let suffix: String = set
            .iter()
            .map(|s| format!("-{}", s.replace(['=', '/'], "_")))
            .collect();
        dir.join(format!("eval{suffix}.json"))
    });
    let json = serde_json::to_string_pretty(&report)?;
    plastic::io::write_atomic(&out, json.as_bytes())?;
    println!(
        "test loss {:.5} over {} batches; report in {}",
        report.test_loss,
        report.batches,
        out.display()
    );
    let eta = &report.applied_rate.mean;
    if !eta.is_empty() {
        let show: Vec<String> = eta
            .iter()
            .step_by((eta.len() / 10).max(1))
            .map(|v| format!("{v:.4}"))
            .collect();
        println!(
            "applied η(t), every {} steps: {}",
            (eta.len() / 10).max(1),
            show.join(" ")
        );
    }
    Ok(())
}

/// The demo's three runs: (rule, hidden size), non-plastic at 1.5× the hidden size.
const DEMO_RUNS: [(&str, usize); 3] = [("gradient", 128), ("hebbian", 128), ("none", 192)];

fn demo(out: &Path, steps: usize, seed: u64, overwrite: bool) -> Result<()> {
    let mut series = Vec::new();
    for (rule, hidden) in DEMO_RUNS {
        let dir = out.join(rule);
        let cfg = RunConfig::defaults("cue-reward")?.with_overrides(&[
            "rnn=rnn".to_string(),
            format!("plasticity={rule}"),
            format!("hidden_size={hidden}"),
            format!("max_batch={steps}"),
            format!("seed={seed}"),
        ])?;
        let start = if !overwrite && dir.join(files::CONFIG).exists() {
            let existing = run::read_config(&dir)?;
            if existing != cfg {
                bail!(
                    "{} holds a run with a different configuration; use --overwrite or another --out",
                    dir.display()
                );
            }
            Start::Resume
        } else {
            Start::New {
                config: Box::new(cfg),
                overwrite,
            }
        };
        let label = format!("demo {rule}");
        let mut obs = progress::Progress::new(&label);
        let summary = run::train(&dir, start, &mut obs)?;
        obs.finish();
        let rows = run::read_progress(&dir)?;
        let last = rows.last().map(|r| r.val_loss).unwrap_or(f64::NAN);
        println!(
            "{label}: validation loss {last:.4} at step {steps}, test loss {:.4}, {:.0} s",
            summary.test_loss, summary.elapsed_s
        );
        series.push(plot::Series {
            label: format!("{rule} (hidden {hidden})"),
            points: rows.iter().map(|r| (r.step as f64, r.val_loss)).collect(),
            band: None,
        });
    }
    let (png, svg) = (out.join("demo.png"), out.join("demo.svg"));
    plot::line_chart(
        &plot::LineChart {
            title: "Cue-reward association, RNN: validation loss",
            x_label: "training step",
            y_label: "validation loss (MSE)",
            series: &series,
            log_x: false,
            log_y: false,
        },
        &png,
        &svg,
    )?;
    println!("figure: {} and {}", png.display(), svg.display());
    Ok(())
}
