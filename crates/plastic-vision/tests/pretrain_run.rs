//! Pretraining runs (docs/fsc.md §7–§8) on a small procedural set: both kinds run to the
//! end in a run folder and learn, a killed run resumes bit-exactly, batches and results do
//! not depend on the thread count, the held-out split is never trained on, and a
//! pretraining folder's CNN is read back for an fsc run with clear errors for a wrong one.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use plastic_vision::pretrain::data::PretrainData;
use plastic_vision::pretrain::run::{self, files, load_pretrained_cnn, Start};
use plastic_vision::pretrain::{PretrainConfig, PretrainKind};
use plastic_vision::run::{read_progress, FscLogRow, FscObserver, Silent};

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "plastic-vision-pretrain-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn small(kind: PretrainKind) -> PretrainConfig {
    PretrainConfig::new(kind)
        .with_overrides(&[
            "image_dataset=procedural",
            "procedural_images=10",
            "cnn_width=4",
            "simclr_head_size=8",
            "batch_size=16",
            "max_batch=7",
            "log_every=3",
            "test_batch=2",
            "lr=0.01",
        ])
        .unwrap()
}

fn new_run(config: &PretrainConfig) -> Start {
    Start::New {
        config: Box::new(config.clone()),
        overwrite: true,
    }
}

/// Progress without the clock and the bytes of every tensor of best.safetensors.
type Fingerprint = (Vec<String>, Vec<(String, Vec<u8>)>);

fn fingerprint(dir: &Path) -> Fingerprint {
    let rows = read_progress(dir)
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
    let mut t: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect();
    t.sort();
    (rows, t)
}

#[derive(Default)]
struct Record {
    steps: Vec<usize>,
    losses: Vec<f64>,
    logs: Vec<FscLogRow>,
    panic_at: Option<usize>,
}

impl FscObserver for Record {
    fn step(&mut self, step: usize, loss: f64) {
        if Some(step) == self.panic_at {
            panic!("killed at step {step}");
        }
        self.steps.push(step);
        self.losses.push(loss);
    }
    fn log(&mut self, row: &FscLogRow) {
        self.logs.push(row.clone());
    }
}

#[test]
fn both_kinds_run_in_a_run_folder_and_log_like_an_fsc_run() {
    for kind in PretrainKind::ALL {
        let dir = tempdir(&format!("protocol-{kind}"));
        let config = small(kind);
        let mut rec = Record::default();
        let s = run::train_pretrain(&dir, new_run(&config), &mut rec).unwrap();
        assert_eq!(rec.steps, (0..=7).collect::<Vec<_>>());
        assert_eq!(s.updates, 8);
        assert_eq!(s.task, kind.task());
        assert_eq!(
            (s.classes, s.train_images, s.holdout_images),
            (64, 512, 128)
        );
        let rows = read_progress(&dir).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.step).collect::<Vec<_>>(),
            vec![0, 3, 6]
        );
        assert!(rows
            .iter()
            .all(|r| r.val_loss.is_finite() && r.val_loss > 0.0));
        for f in [files::CONFIG, files::BEST, files::CHECKPOINT, files::RESULT] {
            assert!(dir.join(f).is_file(), "{kind}: {f}");
        }
        let text = std::fs::read_to_string(dir.join(files::CONFIG)).unwrap();
        assert!(text.starts_with(&format!("task = \"{kind}\"")), "{text}");
        match kind {
            PretrainKind::Classification => {
                // cosine schedule stepped at the logs after the first
                assert_eq!(rows[0].lr, 0.01);
                assert!(rows[1].lr < 0.01 && rows[2].lr < rows[1].lr);
                let top = rows.iter().map(|r| r.val_acc).fold(f64::MIN, f64::max);
                assert_eq!(s.best_val_acc, top);
            }
            PretrainKind::Simclr => {
                assert!(rows.iter().all(|r| r.lr == 0.01));
                let low = rows.iter().map(|r| r.val_loss).fold(f64::MAX, f64::min);
                assert_eq!(s.best_val_loss, low);
            }
        }
        // a finished run is not retrained
        let again = run::train_pretrain(&dir, Start::Resume, &mut Silent).unwrap();
        assert_eq!(again, s);
    }
}

#[test]
fn a_killed_run_resumes_bit_exactly() {
    // both kinds with the ProtoNet, and SimCLR with a small ResNet-12 whose dropout and
    // DropBlock draw from the seed and the CNN's call count
    let resnet = small(PretrainKind::Simclr)
        .with_overrides(&["cnn=resnet12", "cnn_width=2", "resnet_drop_rate=0.1"])
        .unwrap();
    for (name, config) in [
        ("classification", small(PretrainKind::Classification)),
        ("simclr", small(PretrainKind::Simclr)),
        ("simclr-resnet12", resnet),
    ] {
        let kind = name;
        let whole = tempdir(&format!("whole-{kind}"));
        run::train_pretrain(&whole, new_run(&config), &mut Silent).unwrap();
        for kill in [2, 4] {
            let dir = tempdir(&format!("killed-{kind}-{kill}"));
            let mut rec = Record {
                panic_at: Some(kill),
                ..Default::default()
            };
            let r = catch_unwind(AssertUnwindSafe(|| {
                run::train_pretrain(&dir, new_run(&config), &mut rec).unwrap()
            }));
            assert!(r.is_err());
            run::train_pretrain(&dir, Start::Resume, &mut Silent).unwrap();
            assert_eq!(
                fingerprint(&dir),
                fingerprint(&whole),
                "{kind} killed at {kill}"
            );
        }
    }
}

#[test]
fn batches_and_runs_do_not_depend_on_the_thread_count() {
    let config = small(PretrainKind::Simclr);
    let data = PretrainData::load(&config).unwrap();
    let ids = data.train_indices(0, 3, 16);
    let mut batches = Vec::new();
    let mut prints = Vec::new();
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        batches.push(pool.install(|| {
            (
                data.simclr_batch::<f32>(&ids, 7),
                data.classification_batch::<f32>(&ids, Some(7)),
            )
        }));
        let dir = tempdir(&format!("threads{threads}"));
        pool.install(|| run::train_pretrain(&dir, new_run(&config), &mut Silent).unwrap());
        prints.push(fingerprint(&dir));
    }
    assert_eq!(batches[0], batches[1]);
    assert_eq!(prints[0], prints[1]);
    // the two views of an image differ, and another key gives other views
    let (views, _) = &batches[0];
    let len = 3 * 32 * 32;
    assert_ne!(&views.images[..len], &views.images[16 * len..17 * len]);
    assert_ne!(views.images, data.simclr_batch::<f32>(&ids, 8).images);
}

#[test]
fn training_never_sees_the_held_out_images_and_each_epoch_sees_every_other_once() {
    let config = small(PretrainKind::Classification);
    let data = PretrainData::load(&config).unwrap();
    let per_epoch = data.train_len() / 16;
    let mut seen: Vec<usize> = (0..per_epoch as u64)
        .flat_map(|s| data.train_indices(0, s, 16))
        .collect();
    assert!(seen.iter().all(|i| !i.is_multiple_of(5)));
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), per_epoch * 16);
    // the next epoch is another order
    assert_ne!(
        data.train_indices(0, 0, 16),
        data.train_indices(0, per_epoch as u64, 16)
    );
}

#[test]
fn classification_pretraining_learns_the_training_classes() {
    // the procedural set's 64 training classes with 16 training images each, 201 updates:
    // the held-out loss falls below ln 64 (uniform) and the accuracy rises above twice
    // chance (1/64 = 1.6%)
    let config = PretrainConfig::new(PretrainKind::Classification)
        .with_overrides(&[
            "image_dataset=procedural",
            "procedural_images=20",
            "cnn_width=8",
            "batch_size=32",
            "max_batch=200",
            "log_every=100",
            "test_batch=10",
        ])
        .unwrap();
    let dir = tempdir("learns");
    let s = run::train_pretrain(&dir, new_run(&config), &mut Silent).unwrap();
    let rows = read_progress(&dir).unwrap();
    assert!(s.best_val_acc > 2.0 * 100.0 / 64.0, "{rows:?}");
    assert!(s.best_val_loss < 64f64.ln() - 0.1, "{rows:?}");
    assert!(
        rows.last().unwrap().train_loss < rows[1].train_loss,
        "{rows:?}"
    );
}

#[test]
fn a_pretrained_cnn_is_read_back_and_a_wrong_one_is_a_clear_error() {
    let config = small(PretrainKind::Classification);
    let dir = tempdir("source");
    run::train_pretrain(&dir, new_run(&config), &mut Silent).unwrap();
    let cnn = run::cnn_config(&config);
    let got = load_pretrained_cnn(&dir, cnn).unwrap();
    assert!(got.params.contains_key("cnn.0.conv.w"));
    assert!(got.buffers.contains_key("cnn.3.bn.running_var"));
    let n = got.buffers["cnn.0.bn.num_batches_tracked"].data[0];
    assert!(n >= 0.0 && n.fract() == 0.0);
    let err = |d: &Path, c| load_pretrained_cnn(d, c).unwrap_err().to_string();
    // another width
    let wider = run::cnn_config(&config.with_overrides(&["cnn_width=8"]).unwrap());
    let e = err(&dir, wider);
    assert!(
        e.contains("width 4 on 32×32 images (16 features), but this run needs protonet of width 8"),
        "{e}"
    );
    // a missing folder, a folder that is no run, a missing file, a corrupt file
    let e = err(&tempdir("nothing"), cnn);
    assert!(e.contains("no such folder"), "{e}");
    let empty = tempdir("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(err(&empty, cnn).contains("not a run folder"));
    let copy = tempdir("copy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(dir.join(files::CONFIG), copy.join(files::CONFIG)).unwrap();
    let e = err(&copy, cnn);
    assert!(e.contains("best.safetensors is missing"), "{e}");
    let mut bytes = std::fs::read(dir.join(files::BEST)).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x10;
    std::fs::write(copy.join(files::BEST), &bytes).unwrap();
    let e = err(&copy, cnn);
    assert!(e.contains("corrupt"), "{e}");
    // an fsc run folder is not a pretraining run
    std::fs::write(copy.join(files::CONFIG), "task = \"fsc\"\n").unwrap();
    let e = err(&copy, cnn);
    assert!(e.contains("not a pretraining run"), "{e}");
}

#[test]
fn simclr_pretraining_learns_to_match_views() {
    // 101 updates: the held-out NT-Xent falls well below ln(2N − 1), the loss of an
    // embedding that cannot tell the partner view from the others
    let config = PretrainConfig::new(PretrainKind::Simclr)
        .with_overrides(&[
            "image_dataset=procedural",
            "procedural_images=20",
            "cnn_width=8",
            "simclr_head_size=32",
            "batch_size=32",
            "max_batch=100",
            "log_every=50",
            "test_batch=4",
        ])
        .unwrap();
    let dir = tempdir("simclr-learns");
    let s = run::train_pretrain(&dir, new_run(&config), &mut Silent).unwrap();
    let rows = read_progress(&dir).unwrap();
    assert!(s.best_val_loss < 63f64.ln() - 0.2, "{rows:?}");
    assert_eq!(s.best_step, 100, "{rows:?}");
}
