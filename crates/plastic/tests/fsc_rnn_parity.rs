//! Parity of the network without an input layer (docs/fsc.md §5) with the authors' reference
//! on the image-task fixtures: every `.json` in `tests/fixtures/reference/fsc/` is read as its
//! recurrent part (the recorded `rnn_input` as the episode input, one-hot labels as the
//! target, cross-entropy over the query steps) and checked in f64 (1e-9 relative, 1e-12
//! absolute for all-zero tensors) and f32 (1e-4): outputs, η, λ, inner loss, loss and the
//! gradient of every `rec.*`, `out.*`, α and `out_weight` parameter.

use std::path::PathBuf;

use plastic::fixture::{compare, Fixture};
use plastic::{Float, Loss, Network};

fn fixture_paths() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/fsc");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {}", dir.display());
    v
}

fn to_f64<F: Float>(v: &[F]) -> Vec<f64> {
    v.iter().map(|x| x.f64()).collect()
}

/// Checks one fixture in type `F`; returns the failures as readable lines.
fn check<F: Float>(fx: &Fixture, tol: f64, snapshot_budget: Option<usize>) -> Vec<String> {
    let mut failures = Vec::new();
    assert!(!fx.config.input_layer);
    let mut net = Network::<F>::from_named(fx.config.clone(), &fx.params)
        .unwrap_or_else(|e| panic!("{}: {e}", fx.name));
    if let Some(b) = snapshot_budget {
        net.set_snapshot_budget(b);
    }
    assert!(
        net.layout().names().iter().all(|n| !n.starts_with("in.")),
        "a network without an input layer has no in.* parameters"
    );
    let ep = fx.episodes::<F>().unwrap();
    let fwd = net.forward(&ep, Loss::CrossEntropy).unwrap();
    let g = net.loss_and_grad(&ep, Loss::CrossEntropy).unwrap();
    let mut check = |what: &str, ours: Vec<f64>, expected: &[f64]| {
        if ours.len() != expected.len() {
            failures.push(format!(
                "{} [{}] {what}: {} values, expected {}",
                fx.name,
                F::NAME,
                ours.len(),
                expected.len()
            ));
            return;
        }
        let m = compare(&ours, expected);
        let limit = if m.absolute { tol.max(1e-12) } else { tol };
        if !(m.error <= limit) {
            failures.push(format!(
                "{} [{}] {what}: error {:.3e} > {:.0e} ({}), worst element #{}: ours {:.12e}, expected {:.12e}",
                fx.name,
                F::NAME,
                m.error,
                limit,
                if m.absolute { "absolute" } else { "relative" },
                m.index,
                m.ours,
                m.expected
            ));
        }
    };
    for (what, ours) in [
        ("outputs", &fwd.outputs),
        ("plasticity_rate", &fwd.plasticity_rate),
        ("decay_rate", &fwd.decay_rate),
        ("inner_loss", &fwd.inner_loss),
    ] {
        check(what, to_f64(ours), &fx.expected[what].data);
    }
    check("loss (forward)", vec![fwd.loss.f64()], &[fx.loss]);
    check("loss", vec![g.loss.f64()], &[fx.loss]);
    let layout = net.layout();
    let mut unknown = Vec::new();
    for (name, t) in &fx.grads {
        match layout.get(name) {
            Some(info) => check(
                &format!("grad {name}"),
                to_f64(&g.grads[info.range()]),
                &t.data,
            ),
            None => unknown.push(format!(
                "{} [{}] grad {name}: the network has no such parameter",
                fx.name,
                F::NAME
            )),
        }
    }
    failures.extend(unknown);
    for info in layout.infos() {
        if !fx.grads.contains_key(&info.name) {
            failures.push(format!(
                "{} [{}] grad {}: missing from the fixture",
                fx.name,
                F::NAME,
                info.name
            ));
        }
    }
    failures
}

#[test]
fn every_fsc_fixture_matches_in_f64_and_f32() {
    let mut failures = Vec::new();
    let mut names = Vec::new();
    for path in fixture_paths() {
        let fx = Fixture::load_fsc(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fx.config.input_size, fx.config.hidden_size);
        names.push(fx.name.clone());
        failures.extend(check::<f64>(&fx, 1e-9, None));
        failures.extend(check::<f32>(&fx, 1e-4, None));
        // the checkpointed backward is exact too
        failures.extend(check::<f64>(&fx, 1e-9, Some(1)));
    }
    eprintln!("checked: {}", names.join(", "));
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_input_size_must_equal_the_hidden_size_without_an_input_layer() {
    let config = plastic::NetworkConfig {
        input_size: 3,
        hidden_size: 8,
        input_layer: false,
        ..Default::default()
    };
    let e = Network::<f64>::new(config, 0).unwrap_err().to_string();
    assert!(e.contains("input_size must equal hidden_size"), "{e}");
    assert!(
        e.contains("input_size 3") && e.contains("hidden_size 8"),
        "{e}"
    );
}

#[test]
fn a_config_without_the_key_has_an_input_layer() {
    let mut v = serde_json::to_value(plastic::NetworkConfig::default()).unwrap();
    v.as_object_mut().unwrap().remove("input_layer");
    let c: plastic::NetworkConfig = serde_json::from_value(v).unwrap();
    assert!(c.input_layer);
}

#[test]
fn a_perturbed_parameter_is_caught() {
    let path = fixture_paths()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("gradient"))
        .unwrap();
    let mut fx = Fixture::load_fsc(&path).unwrap();
    fx.params.get_mut("rec.w_i").unwrap().data[0] += 1e-4;
    let failures = check::<f64>(&fx, 1e-9, None);
    assert!(
        failures.iter().any(|l| l.contains(" outputs:")),
        "{failures:?}"
    );
}
