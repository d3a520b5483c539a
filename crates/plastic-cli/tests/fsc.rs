//! `plastic train --task fsc`, `plastic fsc-demo` and `plastic bench --fsc` end to end on
//! tiny settings: procedural data → ProtoNet → projection → plastic RNN → loss → AdamW
//! step (the demo's under its retrieval curriculum), validation, checkpoint, resume, test
//! against the 1-NN baseline, figure.

mod common;

use common::{err, fresh_dir, ok, ok_in, s, TINY_FSC};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    fresh_dir("plastic-cli-fsc", name)
}

/// [`TINY_FSC`], 5 updates, seed 1.
fn tiny() -> Vec<&'static str> {
    let mut args = TINY_FSC.to_vec();
    args.extend(["--set", "max_batch=4", "--set", "seed=1"]);
    args
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn train_resume_and_test_on_the_procedural_set() {
    let dir = tmp("train");
    let mut args = vec!["train", "--task", "fsc", "--out", s(&dir)];
    args.extend(tiny());
    let out = ok(&args);
    assert!(out.contains("test accuracy"), "{out}");
    for f in [
        "config.toml",
        "progress.tsv",
        "best.safetensors",
        "checkpoint.safetensors",
        "test.json",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let progress = std::fs::read_to_string(dir.join("progress.tsv")).unwrap();
    let steps: Vec<&str> = progress
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(steps, ["0", "2", "4"], "{progress}");
    assert!(progress.starts_with("step\ttrain_loss\tval_loss\tval_acc\tlr\telapsed_s"));
    let test = json(&dir.join("test.json"));
    let acc = test["test_acc"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&acc));
    assert_eq!(test["test_episodes"], 8);
    assert_eq!(test["updates"], 5);
    assert_eq!(test["chance_acc"], 20.0);
    // best.safetensors has the BatchNorm running statistics by name
    let best = std::fs::read(dir.join("best.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(best[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&best[8..8 + header_len]).unwrap();
    for name in ["cnn.0.conv.w", "cnn.3.bn.running_var", "proj.w", "rec.w_h"] {
        assert!(header.get(name).is_some(), "{name} not in best.safetensors");
    }
    // a finished run resumes to its unchanged result
    let again = ok(&["train", "--resume", s(&dir)]);
    assert!(again.contains("test accuracy"), "{again}");
    assert_eq!(json(&dir.join("test.json")), test);
    // a checkpoint of another configuration is refused, not mixed
    let resumed = tmp("resumed");
    let mut args = vec!["train", "--task", "fsc", "--out", s(&resumed)];
    args.extend(tiny());
    args.extend(["--set", "max_batch=2"]);
    ok(&args);
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    std::fs::write(resumed.join("config.toml"), &config).unwrap();
    std::fs::remove_file(resumed.join("test.json")).unwrap();
    let e = err(&["train", "--resume", s(&resumed)]);
    assert!(e.contains("different configuration"), "{e}");
}

#[test]
fn default_folders_name_the_cnn_and_old_names_still_resume() {
    let cwd = tmp("default-dir");
    std::fs::create_dir_all(&cwd).unwrap();
    let runs = cwd.join("runs");
    // runs that differ only in their CNN get folders of their own: the kind always, the
    // width when it is not the default (64)
    for (cnn, folder) in [
        (
            &["--set", "cnn=protonet"][..],
            "fsc-procedural-protonet-w4-rnn-gradient-s1",
        ),
        (
            &["--set", "cnn=resnet12"],
            "fsc-procedural-resnet12-w4-rnn-gradient-s1",
        ),
        (
            &["--set", "cnn_width=64"],
            "fsc-procedural-protonet-rnn-gradient-s1",
        ),
    ] {
        let mut args = vec!["train", "--task", "fsc"];
        args.extend(tiny());
        args.extend(["--set", "max_batch=1"]);
        args.extend(cnn);
        let out = ok_in(&cwd, &args);
        assert!(out.contains(folder), "{out}");
        assert!(runs.join(folder).join("test.json").is_file(), "{folder}");
    }
    // a run in a folder named the way older versions named it (no CNN) is resumed as before
    let old = runs.join("fsc-procedural-rnn-gradient-s1");
    std::fs::rename(
        runs.join("fsc-procedural-protonet-w4-rnn-gradient-s1"),
        &old,
    )
    .unwrap();
    let test = json(&old.join("test.json"));
    std::fs::remove_file(old.join("test.json")).unwrap();
    let out = ok_in(
        &cwd,
        &["train", "--resume", "runs/fsc-procedural-rnn-gradient-s1"],
    );
    assert!(out.contains("test accuracy"), "{out}");
    // the same result (all but the wall-clock time of the resumed training)
    let mut again = json(&old.join("test.json"));
    again["elapsed_s"] = test["elapsed_s"].clone();
    assert_eq!(again, test);
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn bad_keys_and_values_list_the_valid_ones() {
    let dir = tmp("bad");
    let e = err(&[
        "train",
        "--task",
        "fsc",
        "--out",
        s(&dir),
        "--set",
        "delay=4",
    ]);
    assert!(
        e.contains("unknown key `delay`") && e.contains("image_dataset"),
        "{e}"
    );
    let e = err(&[
        "train",
        "--task",
        "fsc",
        "--out",
        s(&dir),
        "--set",
        "image_dataset=imagenet",
    ]);
    assert!(e.contains("cifar_fs, mini_imagenet, procedural"), "{e}");
    // the real data sets are missing here: the error names the files and where they come from
    let e = err(&[
        "train",
        "--task",
        "fsc",
        "--out",
        s(&dir),
        "--set",
        &format!("data_dir={}", s(&tmp("nodata"))),
    ]);
    assert!(e.contains("CIFAR_FS_train.pickle"), "{e}");
}

#[test]
fn demo_writes_its_figure() {
    let out = tmp("demo");
    let mut args = vec!["fsc-demo", "--out", s(&out)];
    args.extend(tiny());
    let text = ok(&args);
    assert!(text.contains("raw-pixel 1-NN"), "{text}");
    assert!(out.join("fsc_demo.png").exists() && out.join("fsc_demo.svg").exists());
    assert!(out.join("run").join("test.json").exists());
    // the demo trains under its retrieval curriculum (every tiny step is a mixed batch)
    let config = std::fs::read_to_string(out.join("run").join("config.toml")).unwrap();
    assert!(config.contains("retrieval_steps = 3000"), "{config}");
}

/// `plastic bench --fsc` times the frozen CNN uncached and cached (the embedding cache) with
/// their speed-up, and a batch other than the paper's 64 is said plainly.
#[test]
fn bench_times_the_cached_step_and_names_a_smaller_batch() {
    let out = ok(&[
        "--threads",
        "1",
        "bench",
        "--fsc",
        "--only",
        "frozen",
        "--fsc-batch",
        "2",
        "--fsc-warmup",
        "0",
        "--steps",
        "1",
        "--rounds",
        "1",
    ]);
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("| fsc-")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].contains("conv4-frozen-rnn") && rows[1].contains("frozen-cached"));
    assert!(rows.iter().all(|r| r.contains("| 2 (not 64) |")), "{out}");
    // the reference's frozen step was timed at batch 64 only: not shown beside batch 2
    assert!(
        rows.iter().all(|r| r.contains("timed at batch 64 only")),
        "{out}"
    );
    assert!(
        out.contains("NOT the paper's and the reference's batch of 64"),
        "{out}"
    );
    assert!(
        out.contains("frozen-cached-rnn-gradient-h512 over fsc-cifar_fs-conv4-frozen-rnn"),
        "{out}"
    );
    assert!(out.contains("load average at the start"), "{out}");
    for bad in [&["--fsc-batch", "0"][..], &["--only", "no-such-row"][..]] {
        let mut args = vec!["bench", "--fsc", "--steps", "1", "--rounds", "1"];
        args.extend_from_slice(bad);
        let e = err(&args);
        assert!(e.contains("fsc-batch") || e.contains("valid:"), "{e}");
    }
    // a row that cannot fit the machine's memory is refused before anything runs
    let e = err(&[
        "bench",
        "--fsc",
        "--only",
        "mini_imagenet-resnet12-nodrop",
        "--fsc-batch",
        "100000",
    ]);
    assert!(
        e.contains("needs about") && e.contains("--fsc-batch"),
        "{e}"
    );
    let e = err(&["bench", "--fsc-batch", "8"]);
    assert!(e.contains("--fsc only"), "{e}");
}
