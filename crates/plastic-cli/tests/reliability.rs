//! The `plastic` binary under conditions that used to destroy runs, abort or hang: resume
//! without a checkpoint, too large a configuration with `--overwrite`, an absurd thread
//! count, error messages of missing folders and OS errors.

mod common;

use common::s;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn plastic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plastic"))
        .args(args)
        .env_remove("PLASTIC_SKIP_MEMORY_CHECK")
        .output()
        .expect("running plastic")
}

const TINY: [&str; 12] = [
    "--task",
    "cue-reward",
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

fn train_tiny(dir: &Path) {
    let mut args = vec!["train", "--out", s(dir)];
    args.extend(TINY);
    let out = plastic(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exited with status 1 and an `error:` message, not killed by a signal (an abort).
fn assert_clean_failure(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{:?}: {}",
        out.status,
        stderr(out)
    );
    assert!(stderr(out).starts_with("error: "), "{}", stderr(out));
}

#[test]
fn resume_without_a_checkpoint_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    train_tiny(&dir);
    std::fs::remove_file(dir.join("checkpoint.safetensors")).unwrap();
    std::fs::remove_file(dir.join("test.json")).unwrap();
    let progress = std::fs::read(dir.join("progress.tsv")).unwrap();
    let best = std::fs::read(dir.join("best.safetensors")).unwrap();
    let out = plastic(&["train", "--resume", s(&dir)]);
    assert_clean_failure(&out);
    assert!(
        stderr(&out).contains("no checkpoint.safetensors"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(dir.join("progress.tsv")).unwrap(), progress);
    assert_eq!(std::fs::read(dir.join("best.safetensors")).unwrap(), best);
}

#[test]
fn too_large_a_configuration_is_refused_and_overwrite_keeps_the_old_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    train_tiny(&dir);
    let before = std::fs::read(dir.join("best.safetensors")).unwrap();
    let mut args = vec!["train", "--out", s(&dir), "--overwrite"];
    args.extend(TINY);
    args.extend(["--set", "hidden_size=100000"]);
    let out = plastic(&args);
    assert_clean_failure(&out);
    let e = stderr(&out);
    assert!(
        e.contains("not enough memory") && e.contains("needs an estimated"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(dir.join("best.safetensors")).unwrap(),
        before,
        "--overwrite removed the previous run before the new one started"
    );
    assert!(dir.join("test.json").exists());
    // a run of absurd length is refused the same way, eval too
    let out = plastic(&["eval", s(&dir), "--set", "trial_length=1000000000"]);
    assert_clean_failure(&out);
    assert!(
        stderr(&out).contains("needs an estimated"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_absurd_thread_count_is_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut args = vec!["--threads", "100000", "train", "--out", s(&dir)];
    args.extend(TINY);
    let last = args.len() - 1;
    args[last] = "1";
    let mut child = Command::new(env!("CARGO_BIN_EXE_plastic"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("--threads 100000 still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("logical CPUs"), "{}", stderr(&out));
}

#[test]
fn messages_name_the_folder_and_print_os_errors_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-run");
    let out = plastic(&["eval", s(&missing)]);
    assert_clean_failure(&out);
    let e = stderr(&out);
    assert!(
        e.contains("no-such-run does not exist") && !e.contains("config.toml"),
        "{e}"
    );
    // an output folder below a file: the OS error once
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut args = vec!["train", "--out"];
    let below = file.join("run");
    args.push(s(&below));
    args.extend(TINY);
    let out = plastic(&args);
    assert_clean_failure(&out);
    let e = stderr(&out);
    assert_eq!(e.matches("os error").count(), 1, "{e}");
}
