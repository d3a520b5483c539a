//! The `plastic` binary end to end, on tiny runs.

mod common;

use common::{err, ok, plastic, s};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A temporary folder, removed when dropped (also when a test fails).
struct Tmp(tempfile::TempDir);
impl std::ops::Deref for Tmp {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

fn tmp(name: &str) -> Tmp {
    Tmp(tempfile::Builder::new()
        .prefix(&format!("plastic-cli-{name}-"))
        .tempdir()
        .unwrap())
}

/// The cells of one Markdown table row.
fn table_cells(row: &str) -> Vec<&str> {
    row.trim_matches('|').split('|').map(str::trim).collect()
}

/// Asserts that every one of `files` exists in `dir`.
fn assert_files(dir: &Path, files: &[&str]) {
    for f in files {
        assert!(dir.join(f).exists(), "{} missing", dir.join(f).display());
    }
}

/// Every file under `dir` (recursively) with its contents and modification time.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let modified = std::fs::metadata(&p).unwrap().modified().unwrap();
                out.insert(p.clone(), (std::fs::read(&p).unwrap(), modified));
            }
        }
    }
    out
}

/// Asserts that no file under `dir` changed (contents and modification time) since
/// `before` was taken, and that none appeared or disappeared.
fn assert_unchanged(
    dir: &Path,
    before: &std::collections::BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)>,
) {
    let after = snapshot(dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "files appeared or disappeared"
    );
    for (p, (bytes, modified)) in before {
        let (b2, m2) = &after[p];
        assert!(
            bytes == b2,
            "{} was rewritten with other contents",
            p.display()
        );
        assert_eq!(modified, m2, "{} was rewritten", p.display());
    }
}

const TINY: [&str; 10] = [
    "--set",
    "hidden_size=8",
    "--set",
    "batch_size=4",
    "--set",
    "log_every=5",
    "--set",
    "test_batch=2",
    "--steps",
    "10",
];

#[test]
fn train_resume_and_eval() {
    let d = tmp("train");
    let mut args = vec![
        "train",
        "--task",
        "seq-reproduction",
        "--rnn",
        "lstm",
        "--plasticity",
        "hebbian",
        "--out",
        s(&d),
        "--set",
        "delay=3",
    ];
    args.extend(TINY);
    let out = ok(&args);
    assert!(out.contains("test loss"), "{out}");
    assert_files(
        &d,
        &[
            "config.toml",
            "progress.tsv",
            "best.safetensors",
            "checkpoint.safetensors",
            "test.json",
        ],
    );
    let cfg = std::fs::read_to_string(d.join("config.toml")).unwrap();
    assert!(
        cfg.contains("delay = 3")
            && cfg.contains("rnn = \"lstm\"")
            && cfg.contains("max_batch = 10"),
        "{cfg}"
    );
    // the folder exists now: refused without --overwrite
    let e = err(&args);
    assert!(e.contains("already exists"), "{e}");
    args.push("--overwrite");
    ok(&args);
    // resuming a finished run is a no-op that reports the result: no file is touched
    let before = snapshot(&d);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(ok(&["train", "--resume", s(&d)]).contains("test loss"));
    assert_unchanged(&d, &before);
    let out = ok(&["eval", s(&d), "--set", "delay=6"]);
    assert!(out.contains("applied η(t)"), "{out}");
    let report = std::fs::read_to_string(d.join("eval-delay_6.json")).unwrap();
    assert!(report.contains("\"plasticity_rate\""));
}

#[test]
fn bad_input_lists_valid_choices() {
    let e = err(&["train", "--task", "maze"]);
    assert!(
        e.contains("cue-reward, seq-reproduction, regression"),
        "{e}"
    );
    let e = err(&[
        "train",
        "--task",
        "cue-reward",
        "--rnn",
        "gru",
        "--out",
        s(&tmp("gru")),
    ]);
    assert!(e.contains("rnn, lstm"), "{e}");
    let e = err(&[
        "train",
        "--task",
        "cue-reward",
        "--set",
        "hiden_size=3",
        "--out",
        s(&tmp("typo")),
    ]);
    assert!(
        e.contains("unknown key `hiden_size`") && e.contains("hidden_size"),
        "{e}"
    );
    let e = err(&["sweep", "nosuch"]);
    assert!(e.contains("cuereward_demo"), "{e}");
    let e = err(&["train", "--resume", s(&tmp("none"))]);
    assert!(e.contains("not a run folder"), "{e}");
}

#[test]
fn sweep_runs_skips_finished_and_analyzes() {
    let d = tmp("sweep");
    let out = ok(&[
        "sweep",
        "slurm_smoke",
        "--out",
        s(&d),
        "--seeds",
        "2",
        "--jobs",
        "2",
    ]);
    assert!(
        out.contains("4 runs") && out.contains("0 finished"),
        "{out}"
    );
    let out = ok(&["sweep", "slurm_smoke", "--out", s(&d), "--seeds", "2"]);
    assert!(out.contains("4 finished, 0 to do"), "{out}");
    // a different configuration under the same names is refused
    let e = err(&[
        "sweep",
        "slurm_smoke",
        "--out",
        s(&d),
        "--seeds",
        "2",
        "--steps",
        "30",
    ]);
    assert!(e.contains("different configuration"), "{e}");
    let out = ok(&[
        "analyze",
        "slurm_smoke",
        "--out",
        s(&d),
        "--eta-batches",
        "1",
    ]);
    assert!(out.contains("| rnn | gradient | 2 |"), "{out}");
    assert_files(
        &d.join("slurm_smoke/analysis"),
        &[
            "table.md",
            "table.csv",
            "curves.png",
            "curves.svg",
            "eta.png",
        ],
    );
    let list = ok(&["sweep", "--list"]);
    assert!(
        list.contains("seqreproduction_delay") && list.contains("120"),
        "{list}"
    );
}

#[test]
fn slurm_without_sbatch_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_plastic"))
        .args(["sweep", "slurm_smoke", "--out", s(&tmp("slurm")), "--slurm"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("sbatch") && e.contains("PATH"), "{e}");
}

#[test]
fn demo_writes_the_figure() {
    let d = tmp("demo");
    let out = ok(&["demo", "--out", s(&d), "--steps", "4"]);
    assert!(out.contains("demo none"), "{out}");
    assert_files(
        &d,
        &[
            "demo.png",
            "demo.svg",
            "gradient/test.json",
            "hebbian/test.json",
            "none/test.json",
        ],
    );
    let png = std::fs::read(d.join("demo.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5000);
    // a second demo reuses the finished runs: their folders are untouched (a retrained
    // run would at least rewrite progress.tsv with other wall-clock times)
    let runs: Vec<PathBuf> = ["gradient", "hebbian", "none"]
        .iter()
        .map(|r| d.join(r))
        .collect();
    let before: Vec<_> = runs.iter().map(|r| snapshot(r)).collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = ok(&["demo", "--out", s(&d), "--steps", "4"]);
    assert!(again.contains("demo gradient"), "{again}");
    for (r, b) in runs.iter().zip(&before) {
        assert_unchanged(r, b);
    }
}

#[test]
fn kernel_timings_are_a_table_of_positive_figures() {
    let out = ok(&["bench", "--kernels"]);
    // the kernel table comes first; the peak and GEMM tables follow the GEMM rate line
    let (kernels, peak) = out
        .split_once("fixed-order GEMM")
        .expect("the GEMM rate line");
    let rows: Vec<&str> = kernels
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| kernel") && !l.starts_with("| ---"))
        .collect();
    assert_eq!(rows.len(), 6, "{out}");
    assert!(peak.contains("clock (dependent integer adds"), "{out}");
    let gemm_rows: Vec<&str> = peak
        .lines()
        .filter(|l| l.contains("(fixed order)") || l.contains("| gemm crate |"))
        .collect();
    assert_eq!(gemm_rows.len(), 6, "{out}");
    for r in gemm_rows {
        let rate: f64 = table_cells(r)[2].parse().unwrap();
        assert!(rate > 0.0, "{r}");
    }
    for r in rows {
        let cells = table_cells(r);
        let us: f64 = cells[1].parse().unwrap();
        let gbs: f64 = cells[3].parse().unwrap();
        assert!(us > 0.0 && gbs > 0.0, "{r}");
    }
}

#[test]
fn bench_pools_the_steps_of_its_rounds() {
    let out = ok(&[
        "bench",
        "--only",
        "cue-rnn-none",
        "--rounds",
        "2",
        "--steps",
        "1",
    ]);
    let row = out
        .lines()
        .find(|l| l.starts_with("| cue-rnn-none"))
        .unwrap_or_else(|| panic!("{out}"));
    let cells = table_cells(row);
    // "median (min–max)" over the two rounds' steps
    let (median, range) = cells[1].split_once(" (").unwrap();
    let (min, max) = range.trim_end_matches(')').split_once('–').unwrap();
    let (median, min, max): (f64, f64, f64) = (
        median.parse().unwrap(),
        min.parse().unwrap(),
        max.parse().unwrap(),
    );
    assert!(min > 0.0 && min <= median && median <= max, "{row}");
    // zero rounds is refused by the argument parser, before anything runs
    let out = plastic(&["bench", "--rounds", "0"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("invalid value '0' for '--rounds") && e.contains("not in 1.."),
        "{e}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
