//! `plastic train --task pretrain-classification|pretrain-simclr` end to end on tiny
//! settings (procedural data → CNN → head → loss → step, held-out validation, checkpoint,
//! resume, figures), then `plastic train --task fsc --set cnn_from=...` frozen with the
//! embedding cache, and the errors for a wrong pretraining folder.

mod common;

use common::{err, fresh_dir, ok, s, TINY_FSC};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    fresh_dir("plastic-cli-pretrain", name)
}

const TINY: [&str; 14] = [
    "--set",
    "image_dataset=procedural",
    "--set",
    "procedural_images=6",
    "--set",
    "cnn_width=4",
    "--set",
    "batch_size=16",
    "--set",
    "log_every=2",
    "--set",
    "test_batch=1",
    "--set",
    "max_batch=3",
];

#[test]
fn pretraining_runs_resumes_draws_and_starts_a_frozen_fsc_run() {
    for task in ["pretrain-classification", "pretrain-simclr"] {
        let dir = tmp(task);
        let mut args = vec!["train", "--task", task, "--out", s(&dir)];
        args.extend(TINY);
        let out = ok(&args);
        assert!(out.contains("use it with --set cnn_from="), "{out}");
        for f in [
            "config.toml",
            "progress.tsv",
            "best.safetensors",
            "checkpoint.safetensors",
            "result.json",
            "pretrain.png",
            "pretrain_accuracy.png",
        ] {
            assert!(dir.join(f).is_file(), "{task}: {f}");
        }
        // resuming a finished run changes nothing
        let before = std::fs::read(dir.join("best.safetensors")).unwrap();
        ok(&["train", "--resume", s(&dir)]);
        assert_eq!(before, std::fs::read(dir.join("best.safetensors")).unwrap());
        // the CNN starts a frozen fsc run that reads the embedding cache
        let fsc = tmp(&format!("fsc-{task}"));
        let from = format!("cnn_from={}", dir.display());
        let mut args = vec!["train", "--task", "fsc", "--out", s(&fsc)];
        args.extend(TINY_FSC);
        args.extend([
            "--set",
            "max_batch=3",
            "--set",
            &from,
            "--set",
            "freeze_cnn=true",
            "--set",
            "train_augment=false",
        ]);
        let out = ok(&args);
        assert!(out.contains("test accuracy"), "{out}");
        assert!(fsc.join("embeddings.safetensors").is_file());
    }
}

#[test]
fn bad_pretraining_requests_are_clear_errors() {
    let e = err(&[
        "train",
        "--task",
        "pretrain-simclr",
        "--set",
        "hidden_size=3",
    ]);
    assert!(
        e.contains("unknown key `hidden_size`") && e.contains("simclr_head_size"),
        "{e}"
    );
    let e = err(&["train", "--task", "pretrain-simclr", "--rnn", "lstm"]);
    assert!(e.contains("do not apply to pretraining"), "{e}");
    let missing = tmp("missing");
    let from = format!("cnn_from={}", missing.display());
    let e = err(&[
        "train",
        "--task",
        "fsc",
        "--out",
        s(&tmp("bad-fsc")),
        "--set",
        "image_dataset=procedural",
        "--set",
        "procedural_images=6",
        "--set",
        &from,
    ]);
    assert!(e.contains("no such folder"), "{e}");
}
