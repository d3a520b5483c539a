//! Finite-difference check of the ProtoNet + projection backward pass in f64, per tensor
//! (relative to each tensor's largest gradient), BatchNorm in training mode.

use plastic::rng::Rng;
use plastic_vision::cnn::{ProtoNet, ProtoNetConfig, Projection};

struct Case {
    net: ProtoNet,
    proj: Projection,
    images: Vec<f64>,
    readout: Vec<f64>,
    batch: usize,
}

impl Case {
    fn new(channels: usize, image_size: usize, batch: usize, seed: u64) -> Case {
        let config = ProtoNetConfig {
            in_channels: 3,
            channels,
            image_size,
        };
        let net = ProtoNet::new(config).unwrap();
        let proj = Projection {
            input: config.feature_size(),
            output: 7,
        };
        let mut rng = Rng::new(seed);
        let images = (0..batch * config.image_len())
            .map(|_| rng.normal())
            .collect();
        let readout = (0..batch * proj.output).map(|_| rng.normal()).collect();
        Case {
            net,
            proj,
            images,
            readout,
            batch,
        }
    }

    /// loss = Σ readout ⊙ relu(proj(cnn(images))).
    fn loss(&self, cnn: &[f64], proj: &[f64]) -> f64 {
        let (feat, _) = self
            .net
            .forward_train(cnn, &self.images, self.batch, None)
            .unwrap();
        let e = self.proj.forward(proj, &feat, self.batch).unwrap();
        e.iter().zip(&self.readout).map(|(a, b)| a * b).sum()
    }

    fn grads(&self, cnn: &[f64], proj: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (feat, tape) = self
            .net
            .forward_train(cnn, &self.images, self.batch, None)
            .unwrap();
        let e = self.proj.forward(proj, &feat, self.batch).unwrap();
        let mut g_proj = vec![0.0; proj.len()];
        let d_feat = self
            .proj
            .backward(proj, &feat, &e, &self.readout, self.batch, &mut g_proj)
            .unwrap();
        let mut g_cnn = vec![0.0; cnn.len()];
        self.net.backward(cnn, &tape, &d_feat, &mut g_cnn).unwrap();
        (g_cnn, g_proj)
    }
}

fn check(channels: usize, image_size: usize, batch: usize, seed: u64) {
    let case = Case::new(channels, image_size, batch, seed);
    let mut rng = Rng::new(seed + 100);
    let mut cnn: Vec<f64> = case.net.config.init_params(&mut rng);
    // γ, β away from their initial 1 and 0 so that every term of BatchNorm's backward counts
    for info in case.net.config.param_infos(0) {
        if info.name.contains("bn.") {
            for v in &mut cnn[info.range()] {
                *v += 0.5 * rng.normal();
            }
        }
    }
    let proj: Vec<f64> = case.proj.init_params(&mut rng);
    let (g_cnn, g_proj) = case.grads(&cnn, &proj);
    let h = 1e-6;
    let mut tensors: Vec<(String, bool, std::ops::Range<usize>)> = case
        .net
        .config
        .param_infos(0)
        .into_iter()
        .map(|i| (i.name.clone(), true, i.range()))
        .collect();
    tensors.extend(
        case.proj
            .param_infos(0)
            .into_iter()
            .map(|i| (i.name.clone(), false, i.range())),
    );
    for (name, in_cnn, range) in tensors {
        let analytic = if in_cnn { &g_cnn } else { &g_proj };
        let scale = analytic[range.clone()]
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{name}: gradient is all zeros");
        // up to 12 entries per tensor, spread over it
        let len = range.len();
        let step = (len / 12).max(1);
        let mut worst = 0.0f64;
        for i in (range.start..range.end).step_by(step) {
            let (mut plus_c, mut plus_p) = (cnn.clone(), proj.clone());
            let (mut minus_c, mut minus_p) = (cnn.clone(), proj.clone());
            if in_cnn {
                plus_c[i] += h;
                minus_c[i] -= h;
            } else {
                plus_p[i] += h;
                minus_p[i] -= h;
            }
            let fd = (case.loss(&plus_c, &plus_p) - case.loss(&minus_c, &minus_p)) / (2.0 * h);
            worst = worst.max((fd - analytic[i]).abs() / scale);
        }
        assert!(
            worst < 1e-6,
            "{name}: finite differences differ from the backward pass by {worst:e} of the tensor's scale {scale:e}"
        );
    }
}

#[test]
fn protonet_and_projection_backward_match_finite_differences() {
    check(4, 16, 3, 1);
}

#[test]
fn odd_sizes_pool_like_pytorch_and_still_match() {
    // 20 → 10 → 5 → 2 (floor) → 1
    check(3, 20, 2, 2);
}
