//! Parity with the authors' reference: every `.json` fixture of format
//! `plastic-rnn-reference/1` in `tests/fixtures/reference/` (whatever its name) is checked in
//! f64 (1e-9 relative, 1e-12 absolute for all-zero tensors) and f32 (1e-4 relative):
//! outputs, η, λ, inner loss, loss and every gradient. Every recorded gradient is compared
//! as recorded: one that disagrees fails. The fixtures must cover every cell × rule and
//! every knob (LayerNorm, modulation off, weight and norm clipping active, the α modes,
//! `extra_dim` 0, other `p_lr`/`p_wd`); a missing one fails.

use std::path::PathBuf;

use plastic::fixture::{compare, Fixture};
use plastic::{CellKind, Float, InnerLrMode, Loss, Network, Rule};

/// The image-task fixtures (`plastic-rnn-fsc/1`) have their own parity test; every other
/// file must parse as `plastic-rnn-reference/1`.
const FSC_FORMAT: &str = "plastic-rnn-fsc/1";

fn fixture_paths() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", p.display()));
            v.get("format").and_then(|f| f.as_str()) != Some(FSC_FORMAT)
        })
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
    let mut net = Network::<F>::from_named(fx.config.clone(), &fx.params)
        .unwrap_or_else(|e| panic!("{}: {e}", fx.name));
    if let Some(b) = snapshot_budget {
        net.set_snapshot_budget(b);
    }
    let ep = fx.episodes::<F>().unwrap();
    let fwd = net.forward(&ep, Loss::Mse).unwrap();
    let g = net.loss_and_grad(&ep, Loss::Mse).unwrap();
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
        let limit = if m.absolute {
            1e-12f64.max(if tol > 1e-6 { tol } else { 0.0 })
        } else {
            tol
        };
        if !within(m.error, limit) {
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
    check(
        "outputs",
        to_f64(&fwd.outputs),
        &fx.expected["outputs"].data,
    );
    check(
        "plasticity_rate",
        to_f64(&fwd.plasticity_rate),
        &fx.expected["plasticity_rate"].data,
    );
    check(
        "decay_rate",
        to_f64(&fwd.decay_rate),
        &fx.expected["decay_rate"].data,
    );
    check(
        "inner_loss",
        to_f64(&fwd.inner_loss),
        &fx.expected["inner_loss"].data,
    );
    check("loss (forward)", vec![fwd.loss.f64()], &[fx.loss]);
    check("loss", vec![g.loss.f64()], &[fx.loss]);
    let layout = net.layout();
    let mut unknown = Vec::new();
    for (name, t) in &fx.grads {
        match layout.get(name) {
            Some(info) => {
                let ours = to_f64(&g.grads[info.range()]);
                check(&format!("grad {name}"), ours, &t.data)
            }
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
fn every_fixture_matches_in_f64_and_f32() {
    let mut failures = Vec::new();
    for path in fixture_paths() {
        let fx = Fixture::load(&path).unwrap_or_else(|e| panic!("{e}"));
        failures.extend(check::<f64>(&fx, 1e-9, None));
        failures.extend(check::<f32>(&fx, 1e-4, None));
        // the checkpointed backward (segments recomputed from checkpoints) is exact too
        failures.extend(check::<f64>(&fx, 1e-9, Some(1)));
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The fixtures the parity test runs, loaded.
fn fixtures() -> Vec<Fixture> {
    fixture_paths()
        .iter()
        .map(|p| Fixture::load(p).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

#[test]
fn the_fixtures_cover_every_cell_rule_and_knob() {
    let fxs = fixtures();
    let default = plastic::NetworkConfig::default();
    let has = |what: &str, pred: &dyn Fn(&Fixture) -> bool| {
        let names: Vec<&str> = fxs
            .iter()
            .filter(|f| pred(f))
            .map(|f| f.name.as_str())
            .collect();
        assert!(!names.is_empty(), "no reference fixture covers {what}");
        println!("{what}: {}", names.join(", "));
    };
    for rnn in [CellKind::Rnn, CellKind::Lstm] {
        for rule in [Rule::Gradient, Rule::Hebbian, Rule::None] {
            has(&format!("{rnn} × {rule}"), &|f| {
                f.config.rnn == rnn && f.config.plasticity == rule
            });
        }
    }
    has("LayerNorm with a plastic rule", &|f| {
        f.config.layernorm && f.config.is_plastic()
    });
    has("LayerNorm without plasticity", &|f| {
        f.config.layernorm && !f.config.is_plastic()
    });
    has("modulation off", &|f| {
        !f.config.modulation && f.config.is_plastic()
    });
    has("weight clipping", &|f| {
        f.config.weight_clip.is_some() && f.config.is_plastic()
    });
    has("α mode uniform", &|f| {
        f.config.inner_lr_mode == InnerLrMode::Uniform && f.config.is_plastic()
    });
    has("α mode neg_uniform", &|f| {
        f.config.inner_lr_mode == InnerLrMode::NegUniform && f.config.is_plastic()
    });
    has("extra_dim 0", &|f| f.config.extra_dim == 0);
    has("p_lr and p_wd other than the defaults", &|f| {
        f.config.p_lr != default.p_lr && f.config.p_wd != default.p_wd
    });
    has("test_begin > 0 (loss window)", &|f| f.test_begin > 0);
}

/// The fixture with clipping must really clip, or its parity says nothing about the clip.
/// The norm clip is active when the applied rate is below the modulated rate at some step.
/// The weight clip `c` is active when some `|P|` reaches `c`; it cannot be while the
/// Frobenius norm of all plastic weights stays below `c` (every `|P_ij| ≤ ‖P‖_F`), and
/// where it is active the same network without `weight_clip` computes other outputs.
///
/// The recorded `knob-rnn-grad-wclip-clip` has `c = 0.004` but `‖P‖_F ≤ 5.5e-4` at every
/// step, so it checks the norm clip only; the weight clip, active, is checked by finite
/// differences in `gradient_check.rs`. This test says which fixtures exercise which clip.
#[test]
fn the_clipping_fixtures_really_clip() {
    let clipping: Vec<Fixture> = fixtures()
        .into_iter()
        .filter(|f| f.config.weight_clip.is_some())
        .collect();
    assert!(!clipping.is_empty(), "no fixture with weight_clip");
    let mut weight_clip_active = Vec::new();
    for fx in clipping {
        let ep = fx.episodes::<f64>().unwrap();
        let net = Network::<f64>::from_named(fx.config.clone(), &fx.params).unwrap();
        let fwd = net.forward(&ep, Loss::Mse).unwrap();
        let norm_clipped = fwd
            .applied_rate
            .iter()
            .zip(&fwd.plasticity_rate)
            .filter(|(a, p)| a.abs() < p.abs() * (1.0 - 1e-9))
            .count();
        println!(
            "{}: norm clip active at {norm_clipped} of {} (episode, step) pairs",
            fx.name,
            fwd.applied_rate.len()
        );
        assert!(
            norm_clipped > 0,
            "{}: the norm clip is never active",
            fx.name
        );
        let c = fx.config.weight_clip.unwrap();
        let max_norm = fwd.plastic_norm.iter().fold(0.0f64, |m, &v| m.max(v));
        let unclipped_config = plastic::NetworkConfig {
            weight_clip: None,
            ..fx.config.clone()
        };
        let unclipped = Network::<f64>::from_named(unclipped_config, &fx.params)
            .unwrap()
            .forward(&ep, Loss::Mse)
            .unwrap();
        let differ = compare(&unclipped.outputs, &fwd.outputs).error;
        if max_norm < c {
            // Provably inactive: then the clip must change nothing at all.
            assert_eq!(differ, 0.0, "{}: inactive clip changed outputs", fx.name);
            println!(
                "{}: weight clip {c} NOT exercised (max ‖P‖_F = {max_norm:.3e} < {c})",
                fx.name
            );
        } else if differ > 0.0 {
            weight_clip_active.push(fx.name.clone());
            println!(
                "{}: weight clip active (outputs without it differ by {differ:.3e})",
                fx.name
            );
        }
    }
    println!(
        "fixtures with the weight clip active: {}",
        if weight_clip_active.is_empty() {
            "none (checked by finite differences in gradient_check.rs only)".to_string()
        } else {
            weight_clip_active.join(", ")
        }
    );
}

/// Strictness: a recorded gradient that disagrees with ours fails, even when it is
/// recorded as zeros (the old recorder's artefact in the `none` fixtures, which the test
/// once worked around by finite differences).
#[test]
fn a_recorded_gradient_that_disagrees_fails_even_as_zeros() {
    for fx in fixtures() {
        let Some(name) = ["rec.w_h", "in.w"].into_iter().find(|n| {
            fx.grads
                .get(*n)
                .is_some_and(|t| t.data.iter().any(|&v| v != 0.0))
        }) else {
            continue;
        };
        let mut zeroed = fx.clone();
        zeroed.grads.get_mut(name).unwrap().data.fill(0.0);
        let failures = check::<f64>(&zeroed, 1e-9, None);
        assert!(
            failures
                .iter()
                .any(|l| l.contains(&format!("grad {name}:"))),
            "{}: zeroed {name} was accepted: {failures:?}",
            fx.name
        );
    }
}

#[test]
fn a_mismatch_names_the_fixture_the_quantity_and_the_worst_element() {
    let path = fixture_paths()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("gradient"))
        .unwrap();
    let mut fx = Fixture::load(&path).unwrap();
    fx.params.get_mut("out.b").unwrap().data[0] += 1e-3;
    let failures = check::<f64>(&fx, 1e-9, None);
    assert!(!failures.is_empty());
    let outputs = failures
        .iter()
        .find(|l| l.contains(" outputs:"))
        .expect("outputs must be reported");
    assert!(outputs.starts_with(&fx.name), "{outputs}");
    assert!(outputs.contains("worst element #"), "{outputs}");
}

/// `error <= limit`, false for NaN.
fn within(error: f64, limit: f64) -> bool {
    error <= limit
}
