//! The data-set pickle reader on files written by Python (committed under `tests/data`,
//! made by `tests/data/make_pickles.py`), on bad files, and under fuzzing.

use std::path::PathBuf;

use plastic::rng::Rng;
use plastic_vision::pickle::{read_dataset_pickle, write_dataset_pickle, DatasetPickle};

const LABELS: [i64; 6] = [3, 3, 70000, 70000, 300, 300];
const SHAPE: [usize; 4] = [6, 2, 2, 3];
const VALID: [&str; 5] = [
    "py2_protocol2.pickle",
    "py3_protocol2.pickle",
    "py3_protocol4.pickle",
    "py3_protocol5.pickle",
    "py3_numpy_labels.pickle",
];

fn data_file(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What `make_pickles.py` stored: `data.flat[i] = (37 i + 11) mod 256`.
fn expected() -> DatasetPickle {
    let n: usize = SHAPE.iter().product();
    DatasetPickle {
        data: (0..n).map(|i| ((37 * i + 11) % 256) as u8).collect(),
        shape: SHAPE,
        labels: LABELS.to_vec(),
    }
}

#[test]
fn every_python_pickle_reads_exactly() {
    for name in VALID {
        let got = read_dataset_pickle(data_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, expected(), "{name}");
    }
}

#[test]
fn wrong_dtype_and_rank_are_clear_errors() {
    let err = read_dataset_pickle(data_file("bad_float32.pickle")).unwrap_err();
    assert!(
        err.contains("dtype `<f4`") && err.contains("uint8"),
        "{err}"
    );
    let err = read_dataset_pickle(data_file("bad_3d.pickle")).unwrap_err();
    assert!(err.contains("[6, 2, 6]") && err.contains("4-D"), "{err}");
}

#[test]
fn truncated_files_are_errors() {
    for name in VALID {
        let bytes = data_file(name);
        for len in 0..bytes.len() {
            let r = read_dataset_pickle(bytes[..len].to_vec());
            assert!(r.is_err(), "{name} truncated to {len} bytes was accepted");
        }
    }
}

#[test]
fn other_python_objects_are_rejected() {
    // A pickled list, and a global that is not numpy's.
    let err = read_dataset_pickle(b"\x80\x02]q\x00.".to_vec()).unwrap_err();
    assert!(err.contains("not a dict"), "{err}");
    let err = read_dataset_pickle(b"\x80\x02cos\nsystem\n.".to_vec()).unwrap_err();
    assert!(err.contains("os.system"), "{err}");
    let err = read_dataset_pickle(b"\x80\x02}q\x00(U\x04dataq\x01K\x01u.".to_vec()).unwrap_err();
    assert!(err.contains("`labels`"), "{err}");
}

#[test]
fn writer_round_trips_large_labels_and_sizes() {
    let shape = [3, 32, 32, 3];
    let data: Vec<u8> = (0..shape.iter().product::<usize>())
        .map(|i| (i % 251) as u8)
        .collect();
    let labels = vec![0, 99, 1 << 35];
    let got = read_dataset_pickle(write_dataset_pickle(&data, shape, &labels)).unwrap();
    assert_eq!(
        got,
        DatasetPickle {
            data,
            shape,
            labels
        }
    );
}

/// A random mutation of `bytes`: flipped bytes, a truncation, an insertion, a deleted or
/// duplicated span, or a length-like field overwritten with a huge value.
fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for _ in 0..1 + rng.below(3) {
        if b.is_empty() {
            break;
        }
        let at = rng.below(b.len());
        match rng.below(6) {
            0 => b[at] = rng.below(256) as u8,
            1 => b.truncate(at),
            2 => b.insert(at, rng.below(256) as u8),
            3 => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                b.drain(at..end);
            }
            4 => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                let span = b[at..end].to_vec();
                b.splice(at..at, span);
            }
            _ => {
                let huge = [0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f];
                for (i, &v) in huge.iter().enumerate().take(1 + rng.below(8)) {
                    if at + i < b.len() {
                        b[at + i] = v;
                    }
                }
            }
        }
    }
    b
}

#[test]
fn fuzzed_files_give_errors_or_consistent_results_never_panics() {
    let mut rng = Rng::new(2024);
    let (mut ok, mut err) = (0, 0);
    for name in VALID.iter().chain(&["bad_float32.pickle", "bad_3d.pickle"]) {
        let bytes = data_file(name);
        for _ in 0..3000 {
            let input = mutate(&mut rng, &bytes);
            let result = std::panic::catch_unwind(|| read_dataset_pickle(input.clone()));
            match result {
                Err(_) => panic!("the reader panicked on a mutation of {name}: {input:?}"),
                Ok(Ok(p)) => {
                    ok += 1;
                    assert_eq!(p.data.len(), p.shape.iter().product::<usize>(), "{name}");
                }
                Ok(Err(message)) => {
                    err += 1;
                    assert!(!message.is_empty());
                }
            }
        }
    }
    // Both outcomes occur: mutations of payload bytes and labels still parse.
    assert!(ok > 100 && err > 1000, "ok {ok}, err {err}");
}
