//! Loading data sets from a `data_dir` (`docs/fsc.md` §1): the file layout per phase, and a
//! clear error for every bad-file case.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use plastic_vision::pickle::write_dataset_pickle;
use plastic_vision::procedural::{generate, write_cifar_fs_layout, ProceduralConfig};
use plastic_vision::{DatasetKind, EpisodeConfig, EpisodeSampler, ImageDataset, Phase};

/// A fresh, empty folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("plastic-vision-dataset")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn small_config() -> ProceduralConfig {
    ProceduralConfig {
        seed: 3,
        train_classes: 7,
        val_classes: 6,
        test_classes: 6,
        images_per_class: 4,
    }
}

/// Writes `bytes` as the CIFAR-FS file of `phase` under `dir`.
fn put(dir: &Path, phase: Phase, bytes: &[u8]) -> PathBuf {
    let path = dir.join(DatasetKind::CifarFs.episode_file(phase));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn err_text(r: plastic::Result<ImageDataset>) -> String {
    r.map(|d| d.name().to_string()).unwrap_err().to_string()
}

#[test]
fn procedural_files_load_per_phase_like_the_in_memory_sets() {
    let dir = scratch("layout");
    let config = small_config();
    write_cifar_fs_layout(&config, &dir).unwrap();
    let loaded = ImageDataset::load_all(DatasetKind::CifarFs, &dir).unwrap();
    for (set, phase) in loaded.iter().zip(Phase::ALL) {
        let memory = generate(&config, phase).unwrap();
        assert_eq!(set.images(), memory.images(), "{phase}");
        assert_eq!(set.labels(), memory.labels(), "{phase}");
        let ids: Vec<i64> = config.class_ids(phase).map(|c| c as i64).collect();
        assert_eq!(set.classes(), ids.as_slice());
        for k in 0..set.classes().len() {
            assert_eq!(set.class_images(k).len(), 4);
        }
        assert_eq!(set.image_size(), 32);
    }
}

#[test]
fn missing_files_name_every_expected_file_and_the_source() {
    let dir = scratch("missing");
    for kind in [DatasetKind::CifarFs, DatasetKind::MiniImageNet] {
        let msg = err_text(ImageDataset::load(kind, &dir, Phase::Val));
        for phase in Phase::ALL {
            let path = dir.join(kind.episode_file(phase));
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        assert!(
            msg.contains("MetaOptNet") && msg.contains("procedural"),
            "{msg}"
        );
    }
    let msg = err_text(ImageDataset::load(
        DatasetKind::MiniImageNet,
        &dir,
        Phase::Train,
    ));
    assert!(
        msg.contains("miniImageNet_category_split_train_phase_train.pickle"),
        "{msg}"
    );
    assert!(
        msg.contains("miniImageNet_category_split_test.pickle"),
        "{msg}"
    );
    // One file present: the message still lists all three and says which are missing.
    let set = generate(&small_config(), Phase::Train).unwrap();
    put(
        &dir,
        Phase::Train,
        &write_dataset_pickle(set.images(), [set.len(), 32, 32, 3], set.labels()),
    );
    assert!(ImageDataset::load(DatasetKind::CifarFs, &dir, Phase::Train).is_ok());
    let msg = ImageDataset::load_all(DatasetKind::CifarFs, &dir)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("CIFAR_FS_train.pickle (train, present)"),
        "{msg}"
    );
    assert!(msg.contains("CIFAR_FS_val.pickle (val, MISSING)"), "{msg}");
    assert!(
        msg.contains("CIFAR_FS_test.pickle (test, MISSING)"),
        "{msg}"
    );
}

#[test]
fn truncated_and_corrupted_files_are_errors_naming_the_file() {
    let dir = scratch("corrupt");
    let set = generate(&small_config(), Phase::Test).unwrap();
    let good = write_dataset_pickle(set.images(), [set.len(), 32, 32, 3], set.labels());
    let path = put(&dir, Phase::Test, &good[..good.len() / 2]);
    let msg = err_text(ImageDataset::load(DatasetKind::CifarFs, &dir, Phase::Test));
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("truncated"),
        "{msg}"
    );
    put(&dir, Phase::Test, b"this is not a pickle at all");
    let msg = err_text(ImageDataset::load(DatasetKind::CifarFs, &dir, Phase::Test));
    assert!(msg.contains("not a pickle"), "{msg}");
    put(&dir, Phase::Test, &[]);
    assert!(ImageDataset::load(DatasetKind::CifarFs, &dir, Phase::Test).is_err());
    // A damaged header byte in the middle of the file (the dtype string 'u1' → 'f1').
    let mut bad = good.clone();
    let at = bad.windows(2).position(|w| w == b"u1").unwrap();
    bad[at] = b'f';
    put(&dir, Phase::Test, &bad);
    let msg = err_text(ImageDataset::load(DatasetKind::CifarFs, &dir, Phase::Test));
    assert!(msg.contains("dtype") && msg.contains("uint8"), "{msg}");
}

#[test]
fn wrong_dtype_shape_and_label_count_are_clear_errors() {
    let dir = scratch("shape");
    let committed = |name: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(name),
        )
        .unwrap()
    };
    put(&dir, Phase::Train, &committed("bad_float32.pickle"));
    let msg = err_text(ImageDataset::load(DatasetKind::CifarFs, &dir, Phase::Train));
    assert!(msg.contains("uint8"), "{msg}");
    // A valid pickle of 2 × 2 images is not CIFAR-FS (32 × 32) nor miniImageNet (84 × 84).
    put(&dir, Phase::Train, &committed("py3_protocol4.pickle"));
    let msg = err_text(ImageDataset::load(DatasetKind::CifarFs, &dir, Phase::Train));
    assert!(
        msg.contains("(6, 2, 2, 3)") && msg.contains("(N, 32, 32, 3)"),
        "{msg}"
    );
    // CIFAR-FS-sized images in the miniImageNet layout.
    let data = vec![7u8; 2 * 32 * 32 * 3];
    let path = dir.join(DatasetKind::MiniImageNet.episode_file(Phase::Test));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, write_dataset_pickle(&data, [2, 32, 32, 3], &[0, 1])).unwrap();
    let msg = err_text(ImageDataset::load(
        DatasetKind::MiniImageNet,
        &dir,
        Phase::Test,
    ));
    assert!(msg.contains("(N, 84, 84, 3)"), "{msg}");
    // Four channels.
    let data = vec![7u8; 2 * 32 * 32 * 4];
    put(
        &dir,
        Phase::Val,
        &write_dataset_pickle(&data, [2, 32, 32, 4], &[0, 1]),
    );
    let msg = err_text(ImageDataset::load(DatasetKind::CifarFs, &dir, Phase::Val));
    assert!(msg.contains("(2, 32, 32, 4)"), "{msg}");
    // Three images, two labels.
    let data = vec![7u8; 3 * 32 * 32 * 3];
    put(
        &dir,
        Phase::Val,
        &write_dataset_pickle(&data, [3, 32, 32, 3], &[0, 1]),
    );
    let msg = err_text(ImageDataset::load(DatasetKind::CifarFs, &dir, Phase::Val));
    assert!(
        msg.contains("3 images") && msg.contains("2 entries"),
        "{msg}"
    );
    // No images at all.
    put(
        &dir,
        Phase::Val,
        &write_dataset_pickle(&[], [0, 32, 32, 3], &[]),
    );
    let msg = err_text(ImageDataset::load(DatasetKind::CifarFs, &dir, Phase::Val));
    assert!(msg.contains("no images"), "{msg}");
}

#[test]
fn too_few_classes_or_images_are_errors_before_sampling() {
    let sampler = |set: ImageDataset| {
        EpisodeSampler::new(
            Arc::new(set),
            Phase::Train,
            EpisodeConfig::fsc(Phase::Train),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let image = 32 * 32 * 3;
    // Exactly 5 classes: the reference needs more than `way` (docs/fsc.md §1).
    let five = ImageDataset::new(
        DatasetKind::CifarFs,
        "five",
        vec![0; 10 * image],
        (0..10).map(|i| i / 2).collect(),
    )
    .unwrap();
    let msg = sampler(five);
    assert!(
        msg.contains("5 classes") && msg.contains("more than 5"),
        "{msg}"
    );
    // Six classes, one of them with a single image (episodes need shot + query = 2).
    let mut labels: Vec<i64> = (0..12).map(|i| i / 2).collect();
    labels[11] = 4;
    let thin =
        ImageDataset::new(DatasetKind::CifarFs, "thin", vec![0; 12 * image], labels).unwrap();
    let msg = sampler(thin);
    assert!(
        msg.contains("class 5 has 1 image") && msg.contains("shot + query = 2"),
        "{msg}"
    );
    // Six classes of two images each is enough.
    let ok = ImageDataset::new(
        DatasetKind::CifarFs,
        "ok",
        vec![0; 12 * image],
        (0..12).map(|i| i / 2).collect(),
    )
    .unwrap();
    assert!(
        EpisodeSampler::new(Arc::new(ok), Phase::Train, EpisodeConfig::fsc(Phase::Train)).is_ok()
    );
    // Image bytes that do not match the labels.
    let msg = ImageDataset::new(DatasetKind::CifarFs, "short", vec![0; 100], vec![1])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("expected 1 × 32 × 32 × 3 = 3072"), "{msg}");
}
