//! `plastic`: train, evaluate and benchmark plastic RNNs from the command line. A thin
//! layer over the `plastic` library: argument parsing, progress display and figures.

mod analyze;
mod bench;
mod bench_peak;
mod fsc;
mod plot;
mod pretrain;
mod progress;
mod sweep;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

use plastic::run::config::TaskKind;
use plastic::run::{self, files, RunConfig, Start};
use plastic::{CellKind, Rule};

/// One of the library's named choices (cell, rule, task), for typed command-line values.
trait Choice: Copy + Send + Sync + 'static {
    /// Every value.
    const ALL: &'static [Self];
    /// The canonical spelling.
    fn name(self) -> &'static str;
}

macro_rules! choice {
    ($($t:ty),+) => {$(
        impl Choice for $t {
            const ALL: &'static [Self] = <$t>::ALL;
            fn name(self) -> &'static str {
                self.as_str()
            }
        }
    )+};
}
choice!(CellKind, Rule, TaskKind);

/// `--task`: the library's synthetic tasks and `fsc` (one-shot image classification, run by
/// `plastic-vision`, whose configuration and trainer are its own).
fn task_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(
        TaskKind::ALL
            .iter()
            .map(|t| t.as_str())
            .chain([fsc::TASK])
            .chain(pretrain::TASKS),
    )
}

/// The synthetic task named `name` (`None` for `fsc`).
fn synthetic_task(name: &str) -> Option<TaskKind> {
    TaskKind::ALL.iter().copied().find(|t| t.as_str() == name)
}

/// A clap parser straight to the typed value: `--help` and the error for anything else list
/// the valid spellings.
fn choice<T: Choice>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::ALL.iter().map(|v| v.name())).map(|s| {
        *T::ALL
            .iter()
            .find(|v| v.name() == s)
            .expect("clap accepts only the possible values")
    })
}

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
    /// One-shot image classification on the procedural data set: a short fsc run, its test
    /// accuracy against the raw-pixel 1-NN baseline, and a figure.
    FscDemo(fsc::DemoArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Task (not needed with --config, whose file names it).
    #[arg(long, required_unless_present_any = ["resume", "config"], value_parser = task_parser())]
    task: Option<String>,
    /// Cell.
    #[arg(long, value_parser = choice::<CellKind>())]
    rnn: Option<CellKind>,
    /// Plasticity rule.
    #[arg(long, value_parser = choice::<Rule>())]
    plasticity: Option<Rule>,
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
        eprintln!("error: {}", message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, each said once: a cause whose text its parent already shows
/// (an OS error inside "PATH: error") is left out.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out += ": ";
        }
        out += &text;
    }
    out
}

fn real_main(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        // more threads than logical CPUs only costs time (results do not depend on the
        // count), and a huge count spends minutes creating threads: cap it
        let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
        let n = if n > cpus {
            eprintln!(
                "note: --threads {n} is more than the {cpus} logical CPUs here; using {cpus}"
            );
            cpus
        } else {
            n
        };
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
        Command::FscDemo(args) => fsc::demo(args),
    }
}

/// The configuration a `train` command asks for: the file's or the task's defaults, then
/// the typed options, then `--set` overrides (which come last and win).
fn resolve_config(args: &TrainArgs) -> Result<RunConfig> {
    let task = args.task.as_deref().and_then(synthetic_task);
    let mut cfg = match (&args.config, task) {
        (Some(path), task) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let cfg =
                RunConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
            if let Some(task) = task {
                if task != TaskKind::of(&cfg.task) {
                    bail!(
                        "--task {task} disagrees with the configuration file's task {}",
                        cfg.task.name()
                    );
                }
            }
            cfg
        }
        (None, Some(task)) => RunConfig::for_task(task),
        (None, None) => bail!("give --task or --config"),
    };
    if let Some(v) = args.rnn {
        cfg.network.rnn = v;
    }
    if let Some(v) = args.plasticity {
        cfg.network.plasticity = v;
    }
    if let Some(v) = args.steps {
        cfg.train.max_batch = v;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    Ok(cfg.with_overrides(&args.set)?)
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
    // CNN pretraining has its own configuration and trainer too
    if pretrain::wants(
        args.task.as_deref(),
        args.config.as_deref(),
        args.resume.as_deref(),
    ) {
        return pretrain::train(pretrain::TrainRequest {
            task: args.task,
            config: args.config,
            steps: args.steps,
            seed: args.seed,
            set: args.set,
            out: args.out,
            overwrite: args.overwrite,
            resume: args.resume,
            rnn_options: args.rnn.is_some() || args.plasticity.is_some(),
        });
    }
    // one-shot image classification has its own configuration and trainer
    let fsc_config = args.config.as_deref().is_some_and(fsc::is_fsc_config);
    if fsc_config || fsc::wants(args.task.as_deref(), args.resume.as_deref()) {
        return fsc::train(fsc::TrainRequest {
            config: args.config,
            rnn: args.rnn.map(|v| v.as_str().to_string()),
            plasticity: args.plasticity.map(|v| v.as_str().to_string()),
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

fn demo(out: &Path, steps: usize, seed: u64, overwrite: bool) -> Result<()> {
    // the runs of the `cuereward_demo` sweep: RNN x rules, the non-plastic one 1.5x as wide
    let runs = run::sweep::find("cuereward_demo")?.runs(Some(1), Some(steps))?;
    let mut series = Vec::new();
    for r in runs {
        let rule = r.config.network.plasticity;
        let hidden = r.config.network.hidden_size;
        let dir = out.join(rule.as_str());
        let mut cfg = r.config;
        cfg.seed = seed;
        cfg.validate()?;
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
