//! Helpers shared by the `plastic` binary's integration tests: running it, and asserting
//! that a command succeeded (its standard output) or failed (its standard error).

// each test file uses its own subset
#![allow(dead_code)]

use std::path::Path;
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
