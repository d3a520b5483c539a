//! Reliability: no silent corruption, no destroyed runs, the same numbers whatever the
//! blocking of the weight-gradient reduction, byte-reproducible files, and random damage to
//! every file a run reads gives an error or the right result (never a panic or a wrong
//! number).

use std::collections::BTreeMap;
use std::path::Path;

use plastic::matmul::{gemm_at_b, gemm_at_b_blocked, Blocking};
use plastic::params::CHECKSUM_KEY;
use plastic::rng::Rng;
use plastic::run::{self, eval, files, RunConfig, Start};
use plastic::{CellKind, Error, Loss, Network, NetworkConfig, Rule};

fn tiny(task: &str) -> RunConfig {
    RunConfig::defaults(task)
        .unwrap()
        .with_overrides(&[
            "hidden_size=8",
            "batch_size=4",
            "max_batch=10",
            "log_every=5",
            "test_batch=2",
            "seed=5",
        ])
        .unwrap()
}

fn new_run(dir: &Path, config: RunConfig) -> plastic::Result<run::Summary> {
    run::train(
        dir,
        Start::New {
            config: Box::new(config),
            overwrite: false,
        },
        &mut run::Silent,
    )
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

/// The offset of the tensor data (after the header) of a safetensors file.
fn data_start(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

// ---- 1. resume without a checkpoint -------------------------------------------------------

#[test]
fn resume_without_a_checkpoint_is_refused_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    new_run(&dir, tiny("cue-reward")).unwrap();
    std::fs::remove_file(dir.join(files::CHECKPOINT)).unwrap();
    std::fs::remove_file(dir.join(files::TEST)).unwrap();
    let (progress, best) = (read(&dir, files::PROGRESS), read(&dir, files::BEST));
    let e = run::train(&dir, Start::Resume, &mut run::Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("checkpoint.safetensors") && e.contains("cannot resume"),
        "{e}"
    );
    assert_eq!(
        read(&dir, files::PROGRESS),
        progress,
        "progress.tsv changed"
    );
    assert_eq!(read(&dir, files::BEST), best, "best.safetensors changed");
    assert!(!dir.join(files::TEST).exists());
    // best.safetensors alone (no rows) is refused too
    std::fs::write(
        dir.join(files::PROGRESS),
        "step\ttrain_loss\tval_loss\tlr\telapsed_s\n",
    )
    .unwrap();
    assert!(run::train(&dir, Start::Resume, &mut run::Silent).is_err());
    // a prepared folder (configuration only) still starts
    let fresh = tmp.path().join("prepared");
    run::prepare(&fresh, &tiny("cue-reward")).unwrap();
    run::train(&fresh, Start::Resume, &mut run::Silent).unwrap();
}

// ---- 2. checksums, finite parameters, NaN propagation -------------------------------------

#[test]
fn a_changed_value_in_best_or_checkpoint_is_caught_by_the_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    new_run(&dir, tiny("cue-reward")).unwrap();
    let cfg = tiny("cue-reward");
    let good_best = read(&dir, files::BEST);
    // the lowest mantissa bit of one value: still finite, a different number
    let mut bad = good_best.clone();
    let k = data_start(&bad) + 40;
    bad[k] ^= 1;
    std::fs::write(dir.join(files::BEST), &bad).unwrap();
    let e = Network::<f32>::load(cfg.network_config(), &dir.join(files::BEST))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("corrupt") && e.contains("best.safetensors"),
        "{e}"
    );
    let e = eval::evaluate(&dir, &[]).unwrap_err().to_string();
    assert!(
        e.contains("corrupt") && e.contains("best.safetensors"),
        "{e}"
    );
    std::fs::write(dir.join(files::BEST), &good_best).unwrap();
    assert!(eval::evaluate(&dir, &[]).is_ok());

    // the same in the checkpoint, read by --resume
    std::fs::remove_file(dir.join(files::TEST)).unwrap();
    let mut ck = read(&dir, files::CHECKPOINT);
    let k = data_start(&ck) + 100;
    ck[k] ^= 1;
    std::fs::write(dir.join(files::CHECKPOINT), &ck).unwrap();
    let e = run::train(&dir, Start::Resume, &mut run::Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("corrupt") && e.contains("checkpoint.safetensors"),
        "{e}"
    );
    // and in the metadata (the training state): a digit of the step
    let mut ck = read(&dir, files::CHECKPOINT);
    ck[k] ^= 1;
    let text = std::str::from_utf8(&ck[8..data_start(&ck)]).unwrap();
    let at = 8 + text.find("\\\"step\\\":").unwrap() + 9;
    assert!(ck[at].is_ascii_digit());
    ck[at] = if ck[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(dir.join(files::CHECKPOINT), &ck).unwrap();
    let e = run::train(&dir, Start::Resume, &mut run::Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("corrupt"), "{e}");
}

fn small(rule: Rule, cell: CellKind) -> NetworkConfig {
    NetworkConfig {
        rnn: cell,
        plasticity: rule,
        input_size: 3,
        hidden_size: 6,
        output_size: 2,
        ..Default::default()
    }
}

/// A safetensors file as older versions (and other tools) write it: no checksum.
fn write_without_checksum(net: &Network<f32>, path: &Path, set: Option<(&str, usize, f32)>) {
    use safetensors::tensor::{Dtype, TensorView};
    let named = net.named_params();
    let mut raw: Vec<(String, Vec<usize>, Vec<u8>)> = named
        .iter()
        .map(|(name, t)| {
            let mut data: Vec<f32> = t.data.iter().map(|&v| v as f32).collect();
            if let Some((n, k, v)) = set {
                if n == name {
                    data[k] = v;
                }
            }
            let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), t.shape.clone(), bytes)
        })
        .collect();
    raw.sort_by(|a, b| a.0.cmp(&b.0));
    let views: Vec<(String, TensorView)> = raw
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn files_without_a_checksum_load_when_finite_and_are_refused_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let net = Network::<f32>::new(small(Rule::Gradient, CellKind::Rnn), 2).unwrap();
    let path = tmp.path().join("old.safetensors");
    write_without_checksum(&net, &path, None);
    let back = Network::<f32>::load(net.config().clone(), &path).unwrap();
    assert_eq!(back.params(), net.params());
    for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        write_without_checksum(&net, &path, Some(("rec.alpha_w_i", 4, v)));
        let e = Network::<f32>::load(net.config().clone(), &path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rec.alpha_w_i") && e.contains("non-finite") && e.contains("element 4"),
            "{e}"
        );
    }
    // what we write carries a checksum
    net.save(&path, BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header = std::str::from_utf8(&bytes[8..data_start(&bytes)]).unwrap();
    assert!(
        header.contains(&format!("\"{CHECKSUM_KEY}\":\"crc32:")),
        "{header}"
    );
}

#[test]
fn nan_in_any_weight_propagates_to_the_loss() {
    let mut rng = Rng::new(9);
    for cell in [CellKind::Rnn, CellKind::Lstm] {
        for rule in [Rule::Gradient, Rule::Hebbian, Rule::None] {
            let net = Network::<f32>::new(small(rule, cell), 1).unwrap();
            let episodes = plastic::Episodes::<f32>::new(
                2,
                5,
                3,
                2,
                (0..30).map(|_| rng.uniform_in(-1.0, 1.0) as f32).collect(),
                (0..20).map(|_| rng.uniform_in(-1.0, 1.0) as f32).collect(),
                1,
            )
            .unwrap();
            assert!(net.forward(&episodes, Loss::Mse).unwrap().loss.is_finite());
            for name in ["in.w", "rec.w_h", "rec.w_i", "in.b"] {
                let mut broken = net.clone();
                let r = broken.layout().get(name).unwrap().range();
                broken.params_mut()[r].fill(f32::NAN);
                let f = broken.forward(&episodes, Loss::Mse).unwrap();
                assert!(
                    f.loss.is_nan(),
                    "{cell:?} {rule:?}: NaN {name} gave loss {}",
                    f.loss
                );
                let g = broken.loss_and_grad(&episodes, Loss::Mse).unwrap();
                assert!(
                    g.loss.is_nan(),
                    "{cell:?} {rule:?}: NaN {name}, training loss {}",
                    g.loss
                );
            }
        }
    }
}

#[test]
fn a_diverging_run_stops_with_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let cfg = tiny("cue-reward")
        .with_overrides(&["lr=1e38", "grad_clip=1e38"])
        .unwrap();
    let e = new_run(&dir, cfg).unwrap_err();
    assert!(matches!(e, Error::Diverged(_)), "{e}");
    assert!(e.to_string().contains("non-finite"), "{e}");
    assert!(!dir.join(files::TEST).exists());
}

// ---- 3. memory, --overwrite ----------------------------------------------------------------

#[test]
fn too_large_a_run_is_refused_before_the_folder_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    new_run(&dir, tiny("cue-reward")).unwrap();
    let before: Vec<Vec<u8>> = [files::CONFIG, files::PROGRESS, files::BEST, files::TEST]
        .iter()
        .map(|f| read(&dir, f))
        .collect();
    let huge = tiny("cue-reward")
        .with_overrides(&["hidden_size=100000"])
        .unwrap();
    let est = run::memory::estimate(&huge, 2, true);
    assert!(est.total() > 1e11, "{est}");
    let e = run::train(
        &dir,
        Start::New {
            config: Box::new(huge),
            overwrite: true,
        },
        &mut run::Silent,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Memory(_)), "{e}");
    assert!(e.to_string().contains("estimated"), "{e}");
    let after: Vec<Vec<u8>> = [files::CONFIG, files::PROGRESS, files::BEST, files::TEST]
        .iter()
        .map(|f| read(&dir, f))
        .collect();
    assert!(before == after, "the previous run was changed");
}

#[test]
fn the_estimate_grows_as_the_engine_allocates() {
    let base = RunConfig::defaults("cue-reward").unwrap();
    let with = |o: &[&str]| run::memory::estimate(&base.with_overrides(o).unwrap(), 2, true);
    let h128 = with(&["hidden_size=128"]);
    let h256 = with(&["hidden_size=256"]);
    // parameters grow with H², records with B·T·H
    assert!(h256.parameters > 3.5 * h128.parameters);
    assert!(with(&["batch_size=128"]).records > 1.9 * h128.records);
    // more threads than chunks of the batch cost nothing more
    assert_eq!(
        run::memory::estimate(&base, 16, true).workspaces,
        run::memory::estimate(&base, 64, true).workspaces
    );
}

// ---- 4. a fixed-order weight-gradient reduction --------------------------------------------

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.uniform_in(-1.0, 1.0) as f32).collect()
}

#[test]
fn the_weight_gradient_reduction_has_the_same_bits_under_any_blocking() {
    // the engine's shapes: rows (pre) × cols (δ) summed over B·T·terms
    for &(m, n, k) in &[
        (128, 128, 2560),
        (3, 128, 1280),
        (128, 2, 2560),
        (96, 384, 700),
    ] {
        let (a, b) = (values(k * m, 1), values(k * n, 2));
        let mut reference = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f32;
                for kk in 0..k {
                    s += a[kk * m + i] * b[kk * n + j];
                }
                reference[i * n + j] = s;
            }
        }
        let mut default = vec![0.0f32; m * n];
        gemm_at_b(&mut default, &a, &b, m, n, k);
        for blocking in [
            Blocking {
                kc: 1,
                rows_per_task: 1,
            },
            Blocking {
                kc: 7,
                rows_per_task: 5,
            },
            Blocking {
                kc: 512,
                rows_per_task: m,
            },
            Blocking {
                kc: 100_000,
                rows_per_task: 3,
            },
        ] {
            let mut d = vec![0.0f32; m * n];
            gemm_at_b_blocked(&mut d, &a, &b, m, n, k, blocking);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&d), bits(&reference), "({m}, {n}, {k}) {blocking:?}");
            assert_eq!(bits(&d), bits(&default), "({m}, {n}, {k}) {blocking:?}");
        }
    }
}

#[test]
fn a_training_step_has_the_same_bits_under_any_blocking() {
    for (cell, rule) in [
        (CellKind::Rnn, Rule::Gradient),
        (CellKind::Lstm, Rule::Hebbian),
    ] {
        let cfg = RunConfig::defaults("cue-reward")
            .unwrap()
            .with_overrides(&[
                format!("rnn={}", cell),
                format!("plasticity={}", rule),
                "hidden_size=24".to_string(),
                "batch_size=8".to_string(),
            ])
            .unwrap();
        let net = Network::<f32>::new(cfg.network_config(), 4).unwrap();
        let ep = cfg.task.generate::<f32>(&mut run::train_rng(4, 0), 8);
        let mut grads = Vec::new();
        for blocking in [
            None,
            Some(Blocking {
                kc: 3,
                rows_per_task: 1,
            }),
            Some(Blocking {
                kc: 4096,
                rows_per_task: 24,
            }),
        ] {
            plastic::matmul::set_blocking(blocking);
            let g = net.loss_and_grad(&ep, Loss::Mse).unwrap();
            plastic::matmul::set_blocking(None);
            grads.push((
                g.loss.to_bits(),
                g.grads.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            ));
        }
        assert!(grads.windows(2).all(|w| w[0] == w[1]), "{cell:?} {rule:?}");
    }
}

// ---- 5. byte-reproducible files ------------------------------------------------------------

#[test]
fn identical_runs_write_identical_files_and_a_no_op_resume_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    new_run(&a, tiny("seq-reproduction")).unwrap();
    new_run(&b, tiny("seq-reproduction")).unwrap();
    assert!(
        read(&a, files::BEST) == read(&b, files::BEST),
        "best.safetensors differs between identical runs"
    );
    // the checkpoint records the wall-clock time; its tensors are identical
    let (ca, cb) = (read(&a, files::CHECKPOINT), read(&b, files::CHECKPOINT));
    assert!(ca[data_start(&ca)..] == cb[data_start(&cb)..]);
    let best = read(&a, files::BEST);
    let ck = read(&a, files::CHECKPOINT);
    run::train(&a, Start::Resume, &mut run::Silent).unwrap();
    assert!(read(&a, files::BEST) == best, "a no-op resume changed best");
    assert!(read(&a, files::CHECKPOINT) == ck);
    // resuming an unfinished run rewrites best.safetensors from the checkpoint: same bytes
    std::fs::remove_file(a.join(files::TEST)).unwrap();
    run::train(&a, Start::Resume, &mut run::Silent).unwrap();
    assert!(
        read(&a, files::BEST) == best,
        "resume rewrote best differently"
    );
}

// ---- fuzz: random damage to every file a run reads -----------------------------------------

/// A small deterministic generator for the mutations.
struct Mut(Rng);
impl Mut {
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n.max(1))
    }
    /// One random mutation of `bytes`: flipped bits, random bytes, a truncation, a cut
    /// in the middle, inserted bytes, or a random file.
    fn apply(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut b = bytes.to_vec();
        match self.below(6) {
            0 => {
                for _ in 0..1 + self.below(4) {
                    let k = self.below(b.len());
                    b[k] ^= 1 << self.below(8);
                }
            }
            1 => {
                let k = self.below(b.len());
                let n = (1 + self.below(16)).min(b.len() - k);
                for v in &mut b[k..k + n] {
                    *v = self.below(256) as u8;
                }
            }
            2 => b.truncate(self.below(b.len())),
            3 => {
                let k = self.below(b.len());
                let n = self.below(b.len() - k);
                b.drain(k..k + n);
            }
            4 => {
                let k = self.below(b.len());
                for _ in 0..1 + self.below(8) {
                    b.insert(k, self.below(256) as u8);
                }
            }
            _ => {
                b = (0..self.below(300))
                    .map(|_| self.below(256) as u8)
                    .collect()
            }
        }
        b
    }
}

#[test]
fn random_damage_to_any_file_gives_an_error_or_the_right_result() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    new_run(&good, tiny("cue-reward")).unwrap();
    let truth = eval::evaluate(&good, &[]).unwrap();
    let summary = run::read_summary(&good).unwrap();
    let good_rows = run::read_progress(&good).unwrap();
    let originals: Vec<(&str, Vec<u8>)> = [
        files::CONFIG,
        files::PROGRESS,
        files::BEST,
        files::CHECKPOINT,
        files::TEST,
    ]
    .iter()
    .map(|f| (*f, read(&good, f)))
    .collect();
    let cfg = tiny("cue-reward");
    let mut m = Mut(Rng::new(2024));
    let work = tmp.path().join("work");
    let mut outcomes = BTreeMap::<String, [usize; 2]>::new();
    for round in 0..300 {
        let (name, bytes) = &originals[round % originals.len()];
        let damaged = m.apply(bytes);
        let changed = damaged != *bytes;
        let _ = changed;
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        for (n, b) in &originals {
            std::fs::write(work.join(n), b).unwrap();
        }
        std::fs::write(work.join(name), &damaged).unwrap();
        let ok = match *name {
            files::BEST => {
                // eval reads config.toml and best.safetensors
                let loaded = Network::<f32>::load(cfg.network_config(), &work.join(name));
                if let Ok(net) = &loaded {
                    let good_net =
                        Network::<f32>::load(cfg.network_config(), &good.join(name)).unwrap();
                    assert_eq!(
                        net.params(),
                        good_net.params(),
                        "round {round}: silent change"
                    );
                }
                match eval::evaluate(&work, &[]) {
                    Ok(r) => {
                        assert_eq!(r.test_loss, truth.test_loss, "round {round}");
                        true
                    }
                    Err(_) => false,
                }
            }
            files::CONFIG => {
                // eval and --resume read it; what still parses must be the same run
                let text = String::from_utf8_lossy(&damaged).to_string();
                let same = RunConfig::from_toml(&text).is_ok_and(|c| c == cfg);
                let e = match eval::evaluate(&work, &[]) {
                    Ok(r) => {
                        assert!(same, "round {round}: eval accepted a changed config.toml");
                        assert_eq!(r.test_loss, truth.test_loss, "round {round}");
                        true
                    }
                    Err(_) => false,
                };
                std::fs::remove_file(work.join(files::TEST)).unwrap();
                match run::train(&work, Start::Resume, &mut run::Silent) {
                    Ok(s) => {
                        assert!(same, "round {round}: resume accepted a changed config.toml");
                        assert_eq!(s.test_loss, summary.test_loss, "round {round}");
                    }
                    Err(_) => assert!(!e || !same || !changed, "round {round}"),
                }
                e
            }
            files::PROGRESS => {
                let ok = match run::read_progress(&work) {
                    Ok(rows) => {
                        assert_eq!(rows, good_rows, "round {round}: silently different rows");
                        true
                    }
                    Err(_) => false,
                };
                std::fs::remove_file(work.join(files::TEST)).unwrap();
                match run::train(&work, Start::Resume, &mut run::Silent) {
                    Ok(s) => {
                        assert_eq!(s.test_loss, summary.test_loss, "round {round}");
                        assert_eq!(run::read_progress(&work).unwrap(), good_rows);
                    }
                    Err(_) => assert!(!ok, "round {round}: resume refused what read accepted"),
                }
                ok
            }
            files::TEST => match run::read_summary(&work) {
                Ok(s) => {
                    assert_eq!(s, summary, "round {round}: silently different result");
                    true
                }
                Err(_) => false,
            },
            _ => {
                // --resume reads the checkpoint (and config.toml, progress.tsv)
                std::fs::remove_file(work.join(files::TEST)).unwrap();
                match run::train(&work, Start::Resume, &mut run::Silent) {
                    Ok(s) => {
                        assert_eq!(s.test_loss, summary.test_loss, "round {round}");
                        assert_eq!(s.best_step, summary.best_step, "round {round}");
                        true
                    }
                    Err(e) => {
                        let e = e.to_string();
                        assert!(!e.is_empty());
                        false
                    }
                }
            }
        };
        outcomes.entry(name.to_string()).or_default()[usize::from(ok)] += 1;
    }
    println!("errors / accepted by file: {outcomes:?}");
    // every file was damaged many times and damage was caught
    for (name, [errors, oks]) in &outcomes {
        assert!(errors + oks >= 40, "{name}: {errors} errors, {oks} ok");
        assert!(*errors > 0, "{name}: no damage detected in {oks} tries");
    }
}
