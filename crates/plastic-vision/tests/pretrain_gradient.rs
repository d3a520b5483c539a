//! Finite-difference checks in f64 of the pretraining losses and heads (docs/fsc.md §8):
//! NT-Xent (temperature 0.07) with respect to its embeddings, the cross-entropy with
//! respect to its logits, and both heads with respect to their parameters and inputs;
//! each gradient against central differences, relative to the tensor's largest entry.

use plastic::rng::Rng;
use plastic_vision::pretrain::{cross_entropy, nt_xent, Head, SIMCLR_TEMPERATURE};

/// Central differences of `f` at `x`, every coordinate.
fn numeric(x: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let v = x[i];
            x[i] = v + h;
            let a = f(&x);
            x[i] = v - h;
            let b = f(&x);
            x[i] = v;
            (a - b) / (2.0 * h)
        })
        .collect()
}

/// max |a − n| / max |n|.
fn rel_err(analytic: &[f64], num: &[f64]) -> f64 {
    let scale = num.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "a zero gradient proves nothing");
    analytic
        .iter()
        .zip(num)
        .fold(0.0f64, |m, (a, n)| m.max((a - n).abs()))
        / scale
}

fn random(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.normal()).collect()
}

#[test]
fn nt_xent_gradient_matches_finite_differences() {
    let mut rng = Rng::new(3);
    for (rows, dim) in [(4, 3), (8, 5), (12, 16)] {
        let z = random(&mut rng, rows * dim);
        let r = nt_xent(&z, rows, dim, SIMCLR_TEMPERATURE).unwrap();
        let num = numeric(&z, &|z| {
            nt_xent(z, rows, dim, SIMCLR_TEMPERATURE).unwrap().loss
        });
        let e = rel_err(&r.grad, &num);
        assert!(e < 1e-6, "NT-Xent {rows}×{dim}: relative error {e:e}");
        // the loss is invariant to each row's scale, so the gradient is orthogonal to it
        for (zr, gr) in z.chunks(dim).zip(r.grad.chunks(dim)) {
            let d: f64 = zr.iter().zip(gr).map(|(a, b)| a * b).sum();
            assert!(d.abs() < 1e-10, "{d}");
        }
    }
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let mut rng = Rng::new(4);
    let (n, c) = (6, 7);
    let logits = random(&mut rng, n * c);
    let labels: Vec<usize> = (0..n).map(|i| (i * 3) % c).collect();
    let r = cross_entropy(&logits, &labels, c).unwrap();
    let num = numeric(&logits, &|z| cross_entropy(z, &labels, c).unwrap().loss);
    let e = rel_err(&r.grad, &num);
    assert!(e < 1e-7, "cross-entropy: relative error {e:e}");
}

/// The heads composed with their losses: d loss / d params and d loss / d features.
#[test]
fn head_gradients_match_finite_differences() {
    let mut rng = Rng::new(5);
    let batch = 6;
    for head in [
        Head::Classifier {
            input: 9,
            classes: 4,
        },
        Head::Simclr { input: 9, width: 5 },
    ] {
        let params: Vec<f64> = head.init_params(&mut rng);
        let features = random(&mut rng, batch * head.input());
        let labels: Vec<usize> = (0..batch).map(|i| i % head.output()).collect();
        let loss_of = |out: &[f64]| match head {
            Head::Classifier { classes, .. } => cross_entropy(out, &labels, classes).unwrap(),
            Head::Simclr { width, .. } => nt_xent(out, batch, width, SIMCLR_TEMPERATURE).unwrap(),
        };
        let total = |p: &[f64], f: &[f64]| loss_of(&head.forward(p, f, batch).unwrap().0).loss;
        let (out, tape) = head.forward(&params, &features, batch).unwrap();
        let lg = loss_of(&out);
        let mut g = vec![0.0; params.len()];
        let d_feat = head.backward(&params, &tape, &lg.grad, &mut g).unwrap();
        for info in head.param_infos(0) {
            let e = rel_err(
                &g[info.range()],
                &numeric(&params, &|p| total(p, &features))[info.range()],
            );
            assert!(e < 1e-6, "{head:?} {}: relative error {e:e}", info.name);
        }
        let e = rel_err(&d_feat, &numeric(&features, &|f| total(&params, f)));
        assert!(e < 1e-6, "{head:?} features: relative error {e:e}");
    }
}
