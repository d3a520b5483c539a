//! An fsc run that starts from a pretrained CNN (`cnn_from`, docs/fsc.md §5.3), frozen or
//! fine-tuned, and the embedding cache of a frozen CNN: cached and uncached runs give
//! bit-identical results, the cache is rebuilt when the CNN or the data change (or the file
//! is damaged), a frozen CNN does not change, and a wrong `cnn_from` is a clear error.

use std::path::{Path, PathBuf};

use plastic_vision::cache::{CacheStatus, EmbeddingCache, FILE};
use plastic_vision::pretrain::run::{self as pre, Start as PreStart};
use plastic_vision::pretrain::{PretrainConfig, PretrainKind};
use plastic_vision::run::{self, build_model, files, FscData, Silent, Start};
use plastic_vision::{FscConfig, ImageDataset, Phase};

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "plastic-vision-cache-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A tiny pretraining run (ProtoNet of width 4) with `seed`.
fn pretrained(name: &str, seed: u64) -> PathBuf {
    let dir = tempdir(name);
    let config = PretrainConfig::new(PretrainKind::Classification)
        .with_overrides(&[
            "image_dataset=procedural",
            "procedural_images=8",
            "cnn_width=4",
            "batch_size=16",
            "max_batch=4",
            "log_every=2",
            "test_batch=1",
            &format!("seed={seed}"),
        ])
        .unwrap();
    pre::train_pretrain(
        &dir,
        PreStart::New {
            config: Box::new(config),
            overwrite: true,
        },
        &mut Silent,
    )
    .unwrap();
    dir
}

fn fsc(cnn_from: &Path, extra: &[&str]) -> FscConfig {
    let mut o: Vec<String> = [
        "image_dataset=procedural",
        "procedural_images=8",
        "cnn_width=4",
        "hidden_size=16",
        "batch_size=4",
        "max_batch=5",
        "log_every=2",
        "test_batch=2",
        "seed=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.push(format!("cnn_from={}", cnn_from.display()));
    o.extend(extra.iter().map(|s| s.to_string()));
    FscConfig::default().with_overrides(&o).unwrap()
}

fn train(dir: &Path, config: &FscConfig) -> plastic::Result<run::FscSummary> {
    run::train_fsc(
        dir,
        Start::New {
            config: Box::new(config.clone()),
            overwrite: true,
        },
        &mut Silent,
    )
}

/// Progress rows without the clock, every tensor of best.safetensors, the test result
/// without the clock.
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
    let mut t: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect();
    t.sort();
    let mut s = run::read_summary(dir).unwrap();
    s.elapsed_s = 0.0;
    (rows, t, serde_json::to_string(&s).unwrap())
}

fn sets(data: &FscData) -> [&ImageDataset; 3] {
    [
        data.train.dataset(),
        data.val.dataset(),
        data.test.dataset(),
    ]
}

#[test]
fn cached_and_uncached_frozen_runs_are_bit_identical() {
    let source = pretrained("src-identical", 1);
    let base = ["freeze_cnn=true", "train_augment=false"];
    let uncached = fsc(&source, &[&base[..], &["embedding_cache=false"]].concat());
    let cached = fsc(&source, &base);
    assert!(cached.uses_embedding_cache() && !uncached.uses_embedding_cache());
    let (a, b) = (tempdir("uncached"), tempdir("cached"));
    train(&a, &uncached).unwrap();
    train(&b, &cached).unwrap();
    assert!(b.join(FILE).is_file() && !a.join(FILE).exists());
    let (fa, fb) = (fingerprint(&a), fingerprint(&b));
    assert_eq!(fa.0, fb.0, "progress");
    assert_eq!(fa.1, fb.1, "best parameters");
    assert_eq!(fa.2, fb.2, "test result");
    // f64 too
    let (c, d) = (tempdir("uncached64"), tempdir("cached64"));
    train(&c, &uncached.with_overrides(&["dtype=f64"]).unwrap()).unwrap();
    train(&d, &cached.with_overrides(&["dtype=f64"]).unwrap()).unwrap();
    assert_eq!(fingerprint(&c), fingerprint(&d));
}

#[test]
fn the_cache_holds_what_the_frozen_cnn_computes_and_is_rebuilt_when_cnn_or_data_change() {
    let (s1, s2) = (pretrained("src-a", 1), pretrained("src-b", 2));
    let config = fsc(&s1, &["freeze_cnn=true", "train_augment=false"]);
    let data = FscData::load(&config).unwrap();
    let model = build_model::<f32>(&config).unwrap();
    let dir = tempdir("cache-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let (cache, status) = EmbeddingCache::open(&dir, &model, sets(&data)).unwrap();
    assert_eq!(status, CacheStatus::Built);
    // an episode batch's images, as the uncached path embeds them one step at a time
    let batch = data.val.batch::<f32>(9, 0, 4);
    let fsz = cache.feature_size();
    let got = cache.features(Phase::Val, &batch.image_ids).unwrap();
    for t in 0..batch.steps() {
        let direct = model.cnn_features_eval(&batch.step_images(t), 4).unwrap();
        for e in 0..4 {
            assert_eq!(
                &got[(e * batch.steps() + t) * fsz..][..fsz],
                &direct[e * fsz..][..fsz],
                "episode {e} step {t}"
            );
        }
    }
    // same CNN and data: read back
    let (again, status) = EmbeddingCache::open(&dir, &model, sets(&data)).unwrap();
    assert_eq!(status, CacheStatus::Loaded);
    assert_eq!(
        again.features(Phase::Train, &[0, 5]).unwrap(),
        cache.features(Phase::Train, &[0, 5]).unwrap()
    );
    // another CNN: rebuilt
    let other = build_model::<f32>(&fsc(&s2, &["freeze_cnn=true", "train_augment=false"])).unwrap();
    let (c2, status) = EmbeddingCache::open(&dir, &other, sets(&data)).unwrap();
    assert_eq!(status, CacheStatus::Rebuilt);
    assert_ne!(c2.key(), cache.key());
    // other data (another procedural seed): rebuilt
    let other_data =
        FscData::load(&config.with_overrides(&["procedural_seed=5"]).unwrap()).unwrap();
    let (c3, status) = EmbeddingCache::open(&dir, &other, sets(&other_data)).unwrap();
    assert_eq!(status, CacheStatus::Rebuilt);
    assert_ne!(c3.key(), c2.key());
    // a damaged file: rebuilt, not trusted
    let mut bytes = std::fs::read(dir.join(FILE)).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    std::fs::write(dir.join(FILE), &bytes).unwrap();
    let (c4, status) = EmbeddingCache::open(&dir, &other, sets(&other_data)).unwrap();
    assert_eq!(status, CacheStatus::Rebuilt);
    assert_eq!(
        c4.features(Phase::Test, &[3]).unwrap(),
        c3.features(Phase::Test, &[3]).unwrap()
    );
    // out-of-range ids are an error
    assert!(c4.features(Phase::Test, &[1 << 20]).is_err());
}

#[test]
fn a_frozen_cnn_does_not_change_and_a_fine_tuned_one_does() {
    let source = pretrained("src-frozen", 1);
    let loaded = pre::load_pretrained_cnn(&source, fsc(&source, &[]).backbone()).unwrap();
    let best = |dir: &Path, name: &str| -> Vec<u8> {
        let bytes = std::fs::read(dir.join(files::BEST)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let v = st.tensor(name).unwrap().data().to_vec();
        v
    };
    let as_f32 =
        |v: &[f64]| -> Vec<u8> { v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect() };
    // frozen, with augmentation (so without the cache)
    let frozen = tempdir("frozen");
    let config = fsc(&source, &["freeze_cnn=true", "max_batch=6", "log_every=3"]);
    assert!(!config.uses_embedding_cache());
    let s = train(&frozen, &config).unwrap();
    assert!(
        s.best_step > 0,
        "the best must be after some updates: {s:?}"
    );
    for name in ["cnn.0.conv.w", "cnn.3.bn.gamma"] {
        assert_eq!(
            best(&frozen, name),
            as_f32(&loaded.params[name].data),
            "{name}"
        );
    }
    for name in ["cnn.0.bn.running_mean", "cnn.2.bn.running_var"] {
        assert_eq!(
            best(&frozen, name),
            as_f32(&loaded.buffers[name].data),
            "{name}"
        );
    }
    // the model says so too: untrainable, zero gradient
    let model = build_model::<f64>(&config).unwrap();
    assert!(model.frozen_cnn());
    assert!(model
        .layout()
        .iter()
        .filter(|i| i.name.starts_with("cnn."))
        .all(|i| !i.trainable));
    // fine-tuned: starts from the pretrained CNN and changes it
    let tuned = tempdir("tuned");
    let config = fsc(&source, &["max_batch=6", "log_every=3"]);
    let s = train(&tuned, &config).unwrap();
    assert!(s.best_step > 0, "{s:?}");
    assert_ne!(
        best(&tuned, "cnn.0.conv.w"),
        as_f32(&loaded.params["cnn.0.conv.w"].data)
    );
    let fresh = build_model::<f64>(&fsc(&source, &[])).unwrap();
    let w = &fresh.layout()[0];
    assert_eq!(w.name, "cnn.0.conv.w");
    assert_eq!(
        &fresh.params()[w.range()],
        &loaded.params["cnn.0.conv.w"].data[..]
    );
}

#[test]
fn a_wrong_cnn_from_is_a_clear_error() {
    let source = pretrained("src-wrong", 1);
    let err = |config: &FscConfig| train(&tempdir("wrong"), config).unwrap_err().to_string();
    let e = err(&fsc(&source, &["cnn_width=8"]));
    assert!(
        e.contains("the pretrained CNN is protonet of width 4")
            && e.contains("needs protonet of width 8"),
        "{e}"
    );
    let e = err(&fsc(&source, &["cnn=resnet12"]));
    assert!(e.contains("needs resnet12"), "{e}");
    let e = err(&fsc(&tempdir("missing"), &[]));
    assert!(e.contains("no such folder"), "{e}");
    // a damaged best.safetensors
    let copy = tempdir("damaged");
    std::fs::create_dir_all(&copy).unwrap();
    for f in [pre::files::CONFIG, pre::files::BEST] {
        std::fs::copy(source.join(f), copy.join(f)).unwrap();
    }
    let mut bytes = std::fs::read(copy.join(pre::files::BEST)).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(copy.join(pre::files::BEST), &bytes).unwrap();
    let e = err(&fsc(&copy, &[]));
    assert!(
        e.contains("corrupt") && e.contains("best.safetensors"),
        "{e}"
    );
}
