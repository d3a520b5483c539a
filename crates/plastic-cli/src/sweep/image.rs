//! The image sweeps of `plastic_vision::sweep` (`fsc`, `fsc_resnet`) under `plastic sweep`:
//! the same options as the other sweeps (`--list`, `--only`, `--seeds`, `--steps`, `--set`,
//! `--jobs`, `--slurm`), with each run's estimated time and memory in `--list`; before
//! anything runs, one check of the data files of every run, and of the memory (against the
//! machine's available memory, or against `--mem` for Slurm, whose default is the largest
//! estimate with a quarter more).

use std::path::Path;

use anyhow::{bail, Result};
use plastic::run::memory::{available, check_skipped, SKIP_ENV};
use plastic::run::sweep::Only;
use plastic_vision::memory::human_bytes;
use plastic_vision::run::{self as fsc_run, Start};
use plastic_vision::sweep::{FscSweep, FscSweepRun, FSC_SWEEPS};

use super::{human, parallel, row, subset_label, Named, SweepArgs};

impl Named for &FscSweepRun {
    fn name(&self) -> &str {
        &self.name
    }
}

/// The runs the arguments select.
fn selected(args: &SweepArgs, sweep: &FscSweep) -> Result<Vec<FscSweepRun>> {
    let only = Only::parse(&args.only, sweep.factor_values())?;
    let mut runs = sweep.runs(args.seeds, args.steps, &args.set)?;
    runs.retain(|r| only.selects(&r.factors));
    Ok(runs)
}

/// The estimated seconds of a run on an otherwise idle 2-core machine.
fn estimate_seconds(r: &FscSweepRun) -> f64 {
    plastic_vision::sweep::estimate_seconds(&r.config)
}

fn threads_per_run(args: &SweepArgs) -> usize {
    if args.slurm {
        args.cpus
    } else {
        (rayon::current_num_threads() / args.jobs.max(1)).max(1)
    }
}

/// `plastic sweep NAME --list` for an image sweep: every run with its memory and time.
pub fn list(args: &SweepArgs, sweep: &FscSweep) -> Result<()> {
    let runs = selected(args, sweep)?;
    let threads = threads_per_run(args);
    let secs: f64 = runs.iter().map(estimate_seconds).sum();
    row(sweep.name, runs.len(), secs, sweep.about);
    for r in &runs {
        println!(
            "  {:<32} peak ~{:>10}  (~{}; H {})",
            r.name,
            human_bytes(r.memory(threads).total()),
            human(estimate_seconds(r)),
            r.config.hidden()
        );
    }
    if let Some(r) = runs.first() {
        println!("memory of {}: {}", r.name, r.memory(threads));
    }
    Ok(())
}

/// The rows of the image sweeps in `plastic sweep --list`.
pub fn list_rows(args: &SweepArgs) -> Result<()> {
    for s in FSC_SWEEPS {
        let runs = s.runs(args.seeds, args.steps, &args.set)?;
        let secs: f64 = runs.iter().map(estimate_seconds).sum();
        row(s.name, runs.len(), secs, s.about);
    }
    Ok(())
}

/// Slurm's `--mem` (`4G`, `4000M`, `16GB`, a bare number in MB) in bytes.
fn slurm_mem_bytes(mem: &str) -> Result<f64> {
    let m = mem.trim().to_ascii_uppercase();
    let m = m.strip_suffix('B').unwrap_or(&m);
    let (number, unit) = match m.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&m[..i], &m[i..]),
        None => (m, "M"),
    };
    let scale = match unit {
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => bail!("--mem `{mem}` is not a memory size; give e.g. 16G or 4000M"),
    };
    match number.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v * scale),
        _ => bail!("--mem `{mem}` is not a memory size; give e.g. 16G or 4000M"),
    }
}

/// `plastic sweep NAME` for an image sweep: prepares every run's folder, then trains the
/// unfinished ones here or as a Slurm array.
pub fn run(args: &SweepArgs, sweep: &FscSweep) -> Result<()> {
    let runs = selected(args, sweep)?;
    let root = args.out.join(sweep.name);
    let threads = threads_per_run(args);
    let need = runs
        .iter()
        .map(|r| r.memory(threads).total())
        .fold(0.0, f64::max);
    let slurm_mem = if args.slurm {
        super::slurm_time(&args.time)?;
        match &args.mem {
            Some(m) => {
                if need > slurm_mem_bytes(m)? {
                    bail!(
                        "the largest selected run needs an estimated {} (see --list), more \
                         than --mem {m}; ask for more, e.g. --mem {:.0}G, or leave --mem out \
                         (the largest estimate with a quarter more)",
                        human_bytes(need),
                        (need * 1.25 / (1u64 << 30) as f64).ceil()
                    );
                }
                m.clone()
            }
            None => format!("{}M", (1.25 * need / (1u64 << 20) as f64).ceil()),
        }
    } else {
        String::new()
    };
    if !args.slurm && !check_skipped() {
        if let Some(avail) = available() {
            let jobs = args.jobs.max(1).min(runs.len().max(1)) as f64;
            if need * jobs > avail {
                bail!(
                    "{} run(s) at once need an estimated {} each (see --list), more than the \
                     {} this machine has available; use fewer --jobs, --only a smaller data \
                     set, --slurm, or set {SKIP_ENV}=1 to try anyway",
                    jobs,
                    human_bytes(need),
                    human_bytes(avail)
                );
            }
        }
    }
    let todo: Vec<&FscSweepRun> = runs
        .iter()
        .filter(|r| !FscSweepRun::is_finished(&root.join(&r.name)))
        .collect();
    // one error for a missing data set, before any folder is made or run started
    plastic_vision::sweep::check_data(todo.iter().map(|r| &r.config))?;
    for r in &runs {
        r.prepare(&root.join(&r.name))?;
    }
    println!(
        "sweep {}{}: {} runs in {}, {} finished, {} to do",
        sweep.name,
        subset_label(args),
        runs.len(),
        root.display(),
        runs.len() - todo.len(),
        todo.len()
    );
    if todo.is_empty() {
        return Ok(());
    }
    if args.slurm {
        return super::submit_slurm(args, sweep.name, &root, &todo, &slurm_mem);
    }
    train_local(&root, &todo, args.jobs)
}

fn train_local(root: &Path, todo: &[&FscSweepRun], jobs: usize) -> Result<()> {
    parallel(todo, jobs, |r, alone| {
        let dir = root.join(&r.name);
        let s = if alone {
            crate::fsc::train_dir(&dir, Start::Resume, &r.name)?
        } else {
            fsc_run::train_fsc(&dir, Start::Resume, &mut fsc_run::Silent)?
        };
        Ok(format!(
            "{}: test accuracy {:.2}% ± {:.2}% ({:.0} s)",
            r.name, s.test_acc, s.test_acc_ci95, s.elapsed_s
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_memory_sizes_parse() {
        assert_eq!(slurm_mem_bytes("4G").unwrap(), 4.0 * (1u64 << 30) as f64);
        assert_eq!(slurm_mem_bytes("16GB").unwrap(), 16.0 * (1u64 << 30) as f64);
        assert_eq!(
            slurm_mem_bytes("4000").unwrap(),
            4000.0 * (1u64 << 20) as f64
        );
        assert_eq!(
            slurm_mem_bytes("512m").unwrap(),
            512.0 * (1u64 << 20) as f64
        );
        for bad in ["", "G", "-1G", "4X", "lots"] {
            assert!(slurm_mem_bytes(bad).is_err(), "{bad}");
        }
    }
}
