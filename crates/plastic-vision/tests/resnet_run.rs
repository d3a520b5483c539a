//! An fsc run with ResNet-12 (`cnn = resnet12`, docs/fsc.md §5.1) on the procedural data
//! set, in seconds: dropout and DropBlock on, a kill and a bit-exact resume (the masks come
//! from the run's seed and the CNN's forward-call count, which the checkpoint keeps), the
//! same result on 1 and 2 threads, and the drop rate changing the training.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use plastic_vision::model::CNN_CALLS_BUFFER;
use plastic_vision::run::{self, files, FscObserver, Silent, Start};
use plastic_vision::FscConfig;

fn tiny(drop_rate: &str) -> FscConfig {
    FscConfig::default()
        .with_overrides(&[
            "image_dataset=procedural",
            "procedural_images=6",
            "cnn=resnet12",
            "cnn_width=2",
            &format!("resnet_drop_rate={drop_rate}"),
            "hidden_size=16",
            "batch_size=4",
            "max_batch=5",
            "log_every=2",
            "test_batch=2",
            "seed=3",
        ])
        .unwrap()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "plastic-vision-resnet-run-{}-{name}",
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

/// Progress rows (without the clock), named best tensors and the test result.
type Fingerprint = (Vec<String>, Vec<(String, Vec<u8>)>, String);

fn fingerprint(dir: &Path) -> Fingerprint {
    let rows = run::read_progress(dir)
        .unwrap()
        .iter()
        .map(|r| format!("{} {} {} {}", r.step, r.train_loss, r.val_loss, r.val_acc))
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
fn resnet12_run_with_dropblock_resumes_bit_exactly_on_any_thread_count() {
    let config = tiny("0.3");
    let whole = tempdir("whole");
    let s = run::train_fsc(&whole, new_run(&config), &mut Silent).unwrap();
    assert_eq!(s.updates, 6);
    assert!(s.test_loss.is_finite() && s.test_loss > 0.0);
    let print = fingerprint(&whole);
    let names: Vec<&str> = print.1.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"cnn.layer4.down.bn.running_var"),
        "{names:?}"
    );
    assert!(names.contains(&CNN_CALLS_BUFFER), "{names:?}");

    let killed = tempdir("killed");
    let r = catch_unwind(AssertUnwindSafe(|| {
        run::train_fsc(&killed, new_run(&config), &mut KillAt(3))
    }));
    assert!(r.is_err());
    run::train_fsc(&killed, Start::Resume, &mut Silent).unwrap();
    assert_eq!(fingerprint(&killed), print, "resumed run differs");

    let two = tempdir("two-threads");
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(|| run::train_fsc(&two, new_run(&config), &mut Silent).unwrap());
    let one = tempdir("one-thread");
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| run::train_fsc(&one, new_run(&config), &mut Silent).unwrap());
    assert_eq!(
        fingerprint(&two),
        fingerprint(&one),
        "thread count changes results"
    );
    assert_eq!(fingerprint(&one), print);

    // the drop rate is used: without it the training losses differ
    let plain = tempdir("no-drop");
    run::train_fsc(&plain, new_run(&tiny("0")), &mut Silent).unwrap();
    let (a, b) = (
        run::read_progress(&plain).unwrap(),
        run::read_progress(&whole).unwrap(),
    );
    assert_ne!(a[1].train_loss, b[1].train_loss);
}
