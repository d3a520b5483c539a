//! The whole fsc path with the real model on the procedural data set, in seconds: data →
//! ProtoNet → projection → plastic RNN → loss → AdamW step, validation, checkpoint, a kill
//! and a bit-exact resume, thread-count independence, and the best parameters reloaded
//! from `best.safetensors` reproducing the test result.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use plastic_vision::run::{self, files, FscObserver, Silent, Start};
use plastic_vision::FscConfig;

fn tiny(rule: &str, rnn: &str) -> FscConfig {
    FscConfig::default()
        .with_overrides(&[
            "image_dataset=procedural".to_string(),
            "procedural_images=6".into(),
            "cnn_width=4".into(),
            "hidden_size=16".into(),
            "batch_size=4".into(),
            "max_batch=5".into(),
            "log_every=2".into(),
            "test_batch=2".into(),
            "seed=2".into(),
            format!("plasticity={rule}"),
            format!("rnn={rnn}"),
        ])
        .unwrap()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "plastic-vision-fsc-model-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn new_run(config: &FscConfig) -> Start {
    Start::New {
        config: Box::new(config.clone()),
        overwrite: true,
    }
}

/// A finished run without its clock: progress rows, best tensors, test result.
/// Progress rows, named tensors and the test result of a finished run.
type Fingerprint = (Vec<String>, Vec<(String, Vec<u8>)>, String);

fn fingerprint(dir: &Path) -> Fingerprint {
    let rows = run::read_progress(dir)
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {}",
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

struct KillAt(usize);
impl FscObserver for KillAt {
    fn step(&mut self, step: usize, _loss: f64) {
        if step == self.0 {
            panic!("killed at step {step}");
        }
    }
}

#[test]
fn every_rule_and_cell_trains_and_a_killed_run_resumes_bit_exactly() {
    for (rule, rnn) in [("gradient", "rnn"), ("hebbian", "lstm"), ("none", "rnn")] {
        let config = tiny(rule, rnn);
        let whole = tempdir(&format!("whole-{rule}-{rnn}"));
        let s = run::train_fsc(&whole, new_run(&config), &mut Silent).unwrap();
        assert_eq!(s.updates, 6);
        assert!(s.test_loss.is_finite() && s.test_loss > 0.0);
        let rows = run::read_progress(&whole).unwrap();
        assert_eq!(rows.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 2, 4]);
        assert!(rows.iter().all(|r| r.val_loss.is_finite()));
        let killed = tempdir(&format!("killed-{rule}-{rnn}"));
        let r = catch_unwind(AssertUnwindSafe(|| {
            run::train_fsc(&killed, new_run(&config), &mut KillAt(3))
        }));
        assert!(r.is_err());
        run::train_fsc(&killed, Start::Resume, &mut Silent).unwrap();
        assert_eq!(fingerprint(&killed), fingerprint(&whole), "{rule} {rnn}");
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let config = tiny("gradient", "rnn");
    let mut prints = Vec::new();
    for threads in [1, 2] {
        let dir = tempdir(&format!("threads{threads}"));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| run::train_fsc(&dir, new_run(&config), &mut Silent).unwrap());
        prints.push(fingerprint(&dir));
    }
    assert_eq!(prints[0], prints[1]);
}

#[test]
fn the_best_file_reproduces_the_test_result() {
    let config = tiny("gradient", "rnn");
    let dir = tempdir("best");
    let s = run::train_fsc(&dir, new_run(&config), &mut Silent).unwrap();
    let config = run::read_config(&dir).unwrap();
    let mut model = run::build_model::<f32>(&config).unwrap();
    run::load_best(&mut model, &dir.join(files::BEST)).unwrap();
    let data = run::FscData::load(&config).unwrap();
    let (loss, correct, total) =
        run::evaluate_batches(&mut model, data.test_batches::<f32>(&config)).unwrap();
    assert_eq!(total, s.test_episodes);
    assert_eq!(run::accuracy_ci95(correct, total).0, s.test_acc);
    assert_eq!(loss, s.test_loss);
}

#[test]
fn f64_runs_train_too() {
    let config = tiny("gradient", "rnn")
        .with_overrides(&["dtype=f64", "max_batch=1"])
        .unwrap();
    let dir = tempdir("f64");
    let s = run::train_fsc(&dir, new_run(&config), &mut Silent).unwrap();
    assert!(s.test_loss.is_finite());
}
