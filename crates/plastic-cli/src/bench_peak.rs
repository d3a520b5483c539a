//! `plastic bench --kernels`, second part: the machine's arithmetic peak and how close the
//! GEMMs come to it. Register-only probes (no memory traffic) measure the core's clock and
//! its multiply-add throughput with the instructions the fixed-order kernels use (a plain
//! multiply then a plain add, AVX-512 and AVX2) and with fused multiply-adds for
//! comparison; the engine's fixed-order GEMMs and the maintained `gemm` crate are then
//! timed on the shapes of the batched non-plastic step, so that the step's floor can be
//! stated from measurements on this machine.

use std::time::Instant;

use rayon::prelude::*;

/// CPU time of the calling thread, in ms (`CLOCK_THREAD_CPUTIME_ID`: exact, unlike the
/// scheduler statistics in `/proc`, which lag by up to a scheduler tick).
pub(crate) fn thread_cpu_ms() -> f64 {
    cpu_clock_ms(CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of all this process's threads, in ms (`CLOCK_PROCESS_CPUTIME_ID`).
pub(crate) fn process_cpu_ms() -> f64 {
    cpu_clock_ms(CLOCK_PROCESS_CPUTIME_ID)
}

const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

#[cfg(target_os = "linux")]
fn cpu_clock_ms(clock: i32) -> f64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec (64-bit Linux layout).
    if unsafe { clock_gettime(clock, &mut ts) } != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

#[cfg(not(target_os = "linux"))]
fn cpu_clock_ms(_clock: i32) -> f64 {
    f64::NAN
}

/// Runs `work` (which returns the operations it did) on every thread of the pool at once,
/// 5 times, and returns the best aggregate rate per second of wall time and per second of
/// CPU time (operations / s).
pub(crate) fn on_all_threads(work: &(dyn Fn() -> f64 + Sync)) -> (f64, f64) {
    let threads = rayon::current_num_threads();
    let (mut best, mut best_cpu) = (0.0f64, 0.0f64);
    for _ in 0..5 {
        let t0 = Instant::now();
        let (ops, cpu): (f64, f64) = (0..threads)
            .into_par_iter()
            .map(|_| {
                let c0 = thread_cpu_ms();
                let ops = work();
                (ops, thread_cpu_ms() - c0)
            })
            .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        best = best.max(ops / t0.elapsed().as_secs_f64());
        best_cpu = best_cpu.max(ops / (cpu / 1e3));
    }
    (best, best_cpu)
}

/// [`on_all_threads`] on a pool of one thread.
fn on_one_thread(work: &(dyn Fn() -> f64 + Sync)) -> (f64, f64) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_or((f64::NAN, f64::NAN), |p| p.install(|| on_all_threads(work)))
}

/// Dependent integer additions (one per cycle on every x86-64 core of the last decade):
/// returns the additions done, so that additions per second are cycles per second.
#[cfg(target_arch = "x86_64")]
fn clock_probe() -> f64 {
    let iters: u64 = 20_000_000;
    let mut x: u64 = 0;
    let mut n = iters;
    // SAFETY: registers only; no memory, no stack.
    unsafe {
        std::arch::asm!(
            "2:",
            "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
            "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
            "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
            "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
            "dec {n}",
            "jnz 2b",
            x = inout(reg) x,
            n = inout(reg) n,
            options(nomem, nostack),
        );
    }
    std::hint::black_box((x, n));
    (16 * iters) as f64
}

/// One register-only throughput probe: independent chains `a ← a·m + c` (multiply, then
/// add: the instruction pair of the fixed-order kernels) or `a ← fma(a, m, c)`.
#[derive(Clone, Copy)]
enum Probe {
    MulAdd512,
    Fma512,
    MulAdd256,
    Fma256,
}

impl Probe {
    fn name(self) -> &'static str {
        match self {
            Probe::MulAdd512 => "AVX-512 multiply, then add (the fixed-order kernels)",
            Probe::Fma512 => "AVX-512 fused multiply-add",
            Probe::MulAdd256 => "AVX2 multiply, then add",
            Probe::Fma256 => "AVX2 (FMA3) fused multiply-add",
        }
    }

    fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Probe::MulAdd512 | Probe::Fma512 => std::arch::is_x86_feature_detected!("avx512f"),
                Probe::MulAdd256 => std::arch::is_x86_feature_detected!("avx2"),
                Probe::Fma256 => {
                    std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    /// Runs the probe; returns its FLOPs (2 per multiply-add and lane).
    fn run(self) -> f64 {
        let iters = 4_000_000usize;
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `available` checked the features the probe needs.
            let (chains, lanes) = unsafe {
                match self {
                    Probe::MulAdd512 => (probes::mul_add_512(iters), 16),
                    Probe::Fma512 => (probes::fma_512(iters), 16),
                    Probe::MulAdd256 => (probes::mul_add_256(iters), 8),
                    Probe::Fma256 => (probes::fma_256(iters), 8),
                }
            };
            (2 * chains * lanes * iters) as f64
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (self, iters);
            0.0
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod probes {
    use std::arch::x86_64::*;

    /// 16 independent chains of `zmm` (of the 32 registers): enough to cover the latency of
    /// a multiply followed by an add at two vector operations per cycle.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn mul_add_512(iters: usize) -> usize {
        let (m, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-6));
        let mut acc = [_mm512_setzero_ps(); 16];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_add_ps(_mm512_mul_ps(*a, m), c);
            }
        }
        std::hint::black_box(&acc);
        acc.len()
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_512(iters: usize) -> usize {
        let (m, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-6));
        let mut acc = [_mm512_setzero_ps(); 16];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, m, c);
            }
        }
        std::hint::black_box(&acc);
        acc.len()
    }

    /// 12 chains of `ymm` (of the 16 registers, two hold the constants).
    #[target_feature(enable = "avx2")]
    pub unsafe fn mul_add_256(iters: usize) -> usize {
        let (m, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-6));
        let mut acc = [_mm256_setzero_ps(); 12];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_add_ps(_mm256_mul_ps(*a, m), c);
            }
        }
        std::hint::black_box(&acc);
        acc.len()
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_256(iters: usize) -> usize {
        let (m, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-6));
        let mut acc = [_mm256_setzero_ps(); 12];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, m, c);
            }
        }
        std::hint::black_box(&acc);
        acc.len()
    }
}

/// `gemm` crate: `C = A·B` (row-major, `m × k · k × n`), or `C = Aᵀ·B` with `a_t` (`A`
/// stored `k × m`), on one thread.
fn crate_gemm(c: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, a_t: bool) {
    assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    let (a_rs, a_cs) = if a_t {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    // SAFETY: the assert bounds every index the strides reach.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn data(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 1000.0 - 0.5) * 0.1)
        .collect()
}

/// A GEMM timed for about `reps` calls per thread; returns its FLOPs.
fn gemm_work(m: usize, n: usize, k: usize, reps: usize, which: u8) -> f64 {
    let (a, b) = (data(m * k, 1), data(k * n, 2));
    let mut c = vec![0.0f32; m * n];
    for _ in 0..reps {
        match which {
            0 => {
                c.fill(0.0);
                plastic::matmul::gemm_nn(&mut c, n, &a, k, &b, m, n, k);
            }
            1 => crate_gemm(&mut c, &a, &b, m, n, k, false),
            2 => plastic::matmul::gemm_at_b_blocked(
                &mut c,
                &a,
                &b,
                m,
                n,
                k,
                plastic::matmul::Blocking {
                    kc: plastic::matmul::Blocking::for_shape(m, n).kc,
                    rows_per_task: m,
                },
            ),
            _ => crate_gemm(&mut c, &a, &b, m, n, k, true),
        }
        std::hint::black_box(&mut c);
    }
    (2 * m * n * k * reps) as f64
}

/// Prints the clock, the register-only peaks and the GEMM rates against them.
pub(crate) fn peak_table() {
    let threads = rayon::current_num_threads();
    println!(
        "\nArithmetic peak (register-only probes; best of 5 runs). Rates per CPU second are the \
         core's own while the thread runs (what a shared, loaded machine still shows); GFLOP/s \
         are per second of wall time with every thread busy at once.\n"
    );
    #[cfg(target_arch = "x86_64")]
    let (ghz1, ghz_all) = {
        let one = on_one_thread(&clock_probe).1 / 1e9;
        let all = on_all_threads(&clock_probe).1 / 1e9;
        (one, all)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (ghz1, ghz_all) = (f64::NAN, f64::NAN);
    println!(
        "clock (dependent integer adds, 1 per cycle, per CPU second): {ghz1:.2} GHz on one thread, {ghz_all:.2} GHz with {threads} threads busy\n"
    );
    println!(
        "| probe (f32) | GFLOP per CPU second, 1 thread | FLOP per cycle | GFLOP/s, {threads} threads | per CPU second, {threads} threads |"
    );
    println!("| --- | --- | --- | --- | --- |");
    let mut peak_mul_add = f64::NAN;
    let level = plastic::kernels::simd();
    for probe in [
        Probe::MulAdd512,
        Probe::Fma512,
        Probe::MulAdd256,
        Probe::Fma256,
    ] {
        if !probe.available() {
            continue;
        }
        let work = move || probe.run();
        let one = on_one_thread(&work).1 / 1e9;
        let (all, all_cpu) = on_all_threads(&work);
        let engine_uses = matches!(
            (probe, level),
            (Probe::MulAdd512, plastic::kernels::Simd::Avx512)
                | (Probe::MulAdd256, plastic::kernels::Simd::Avx2)
        );
        if engine_uses {
            peak_mul_add = one;
        }
        println!(
            "| {}{} | {one:.1} | {:.1} | {:.1} | {:.1} |",
            probe.name(),
            if engine_uses { " ← engine" } else { "" },
            one / ghz1,
            all / 1e9,
            all_cpu / 1e9
        );
    }
    println!(
        "\nGEMMs on the shapes of the batched non-plastic step (f32; each thread its own copy): \
         the engine's fixed-order kernels against the `gemm` crate (the best a maintained GEMM \
         crate reaches here; blocked and packed, fused multiply-adds)\n"
    );
    println!(
        "| product | kernel | GFLOP per CPU second, 1 thread | of the engine's peak | GFLOP/s, {threads} threads | per CPU second, {threads} threads |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let shapes: [(&str, usize, usize, usize, bool); 3] = [
        (
            "16 × 192 · 192 × 192 (one chunk, one step)",
            16,
            192,
            192,
            false,
        ),
        (
            "64 × 192 · 192 × 192 (the whole batch, one step)",
            64,
            192,
            192,
            false,
        ),
        (
            "192 × 2560 · 2560 × 192 (dW over B·T rows)",
            192,
            192,
            2560,
            true,
        ),
    ];
    for (label, m, n, k, at_b) in shapes {
        let reps = (400_000_000 / (2 * m * n * k)).max(1);
        let kernels: [(&str, u8); 2] = if at_b {
            [("gemm_at_b (fixed order)", 2), ("gemm crate", 3)]
        } else {
            [("gemm_nn (fixed order)", 0), ("gemm crate", 1)]
        };
        for (name, which) in kernels {
            let work = move || gemm_work(m, n, k, reps, which);
            let one = on_one_thread(&work).1 / 1e9;
            let (all, all_cpu) = on_all_threads(&work);
            println!(
                "| {label} | {name} | {one:.1} | {:.0}% | {:.1} | {:.1} |",
                100.0 * one / peak_mul_add,
                all / 1e9,
                all_cpu / 1e9
            );
        }
    }
}
