//! Helpers shared by the `plastic` binary's integration tests: running it, and asserting
//! that a command succeeded (its standard output) or failed (its standard error).

// each test file uses its own subset
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `plastic args`.
pub fn plastic(args: &[&str]) -> Output {
    plastic_with(args, None)
}

/// Runs `plastic args`, with `PATH` set to `path` if given (a stand-in for `sbatch`, or
/// none).
pub fn plastic_with(args: &[&str], path: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plastic"));
    c.args(args);
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.output().expect("running plastic")
}

/// Runs `plastic args`, asserts that it succeeded, and returns its standard output.
pub fn ok(args: &[&str]) -> String {
    let out = plastic(args);
    assert!(
        out.status.success(),
        "plastic {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `plastic args` in the folder `cwd`, asserts that it succeeded, and returns its
/// standard output.
pub fn ok_in(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_plastic"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running plastic");
    assert!(
        out.status.success(),
        "plastic {args:?} in {} failed:\n{}",
        cwd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `plastic args`, asserts that it failed, and returns its standard error.
pub fn err(args: &[&str]) -> String {
    let out = plastic(args);
    assert!(!out.status.success(), "plastic {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fresh, empty (not yet created) folder under the system's temporary folder, named by
/// `prefix`, this process and `name`.
pub fn fresh_dir(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Tiny fsc settings: the procedural data set with 6 images per class, a CNN of width 4,
/// hidden size 16, 4 episodes per batch, a log (2 validation batches) every 2 steps.
pub const TINY_FSC: [&str; 14] = [
    "--set",
    "image_dataset=procedural",
    "--set",
    "procedural_images=6",
    "--set",
    "cnn_width=4",
    "--set",
    "hidden_size=16",
    "--set",
    "batch_size=4",
    "--set",
    "log_every=2",
    "--set",
    "test_batch=2",
];
