//! `plastic sweep fsc` (the reference's image experiment, docs/fsc.md §6) end to end on the
//! procedural data set with tiny settings: locally (skip finished, resume unfinished,
//! refuse a changed configuration), through a stand-in for Slurm that runs the array's
//! tasks, `--list` with time and memory per run, the data check, and `plastic analyze fsc`.

mod common;

use common::{err, ok, plastic_with, s, TINY_FSC};

fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("plastic-fsc-sweep-{name}-"))
        .tempdir()
        .unwrap()
}

/// The fsc sweep's CIFAR-FS RNN runs, one seed, on tiny procedural settings: 3 runs (one
/// per rule) of 3 updates each.
fn tiny(out: &str) -> Vec<&str> {
    let mut args = vec![
        "sweep",
        "fsc",
        "--out",
        out,
        "--seeds",
        "1",
        "--steps",
        "2",
        "--only",
        "image_dataset=cifar_fs",
        "--only",
        "rnn=rnn",
    ];
    args.extend(TINY_FSC);
    args
}

const RUNS: [&str; 3] = [
    "cifar_fs-gradient-rnn-s0",
    "cifar_fs-hebbian-rnn-s0",
    "cifar_fs-none-rnn-s0",
];

#[test]
fn fsc_sweep_runs_skips_finished_resumes_unfinished_and_analyzes() {
    let d = tmp("local");
    let mut args = tiny(s(d.path()));
    args.extend(["--jobs", "2"]);
    let out = ok(&args);
    assert!(
        out.contains("3 runs") && out.contains("0 finished, 3 to do"),
        "{out}"
    );
    assert_eq!(out.matches("test accuracy").count(), 3, "{out}");
    let root = d.path().join("fsc");
    for r in RUNS {
        assert!(root.join(r).join("test.json").exists(), "{r}");
        let config = std::fs::read_to_string(root.join(r).join("config.toml")).unwrap();
        assert!(
            config.contains("max_batch = 2") && config.contains("image_dataset = \"procedural\""),
            "{config}"
        );
    }
    // finished runs are skipped
    let out = ok(&tiny(s(d.path())));
    assert!(out.contains("3 finished, 0 to do"), "{out}");
    // an unfinished run (its test result gone, its checkpoint kept) is resumed, alone
    let run = root.join(RUNS[1]);
    std::fs::remove_file(run.join("test.json")).unwrap();
    let progress_before = std::fs::read_to_string(run.join("progress.tsv")).unwrap();
    let out = ok(&tiny(s(d.path())));
    assert!(out.contains("2 finished, 1 to do"), "{out}");
    assert!(run.join("test.json").exists());
    assert_eq!(
        std::fs::read_to_string(run.join("progress.tsv")).unwrap(),
        progress_before,
        "the resumed run continued from its checkpoint instead of starting over"
    );
    // another configuration under the same names is refused
    let mut changed = tiny(s(d.path()));
    changed[7] = "3";
    let e = err(&changed);
    assert!(e.contains("different configuration"), "{e}");
    // the table: one row per configuration (data set as configured, rule, cell)
    let table = ok(&["analyze", "fsc", "--out", s(d.path())]);
    for rule in ["gradient", "hebbian", "none"] {
        assert!(
            table.contains(&format!("| procedural | {rule} | rnn | 1 |")),
            "{table}"
        );
    }
    assert!(root.join("analysis/table.md").exists() && root.join("analysis/table.csv").exists());
}

#[test]
fn fsc_sweep_through_slurm_trains_every_task() {
    let d = tmp("slurm");
    // a stand-in for sbatch that runs every task of the array one after the other
    let bin = d.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let sbatch = bin.join("sbatch");
    std::fs::write(
        &sbatch,
        "#!/bin/sh\njob=\"$2\"\nn=$(grep -c . \"$(dirname \"$job\")/runs.txt\")\ni=0\n\
         while [ $i -lt $n ]; do SLURM_ARRAY_TASK_ID=$i bash \"$job\" >/dev/null 2>&1 || exit 1; \
         i=$((i+1)); done\necho 42\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:/usr/bin:/bin", s(&bin));
    let out_dir = d.path().join("sweeps");
    let mut args = tiny(s(&out_dir));
    args.extend(["--slurm", "--time", "1"]);
    let o = plastic_with(&args, Some(&path));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("submitted job 42 (3 tasks)"), "{stdout}");
    let job = std::fs::read_to_string(out_dir.join("fsc/slurm/job.sbatch")).unwrap();
    assert!(
        job.contains("#SBATCH --array=0-2\n") && job.contains("train --resume"),
        "{job}"
    );
    // the memory request follows the runs' estimate (MB), not the synthetic tasks' 4G
    let mem = job
        .lines()
        .find_map(|l| l.strip_prefix("#SBATCH --mem="))
        .unwrap();
    assert!(mem.ends_with('M'), "{job}");
    for r in RUNS {
        assert!(
            out_dir.join("fsc").join(r).join("test.json").exists(),
            "{r}"
        );
    }
    let o = plastic_with(&args, Some(&path));
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 finished, 0 to do"));
}

#[test]
fn fsc_sweep_lists_time_and_memory_and_checks_the_data_first() {
    let list = ok(&["sweep", "fsc", "--list"]);
    assert!(list.contains("fsc") && list.contains(" 48 "), "{list}");
    for r in [
        "  cifar_fs-gradient-rnn-s0 ",
        "  mini_imagenet-none-lstm-s3 ",
    ] {
        assert!(list.contains(r), "{list}");
    }
    assert_eq!(list.matches("peak ~").count(), 48, "{list}");
    assert!(list.contains("H 512") && list.contains("H 384"), "{list}");
    let all = ok(&["sweep", "--list"]);
    assert!(
        all.lines()
            .any(|l| l.starts_with("fsc ") && l.contains(" 48 ")),
        "{all}"
    );
    // a missing data folder: one error per data set, before any run folder exists
    let d = tmp("nodata");
    let e = err(&[
        "sweep",
        "fsc",
        "--out",
        s(d.path()),
        "--set",
        "data_dir=/nonexistent/fsc-data",
    ]);
    assert_eq!(e.matches("data files not found").count(), 2, "{e}");
    assert!(e.contains("CIFAR_FS_train.pickle"), "{e}");
    assert!(!d.path().join("fsc").exists(), "run folders were made");
}
