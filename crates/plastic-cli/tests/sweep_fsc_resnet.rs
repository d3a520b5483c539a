//! `plastic sweep fsc_resnet` end to end: `--list` with each run's memory, a tiny subset
//! trained on the procedural set and skipped when rerun, and the memory checks' errors.

mod common;

use common::{ok, plastic};

#[test]
fn list_shows_every_run_with_its_memory() {
    let out = ok(&["sweep", "fsc_resnet", "--list"]);
    assert!(out.contains("fsc_resnet") && out.contains("48"), "{out}");
    assert!(out.contains("cifar_fs-gradient-rnn-s0"), "{out}");
    assert!(out.contains("mini_imagenet-none-lstm-s3"), "{out}");
    let rows = out
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains(" peak ~"))
        .count();
    assert_eq!(rows, 48, "{out}");
    assert!(out.contains("CNN activations kept for backward"), "{out}");
    let all = ok(&["sweep", "--list"]);
    assert!(all.contains("fsc_resnet"), "{all}");
}

#[test]
fn a_tiny_subset_trains_and_is_skipped_when_finished() {
    let out_dir =
        std::env::temp_dir().join(format!("plastic-sweep-fsc-resnet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let args = [
        "sweep",
        "fsc_resnet",
        "--only",
        "image_dataset=cifar_fs",
        "--only",
        "plasticity=gradient",
        "--only",
        "rnn=lstm",
        "--seeds",
        "1",
        "--steps",
        "1",
        "--set",
        "image_dataset=procedural",
        "--set",
        "procedural_images=6",
        "--set",
        "cnn_width=2",
        "--set",
        "hidden_size=16",
        "--set",
        "batch_size=2",
        "--set",
        "log_every=1",
        "--set",
        "test_batch=1",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let first = ok(&args);
    assert!(
        first.contains("1 runs") && first.contains("1 to do"),
        "{first}"
    );
    assert!(first.contains("test accuracy"), "{first}");
    let run = out_dir.join("fsc_resnet").join("cifar_fs-gradient-lstm-s0");
    assert!(run.join("test.json").exists());
    let again = ok(&args);
    assert!(again.contains("1 finished, 0 to do"), "{again}");
    // a Slurm request below the estimate is refused before anything is submitted
    let mut slurm = args.to_vec();
    slurm.extend(["--slurm", "--mem", "1M"]);
    let out = plastic(&slurm);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--mem"), "{e}");
    let _ = std::fs::remove_dir_all(&out_dir);
}
