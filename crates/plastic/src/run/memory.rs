//! How much memory a run needs, estimated from its configuration before anything is
//! allocated or written, so that a configuration too large for the machine is refused with a
//! clear message instead of aborting the process halfway (and after `--overwrite` removed the
//! previous run).
//!
//! The estimate follows the engine's allocation rules (see `engine.rs`): the parameter-sized
//! buffers of the trainer, the rank-1 records of every episode kept for the weight-gradient
//! GEMM, and one per-episode workspace per worker thread (the step records, the plastic-weight
//! snapshots within their budget, or checkpoints every ≈√T steps beyond it).

use std::fmt;

use super::RunConfig;
use crate::error::{Error, Result};
use crate::network::DEFAULT_SNAPSHOT_BUDGET;

/// The environment variable that turns the memory check off (`PLASTIC_SKIP_MEMORY_CHECK=1`).
pub const SKIP_ENV: &str = "PLASTIC_SKIP_MEMORY_CHECK";

/// Estimated peak memory of a run, in bytes, by part.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    /// Parameters, best parameters, AdamW moments, gradients and the per-chunk gradient sums.
    pub parameters: f64,
    /// The serialised checkpoint while it is written.
    pub checkpoint: f64,
    /// The rank-1 records (`pre`, `δ`) of every episode and step, for the GEMM of `dW`.
    pub records: f64,
    /// The per-episode workspaces (step records, plastic snapshots/checkpoints), one per
    /// worker thread at most.
    pub workspaces: f64,
    /// One batch of episodes and the validation forward pass's outputs.
    pub batch: f64,
    /// The process itself (code, thread stacks, allocator).
    pub base: f64,
}

impl MemoryEstimate {
    /// The total in bytes.
    pub fn total(&self) -> f64 {
        self.parameters + self.checkpoint + self.records + self.workspaces + self.batch + self.base
    }
}

fn human(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

impl fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (parameters and optimiser {}, checkpoint {}, rank-1 records {}, \
             per-thread workspaces {}, batch {}, process {})",
            human(self.total()),
            human(self.parameters),
            human(self.checkpoint),
            human(self.records),
            human(self.workspaces),
            human(self.batch),
            human(self.base)
        )
    }
}

/// Estimates the peak memory of training (`training`) or evaluating `config` with `threads`
/// worker threads. Computed in floating point, so that absurd sizes give an absurd estimate
/// rather than an overflow.
pub fn estimate(config: &RunConfig, threads: usize, training: bool) -> MemoryEstimate {
    let net = config.network_config();
    let s = if config.train.dtype == super::config::Dtype::F64 {
        8.0
    } else {
        4.0
    };
    let (i, h, o) = (
        net.input_size as f64,
        net.hidden_size as f64,
        net.output_size as f64,
    );
    let d = net.full_output_size() as f64;
    let gh = net.gates() as f64 * h;
    // (rows, cols) of the four linear maps: in, rec.w_h, rec.w_i, out
    let dims = [(i, h), (h, gh), (h, gh), (h, d)];
    let wb: f64 = dims.iter().map(|(r, c)| r * c + c).sum();
    let alpha = if net.has_alpha() { wb } else { 0.0 };
    let ln = if net.layernorm { 2.0 * h } else { 0.0 };
    let p = wb + alpha + d + ln;
    let plen = if net.is_plastic() { wb } else { 0.0 };
    let max_w = dims.iter().map(|(r, c)| r * c).fold(0.0, f64::max);
    let b = config.train.batch_size as f64;
    let t = config.task.steps() as f64;
    let chunks = (b / b.clamp(1.0, 16.0)).ceil().max(1.0);
    let nchunks = (b / chunks).ceil().max(1.0);
    let workers = (threads.max(1) as f64).min(nchunks);
    // one step's record (engine `Dims`): 10 H + 3 gH + 2 D + 16 scalars
    let stride = 10.0 * h + 3.0 * gh + 2.0 * d + 16.0;
    let batch = b * t * (i + o) * s + b * (t * o + 6.0 * t) * s * 2.0;
    let base = 8.0 * 1024.0 * 1024.0 + threads as f64 * 64.0 * 1024.0;
    if !net.is_plastic() {
        return batched_estimate(config, &net, s, threads, training, p, max_w, batch, base);
    }
    if !training {
        // eval: parameters (+ the all-ones α of a network without learned α), one forward
        // workspace per thread (two plastic slots), the per-step series
        return MemoryEstimate {
            parameters: (p + max_w) * s,
            checkpoint: 2.0 * p * s,
            records: 0.0,
            workspaces: workers * (t * stride + 2.0 * plen + 4.0 * gh) * s,
            batch,
            base,
        };
    }
    // snapshots: all T when they fit the budget, else ≈√T slots and ⌈T/k⌉ checkpoints
    let (slots, ckpts) = if plen == 0.0 {
        (0.0, 0.0)
    } else if (DEFAULT_SNAPSHOT_BUDGET as f64 / (plen * s)).floor() >= t {
        (t, 0.0)
    } else {
        let k = t.sqrt().ceil().clamp(1.0, t.max(1.0));
        (k, (t / k).ceil())
    };
    let workspace = (t * stride + (slots + ckpts + 1.0) * plen + 40.0 * gh) * s;
    let second = net.is_plastic() && net.plasticity.is_second_order();
    let npairs = [1.0, 1.0, 1.0 + f64::from(second), 1.0 + f64::from(second)];
    let records: f64 = dims
        .iter()
        .zip(npairs)
        .map(|((r, c), n)| b * t * n * (r + c) * s)
        .sum();
    MemoryEstimate {
        // params, ones, best, Adam m/v/v_max, the mask (1 byte), gradient, chunk gradients,
        // and the network's copy for the final test
        parameters: (p * (7.0 + nchunks) + max_w) * s + p,
        checkpoint: 2.0 * 5.0 * p * s,
        records,
        workspaces: workers * workspace,
        batch,
        base,
    }
}

/// [`estimate`] of a network without plastic weights, which runs on the batched path
/// (`engine/batched.rs`): one record per quantity for the whole batch, `(B, T, len)`, no
/// per-episode workspaces and no rank-1 records, one gradient.
#[allow(clippy::too_many_arguments)]
fn batched_estimate(
    config: &RunConfig,
    net: &crate::config::NetworkConfig,
    s: f64,
    threads: usize,
    training: bool,
    p: f64,
    max_w: f64,
    batch: f64,
    base: f64,
) -> MemoryEstimate {
    let (i, h) = (net.input_size as f64, net.hidden_size as f64);
    let (d, gh) = (net.full_output_size() as f64, net.gates() as f64 * h);
    let flag = |on: bool| f64::from(u8::from(on));
    let (il, lstm, ln) = (
        flag(net.input_layer),
        flag(net.rnn == crate::config::CellKind::Lstm),
        flag(net.layernorm),
    );
    let hin = if net.input_layer { h } else { i };
    let (b, t) = (config.train.batch_size as f64, config.task.steps() as f64);
    // per row (episode and step): hn, h_prev, the activations, y; u with an input layer; c
    // and tanh(c) for the LSTM; the raw hidden state and (μ, r) with LayerNorm
    let forward_row = 2.0 * h + gh + d + il * h + lstm * 2.0 * h + ln * (h + 2.0);
    // training adds dy, dz, the loss term, and the adjoints of u and of LayerNorm's output
    let row = if training {
        forward_row + d + gh + 1.0 + il * h + ln * h
    } else {
        forward_row
    };
    // the transposed weights, and one chunk's scratch per worker thread (z, dh, dc, dc',
    // dhn, dhr, the gate adjoints; 16 rows)
    let transposes = il * i * h + gh * h + hin * gh + h * d;
    let rows = b.clamp(1.0, 16.0);
    let workers = (threads.max(1) as f64).min((b / rows).ceil().max(1.0));
    let scratch = rows * (2.0 * gh + 5.0 * h) + h;
    let parameters = if training {
        // params, best, Adam m/v/v_max, the gradient, the network's copy for the final
        // test, the mask (1 byte)
        (p * 7.0 + max_w) * s + p
    } else {
        (p + max_w) * s
    };
    MemoryEstimate {
        parameters,
        checkpoint: if training { 2.0 * 5.0 * p } else { 2.0 * p } * s,
        records: b * t * row * s,
        workspaces: (transposes + workers * scratch) * s,
        batch,
        base,
    }
}

/// The memory the operating system says is available (`MemAvailable` of `/proc/meminfo`),
/// in bytes, or `None` where it cannot be read (not Linux).
pub fn available() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Whether the memory check is turned off by [`SKIP_ENV`].
pub fn check_skipped() -> bool {
    std::env::var(SKIP_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Refuses a run whose estimated memory exceeds what the machine has available, unless
/// [`SKIP_ENV`] is set. Also refuses, whatever the setting, an estimate that the allocator
/// itself cannot reserve (so that such a run fails here with a message instead of aborting
/// the process later). Returns the estimate.
pub fn check(config: &RunConfig, threads: usize, training: bool) -> Result<MemoryEstimate> {
    let est = estimate(config, threads, training);
    let total = est.total();
    let what = if training { "training" } else { "evaluating" };
    if !check_skipped() {
        if let Some(avail) = available() {
            if total > avail {
                return Err(Error::Memory(format!(
                    "{what} this configuration needs an estimated {est}, more than the {} \
                     this machine has available; reduce hidden_size, batch_size or the \
                     episode length, use fewer threads (--threads), or set {SKIP_ENV}=1 to \
                     try anyway",
                    human(avail)
                )));
            }
        }
    }
    // a reservation the allocator refuses outright would abort the process later
    let probe = if total.is_finite() && total < usize::MAX as f64 {
        let mut v: Vec<u8> = Vec::new();
        v.try_reserve_exact(total as usize).is_ok()
    } else {
        false
    };
    if !probe {
        return Err(Error::Memory(format!(
            "{what} this configuration needs an estimated {est}, which cannot be allocated \
             on this machine; reduce hidden_size, batch_size or the episode length"
        )));
    }
    Ok(est)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimate of `none` follows the batched path: the records of the whole batch,
    /// no per-episode workspaces (compared with `/usr/bin/time -v` in the README).
    #[test]
    fn none_follows_the_batched_path() {
        let base = RunConfig::defaults("cue-reward").unwrap();
        let none = |o: &[&str]| {
            let mut all = vec!["plasticity=none"];
            all.extend_from_slice(o);
            estimate(&base.with_overrides(&all).unwrap(), 2, true)
        };
        let rnn = none(&["rnn=rnn", "hidden_size=192"]);
        let lstm = none(&["rnn=lstm", "hidden_size=128"]);
        println!("cue-rnn-none-h192: {rnn}\ncue-lstm-none-h128: {lstm}");
        // B·T rows of 2H + gH + D (+ H input layer) forward, + D + gH + 1 (+ H) backward
        let (b, t) = (base.train.batch_size as f64, base.task.steps() as f64);
        let row =
            |h: f64, gh: f64, d: f64, il: f64| 2.0 * h + gh + d + il * h + d + gh + 1.0 + il * h;
        let d = base.network_config().full_output_size() as f64;
        let il = f64::from(u8::from(base.network_config().input_layer));
        assert_eq!(rnn.records, b * t * row(192.0, 192.0, d, il) * 4.0);
        assert_eq!(
            lstm.records,
            b * t * (row(128.0, 512.0, d, il) + 2.0 * 128.0) * 4.0
        );
        // more records with a larger batch, and no per-episode workspace
        let big = none(&["rnn=rnn", "hidden_size=192", "batch_size=128"]);
        assert_eq!(big.records, 2.0 * rnn.records);
        assert!(rnn.workspaces < 1e6, "{rnn}");
    }
}
