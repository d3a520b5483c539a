//! `plastic sweep`: the paper's named experiments, run locally (`--jobs N`) or as a Slurm
//! job array (`--slurm`). A sweep skips finished runs and resumes unfinished ones, so it
//! can be stopped and restarted at any time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use plastic::run::sweep::{self, SweepRun, SWEEPS};
use plastic::run::{self, Start};

use crate::progress::Progress;

/// Arguments of `plastic sweep`.
#[derive(clap::Args)]
pub struct SweepArgs {
    /// The sweep to run (see --list).
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// List the sweeps with their number of runs and estimated time.
    #[arg(long)]
    list: bool,
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
    /// Slurm time limit per run, in hours or as HH:MM:SS.
    #[arg(long, requires = "slurm", default_value = "24")]
    time: String,
    /// CPUs per Slurm task (also the run's thread count).
    #[arg(long, requires = "slurm", default_value_t = 2)]
    cpus: usize,
    /// Memory per Slurm task.
    #[arg(long, requires = "slurm", default_value = "4G")]
    mem: String,
}

pub fn run(args: SweepArgs) -> Result<()> {
    if args.list {
        return list(&args);
    }
    let name = args
        .name
        .as_deref()
        .expect("clap requires a name without --list");
    let sweep = sweep::find(name)?;
    let mut runs = sweep.runs(args.seeds, args.steps)?;
    for r in &mut runs {
        r.config = r.config.with_overrides(&args.set)?;
    }
    let root = args.out.join(name);
    for r in &runs {
        run::prepare(&root.join(&r.name), &r.config)?;
    }
    let todo: Vec<&SweepRun> = runs
        .iter()
        .filter(|r| !run::is_finished(&root.join(&r.name)))
        .collect();
    println!(
        "sweep {name}: {} runs in {}, {} finished, {} to do",
        runs.len(),
        root.display(),
        runs.len() - todo.len(),
        todo.len()
    );
    if todo.is_empty() {
        return Ok(());
    }
    if args.slurm {
        submit_slurm(&args, name, &root, &todo)
    } else {
        run_local(&root, &todo, args.jobs)
    }
}

fn list(args: &SweepArgs) -> Result<()> {
    println!("{:<36} {:>5} {:>12}  what", "sweep", "runs", "est. time");
    for s in SWEEPS {
        let runs = s.runs(args.seeds, args.steps)?;
        let secs: f64 = runs
            .iter()
            .map(|r| sweep::estimate_seconds(&r.config))
            .sum();
        println!(
            "{:<36} {:>5} {:>12}  {}",
            s.name,
            runs.len(),
            human(secs),
            s.about
        );
    }
    println!(
        "\nestimated for one run at a time on 2 cores; --steps and --seeds change both columns"
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

fn run_local(root: &Path, todo: &[&SweepRun], jobs: usize) -> Result<()> {
    if jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let jobs = jobs.min(todo.len());
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
                    let Some(r) = todo.get(k) else { break };
                    let dir = root.join(&r.name);
                    let result = pool.install(|| {
                        if jobs == 1 {
                            let mut obs = Progress::new(&r.name);
                            let out = run::train(&dir, Start::Resume, &mut obs);
                            obs.finish();
                            out
                        } else {
                            run::train(&dir, Start::Resume, &mut run::Silent)
                        }
                    });
                    match result {
                        Ok(sum) => println!(
                            "[{}/{}] {}: test loss {:.5} ({:.0} s)",
                            k + 1,
                            todo.len(),
                            r.name,
                            sum.test_loss,
                            sum.elapsed_s
                        ),
                        Err(e) => {
                            eprintln!("[{}/{}] {}: failed: {e}", k + 1, todo.len(), r.name);
                            failures.lock().unwrap().push(r.name.clone());
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

fn slurm_time(t: &str) -> Result<String> {
    if t.contains(':') {
        return Ok(t.to_string());
    }
    let h: f64 = t
        .parse()
        .with_context(|| format!("--time `{t}`: give hours (e.g. 24) or HH:MM:SS"))?;
    if h.is_nan() || h <= 0.0 {
        bail!("--time must be positive");
    }
    let mins = (h * 60.0).ceil() as u64;
    Ok(format!("{:02}:{:02}:00", mins / 60, mins % 60))
}

fn submit_slurm(args: &SweepArgs, name: &str, root: &Path, todo: &[&SweepRun]) -> Result<()> {
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
        .map(|r| format!("{}\n", abs(&root.join(&r.name)).display()))
        .collect();
    let runs_txt = abs(&slurm_dir.join("runs.txt"));
    plastic::io::write_atomic(&runs_txt, list.as_bytes())?;
    let mut script = String::from("#!/bin/bash\n");
    script += &format!("#SBATCH --job-name=plastic-{name}\n");
    script += &format!("#SBATCH --array=0-{}\n", todo.len() - 1);
    script += &format!("#SBATCH --cpus-per-task={}\n", args.cpus);
    script += &format!("#SBATCH --mem={}\n", args.mem);
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
