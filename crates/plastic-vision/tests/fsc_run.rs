//! The `fsc` run mechanics (docs/fsc.md §6) with a small stand-in learner, so that the
//! protocol is tested apart from the CNN: run folder, logs at every `log_every` before the
//! update, `max_batch + 1` updates, best by validation accuracy, resume after a kill that
//! continues bit-exactly, thread-count independence, refusal of mixed configurations.
//! (The whole path with the real model is tested in `fsc_model_run.rs` and the CLI tests.)

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use plastic::params::ParamInfo;
use plastic::Result;
use plastic_vision::run::{
    self, files, EvalResult, FscLearner, FscLogRow, FscObserver, Silent, Start, StepResult,
};
use plastic_vision::{FscBatch, FscConfig};

/// A softmax classifier of the first query's channel means, centred by a running mean that
/// is updated in training mode (a stand-in for the BatchNorm statistics).
struct ColourLearner {
    way: usize,
    params: Vec<f64>,
    running: Vec<f64>,
}

impl ColourLearner {
    fn new(config: &FscConfig) -> Result<Self> {
        let way = config.way;
        let params = (0..way * 4)
            .map(|i| ((i as f64 + config.seed as f64) * 0.37).sin() * 0.1)
            .collect();
        Ok(ColourLearner {
            way,
            params,
            running: vec![0.0; 3],
        })
    }

    fn features(batch: &FscBatch<f64>, b: usize) -> [f64; 3] {
        let img = batch.image(b, batch.test_begin);
        let plane = img.len() / 3;
        let mut f = [0.0; 3];
        for (c, v) in f.iter_mut().enumerate() {
            *v = img[c * plane..(c + 1) * plane].iter().sum::<f64>() / plane as f64;
        }
        f
    }

    /// Loss, correct, gradient with features centred by `centre`.
    fn pass(&self, batch: &FscBatch<f64>, centre: &[f64]) -> (f64, usize, Vec<f64>) {
        let (way, n) = (self.way, batch.batch());
        let mut grads = vec![0.0; self.params.len()];
        let (mut loss, mut correct) = (0.0, 0);
        for b in 0..n {
            let f = Self::features(batch, b);
            let x: Vec<f64> = (0..3).map(|c| f[c] - centre[c]).collect();
            let logits: Vec<f64> = (0..way)
                .map(|k| {
                    (0..3).map(|c| self.params[k * 3 + c] * x[c]).sum::<f64>()
                        + self.params[way * 3 + k]
                })
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            let label = batch.label(b, batch.test_begin);
            loss += -(logits[label] - max - z.ln());
            let arg = (0..way)
                .max_by(|&i, &j| logits[i].total_cmp(&logits[j]))
                .unwrap();
            correct += usize::from(arg == label);
            for k in 0..way {
                let p = (logits[k] - max).exp() / z - f64::from(u8::from(k == label));
                for c in 0..3 {
                    grads[k * 3 + c] += p * x[c] / n as f64;
                }
                grads[way * 3 + k] += p / n as f64;
            }
        }
        (loss / n as f64, correct, grads)
    }
}

impl FscLearner<f64> for ColourLearner {
    fn param_infos(&self) -> Vec<ParamInfo> {
        vec![
            ParamInfo {
                name: "w".into(),
                shape: vec![self.way, 3],
                offset: 0,
                trainable: true,
            },
            ParamInfo {
                name: "b".into(),
                shape: vec![self.way],
                offset: self.way * 3,
                trainable: true,
            },
        ]
    }
    fn params(&self) -> &[f64] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [f64] {
        &mut self.params
    }
    fn buffer_infos(&self) -> Vec<ParamInfo> {
        vec![ParamInfo {
            name: "running_mean".into(),
            shape: vec![3],
            offset: 0,
            trainable: false,
        }]
    }
    fn buffers(&self) -> Vec<f64> {
        self.running.clone()
    }
    fn set_buffers(&mut self, values: &[f64]) -> Result<()> {
        self.running.copy_from_slice(values);
        Ok(())
    }
    fn train_step(&mut self, batch: &FscBatch<f64>) -> Result<StepResult<f64>> {
        let mut mean = [0.0; 3];
        for b in 0..batch.batch() {
            let f = Self::features(batch, b);
            for c in 0..3 {
                mean[c] += f[c] / batch.batch() as f64;
            }
        }
        let (loss, correct, grads) = self.pass(batch, &mean);
        for (r, m) in self.running.iter_mut().zip(mean) {
            *r = 0.9 * *r + 0.1 * m;
        }
        Ok(StepResult {
            loss,
            correct,
            grads,
        })
    }
    fn evaluate(&mut self, batch: &FscBatch<f64>) -> Result<EvalResult> {
        let (loss, correct, _) = self.pass(batch, &self.running);
        Ok(EvalResult { loss, correct })
    }
}

fn small_config() -> FscConfig {
    FscConfig::default()
        .with_overrides(&[
            "image_dataset=procedural",
            "procedural_images=6",
            "dtype=f64",
            "batch_size=8",
            "max_batch=7",
            "log_every=3",
            "test_batch=2",
            "lr=0.05",
            "seed=3",
        ])
        .unwrap()
}

fn train(dir: &Path, start: Start, observer: &mut dyn FscObserver) -> Result<run::FscSummary> {
    run::train_with(dir, start, ColourLearner::new, observer)
}

fn new_run(config: &FscConfig) -> Start {
    Start::New {
        config: Box::new(config.clone()),
        overwrite: true,
    }
}

/// Everything of a finished run that must not depend on how it was run: progress rows
/// without the clock, the best tensors, the test result without the clock.
/// Progress rows, named tensors and the test result of a finished run.
type Fingerprint = (Vec<String>, Vec<(String, Vec<u8>)>, String);

fn fingerprint(dir: &Path) -> Fingerprint {
    let rows = run::read_progress(dir)
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {:e} {:e} {} {:e}",
                r.step, r.train_loss, r.val_loss, r.val_acc, r.lr
            )
        })
        .collect();
    let bytes = std::fs::read(dir.join(files::BEST)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    tensors.sort();
    let mut summary = run::read_summary(dir).unwrap();
    summary.elapsed_s = 0.0;
    (rows, tensors, serde_json::to_string(&summary).unwrap())
}

#[derive(Default)]
struct Record {
    steps: Vec<usize>,
    logs: Vec<FscLogRow>,
    panic_at: Option<usize>,
}

impl FscObserver for Record {
    fn step(&mut self, step: usize, _loss: f64) {
        if Some(step) == self.panic_at {
            panic!("killed at step {step}");
        }
        self.steps.push(step);
    }
    fn log(&mut self, row: &FscLogRow) {
        self.logs.push(row.clone());
    }
}

#[test]
fn protocol_logs_before_updates_and_makes_max_batch_plus_one_updates() {
    let tmp = tempdir("protocol");
    let config = small_config();
    let mut rec = Record::default();
    let s = train(&tmp, new_run(&config), &mut rec).unwrap();
    assert_eq!(rec.steps, (0..=7).collect::<Vec<_>>());
    assert_eq!(s.updates, 8);
    let rows = run::read_progress(&tmp).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.step).collect::<Vec<_>>(),
        vec![0, 3, 6]
    );
    let without_clock = |r: &[FscLogRow]| {
        r.iter()
            .map(|r| FscLogRow {
                elapsed_s: 0.0,
                ..r.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(without_clock(&rows), without_clock(&rec.logs));
    assert_eq!(rows[0].train_loss, 0.0);
    assert!(rows[1].train_loss > 0.0);
    // cosine schedule, T_max = 7/3 + 1 = 3, stepped at the logs after the first
    let cos = |e: f64| 0.005 + 0.0225 * (1.0 + (std::f64::consts::PI * e / 3.0).cos());
    assert_eq!(rows[0].lr, 0.05);
    assert!((rows[1].lr - cos(1.0)).abs() < 1e-12);
    assert!((rows[2].lr - cos(2.0)).abs() < 1e-12);
    // the best is the latest of the highest validation accuracies
    let best = rows
        .iter()
        .rev()
        .max_by(|a, b| a.val_acc.total_cmp(&b.val_acc))
        .unwrap();
    let top = rows.iter().map(|r| r.val_acc).fold(f64::MIN, f64::max);
    let latest_top = rows.iter().rev().find(|r| r.val_acc == top).unwrap();
    assert_eq!(s.best_step, latest_top.step, "{rows:?} {best:?}");
    assert_eq!(s.best_val_acc, top);
    assert_eq!(s.test_episodes, 16);
    assert_eq!(s.chance_acc, 20.0);
    assert!(s.test_acc_ci95 > 0.0 && s.test_acc_ci95 < 50.0);
    let config_text = std::fs::read_to_string(tmp.join(files::CONFIG)).unwrap();
    assert!(config_text.contains("hidden_size = 512"), "{config_text}");
    // a finished run is not retrained
    let again = train(&tmp, Start::Resume, &mut Silent).unwrap();
    assert_eq!(again, s);
}

#[test]
fn a_killed_run_resumes_bit_exactly() {
    let config = small_config();
    let whole = tempdir("whole");
    train(&whole, new_run(&config), &mut Silent).unwrap();
    for kill in [1, 4, 6, 7] {
        let dir = tempdir(&format!("killed{kill}"));
        let mut rec = Record {
            panic_at: Some(kill),
            ..Default::default()
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            train(&dir, new_run(&config), &mut rec).unwrap()
        }));
        assert!(r.is_err(), "the observer kills the run");
        assert!(!dir.join(files::TEST).exists());
        train(&dir, Start::Resume, &mut Silent).unwrap();
        assert_eq!(fingerprint(&dir), fingerprint(&whole), "killed at {kill}");
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let config = small_config();
    let mut prints = Vec::new();
    for threads in [1, 3] {
        let dir = tempdir(&format!("threads{threads}"));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| train(&dir, new_run(&config), &mut Silent).unwrap());
        prints.push(fingerprint(&dir));
    }
    assert_eq!(prints[0], prints[1]);
}

#[test]
fn bad_starts_are_clear_errors() {
    let config = small_config();
    let dir = tempdir("bad");
    let e = train(&dir, Start::Resume, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing to resume"), "{e}");
    train(&dir, new_run(&config), &mut Silent).unwrap();
    let e = train(
        &dir,
        Start::New {
            config: Box::new(config.clone()),
            overwrite: false,
        },
        &mut Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("already exists"), "{e}");
    // a checkpoint from another configuration is refused
    let other = tempdir("other");
    let changed = config.with_overrides(&["lr=0.01"]).unwrap();
    let mut rec = Record {
        panic_at: Some(4),
        ..Default::default()
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        train(&other, new_run(&changed), &mut rec)
    }));
    std::fs::write(other.join(files::CONFIG), config.resolved().to_toml()).unwrap();
    let e = train(&other, Start::Resume, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("different configuration"), "{e}");
    // a truncated checkpoint is an error, not a panic
    let bytes = std::fs::read(dir.join(files::CHECKPOINT)).unwrap();
    let cut = tempdir("cut");
    let mut rec = Record {
        panic_at: Some(4),
        ..Default::default()
    };
    let _ = catch_unwind(AssertUnwindSafe(|| train(&cut, new_run(&config), &mut rec)));
    std::fs::write(cut.join(files::CHECKPOINT), &bytes[..bytes.len() / 2]).unwrap();
    let e = train(&cut, Start::Resume, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("corrupt or truncated"), "{e}");
    // a model of the wrong float type
    let e = run::train_with::<f32, _>(
        &dir,
        Start::Resume,
        |_| -> Result<NoModel> { unreachable!() },
        &mut Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("trains in f64"), "{e}");
}

/// A learner type for the float-type check (never built).
struct NoModel;
impl FscLearner<f32> for NoModel {
    fn param_infos(&self) -> Vec<ParamInfo> {
        Vec::new()
    }
    fn params(&self) -> &[f32] {
        &[]
    }
    fn params_mut(&mut self) -> &mut [f32] {
        &mut []
    }
    fn buffer_infos(&self) -> Vec<ParamInfo> {
        Vec::new()
    }
    fn buffers(&self) -> Vec<f32> {
        Vec::new()
    }
    fn set_buffers(&mut self, _: &[f32]) -> Result<()> {
        Ok(())
    }
    fn train_step(&mut self, _: &FscBatch<f32>) -> Result<StepResult<f32>> {
        unreachable!()
    }
    fn evaluate(&mut self, _: &FscBatch<f32>) -> Result<EvalResult> {
        unreachable!()
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "plastic-vision-fsc-run-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn run_files_are_checksummed_reproducible_and_checked_on_load() {
    let config = small_config();
    let (a, b) = (tempdir("sum-a"), tempdir("sum-b"));
    train(&a, new_run(&config), &mut Silent).unwrap();
    train(&b, new_run(&config), &mut Silent).unwrap();
    let best = std::fs::read(a.join(files::BEST)).unwrap();
    assert_eq!(
        best,
        std::fs::read(b.join(files::BEST)).unwrap(),
        "identical runs write identical best.safetensors"
    );
    assert!(String::from_utf8_lossy(&best[..best.len().min(4096)]).contains("crc32:"));
    // one flipped bit in the tensor data (the last byte) is caught by the checksum
    let mut damaged = best.clone();
    *damaged.last_mut().unwrap() ^= 1;
    let path = a.join("damaged.safetensors");
    std::fs::write(&path, &damaged).unwrap();
    let mut model = ColourLearner::new(&config).unwrap();
    let e = run::load_best(&mut model, &path).unwrap_err().to_string();
    assert!(e.contains("corrupt"), "{e}");
    // the undamaged file loads
    run::load_best(&mut model, &a.join(files::BEST)).unwrap();
    for d in [&a, &b] {
        let _ = std::fs::remove_dir_all(d);
    }
}
