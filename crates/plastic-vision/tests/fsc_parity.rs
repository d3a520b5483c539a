//! Parity of the fsc model (CNN → projection → plastic RNN, docs/fsc.md §4–§5) with the
//! authors' reference: every `fsc-*.json` in the plastic crate's fixture folder (ProtoNet
//! and ResNet-12) is checked in f64 (1e-9 relative, 1e-12 absolute for all-zero tensors) and
//! f32 (1e-4): CNN features, RNN input, outputs, η, λ, inner loss, loss, first-query
//! accuracy, every gradient (CNN, BatchNorm affine, projection, RNN, α, `out_weight`) and the
//! BatchNorm buffers after the forward pass. An unknown CNN fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plastic::fixture::{compare, tensor, Fixture};
use plastic::params::NamedTensor;
use plastic::Float;
use plastic_vision::cnn::{BackboneConfig, ProtoNetConfig, ResNet12Config, LEAKY_SLOPE};
use plastic_vision::model::{FscBatch, FscConfig, FscModel};
use serde_json::Value;

fn fixture_paths() -> Vec<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plastic/tests/fixtures/reference/fsc");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("fsc-"))
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fsc-*.json fixtures in {}", dir.display());
    v
}

/// One fixture: the recurrent part through `plastic::fixture`, the rest from the same file.
struct Case {
    fx: Fixture,
    config: FscConfig,
    params: BTreeMap<String, NamedTensor>,
    buffers: BTreeMap<String, NamedTensor>,
    expected_buffers: BTreeMap<String, NamedTensor>,
    grads: BTreeMap<String, NamedTensor>,
    images: Vec<f64>,
    extra_input: Vec<f64>,
    labels: Vec<usize>,
    cnn_features: Vec<f64>,
    rnn_input: Vec<f64>,
    correct_first_query: usize,
}

fn named(v: &Value, what: &str, path: &Path) -> BTreeMap<String, NamedTensor> {
    v.as_object()
        .unwrap_or_else(|| panic!("{}: `{what}` is not an object", path.display()))
        .iter()
        .map(|(k, t)| {
            let t = if let Some(n) = t.as_u64() {
                // num_batches_tracked is a plain integer
                NamedTensor {
                    shape: vec![1],
                    data: vec![n as f64],
                }
            } else {
                tensor(t, &format!("{what}.{k}"), path).unwrap()
            };
            (k.clone(), t)
        })
        .collect()
}

/// Loads a fixture (ProtoNet or ResNet-12).
fn load(path: &Path) -> Case {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cfg = &v["config"];
    let cnn = cfg["cnn"].as_str().unwrap_or("");
    let fx = Fixture::load_fsc(path).unwrap();
    let shape: Vec<usize> = cfg["image_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let widths: Vec<u64> = cfg["cnn_conv_out_channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(shape[1], shape[2]);
    let backbone = match cnn {
        "ProtoNet" => {
            assert!(
                widths.iter().all(|&w| w == widths[0]),
                "ProtoNet blocks of equal width"
            );
            BackboneConfig::ProtoNet(ProtoNetConfig {
                in_channels: shape[0],
                channels: widths[0] as usize,
                image_size: shape[1],
            })
        }
        "ResNet" => {
            assert_eq!(widths.len(), 4, "ResNet-12 has four blocks");
            let slope = cfg["leaky_relu_slope"].as_f64().unwrap();
            assert_eq!(slope, LEAKY_SLOPE, "LeakyReLU slope");
            BackboneConfig::ResNet12(ResNet12Config {
                in_channels: shape[0],
                widths: [0, 1, 2, 3].map(|k| widths[k] as usize),
                image_size: shape[1],
                drop_rate: cfg["resnet_drop_rate"].as_f64().unwrap(),
                dropblock_size: if shape[1] == 84 { 5 } else { 2 },
            })
        }
        other => panic!("{}: unknown CNN `{other}`", path.display()),
    };
    assert_eq!(
        backbone.feature_size() as u64,
        cfg["feature_size"].as_u64().unwrap(),
        "{}: feature size",
        path.display()
    );
    let config = FscConfig {
        cnn: backbone,
        network: fx.config.clone(),
        extra_input_dim: cfg["extra_input_dim"].as_u64().unwrap() as usize,
    };
    let exp = &v["expected"];
    let t = |x: &Value, what: &str| tensor(x, what, path).unwrap().data;
    Case {
        config,
        params: named(&v["params"], "params", path),
        buffers: named(&v["buffers"], "buffers", path),
        expected_buffers: named(&exp["buffers"], "expected.buffers", path),
        grads: named(&exp["grads"], "expected.grads", path),
        images: t(&v["images"], "images"),
        extra_input: t(&v["extra_input"], "extra_input"),
        labels: t(&v["labels"], "labels")
            .iter()
            .map(|&l| l as usize)
            .collect(),
        cnn_features: t(&exp["cnn_features"], "expected.cnn_features"),
        rnn_input: t(&exp["rnn_input"], "expected.rnn_input"),
        correct_first_query: exp["correct_first_query"].as_u64().unwrap() as usize,
        fx,
    }
}

/// The failure line of one tensor-wise comparison, if it fails.
fn mismatch<F: Float>(
    name: &str,
    what: &str,
    ours: &[f64],
    expected: &[f64],
    tol: f64,
) -> Option<String> {
    if ours.len() != expected.len() {
        return Some(format!(
            "{name} [{}] {what}: {} values, expected {}",
            F::NAME,
            ours.len(),
            expected.len()
        ));
    }
    let m = compare(ours, expected);
    let limit = if m.absolute { tol.max(1e-12) } else { tol };
    // NaN errors fail too
    let passed = m.error <= limit;
    (!passed).then(|| {
        format!(
            "{name} [{}] {what}: error {:.3e} > {:.0e} ({}), worst element #{}: ours {:.12e}, expected {:.12e}",
            F::NAME,
            m.error,
            limit,
            if m.absolute { "absolute" } else { "relative" },
            m.index,
            m.ours,
            m.expected
        )
    })
}

fn to_f64<F: Float>(v: &[F]) -> Vec<f64> {
    v.iter().map(|x| x.f64()).collect()
}

/// Checks one fixture in type `F`; returns the failures as readable lines.
fn check<F: Float>(case: &Case, tol: f64) -> Vec<String> {
    let fx = &case.fx;
    let mut failures = Vec::new();
    // the largest relative error over every tensor compared (printed for the record)
    let worst = std::cell::Cell::new((0.0f64, String::new()));
    let cmp = |failures: &mut Vec<String>, what: &str, ours: Vec<f64>, expected: &[f64]| {
        if ours.len() == expected.len() {
            let m = compare(&ours, expected);
            let w = worst.take();
            worst.set(if !m.absolute && m.error > w.0 {
                (m.error, what.to_string())
            } else {
                w
            });
        }
        if let Some(line) = mismatch::<F>(&fx.name, what, &ours, expected, tol) {
            failures.push(line);
        }
    };
    let batch = FscBatch::<F> {
        batch: fx.batch,
        steps: fx.steps,
        test_begin: fx.test_begin,
        images: case.images.iter().map(|&x| F::of(x)).collect(),
        extra_input: case.extra_input.iter().map(|&x| F::of(x)).collect(),
        labels: case.labels.clone(),
    };
    let new_model = || {
        FscModel::<F>::from_named(case.config.clone(), &case.params, &case.buffers)
            .unwrap_or_else(|e| panic!("{}: {e}", fx.name))
    };
    // forward
    let mut model = new_model();
    let fwd = model.forward_train(&batch).unwrap();
    cmp(
        &mut failures,
        "cnn_features",
        to_f64(&fwd.cnn_features),
        &case.cnn_features,
    );
    cmp(
        &mut failures,
        "rnn_input",
        to_f64(&fwd.rnn_input),
        &case.rnn_input,
    );
    for (what, ours) in [
        ("outputs", &fwd.rnn.outputs),
        ("plasticity_rate", &fwd.rnn.plasticity_rate),
        ("decay_rate", &fwd.rnn.decay_rate),
        ("inner_loss", &fwd.rnn.inner_loss),
    ] {
        cmp(&mut failures, what, to_f64(ours), &fx.expected[what].data);
    }
    cmp(
        &mut failures,
        "loss (forward)",
        vec![fwd.rnn.loss.f64()],
        &[fx.loss],
    );
    if fwd.correct_first_query != case.correct_first_query {
        failures.push(format!(
            "{} [{}] correct_first_query: {}, expected {}",
            fx.name,
            F::NAME,
            fwd.correct_first_query,
            case.correct_first_query
        ));
    }
    let ours_buffers = model.named_buffers();
    for (name, t) in &case.expected_buffers {
        match ours_buffers.get(name) {
            Some(o) => cmp(
                &mut failures,
                &format!("buffer {name}"),
                o.data.clone(),
                &t.data,
            ),
            None => failures.push(format!("{} buffer {name}: missing", fx.name)),
        }
    }
    // gradients (a fresh model: the running statistics start where the fixture's do)
    let mut model = new_model();
    let g = model.loss_and_grad(&batch).unwrap();
    cmp(
        &mut failures,
        "loss (gradient pass)",
        vec![g.loss.f64()],
        &[fx.loss],
    );
    if g.correct_first_query != case.correct_first_query {
        failures.push(format!(
            "{} [{}] correct_first_query (gradient pass): {}, expected {}",
            fx.name,
            F::NAME,
            g.correct_first_query,
            case.correct_first_query
        ));
    }
    for info in model.layout() {
        match case.grads.get(&info.name) {
            Some(t) => cmp(
                &mut failures,
                &format!("grad {}", info.name),
                to_f64(&g.grads[info.range()]),
                &t.data,
            ),
            None => failures.push(format!(
                "{}: no expected gradient for {}",
                fx.name, info.name
            )),
        }
    }
    for name in case.grads.keys() {
        if !model.layout().iter().any(|i| &i.name == name) {
            failures.push(format!("{}: the model has no parameter {name}", fx.name));
        }
    }
    let ours_buffers = model.named_buffers();
    for (name, t) in &case.expected_buffers {
        if let Some(o) = ours_buffers.get(name) {
            cmp(
                &mut failures,
                &format!("buffer {name} (gradient pass)"),
                o.data.clone(),
                &t.data,
            );
        }
    }
    let (error, what) = worst.take();
    println!(
        "{} [{}]: largest relative error {error:.3e} ({what})",
        fx.name,
        F::NAME
    );
    failures
}

#[test]
fn fsc_model_matches_reference_fixtures_f64_and_f32() {
    let mut failures = Vec::new();
    let mut resnets = 0;
    for path in fixture_paths() {
        let case = load(&path);
        if matches!(case.config.cnn, BackboneConfig::ResNet12(_)) {
            resnets += 1;
        }
        failures.extend(check::<f64>(&case, 1e-9));
        failures.extend(check::<f32>(&case, 1e-4));
    }
    assert!(resnets > 0, "no ResNet-12 fixture was checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
