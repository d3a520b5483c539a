//! The `plastic` binary's configuration, messages, sweep subsets (`--only`) and evaluation
//! sweeps (`*_test`), end to end on tiny runs.

mod common;

use common::{err, ok, plastic_with, s};
use std::path::{Path, PathBuf};

/// A fresh folder for one test, removed when dropped.
struct Tmp(PathBuf);

impl Tmp {
    fn new(name: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("plastic-cfg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn folders(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const TINY: [&str; 8] = [
    "--set",
    "hidden_size=4",
    "--set",
    "batch_size=2",
    "--set",
    "log_every=1",
    "--set",
    "test_batch=1",
];

#[test]
fn a_wrongly_typed_value_names_the_key_and_the_type() {
    let t = Tmp::new("typed");
    let out = t.join("run");
    let e = err(&[
        "train",
        "--task",
        "cue-reward",
        "--set",
        "hidden_size=abc",
        "--out",
        s(&out),
    ]);
    assert!(
        e.contains("`hidden_size`") && e.contains("whole number") && e.contains("abc"),
        "{e}"
    );
    let e = err(&["train", "--task", "cue-reward", "--set", "modulation=maybe"]);
    assert!(
        e.contains("`modulation`") && e.contains("true or false"),
        "{e}"
    );
    assert!(!out.exists(), "nothing is written for a bad configuration");
}

#[test]
fn an_unknown_cell_lists_the_valid_ones_once_and_plainly() {
    for args in [
        vec!["train", "--task", "cue-reward", "--rnn", "gru"],
        vec!["train", "--task", "cue-reward", "--set", "rnn=gru"],
    ] {
        let e = err(&args);
        assert!(e.contains("gru") && e.contains("rnn, lstm"), "{e}");
        assert!(!e.contains("CellKind"), "an internal type name: {e}");
        assert!(e.matches("invalid configuration").count() <= 1, "{e}");
    }
    let e = err(&["train", "--task", "cue-reward", "--plasticity", "oja"]);
    assert!(
        e.contains("oja")
            && ["gradient", "hebbian", "none"]
                .iter()
                .all(|r| e.contains(r)),
        "{e}"
    );
    let e = err(&["train", "--task", "maze"]);
    assert!(
        e.contains("cue-reward, seq-reproduction, regression"),
        "{e}"
    );
}

#[test]
fn os_errors_are_printed_once() {
    let t = Tmp::new("os");
    let file = t.join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let e = err(&[
        "train",
        "--task",
        "cue-reward",
        "--out",
        s(&file.join("run")),
        "--steps",
        "1",
    ]);
    assert_eq!(e.matches("os error").count(), 1, "{e}");
}

#[test]
fn eval_on_a_missing_folder_talks_about_the_folder() {
    let t = Tmp::new("eval");
    let missing = t.join("no-such-run");
    let e = err(&["eval", s(&missing)]);
    assert!(
        e.contains(s(&missing)) && e.contains("not a folder") && !e.contains("config.toml"),
        "{e}"
    );
    let e = err(&["eval", t.s()]);
    assert!(e.contains("not a run folder"), "{e}");
}

#[test]
fn a_config_file_names_its_task() {
    let t = Tmp::new("config");
    let file = t.join("regression.toml");
    std::fs::write(
        &file,
        "task = \"regression\"\nhidden_size = 4\nbatch_size = 2\nmax_batch = 1\n\
         log_every = 1\ntest_batch = 1\n",
    )
    .unwrap();
    let out = t.join("run");
    ok(&["train", "--config", s(&file), "--out", s(&out)]);
    let cfg = std::fs::read_to_string(out.join("config.toml")).unwrap();
    // the reference's regression default: input_shape (12,) = n_var 10 + 2
    assert!(
        cfg.contains("task = \"regression\"") && cfg.contains("n_var = 10"),
        "{cfg}"
    );
    let e = err(&[
        "train",
        "--config",
        s(&file),
        "--task",
        "cue-reward",
        "--out",
        s(&t.join("other")),
    ]);
    assert!(e.contains("disagrees"), "{e}");
}

#[test]
fn slurm_times_are_checked_against_slurms_formats() {
    let t = Tmp::new("slurm");
    // a stand-in for sbatch that accepts any job
    let bin = t.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let sbatch = bin.join("sbatch");
    std::fs::write(&sbatch, "#!/bin/sh\necho 42\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:/usr/bin:/bin", s(&bin));
    let out = t.join("sweeps");
    for bad in [
        "inf",
        "NaN",
        "-3",
        "0",
        "1:99",
        "abc",
        "1-2-3",
        "25:00:00:00",
    ] {
        let time = format!("--time={bad}");
        let o = plastic_with(
            &["sweep", "slurm_smoke", "--out", s(&out), "--slurm", &time],
            Some(&path),
        );
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "--time {bad} was accepted");
        assert!(
            e.contains(&format!("`{bad}`")) && e.contains("HH:MM:SS") && e.contains("D-HH"),
            "{e}"
        );
    }
    for (good, written) in [
        ("1.5", "01:30:00"),
        ("2-00:00:00", "2-00:00:00"),
        ("30:00", "30:00"),
    ] {
        let time = format!("--time={good}");
        let o = plastic_with(
            &["sweep", "slurm_smoke", "--out", s(&out), "--slurm", &time],
            Some(&path),
        );
        assert!(
            o.status.success(),
            "--time {good}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let job = std::fs::read_to_string(out.join("slurm_smoke/slurm/job.sbatch")).unwrap();
        assert!(
            job.contains(&format!("#SBATCH --time={written}\n")),
            "{job}"
        );
    }
}

#[test]
fn only_selects_a_subset_and_lists_its_runs_and_time() {
    let list = ok(&[
        "sweep",
        "seqreproduction_delay",
        "--list",
        "--only",
        "rnn=lstm",
        "--only",
        "plasticity=gradient,hebbian",
        "--only",
        "delay=40",
    ]);
    let row = list
        .lines()
        .find(|l| l.starts_with("seqreproduction_delay "))
        .unwrap_or_else(|| panic!("{list}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "8", "{row}");
    assert!(cells[3] == "h" || cells[3] == "min", "a time: {row}");
    let runs: Vec<&str> = list
        .lines()
        .filter(|l| l.starts_with("  delay"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(runs.len(), 8, "{list}");
    assert!(runs
        .iter()
        .all(|r| r.starts_with("delay40-lstm-") && !r.contains("none")));
    let e = err(&["sweep", "seqreproduction_delay", "--only", "cell=lstm"]);
    assert!(
        e.contains("`cell`") && e.contains("delay, rnn, plasticity"),
        "{e}"
    );
    let e = err(&["sweep", "seqreproduction_delay", "--only", "delay=30"]);
    assert!(e.contains("`30`") && e.contains("0, 10, 20, 40, 60"), "{e}");

    // run the subset, then analyse whatever has finished
    let t = Tmp::new("only");
    let mut args = vec![
        "sweep",
        "slurm_smoke",
        "--out",
        t.s(),
        "--only",
        "plasticity=hebbian",
        "--steps",
        "2",
    ];
    args.extend(TINY);
    let out = ok(&args);
    assert!(out.contains("1 runs") && out.contains("1 to do"), "{out}");
    assert_eq!(folders(&t.join("slurm_smoke")), ["rnn-hebbian-s0"]);
    let out = ok(&[
        "analyze",
        "slurm_smoke",
        "--out",
        t.s(),
        "--eta-batches",
        "1",
    ]);
    assert!(out.contains("| rnn | hebbian | 1 |"), "{out}");
}

#[test]
fn evaluation_sweeps_on_a_tiny_finished_sweep() {
    let t = Tmp::new("evalsweep");
    let test = "seqreproduction_long_compare_delay_test";
    let trained = "seqreproduction_long_compare_delay";
    // nothing trained yet: the error names what to train
    let e = err(&["sweep", test, "--out", t.s(), "--seeds", "1"]);
    assert!(e.contains(&format!("plastic sweep {trained}")), "{e}");
    let e = err(&["analyze", test, "--out", t.s()]);
    assert!(e.contains(&format!("plastic sweep {test}")), "{e}");
    // train the two runs it needs (delay 40, LSTM, gradient and Hebbian), tiny
    let mut args = vec![
        "sweep",
        trained,
        "--out",
        t.s(),
        "--seeds",
        "1",
        "--steps",
        "2",
        "--only",
        "delay=40",
        "--only",
        "rnn=lstm",
        "--only",
        "plasticity=gradient,hebbian",
        "--set",
        "seq_length=2",
    ];
    args.extend(TINY);
    ok(&args);
    let out = ok(&["sweep", test, "--out", t.s(), "--seeds", "1"]);
    assert!(
        out.contains("10 evaluations") && out.contains("10 to do"),
        "{out}"
    );
    let evals = folders(&t.join(test));
    assert_eq!(evals.len(), 10, "{evals:?}");
    for rule in ["gradient", "hebbian"] {
        for delay in [0, 20, 40, 60, 80] {
            let dir = t
                .join(test)
                .join(format!("delay40-lstm-{rule}-s0-eval_delay{delay}"));
            let text = std::fs::read_to_string(dir.join("eval.json")).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let rate = &v["report"]["plasticity_rate"];
            let (mean, sd) = (
                rate["mean"].as_array().unwrap(),
                rate["sd"].as_array().unwrap(),
            );
            // one value per step of the evaluated episode: 2 shown + delay + 2 recalled
            assert_eq!(mean.len(), 4 + delay, "{rule} {delay}");
            assert_eq!(sd.len(), mean.len());
            assert!(mean.iter().all(|x| x.as_f64().unwrap() > 0.0));
            assert_eq!(v["report"]["task"]["delay"], delay);
            assert_eq!(v["report"]["batches"], 1);
        }
    }
    // a second time: nothing to do
    let out = ok(&["sweep", test, "--out", t.s(), "--seeds", "1"]);
    assert!(out.contains("10 done, 0 to do"), "{out}");
    let out = ok(&["analyze", test, "--out", t.s()]);
    assert!(out.contains("| 40 | lstm | gradient | 80 | 1 |"), "{out}");
    let analysis = t.join(test).join("analysis");
    let written: Vec<String> = std::fs::read_dir(&analysis)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for f in [
        "table.md",
        "eta.csv",
        "test_vs_eval_delay.png",
        "eta_delay_40_lstm_eval_delay_60.png",
        "eta_delay_40_lstm_eval_delay_60.svg",
    ] {
        assert!(analysis.join(f).exists(), "{f} missing from {written:?}");
    }
    let eta = std::fs::read_to_string(analysis.join("eta.csv")).unwrap();
    assert!(
        eta.starts_with("configuration,seeds,step,eta_mean,eta_sd\n"),
        "{eta}"
    );

    // part of a training sweep finished: the evaluation uses those runs and says so
    let mut args = vec![
        "sweep",
        "cuereward_large",
        "--out",
        t.s(),
        "--seeds",
        "1",
        "--steps",
        "2",
        "--only",
        "rnn=lstm",
    ];
    args.extend(TINY);
    ok(&args);
    let out = ok(&[
        "sweep",
        "cuereward_large_test",
        "--out",
        t.s(),
        "--seeds",
        "1",
    ]);
    assert!(
        out.contains("2 runs of cuereward_large have not finished")
            && out.contains("2 evaluations"),
        "{out}"
    );
    let out = ok(&["analyze", "cuereward_large_test", "--out", t.s()]);
    assert!(out.contains("| lstm | hebbian | 1 |"), "{out}");
    assert!(t
        .join("cuereward_large_test/analysis/eta_lstm.png")
        .exists());
}
