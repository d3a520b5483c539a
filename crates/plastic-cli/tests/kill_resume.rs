//! "`plastic train --resume` continues a killed run bit-exactly": a training process is
//! SIGKILLed several times, once inside a checkpoint write and then at seeded random
//! moments, each time resumed with `--resume`, and the finished run's files must equal an
//! uninterrupted run's: `progress.tsv` (all but the wall-clock column), `best.safetensors`
//! (parameters and metadata), the parameters and optimiser state in
//! `checkpoint.safetensors`, and `test.json` (all but `elapsed_s`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plastic::rng::Rng;

/// The environment variable that makes every atomic write pause halfway (a hidden hook of
/// `plastic::io::write_atomic`).
const WRITE_PAUSE_ENV: &str = "PLASTIC_TEST_WRITE_PAUSE_MS";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plastic-kill-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn new_run(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plastic"));
    c.args([
        "train",
        "--task",
        "cue-reward",
        "--plasticity",
        "gradient",
        "--seed",
        "5",
        "--steps",
        "800",
        "--threads",
        "2",
        "--set",
        "hidden_size=16",
        "--set",
        "batch_size=8",
        "--set",
        "log_every=20",
        "--set",
        "test_batch=2",
        "--out",
    ])
    .arg(dir);
    c
}

fn resume(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plastic"));
    c.args(["train", "--threads", "1", "--resume"]).arg(dir);
    c
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// SIGKILLs `child` (std's `kill` sends SIGKILL on Unix); whether it was still running.
fn kill(child: &mut Child) -> bool {
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap_or(());
    child.wait().unwrap();
    running
}

/// `progress.tsv` without the wall-clock column.
fn progress(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("progress.tsv"))
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once('\t').unwrap().0.to_string())
        .collect()
}

/// A safetensors file as (header as JSON, payload); the header's key order is not fixed.
fn safetensors(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&b[8..8 + n]).unwrap();
    (header, b[8 + n..].to_vec())
}

/// `test.json` without `elapsed_s`.
fn test_result(dir: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("test.json")).unwrap()).unwrap();
    // wall-clock time, and the checksum that covers it
    let o = v.as_object_mut().unwrap();
    o.remove("elapsed_s");
    o.remove("checksum");
    v
}

/// The temporary file of process `pid`'s atomic write of `checkpoint.safetensors` (named
/// `.checkpoint.safetensors.tmp<pid>` by `plastic::io::write_atomic`), if it exists.
fn checkpoint_tmp(dir: &Path, pid: u32) -> Option<PathBuf> {
    let p = dir.join(format!(".checkpoint.safetensors.tmp{pid}"));
    p.exists().then_some(p)
}

/// Runs `c` with every atomic write paused halfway (300 ms) and SIGKILLs it inside the
/// write of its `nth` checkpoint, once the first half is on disk; describes the kill.
fn kill_inside_checkpoint_write(mut c: Command, dir: &Path, nth: usize, full: &Path) -> String {
    c.env(WRITE_PAUSE_ENV, "300");
    let mut child = spawn(c);
    let pid = child.id();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let poll = || std::thread::sleep(Duration::from_micros(200));
    let tmp_file = loop {
        assert!(Instant::now() < deadline, "no checkpoint write seen");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before checkpoint #{nth}"
        );
        if let Some(p) = checkpoint_tmp(dir, pid) {
            seen += 1;
            if seen == nth {
                // the hook pauses after the first half: wait until it is on disk
                while std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) == 0 {
                    assert!(Instant::now() < deadline, "the write never started");
                    poll();
                }
                break p;
            }
            while checkpoint_tmp(dir, pid).is_some() {
                poll(); // this write is not the one
            }
        }
        poll();
    };
    assert!(kill(&mut child), "the run ended inside the paused write");
    // the kill leaves the half-written temporary file behind (the resumed runs must not
    // mind it)
    let written = std::fs::metadata(&tmp_file).unwrap().len();
    format!(
        "inside the write of checkpoint #{nth} ({written} of {} bytes written)",
        std::fs::metadata(full.join("checkpoint.safetensors"))
            .unwrap()
            .len()
    )
}

#[test]
fn a_run_killed_at_random_moments_and_inside_a_checkpoint_write_resumes_exactly() {
    let (full, killed) = (tmp("full"), tmp("killed"));
    let started = Instant::now();
    let out = new_run(&full).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uninterrupted = started.elapsed();

    // 1. killed inside the write of the first checkpoint (step 0: the folder then has a
    //    logged row but no checkpoint), then, resumed, inside the write of its second
    let mut kills = vec![
        kill_inside_checkpoint_write(new_run(&killed), &killed, 1, &full),
        kill_inside_checkpoint_write(resume(&killed), &killed, 2, &full),
    ];

    // 2. killed at seeded random moments, each resumed process a fraction into its run
    let mut rng = Rng::new(20260101);
    for _ in 0..6 {
        let mut child = spawn(resume(&killed));
        let delay = uninterrupted.mul_f64(rng.uniform_in(0.02, 0.3));
        std::thread::sleep(delay);
        if kill(&mut child) {
            kills.push(format!("after {:.0} ms", delay.as_secs_f64() * 1e3));
        }
    }
    println!(
        "uninterrupted run {:.0} ms; {} kills: {}",
        uninterrupted.as_secs_f64() * 1e3,
        kills.len(),
        kills.join(", ")
    );
    assert!(
        kills.len() >= 4,
        "too few kills landed while training ({kills:?}); the run is too short for this machine"
    );

    let leftovers = std::fs::read_dir(&killed)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp")
        })
        .count();
    println!("temporary files left behind by the kills: {leftovers}");
    assert!(leftovers >= 2);

    // 3. resumed to the end: the same files as the uninterrupted run
    let out = resume(&killed).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(progress(&full), progress(&killed), "progress.tsv differs");
    assert_eq!(
        safetensors(&full.join("best.safetensors")),
        safetensors(&killed.join("best.safetensors")),
        "best.safetensors differs"
    );
    assert_eq!(
        safetensors(&full.join("checkpoint.safetensors")).1,
        safetensors(&killed.join("checkpoint.safetensors")).1,
        "the checkpoint's parameters or optimiser state differ"
    );
    assert_eq!(
        test_result(&full),
        test_result(&killed),
        "test.json differs"
    );
    let _ = std::fs::remove_dir_all(&full);
    let _ = std::fs::remove_dir_all(&killed);
}
