//! `plastic sweep`: the paper's named experiments, run locally (`--jobs N`) or as a Slurm
//! job array (`--slurm`), whole or a subset (`--only factor=v1,v2`). A sweep skips finished
//! runs and resumes unfinished ones, so it can be stopped and restarted at any time. The
//! evaluation sweeps (`*_test`) evaluate the finished runs of a training sweep.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use plastic::run::config::RunConfig;
use plastic::run::sweep::{self, EvalRun, EvalSweep, Only, Sweep, SweepRun, EVAL_SWEEPS, SWEEPS};
use plastic::run::{self, Start};
use plastic::Rule;

use crate::progress::Progress;

// the image sweeps (`fsc_resnet`, issue 10)
mod image;

/// Arguments of `plastic sweep`.
#[derive(clap::Args)]
pub struct SweepArgs {
    /// The sweep to run (see --list); `fsc` and `fsc_resnet` are the image experiments
    /// (docs/fsc.md §6).
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// List the sweeps with their number of runs and estimated time (with NAME: that sweep,
    /// or the subset --only selects, and its runs).
    #[arg(long)]
    list: bool,
    /// Run only the runs whose FACTOR is one of the values, e.g. --only rnn=lstm --only
    /// plasticity=gradient,hebbian (repeatable; the paper's protocol otherwise unchanged).
    #[arg(long, value_name = "FACTOR=V1,V2", requires = "name")]
    only: Vec<String>,
    /// Folder of the sweeps; this one goes to OUT/NAME/.
    #[arg(long, default_value = "runs/sweeps")]
    out: PathBuf,
    /// Training steps per run instead of the paper's (for quick looks).
    #[arg(long)]
    steps: Option<usize>,
    /// Seeds per configuration instead of the paper's.
    #[arg(long)]
    seeds: Option<usize>,
    /// Overrides applied to every run, e.g. --set test_batch=20 (repeatable; they are part of
    /// each run's configuration, so a sweep folder never mixes settings).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Runs at once on this machine (each gets cores/N threads).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Submit a Slurm job array (one task per unfinished run) instead of running locally.
    #[arg(long)]
    slurm: bool,
    /// Slurm partition.
    #[arg(long, requires = "slurm")]
    partition: Option<String>,
    /// Slurm time limit per run: hours (e.g. 24 or 1.5), or one of Slurm's formats MM:SS,
    /// HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
    #[arg(long, requires = "slurm", default_value = "24")]
    time: String,
    /// CPUs per Slurm task (also the run's thread count).
    #[arg(long, requires = "slurm", default_value_t = 2)]
    cpus: usize,
    /// Memory per Slurm task (default: 4G; for the image sweeps, the largest estimated
    /// peak of the runs submitted, with a quarter more as margin).
    #[arg(long, requires = "slurm")]
    mem: Option<String>,
}

pub fn run(args: SweepArgs) -> Result<()> {
    if args.list {
        return list(&args);
    }
    let name = args
        .name
        .as_deref()
        .expect("clap requires a name without --list");
    if let Some(eval) = sweep::find_eval(name) {
        return run_eval(&args, eval);
    }
    if let Some(images) = plastic_vision::sweep::find(name) {
        return image::run(&args, images);
    }
    let sweep = sweep::find(name)?;
    if args.slurm {
        slurm_time(&args.time)?;
    }
    let runs = selected_runs(&args, sweep)?;
    let root = args.out.join(name);
    for r in &runs {
        run::prepare(&root.join(&r.name), &r.config)?;
    }
    let todo: Vec<&SweepRun> = runs
        .iter()
        .filter(|r| !run::is_finished(&root.join(&r.name)))
        .collect();
    println!(
        "sweep {name}{}: {} runs in {}, {} finished, {} to do",
        subset_label(&args),
        runs.len(),
        root.display(),
        runs.len() - todo.len(),
        todo.len()
    );
    if todo.is_empty() {
        return Ok(());
    }
    if args.slurm {
        let mem = args.mem.clone().unwrap_or_else(|| "4G".into());
        submit_slurm(&args, name, &root, &todo, &mem)
    } else {
        run_local(&root, &todo, args.jobs)
    }
}

/// " (subset: rnn=lstm plasticity=gradient,hebbian)", or nothing without --only.
fn subset_label(args: &SweepArgs) -> String {
    if args.only.is_empty() {
        String::new()
    } else {
        format!(" (subset: {})", args.only.join(" "))
    }
}

/// The runs of a training sweep that the arguments ask for (--seeds, --steps, --set, --only).
fn selected_runs(args: &SweepArgs, sweep: &Sweep) -> Result<Vec<SweepRun>> {
    let only = Only::parse(&args.only, sweep.factor_values())?;
    let mut runs = sweep.runs(args.seeds, args.steps)?;
    runs.retain(|r| only.selects(&r.factors));
    for r in &mut runs {
        r.config = r.config.with_overrides(&args.set)?;
    }
    Ok(runs)
}

/// The evaluations of an evaluation sweep that the arguments ask for.
fn selected_evals(args: &SweepArgs, eval: &EvalSweep) -> Result<Vec<EvalRun>> {
    let only = Only::parse(&args.only, &eval.factor_values())?;
    let mut runs = eval.runs(args.seeds, &args.set)?;
    runs.retain(|r| only.selects(&r.factors));
    Ok(runs)
}

fn run_eval(args: &SweepArgs, eval: &EvalSweep) -> Result<()> {
    if args.steps.is_some() {
        bail!(
            "--steps has no meaning for the evaluation sweep {}: it trains nothing",
            eval.name
        );
    }
    if args.slurm {
        bail!(
            "the evaluation sweep {} runs forward passes only (minutes per run): run it \
             locally, without --slurm",
            eval.name
        );
    }
    let runs = selected_evals(args, eval)?;
    let trained_root = args.out.join(eval.trained);
    let root = args.out.join(eval.name);
    let (ready, untrained): (Vec<&EvalRun>, Vec<&EvalRun>) = runs
        .iter()
        .partition(|r| run::is_finished(&trained_root.join(&r.trained_run)));
    let mut missing: Vec<&str> = untrained.iter().map(|r| r.trained_run.as_str()).collect();
    missing.dedup();
    let train_first = format!(
        "`plastic sweep {} --out {}{}{}`",
        eval.trained,
        args.out.display(),
        args.seeds
            .map(|n| format!(" --seeds {n}"))
            .unwrap_or_default(),
        args.only
            .iter()
            .filter(|o| !o.starts_with("eval_"))
            .map(|o| format!(" --only {o}"))
            .collect::<String>()
    );
    if ready.is_empty() {
        bail!(
            "{} evaluates the finished runs of the training sweep {}, and none of the {} it \
             needs has finished in {}; train them first: {train_first}",
            eval.name,
            eval.trained,
            missing.len(),
            trained_root.display()
        );
    }
    if !missing.is_empty() {
        println!(
            "{} runs of {} have not finished and are left out ({}); {train_first} trains them",
            missing.len(),
            eval.trained,
            missing.join(", ")
        );
    }
    let todo: Vec<&EvalRun> = ready
        .into_iter()
        .filter(|r| !r.is_finished(&root.join(&r.name)))
        .collect();
    println!(
        "sweep {}{}: {} evaluations in {}, {} done, {} to do",
        eval.name,
        subset_label(args),
        runs.len() - untrained.len(),
        root.display(),
        runs.len() - untrained.len() - todo.len(),
        todo.len()
    );
    parallel(&todo, args.jobs, |r, _| {
        let res = r.evaluate(&trained_root.join(&r.trained_run), &root.join(&r.name))?;
        Ok(format!("{}: test loss {:.5}", r.name, res.report.test_loss))
    })
}

fn list(args: &SweepArgs) -> Result<()> {
    println!("{:<40} {:>5} {:>12}  what", "sweep", "runs", "est. time");
    if let Some(name) = &args.name {
        if let Some(images) = plastic_vision::sweep::find(name) {
            image::list(args, images)?;
        } else if let Some(eval) = sweep::find_eval(name) {
            let runs = selected_evals(args, eval)?;
            let secs: f64 = runs.iter().map(|r| estimate_eval_seconds(&r.config)).sum();
            row(eval.name, runs.len(), secs, eval.about);
            for r in &runs {
                println!("  {}", r.name);
            }
        } else {
            let sweep = sweep::find(name)?;
            let runs = selected_runs(args, sweep)?;
            let secs: f64 = runs.iter().map(|r| estimate_seconds(&r.config)).sum();
            row(sweep.name, runs.len(), secs, sweep.about);
            for r in &runs {
                println!("  {}  (~{})", r.name, human(estimate_seconds(&r.config)));
            }
        }
        if !args.only.is_empty() {
            println!("subset: {}", args.only.join(" "));
        }
    } else {
        for s in SWEEPS {
            let runs = s.runs(args.seeds, args.steps)?;
            let secs: f64 = runs.iter().map(|r| estimate_seconds(&r.config)).sum();
            row(s.name, runs.len(), secs, s.about);
        }
        for e in EVAL_SWEEPS {
            let runs = e.runs(args.seeds, &[])?;
            let secs: f64 = runs.iter().map(|r| estimate_eval_seconds(&r.config)).sum();
            row(e.name, runs.len(), secs, e.about);
        }
        image::list_rows(args)?;
    }
    println!(
        "\nestimated for one run at a time on 2 cores; --steps, --seeds and --only change both \
         columns"
    );
    Ok(())
}

fn human(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

fn row(name: &str, runs: usize, secs: f64, about: &str) {
    println!("{name:<40} {runs:>5} {:>12}  {about}", human(secs));
}

/// Seconds per plastic weight and step of a training step with batch 1, measured with
/// `plastic bench` on the 2-core machine of the README (gradient, Hebbian, none).
const NS_PER_WEIGHT_STEP: [(Rule, f64); 3] = [
    (Rule::Gradient, 0.95),
    (Rule::Hebbian, 0.7),
    (Rule::None, 0.25),
];

/// The estimated seconds of one training step of `cfg` (forward and backward).
fn step_seconds(cfg: &RunConfig) -> f64 {
    let c = cfg.network_config();
    let (i, h, d) = (c.input_size, c.hidden_size, c.full_output_size());
    let gh = c.gates() * h;
    let weights = (i * h + 2 * h * gh + h * d) as f64;
    let ns = NS_PER_WEIGHT_STEP
        .iter()
        .find(|(r, _)| *r == c.plasticity)
        .map_or(1.0, |(_, ns)| *ns);
    ns * 1e-9 * weights * (cfg.train.batch_size * cfg.task.steps()) as f64
}

/// A rough estimate of a training run's wall-clock seconds on the README's 2-core machine.
pub fn estimate_seconds(cfg: &RunConfig) -> f64 {
    let logs = (cfg.train.max_batch / cfg.train.log_every + 2) as f64;
    // validation and test: forward passes, about a third of a training step each
    step_seconds(cfg) * (cfg.train.max_batch as f64 + logs * cfg.train.test_batch as f64 / 3.0)
}

/// A rough estimate of one evaluation's seconds (the test set's forward passes).
pub fn estimate_eval_seconds(cfg: &RunConfig) -> f64 {
    step_seconds(cfg) * cfg.train.test_batch as f64 / 3.0
}

fn run_local(root: &Path, todo: &[&SweepRun], jobs: usize) -> Result<()> {
    parallel(todo, jobs, |r, alone| {
        let dir = root.join(&r.name);
        let sum = if alone {
            let mut obs = Progress::new(&r.name);
            let out = run::train(&dir, Start::Resume, &mut obs);
            obs.finish();
            out?
        } else {
            run::train(&dir, Start::Resume, &mut run::Silent)?
        };
        Ok(format!(
            "{}: test loss {:.5} ({:.0} s)",
            r.name, sum.test_loss, sum.elapsed_s
        ))
    })
}

/// Something a sweep does per run, named for progress and failure reports.
trait Named {
    fn name(&self) -> &str;
}
impl Named for &SweepRun {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for &EvalRun {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Does `work` for every item, `jobs` at a time on this machine (each with cores/jobs
/// threads; `alone` when one at a time), reporting each result; fails at the end if any
/// failed, naming them.
fn parallel<T: Named + Sync>(
    todo: &[T],
    jobs: usize,
    work: impl Fn(&T, bool) -> Result<String> + Sync,
) -> Result<()> {
    if jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let jobs = jobs.min(todo.len()).max(1);
    let threads = (rayon::current_num_threads() / jobs).max(1);
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("thread pool");
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = todo.get(k) else { break };
                    match pool.install(|| work(item, jobs == 1)) {
                        Ok(line) => println!("[{}/{}] {line}", k + 1, todo.len()),
                        Err(e) => {
                            eprintln!(
                                "[{}/{}] {}: failed: {}",
                                k + 1,
                                todo.len(),
                                item.name(),
                                crate::message(&e)
                            );
                            failures.lock().unwrap().push(item.name().to_string());
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    if !failures.is_empty() {
        bail!("{} runs failed: {}", failures.len(), failures.join(", "));
    }
    Ok(())
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// Slurm's time formats, for error messages.
const SLURM_TIME_FORMATS: &str = "hours as a number (e.g. 24 or 1.5), or one of Slurm's \
     formats MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (e.g. 2-00:00:00)";

/// The `#SBATCH --time` value of `--time`: hours (a positive finite number, at most a year)
/// become HH:MM:SS; Slurm's own formats pass through after a check of their fields.
fn slurm_time(t: &str) -> Result<String> {
    let bad = || anyhow::anyhow!("--time `{t}` is not a time limit; give {SLURM_TIME_FORMATS}");
    let t = t.trim();
    if !t.contains([':', '-']) {
        let h: f64 = t.parse().map_err(|_| bad())?;
        if !(h.is_finite() && h > 0.0 && h <= 24.0 * 366.0) {
            return Err(bad());
        }
        let mins = (h * 60.0).ceil() as u64;
        return Ok(format!("{:02}:{:02}:00", mins / 60, mins % 60));
    }
    let number = |s: &str| -> Result<u64> {
        if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (days, clock) = match t.split_once('-') {
        Some((d, rest)) => (Some(number(d)?), rest),
        None => (None, t),
    };
    let parts: Vec<u64> = clock.split(':').map(number).collect::<Result<_>>()?;
    // without days: MM:SS or HH:MM:SS; with days: HH, HH:MM or HH:MM:SS
    let fields_ok = match (days, parts.len()) {
        (None, 2) => parts[1] < 60,
        (None, 3) | (Some(_), 3) => parts[1] < 60 && parts[2] < 60,
        (Some(_), 1) => true,
        (Some(_), 2) => parts[1] < 60,
        _ => false,
    };
    let total = days.unwrap_or(0) * 24 * 60 + parts.iter().sum::<u64>();
    if !fields_ok || total == 0 {
        return Err(bad());
    }
    Ok(t.to_string())
}

/// Submits one Slurm array task per run folder `root/NAME` of `todo`, each running
/// `plastic train --resume` on its folder (which trains whichever task the folder holds),
/// with `mem` per task.
fn submit_slurm<T: Named>(
    args: &SweepArgs,
    name: &str,
    root: &Path,
    todo: &[T],
    mem: &str,
) -> Result<()> {
    let sbatch = find_on_path("sbatch").context(
        "--slurm needs Slurm's `sbatch` on PATH, and it is not there; install Slurm's client tools \
         or run the sweep locally (without --slurm, optionally with --jobs N)",
    )?;
    let exe = std::env::current_exe().context("locating the plastic binary")?;
    let slurm_dir = root.join("slurm");
    std::fs::create_dir_all(&slurm_dir)
        .with_context(|| format!("creating {}", slurm_dir.display()))?;
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let list: String = todo
        .iter()
        .map(|r| format!("{}\n", abs(&root.join(r.name())).display()))
        .collect();
    let runs_txt = abs(&slurm_dir.join("runs.txt"));
    plastic::io::write_atomic(&runs_txt, list.as_bytes())?;
    let mut script = String::from("#!/bin/bash\n");
    script += &format!("#SBATCH --job-name=plastic-{name}\n");
    script += &format!("#SBATCH --array=0-{}\n", todo.len() - 1);
    script += &format!("#SBATCH --cpus-per-task={}\n", args.cpus);
    script += &format!("#SBATCH --mem={mem}\n");
    script += &format!("#SBATCH --time={}\n", slurm_time(&args.time)?);
    if let Some(p) = &args.partition {
        script += &format!("#SBATCH --partition={p}\n");
    }
    script += &format!("#SBATCH --output={}/%A_%a.out\n", abs(&slurm_dir).display());
    script += "set -euo pipefail\n";
    script += &format!(
        "RUN=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" '{}')\n",
        runs_txt.display()
    );
    script += &format!(
        "exec '{}' --threads {} train --resume \"$RUN\"\n",
        exe.display(),
        args.cpus
    );
    let job = slurm_dir.join("job.sbatch");
    plastic::io::write_atomic(&job, script.as_bytes())?;
    let out = std::process::Command::new(&sbatch)
        .arg("--parsable")
        .arg(&job)
        .output()
        .with_context(|| format!("running {}", sbatch.display()))?;
    if !out.status.success() {
        bail!(
            "sbatch refused the job array: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .to_string();
    println!(
        "submitted job {id} ({} tasks); script {}, logs in {}; rerun this command to resubmit unfinished runs",
        todo.len(),
        job.display(),
        slurm_dir.display()
    );
    Ok(())
}
