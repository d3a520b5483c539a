use plastic::rng::Rng;
use plastic::*;
use std::time::Instant;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let rnn: CellKind = a[1].parse().unwrap();
    let rule: Rule = a[2].parse().unwrap();
    let h: usize = a[3].parse().unwrap();
    let t: usize = a[4].parse().unwrap();
    let i: usize = a[5].parse().unwrap();
    let cfg = NetworkConfig {
        rnn,
        plasticity: rule,
        input_size: i,
        hidden_size: h,
        ..Default::default()
    };
    let net = Network::<f32>::new(cfg, 0).unwrap();
    let b = 64;
    let mut rng = Rng::new(1);
    let ep = Episodes::new(
        b,
        t,
        i,
        1,
        (0..b * t * i).map(|_| rng.uniform() as f32).collect(),
        vec![0.1; b * t],
        0,
    )
    .unwrap();
    for _ in 0..2 {
        net.loss_and_grad(&ep, Loss::Mse).unwrap();
    }
    let mut v = vec![];
    for _ in 0..5 {
        let s = Instant::now();
        net.loss_and_grad(&ep, Loss::Mse).unwrap();
        v.push(s.elapsed().as_secs_f64());
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let s = Instant::now();
    net.forward(&ep, Loss::Mse).unwrap();
    let f = s.elapsed().as_secs_f64();
    println!(
        "{rnn} {rule} h{h} t{t}: median {:.1} ms/step  (forward only {:.1} ms)",
        v[2] * 1e3,
        f * 1e3
    );
}
